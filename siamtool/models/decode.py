"""The ONE output decoder: validation during training, the Tracker and the ONNX export all call it.

Head outputs at stride `s` on an H x W grid over the search crop; cell (i, j) covers search pixels
``[s*j, s*j+s) x [s*i, s*i+s)`` and its centre is ``((j + 0.5) s, (i + 0.5) s)`` (0-based continuous
coordinates, as in `siamtool.geometry`). ``box_raw`` channels are:

* ``dx, dy``: the box centre's offset from the cell centre, in cells (unbounded, so a cell next to the
  peak can still point at the true centre);
* ``w, h``: logits of the box size as a fraction of the search crop side (a sigmoid keeps sizes
  positive and bounded by the crop, which keeps fp16 and early training stable).

The losses are computed on decoded boxes, so this parametrisation can change without touching labels.
Only elementwise ops and `arange`: it exports to ONNX as part of the search graph.
"""

from __future__ import annotations

import torch


def cell_centres(h: int, w: int, stride: int, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(cx (1,1,W), cy (1,H,1)) pixel centres of the grid cells in the search crop."""
    xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) * stride
    ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) * stride
    return xs.view(1, 1, w), ys.view(1, h, 1)


def decode(
    heat_logits: torch.Tensor, box_raw: torch.Tensor, stride: int, search_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Head outputs -> (score (B,H,W) in [0,1], boxes (B,H,W,4) cx,cy,w,h in search-crop pixels)."""
    _, _, h, w = heat_logits.shape
    score = torch.sigmoid(heat_logits[:, 0])
    xs, ys = cell_centres(h, w, stride, device=box_raw.device, dtype=box_raw.dtype)
    cx = xs + box_raw[:, 0] * stride
    cy = ys + box_raw[:, 1] * stride
    bw = torch.sigmoid(box_raw[:, 2]) * search_size
    bh = torch.sigmoid(box_raw[:, 3]) * search_size
    return score, torch.stack([cx, cy, bw, bh], dim=-1)


def best_boxes(score: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The box at each sample's highest-scoring cell: (score (B,), box (B,4) cx,cy,w,h)."""
    b = score.shape[0]
    flat = score.reshape(b, -1)
    idx = flat.argmax(dim=1)
    return flat.gather(1, idx[:, None])[:, 0], boxes.reshape(b, -1, 4)[torch.arange(b, device=idx.device), idx]
