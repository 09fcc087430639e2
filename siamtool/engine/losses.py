"""Training losses: a Gaussian-focal heatmap loss plus masked L1 and GIoU on the decoded boxes.

Heatmap. The seed's focal BCE treats every cell inside the box's soft "tent" as a positive with target 1,
so its optimum is a plateau of 1s over the whole box and the peak that tells the tracker where the
centre is disappears (tests/engine/test_losses.py shows it). Here the heatmap loss is the focal
modulation of Generalized Focal Loss's quality focal loss applied to the Gaussian target ``y``::

    L = sum_cells |y - p|^gamma * BCE(p, y) / num_peaks

Both factors are >= 0 and the product is 0 exactly at ``p = y``, so the optimum *is* the Gaussian: the
peak stays a peak and its height stays calibrated. The ``|y - p|^gamma`` factor does what focal loss is
for: the thousands of easy background cells (y = 0, p ~ 0) contribute almost nothing, and normalising
by the number of peaks (CenterNet) keeps the scale independent of the map size. (CenterNet's own
penalty-reduced form pushes every non-peak cell to 0, i.e. towards a one-hot map; the form here keeps
the neighbours' scores, which the tracker's window penalty and lost-target threshold use.)

Boxes are decoded with the one decoder (`siamtool.models.decode`) and compared with the target in
crop-normalised cx,cy,w,h (L1) and as boxes (GIoU), weighted by the label's per-cell regression weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from siamtool.config import TrainConfig
from siamtool.engine.labels import Targets
from siamtool.models.decode import decode


def gaussian_focal_loss(logits: torch.Tensor, target: torch.Tensor, num_pos: torch.Tensor | float,
                        gamma: float = 2.0) -> torch.Tensor:
    """Sum over cells of |y - p|^gamma * BCE(p, y), divided by `num_pos` (see the module docstring)."""
    logits = logits.float()
    p = torch.sigmoid(logits)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return ((target - p).abs().pow(gamma) * bce).sum() / num_pos


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    return torch.cat([b[..., :2] - b[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2], dim=-1)


def _area(wh: torch.Tensor) -> torch.Tensor:
    """w * h of (..., 2) sizes. Not `prod(-1)`: its backward looks for zeros with a data-dependent branch,
    which on a GPU is a host synchronisation in every training step (three per step here)."""
    return wh[..., 0] * wh[..., 1]


def generalized_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> tuple[torch.Tensor, torch.Tensor]:
    """(GIoU, IoU) of matching cx,cy,w,h boxes (..., 4)."""
    a, b = cxcywh_to_xyxy(a), cxcywh_to_xyxy(b)
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = _area((rb - lt).clamp(min=0))
    area_a = _area((a[..., 2:] - a[..., :2]).clamp(min=0))
    area_b = _area((b[..., 2:] - b[..., :2]).clamp(min=0))
    union = area_a + area_b - inter
    iou = inter / (union + eps)
    hull = _area((torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])).clamp(min=0))
    return iou - (hull - union) / (hull + eps), iou


@dataclass
class LossOutput:
    total: torch.Tensor
    heat: torch.Tensor
    l1: torch.Tensor
    giou: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {"loss": float(self.total.detach()), "loss_heat": float(self.heat), "loss_l1": float(self.l1),
                "loss_giou": float(self.giou)}


def tracking_loss(heat_logits: torch.Tensor, box_raw: torch.Tensor, targets: Targets, stride: int,
                  search_size: int, cfg: TrainConfig) -> LossOutput:
    """focal_weight * heatmap + l1_weight * L1 + giou_weight * (1 - GIoU), box terms over the peak region."""
    heat = gaussian_focal_loss(heat_logits, targets.heatmap, targets.num_pos)
    _, boxes = decode(heat_logits.float(), box_raw.float(), stride, search_size)  # (B,H,W,4)
    w = targets.reg_weight[:, 0]  # (B,H,W)
    norm = w.sum().clamp(min=1e-6)
    gt = targets.box[:, None, None, :].expand_as(boxes)
    l1 = (w[..., None] * (boxes - gt).abs() / search_size).sum() / norm
    giou, _ = generalized_iou(boxes, gt)
    giou_loss = (w * (1 - giou)).sum() / norm
    total = cfg.focal_weight * heat + cfg.l1_weight * l1 + cfg.giou_weight * giou_loss
    return LossOutput(total=total, heat=heat.detach(), l1=l1.detach(), giou=giou_loss.detach())
