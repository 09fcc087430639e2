"""Compare OpenCV DNN with onnxruntime node by node on an export's two graphs (issue 23's bisect).

Every float tensor of template.onnx and search.onnx is made a graph output, both runtimes run the export's
parity crops, and each node's largest difference relative to the tensor's scale is printed, worst last.
Use it when a new OpenCV release moves the tracker's boxes: a node far above float32 rounding (~1e-6) is
where that release computes something else; all nodes near 1e-6 mean it only rounds differently.

    python benchmarks/opencv_nodes.py EXPORT_DIR [--top 10]
    python benchmarks/opencv_nodes.py            # a tiny random resnet18 export, made in a temp folder

Measured (2026-12-06, AMD EPYC with AVX2, onnxruntime 1.32.0, the tiny export): the worst node of either
graph is 2.3e-6 (OpenCV 5.0.0.93), 2.6e-6 (5.1.0.95) and 2.5e-6 (5.1.0.95 with OPENCV_CPU_DISABLE=AVX2).
The shipped tracker (`siamtool export siamtool/weights/lite0_default.pt --out DIR`): worst 1.2e-5 on both
releases (an early ReLU6 of EfficientNet-Lite0), 1.7e-5 on 5.1.0.95 with AVX2 disabled.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnx import shape_inference

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from siamtool.export.onnx import parity_sample  # noqa: E402
from siamtool.onnx_format import crop_to_input  # noqa: E402
from siamtool.tracking.onnx_backend import OnnxBackend  # noqa: E402


def all_outputs(path: Path, out: Path) -> list[str]:
    """Write `path` with every float intermediate tensor as a graph output to `out`; return their names."""
    model = shape_inference.infer_shapes(onnx.load(str(path)))
    known = {o.name for o in model.graph.output}
    info = {v.name: v for v in model.graph.value_info}
    names = [o for n in model.graph.node for o in n.output
             if o in known or (o in info and info[o].type.tensor_type.elem_type == onnx.TensorProto.FLOAT)]
    model.graph.output.extend(info[n] for n in names if n not in known)
    onnx.save(model, str(out))
    return names


def compare(path: Path, feeds: dict[str, np.ndarray], work: Path) -> list[tuple[float, str, str]]:
    """(relative difference, op type, tensor) for every float tensor of the graph at `path`."""
    full = work / path.name
    names = all_outputs(path, full)
    session = ort.InferenceSession(str(full), providers=["CPUExecutionProvider"])
    ref = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    net = cv2.dnn.readNetFromONNX(str(full))
    for key, value in feeds.items():
        net.setInput(np.ascontiguousarray(value, np.float32), key)
    got = dict(zip(names, net.forward(names)))
    ops = {o: n.op_type for n in onnx.load(str(full)).graph.node for o in n.output}
    rows = []
    for name in names:
        a, r = got[name], ref[name]
        if a is None or a.shape != r.shape:  # OpenCV fused the node away, or keeps another layout
            continue
        rows.append((float(np.abs(a - r).max() / (np.abs(r).max() + 1e-12)), ops[name], name))
    return rows


def tiny_export(work: Path) -> Path:
    """The test suite's tiny random resnet18 `stable_model`, exported to `work/export`."""
    from siamtool.export.onnx import export_model
    from tests.conftest import tiny_config
    from tests.onnx_fixtures import STABLE, stable_model

    cfg = tiny_config(*STABLE, backbone="resnet18")
    assert export_model(stable_model(cfg), cfg, work / "export").passed
    return work / "export"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", nargs="?", type=Path, help="an export folder (default: a tiny random one)")
    parser.add_argument("--top", type=int, default=10, help="print the N largest differences per graph")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = args.export or tiny_export(work)
        backend = OnnxBackend(folder, threads=1)
        sample = parity_sample(backend.cfg)
        z, x = sample.templates[0], sample.searches[0]
        graphs = {"template.onnx": {"template": crop_to_input(z, backend.template_size, "template")},
                  "search.onnx": {"search": crop_to_input(x, backend.search_size, "search"),
                                  "template_features": backend.template(z)}}
        print(f"OpenCV {cv2.__version__}, onnxruntime {ort.__version__}, {folder}")
        for graph, feeds in graphs.items():
            rows = sorted(compare(folder / graph, feeds, work))
            print(f"{graph}: {len(rows)} tensors compared, worst {rows[-1][0]:.1e} ({rows[-1][1]} {rows[-1][2]})")
            for diff, op, name in rows[-args.top:]:
                print(f"  {diff:.1e}  {op:22s} {name}")


if __name__ == "__main__":
    main()
