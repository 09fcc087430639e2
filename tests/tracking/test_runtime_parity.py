"""Issue #20 item 2: two runtimes whose networks differ by ~1e-5 must not track differently.

Traced on motorcycle-2 (docs/benchmarks.md "Runtime parity"): PyTorch and onnxruntime agreed to 1e-5 px
for the first frames, then picked different neighbouring cells of a near-tie at frame 28 (the target sits
between cells, and the box head's answers at two neighbouring cells differ by ~7 crop px) and never met
again. `track.select_margin` makes that choice a continuous function of the scores; these tests pin it
with a backend wrapper that perturbs every output by a relative 1e-5, as a second runtime does.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from siamtool.tracking.tracker import select_candidate
from tests.conftest import SHARED
from tests.tracking.fakes import peaks

MARGIN = 0.1
"""The `track.select_margin` measured in docs/benchmarks.md (the default stays 0, the argmax: see there)."""


class PerturbedBackend:
    """Another runtime, simulated: every output of `inner` times (1 +- `rel`), signs drawn per element."""

    returns_features = True

    def __init__(self, inner, rel: float = 1e-5, seed: int = 0) -> None:
        self.inner, self.rel, self.cfg = inner, rel, inner.cfg
        self.rng = np.random.default_rng(seed)

    def template(self, crop_rgb: np.ndarray):
        return self.inner.template(crop_rgb)

    def search(self, crop_rgb: np.ndarray, features) -> tuple[np.ndarray, ...]:
        outs = [np.asarray(o) for o in self.inner.search(crop_rgb, features)]
        return tuple(o * (1.0 + self.rel * self.rng.choice([-1.0, 1.0], o.shape)).astype(o.dtype) for o in outs)


def _near_tie(top: float, other: float) -> tuple[np.ndarray, np.ndarray]:
    """Two neighbouring cells (7, 7) and (8, 7) scoring `top` and `other`, whose boxes are 7 px apart."""
    return peaks(16, [(7, 7, top, (120.0, 124.0, 64.0, 64.0)), (8, 7, other, (120.0, 131.0, 64.0, 64.0))])


@pytest.mark.parametrize("margin", [0.0, MARGIN])
def test_a_near_tie_flipped_by_1e5_moves_the_box_by_1e5_not_by_a_cell(margin):
    flat = np.ones((16, 16), np.float32)
    answers = [select_candidate(*_near_tie(a, b), (64, 64), flat, 0.0, 0.0, 0.5, margin)
               for a, b in ((0.600006, 0.6), (0.6, 0.600006))]
    assert answers[0].index != answers[1].index  # the argmax did flip
    jump = abs(answers[0].box_cxcywh[1] - answers[1].box_cxcywh[1])
    if margin == 0:
        assert jump == pytest.approx(7.0, abs=1e-3)  # the defect: a whole cell's disagreement
    else:
        assert jump < 1e-3
        # ... and the answer lies between the two cells' boxes, nearer the better one.
        assert 124.0 < answers[0].box_cxcywh[1] < 131.0


def test_a_clear_winner_keeps_its_own_box():
    """The margin blends near-ties only: a neighbour `margin` or more below the best adds nothing."""
    margin = MARGIN
    flat = np.ones((16, 16), np.float32)
    c = select_candidate(*_near_tie(0.9, 0.9 - margin - 0.01), (64, 64), flat, 0.0, 0.0, 0.5, margin)
    assert c.index == (7, 7)
    assert c.box_cxcywh[1] == pytest.approx(124.0)
    assert c.score == pytest.approx(0.9)


@pytest.mark.slow
def test_shipped_tracker_and_a_1e5_perturbed_copy_stay_together(shipped_checkpoint, synthetic_lasot):
    """Free-running, the shipped checkpoint on 60 frames of motorcycle-2 (without ../shared, synthetic
    cat-2): the tracker on PyTorch and on PyTorch perturbed by 1e-5 stay within 1 px of each other
    (measured 0.33 px for the checkpoint shipped on 2026-12-07, 0.016 px for the one before). The same
    crops rounded to whole grey levels part by 4.7 px (over 1 px from frame 12 on), and with warpAffine's
    uint8 crops (1/32 px coordinate steps) the previous checkpoint parted by a cell (12 px), as PyTorch and
    onnxruntime did: the crop turned 1e-5 into whole grey levels and the network those into 0.1 px box
    changes (`geometry.resample`, docs/benchmarks.md "Runtime parity")."""
    from siamtool.data.lasot import load_sequence
    from siamtool.geometry import from_lasot
    from siamtool.tracking import TorchBackend, Tracker

    real = (SHARED / "real_lasot" / "motorcycle" / "motorcycle-2").is_dir()
    root = SHARED / "real_lasot" / "motorcycle" / "motorcycle-2" if real else synthetic_lasot / "cat" / "cat-2"
    seq = load_sequence(root)
    n = min(60, seq.n_frames)
    frames = [cv2.imread(str(seq.frame_path(i)), cv2.IMREAD_COLOR) for i in range(n)]
    backend, cfg = TorchBackend.from_checkpoint(shipped_checkpoint, "cpu")

    def parting(margin: float) -> np.ndarray:
        cfg.track.select_margin = margin
        trackers = [Tracker(backend, cfg), Tracker(PerturbedBackend(backend), cfg)]
        for t in trackers:
            t.initialize(frames[0], from_lasot(seq.gt[0]))
        return np.array([np.abs(trackers[0].track(f).box - trackers[1].track(f).box).max() for f in frames[1:]])

    assert parting(0.0).max() < 1.0


def test_two_separate_peaks_are_not_averaged_into_a_box_between_them():
    """Two look-alikes three cells apart, tied: the answer is one of them, never the empty middle."""
    margin = MARGIN
    flat = np.ones((16, 16), np.float32)
    maps = peaks(16, [(7, 4, 0.8, (72.0, 120.0, 64.0, 64.0)), (7, 8, 0.8, (136.0, 120.0, 64.0, 64.0))])
    c = select_candidate(*maps, (64, 64), flat, 0.0, 0.0, 0.5, margin)
    assert c.box_cxcywh[0] in (72.0, 136.0)
