"""A second copy of the two graphs that OpenCV 4.x's DNN importer reads (Debian 12's libopencv-dev is 4.6).

The main graphs (`siamtool.export.onnx`) are opset 17 with a dynamic batch axis. OpenCV 4.6 refuses them:
its importer reads ``Clip`` bounds only as attributes (opset 6), cannot follow the ``Shape -> Gather ->
Concat`` chains a dynamic batch leaves, reads a 1-D constant in ``Mul``/``Add`` as per-channel (axis 1)
instead of broadcasting it over the last axis, asserts non-negative axes, and has no LayerNormalization.
`cpp/` (the reference C++ tracker) links against that OpenCV, so the export also writes ``opencv4/``:

* traced at batch 1 and opset 16 (LayerNormalization decomposed into ReduceMean/Sub/Pow/Sqrt/Div);
* every node whose inputs are constants once the shapes are fixed is folded into a constant
  (`fold_for_opencv4`), ``Clip`` bounds become attributes, broadcast constants are expanded to the full
  shape of the other operand and negative axes become positive;
* the search graph ends with a decoder of elementwise operations on (1, 4, H, W): ``boxes`` is
  channel-first there (cx, cy, w, h as channels), ``score`` is (1, 1, H, W); the values are those of
  `siamtool.models.decode.decode`.

The graphs are checked against PyTorch in onnxruntime like the main pair (same tolerance).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from siamtool.onnx_format import OPENCV4_DIR

OPENCV4_OPSET = 16


class CompatSearchGraph(nn.Module):
    """search crop + template features -> score (1,1,H,W), boxes (1,4,H,W) channel-first, features."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        stride, size, h = int(model.stride), int(model.search_size), int(model.feat_size)
        centres = (torch.arange(h, dtype=torch.float32) + 0.5) * stride
        offset = torch.zeros(1, 4, h, h)
        offset[0, 0] = centres.view(1, h)
        offset[0, 1] = centres.view(h, 1)
        linear = torch.tensor([stride, stride, 0.0, 0.0]).view(1, 4, 1, 1).expand(1, 4, h, h).clone()
        squash = torch.tensor([0.0, 0.0, size, size], dtype=torch.float32).view(1, 4, 1, 1).expand(1, 4, h, h).clone()
        self.register_buffer("offset", offset)
        self.register_buffer("linear", linear)
        self.register_buffer("squash", squash)

    def forward(self, search: torch.Tensor, template_features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        heat, box_raw, feat = self.model.search_with_features(search, template_features)
        boxes = box_raw * self.linear + torch.sigmoid(box_raw) * self.squash + self.offset
        return torch.sigmoid(heat), boxes, feat


def _actual_shapes(proto) -> dict[str, list[int]]:
    """Every tensor's shape, from one onnxruntime run at batch 1 (shape inference leaves some unknown)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    probe = copy.deepcopy(proto)
    known = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for out in node.output:
            if out not in known:
                probe.graph.output.append(helper.make_value_info(out, onnx.TypeProto()))
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.random([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32) * 255
             for i in sess.get_inputs()}
    outs = sess.run(None, feeds)
    shapes = {o.name: list(np.shape(v)) for o, v in zip(sess.get_outputs(), outs)}
    shapes.update({k: list(v.shape) for k, v in feeds.items()})
    return shapes


def _constant(name: str, value: np.ndarray):
    from onnx import helper, numpy_helper

    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name))


def _evaluate(node, const: dict[str, np.ndarray], opsets) -> np.ndarray | None:
    """The output of a node whose inputs are all constants (onnx's reference evaluator); None if it fails."""
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    inputs = [i for i in node.input if i]
    graph = helper.make_graph(
        [node], "fold",
        [helper.make_tensor_value_info(i, numpy_helper.from_array(const[i]).data_type, const[i].shape) for i in inputs],
        [helper.make_tensor_value_info(o, 0, None) for o in node.output])
    try:
        return ReferenceEvaluator(helper.make_model(graph, opset_imports=opsets)).run(
            None, {i: const[i] for i in inputs})[0]
    except Exception:  # noqa: BLE001 - a node the reference evaluator cannot run stays as it is
        return None


def _fold_constants(proto, shapes: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """Replace Shape nodes and nodes of constant inputs by Constant nodes; returns every constant."""
    from onnx import numpy_helper

    const = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    nodes = []
    for node in proto.graph.node:
        value = None
        if node.op_type == "Constant":
            const[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Shape" and node.input[0] in shapes:
            value = np.array(shapes[node.input[0]], np.int64)
        elif node.op_type != "Conv" and len(node.output) == 1 and all(i in const for i in node.input if i):
            value = _evaluate(node, const, proto.opset_import)
        if value is None:
            nodes.append(node)
            continue
        const[node.output[0]] = np.asarray(value)
        nodes.append(_constant(node.output[0], value))
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return const


def _clip_attributes(proto, const: dict[str, np.ndarray]) -> None:
    """Clip(x, min, max) with constant bounds -> Clip(x) with min/max attributes, the opset-6 form OpenCV
    4.6 reads (onnxruntime refuses it at opset 16, which is why the check runs before this step)."""
    from onnx import helper

    for node in proto.graph.node:
        if node.op_type == "Clip" and len(node.input) == 3:
            lo, hi = float(const[node.input[1]]), float(const[node.input[2]])
            del node.input[1:]
            node.attribute.extend([helper.make_attribute("min", lo), helper.make_attribute("max", hi)])


def _rewrite_for_opencv4(proto, shapes: dict[str, list[int]], const: dict[str, np.ndarray]) -> None:
    """Broadcast constants (scalars too: OpenCV 4.6 scaled a 4-D tensor by a scalar wrongly) at full shape,
    non-negative axes (see the module docstring)."""
    extra = []
    for k, node in enumerate(proto.graph.node):
        if node.op_type in ("Mul", "Add", "Sub", "Div") and len(node.input) == 2:
            for side in (0, 1):
                c, x = node.input[side], node.input[1 - side]
                if c in const and x not in const and x in shapes:
                    full = list(np.broadcast_shapes(tuple(shapes[x]), const[c].shape))
                    if list(const[c].shape) != full:
                        name = f"{c}__full{k}"
                        extra.append(_constant(name, np.ascontiguousarray(np.broadcast_to(const[c], full))))
                        node.input[side] = name
        if node.op_type == "Unsqueeze" and len(node.input) == 2 and node.input[1] in const:
            rank = len(shapes[node.output[0]])
            name = f"{node.input[1]}__pos{k}"
            extra.append(_constant(name, np.array([a % rank for a in np.atleast_1d(const[node.input[1]])], np.int64)))
            node.input[1] = name
        rank_of = shapes.get(node.output[0] if node.op_type == "Concat" else node.input[0] if node.input else "")
        for attr in node.attribute:
            if attr.name == "axis" and attr.i < 0 and rank_of:
                attr.i = attr.i % len(rank_of)
            if attr.name == "axes" and rank_of and any(v < 0 for v in attr.ints):
                values = [v % len(rank_of) for v in attr.ints]
                del attr.ints[:]
                attr.ints.extend(values)
    nodes = extra + list(proto.graph.node)
    used = {i for n in nodes for i in n.input} | {o.name for o in proto.graph.output}
    del proto.graph.node[:]
    proto.graph.node.extend(n for n in nodes if n.op_type != "Constant" or n.output[0] in used)
    kept = [i for i in proto.graph.initializer if i.name in used]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)


def fold_for_opencv4(path: Path) -> bytes:
    """Rewrite the batch-1 graph at `path` in place into the form OpenCV 4.6 imports (module docstring).

    Returns the graph as it was before the last, purely syntactic step (`_clip_attributes`): the form
    onnxruntime still runs, for the check against PyTorch."""
    import onnx

    proto = onnx.load(str(path))
    shapes = _actual_shapes(proto)
    const = _fold_constants(proto, shapes)
    _rewrite_for_opencv4(proto, shapes, const)
    checkable = proto.SerializeToString()
    _clip_attributes(proto, const)
    onnx.save(proto, str(path))
    return checkable


def export_opencv4_graphs(model: nn.Module, out: Path, template: torch.Tensor, search: torch.Tensor
                          ) -> tuple[bytes, bytes]:
    """Trace the batch-1 graphs into `out/opencv4/` and fold them (`fold_for_opencv4`); returns the
    graphs in the form onnxruntime runs, for `compare_opencv4_graphs`."""
    from siamtool.export.onnx import TemplateGraph, _quiet_export
    from siamtool.onnx_format import SEARCH_FILE, SEARCH_INPUTS, SEARCH_OUTPUTS, TEMPLATE_FILE, TEMPLATE_INPUTS

    folder = out / OPENCV4_DIR
    folder.mkdir(exist_ok=True)
    paths = folder / TEMPLATE_FILE, folder / SEARCH_FILE
    with _quiet_export(), torch.no_grad():
        feat = model.template(template)
        torch.onnx.export(TemplateGraph(model).eval(), (template,), str(paths[0]), input_names=TEMPLATE_INPUTS,
                          output_names=["template_features"], opset_version=OPENCV4_OPSET, dynamo=False)
        torch.onnx.export(CompatSearchGraph(model).eval(), (search, feat), str(paths[1]), input_names=SEARCH_INPUTS,
                          output_names=SEARCH_OUTPUTS, opset_version=OPENCV4_OPSET, dynamo=False)
    return fold_for_opencv4(paths[0]), fold_for_opencv4(paths[1])


def compare_opencv4_graphs(model: nn.Module, graphs: tuple[bytes, bytes], template: torch.Tensor,
                           search: torch.Tensor) -> dict[str, float]:
    """Run the folded graphs in onnxruntime and PyTorch; max |difference| relative to each output's scale."""
    import onnxruntime as ort

    from siamtool.models.decode import decode

    def session(graph: bytes):
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        return ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])

    (feat,) = session(graphs[0]).run(None, {"template": template.numpy()})
    score, boxes, features = session(graphs[1]).run(None, {"search": search.numpy(), "template_features": feat})
    with torch.inference_mode():
        ref_feat = model.template(template)
        heat, box_raw, ref_features = model.search_with_features(search, ref_feat)
        ref_score, ref_boxes = decode(heat.float(), box_raw.float(), int(model.stride), int(model.search_size))
    got = {"template_features": feat, "score": score[:, 0], "boxes": np.moveaxis(boxes, 1, -1),
           "search_features": features}
    ref = {"template_features": ref_feat, "score": ref_score, "boxes": ref_boxes, "search_features": ref_features}
    return {k: float(np.abs(got[k] - ref[k].numpy()).max() / max(float(np.abs(ref[k].numpy()).max()), 1e-12))
            for k in got}
