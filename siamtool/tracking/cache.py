"""The default CPU runtime for `--checkpoint`: an ONNX export cached per checkpoint, run by onnxruntime.

On this project's CPUs onnxruntime tracks several times faster than eager PyTorch for every backbone
(`benchmarks/backend_latency.py`, table in the README), so `track` and `eval` given a checkpoint on CPU
export it once, check the graphs against PyTorch like `siamtool export` does, and track with the
onnxruntime backend. `track.backend` chooses: `auto` (this, on CPU; PyTorch on CUDA), `torch`, `onnx`, or
`opencv` (the same cached export, run by OpenCV's DNN module).

The cache belongs to tracking (it serves the Tracker) and uses the exporter as a tool, which is why
`siamtool.tracking` sits above `siamtool.export` in the layers (README, "Layout").

The cache folder is ``$SIAMTOOL_CACHE`` or ``$XDG_CACHE_HOME/siamtool`` or ``~/.cache/siamtool``, then
``onnx/<key>/``; the key hashes the checkpoint file's bytes, the siamtool version and `EXPORTER_REVISION`,
so a retrained or edited checkpoint, or a changed exporter, gets a new export. Parallel eval workers share
one export (`eval` makes it before they start; a file lock serialises any first export; the lock file is
removed afterwards). An export that fails its check is not used: tracking falls back to PyTorch.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Any

from siamtool import __version__
from siamtool.checkpoint_files import checkpoint_path
from siamtool.errors import SiamtoolError
from siamtool.fileio import exclusive_lock
from siamtool.onnx_format import FORMAT_VERSION, export_spec
from siamtool.provenance import file_digest, text_digest
from siamtool.reporting import SILENT, Reporter
from siamtool.tracking.onnx_backend import OnnxBackend
from siamtool.tracking.opencv_backend import OpenCVBackend

BACKENDS = ("auto", "torch", "onnx", "opencv")


def cache_root() -> Path:
    if os.environ.get("SIAMTOOL_CACHE"):
        return Path(os.environ["SIAMTOOL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "siamtool"


def onnxruntime_available() -> bool:
    """Whether onnx and onnxruntime are installed, without importing them: importing onnx alone took longer
    than loading the shipped tracker's cached export (`benchmarks/load_time.py`), and the cached path
    never needs it (onnxruntime reads the graphs' metadata)."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


def use_onnx(backend: str, device_type: str) -> bool:
    """Whether a checkpoint should run through its ONNX export for this `track.backend` and device."""
    if backend not in BACKENDS:
        raise SiamtoolError(f"track.backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend in ("onnx", "opencv"):
        return True
    return backend == "auto" and device_type == "cpu" and onnxruntime_available()


def _complete(folder: Path) -> bool:
    """Whether `folder` holds a complete export of this format (its metadata checks out)."""
    try:
        export_spec(folder)
    except SiamtoolError:
        return False
    return True


EXPORTER_REVISION = 2
"""Bumped whenever the exporter writes different graphs for the same checkpoint (2: constant-padded
"same" convolutions, `models.fuse.StaticSameConv2d`), so cached exports of an older exporter are redone."""


def cache_key(checkpoint_file: Path) -> str:
    """The cache folder's name: the checkpoint's bytes, this siamtool version, the export format and the
    exporter revision."""
    return text_digest(f"{file_digest(checkpoint_file)}|{__version__}|{FORMAT_VERSION}|{EXPORTER_REVISION}", 20)


def cached_onnx_backend(checkpoint: str | Path, device: Any = "cpu", reporter: Reporter = SILENT,
                        runtime: str = "onnx") -> OnnxBackend | OpenCVBackend | None:
    """An `OnnxBackend` (`runtime="opencv"`: an `OpenCVBackend`) over the checked ONNX export of
    `checkpoint` in the cache, exporting it on first use.

    Returns None when the export fails its check against PyTorch (the caller then uses PyTorch). A
    cache folder that does not load (interrupted, corrupt, another format) is exported again.
    The one-off export (minutes for a large backbone, and disk space) is announced through
    `reporter.warning`, so it is seen even under a spinner.
    """
    backend_cls = OpenCVBackend if runtime == "opencv" else OnnxBackend
    path = checkpoint_path(checkpoint)
    if not path.is_file():
        raise SiamtoolError(f"{path}: checkpoint not found")
    folder = cache_root() / "onnx" / cache_key(path)
    with exclusive_lock(folder.parent / f".{folder.name}.lock"):
        if folder.is_dir():
            try:
                return backend_cls.from_dir(folder, device)[0]
            except SiamtoolError:
                if runtime == "opencv" and _complete(folder):
                    raise  # OpenCV refuses a good export (an op it lacks): exporting again would not help
        from siamtool.models.checkpoint import load_checkpoint  # torch: only for the one-off export

        # A corrupt or foreign checkpoint fails here, in one line, before the export is announced.
        load_checkpoint(path)
        reporter.warning(f"first CPU run of {path}: exporting it to ONNX for onnxruntime (faster on CPU), once, "
                         f"into {folder} (--set track.backend=torch, or runtime='torch' in Python, skips this)", label=None)
        from siamtool.export.onnx import export_checkpoint

        result = export_checkpoint(path, folder, fp16=False, deploy=False)  # Python needs no C++ extras
        if not all(math.isfinite(v) for p in result.pairs for v in p.diffs.values()):
            # NaN or inf from the model itself, not an export problem: PyTorch would track with it too.
            raise SiamtoolError(f"{path}: the model outputs NaN or inf (corrupt weights?); use another "
                                "checkpoint, e.g. an earlier runs/NAME/checkpoints/step-*.pt")
        if not result.passed:
            reporter.warning(f"the ONNX export of {path} differs from PyTorch by {result.pairs[0].max_diff:.3g}: "
                             "tracking with PyTorch instead", label=None)
            return None
        return backend_cls.from_dir(folder, device)[0]
