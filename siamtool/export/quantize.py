"""int8 search graph: onnxruntime quantization of an export, for the CPU.

`siamtool export --int8` writes ``OUT/int8/``: the fp32 template graph (it runs once per target, so int8
would gain nothing there) and the search graph quantized one of two ways:

* ``--int8 --calibration ROOT`` (static, for convolutional backbones): ``quantize_static``, QDQ format,
  int8 weights per output channel, uint8 activations with MinMax ranges from real search crops;
* ``--int8`` alone (dynamic, for ViT backbones, whose work is matrix products): ``quantize_dynamic`` of
  the MatMul nodes, int8 weights per output channel, activations quantized at run time; no calibration.

Only convolutions and matrix products are quantized: the decoder at the end of the graph (sigmoid, box
arithmetic) and the normalisation at its start stay float32, so the outputs keep their units.
``--onnx OUT/int8`` tracks with it, in onnxruntime.

Calibration crops are cut the way the Tracker cuts them (`geometry.search_window` around the previous
frame's ground-truth box, `crop_antialiased`), with the template features of each sequence's first
frame, from the sequences of a LaSOT-layout ROOT. The model's own validation sequences
(`data.val_sequences` of its config) and the dev-test sequences of ``real_lasot`` are never used, so
accuracy measured on either afterwards is not flattered by the calibration.

Each quantized pair is compared with the fp32 pair before it is kept (`QuantizeResult.diffs`): on
held-back crops of ROOT (static) or on the export's own parity crops (dynamic). Tracking accuracy is
measured by ``benchmarks/track_profile.py --int8 OUT/int8 --val``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from siamtool.errors import SiamtoolError
from siamtool.reporting import SILENT, Reporter

INT8_DIR = "int8"
QUANTIZED_OPS = ("Conv", "MatMul")
MIN_STRIDE = 8
"""Layers whose output is finer than this (in search-crop pixels per feature cell) stay float32: the
shipped tracker's early, full-resolution, few-channel stages lose the target when quantized (measured on
held-back crops: the score peak moved on 22 % of them with every layer int8, on 9 % from stride 8 on)."""
DEV_TEST = ("face-3", "motorcycle-2", "person-1")
"""real_lasot's dev-test sequences: never calibration data."""
INT8_TOLERANCE = 0.1
"""Largest score difference int8 - fp32 accepted on the held-back crops (scores are in [0, 1])."""


@dataclass
class Calibration:
    """Search crops (N, 3, S, S) float32 and the template features (N, ...) to feed with each."""

    searches: np.ndarray
    features: np.ndarray
    sequences: list[str] = field(default_factory=list)


@dataclass
class QuantizeResult:
    folder: Path
    calibration_crops: int
    sequences: list[str]
    diffs: dict[str, float]
    """int8 - fp32 on held-back crops: score (absolute), boxes (fraction of the crop), search_features
    (fraction of their largest magnitude), peak_moved (share of crops whose score peak is another cell)."""
    quantized_nodes: int = 0
    min_stride: int = MIN_STRIDE
    tolerance: float = INT8_TOLERANCE
    mode: str = "static"
    """static (calibrated QDQ) or dynamic (MatMul weights int8, activations quantized at run time)."""

    @property
    def passed(self) -> bool:
        return self.diffs["score"] <= self.tolerance

    def to_dict(self) -> dict:
        return {"folder": str(self.folder), "mode": self.mode, "calibration_crops": self.calibration_crops,
                "quantized_nodes": self.quantized_nodes, "min_stride": self.min_stride,
                "sequences": self.sequences, "diffs": self.diffs, "tolerance_score": self.tolerance,
                "passed": self.passed}


def calibration_crops(root: str | Path, template_session, exclude: set[str], *, count: int = 160,
                      per_sequence: int = 8, seed: int = 0) -> Calibration:
    """`count` search crops from the sequences of `root` not in `exclude`, `per_sequence` frames each,
    spread evenly over each sequence; the features come from `template_session` (the fp32 template graph)."""
    from siamtool.config import config_from_dict
    from siamtool.data.lasot import find_sequences, load_sequence
    from siamtool.errors import DatasetError
    from siamtool.geometry import crop_antialiased, from_lasot, search_window, template_window
    from siamtool.onnx_format import to_nchw

    meta = template_session.get_modelmeta().custom_metadata_map
    d = config_from_dict(json.loads(meta["config"]), "template graph").data
    try:
        found = find_sequences(root)
    except (SiamtoolError, OSError) as e:
        raise SiamtoolError(f"--calibration {root}: {e}") from None
    names = sorted(n for n in found if n not in exclude)
    if not names:
        raise SiamtoolError(f"--calibration {root}: no LaSOT-layout sequences there (other than the excluded "
                            f"validation and dev-test ones)")
    rng = np.random.default_rng(seed)
    names = list(rng.permutation(names))[: max(1, -(-count // per_sequence))]
    searches, features, used = [], [], []
    for name in names:
        try:
            seq = load_sequence(found[name])
        except DatasetError:
            continue
        first = cv2.imread(str(seq.frame_path(0)), cv2.IMREAD_COLOR)
        if first is None:
            continue
        box0 = from_lasot(seq.gt[0])
        z = cv2.cvtColor(crop_antialiased(first, template_window(box0, d.context, d.template_size)),
                         cv2.COLOR_BGR2RGB)
        (feat,) = template_session.run(None, {"template": to_nchw(z[None])})
        for i in np.linspace(1, seq.n_frames - 1, min(per_sequence, seq.n_frames - 1)).astype(int):
            frame = cv2.imread(str(seq.frame_path(int(i))), cv2.IMREAD_COLOR)
            prev = from_lasot(seq.gt[int(i) - 1])
            if frame is None or seq.absent[int(i) - 1] or not np.all(prev[2:] > 0):
                continue
            window = search_window(prev, d.context, d.template_size, d.search_size)
            x = cv2.cvtColor(crop_antialiased(frame, window), cv2.COLOR_BGR2RGB)
            searches.append(to_nchw(x[None]))
            features.append(feat)
        used.append(str(name))
    if len(searches) < 2:
        raise SiamtoolError(f"--calibration {root}: fewer than 2 readable frames in its sequences")
    return Calibration(np.concatenate(searches), np.concatenate(features), used)


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a `Calibration`, one crop at a time."""

    def __init__(self, cal: Calibration) -> None:
        self._items: Iterator[int] = iter(range(len(cal.searches)))
        self.cal = cal

    def get_next(self) -> dict[str, np.ndarray] | None:
        i = next(self._items, None)
        if i is None:
            return None
        return {"search": self.cal.searches[i:i + 1], "template_features": self.cal.features[i:i + 1]}

    def rewind(self) -> None:
        self._items = iter(range(len(self.cal.searches)))


def quantizable_nodes(path: Path, sample: dict[str, np.ndarray], search_size: int, min_stride: int) -> list[str]:
    """Conv and MatMul nodes of a search graph whose output has a stride >= `min_stride` (stride = search
    size / output height, read by running the graph once on `sample` with every Conv output exposed:
    the "same" padding of some backbones is computed at run time, so shape inference cannot tell). MatMul
    nodes work on tokens after the backbone and are always kept."""
    import onnx
    from onnx import helper

    from siamtool.onnx_format import onnx_session

    model = onnx.load(str(path))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    model.graph.output.extend(helper.make_tensor_value_info(n.output[0], onnx.TensorProto.FLOAT, None) for n in convs)
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save_model(model, f"{tmp}/probe.onnx")
        session = onnx_session(f"{tmp}/probe.onnx")
        outs = session.run([n.output[0] for n in convs], sample)
    fine = {n.name for n, out in zip(convs, outs) if out.ndim == 4 and search_size / out.shape[2] < min_stride}
    return [n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS and n.name not in fine]


def quantize_search_graph(src: Path, dst: Path, cal: Calibration, search_size: int, min_stride: int = MIN_STRIDE,
                          per_channel: bool = True) -> int:
    """Static QDQ int8 quantization of `src` (a search graph) into `dst`; metadata kept, precision int8.
    Returns how many nodes were quantized."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    reader = _Reader(cal)
    nodes = quantizable_nodes(src, reader.get_next() or {}, search_size, min_stride)
    reader.rewind()
    if not nodes:
        raise SiamtoolError(f"{src}: no convolution or matrix product at stride >= {min_stride} to quantize")
    _write_quantized(dst, lambda raw: quantize_static(
        str(src), raw, reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OPS),
        nodes_to_quantize=nodes, per_channel=per_channel, activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
        extra_options={"CalibTensorRangeSymmetric": False}))
    return len(nodes)


def quantize_dynamic_search_graph(src: Path, dst: Path) -> int:
    """Dynamic int8 quantization of the MatMul nodes of `src` into `dst`; returns how many were quantized."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    proto = _write_quantized(dst, lambda raw: quantize_dynamic(
        str(src), raw, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"], per_channel=True,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT}))
    return sum(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in proto.graph.node)


def _write_quantized(dst: Path, quantize: Callable[[str], None]):
    """Run `quantize(raw_path)` quietly in a temporary folder beside `dst`, mark the result int8 and save it
    to `dst`; returns the saved proto."""
    import onnx

    with tempfile.TemporaryDirectory(prefix=".int8-", dir=dst.parent) as tmp, _quiet_quantizer():
        raw = str(Path(tmp) / "search.onnx")
        quantize(raw)
        proto = onnx.load(raw)
    _set_precision(proto)
    onnx.save_model(proto, str(dst))
    return proto


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """onnxruntime.quantization logs advice (pre-processing, bias initializers) on the root logger, which
    would print on stderr; the comparison with fp32 afterwards is what tells whether the graph is good."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _set_precision(proto) -> None:
    """Mark a graph int8: precision and export id (both graphs of a pair must agree on the id)."""
    for entry in proto.metadata_props:
        if entry.key == "precision":
            entry.value = "int8"
        elif entry.key == "export_id":
            entry.value = entry.value.rsplit("-", 1)[0] + "-int8"


def _compare(fp32: tuple, int8: tuple, search_size: int) -> dict[str, float]:
    (s32, b32, f32), (s8, b8, f8) = fp32, int8
    peaks = s8.reshape(len(s8), -1).argmax(1) != s32.reshape(len(s32), -1).argmax(1)
    return {"score": float(np.abs(s8 - s32).max()), "peak_moved": float(peaks.mean()),
            "boxes": float(np.abs(b8 - b32).max()) / search_size,
            "search_features": float(np.abs(f8 - f32).max() / max(np.abs(f32).max(), 1e-12))}


def quantize_export(folder: str | Path, calibration: str | Path | None = None, *, count: int = 160,
                    min_stride: int = MIN_STRIDE, tolerance: float | None = None,
                    reporter: Reporter = SILENT) -> QuantizeResult:
    """Write ``folder/int8/`` from the fp32 graphs in `folder`: static int8 calibrated on crops of
    `calibration`, or dynamic int8 (MatMul) when `calibration` is None.

    The pair is compared with fp32 first: on held-back crops (static: every 4th crop is kept out of the
    calibration) or on the export's parity crops (dynamic); a pair whose scores differ by more than
    `tolerance` (default `INT8_TOLERANCE`) is not written (the result says so). Writes go through a
    staging folder renamed into place, so a failed run leaves no half pair. Steps are announced through
    `reporter.status`.
    """
    import onnx

    from siamtool.config import config_from_dict
    from siamtool.onnx_format import SEARCH_FILE, TEMPLATE_FILE, export_spec, onnx_session

    folder = Path(folder)
    spec = export_spec(folder)
    if spec.precision != "fp32":
        raise SiamtoolError(f"{folder}: int8 quantizes an fp32 export, this one is {spec.precision}")
    cfg = config_from_dict(json.loads(spec.metadata["config"]), "template graph")
    template = onnx_session(spec.template_path)
    out = folder / INT8_DIR
    staging = Path(tempfile.mkdtemp(prefix=".int8-", dir=folder))
    try:
        if calibration is None:
            reporter.status("quantizing the search graph's matrix products (dynamic int8)")
            feeds, nodes, crops, sequences = _dynamic(spec, cfg, template, staging / SEARCH_FILE)
            mode = "dynamic"
        else:
            feeds, nodes, crops, sequences = _static(spec, cfg, template, staging / SEARCH_FILE, calibration, count,
                                                     min_stride, reporter)
            mode = "static"
        proto = onnx.load(str(spec.template_path))
        _set_precision(proto)
        onnx.save_model(proto, str(staging / TEMPLATE_FILE))
        reporter.status("comparing int8 with fp32")
        diffs = _compare(tuple(onnx_session(spec.search_path).run(None, feeds)),
                         tuple(onnx_session(staging / SEARCH_FILE).run(None, feeds)), spec.search_size)
        result = QuantizeResult(out, crops, sequences, diffs, nodes, min_stride,
                                INT8_TOLERANCE if tolerance is None else tolerance, mode)
        if result.passed:
            _publish(staging, out, result, cfg)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def _dynamic(spec, cfg, template, dst: Path) -> tuple[dict[str, np.ndarray], int, int, list[str]]:
    """Dynamic int8 into `dst`; returns the comparison feeds (the export's parity crops), nodes, 0, []."""
    from siamtool.export.onnx import parity_sample
    from siamtool.onnx_format import to_nchw

    sample = parity_sample(cfg)
    (feats,) = template.run(None, {"template": to_nchw(sample.templates)})
    feeds = {"search": to_nchw(sample.searches), "template_features": feats}
    return feeds, quantize_dynamic_search_graph(spec.search_path, dst), 0, []


def _static(spec, cfg, template, dst: Path, calibration: str | Path, count: int, min_stride: int,
            reporter: Reporter) -> tuple[dict[str, np.ndarray], int, int, list[str]]:
    """Static int8 into `dst` calibrated on 3 of every 4 crops of `calibration`; returns the held-back
    crops as comparison feeds, the quantized nodes, the calibration crop count and the sequences."""
    reporter.status(f"cutting calibration crops from {calibration}")
    exclude = set(cfg.data.val_sequences) | set(DEV_TEST)
    everything = calibration_crops(calibration, template, exclude, count=count + count // 3)
    held = np.arange(len(everything.searches)) % 4 == 3
    cal = Calibration(everything.searches[~held], everything.features[~held], everything.sequences)
    feeds = {"search": everything.searches[held], "template_features": everything.features[held]}
    reporter.status(f"quantizing the search graph on {len(cal.searches)} crops")
    nodes = quantize_search_graph(spec.search_path, dst, cal, spec.search_size, min_stride)
    return feeds, nodes, len(cal.searches), cal.sequences


def _publish(staging: Path, out: Path, result: QuantizeResult, cfg) -> None:
    """Replace `out` by the checked `staging` folder (config and report written into it first)."""
    from siamtool.fileio import write_json_atomic

    cfg.save(staging / "config.yaml")
    write_json_atomic(staging / "int8.json", result.to_dict())
    old = out.parent / f".{INT8_DIR}-old"
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    staging.rename(out)
    shutil.rmtree(old, ignore_errors=True)
