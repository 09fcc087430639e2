"""`siamtool export`: the tracker as two ONNX graphs that any runtime can run without Python.

Why two graphs: a Siamese tracker computes the template once per target and the search every frame.
One graph taking both crops (PySOT, SiamMask) recomputes the template each frame or needs a dynamic
correlation kernel that TensorRT and friends handle badly. Here the template graph returns the template
tokens as a plain tensor and the search graph takes them as an ordinary input:

* ``template.onnx``: ``template`` (B,3,T,T) float32 RGB 0..255 -> ``template_features`` (B,N,D)
* ``search.onnx``: ``search`` (B,3,S,S) float32 RGB 0..255 + ``template_features`` -> ``score`` (B,H,W)
  in [0,1], ``boxes`` (B,H,W,4) cx,cy,w,h in search-crop pixels and ``search_features`` (B,C,H,W), the
  backbone's features of the crop, on which the Tracker's online target model learns
  (`siamtool.tracking.online`)

The backbone's mean/std normalisation is inside the graphs and the search graph ends with
`siamtool.models.decode.decode` (the one decoder shared with training and the Tracker), so a runtime feeds
raw pixels and reads decoded boxes. Everything a runtime needs to crop like training did (crop sizes,
context factor, stride, normalisation, the full resolved config) is stored in each graph's
``metadata_props``; the keys are listed in `METADATA_KEYS`.

Exporter: the TorchScript-based one (``torch.onnx.export(..., dynamo=False)``). It exports every backbone
of the registry (DINOv3 ViT with RoPE, ConvNeXt, torchvision, EfficientNet-Lite0) to graphs that match
PyTorch to ~1e-5 in onnxruntime, the RoPE tables of a fixed input size are folded into constants, and it
needs no extra package. The dynamo exporter gave the same differences and the same onnxruntime speed in
a trial (README `export`) but needs `onnxscript` and `onnx-ir`; switch to it when torch removes this one.

Every export is checked before it is kept: onnx.checker on both graphs, then both graphs run in
onnxruntime on real crops (a frame of ``../shared/data/real_lasot`` when present, else a rendered
synthetic frame), cut by the Tracker's own crop function, at batch 2 (so the dynamic batch axis is
exercised) and compared with PyTorch. Graphs that fail the tolerance are moved to ``DIR/rejected/``
and never replace a good export, so ``--onnx DIR`` cannot pick them up.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from siamtool import __version__
from siamtool.config import Config
from siamtool.errors import SiamtoolError
from siamtool.fileio import write_json_atomic

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
MIN_OPSET = 17
PROTOBUF_LIMIT = 2**31 - 1
"""A protobuf message cannot exceed 2 GiB: larger graphs keep their weights in a `<graph>.onnx.data` file."""
FP16_TOLERANCE = 2e-2
"""fp16 graphs are compared with fp32 PyTorch on score and on boxes / search_size (fractions of the crop)."""

TEMPLATE_INPUTS, TEMPLATE_OUTPUTS = ["template"], ["template_features"]
SEARCH_INPUTS, SEARCH_OUTPUTS = ["search", "template_features"], ["score", "boxes", "search_features"]

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


# ------------------------------------------------------------------------------------------ graphs


class TemplateGraph(nn.Module):
    """template crop (B,3,T,T) 0..255 -> template features, in `dtype` inside, float32 at the boundary."""

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype

    def forward(self, template: torch.Tensor) -> torch.Tensor:
        return self.model.template(template.to(self.dtype)).float()


class SearchGraph(nn.Module):
    """search crop + template features -> decoded (score (B,H,W), boxes (B,H,W,4) cx,cy,w,h crop px).

    The decoder runs in float32 even in fp16 graphs: box centres of a 256 px crop need better than
    fp16's 0.125 px resolution.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        from siamtool.models.decode import decode

        self.model = model
        self.dtype = dtype
        self._decode = decode

    def forward(self, search: torch.Tensor, template_features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        heat, box_raw, feat = self.model.search_with_features(search.to(self.dtype), template_features.to(self.dtype))
        score, boxes = self._decode(heat.float(), box_raw.float(), int(self.model.stride), int(self.model.search_size))
        return score, boxes, feat.float()


# ---------------------------------------------------------------------------------------- metadata


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def weights_digest(model: nn.Module) -> str:
    """sha256 over every tensor of the model (frozen backbone included): what the graphs compute."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def build_metadata(model: nn.Module, cfg: Config, *, graph: str, export_id: str, precision: str, opset: int,
                   checkpoint_sha256: str = "") -> dict[str, str]:
    """The `metadata_props` of one graph: everything a runtime needs to crop, feed and read it."""
    from siamtool.models.backbones import get_spec

    spec = get_spec(cfg.model.backbone)
    d = cfg.data
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "graph": graph,
        "export_id": export_id,
        "siamtool_version": __version__,
        "precision": precision,
        "opset": str(opset),
        "checkpoint_sha256": checkpoint_sha256,
        "backbone": cfg.model.backbone,
        "stride": str(int(model.stride)),
        "template_size": str(d.template_size),
        "search_size": str(d.search_size),
        "feat_size": str(int(model.feat_size)),
        "context": repr(float(d.context)),
        "crop": json.dumps(cfg.to_dict()["data"]),
        "normalization": json.dumps({"mean": list(spec.mean), "std": list(spec.std), "scale": "0..1 RGB",
                                     "applied": "inside the graph: feed raw 0..255 pixels"}),
        "input_format": "float32 RGB 0..255, NCHW, dynamic batch; template crop T x T, search crop S x S, cut "
                        "with siamtool.geometry template_window/search_window (context, sizes above)",
        "outputs": "template_features (B,N,D) float32 opaque; score (B,H,W) in [0,1]; boxes (B,H,W,4) "
                   "cx,cy,w,h in search-crop pixels (0-based continuous); search_features (B,C,H,W) the "
                   "frozen backbone's features of the search crop (for the online target model)",
        "config": json.dumps(cfg.to_dict()),
    }
    assert set(meta) == set(METADATA_KEYS)
    return meta


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
    for key in ("export_id", "precision"):
        if template_meta.get(key) != search_meta.get(key):
            raise SiamtoolError(
                f"{where}: {TEMPLATE_FILE} and {SEARCH_FILE} come from different exports ({key} "
                f"{template_meta.get(key, '?')[:12]} vs {search_meta.get(key, '?')[:12]}); export both again")


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


def export_spec(path: str | Path, template_meta: dict[str, str] | None = None,
                search_meta: dict[str, str] | None = None) -> ExportSpec:
    """Check that a folder holds one siamtool export of this format and read its config and sizes.

    `template_meta`/`search_meta` are the graphs' metadata_props when the runtime already has them
    (onnxruntime reads them while loading); otherwise they are read from the files with `onnx`.
    """
    from siamtool.config import config_from_dict

    template_path, search_path = export_graph_files(path)
    path = Path(path)
    t_meta = read_metadata(template_path) if template_meta is None else dict(template_meta)
    s_meta = read_metadata(search_path) if search_meta is None else dict(search_meta)
    check_pair_metadata(t_meta, s_meta, str(path))
    cfg = config_from_dict(json.loads(t_meta["config"]), source=f"{template_path} (config)")
    spec = ExportSpec(path, template_path, search_path, t_meta, cfg, int(t_meta["template_size"]),
                      int(t_meta["search_size"]), int(t_meta["stride"]), t_meta["precision"], t_meta["export_id"])
    if (cfg.data.template_size, cfg.data.search_size) != (spec.template_size, spec.search_size):
        raise SiamtoolError(f"{path}: graph metadata contradicts its own config (crop sizes); export again")
    return spec


# ----------------------------------------------------------------------------------- parity crops


@dataclass
class Sample:
    """Crops the parity check feeds both runtimes: uint8 RGB, batch of 2."""

    templates: np.ndarray
    """(B, T, T, 3) uint8 RGB"""
    searches: np.ndarray
    """(B, S, S, 3) uint8 RGB"""
    source: str


def shared_data_candidates() -> list[Path]:
    """Where ``../shared/data/real_lasot`` may be: beside the current folder or beside the source checkout."""
    here = Path(__file__).resolve().parents[2]
    return [Path.cwd().parent / "shared" / "data" / "real_lasot", here.parent / "shared" / "data" / "real_lasot"]


def _real_frames() -> tuple[list[np.ndarray], np.ndarray, str] | None:
    import cv2

    from siamtool.data.lasot import find_sequences, load_sequence
    from siamtool.geometry import from_lasot

    for root in shared_data_candidates():
        if not root.is_dir():
            continue
        for name, path in sorted(find_sequences(root).items()):
            try:
                seq = load_sequence(path, require_images=False)
            except SiamtoolError:
                continue
            usable = np.flatnonzero(seq.usable)
            if len(usable) < 16:
                continue
            idx = [int(usable[0]), int(usable[5]), int(usable[10]), int(usable[15])]
            frames = [cv2.imread(str(seq.frame_path(i)), cv2.IMREAD_COLOR) for i in idx]
            if any(f is None for f in frames):
                continue
            return frames, from_lasot(seq.gt[idx]), f"{root}/{seq.class_name}/{name} frames {idx}"
    return None


def _synthetic_frames() -> tuple[list[np.ndarray], np.ndarray, str]:
    from siamtool.data.synthetic import render_sequence

    frames, boxes, _, _ = render_sequence(np.random.default_rng(7), 16, (320, 240))
    idx = [0, 5, 10, 15]
    return [frames[i] for i in idx], boxes[idx], "synthetic frames (../shared/data/real_lasot not found)"


def parity_sample(cfg: Config) -> Sample:
    """Two template crops and two search crops, cut as the Tracker cuts them (same function, same windows).

    Templates from frames 0 and 10, searches from frames 5 and 15 around the box of the template frame:
    the target is off-centre in the search crop, as while tracking.
    """
    from siamtool.geometry import crop_like_prepare, search_window, template_window

    found = _real_frames() or _synthetic_frames()
    frames, boxes, source = found
    d = cfg.data
    templates, searches = [], []
    for t_i, s_i in ((0, 1), (2, 3)):
        templates.append(crop_like_prepare(frames[t_i], template_window(boxes[t_i], d.context, d.template_size)))
        searches.append(crop_like_prepare(frames[s_i], search_window(boxes[t_i], d.context, d.template_size,
                                                                     d.search_size)))
    # BGR -> RGB on the crops, as the Tracker does.
    return Sample(np.stack(templates)[..., ::-1].copy(), np.stack(searches)[..., ::-1].copy(), source)


def to_nchw(crops_rgb: np.ndarray) -> np.ndarray:
    """uint8 (B,H,W,3) or (H,W,3) RGB -> float32 (B,3,H,W) 0..255, the graphs' input format."""
    if crops_rgb.ndim == 3:
        crops_rgb = crops_rgb[None]
    return np.ascontiguousarray(crops_rgb.transpose(0, 3, 1, 2), dtype=np.float32)


# ----------------------------------------------------------------------------------------- export


@dataclass
class GraphPair:
    """One exported pair of graphs and how it compared with PyTorch."""

    precision: str
    template_path: Path
    search_path: Path
    diffs: dict[str, float] = field(default_factory=dict)
    """Max |onnxruntime - PyTorch| per output, measured as `DIFF_UNITS` says (fp16: boxes as a fraction of
    the search crop)."""
    tolerance: float = 0.0
    bytes: int = 0

    @property
    def max_diff(self) -> float:
        return max(self.diffs.values()) if self.diffs else float("nan")

    @property
    def passed(self) -> bool:
        return bool(self.diffs) and self.max_diff <= self.tolerance


@dataclass
class ExportResult:
    out: Path
    export_id: str
    opset: int
    sample: str
    provider: str
    pairs: list[GraphPair]
    seconds: float
    exporter: str = "torch.onnx.export(dynamo=False) (TorchScript-based)"

    @property
    def passed(self) -> bool:
        return all(p.passed for p in self.pairs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out), "export_id": self.export_id, "opset": self.opset, "sample": self.sample,
            "provider": self.provider, "exporter": self.exporter, "seconds": round(self.seconds, 2),
            "passed": self.passed, "siamtool_version": __version__,
            "graphs": [{"precision": p.precision, "template": p.template_path.name, "search": p.search_path.name,
                        "bytes": p.bytes, "max_diff": p.diffs, "units": _units(p.precision),
                        "tolerance": p.tolerance, "passed": p.passed}
                       for p in self.pairs],
        }


def _units(precision: str) -> dict[str, str]:
    if precision == "fp32":
        return DIFF_UNITS
    return {"score": DIFF_UNITS["score"], "boxes": "fraction of the search crop",
            "search_features": DIFF_UNITS["search_features"]}


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """The TorchScript exporter warns about tracing, constant folding and its own deprecation; none of it
    concerns the user, and the parity check below is what proves the graphs right."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _export_graph(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, inputs: list[str],
                  outputs: list[str], opset: int, meta: dict[str, str]) -> int:
    """Trace `module` to `path` with a dynamic batch axis and the metadata; returns the file size."""
    import onnx

    raw = path.with_suffix(".raw.onnx")
    with _quiet_export(), torch.no_grad():
        torch.onnx.export(
            module, args, str(raw), input_names=inputs, output_names=outputs, opset_version=opset,
            dynamic_axes={n: {0: "batch"} for n in inputs + outputs}, do_constant_folding=True, dynamo=False,
        )
    proto = onnx.load(str(raw))
    for p in list(raw.parent.glob(raw.name + "*")):
        p.unlink()
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name, proto.producer_version = "siamtool", __version__
    proto.doc_string = f"siamtool {meta['graph']} graph; metadata_props describe inputs, outputs and crops"
    try:
        fits = proto.ByteSize() < PROTOBUF_LIMIT
    except ValueError:  # some protobuf builds refuse to even measure a message over the limit
        fits = False
    if fits:
        onnx.save_model(proto, str(path))
    else:
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data")
    onnx.checker.check_model(str(path))
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def onnx_session(path: str | Path, providers: list[str] | None = None, threads: int | None = None):
    """An onnxruntime session; `threads` limits intra-op threads (None: onnxruntime's default)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # warnings about CPU fallbacks of fp16 nodes are not the user's business
    # No busy-waiting between runs: a tracker does crops, decoding and drawing between two runs, and
    # spinning worker threads would steal the cores from them (and from a second backend in benchmarks).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


DIFF_UNITS = {
    "score": "absolute (scores are in [0, 1])",
    "boxes": "fraction of the box's size (|difference| / max(w, h, 1 px) of the PyTorch box, per cell)",
    "template_features": "fraction of the features' largest magnitude",
    "search_features": "fraction of the features' largest magnitude",
}
"""How the fp32 check measures each output, so that one tolerance means the same for every model.

Absolute differences in pixels or feature units grow with the values: boxes of 200 px differ by ~1e-4 px
between runtimes while boxes of 20 px differ by ~1e-5 px, from the same float32 rounding, so a pixel
tolerance is either too tight for large boxes or too loose for small ones. Relative to the box size, the
same rounding is ~1e-6 for every backbone (measured for the shipped tracker: 1.3e-6 on boxes, 3e-6 on
features, 9e-7 on scores, at 1, 2 and 4 threads), 100x below the default tolerance 1e-4, while an export
bug (a wrong normalisation, a dropped op, a mis-folded RoPE table) moves outputs by 1e-2 or more. 1e-4 of
a box is 0.01 px on a 100 px target: far below anything tracking can notice.
"""


def _rel_diff(a: np.ndarray, ref: np.ndarray) -> float:
    """Max |a - ref| as a fraction of the largest |ref| (features: see DIFF_UNITS)."""
    return _max_diff(a, ref) / max(float(np.abs(np.asarray(ref, np.float64)).max()), 1e-12)


def _box_rel_diff(boxes: np.ndarray, ref: np.ndarray) -> float:
    """Max over cells of |boxes - ref| / max(w, h, 1 px) of the reference box (see DIFF_UNITS)."""
    ref = np.asarray(ref, np.float64)
    size = np.maximum(np.maximum(ref[..., 2], ref[..., 3]), 1.0)[..., None]
    return float((np.abs(np.asarray(boxes, np.float64) - ref) / size).max())


def compare_with_torch(model: nn.Module, pair: GraphPair, sample: Sample, search_size: int,
                       providers: list[str] | None = None) -> dict[str, float]:
    """Run both graphs in onnxruntime (template -> search, as the runtime will) and PyTorch on `sample`.

    fp32: each output measured as `DIFF_UNITS` says (score absolute, boxes relative to the box size,
    features relative to their scale). fp16: score as is, boxes divided by the search size (an fp16
    graph differs by ~1e-3 of the crop, which is ~0.3 px at 256 px).
    """
    z, x = to_nchw(sample.templates), to_nchw(sample.searches)
    t_sess = onnx_session(pair.template_path, providers)
    s_sess = onnx_session(pair.search_path, providers)
    (feat,) = t_sess.run(None, {"template": z})
    score, boxes, search_feat = s_sess.run(None, {"search": x, "template_features": feat})
    with torch.inference_mode():
        ref_feat = TemplateGraph(model).eval()(torch.from_numpy(z))
        ref_score, ref_boxes, ref_search = SearchGraph(model).eval()(torch.from_numpy(x), ref_feat)
    # Search features feed the online target model, which normalises them: compare relative to their scale.
    out = {"score": _max_diff(score, ref_score.numpy()),
           "search_features": _rel_diff(search_feat, ref_search.numpy())}
    if pair.precision != "fp32":
        out["boxes"] = _max_diff(boxes, ref_boxes.numpy()) / search_size
        return out
    out["boxes"] = _box_rel_diff(boxes, ref_boxes.numpy())
    out["template_features"] = _rel_diff(feat, ref_feat.numpy())
    return out


def export_model(
    model: nn.Module,
    cfg: Config,
    out: str | Path,
    *,
    opset: int | None = None,
    fp16: bool | None = None,
    tolerance: float | None = None,
    checkpoint_sha256: str = "",
    status: Callable[[str], None] | None = None,
) -> ExportResult:
    """Write template.onnx + search.onnx for `model` into `out`, check them, keep them only if they pass.

    `opset`, `fp16` and `tolerance` default to `cfg.export`. Returns the comparison with PyTorch; graphs
    that fail are moved to ``out/rejected/`` (the previous good export, if any, is left in place).
    `status(text)` is called before each slow step (the CLI shows it on a spinner).
    """
    start = time.perf_counter()
    opset = cfg.export.opset if opset is None else opset
    fp16 = cfg.export.fp16 if fp16 is None else fp16
    tolerance = cfg.export.tolerance if tolerance is None else tolerance
    check_settings(opset, tolerance)
    say = status or (lambda text: None)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SiamtoolError(f"--out {out}: is a file; give a folder for template.onnx and search.onnx")
    out.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).float().cpu().eval()
    sample = parity_sample(cfg)

    digest = hashlib.sha256(
        f"{weights_digest(model)}|{json.dumps(cfg.to_dict(), sort_keys=True)}|{opset}|{__version__}".encode()
    ).hexdigest()[:32]
    z = torch.from_numpy(to_nchw(sample.templates[:1]))
    x = torch.from_numpy(to_nchw(sample.searches[:1]))
    with torch.inference_mode():
        feat = model.template(z)

    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        precisions = ["fp32", "fp16"] if fp16 else ["fp32"]
        pairs: list[GraphPair] = []
        for precision in precisions:
            sub = staging if precision == "fp32" else staging / FP16_DIR
            sub.mkdir(exist_ok=True)
            net = model if precision == "fp32" else copy.deepcopy(model).half()
            dtype = torch.float32 if precision == "fp32" else torch.float16
            pair = GraphPair(precision, sub / TEMPLATE_FILE, sub / SEARCH_FILE,
                             tolerance=tolerance if precision == "fp32" else FP16_TOLERANCE)
            common = dict(export_id=f"{digest}-{precision}", precision=precision, opset=opset,
                          checkpoint_sha256=checkpoint_sha256)
            say(f"exporting the {precision} template graph")
            pair.bytes = _export_graph(TemplateGraph(net, dtype).eval(), (z,), pair.template_path, TEMPLATE_INPUTS,
                                       TEMPLATE_OUTPUTS, opset, build_metadata(model, cfg, graph="template", **common))
            say(f"exporting the {precision} search graph")
            pair.bytes += _export_graph(SearchGraph(net, dtype).eval(), (x, feat), pair.search_path, SEARCH_INPUTS,
                                        SEARCH_OUTPUTS, opset, build_metadata(model, cfg, graph="search", **common))
            say(f"running the {precision} graphs in onnxruntime and PyTorch")
            pair.diffs = compare_with_torch(model, pair, sample, cfg.data.search_size)
            pairs.append(pair)
        result = ExportResult(out, digest, opset, sample.source, "CPUExecutionProvider", pairs,
                              time.perf_counter() - start)
        _publish(staging, out, result, cfg)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_json_atomic((out if result.passed else out / REJECTED_DIR) / REPORT_FILE, result.to_dict())
    return result


def _publish(staging: Path, out: Path, result: ExportResult, cfg: Config) -> None:
    """Move checked graphs into `out` (each file atomically), or failed ones into `out/rejected/`."""
    target = out if result.passed else out / REJECTED_DIR
    if not result.passed:
        shutil.rmtree(target, ignore_errors=True)
    for pair in result.pairs:
        dest_dir = target if pair.template_path.parent == staging else target / FP16_DIR
        dest_dir.mkdir(parents=True, exist_ok=True)
        for src in sorted(pair.template_path.parent.glob("*.onnx*")):
            os.replace(src, dest_dir / src.name)
        pair.template_path = dest_dir / TEMPLATE_FILE
        pair.search_path = dest_dir / SEARCH_FILE
    if result.passed:
        cfg.save(out / CONFIG_FILE)
        if len(result.pairs) == 1:  # no --fp16 this time: fp16 graphs of an earlier export would be stale
            for stale in (out / FP16_DIR).glob("*.onnx*"):
                stale.unlink()
            with contextlib.suppress(OSError):
                (out / FP16_DIR).rmdir()


def check_settings(opset: int | None, tolerance: float | None) -> None:
    """One-line errors for settings the exporter cannot honour (checked before any slow work)."""
    if opset is not None and opset < MIN_OPSET:
        raise SiamtoolError(f"--opset {opset}: siamtool exports opset {MIN_OPSET} or newer (LayerNormalization)")
    if opset is not None and opset > _max_supported_opset():
        raise SiamtoolError(f"--opset {opset}: this torch exports opsets {MIN_OPSET}..{_max_supported_opset()}")
    if tolerance is not None and not tolerance > 0:
        raise SiamtoolError(f"--tolerance must be > 0, got {tolerance}")


def _max_supported_opset() -> int:
    """The newest opset the TorchScript exporter of this torch writes (20 for torch 2.x)."""
    try:
        from torch.onnx import _constants

        return int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20))
    except ImportError:
        return 20


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, opset: int | None = None,
                      fp16: bool | None = None, tolerance: float | None = None,
                      overrides: list[str] | tuple[str, ...] = (),
                      status: Callable[[str], None] | None = None) -> ExportResult:
    """Load a checkpoint (one-line error if corrupt or from another version) and `export_model` it."""
    from siamtool.engine.checkpoint import checkpoint_path, load_model

    check_settings(opset, tolerance)
    path = checkpoint_path(checkpoint)
    (status or (lambda text: None))(f"loading {path}")
    model, cfg = load_model(path, "cpu", overrides)
    return export_model(model, cfg, out, opset=opset, fp16=fp16, tolerance=tolerance,
                        checkpoint_sha256=file_sha256(path), status=status)


def print_export(result: ExportResult, console: Any) -> None:
    """The CLI summary: where the graphs are, their size, and how far onnxruntime is from PyTorch."""
    for p in result.pairs:
        unit = ("boxes as a fraction of the crop" if p.precision == "fp16" else
                "score absolute, boxes relative to the box size, features relative to their scale")
        diffs = ", ".join(f"{k} {v:.2g}" for k, v in sorted(p.diffs.items()))
        verdict = "[green]ok[/]" if p.passed else "[bold red]FAILED[/]"
        console.print(f"{p.precision}: {p.template_path} + {p.search_path.name} ({p.bytes / 1e6:.1f} MB); max "
                      f"|onnxruntime - PyTorch|: {diffs} ({unit}); tolerance {p.tolerance:g}: {verdict}",
                      highlight=False, soft_wrap=True)
    console.print(f"opset {result.opset}, export id {result.export_id[:12]}, checked at batch 2 on {result.sample} "
                  f"with {result.provider} in {result.seconds:.1f} s", highlight=False, soft_wrap=True)
