"""`siamtool prepare`: boxes that map back to the ground truth, crops that match the frames, resume after
a kill, determinism across worker counts, refusal of changed settings, corrupt frames, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from siamtool.cli import app
from siamtool.config import Config
from siamtool.data import prepare as prep
from siamtool.data.shards import (
    KIND_ABSENT,
    KIND_OTHER_CLASS,
    KIND_POSITIVE,
    KIND_SAME_CLASS,
    ShardReader,
    load_shard_index,
)
from siamtool.errors import ConfigError, DatasetError, SiamtoolError
from siamtool.geometry import CropWindow, crop, from_lasot, iou_xywh, search_window, template_window
from tests.conftest import REPO, Recorder, shared


def small_cfg(**data) -> Config:
    cfg = Config()
    cfg.data.pairs_per_sequence = 24
    cfg.data.pairs_per_shard = 16
    cfg.data.neg_prob = 0.4
    for k, v in data.items():
        setattr(cfg.data, k, v)
    return cfg


def run(root, out, cfg=None, **kw) -> prep.PrepareSummary:
    return prep.prepare_shards(root, out, cfg or small_cfg(), split="all", **kw)


def all_rows(out: Path) -> list[tuple]:
    """Every stored pair of an output folder, in index order, as comparable tuples."""
    rows = []
    for path, _ in load_shard_index(out).shards:
        with ShardReader(path) as r:
            for p in r.read_many(range(len(r))):
                rows.append((path.name, p.template_jpeg.tobytes(), p.search_jpeg.tobytes(), p.template_box.tobytes(),
                             p.search_box.tobytes(), p.kind, p.sequence, p.search_sequence, tuple(p.frames)))
    return rows


def read_gt(seq_dir: Path) -> np.ndarray:
    """LaSOT ground truth read independently of siamtool's index (1-based x,y,w,h)."""
    return np.loadtxt(seq_dir / "groundtruth.txt", delimiter=",", ndmin=2)


def flags(path: Path) -> np.ndarray:
    return np.array(path.read_text().strip().split(","), dtype=int).astype(bool)


def seq_dirs(root: Path) -> dict[str, Path]:
    return {p.parent.name: p.parent for p in root.glob("*/*/groundtruth.txt")}


def stored_search(box: np.ndarray, cfg: Config) -> CropWindow:
    """The stored search window as the contract defines it, built from geometry alone."""
    d = cfg.data
    w = search_window(box, d.context, d.template_size, d.search_size)
    return CropWindow(w.cx, w.cy, w.side * d.search_margin, round(d.search_size * d.search_margin))


def check_boxes_against_gt(out: Path, root: Path, cfg: Config) -> dict[int, int]:
    """Map every stored box back to the frame and compare it with the LaSOT file (<= 0.5 px)."""
    dirs = seq_dirs(root)
    gts = {name: read_gt(d) for name, d in dirs.items()}
    absent = {name: flags(d / "full_occlusion.txt") | flags(d / "out_of_view.txt") for name, d in dirs.items()}
    d = cfg.data
    counts: dict[int, int] = {}
    for path, _ in load_shard_index(out).shards:
        with ShardReader(path) as r:
            for p in r.read_many(range(len(r))):
                counts[p.kind] = counts.get(p.kind, 0) + 1
                t, s = (int(v) for v in p.frames)
                t_gt = from_lasot(gts[p.sequence][t])
                back = template_window(t_gt, d.context, d.template_size).box_to_frame(p.template_box)
                assert np.abs(back - t_gt).max() <= 0.5, (p.sequence, t, back, t_gt)
                if p.kind == KIND_ABSENT:
                    assert p.search_sequence == p.sequence and absent[p.sequence][s]
                    continue
                s_gt = from_lasot(gts[p.search_sequence][s])
                back = stored_search(s_gt, cfg).box_to_frame(p.search_box)
                assert np.abs(back - s_gt).max() <= 0.5, (p.search_sequence, s, back, s_gt)
                if p.kind == KIND_POSITIVE:
                    assert p.search_sequence == p.sequence and abs(s - t) <= d.max_gap
                else:
                    assert p.search_sequence != p.sequence
    return counts


@pytest.fixture(scope="module")
def reference(synthetic_lasot, tmp_path_factory) -> Path:
    """An uninterrupted 2-worker run on the synthetic data: 96 pairs in 6 shards."""
    out = tmp_path_factory.mktemp("ref") / "shards"
    summary = run(synthetic_lasot, out, workers=2)
    assert summary.pairs == 96 and summary.shards == 6 and summary.resumed == 0
    return out


def test_output_layout_and_summary(reference, synthetic_lasot):
    index = json.loads((reference / "index.json").read_text())
    assert index["format_version"] == 1 and index["pairs"] == 96
    assert [s["file"] for s in index["shards"]] == [f"shard-{i:05d}.h5" for i in range(6)]
    assert index["template_size"] == 128 and index["search_crop_size"] == 384
    assert index["source_root"] == str(synthetic_lasot.resolve())
    assert index["config"]["data"]["pairs_per_sequence"] == 24
    assert (reference / "config.yaml").is_file()
    assert sum(index["kinds"].values()) == 96 and index["skipped_frames"] == []
    with ShardReader(reference / "shard-00000.h5") as r:
        assert "pairs_per_shard: 16" in r.attrs["config"] and r.attrs["source_root"] == index["source_root"]
    assert not [p for p in reference.iterdir() if p.name.endswith(".tmp")]


def test_every_box_maps_back_to_the_ground_truth(reference, synthetic_lasot):
    counts = check_boxes_against_gt(reference, synthetic_lasot, small_cfg())
    # Two classes of two sequences with occlusion and out-of-view frames: every kind occurs.
    assert set(counts) == {KIND_POSITIVE, KIND_SAME_CLASS, KIND_OTHER_CLASS, KIND_ABSENT}


def test_crops_show_the_frame_content(reference, synthetic_lasot):
    """The stored pixels are the geometry's crop of the right frame: closer to it than to the same crop
    moved by one pixel or taken from the next frame (catches frame off-by-one, padding, channel order
    and decode errors, which box checks cannot see)."""
    cfg = small_cfg()
    dirs = seq_dirs(synthetic_lasot)
    gts = {n: read_gt(d) for n, d in dirs.items()}

    def error(jpeg: np.ndarray, seq: str, frame: int, search: bool, shift: float = 0.0, next_frame: int = 0) -> float:
        img = cv2.imread(str(dirs[seq] / "img" / f"{frame + next_frame + 1:08d}.jpg"))
        box = from_lasot(gts[seq][frame]) + [shift, 0, 0, 0]
        window = stored_search(box, cfg) if search else template_window(box, cfg.data.context, 128)
        return float(np.abs(cv2.imdecode(jpeg, cv2.IMREAD_COLOR).astype(float) - crop(img, window)).mean())

    checked = 0
    for path, _ in load_shard_index(reference).shards[:2]:
        with ShardReader(path) as r:
            pairs = r.read_many(range(len(r)))
        for p in pairs:
            crops = [(p.template_jpeg, p.sequence, int(p.frames[0]), False)]
            if p.kind != KIND_ABSENT:
                crops.append((p.search_jpeg, p.search_sequence, int(p.frames[1]), True))
            for jpeg, seq, frame, search in crops:
                if not 0 < frame < 39:
                    continue
                right = error(jpeg, seq, frame, search)
                assert right < 6, (p, search)
                assert right < min(error(jpeg, seq, frame, search, shift=1), error(jpeg, seq, frame, search, shift=-1),
                                   error(jpeg, seq, frame, search, next_frame=1)), (p, search)
                checked += 1
    assert checked > 30


def test_prepared_frame_crops_equal_whole_frame_crops():
    """The ROI + BGRA + replicate-pad shortcut gives geometry.crop's pixels for any window, including
    windows partly or entirely outside the frame (1 grey level of fixed-point rounding allowed)."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    img = cv2.GaussianBlur(img, (0, 0), 1.5)
    for _ in range(200):
        wins = [CropWindow(rng.uniform(-150, 270), rng.uniform(-150, 240), rng.uniform(3, 400),
                           int(rng.choice([16, 48]))) for _ in range(int(rng.integers(1, 4)))]
        roi, moved = prep.prepare_frame(img, wins)
        assert roi.shape[2] == 4
        for a, b in zip(wins, moved):
            assert np.abs(crop(img, a).astype(int) - crop(roi, b)[..., :3]).max() <= 1


def test_reduced_decode_is_used_and_matches_full_decode(synthetic_lasot):
    """Small crops (template 32 px) from 192x144 frames allow 1/2-1/4 decoding; the result must look like
    the full-resolution crop (JPEG DCT scaling is a proper low-pass, so differences stay small)."""
    cfg = small_cfg(template_size=32, search_size=64)
    specs = prep.sample_pairs(prep.index_lasot(synthetic_lasot, "all").sequences, cfg.data, 12).pairs[:24]
    reduced_t, full_t = prep.Timing(), prep.Timing()
    reduced, _ = prep.make_pairs(specs, prep.CropParams(cfg.data), reduced_t)
    full, _ = prep.make_pairs(specs, prep.CropParams(cfg.data, max_decode_factor=1), full_t)
    assert sum(n for k, n in reduced_t.decode_factors.items() if k > 1) > 0
    assert set(full_t.decode_factors) == {1}
    for a, b in zip(reduced, full):
        np.testing.assert_array_equal(a.search_box, b.search_box)
        x = cv2.imdecode(a.search_jpeg, cv2.IMREAD_COLOR).astype(float)
        y = cv2.imdecode(b.search_jpeg, cv2.IMREAD_COLOR).astype(float)
        assert np.abs(x - y).mean() < 12


def test_same_pairs_for_any_worker_count(reference, synthetic_lasot, tmp_path):
    run(synthetic_lasot, tmp_path / "w1", workers=1)
    assert all_rows(tmp_path / "w1") == all_rows(reference)


def test_resume_after_lost_damaged_shards_and_stray_temp_file(reference, synthetic_lasot, tmp_path):
    out = tmp_path / "shards"
    shutil.copytree(reference, out)
    (out / "index.json").unlink()  # a run that never finished has no index
    for i in (1, 4, 5):
        (out / f"shard-{i:05d}.h5").unlink()
    (out / ".shard-00004.h5.abc123.tmp").write_bytes(b"half a shard")
    (out / "shard-00002.h5").write_bytes(b"damaged on disk")  # complete once, unreadable now
    recorder = Recorder()
    summary = run(synthetic_lasot, out, workers=1, reporter=recorder)
    text = recorder.text
    assert "shard-00002.h5: unreadable or not from this run, writing it again" in text
    assert "resumed: 2/6 shards present (1 unfinished temp file(s) removed)" in text
    assert summary.resumed == 2 and summary.pairs_made == 64 and summary.pairs == 96
    assert all_rows(out) == all_rows(reference)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    # Everything present: nothing to do, same index.
    recorder = Recorder()
    again = run(synthetic_lasot, out, workers=2, reporter=recorder)
    assert "resumed: 6/6 shards present" in recorder.text and again.pairs_made == 0
    assert again.kinds == summary.kinds


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "siamtool", "prepare", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _as_background_job() -> None:
    """Start the child as `cmd &` in a non-interactive shell does: SIGINT ignored, inherited through exec."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _signal_masks(pid: int) -> str:
    """The child's blocked, ignored and caught signal masks (/proc), for the failure message."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return ", ".join(line.strip() for line in f if line.startswith(("SigBlk", "SigIgn", "SigCgt")))
    except OSError:
        return "no /proc"


def _kill_midway(out: Path, args: list[str], sig: int) -> tuple[int, str]:
    """Start prepare in a subprocess and send `sig` once, as soon as the first shard exists (mid-way: the
    50 shards take about half a second to write). The child starts with SIGINT ignored, as a background
    job of a script (or of a test run started in the background) does. The text ends with the child's
    signal masks at that moment."""
    proc = _cli(*args, preexec_fn=_as_background_job)
    masks = "not signalled"
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if any(out.glob("shard-*.h5")):
            masks = _signal_masks(proc.pid)
            proc.send_signal(sig)
            break
        time.sleep(0.005)
    text, _ = proc.communicate(timeout=60)
    return proc.returncode, f"{text}\n[child signal masks when signalled: {masks}]"


@pytest.mark.slow
@pytest.mark.parametrize("sig,workers", [(signal.SIGKILL, "1"), (signal.SIGINT, "2")], ids=["SIGKILL", "Ctrl-C"])
def test_killed_run_resumes_to_the_same_pairs(synthetic_lasot, tmp_path, sig, workers):
    """A prepare killed mid-way (SIGKILL: no cleanup at all; Ctrl-C: cleanup) and re-run ends with the
    same pairs as an uninterrupted run. Signalled once: a Ctrl-C that is not acted on is a bug.

    The Ctrl-C used to be ignored whenever the test suite ran as a background job: its subprocesses
    inherited SIGINT as ignored, so Python never installed its KeyboardInterrupt handler and the run
    finished (`siamtool.cli.act_on_ctrl_c` now installs it). The child is started that way on purpose."""
    sets = ["--set", "data.pairs_per_shard=8", "--set", "data.neg_prob=0.4"]
    args = ["--lasot", str(synthetic_lasot), "--split", "all", "--pairs-per-sequence", "100", *sets]
    out = tmp_path / "killed"
    rc, text = _kill_midway(out, [*args, "--out", str(out), "--workers", workers], sig)
    assert not (out / "index.json").exists(), "the run was supposed to be interrupted: " + text
    if sig == signal.SIGINT:
        assert rc == 130 and "interrupted" in text, text
        assert not [p for p in out.iterdir() if p.name.endswith(".tmp")], "Ctrl-C leaves only complete shards"
    else:
        assert rc == -signal.SIGKILL
    proc = _cli(*args, "--out", str(out), "--workers", "2")
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, text
    done = int(text.split("resumed: ")[1].split("/")[0])
    assert 0 < done < 50, text  # 400 pairs / 8 = 50 shards
    ref = tmp_path / "ref"
    run(synthetic_lasot, ref, small_cfg(pairs_per_sequence=100, pairs_per_shard=8), workers=1)
    assert all_rows(out) == all_rows(ref)


def test_changed_settings_are_refused_and_overwrite_starts_over(reference, synthetic_lasot, tmp_path):
    out = tmp_path / "shards"
    shutil.copytree(reference, out)
    with pytest.raises(ConfigError, match=r"data\.neg_prob: 0\.4 -> 0\.3.*--overwrite"):
        run(synthetic_lasot, out, small_cfg(neg_prob=0.3), workers=1)
    summary = run(synthetic_lasot, out, small_cfg(neg_prob=0.3), workers=1, overwrite=True)
    assert summary.resumed == 0 and summary.pairs == 96
    assert all_rows(out) != all_rows(reference)


def test_corrupt_and_missing_frames_are_skipped_and_listed(synthetic_lasot, tmp_path):
    root = tmp_path / "lasot"
    shutil.copytree(synthetic_lasot, root)
    img = root / "cat" / "cat-1" / "img"
    for i in range(1, 41, 2):
        (img / f"{i:08d}.jpg").write_bytes(b"")  # unreadable
    (img / "00000002.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    summary = run(root, tmp_path / "out", workers=1)
    bad = {Path(p).name for p in summary.skipped_frames}
    assert bad and bad <= {f"{i:08d}.jpg" for i in list(range(1, 41, 2)) + [2]}
    assert 0 < summary.pairs < 96  # the pairs that need a bad frame are dropped, the others kept
    assert sum(summary.kinds.values()) == summary.pairs
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert len(index["skipped_frames"]) == len(summary.skipped_frames)
    for path, _ in load_shard_index(tmp_path / "out").shards:
        with ShardReader(path) as r:
            for p in r.read_many(range(len(r))):
                used = {(p.sequence, int(p.frames[0])), (p.search_sequence, int(p.frames[1]))}
                assert not any(seq == "cat-1" and (f % 2 == 0 or f == 1) for seq, f in used)


def test_bad_sequence_is_skipped_with_file_and_line_unless_strict(synthetic_lasot, tmp_path):
    root = tmp_path / "lasot"
    shutil.copytree(synthetic_lasot, root)
    gt = root / "dog" / "dog-2" / "groundtruth.txt"
    lines = gt.read_text().splitlines()
    lines[6] = "12,oops,3,4"
    gt.write_text("\n".join(lines) + "\n")
    summary = run(root, tmp_path / "out", workers=1)
    assert summary.skipped_sequences == [f"{gt}:7: cannot parse '12,oops,3,4' as x,y,w,h numbers"]
    assert summary.pairs == 72
    with pytest.raises(DatasetError, match="groundtruth.txt:7"):
        run(root, tmp_path / "out2", workers=1, strict=True)


def test_disk_space_is_checked_before_starting(synthetic_lasot, tmp_path, monkeypatch):
    class Usage:
        free = 10_000

    monkeypatch.setattr(prep.shutil, "disk_usage", lambda _: Usage())
    with pytest.raises(SiamtoolError, match=r"about \d+\.\d MB needed for 96 pairs but only 10.0 kB free"):
        run(synthetic_lasot, tmp_path / "out", workers=1)
    assert not list((tmp_path / "out").glob("shard-*"))


def test_cli_end_to_end_and_show(synthetic_lasot, tmp_path):
    runner = CliRunner()
    out = tmp_path / "shards"
    args = ["prepare", "--lasot", str(synthetic_lasot), "--out", str(out), "--split", "all",
            "--pairs-per-sequence", "10", "--workers", "1", "--set", "data.pairs_per_shard=16"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "40 (40 written now" in res.output and "kB/pair" in res.output
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "resumed: 3/3 shards present" in res.output
    res = runner.invoke(app, [*args[:-2], "--set", "data.pairs_per_shard=8"])
    assert res.exit_code == 2 and "pairs_per_shard: 16 -> 8" in res.output
    res = runner.invoke(app, ["prepare", "--show", str(out)])
    assert res.exit_code == 0, res.output
    png = cv2.imread(str(out / "preview.png"))
    # 16 pairs requested but only the 40 stored exist: a 4 x 4 grid of 128+4+384 by 384+22 tiles.
    assert png.shape == (4 * (384 + 22 + 6) + 6, 4 * (128 + 4 + 384 + 6) + 6, 3)


@pytest.mark.parametrize("args,message", [
    (["prepare"], "--lasot DIR or --data KIND:ROOT[:SPLIT][@WEIGHT] is required"),
    (["prepare", "--lasot", "/nonexistent/lasot"], "/nonexistent/lasot: dataset folder not found"),
    (["prepare", "--show", "/nonexistent/shards"], "no shard index"),
    (["prepare", "--lasot", ".", "--workers", "0"], "--workers must be >= 1"),
    (["prepare", "--lasot", ".", "--pairs-per-sequence", "0"], "--pairs-per-sequence must be > 0"),
])
def test_cli_bad_input_is_one_line(args, message):
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


def test_boxes_match_real_lasot_ground_truth(tmp_path):
    """The done-when check on the real sequences (grayscale JPEGs, absent frames, 240p-480p frames)."""
    root = shared("real_lasot")
    cfg = small_cfg(pairs_per_sequence=16, pairs_per_shard=40)
    summary = run(root, tmp_path / "shards", cfg, workers=1)
    assert summary.pairs == 80 and summary.skipped_frames == []
    counts = check_boxes_against_gt(tmp_path / "shards", root, cfg)
    # One sequence per class: no same-class distractor exists, so none may be claimed.
    assert KIND_SAME_CLASS not in counts and counts[KIND_POSITIVE] > 0
    # The positive search crop is centred on the target: the box sits in the middle of the stored crop.
    with ShardReader(load_shard_index(tmp_path / "shards").shards[0][0]) as r:
        for p in r.read_many(range(len(r))):
            if p.kind == KIND_POSITIVE:
                centred = np.array([192 - p.search_box[2] / 2, 192 - p.search_box[3] / 2, *p.search_box[2:]])
                assert iou_xywh(p.search_box, centred) > 0.99


def _sequences_of(out: Path, split: str) -> set[str]:
    index = json.loads((out / "index.json").read_text())
    names = set()
    for shard in index["shards"]:
        if shard["split"] == split:
            with ShardReader(out / shard["file"]) as r:
                for p in r.read_many(range(len(r))):
                    names |= {p.sequence, p.search_sequence}
    return names


def test_validation_sequences_never_reach_a_training_shard(synthetic_lasot, tmp_path):
    from siamtool.data.stream import split_parts

    out = tmp_path / "split"
    summary = run(synthetic_lasot, out, small_cfg(val_sequences=["dog-2"]))
    assert summary.val_sequences == ["dog-2"]
    # Negatives included: a training pair's template and search both come from training sequences.
    assert _sequences_of(out, "val") == {"dog-2"}
    assert _sequences_of(out, "train") == {"cat-1", "cat-2", "dog-1"}
    index = load_shard_index(out)
    train, val = split_parts(index.shards, 0.5, index.splits)  # the recorded split wins over the fraction
    assert {index.splits[p.shard] for p in train} == {"train"} and {index.splits[p.shard] for p in val} == {"val"}
    assert json.loads((out / "index.json").read_text())["val_sequences"] == ["dog-2"]


def test_seeded_validation_fraction_and_unknown_names(synthetic_lasot, tmp_path):
    a = run(synthetic_lasot, tmp_path / "a", small_cfg(val_sequence_fraction=0.25)).val_sequences
    b = run(synthetic_lasot, tmp_path / "b", small_cfg(val_sequence_fraction=0.25)).val_sequences
    assert a == b and len(a) == 1
    with pytest.raises(ConfigError, match="dog-9"):
        run(synthetic_lasot, tmp_path / "c", small_cfg(val_sequences=["dog-9"]))
