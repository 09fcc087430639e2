"""The ONNX file format of a siamtool export: what `siamtool export` writes and every runtime reads.

One small module that both sides import, so the writer (`siamtool.export.onnx`) and the readers
(`siamtool.tracking.onnx_backend`, `siamtool.tracking.opencv_backend`, the export cache in
`siamtool.tracking.cache`) cannot drift apart: the file names, the graphs' input and output names, the
metadata keys and their meaning (`METADATA_KEYS`), the checks that refuse a foreign or mixed folder
(`export_spec`), the input layout (`to_nchw`) and the onnxruntime session settings (`onnx_session`).

``onnx`` and ``onnxruntime`` are imported where they are used: reading a folder's config must not
load them, and the OpenCV runtime needs neither.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from siamtool import __version__
from siamtool.config import Config, config_from_dict
from siamtool.errors import SiamtoolError
from siamtool.provenance import Difference, differences

FORMAT = "siamtool-onnx"
FORMAT_VERSION = 2
"""Bumped when the graphs' inputs, outputs or metadata change meaning; the backend refuses other values."""
TEMPLATE_FILE = "template.onnx"
SEARCH_FILE = "search.onnx"
FP16_DIR = "fp16"
"""`--fp16` writes a second pair of graphs here (same names, same inputs/outputs in float32)."""
REJECTED_DIR = "rejected"
REPORT_FILE = "export.json"
CONFIG_FILE = "config.yaml"

TEMPLATE_INPUTS, TEMPLATE_OUTPUTS = ["template"], ["template_features"]
SEARCH_INPUTS, SEARCH_OUTPUTS = ["search", "template_features"], ["score", "boxes", "search_features"]

PAIR_KEYS = ("export_id", "precision")
"""Metadata both graphs of one export share: a folder whose graphs differ here mixes two exports."""

METADATA_KEYS = {
    "format": f"always {FORMAT!r}",
    "format_version": f"integer, {FORMAT_VERSION} for this siamtool",
    "graph": "'template' or 'search'",
    "export_id": "hash of the weights, config and export settings; both graphs of one export share it",
    "siamtool_version": "version that wrote the graphs",
    "precision": "'fp32' or 'fp16' (inputs and outputs are float32 either way)",
    "opset": "ONNX opset of the default domain",
    "checkpoint_sha256": "sha256 of the checkpoint file exported ('' when exported from memory)",
    "backbone": "backbone registry name",
    "stride": "feature stride in pixels (score/boxes cell size)",
    "template_size": "template crop side T in pixels",
    "search_size": "search crop side S in pixels",
    "feat_size": "score map side H = W = S / stride",
    "context": "context factor of the crop windows (data.context)",
    "crop": "JSON: the data config (crop sizes, context, margins) the model was trained with",
    "normalization": "JSON: mean/std on a 0..1 RGB scale; applied inside the graph",
    "input_format": "layout and range of the image inputs",
    "outputs": "meaning and units of the outputs",
    "config": "JSON: the full resolved siamtool config",
}


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata_props of an ONNX file (weights are not loaded)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - truncated or non-ONNX file
        raise SiamtoolError(f"{path}: not a readable ONNX file ({str(e).splitlines()[0][:120] if str(e) else e!r})"
                            ) from None
    return {p.key: p.value for p in proto.metadata_props}


def check_pair_metadata(template_meta: dict[str, str], search_meta: dict[str, str], where: str) -> None:
    """Refuse graphs that are not one siamtool export of this format: one line naming the problem."""
    for name, meta, role in ((TEMPLATE_FILE, template_meta, "template"), (SEARCH_FILE, search_meta, "search")):
        if meta.get("format") != FORMAT:
            raise SiamtoolError(f"{where}/{name}: not a siamtool export (no '{FORMAT}' metadata); "
                                f"write the folder with `siamtool export CHECKPOINT --out DIR`")
        version = meta.get("format_version", "?")
        if version != str(FORMAT_VERSION):
            raise SiamtoolError(f"{where}/{name}: export format {version}, this siamtool ({__version__}) reads "
                                f"format {FORMAT_VERSION}; export the checkpoint again with this version")
        if meta.get("graph") != role:
            raise SiamtoolError(f"{where}/{name}: holds the {meta.get('graph')!r} graph, expected {role!r}")
    mixed: list[Difference] = differences({k: template_meta.get(k, "?") for k in PAIR_KEYS},
                                          {k: search_meta.get(k, "?") for k in PAIR_KEYS}, sort=False)
    if mixed:
        d = mixed[0]
        raise SiamtoolError(f"{where}: {TEMPLATE_FILE} and {SEARCH_FILE} come from different exports ({d.key} "
                            f"{d.old[:12]} vs {d.new[:12]}); export both again")


@dataclass(frozen=True)
class ExportSpec:
    """What every runtime reads from an export folder: its graphs and what their metadata promise.

    One reader for all backends (onnxruntime, OpenCV DNN) so that they refuse the same folders with the
    same lines and hand the Tracker the same crop geometry.
    """

    path: Path
    template_path: Path
    search_path: Path
    metadata: dict[str, str]
    """The template graph's metadata_props (`METADATA_KEYS`)."""
    cfg: Config
    """The full config stored in the export: `cfg.data` is the crop geometry the Tracker must use."""
    template_size: int
    search_size: int
    stride: int
    precision: str
    export_id: str


def export_graph_files(path: str | Path) -> tuple[Path, Path]:
    """(template.onnx, search.onnx) of an export folder; one line naming what is missing otherwise."""
    path = Path(path)
    if not path.is_dir():
        raise SiamtoolError(f"{path}: ONNX export folder not found (write one with "
                            f"`siamtool export CHECKPOINT --out DIR`)")
    files = (path / TEMPLATE_FILE, path / SEARCH_FILE)
    for file in files:
        if not file.is_file():
            raise SiamtoolError(f"{file}: missing; {path} is not a complete `siamtool export` folder")
    return files


TRACK_KEY = "track"
"""export.json's key for the tracking settings (`config.TrackConfig`) the exported model runs with: the
checkpoint's own, tuned on its validation sequences, so a runtime that reads the folder tracks like
`siamtool track --checkpoint` does instead of with the library defaults. A person may edit them there;
they win over the copy inside the graphs' config metadata."""


TRACKER_KEY = "tracker"
"""export.json's key for everything else a runtime outside Python needs to run the whole tracker: the
format version of this description, the crop (pre-processing) settings, the host logic's constants
and the online model's graphs. docs/runtimes.md ("The whole tracker without Python") says what each
means; `cpp/` reads them."""
TRACKER_FORMAT_VERSION = 2
"""Bumped when the host logic that docs/runtimes.md specifies changes meaning (a new step, a constant
that is read differently): a C++ port checks it and refuses other values. 2: the crops are
`geometry.resample`'s (k x k block means, exact float32 bilinear taps), no longer a uint8 warpAffine."""
OPENCV4_DIR = "opencv4"
"""Batch-1 copies of the two graphs that OpenCV 4.x's DNN reads (`siamtool.export.opencv4`; `cpp/` uses them)."""
ONLINE_FIT_FILE = "online_fit.onnx"
ONLINE_APPLY_FILE = "online_apply.onnx"

HOST_CONSTANTS: dict[str, Any] = {
    "state_min_size": 1.0,            # tracker.STATE_MIN_SIZE: smallest state side in frame pixels
    "reference_frames": 5,            # tracker.REFERENCE_FRAMES: tracked frames whose best score is the reference
    "growth_tol": 1e-9,               # tracker.GROWTH_TOL: growths this close to 1 / max_growth count as equal
    "tie_rtol": 1e-6, "tie_atol": 1e-9,  # tracker._break_ties: np.isclose of the penalised scores
    "size_eps": 1e-6,                 # select_candidate: box sides floored here before ratios
    "calibration_min": 0.5, "calibration_max": 2.0,  # Tracker._size_calibration clips the ratio here
    "upsample": 4,                    # TranslationFilter(upsample=4): fine grid of the response
    "refine_radius": 1.0,             # online.refine_peak: fine-grid search radius in cells
    "augment_blur_sigma": 2.0,        # Tracker._start_online: GaussianBlur sigma of the blurred copy
    "label_min_sigma": 0.25,          # TranslationFilter.add_sample: the label's std is at least this (cells)
    "window_floor": 0.05,             # online.target_window: 0.95 x Hann + 0.05 inside, 0.05 outside
    "energy_eps": 1e-12,              # TranslationFilter._spectrum: mean energy + this before the sqrt
    "den_eps": 1e-12,                 # TranslationFilter.add_sample: mean(den) floored here
    "peak_min": 1e-6,                 # TranslationFilter.calibrate: the peak is at least this
    "antialias_factors": [1, 2, 4, 8],  # geometry.resample: k x k block means before the crop
    "scale_reg": 0.01,                # online.ScaleFilter(reg=0.01): the DSST filter's regularisation
    "scale_model_area": 512,          # online.ScaleFilter(model_area=512): pixels of a scale patch
    "camera_width": 160,              # camera.WIDTH: about the longest side of the grey copies it compares
    "camera_rate": 0.5,               # camera.RATE: forgetting rate of the gain's running sums
    "camera_prior": 0.25,             # camera.PRIOR: the gain's ridge, x sqrt(w h) of the target
}
"""The numbers the Python tracker hard-codes (not `track:` settings), written into export.json so a port
reads them instead of copying them; tests/export/test_online_graphs.py checks them against the code."""


def track_settings(cfg: Config, deploy: bool = True) -> dict[str, Any]:
    """export.json's `TRACK_KEY` and `TRACKER_KEY` entries for an export of a model with config `cfg`
    (the one writer): the `track:` settings, then the format version, the crop settings, the host
    constants and, for a `deploy` export (`siamtool export`), the files of the online graphs and of the
    OpenCV 4 copy. The tracking cache's exports leave those out: Python never reads them."""
    d = cfg.data
    settings = _all_track_settings(cfg, d)
    if not deploy:
        for key in ("online_graphs", "opencv4_graphs"):
            settings[TRACKER_KEY].pop(key)
    return settings


def _all_track_settings(cfg: Config, d: Any) -> dict[str, Any]:
    return {TRACK_KEY: dataclasses.asdict(cfg.track),
            TRACKER_KEY: {"format_version": TRACKER_FORMAT_VERSION,
                          "crop": {"template_size": d.template_size, "search_size": d.search_size,
                                   "context": float(d.context), "resample": "geometry.resample",
                                   "interpolation": "bilinear, float32, exact coordinates",
                                   "border": "BORDER_REPLICATE", "reduce": "k x k block mean",
                                   "input": "RGB 0..255 NCHW, float32 (not rounded)"},
                          "constants": dict(HOST_CONSTANTS),
                          "online_graphs": {"fit": ONLINE_FIT_FILE, "apply": ONLINE_APPLY_FILE},
                          "opencv4_graphs": {"template": f"{OPENCV4_DIR}/{TEMPLATE_FILE}",
                                             "search": f"{OPENCV4_DIR}/{SEARCH_FILE}",
                                             "boxes_layout": "(1,4,H,W) cx,cy,w,h as channels",
                                             "score_layout": "(1,1,H,W)"}}}


def read_track_settings(path: str | Path) -> dict[str, Any] | None:
    """The tracking settings export.json of the export folder `path` carries; None for a folder without
    them (written by an older siamtool: its graphs' config metadata still holds the checkpoint's). One
    line naming the file when it is unreadable."""
    report = Path(path) / REPORT_FILE
    if not report.is_file():
        return None
    try:
        data = json.loads(report.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SiamtoolError(f"{report}: not readable JSON ({e}); export the checkpoint again") from None
    track = data.get(TRACK_KEY) if isinstance(data, dict) else None
    if track is not None and not isinstance(track, dict):
        raise SiamtoolError(f"{report}: '{TRACK_KEY}' must be a mapping of track settings, got {track!r}")
    return track


def export_spec(path: str | Path, template_meta: dict[str, str] | None = None,
                search_meta: dict[str, str] | None = None) -> ExportSpec:
    """Check that a folder holds one siamtool export of this format and read its config and sizes.

    The config is the one stored in the graphs with export.json's tracking settings (`read_track_settings`)
    on top, so every runtime tracks with the exported model's own settings.

    `template_meta`/`search_meta` are the graphs' metadata_props when the runtime already has them
    (onnxruntime reads them while loading); otherwise they are read from the files with `onnx`.
    """
    template_path, search_path = export_graph_files(path)
    path = Path(path)
    t_meta = read_metadata(template_path) if template_meta is None else dict(template_meta)
    s_meta = read_metadata(search_path) if search_meta is None else dict(search_meta)
    check_pair_metadata(t_meta, s_meta, str(path))
    cfg = config_from_dict(json.loads(t_meta["config"]), source=f"{template_path} (config)")
    track = read_track_settings(path)
    if track is not None:
        cfg = config_from_dict({**cfg.to_dict(), TRACK_KEY: track}, source=f"{path / REPORT_FILE} ({TRACK_KEY})")
    spec = ExportSpec(path, template_path, search_path, t_meta, cfg, int(t_meta["template_size"]),
                      int(t_meta["search_size"]), int(t_meta["stride"]), t_meta["precision"], t_meta["export_id"])
    if (cfg.data.template_size, cfg.data.search_size) != (spec.template_size, spec.search_size):
        raise SiamtoolError(f"{path}: graph metadata contradicts its own config (crop sizes); export again")
    return spec



def to_nchw(crops_rgb: np.ndarray) -> np.ndarray:
    """uint8 or float32 (B,H,W,3) or (H,W,3) RGB 0..255 -> float32 (B,3,H,W), the graphs' input format."""
    if crops_rgb.ndim == 3:
        crops_rgb = crops_rgb[None]
    return np.ascontiguousarray(crops_rgb.transpose(0, 3, 1, 2), dtype=np.float32)



def crop_to_input(crop_rgb: np.ndarray, side: int, what: str) -> np.ndarray:
    """One (side, side, 3) RGB crop (uint8 or float32 0..255) -> the graphs' (1, 3, side, side) float32 input; refuses other shapes."""
    if crop_rgb.shape != (side, side, 3):
        raise ValueError(f"{what} crop must be {side}x{side}x3 RGB, got {crop_rgb.shape}")
    return to_nchw(crop_rgb)


SPIN_MODES: dict[str, dict[str, str]] = {
    "off": {"session.intra_op.allow_spinning": "0"},
    "run": {"session.intra_op.allow_spinning": "1", "session.force_spinning_stop": "1"},
    "always": {"session.intra_op.allow_spinning": "1"},
}
"""How onnxruntime's intra-op worker threads wait for work (`onnx_session`'s `spin`).

* ``off`` (siamtool's default): they sleep after every operator and are woken for the next.
* ``run``: they busy-wait between the operators of one run and stop the moment it returns, so no core
  spins between frames. 1.03-1.13x the tracking FPS of ``off`` on an idle 2-core machine, but
  0.63-0.73x when other processes keep the cores busy (most likely a spinning thread holds a core the
  others need, and the run waits on a worker that is not scheduled).
* ``always``: onnxruntime's own default; they also spin after a run returns (a core busy between frames).

A tracker shares its machine (a camera, a GUI, eval's JPEG decoding, other jobs), so the default is the
one that degrades gracefully: `benchmarks/ort_threads.py` and docs/benchmarks.md, "onnxruntime's worker
threads".
"""

DYNAMIC_BLOCK_BASE = 4
"""onnxruntime's ``session.dynamic_block_base``: a parallel loop is handed out in shrinking blocks
instead of one block per thread, so the thread that finishes early (the other core was busy) takes work
from the slower one. Same outputs; 0.98-1.02x the tracking FPS on an idle machine, 1.09-1.11x beside
busy processes (docs/benchmarks.md, "onnxruntime's worker threads"). 0: onnxruntime's static split."""


def onnx_session(path: str | Path, providers: list[str] | None = None, threads: int | None = None,
                 spin: str = "off"):
    """An onnxruntime session; `threads` limits intra-op threads (None: onnxruntime's default), `spin`
    is one of `SPIN_MODES`; `DYNAMIC_BLOCK_BASE` applies to every session."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # warnings about CPU fallbacks of fp16 nodes are not the user's business
    for key, value in SPIN_MODES[spin].items():
        opts.add_session_config_entry(key, value)
    if DYNAMIC_BLOCK_BASE:
        opts.add_session_config_entry("session.dynamic_block_base", str(DYNAMIC_BLOCK_BASE))
    return ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])

