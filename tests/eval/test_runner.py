"""`siamtool eval --checkpoint`: track a split into raw results, resume, refuse mixed runs, then score."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from siamtool.cli import app
from siamtool.data.lasot import index_lasot
from siamtool.eval.runner import TrackerSpec, read_frames_file, run_tracker
from siamtool.geometry import from_lasot
from tests.conftest import Recorder, tiny_config

runner = CliRunner()
SEQS = ("cat-1", "cat-2", "dog-1", "dog-2")



@pytest.fixture
def lasot(synthetic_lasot, tmp_path) -> Path:
    """A private copy (tests below corrupt frames)."""
    return Path(shutil.copytree(synthetic_lasot, tmp_path / "lasot"))


def run_eval(lasot: Path, ckpt: Path, out: Path, *extra: str):
    return runner.invoke(app, ["--device", "cpu", "eval", "--checkpoint", str(ckpt), "--lasot", str(lasot),
                               "--split", "all", "--out", str(out), *extra])


def test_eval_checkpoint_writes_results_report_and_speed(lasot, tiny_checkpoint, tmp_path):
    out = tmp_path / "results"
    # lost_ratio=0: the absolute threshold alone decides, so untrained (low) scores mean "lost" (with the
    # offline heads alone: the online model would lift the fused score of the tiny model's random features).
    r = run_eval(lasot, tiny_checkpoint, out, "--set", "track.lost_ratio=0", "--set", "track.online=false")
    assert r.exit_code == 0, r.output
    tracker_dir = out / "tiny-run-tiny"
    index = index_lasot(lasot, "all")
    for seq in index.sequences:
        boxes = np.loadtxt(tracker_dir / f"{seq.name}.txt", delimiter=",")
        assert boxes.shape == (40, 4)
        np.testing.assert_allclose(boxes[0], seq.gt[0], atol=1e-3)  # frame 1 = GT, 1-based
        rows = read_frames_file(tracker_dir / "frames" / f"{seq.name}.csv")
        assert rows.shape == (40, 4)
        np.testing.assert_array_equal(rows[:, 0], np.arange(1, 41))
        assert np.all(rows[1:, 1] > 0)  # per-frame tracking time (ms)
        assert np.all((rows[:, 2] >= 0) & (rows[:, 2] <= 1))
        # Untrained weights: every frame is reported lost and the box stays at the first one.
        assert rows[1:, 3].all()
        np.testing.assert_allclose(boxes[1:], np.tile(seq.gt[0], (39, 1)), atol=1e-3)
    report = json.loads((out / "report.json").read_text())
    assert set(report["trackers"]) == {"tiny-run-tiny"}
    assert report["trackers"]["tiny-run-tiny"]["sequences"] == 4
    timing = report["tracking"]["tiny-run-tiny"]
    assert timing["fps"] > 0 and timing["tracked_frames"] == 4 * 39
    assert "JPEG decoding excluded" in timing["timed"]
    assert (out / "success.png").is_file()
    assert (tracker_dir / "config.yaml").is_file()
    assert "FPS per process" in r.output and "JPEG decoding excluded" in r.output


def test_resume_skips_finished_sequences_and_redoes_partial_ones(lasot, tiny_checkpoint, tmp_path):
    out = tmp_path / "results"
    assert run_eval(lasot, tiny_checkpoint, out).exit_code == 0
    d = out / "tiny-run-tiny"
    before = {s: (d / f"{s}.txt").stat().st_mtime_ns for s in SEQS}
    (d / "cat-2.txt").unlink()  # never finished
    partial = (d / "dog-1.txt").read_text().splitlines()[:12]
    (d / "dog-1.txt").write_text("\n".join(partial) + "\n")  # a short file from an older tool
    r = run_eval(lasot, tiny_checkpoint, out)
    assert r.exit_code == 0, r.output
    assert "resuming: 2 of 4" in r.output
    after = {s: (d / f"{s}.txt").stat().st_mtime_ns for s in SEQS}
    assert after["cat-1"] == before["cat-1"] and after["dog-2"] == before["dog-2"]
    assert len((d / "dog-1.txt").read_text().splitlines()) == 40
    assert (d / "cat-2.txt").is_file()
    # The FPS still covers all four sequences (read back from the per-frame files).
    assert json.loads((out / "report.json").read_text())["tracking"]["tiny-run-tiny"]["tracked_frames"] == 4 * 39


def test_results_of_another_setup_are_never_mixed(lasot, tiny_checkpoint, tmp_path):
    out = tmp_path / "results"
    assert run_eval(lasot, tiny_checkpoint, out).exit_code == 0
    r = run_eval(lasot, tiny_checkpoint, out, "--set", "track.window_influence=0.1")
    assert r.exit_code == 2
    assert "different tracker setup (changed: track)" in r.output
    r = run_eval(lasot, tiny_checkpoint, out, "--set", "track.window_influence=0.1", "--name", "wi01")
    assert r.exit_code == 0, r.output
    assert (out / "wi01" / "cat-1.txt").is_file()


def test_unreadable_frames_are_counted_and_an_unreadable_first_frame_fails_only_its_sequence(
        lasot, tiny_checkpoint, tmp_path):
    index = index_lasot(lasot, "all")
    seqs = {s.name: s for s in index.sequences}
    seqs["cat-1"].frame_path(6).write_bytes(b"garbage")  # frame 7
    seqs["dog-2"].frame_path(0).write_bytes(b"")  # frame 1
    out = tmp_path / "results"
    r = run_eval(lasot, tiny_checkpoint, out)
    assert r.exit_code == 2 and "dog-2" in r.output  # scoring refuses a missing sequence...
    r = run_eval(lasot, tiny_checkpoint, out, "--skip-missing")  # ...unless told to skip it
    assert r.exit_code == 0, r.output
    assert "first frame unreadable" in r.output
    rows = read_frames_file(out / "tiny-run-tiny" / "frames" / "cat-1.csv")
    assert rows[6, 3] == 1 and rows[6, 1] == 0
    assert len((out / "tiny-run-tiny" / "cat-1.txt").read_text().splitlines()) == 40
    assert json.loads((out / "report.json").read_text())["trackers"]["tiny-run-tiny"]["sequences"] == 3


def test_checkpoint_scored_next_to_existing_results(lasot, tiny_checkpoint, tmp_path):
    """--results folders are scored in the same report as the tracker just run."""
    index = index_lasot(lasot, "all")
    oracle = tmp_path / "oracle"
    oracle.mkdir()
    for s in index.sequences:
        np.savetxt(oracle / f"{s.name}.txt", s.gt, delimiter=",", fmt="%.3f")
    out = tmp_path / "results"
    r = run_eval(lasot, tiny_checkpoint, out, "--results", str(oracle))
    assert r.exit_code == 0, r.output
    trackers = json.loads((out / "report.json").read_text())["trackers"]
    assert set(trackers) == {"tiny-run-tiny", "oracle"}
    assert trackers["oracle"]["success_auc"] > trackers["tiny-run-tiny"]["success_auc"]


def test_eval_without_a_tracker_or_lasot_is_one_line(tiny_checkpoint):
    r = runner.invoke(app, ["eval", "--checkpoint", str(tiny_checkpoint)])
    assert r.exit_code == 2 and "--lasot" in r.output


@pytest.mark.slow
def test_parallel_workers_write_the_same_results(lasot, tmp_path):
    from siamtool.engine.checkpoint import save_checkpoint
    from siamtool.models import build_model

    # A torchvision backbone: spawned workers start faster without importing transformers.
    cfg = tiny_config(backbone="resnet18")
    ckpt = save_checkpoint(tmp_path / "resnet" / "tiny.pt", build_model(cfg), cfg)
    index = index_lasot(lasot, "all")
    spec = TrackerSpec(ckpt, None, tiny_config())
    one = run_tracker(index, tmp_path / "r", spec, torch.device("cpu"), "cpu", workers=1, name="one")
    recorder = Recorder()
    two = run_tracker(index, tmp_path / "r", spec, torch.device("cpu"), "cpu", workers=2, name="two",
                      reporter=recorder)
    done = [(d, t) for task, d, t in recorder.progress_calls if task == "frames"]
    assert two.processes == 2 and one.processes == 1
    assert done[-1][0] == done[-1][1] == 160  # progress reached every frame
    for s in SEQS:
        a = np.loadtxt(tmp_path / "r" / "one" / f"{s}.txt", delimiter=",")
        b = np.loadtxt(tmp_path / "r" / "two" / f"{s}.txt", delimiter=",")
        np.testing.assert_allclose(a, b, atol=2e-3)
    assert from_lasot(a[0])[2] > 0


def test_the_fingerprint_holds_the_runtime_used_not_the_auto_setting(lasot, tiny_checkpoint, tmp_path):
    """`track.backend: auto` is onnxruntime on CPU and PyTorch on CUDA: a run resumed on the other device
    must not pass as the same setup."""
    from siamtool.config import Config
    from siamtool.eval.runner import _describe

    spec = TrackerSpec(tiny_checkpoint, None, Config())
    assert spec.cfg.track.backend == "auto"
    _, _, on_cpu = _describe(spec, "cpu")
    _, _, on_cuda = _describe(spec, "cuda")
    assert on_cpu["runtime"] == "onnxruntime" and on_cuda["runtime"] == "torch"
    assert on_cpu["track"] == on_cuda["track"]  # the settings alone cannot tell the two runs apart
    out = tmp_path / "results"
    assert run_eval(lasot, tiny_checkpoint, out, "--set", "track.online=false").exit_code == 0
    run = json.loads((out / "tiny-run-tiny" / "run.json").read_text())
    assert run["fingerprint"]["runtime"] == "onnxruntime"
