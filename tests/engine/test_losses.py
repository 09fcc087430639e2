"""Labels and losses: the heatmap loss keeps the Gaussian peak (the seed's focal BCE on a tent does not)."""

from __future__ import annotations

import pytest
import torch

from siamtool.config import TrainConfig
from siamtool.engine.labels import make_targets
from siamtool.engine.losses import gaussian_focal_loss, generalized_iou, tracking_loss

# ------------------------------------------------------------------------------------------ labels


def test_gaussian_heatmap_peaks_at_the_centre_cell_and_widens_with_the_box():
    boxes = torch.tensor([[100.0, 60.0, 40.0, 40.0],    # centre (120, 80): cell col 7, row 5
                          [40.0, 40.0, 160.0, 160.0],   # big box, centre (120, 120)
                          [0.0, 0.0, 30.0, 30.0],       # negative
                          [300.0, 10.0, 20.0, 20.0]])   # positive, centre outside the 256 crop
    t = make_targets(boxes, torch.tensor([True, True, False, True]), feat_size=16, stride=16)
    assert t.heatmap.shape == (4, 1, 16, 16)
    assert t.heatmap[0, 0, 5, 7] == 1.0 and t.heatmap[0].max() == 1.0
    assert t.heatmap[0, 0].argmax() == 5 * 16 + 7
    assert t.has_peak.tolist() == [True, True, False, False]
    assert t.heatmap[2:].sum() == 0 and t.reg_weight[2:].sum() == 0
    assert t.num_pos == 2
    # A bigger box gets a wider Gaussian: the next cell keeps more of the peak.
    assert t.heatmap[1, 0, 7, 8] > t.heatmap[0, 0, 5, 8] > 0
    assert t.box[0].tolist() == [120.0, 80.0, 40.0, 40.0]
    assert t.reg_weight[0, 0, 5, 7] == 1.0 and (t.reg_weight[0] > 0).sum() >= 1
    assert ((t.reg_weight[0] > 0) <= (t.heatmap[0] > 0)).all()


# ------------------------------------------------------------------------------- heatmap optimum


def _fit(loss_fn, target: torch.Tensor, steps: int = 200) -> torch.Tensor:
    """Optimise free per-cell logits against `target`; return the fitted probabilities.

    A short second-moment memory (beta2 = 0.9) lets Adam keep its step size as the gradients of a
    loss with a vanishing modulation factor shrink near the optimum.
    """
    logits = torch.full_like(target, -4.0, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.2, betas=(0.9, 0.9))
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(logits, target).backward()
        opt.step()
    return torch.sigmoid(logits.detach())


def _seed_focal_bce(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0):
    """The seed's loss: focal BCE on a soft target, every cell with target > 0 weighted as a positive."""
    p = torch.sigmoid(logits)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    pos = target > 0
    w = torch.where(pos, alpha * (1 - p) ** gamma, (1 - alpha) * p**gamma)
    return (w * bce).sum() / pos.sum().clamp(min=1)


def _tent(size: int = 16, cx: float = 7.5, cy: float = 7.5, half: float = 4.0) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    return ((1 - (xs - cx - 0.5).abs() / half).clamp(min=0) * (1 - (ys - cy - 0.5).abs() / half).clamp(min=0))[None]


def test_gaussian_focal_optimum_is_the_target_shape():
    t = make_targets(torch.tensor([[96.0, 80.0, 64.0, 96.0]]), torch.tensor([True]), 16, 16)
    target = t.heatmap
    fitted = _fit(lambda lg, y: gaussian_focal_loss(lg, y, 1.0), target)
    assert (fitted - target).abs().max() < 0.02
    # Still a peak: maximum at the target's peak, near 1, falling off with the Gaussian.
    assert fitted.flatten().argmax() == target.flatten().argmax()
    assert fitted.max() > 0.95
    peak = divmod(int(target.flatten().argmax()), 16)
    assert fitted[0, 0, peak[0], peak[1] + 2] < 0.5 * fitted.max()


def test_seed_focal_bce_on_a_tent_flattens_the_peak():
    """The bug the Gaussian-focal loss fixes: every in-box cell is driven to ~1, the peak is gone."""
    tent = _tent()[None]
    fitted = _fit(_seed_focal_bce, tent)
    inside = fitted[tent >= 0.25]
    assert inside.min() > 0.95
    assert inside.max() - inside.min() < 0.02  # a plateau: the centre is not distinguishable
    # ... while the Gaussian-focal loss on the same tent keeps its shape.
    ours = _fit(lambda lg, y: gaussian_focal_loss(lg, y, 1.0), tent)
    assert (ours - tent).abs().max() < 0.02


# ------------------------------------------------------------------------------------ box losses


def test_giou_values():
    a = torch.tensor([[10.0, 10.0, 4.0, 4.0]])
    giou, iou = generalized_iou(a, a)
    assert giou.item() == pytest.approx(1.0) and iou.item() == pytest.approx(1.0)
    far = torch.tensor([[30.0, 10.0, 4.0, 4.0]])
    giou, iou = generalized_iou(a, far)
    assert iou.item() == 0.0 and giou.item() < -0.5


def _raw_for_box(box_cxcywh: torch.Tensor, h: int, w: int, stride: int, size: int) -> torch.Tensor:
    """box_raw whose decoded box is `box_cxcywh` at every cell (inverse of decode)."""
    xs = (torch.arange(w) + 0.5) * stride
    ys = (torch.arange(h) + 0.5) * stride
    raw = torch.zeros(1, 4, h, w)
    raw[0, 0] = (box_cxcywh[0] - xs[None, :]) / stride
    raw[0, 1] = (box_cxcywh[1] - ys[:, None]) / stride
    raw[0, 2] = torch.logit(box_cxcywh[2] / size)
    raw[0, 3] = torch.logit(box_cxcywh[3] / size)
    return raw


def test_box_losses_vanish_on_the_right_box_and_ignore_negatives():
    cfg = TrainConfig()
    box_xywh = torch.tensor([[20.0, 30.0, 16.0, 24.0]])
    t = make_targets(box_xywh, torch.tensor([True]), 4, 16)
    heat = torch.logit(t.heatmap.clamp(1e-4, 1 - 1e-4))
    good = tracking_loss(heat, _raw_for_box(t.box[0], 4, 4, 16, 64), t, 16, 64, cfg)
    assert good.l1 < 1e-5 and good.giou < 1e-5
    bad = tracking_loss(heat, _raw_for_box(t.box[0] + torch.tensor([8.0, 0, 0, 0]), 4, 4, 16, 64), t, 16, 64, cfg)
    assert bad.l1 > 0.1 and bad.giou > 0.2 and bad.total > good.total
    neg = make_targets(box_xywh, torch.tensor([False]), 4, 16)
    out = tracking_loss(torch.zeros(1, 1, 4, 4, requires_grad=True), torch.zeros(1, 4, 4, 4), neg, 16, 64, cfg)
    assert out.l1 == 0 and out.giou == 0 and torch.isfinite(out.total) and out.total > 0
    out.total.backward()


def test_heatmap_loss_is_normalised_by_peaks():
    boxes = torch.tensor([[20.0, 30.0, 16.0, 24.0]])
    t1 = make_targets(boxes, torch.tensor([True]), 4, 16)
    t2 = make_targets(boxes.repeat(2, 1), torch.tensor([True, True]), 4, 16)
    logits = torch.randn(1, 1, 4, 4)
    one = gaussian_focal_loss(logits, t1.heatmap, t1.num_pos)
    two = gaussian_focal_loss(logits.repeat(2, 1, 1, 1), t2.heatmap, t2.num_pos)
    assert one.item() == pytest.approx(two.item(), rel=1e-5)
