"""Validation on held-out shards: the training loss plus what a tracker would see from the same outputs.

For each pair the best-scoring cell is decoded with the shared decoder (`siamtool.models.decode`), and
its box is compared with the target: mean IoU and mean centre error (search-crop pixels) over the
positives, plus the mean peak score on positives and negatives (a tracker's lost threshold sits
between the two).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist

from siamtool.config import Config
from siamtool.engine.labels import make_targets
from siamtool.engine.losses import generalized_iou, tracking_loss
from siamtool.models.decode import best_boxes, decode

_SUMS = ("loss", "loss_heat", "loss_l1", "loss_giou", "batches", "iou", "center_err", "pos", "pos_score",
         "neg_score", "neg")


@torch.no_grad()
def validate(model: torch.nn.Module, batches: Iterable[Any], cfg: Config, device: torch.device,
             autocast_dtype: torch.dtype | None = None) -> dict[str, float]:
    """Metrics over `batches` (summed across DDP ranks when a process group is up)."""
    core = getattr(model, "module", model)
    was_training = core.training
    core.eval()
    sums = dict.fromkeys(_SUMS, 0.0)
    try:
        for batch in batches:
            ctx = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
                   else contextlib.nullcontext())
            with ctx:
                heat, box = core(batch.template, batch.search)
            heat, box = heat.float(), box.float()
            targets = make_targets(batch.search_box, batch.positive, heat.shape[-2:], core.stride)
            loss = tracking_loss(heat, box, targets, core.stride, core.search_size, cfg.train)
            for k, v in loss.as_floats().items():
                sums[k] += v
            sums["batches"] += 1
            score, boxes = decode(heat, box, core.stride, core.search_size)
            peak, best = best_boxes(score, boxes)
            pos = targets.has_peak
            if pos.any():
                _, iou = generalized_iou(best[pos], targets.box[pos])
                sums["iou"] += float(iou.sum())
                sums["center_err"] += float((best[pos, :2] - targets.box[pos, :2]).norm(dim=1).sum())
                sums["pos_score"] += float(peak[pos].sum())
                sums["pos"] += float(pos.sum())
            neg = ~batch.positive.bool()
            if neg.any():
                sums["neg_score"] += float(peak[neg].sum())
                sums["neg"] += float(neg.sum())
    finally:
        core.train(was_training)
    if dist.is_available() and dist.is_initialized():
        t = torch.tensor([sums[k] for k in _SUMS], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        sums = dict(zip(_SUMS, t.tolist()))
    n, p, q = max(sums["batches"], 1.0), max(sums["pos"], 1.0), max(sums["neg"], 1.0)
    return {
        "val_loss": sums["loss"] / n, "val_loss_heat": sums["loss_heat"] / n, "val_loss_l1": sums["loss_l1"] / n,
        "val_loss_giou": sums["loss_giou"] / n, "val_iou": sums["iou"] / p, "val_center_err": sums["center_err"] / p,
        "val_pos_score": sums["pos_score"] / p, "val_neg_score": sums["neg_score"] / q,
        "val_pairs_pos": sums["pos"], "val_pairs_neg": sums["neg"],
    }
