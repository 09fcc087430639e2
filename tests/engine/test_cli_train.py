"""`siamtool train` as a user runs it: a config file, --shards, --out, --set; one-line errors."""

from __future__ import annotations

from typer.testing import CliRunner

from siamtool.cli import app
from siamtool.engine.trainer import read_log
from tests.conftest import tiny_config

runner = CliRunner()


def test_train_command_runs_resumes_and_reports(synthetic_shards, tmp_path):
    cfg_path = tmp_path / "tiny.yaml"
    tiny_config("train.epochs=1", "train.samples_per_epoch=32", "train.batch_size=8", "train.workers=0",
                "train.val_samples=16", "train.tensorboard=true").save(cfg_path)
    args = ["--device", "cpu", "train", str(cfg_path), "--shards", str(synthetic_shards), "--out",
            str(tmp_path / "run")]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "best" in r.output and "val IoU" in r.output
    run = tmp_path / "run"
    assert (run / "best.pt").is_file() and (run / "config.yaml").is_file()
    assert list((run / "tb").iterdir())  # TensorBoard event file
    kinds = [rec["kind"] for rec in read_log(run / "log.jsonl")]
    assert kinds[0] == "val" and "train" in kinds and kinds[-1] == "val"
    # Run again: resumes, finds nothing left to do, says so.
    r = runner.invoke(app, args)
    assert r.exit_code == 0 and "already trained" in r.output
    # --set overrides the file; the same run folder refuses a different model without --no-resume.
    r = runner.invoke(app, [*args, "--set", "model.dim=16"])
    assert r.exit_code == 2 and "--no-resume" in r.output


def test_train_command_bad_inputs_are_one_line(tmp_path):
    cfg_path = tmp_path / "tiny.yaml"
    tiny_config("train.workers=0").save(cfg_path)
    r = runner.invoke(app, ["--device", "cpu", "train", str(cfg_path), "--shards", str(tmp_path / "nope"),
                            "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "Traceback" not in r.output
    r = runner.invoke(app, ["train", str(cfg_path), "--set", "model.backbone=dinov3_vit16", "--out",
                            str(tmp_path / "run")])
    assert r.exit_code == 2 and "did you mean 'dinov3_vits16'" in r.output
    assert not (tmp_path / "run").exists()
    r = runner.invoke(app, ["train", str(tmp_path / "missing.yaml")])
    assert r.exit_code == 2 and "not found" in r.output
