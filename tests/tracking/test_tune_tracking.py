"""benchmarks/tune_tracking.py's `--init-jitter`: runs from moved initial boxes, scored as their mean."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import benchmark_module
from tests.tracking.fakes import OracleBackend, render, small_config


@pytest.fixture(scope="module")
def tune():
    return benchmark_module("tune_tracking")


def test_jittered_moves_the_centre_by_a_share_of_the_size_and_scales_about_it(tune):
    box = np.array([10.0, 20.0, 40.0, 80.0])
    np.testing.assert_allclose(tune.jittered(box, (0.02, -0.02, 1.0)), [10.8, 18.4, 40.0, 80.0])
    np.testing.assert_allclose(tune.jittered(box, (0.0, 0.0, 0.5)), [20.0, 40.0, 20.0, 40.0])


def test_the_score_is_the_mean_over_the_jittered_runs(tune):
    """A moving red square tracked by a perfect backend: each run starts from another box, so the runs
    differ, and the reported AUC is their mean, with frame 1 scored as the ground truth in each."""
    gt_xywh = [np.array([60.0 + 4 * k, 50.0 + 2 * k, 30.0, 30.0]) for k in range(12)]
    frames = [render(b) for b in gt_xywh]
    lasot_gt = np.array([[b[0] + 1, b[1] + 1, b[2], b[3]] for b in gt_xywh])  # 1-based, as load_sequence gives
    data = [("square", frames, lasot_gt, np.zeros(len(frames), bool))]
    cfg = small_config(calibrate_size=0.0, size_lr=0.0)  # the size stays the (jittered) initial size
    plain = tune.score(OracleBackend(), cfg, [], data)
    moved = tune.score(OracleBackend(), cfg, [], data, jitter=6)
    assert "run_auc" not in plain and len(moved["run_auc"]) == 7
    assert moved["run_auc"][0] == pytest.approx(plain["auc"], abs=0.01)
    assert moved["auc"] == pytest.approx(np.mean(moved["run_auc"]), abs=0.01)
    assert min(moved["run_auc"][5:]) < plain["auc"] - 0.5  # the scaled starts keep a wrong size: lower


def test_a_missing_root_or_sequence_is_one_line_not_a_traceback(tune, synthetic_lasot, tmp_path):
    """Every benchmark that names sequences (tune_tracking, downscale_lasot, head_size_slope, ...) finds them
    through `locate_sequences`: a root that is not there, or a name not under the roots, exits with one line."""
    with pytest.raises(SystemExit, match=r"^error: .*nowhere: dataset folder not found$"):
        tune.locate_sequences([synthetic_lasot, tmp_path / "nowhere"], ["cat-1"])
    with pytest.raises(SystemExit, match="'cat-9' not found"):
        tune.locate_sequences([synthetic_lasot], ["cat-9"])
    assert tune.locate_sequences([synthetic_lasot], ["cat-1"])["cat-1"].name == "cat-1"


def test_lowres_probe_cuts_the_trained_window_at_fewer_pixels_and_decodes_sizes_as_trained():
    """benchmarks/lowres_search_probe.py: the search window keeps the extent of the trained 256 px crop but is
    cut at 192 px (the tracker follows a target through it), and box sizes are rescaled by 256 / 192."""
    from siamtool.geometry import iou_xywh, search_window

    probe = benchmark_module("lowres_search_probe")
    cfg = small_config(online=False, calibrate_size=0.0)
    cfg.data.search_size = 192
    backend = OracleBackend(search_size=192)
    tracker = probe.lowres_tracker(256)(backend, cfg)
    box = np.array([100.0, 80.0, 40.0, 30.0])
    tracker.initialize(render(box), box)
    window, ref = tracker.next_window(), search_window(box, cfg.data.context, cfg.data.template_size, 256)
    assert (window.cx, window.cy, window.side, window.out_size) == (ref.cx, ref.cy, ref.side, 192)
    moved = box + np.array([6.0, -4.0, 0.0, 0.0])
    result = tracker.track(render(moved))
    assert backend.crops[-1].shape == (192, 192, 3) and iou_xywh(result.box[None], moved[None])[0] > 0.9
    backend.cfg = cfg
    sizes = probe.SizesAsTrained(backend, 256).search(backend.crops[-1], {})[1][..., 2:]
    np.testing.assert_allclose(sizes, backend.search(backend.crops[-1], {})[1][..., 2:] * 256 / 192, rtol=1e-6)
