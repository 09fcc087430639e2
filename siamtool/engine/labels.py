"""Training targets, computed on the device from each batch's final search box (never stored in shards).

Because labels are made at train time, the output resolution, the label shape and the jitter can
change without re-running prepare.

* Heatmap (CenterNet / OSTrack): a Gaussian on the feature grid, exactly 1 at the cell that holds the
  box centre, with a standard deviation from the box size (CenterNet's radius at which a box shifted
  by it keeps IoU >= `min_overlap`, sigma = (2r + 1) / 6). Negatives, and positives whose centre left
  the crop, get an all-zero heatmap.
* Box regression: every cell near the peak (Gaussian >= `reg_threshold`) must predict the same box,
  weighted by its Gaussian value, so a tracker that picks a neighbour of the true peak still gets a
  good box.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MIN_OVERLAP = 0.7
MIN_SIGMA = 0.25
"""Cells; keeps tiny boxes from getting a heatmap narrower than a quarter cell."""
REG_THRESHOLD = 0.1


@dataclass
class Targets:
    heatmap: torch.Tensor
    """(B,1,H,W) in [0,1]; exactly 1 at each positive's peak cell."""
    box: torch.Tensor
    """(B,4) cx,cy,w,h of the target in search-crop pixels (meaningless where `has_peak` is False)."""
    reg_weight: torch.Tensor
    """(B,1,H,W) weight of each cell's box in the regression losses (0 outside the peak region)."""
    has_peak: torch.Tensor
    """(B,) bool: a positive whose centre lies inside the search crop."""

    @property
    def num_pos(self) -> torch.Tensor:
        """Number of peaks (the heatmap loss normaliser), at least 1."""
        return self.has_peak.sum().clamp(min=1).to(self.heatmap.dtype)


def gaussian_radius(h: torch.Tensor, w: torch.Tensor, min_overlap: float = MIN_OVERLAP) -> torch.Tensor:
    """CenterNet's radius (in the units of h, w): the smallest of its three corner-shift cases."""
    a1, b1 = 1.0, h + w
    c1 = w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt((b1**2 - 4 * a1 * c1).clamp(min=0))) / 2
    a2, b2 = 4.0, 2 * (h + w)
    c2 = (1 - min_overlap) * w * h
    r2 = (b2 + torch.sqrt((b2**2 - 4 * a2 * c2).clamp(min=0))) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (h + w)
    c3 = (min_overlap - 1) * w * h
    r3 = (b3 + torch.sqrt((b3**2 - 4 * a3 * c3).clamp(min=0))) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def make_targets(
    search_box: torch.Tensor, positive: torch.Tensor, feat_size: int | tuple[int, int], stride: int,
    reg_threshold: float = REG_THRESHOLD,
) -> Targets:
    """Targets for a batch: `search_box` (B,4) x,y,w,h in final search-crop pixels, `positive` (B,) bool."""
    fh, fw = (feat_size, feat_size) if isinstance(feat_size, int) else feat_size
    box = search_box.float()
    cx = box[:, 0] + box[:, 2] / 2
    cy = box[:, 1] + box[:, 3] / 2
    # The peak cell is the one that contains the centre (cell j covers [j*stride, (j+1)*stride)).
    col = torch.floor(cx / stride)
    row = torch.floor(cy / stride)
    inside = (col >= 0) & (col < fw) & (row >= 0) & (row < fh)
    has_peak = positive.bool() & inside & (box[:, 2] > 0) & (box[:, 3] > 0)
    sigma = ((2 * gaussian_radius(box[:, 3] / stride, box[:, 2] / stride) + 1) / 6).clamp(min=MIN_SIGMA)
    ys = torch.arange(fh, device=box.device, dtype=box.dtype).view(1, fh, 1)
    xs = torch.arange(fw, device=box.device, dtype=box.dtype).view(1, 1, fw)
    d2 = (ys - row.view(-1, 1, 1)) ** 2 + (xs - col.view(-1, 1, 1)) ** 2
    heat = torch.exp(-d2 / (2 * sigma.view(-1, 1, 1) ** 2)) * has_peak.view(-1, 1, 1)
    weight = torch.where(heat >= reg_threshold, heat, torch.zeros_like(heat))
    return Targets(
        heatmap=heat[:, None],
        box=torch.stack([cx, cy, box[:, 2], box[:, 3]], dim=1),
        reg_weight=weight[:, None],
        has_peak=has_peak,
    )
