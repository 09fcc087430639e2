"""`eval` on every benchmark layout: the same footage and results give the same scores in each layout,
GOT-10k's AO/SR equal the official got10k toolkit's, and the server-scored test splits become zips."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from siamtool.cli import app
from siamtool.data.datasets import index_dataset
from siamtool.data.datasets.write import write_layout
from siamtool.eval.metrics import frame_errors
from siamtool.eval.report import evaluate_results
from tests.conftest import benchmark_module, shared

runner = CliRunner()
SCORES = ("success_auc", "precision_20", "norm_precision_20")
READ_SPLIT = {"lasot": "all", "got10k": "val", "trackingnet": "TRAIN_0", "otb": "all", "nfs": "all", "vot": "list",
              "uav": "UAV123"}


def _noisy_results(sequences, directory: Path, seed: int = 0, got10k: bool = False) -> Path:
    """A tracker's results: the GT moved by noise (and frames where it lost the target), flat or GOT-10k layout."""
    rng = np.random.default_rng(seed)
    for s in sequences:
        boxes = np.nan_to_num(s.gt, nan=10.0) + rng.normal(0, 6, s.gt.shape)
        boxes[:, 2:] = np.abs(boxes[:, 2:]) + 1
        boxes[rng.random(len(boxes)) < 0.1] = (5, 5, 20, 20)
        path = directory / s.name / f"{s.name}_001.txt" if got10k else directory / f"{s.name}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savetxt(path, boxes, delimiter=",", fmt="%.3f")
    return directory


def _scores(kind: str, root: Path, results: Path) -> dict:
    index = index_dataset(kind, root, READ_SPLIT[kind], require_images=False, strict=True)
    return evaluate_results({"trk": results}, index, plots=False)["trackers"]["trk"]


@pytest.fixture(params=["synthetic", "real"])
def footage(request, synthetic_lasot) -> Path:
    """The synthetic LaSOT folder, and the 5 real sequences of ../shared (skipped where absent)."""
    return synthetic_lasot if request.param == "synthetic" else shared("real_lasot")


def test_same_results_score_the_same_in_every_layout(footage, tmp_path):
    source = index_dataset("lasot", footage, "all", strict=True)
    flat = _noisy_results(source.sequences, tmp_path / "flat" / "trk")
    want = _scores("lasot", footage, flat)
    for kind in ("got10k", "trackingnet", "otb", "nfs", "vot"):
        root = write_layout(kind, source.sequences, tmp_path / kind, images=False)
        results = _noisy_results(source.sequences, tmp_path / f"{kind}-res" / "trk", got10k=kind == "got10k")
        got = _scores(kind, root, results)
        for key in SCORES:
            assert got[key] == pytest.approx(want[key], abs=1e-6), (kind, key)
        for name, per in want["per_sequence"].items():
            for key in SCORES:
                assert got["per_sequence"][name][key] == pytest.approx(per[key], abs=1e-6), (kind, name, key)
    # UAV123 scores its own way (pytracking): a frame without a valid GT box passes precision.
    uav = _scores("uav", write_layout("uav", source.sequences, tmp_path / "uav", images=False), flat)
    assert uav["success_auc"] == pytest.approx(want["success_auc"], abs=1e-6)
    if any(s.absent.any() for s in source.sequences):
        assert uav["precision_20"] > want["precision_20"]


def test_uav_rule_invalid_frames_pass_precision():
    gt = np.array([[1, 1, 10, 10], [np.nan] * 4, [1, 1, 10, 10]], float)
    pred = np.array([[1, 1, 10, 10], [50, 50, 10, 10], [1, 1, 10, 10]], float)
    absent = np.isnan(gt).any(axis=1)
    iou, err, norm = frame_errors(pred, gt, absent, dataset="uav")
    assert iou[1] == -1 and err[1] == -1 and norm[1] == -1
    iou, err, norm = frame_errors(pred, gt, absent, dataset="lasot")
    assert iou[1] == -1 and err[1] == np.inf and norm[1] == np.inf


def _random_got10k(root: Path, results: Path, rng: np.random.Generator) -> None:
    """A GOT-10k val folder and one tracker's results with everything the AO rules touch: boxes past the
    image border, cover 0 frames, zero-size and far-away predictions, a frame 1 that is not the GT."""
    names = [f"GOT-10k_Val_{i:06d}" for i in range(1, 7)]
    (root / "val").mkdir(parents=True)
    (root / "val" / "list.txt").write_text("\n".join(names) + "\n")
    for name in names:
        n, (w, h) = int(rng.integers(12, 40)), (int(rng.integers(200, 640)), int(rng.integers(150, 480)))
        gt = np.column_stack([rng.uniform(-20, w - 10, n), rng.uniform(-20, h - 10, n),
                              rng.uniform(5, 120, n), rng.uniform(5, 120, n)])
        cover = rng.integers(0, 9, n)
        cover[rng.random(n) < 0.2] = 0
        pred = gt + rng.normal(0, 15, gt.shape)
        pred[:, 2:] = np.abs(pred[:, 2:])
        pred[rng.random(n) < 0.1, 2:] = 0.0
        pred[rng.random(n) < 0.1, :2] += 500
        d = root / "val" / name
        d.mkdir()
        for i in range(n):
            (d / f"{i + 1:08d}.jpg").write_bytes(b"")
        np.savetxt(d / "groundtruth.txt", gt, delimiter=",", fmt="%.4f")
        for label, values in (("cover", cover), ("absence", cover == 0), ("cut_by_image", np.zeros(n))):
            np.savetxt(d / f"{label}.label", values, fmt="%d")
        (d / "meta_info.ini").write_text(f"[METAINFO]\nobject_class: car\nresolution: ({w}, {h})\n")
        (results / name).mkdir(parents=True)
        np.savetxt(results / name / f"{name}_001.txt", pred, delimiter=",", fmt="%.4f")
        np.savetxt(results / name / f"{name}_time.txt", rng.uniform(0.01, 0.05, n), fmt="%.6f")  # the toolkit needs it


def test_got10k_ao_sr_equal_the_official_toolkit(tmp_path, monkeypatch):
    toolkit = pytest.importorskip("got10k.experiments", reason="pip install got10k six (the dev extra)")
    import matplotlib

    matplotlib.use("Agg")
    root, results = tmp_path / "GOT-10k", tmp_path / "res" / "GOT-10k" / "trk"  # the toolkit's layout
    _random_got10k(root, results, np.random.default_rng(21))
    monkeypatch.chdir(tmp_path)
    official = toolkit.ExperimentGOT10k(str(root), subset="val", result_dir=str(tmp_path / "res"),
                                        report_dir=str(tmp_path / "rep")).report(["trk"])["trk"]
    ours = evaluate_results({"trk": results}, index_dataset("got10k", root, "val"), plots=False)["trackers"]["trk"]
    assert ours["ao"] == pytest.approx(official["overall"]["ao"] * 100, abs=1e-9)
    assert ours["sr50"] == pytest.approx(official["overall"]["sr"] * 100, abs=1e-9)
    assert ours["sr75"] == pytest.approx(official["overall"]["succ_curve"][75] * 100, abs=1e-9)
    for name, seq in official["seq_wise"].items():
        assert ours["per_sequence"][name]["ao"] == pytest.approx(seq["ao"] * 100, abs=1e-9)
    assert 5 < ours["ao"] < 95  # the random set exercises both ends


def test_checkpoint_gives_the_same_boxes_in_each_layout_and_zips_the_test_splits(synthetic_lasot, tiny_checkpoint,
                                                                                      tmp_path):
    source = index_dataset("lasot", synthetic_lasot, "all")
    got = write_layout("got10k", source.sequences, tmp_path / "GOT-10k", split="val")
    write_layout("got10k", source.sequences, got, split="test")
    tn = write_layout("trackingnet", source.sequences, tmp_path / "TrackingNet", split="TEST")
    write_layout("trackingnet", source.sequences, tn, split="TRAIN_0")
    otb = write_layout("otb", source.sequences, tmp_path / "OTB")
    common = ["--device", "cpu", "eval", "--checkpoint", str(tiny_checkpoint)]
    runs = {}
    for label, args in (("lasot", ["--lasot", str(synthetic_lasot), "--split", "all"]),
                        ("got10k", ["--benchmark", "got10k", "--root", str(got), "--split", "val"]),
                        ("trackingnet", ["--root", str(tn), "--split", "TRAIN_0"]),
                        ("otb", ["--benchmark", "otb", "--root", str(otb), "--split", "all"])):
        r = runner.invoke(app, [*common, *args, "--out", str(tmp_path / label)])
        assert r.exit_code == 0, r.output
        runs[label] = json.loads((tmp_path / label / "report.json").read_text())["trackers"]["tiny-run-tiny"]
        for s in source.sequences:
            runs[label, s.name] = np.loadtxt(tmp_path / label / "tiny-run-tiny" / f"{s.name}.txt", delimiter=",")
    for kind in ("got10k", "trackingnet", "otb"):
        for s in source.sequences:
            np.testing.assert_array_equal(runs[kind, s.name], runs["lasot", s.name])
        for key in SCORES:
            assert runs[kind][key] == pytest.approx(runs["lasot"][key], abs=1e-6)
    assert {"ao", "sr50", "sr75"} <= set(runs["got10k"])

    r = runner.invoke(app, [*common, "--benchmark", "got10k", "--root", str(got), "--split", "test",
                            "--out", str(tmp_path / "test")])
    assert r.exit_code == 0, r.output
    zip_path = tmp_path / "test" / "tiny-run-tiny-got10k-test.zip"
    assert str(zip_path.name) in r.output.replace("\n", "") and "server" in r.output
    with zipfile.ZipFile(zip_path) as z:
        assert sorted(z.namelist()) == sorted(f"{s.name}/{s.name}_{part}.txt" for s in source.sequences
                                              for part in ("001", "time"))
        boxes = np.loadtxt(z.open("cat-1/cat-1_001.txt"), delimiter=",")
        assert boxes.shape == (40, 4) and len(z.read("cat-1/cat-1_time.txt").splitlines()) == 40
    np.testing.assert_allclose(boxes, runs["lasot", "cat-1"], atol=1e-3)

    r = runner.invoke(app, [*common, "--root", str(tn), "--out", str(tmp_path / "tn")])  # detected, TEST
    assert r.exit_code == 0, r.output
    with zipfile.ZipFile(tmp_path / "tn" / "tiny-run-tiny-trackingnet-TEST.zip") as z:
        assert sorted(z.namelist()) == sorted(f"{s.name}.txt" for s in source.sequences)
    assert not (tmp_path / "tn" / "report.json").exists()
    # A TEST folder with every box (e.g. one's own annotations) is zipped and also scored (the run resumes).
    for s in source.sequences:
        np.savetxt(tn / "TEST" / "anno" / f"{s.name}.txt", s.gt, delimiter=",", fmt="%.17g")
    r = runner.invoke(app, [*common, "--root", str(tn), "--out", str(tmp_path / "tn")])
    assert r.exit_code == 0, r.output
    scored = json.loads((tmp_path / "tn" / "report.json").read_text())["trackers"]["tiny-run-tiny"]
    assert scored["success_auc"] == pytest.approx(runs["lasot"]["success_auc"], abs=1e-6)

    r = runner.invoke(app, ["eval", "--benchmark", "got10k", "--root", str(got), "--split", "test",
                            "--results", str(tmp_path / "lasot" / "tiny-run-tiny"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "evaluation server" in r.output and "Traceback" not in r.output


def test_benchmark_without_root_and_unknown_layout_are_one_line(tmp_path):
    r = runner.invoke(app, ["eval", "--benchmark", "got10k", "--results", str(tmp_path)])
    assert r.exit_code == 2 and "--benchmark got10k needs --root DIR" in r.output
    (tmp_path / "data").mkdir()
    r = runner.invoke(app, ["eval", "--root", str(tmp_path / "data"), "--results", str(tmp_path)])
    assert r.exit_code == 2 and "no known dataset layout" in r.output


def test_zero_boxes_on_nan_gt_frames_stay_as_pytracking_leaves_them():
    from siamtool.eval.results import clean_boxes

    gt = np.array([[1, 1, 9, 9], [1, 1, 9, 9], [np.nan] * 4, [1, 1, 9, 9]], float)
    boxes = np.array([[1, 1, 9, 9], [2, 2, 9, 9], [3, 3, 0, 0], [4, 4, 0, 0]], float)
    # Frame 3's GT is NaN: its zero box is kept, and frame 4's zero box takes it (pytracking's loop).
    np.testing.assert_array_equal(clean_boxes(boxes, "pytracking", gt)[3], [3, 3, 0, 0])
    np.testing.assert_array_equal(clean_boxes(boxes, "pytracking")[3], [2, 2, 9, 9])


@pytest.mark.slow
def test_atom_published_results_score_the_same_in_got10k_and_trackingnet_layouts(tmp_path):
    """The LaSOT test annotations written out as GOT-10k and TrackingNet folders: ATOM's published raw
    results (flat, and in GOT-10k's <seq>/<seq>_001.txt) give LaSOT's numbers to 1e-6."""
    source = index_dataset("lasot", shared("lasot_test_annos"), "test", require_images=False)
    atom = shared("raw_results", "ATOM")
    want = evaluate_results({"ATOM": atom}, source, plots=False)["trackers"]["ATOM"]
    assert want["success_auc"] == pytest.approx(51.4338, abs=1e-4)
    got10k_results = tmp_path / "got10k-results" / "ATOM"
    for s in source.sequences:
        (got10k_results / s.name).mkdir(parents=True)
        (got10k_results / s.name / f"{s.name}_001.txt").write_bytes((atom / f"{s.name}.txt").read_bytes())
    for kind, split, results in (("got10k", "val", got10k_results), ("trackingnet", "TRAIN_0", atom)):
        root = write_layout(kind, source.sequences, tmp_path / kind, split, images=False)
        index = index_dataset(kind, root, split, require_images=False, strict=True)
        got = evaluate_results({"ATOM": results}, index, plots=False)["trackers"]["ATOM"]
        for key in SCORES:
            assert got[key] == pytest.approx(want[key], abs=1e-6), (kind, key)


@pytest.mark.slow
def test_checkpoint_on_the_real_sequences_gives_the_same_boxes_in_got10k_and_trackingnet_layouts(tiny_checkpoint,
                                                                                                   tmp_path):
    real = shared("real_lasot")
    source = index_dataset("lasot", real, "all")
    got = write_layout("got10k", source.sequences, tmp_path / "GOT-10k", split="val")
    tn = write_layout("trackingnet", source.sequences, tmp_path / "TrackingNet", split="TRAIN_0")
    common = ["--device", "cpu", "eval", "--checkpoint", str(tiny_checkpoint), "--set", "eval.plots=false"]
    for label, args in (("lasot", ["--lasot", str(real), "--split", "all"]),
                        ("got10k", ["--root", str(got), "--split", "val"]),
                        ("trackingnet", ["--root", str(tn), "--split", "TRAIN_0"])):
        r = runner.invoke(app, [*common, *args, "--out", str(tmp_path / label)])
        assert r.exit_code == 0, r.output
    for s in source.sequences:
        want = (tmp_path / "lasot" / "tiny-run-tiny" / f"{s.name}.txt").read_text()
        for label in ("got10k", "trackingnet"):
            assert (tmp_path / label / "tiny-run-tiny" / f"{s.name}.txt").read_text() == want, (label, s.name)


def test_peers_average_overlap_equals_got10k_ao_of_the_same_results(synthetic_lasot, tmp_path):
    """benchmarks/peers.py's AO column (issue 20's second measure, on LaSOT-layout footage) is GOT-10k's AO:
    the same noisy results scored through the GOT-10k layout give the same number, absent frames left out."""
    peers = benchmark_module("peers")
    source = index_dataset("lasot", synthetic_lasot, "all", strict=True)
    assert any(s.absent.any() for s in source.sequences)  # the rule that leaves frames out is exercised
    flat = _noisy_results(source.sequences, tmp_path / "flat" / "trk")
    ao = peers.average_overlap({"trk": flat}, list(source.sequences))["trk"]
    root = write_layout("got10k", source.sequences, tmp_path / "got10k", images=False)
    got = _noisy_results(source.sequences, tmp_path / "got10k-res" / "trk", got10k=True)
    assert ao == pytest.approx(_scores("got10k", root, got)["ao"], abs=1e-6)
    assert 10 < ao < 90


def test_peers_tables_name_the_frame_and_target_sizes_the_fps_ratios_depend_on(synthetic_lasot, tmp_path):
    """peers.md says how large the frames and the targets were (CSRT slows down on larger targets, siamtool
    hardly), from the frames and first boxes themselves: 192 px frames here."""
    peers = benchmark_module("peers")
    seqs = list(index_dataset("lasot", synthetic_lasot, "all", strict=True).sequences)
    (tmp_path / "trk").mkdir()
    for s in seqs:  # the ground truth as a tracker's results: only the table's layout is under test
        np.savetxt(tmp_path / "trk" / f"{s.name}.txt", np.nan_to_num(s.gt, nan=0.0), delimiter=",", fmt="%.3f")
    dirs = {"trk": tmp_path / "trk"}
    rep = evaluate_results(dirs, index_dataset("lasot", synthetic_lasot, "all", strict=True), out_dir=tmp_path / "all")
    speed = {"trk": {"fps": 50.0}}
    table = peers.markdown(["trk"], rep, None, speed, seqs, {"trk": "x"}, {"all": peers.average_overlap(dirs, seqs)})
    assert peers.frame_sizes(seqs) == {s.name: (192, 144) for s in seqs}
    targets = sorted(float(np.sqrt(s.gt[0, 2] * s.gt[0, 3])) for s in seqs)
    assert "Frames: long side 192 px (median; 192-192)" in table
    assert f"sqrt(w h) {targets[2]:.0f} px (median; {targets[0]:.0f}-{targets[-1]:.0f})" in table


def test_box_error_puts_the_overlap_lost_on_the_size_or_on_the_centre(synthetic_lasot, tmp_path):
    """benchmarks/box_error.py: a tracker with exact centres and 1.5x too-wide boxes loses overlap only
    at the ground truth's size; one with exact sizes and shifted centres only at its centre."""
    box_error = benchmark_module("box_error")
    source = index_dataset("lasot", synthetic_lasot, "all", strict=True)
    for name, change in (("wide", lambda g: np.hstack([g[:, :1] - g[:, 2:3] / 4, g[:, 1:2], g[:, 2:3] * 1.5, g[:, 3:]])),
                         ("shifted", lambda g: g + np.array([0.2, 0.1, 0, 0]) * g[:, [2, 3, 2, 3]])):
        out = tmp_path / "peers" / "raw" / name
        out.mkdir(parents=True)
        for s in source.sequences:
            np.savetxt(out / f"{s.name}.txt", np.where(s.gt[:, 2:3] > 0, change(s.gt), s.gt), delimiter=",", fmt="%.4f")
    rows = {r[0]: r[1:] for r in box_error.tracker_rows(tmp_path / "peers", list(source.sequences))}
    frames, full, size_only, centre_only = rows["wide"]
    assert frames > 0 and (full, size_only, centre_only) == pytest.approx((1 / 1.5, 1 / 1.5, 1.0), abs=1e-3)
    frames, full, size_only, centre_only = rows["shifted"]
    assert frames > 0 and size_only == pytest.approx(1.0, abs=1e-3) and full == pytest.approx(centre_only)
    assert 0.5 < full < 0.8


def test_head_size_slope_is_one_for_a_head_that_reads_sizes_and_zero_for_one_that_echoes_the_window():
    """benchmarks/head_size_slope.py: the oracle head (the red target's exact box) gives slope 1 and no
    bias; a head that always answers the window's usual target size gives slope 0."""
    from siamtool.config import Config
    from tests.tracking.fakes import OracleBackend, render

    class EchoBackend(OracleBackend):
        def search(self, crop_rgb, features):
            score, boxes = super().search(crop_rgb, features)
            boxes = boxes.copy()
            boxes[..., 2:] = 64.0  # the target size the window is cut for (template 128 px, context 0.5)
            return score, boxes

    slope_of = benchmark_module("head_size_slope")
    gt = np.array([[60 + 2 * i, 50 + i, 40, 30] for i in range(10)], dtype=np.float64) + [1, 1, 0, 0]  # LaSOT 1-based
    frames = [render(g - [1, 1, 0, 0]) for g in gt]
    absent = np.zeros(len(gt), bool)
    for backend, want in ((OracleBackend(), (1.0, 0.0)), (EchoBackend(), (0.0, None))):
        x, y = slope_of.size_errors(backend, Config(), frames, gt, absent, stride=2)
        slope, bias = np.polyfit(x, y, 1)
        assert slope == pytest.approx(want[0], abs=0.05)
        if want[1] is not None:
            assert bias == pytest.approx(want[1], abs=0.03)


def test_motion_stats_counts_steps_in_target_sizes_at_the_stride_played():
    """benchmarks/motion_stats.py: a 10 x 40 box (size 20) moving 2 px a frame steps 0.1 sizes, 0.3 at
    stride 3; a pair with an absent frame or a 0-size box is not counted; a size change is |log|."""
    motion_stats = benchmark_module("motion_stats")
    n = 31
    gt = np.column_stack([np.arange(n) * 2.0, np.zeros(n), np.full(n, 10.0), np.full(n, 40.0)])
    absent = np.zeros(n, dtype=bool)
    absent[10] = True
    gt[20, 2:] = 0
    motion, change = motion_stats.frame_steps(gt, absent)
    assert len(motion) == n - 1 - 4  # pairs touching frames 10 and 20 are gone
    assert motion == pytest.approx(0.1) and change == pytest.approx(0.0)
    motion, _ = motion_stats.frame_steps(gt, absent, stride=3)  # frames 0, 3, ..., 30: 10 and 20 not among them
    assert len(motion) == 10 and motion == pytest.approx(0.3)
    gt[:, 2:] *= np.exp(np.arange(n) * 0.05)[:, None]  # sqrt(w h) grows by e^0.05 a frame
    _, change = motion_stats.frame_steps(gt, np.zeros(n, dtype=bool))  # frame 20 still has size 0
    assert len(change) == n - 3 and change == pytest.approx(0.05)


def test_rescaled_copy_reaches_the_long_side_asked_for_and_scales_the_boxes(synthetic_lasot, tmp_path):
    """benchmarks/downscale_lasot.py --long-side: frames enlarged to that long side, boxes scaled about
    the 1-based origin, absent frames' 0,0,0,0 kept."""
    import cv2

    from siamtool.data.lasot import find_sequences, load_sequence

    rescale = benchmark_module("downscale_lasot")
    name, path = next(iter(find_sequences(synthetic_lasot).items()))
    assert rescale.main(["--lasot", str(synthetic_lasot), "--sequences", name, "--long-side", "384",
                         "--out", str(tmp_path)]) == 0
    src, dst = load_sequence(path), load_sequence(tmp_path / path.parent.name / name)
    height, width = cv2.imread(str(dst.frame_path(0))).shape[:2]
    factor = max(cv2.imread(str(src.frame_path(0))).shape[:2]) / 384
    assert max(height, width) == 384 and factor < 1
    visible = src.gt[:, 2] > 0
    assert np.allclose(dst.gt[visible, :2], (src.gt[visible, :2] - 1) / factor + 1, atol=2e-3)
    assert np.allclose(dst.gt[visible, 2:], src.gt[visible, 2:] / factor, atol=2e-3)
    assert np.array_equal(dst.gt[~visible], src.gt[~visible])


def test_stride_copy_keeps_every_kth_frame_unchanged_with_its_box_and_flags(synthetic_lasot, tmp_path):
    """benchmarks/downscale_lasot.py --factor 1 --stride 3: frames 1, 4, 7, ... renumbered from 1, their JPEG
    bytes, ground-truth lines and occlusion flags as in the source."""
    from siamtool.data.lasot import find_sequences, load_sequence

    rescale = benchmark_module("downscale_lasot")
    found = find_sequences(synthetic_lasot)
    name = next(n for n, p in found.items() if load_sequence(p).full_occlusion.any())
    assert rescale.main(["--lasot", str(synthetic_lasot), "--sequences", name, "--factor", "1", "--stride", "3",
                         "--out", str(tmp_path)]) == 0
    src, dst = load_sequence(found[name]), load_sequence(tmp_path / found[name].parent.name / name)
    keep = np.arange(0, src.n_frames, 3)
    assert dst.n_frames == len(keep) and dst.frame_path(1).name == "00000002.jpg"
    assert all(dst.frame_path(i).read_bytes() == src.frame_path(k).read_bytes() for i, k in enumerate(keep))
    assert np.allclose(dst.gt, src.gt[keep], atol=1e-3)
    assert np.array_equal(dst.full_occlusion, src.full_occlusion[keep]) and dst.full_occlusion.any()
    assert np.array_equal(dst.out_of_view, src.out_of_view[keep])


def test_canvas_copy_grows_the_frame_and_keeps_the_target(synthetic_lasot, tmp_path):
    """benchmarks/downscale_lasot.py --canvas: the frame sits at the top-left of a larger grey canvas, its
    pixels and the boxes unchanged, so only the frame's size differs; a canvas smaller than the frame is one line."""
    import cv2

    from siamtool.data.lasot import find_sequences, load_sequence

    rescale = benchmark_module("downscale_lasot")
    name, path = next(iter(find_sequences(synthetic_lasot).items()))
    assert rescale.main(["--lasot", str(synthetic_lasot), "--sequences", name, "--factor", "1", "--canvas", "400x300",
                         "--out", str(tmp_path)]) == 0
    src, dst = load_sequence(path), load_sequence(tmp_path / path.parent.name / name)
    before, after = cv2.imread(str(src.frame_path(0))), cv2.imread(str(dst.frame_path(0)))
    assert after.shape == (300, 400, 3)
    reencoded = cv2.imdecode(cv2.imencode(".jpg", before, [cv2.IMWRITE_JPEG_QUALITY, 95])[1], cv2.IMREAD_COLOR)
    assert np.abs(after[:144, :192].astype(int) - reencoded).mean() < 0.5  # the frame, re-encoded as JPEG
    assert np.abs(after[200:, 250:].astype(int) - 128).max() <= 2
    assert np.allclose(dst.gt, src.gt, atol=1e-3)
    with pytest.raises(SystemExit, match="smaller than"):
        rescale.main(["--lasot", str(synthetic_lasot), "--sequences", name, "--factor", "1", "--canvas", "100x100",
                      "--out", str(tmp_path / "small")])
