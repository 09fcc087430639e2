"""The toolkit's promise, word for word, in one folder and in order:

    siamtool prepare --lasot /data/LaSOT
    siamtool train configs/base.yaml
    siamtool eval --split test
    siamtool track 0

on a synthetic LaSOT-layout root (a few sequences of LaSOT's training list, every one of its 280 test
sequences), with configs/cpu-small.yaml for base.yaml (DINOv3 weights need the hub) and a video with
--no-show for the camera. The only additions are the options that keep the run short (fewer pairs and
steps) and --init, which a headless track needs. Each command runs in its own process, as typed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from siamtool.data.lasot import official_split
from siamtool.data.synthetic import render_sequence, write_sequence, write_video
from tests.conftest import REPO, output_lines, run_cli

TRAIN_SEQUENCES = 3
TRAIN_FRAMES, TEST_FRAMES = 24, 3
SIZE = (128, 96)


def make_lasot_root(root: Path) -> Path:
    """LaSOT layout: ROOT/<class>/<class>-<n>/img/00000001.jpg..., GT and flags; frame 1 always visible."""
    rng = np.random.default_rng(0)
    names = [*official_split("train")[:TRAIN_SEQUENCES], *official_split("test")]
    for i, name in enumerate(names):
        while True:
            frames, boxes, fo, oov = render_sequence(rng, TRAIN_FRAMES if i < TRAIN_SEQUENCES else TEST_FRAMES, SIZE)
            if not (fo[0] or oov[0]):
                break
        write_sequence(root / name.rsplit("-", 1)[0] / name, frames, boxes, fo, oov, f"a synthetic {name}")
    return root


@pytest.mark.slow
def test_the_four_mission_lines_run_in_order_in_one_folder(shipped_checkpoint, empty_working_folder, tmp_path):
    here = empty_working_folder
    lasot = make_lasot_root(tmp_path / "LaSOT")
    (here / "configs").mkdir()
    shutil.copy(REPO / "configs" / "cpu-small.yaml", here / "configs" / "cpu-small.yaml")

    # 1. siamtool prepare --lasot /data/LaSOT
    r = run_cli("prepare", "--lasot", str(lasot), "--pairs-per-sequence", "16", cwd=here)
    assert r.returncode == 0, r.output
    index = json.loads((here / "shards" / "index.json").read_text())
    assert index["pairs"] == TRAIN_SEQUENCES * 16 and index["source_root"] == str(lasot.resolve())

    # 2. siamtool train configs/base.yaml (cpu-small: the recipe that trains on a CPU)
    r = run_cli("train", "configs/cpu-small.yaml", "--set", "train.epochs=1", "--set", "train.samples_per_epoch=32",
                "--set", "train.val_samples=16", cwd=here)
    assert r.returncode == 0, r.output
    best = Path("runs") / "cpu-small" / "best.pt"
    assert (here / best).is_file()

    # 3. siamtool eval --split test: the root prepare recorded, the checkpoint train wrote, and it says so.
    r = run_cli("eval", "--split", "test", cwd=here)
    assert r.returncode == 0, r.output
    assert output_lines(r.stdout)[0] == (
        f"eval: LaSOT root {lasot.resolve()} (recorded by `siamtool prepare` in shards/prepare.json); checkpoint "
        f"{best} (the newest run in ./runs; --checkpoint to choose)")
    report = json.loads((here / "results" / "report.json").read_text())
    assert list(report["trackers"]) == ["cpu-small-best"] and report["split"] == "test"
    assert report["trackers"]["cpu-small-best"]["sequences"] == 280
    assert len(list((here / "results" / "cpu-small-best").glob("*.txt"))) == 280

    # 4. siamtool track 0 (a video, headless: the shipped tracker, as with no --checkpoint)
    frames, boxes, _, _ = render_sequence(np.random.default_rng(1), 20, (192, 144))
    video = write_video(here / "clip.avi", frames)
    init = ",".join(f"{v:.0f}" for v in boxes[0])
    r = run_cli("track", str(video), "--no-show", "--init", init, "--save-boxes", "boxes.txt", cwd=here)
    assert r.returncode == 0, r.output
    assert "tracked 20 frames" in r.output
    assert len((here / "boxes.txt").read_text().splitlines()) == 20
