"""`siamtool export`: graphs that run in onnxruntime like PyTorch, for every backbone, with their metadata."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from siamtool.cli import app
from siamtool.export import onnx as export_onnx
from siamtool.export.onnx import export_model, parity_sample
from siamtool.models import list_backbones
from siamtool.onnx_format import (
    FORMAT,
    FORMAT_VERSION,
    METADATA_KEYS,
    SEARCH_FILE,
    TEMPLATE_FILE,
    read_metadata,
    to_nchw,
)
from siamtool.tracking.backends import TorchBackend
from siamtool.tracking.onnx_backend import OnnxBackend
from tests.conftest import tiny_config
from tests.onnx_fixtures import peaked_model

runner = CliRunner()



@pytest.mark.parametrize("backbone", list_backbones())
def test_every_backbone_exports_and_matches_pytorch(backbone, tmp_path):
    cfg = tiny_config(backbone=backbone)
    model = peaked_model(cfg)
    result = export_model(model, cfg, tmp_path)
    assert result.passed, result.to_dict()
    (pair,) = result.pairs
    assert set(pair.diffs) == {"template_features", "score", "boxes", "search_features"}
    assert pair.max_diff < 1e-4

    # Independently of the export's own check: the two Tracker backends on one crop pair (batch 1).
    sample = parity_sample(cfg)
    torch_be, onnx_be = TorchBackend(model, "cpu"), OnnxBackend(tmp_path, threads=1)
    t_score, t_boxes, t_feat = torch_be.search(sample.searches[1], torch_be.template(sample.templates[1]))
    o_score, o_boxes, o_feat = onnx_be.search(sample.searches[1], onnx_be.template(sample.templates[1]))
    assert o_score.shape == (cfg.data.search_size // 16,) * 2 and o_boxes.shape == (*o_score.shape, 4)
    assert o_score.dtype == np.float32 and o_boxes.dtype == np.float32
    np.testing.assert_allclose(o_score, t_score, atol=1e-4)
    np.testing.assert_allclose(o_boxes, t_boxes, atol=1e-4)
    np.testing.assert_allclose(o_feat, t_feat, atol=1e-4)  # what the online target model learns on
    assert t_score.std() > 0.05  # the peaked model's scores vary: the comparison is not of constants


def test_graphs_are_single_file_opset17_dynamic_batch_with_metadata(stable_export):
    for name, graph, inputs, outputs in (
        (TEMPLATE_FILE, "template", ["template"], ["template_features"]),
        (SEARCH_FILE, "search", ["search", "template_features"], ["score", "boxes", "search_features"]),
    ):
        path = stable_export / name
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
        assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
        assert [p.name for p in proto.graph.input] == inputs
        assert [p.name for p in proto.graph.output] == outputs
        for value in [*proto.graph.input, *proto.graph.output]:
            assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
        assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
        meta = read_metadata(path)
        assert set(meta) == set(METADATA_KEYS)
        assert meta["format"] == FORMAT and meta["format_version"] == str(FORMAT_VERSION)
        assert meta["graph"] == graph
        assert (meta["template_size"], meta["search_size"], meta["stride"], meta["feat_size"]) == ("32", "80", "16", "5")
        assert meta["backbone"] == "resnet18" and float(meta["context"]) == 0.5
        assert json.loads(meta["crop"])["search_size"] == 80
        assert json.loads(meta["normalization"])["mean"] == pytest.approx([0.485, 0.456, 0.406])
        assert json.loads(meta["config"])["model"]["backbone"] == "resnet18"
        assert len(meta["checkpoint_sha256"]) == 64
    assert read_metadata(stable_export / TEMPLATE_FILE)["export_id"] == read_metadata(stable_export / SEARCH_FILE)[
        "export_id"]
    assert (stable_export / "config.yaml").is_file()
    assert json.loads((stable_export / "export.json").read_text())["passed"] is True


def test_batch_of_three_matches_three_single_runs(stable_export):
    from siamtool.onnx_format import onnx_session, to_nchw

    cfg = OnnxBackend(stable_export).cfg
    sample = parity_sample(cfg)
    z = to_nchw(np.concatenate([sample.templates, sample.templates[:1]]))
    x = to_nchw(np.concatenate([sample.searches, sample.searches[:1]]))
    t, s = onnx_session(stable_export / TEMPLATE_FILE), onnx_session(stable_export / SEARCH_FILE)
    (feat,) = t.run(None, {"template": z})
    score, boxes, _ = s.run(None, {"search": x, "template_features": feat})
    assert score.shape[0] == boxes.shape[0] == 3
    for i in range(3):
        (f1,) = t.run(None, {"template": z[i:i + 1]})
        s1, b1, _ = s.run(None, {"search": x[i:i + 1], "template_features": f1})
        np.testing.assert_allclose(score[i], s1[0], atol=1e-5)
        np.testing.assert_allclose(boxes[i], b1[0], atol=1e-3)


def test_a_graph_that_differs_from_pytorch_is_rejected(tmp_path, monkeypatch):
    """The check compares the runtime's graph with eager PyTorch: a graph traced differently must fail."""
    original = export_onnx.TemplateGraph.forward

    def traced_differently(self, template):
        out = original(self, template)
        return out + 1e-3 if torch.jit.is_tracing() else out

    monkeypatch.setattr(export_onnx.TemplateGraph, "forward", traced_differently)
    cfg = tiny_config(backbone="resnet18")
    good = tmp_path / TEMPLATE_FILE
    good.write_bytes(b"an earlier good export")
    model = peaked_model(cfg)
    result = export_model(model, cfg, tmp_path)
    assert not result.passed
    # Features are compared relative to their largest magnitude (export.onnx.DIFF_UNITS).
    with torch.inference_mode():
        scale = float(model.template(torch.from_numpy(to_nchw(parity_sample(cfg).templates))).abs().max())
    assert result.pairs[0].diffs["template_features"] == pytest.approx(1e-3 / scale, rel=1e-2)
    assert (tmp_path / "rejected" / TEMPLATE_FILE).is_file() and (tmp_path / "rejected" / SEARCH_FILE).is_file()
    assert good.read_bytes() == b"an earlier good export"  # never replaced by a failing graph
    assert not (tmp_path / SEARCH_FILE).exists()
    assert json.loads((tmp_path / "rejected" / "export.json").read_text())["passed"] is False


def test_fp16_graphs_load_and_stay_close(tmp_path):
    cfg = tiny_config(backbone="dinov3_vits16")
    result = export_model(peaked_model(cfg), cfg, tmp_path, fp16=True)
    assert result.passed, result.to_dict()
    fp32, fp16 = result.pairs
    assert fp16.template_path == tmp_path / "fp16" / TEMPLATE_FILE
    assert 0 < fp16.diffs["boxes"] < 2e-2 and fp16.diffs["score"] > fp32.diffs["score"]  # fp16 is less precise
    backend = OnnxBackend(tmp_path / "fp16")
    assert backend.precision == "fp16"
    # The next export without --fp16 removes the now stale fp16 graphs.
    export_model(peaked_model(cfg, seed=1), cfg, tmp_path)
    assert not (tmp_path / "fp16").exists()


def test_graphs_over_the_protobuf_limit_keep_weights_beside_them(tmp_path, monkeypatch):
    monkeypatch.setattr(export_onnx, "PROTOBUF_LIMIT", 1)
    cfg = tiny_config(backbone="resnet18")
    result = export_model(peaked_model(cfg), cfg, tmp_path)
    assert result.passed, result.to_dict()
    assert (tmp_path / f"{TEMPLATE_FILE}.data").is_file() and (tmp_path / f"{SEARCH_FILE}.data").is_file()
    assert OnnxBackend(tmp_path).metadata["graph"] == "template"


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_export_prints_the_difference_and_writes_the_folder(stable_checkpoint, tmp_path):
    out = tmp_path / "exported"
    r = runner.invoke(app, ["export", str(stable_checkpoint), "--out", str(out), "--opset", "18"])
    assert r.exit_code == 0, r.output
    assert "max |onnxruntime - PyTorch|" in r.output and "ok" in r.output
    assert read_metadata(out / SEARCH_FILE)["opset"] == "18"


def test_cli_export_fails_with_exit_1_above_the_tolerance(stable_checkpoint, tmp_path):
    r = runner.invoke(app, ["export", str(stable_checkpoint), "--out", str(tmp_path), "--tolerance", "1e-12",
                            "--set", "export.opset=19"])
    assert r.exit_code == 1
    assert "FAILED" in r.output and "> tolerance 1e-12" in r.output
    assert not (tmp_path / TEMPLATE_FILE).exists()
    assert read_metadata(tmp_path / "rejected" / TEMPLATE_FILE)["opset"] == "19"  # --set reaches the export


@pytest.mark.parametrize(("make", "expected"), [
    (None, "the default tracker is missing"),
    (lambda p: p.write_bytes(b"\x00not a torch file"), "not a readable siamtool checkpoint"),
    (lambda p: torch.save({"some": "dict"}, p), "not a siamtool checkpoint"),
    ("newer", "is newer than this siamtool"),
    (lambda p: None, "checkpoint not found"),
])
def test_cli_export_bad_checkpoint_is_one_line(make, expected, stable_checkpoint, tmp_path):
    path = tmp_path / "model.pt"
    if make == "newer":
        ckpt = torch.load(stable_checkpoint, weights_only=True)
        ckpt["format_version"] = 99
        torch.save(ckpt, path)
    elif make is not None:
        make(path)
    args = ["export", "--out", str(tmp_path / "out")] + ([] if make is None else [str(path)])
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert expected in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "out" / TEMPLATE_FILE).exists()


@pytest.mark.parametrize(("args", "expected"), [(["--opset", "13"], "opset 17 or newer"),
                                                 (["--opset", "99"], "this torch exports opsets"),
                                                 (["--tolerance", "0"], "--tolerance must be > 0")])
def test_cli_export_bad_settings_are_one_line(args, expected, stable_checkpoint, tmp_path):
    r = runner.invoke(app, ["export", str(stable_checkpoint), "--out", str(tmp_path), *args])
    assert r.exit_code == 2 and expected in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
