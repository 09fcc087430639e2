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
``metadata_props``; the keys are listed in `siamtool.onnx_format.METADATA_KEYS`, with the file names
and the checks every runtime applies.

Exporter: the TorchScript-based one (``torch.onnx.export(..., dynamo=False)``). It exports every backbone
of the registry (DINOv3 ViT with RoPE, ConvNeXt, torchvision, EfficientNet-Lite0) to graphs that match
PyTorch to ~1e-5 in onnxruntime, the RoPE tables of a fixed input size are folded into constants, and it
needs no extra package. The dynamo exporter gave the same differences and the same onnxruntime speed in
a trial (README `export`) but needs `onnxscript` and `onnx-ir`; switch to it when torch removes this one.

Every export is checked before it is kept: onnx.checker on both graphs, then both graphs run in
onnxruntime on crops of rendered synthetic frames (or the frames the caller passes as `parity`, e.g.
`lasot_parity_frames` of a LaSOT folder), cut by the Tracker's own crop function, at batch 2 (so the dynamic batch axis is
exercised) and compared with PyTorch. Graphs that fail the tolerance are moved to ``DIR/rejected/``
and never replace a good export, so ``--onnx DIR`` cannot pick them up.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from siamtool import __version__
from siamtool.config import Config
from siamtool.data.lasot import find_sequences, load_sequence
from siamtool.data.synthetic import render_sequence
from siamtool.errors import SiamtoolError
from siamtool.export.online import check_online_graphs, export_online_graphs
from siamtool.export.opencv4 import OPENCV4_DIR, compare_opencv4_graphs, export_opencv4_graphs
from siamtool.fileio import write_json_atomic
from siamtool.geometry import CropGeometry, crop_antialiased, from_lasot
from siamtool.models.backbones import get_spec
from siamtool.models.checkpoint import checkpoint_path, load_model
from siamtool.models.decode import decode
from siamtool.onnx_format import (
    CONFIG_FILE,
    FORMAT,
    FORMAT_VERSION,
    FP16_DIR,
    METADATA_KEYS,
    REJECTED_DIR,
    REPORT_FILE,
    SEARCH_FILE,
    SEARCH_INPUTS,
    SEARCH_OUTPUTS,
    TEMPLATE_FILE,
    TEMPLATE_INPUTS,
    TEMPLATE_OUTPUTS,
    onnx_session,
    to_nchw,
    track_settings,
)
from siamtool.provenance import file_digest, state_digest, text_digest
from siamtool.reporting import SILENT, Reporter

MIN_OPSET = 17
PROTOBUF_LIMIT = 2**31 - 1
"""A protobuf message cannot exceed 2 GiB: larger graphs keep their weights in a `<graph>.onnx.data` file."""
FP16_TOLERANCE = 2e-2
"""fp16 graphs are compared with fp32 PyTorch on score and on boxes / search_size (fractions of the crop)."""

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
        self.model = model
        self.dtype = dtype
        self._decode = decode

    def forward(self, search: torch.Tensor, template_features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        heat, box_raw, feat = self.model.search_with_features(search.to(self.dtype), template_features.to(self.dtype))
        score, boxes = self._decode(heat.float(), box_raw.float(), int(self.model.stride), int(self.model.search_size))
        return score, boxes, feat.float()


# ---------------------------------------------------------------------------------------- metadata


def build_metadata(model: nn.Module, cfg: Config, *, graph: str, export_id: str, precision: str, opset: int,
                   checkpoint_sha256: str = "") -> dict[str, str]:
    """The `metadata_props` of one graph: everything a runtime needs to crop, feed and read it."""
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


# ----------------------------------------------------------------------------------- parity crops


@dataclass
class Sample:
    """Crops the parity check feeds both runtimes: uint8 RGB, batch of 2."""

    templates: np.ndarray
    """(B, T, T, 3) uint8 RGB"""
    searches: np.ndarray
    """(B, S, S, 3) uint8 RGB"""
    source: str


ParityFrames = tuple[list[np.ndarray], np.ndarray, str]
"""Four BGR frames, their 0-based x,y,w,h boxes (4, 4) and a line naming where they come from."""


def lasot_parity_frames(root: str | Path) -> ParityFrames | None:
    """Frames 0, 5, 10 and 15 (of the usable ones) of the first LaSOT-layout sequence under `root` that
    has them, for a parity check on real images; None when there is none."""
    root = Path(root)
    if not root.is_dir():
        return None
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


def synthetic_parity_frames() -> ParityFrames:
    """The default parity frames: four frames of a rendered clip (seeded, so every export sees the same)."""
    frames, boxes, _, _ = render_sequence(np.random.default_rng(7), 16, (320, 240))
    idx = [0, 5, 10, 15]
    return [frames[i] for i in idx], boxes[idx], "synthetic frames"


def parity_sample(cfg: Config, frames: ParityFrames | None = None) -> Sample:
    """Two template crops and two search crops, cut as the Tracker cuts them (same function, same windows).

    Templates from frames 0 and 10, searches from frames 5 and 15 around the box of the template frame:
    the target is off-centre in the search crop, as while tracking. `frames` defaults to
    `synthetic_parity_frames`; `lasot_parity_frames` gives real ones.
    """
    images, boxes, source = frames or synthetic_parity_frames()
    geometry = CropGeometry.from_data(cfg.data)
    templates, searches = [], []
    for t_i, s_i in ((0, 1), (2, 3)):
        templates.append(crop_antialiased(images[t_i], geometry.template(boxes[t_i])))
        searches.append(crop_antialiased(images[s_i], geometry.search(boxes[t_i])))
    # BGR -> RGB on the crops, as the Tracker does.
    return Sample(np.stack(templates)[..., ::-1].copy(), np.stack(searches)[..., ::-1].copy(), source)


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
    track: dict[str, Any] = field(default_factory=dict)
    """export.json's tracking settings (`onnx_format.track_settings`): the model's own, read by every runtime."""
    opencv4: dict[str, Any] = field(default_factory=dict)
    """Max |onnxruntime - PyTorch| of the OpenCV 4 copy of the graphs (`siamtool.export.opencv4`), relative
    to each output's scale; or {"skipped": why} for a model the folding does not handle (the copy is then
    not written; the main graphs are unaffected)."""
    online: dict[str, float] = field(default_factory=dict)
    """Max |onnxruntime - numpy| of the online model's graphs per output, relative to the output's scale
    (`siamtool.export.online.check_online_graphs`); checked against the same tolerance as the fp32 pair."""
    tolerance: float = 0.0

    @property
    def passed(self) -> bool:
        return all(p.passed for p in self.pairs) and all(v <= self.tolerance for v in self.online.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out), "export_id": self.export_id, "opset": self.opset, "sample": self.sample,
            "provider": self.provider, "exporter": self.exporter, "seconds": round(self.seconds, 2),
            "passed": self.passed, "siamtool_version": __version__,
            "graphs": [{"precision": p.precision, "template": p.template_path.name, "search": p.search_path.name,
                        "bytes": p.bytes, "max_diff": p.diffs, "units": _units(p.precision),
                        "tolerance": p.tolerance, "passed": p.passed}
                       for p in self.pairs],
            "online_graphs_max_diff": self.online,
            "opencv4_graphs_max_diff": self.opencv4,
            **self.track,
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



def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest |a - b|; complex arrays (the online filter's spectra) keep their imaginary parts."""
    a, b = np.asarray(a), np.asarray(b)
    dtype = np.complex128 if np.iscomplexobj(a) or np.iscomplexobj(b) else np.float64
    return float(np.abs(a.astype(dtype) - b.astype(dtype)).max())


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
    return _max_diff(a, ref) / max(float(np.abs(np.asarray(ref)).max()), 1e-12)


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


@dataclass(frozen=True)
class ExportSettings:
    """The settings of one export, resolved from the arguments and `cfg.export`, checked."""

    opset: int
    fp16: bool
    tolerance: float

    @classmethod
    def resolve(cls, cfg: Config, opset: int | None, fp16: bool | None, tolerance: float | None) -> ExportSettings:
        settings = cls(cfg.export.opset if opset is None else opset, cfg.export.fp16 if fp16 is None else fp16,
                       cfg.export.tolerance if tolerance is None else tolerance)
        check_settings(settings.opset, settings.tolerance)
        return settings

    @property
    def precisions(self) -> list[str]:
        return ["fp32", "fp16"] if self.fp16 else ["fp32"]


def export_model(
    model: nn.Module,
    cfg: Config,
    out: str | Path,
    *,
    opset: int | None = None,
    fp16: bool | None = None,
    tolerance: float | None = None,
    checkpoint_sha256: str = "",
    reporter: Reporter = SILENT,
    parity: ParityFrames | None = None,
    deploy: bool = True,
) -> ExportResult:
    """Write template.onnx + search.onnx for `model` into `out`, check them, keep them only if they pass.

    `deploy` also writes what a runtime outside Python needs (the online model's graphs and the OpenCV 4
    copy, docs/runtimes.md); the tracking cache leaves it out (Python tracks without them: seconds and
    megabytes saved on every first run).

    `opset`, `fp16` and `tolerance` default to `cfg.export`; `parity` are the frames the check crops
    (default: `synthetic_parity_frames`). Returns the comparison with PyTorch; graphs that fail are
    moved to ``out/rejected/`` (the previous good export, if any, is left in place). Each slow step is
    announced through `reporter.status`.
    """
    start = time.perf_counter()
    settings = ExportSettings.resolve(cfg, opset, fp16, tolerance)
    out = _output_folder(out)
    model = copy.deepcopy(model).float().cpu().eval()
    sample = parity_sample(cfg, parity)
    export_id = text_digest(f"{state_digest(model.state_dict())}|{json.dumps(cfg.to_dict(), sort_keys=True)}|"
                            f"{settings.opset}|{__version__}", 32)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        pairs = [_export_pair(model, cfg, sample, staging, precision, settings, export_id, checkpoint_sha256,
                              reporter) for precision in settings.precisions]
        online = _export_online(model, sample, staging, settings.opset, reporter) if deploy else {}
        opencv4 = (_export_opencv4(model, sample, staging, settings.tolerance, reporter) if deploy
                   else {"skipped": "not written for the tracking cache (siamtool export writes it)"})
        result = ExportResult(out, export_id, settings.opset, sample.source, "CPUExecutionProvider", pairs,
                              time.perf_counter() - start, track=track_settings(cfg, deploy), online=online,
                              opencv4=opencv4, tolerance=settings.tolerance)
        _publish(staging, out, result, cfg)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_json_atomic((out if result.passed else out / REJECTED_DIR) / REPORT_FILE, result.to_dict())
    return result


def _output_folder(out: str | Path) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SiamtoolError(f"--out {out}: is a file; give a folder for template.onnx and search.onnx")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _export_pair(model: nn.Module, cfg: Config, sample: Sample, staging: Path, precision: str,
                 settings: ExportSettings, export_id: str, checkpoint_sha256: str, reporter: Reporter) -> GraphPair:
    """Trace both graphs of one precision into `staging` (fp16: its subfolder) and compare them with PyTorch."""
    sub = staging if precision == "fp32" else staging / FP16_DIR
    sub.mkdir(exist_ok=True)
    net = model if precision == "fp32" else copy.deepcopy(model).half()
    dtype = torch.float32 if precision == "fp32" else torch.float16
    pair = GraphPair(precision, sub / TEMPLATE_FILE, sub / SEARCH_FILE,
                     tolerance=settings.tolerance if precision == "fp32" else FP16_TOLERANCE)
    common = dict(export_id=f"{export_id}-{precision}", precision=precision, opset=settings.opset,
                  checkpoint_sha256=checkpoint_sha256)
    z = torch.from_numpy(to_nchw(sample.templates[:1]))
    x = torch.from_numpy(to_nchw(sample.searches[:1]))
    with torch.inference_mode():
        feat = model.template(z)
    reporter.status(f"exporting the {precision} template graph")
    pair.bytes = _export_graph(TemplateGraph(net, dtype).eval(), (z,), pair.template_path, TEMPLATE_INPUTS,
                               TEMPLATE_OUTPUTS, settings.opset, build_metadata(model, cfg, graph="template", **common))
    reporter.status(f"exporting the {precision} search graph")
    pair.bytes += _export_graph(SearchGraph(net, dtype).eval(), (x, feat), pair.search_path, SEARCH_INPUTS,
                                SEARCH_OUTPUTS, settings.opset, build_metadata(model, cfg, graph="search", **common))
    reporter.status(f"running the {precision} graphs in onnxruntime and PyTorch")
    pair.diffs = compare_with_torch(model, pair, sample, cfg.data.search_size)
    return pair


def _export_online(model: nn.Module, sample: Sample, staging: Path, opset: int, reporter: Reporter) -> dict[str, float]:
    """Write the online model's two graphs (`siamtool.export.online`) beside the fp32 pair and check them
    against numpy on the parity sample's search features, with a Hann window and a centred label."""
    reporter.status("exporting the online target model's graphs")
    z = torch.from_numpy(to_nchw(sample.templates[:1]))
    x = torch.from_numpy(to_nchw(sample.searches[:1]))
    with torch.inference_mode():
        feats = SearchGraph(model).eval()(x, model.template(z))[2].numpy()
    _, c, h, w = feats.shape
    export_online_graphs(staging, c, h, w, opset)
    window = np.outer(np.hanning(h + 2)[1:-1], np.hanning(w + 2)[1:-1])
    dy, dx = np.arange(h)[:, None] - h / 2, np.arange(w)[None, :] - w / 2
    label = np.exp(-0.5 * (dy**2 + dx**2) / max(0.1 * h / 4, 0.25) ** 2)
    return check_online_graphs(staging, feats, window, label)


def _export_opencv4(model: nn.Module, sample: Sample, staging: Path, tolerance: float,
                    reporter: Reporter) -> dict[str, Any]:
    """The batch-1 copy for OpenCV 4 (`siamtool.export.opencv4`), kept only where it matches PyTorch: an
    optional extra for `cpp/`, so a backbone it cannot fold (the DINOv3 ViTs' RoPE `If` nodes) or a
    mismatch leaves it out with the reason, and never rejects the export."""
    reporter.status("exporting the graphs for OpenCV 4 (batch 1, folded)")
    z, x = torch.from_numpy(to_nchw(sample.templates[:1])), torch.from_numpy(to_nchw(sample.searches[:1]))
    try:
        diffs: dict[str, Any] = compare_opencv4_graphs(model, export_opencv4_graphs(model, staging, z, x), z, x)
    except Exception as e:  # noqa: BLE001 - any failure of the optional copy is reported, not raised
        diffs = {"skipped": f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"}
    if "skipped" not in diffs and max(diffs.values()) > tolerance:
        diffs = {"skipped": f"differs from PyTorch by {max(diffs.values()):.2g} (tolerance {tolerance:g})", **diffs}
    if "skipped" in diffs:
        shutil.rmtree(staging / OPENCV4_DIR, ignore_errors=True)
    return diffs


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
    shutil.rmtree(target / OPENCV4_DIR, ignore_errors=True)  # a stale copy of an earlier export
    if (staging / OPENCV4_DIR).is_dir():
        (target / OPENCV4_DIR).mkdir(parents=True, exist_ok=True)
        for src in sorted((staging / OPENCV4_DIR).glob("*.onnx")):
            os.replace(src, target / OPENCV4_DIR / src.name)
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
                      overrides: list[str] | tuple[str, ...] = (), reporter: Reporter = SILENT,
                      parity: ParityFrames | None = None, deploy: bool = True) -> ExportResult:
    """Load a checkpoint (one-line error if corrupt or from another version) and `export_model` it."""
    check_settings(opset, tolerance)
    path = checkpoint_path(checkpoint)
    reporter.status(f"loading {path}")
    model, cfg = load_model(path, "cpu", overrides)
    return export_model(model, cfg, out, opset=opset, fp16=fp16, tolerance=tolerance,
                        checkpoint_sha256=file_digest(path), reporter=reporter, parity=parity, deploy=deploy)
