"""Fixtures for the export and ONNX runtime tests (tests/export, tests/tracking): tiny checkpoints whose outputs vary enough to make tracking move."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_config


def peaked_model(cfg, seed: int = 0):
    """A tiny random model with a sharp heatmap and boxes that vary from cell to cell.

    An untrained model scores ~0.01 everywhere (the focal prior), so a tracker using it reports "lost"
    on every frame and never moves: two backends would agree trivially. Scaling the last layers of the
    heads spreads scores over [0, 1] and spreads the boxes, so the tracked box moves every frame and any
    disagreement between backends shows.
    """
    def spread(box) -> None:
        # resnet18 tiny: logits std ~1.4 (not saturated: ties at 1.0 would make the argmax arbitrary),
        # centre offsets std ~0.3 cells, sizes std ~0.1 in logit space.
        box.weight[:2].mul_(100.0)
        box.weight[2:].mul_(40.0)

    return _sharp_model(cfg, seed, spread)


def _sharp_model(cfg, seed: int, shape_boxes):
    """A seeded tiny model with a sharp heatmap (scaled score layer); `shape_boxes(last box layer)` sets the
    boxes' spread (under no_grad)."""
    from siamtool.models import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(cfg)
        with torch.no_grad():
            cls, box = model.cls_head[-1], model.box_head[-1]
            cls.weight.mul_(100.0)
            cls.bias.fill_(-1.0)
            shape_boxes(box)
    return model.eval()


STABLE = ("data.search_size=80",)
"""A 5x5 score map: its Hann window has one centre cell, whose centre is the crop centre."""
STABLE_TRACK = ("track.window_influence=0.9", "track.lost_threshold=0.0", "track.online=false")
"""Post-processing under which `stable_model` tracks smoothly: the window keeps the centre cell (the online
model, which would learn the random features, is off: these tests compare the offline graphs)."""


def stable_model(cfg, seed: int = 0):
    """A tiny random model whose tracking is stable, for free-running comparisons of two backends.

    A random network is chaotic under tracking: two runtimes differ by ~1e-5 px, that shifts a later
    search window across one of warpAffine's 1/32 px rounding steps, one crop pixel changes by one grey
    level and a random network turns that into a different cell and a box 100 px away. A trained
    tracker locks onto its target and damps such differences. This one is made to damp them too: with
    `STABLE_TRACK` the centre cell is chosen, its box is the crop centre plus a small content-dependent
    offset (std ~0.05 cells), and its size is the fixed point of the crop geometry (a fifth of an
    80 px crop for a square box) plus a small offset, so the box wanders a few pixels per frame and
    keeps its size, while score, offsets and sizes still come from the network on the real crops.
    """
    def centre(box) -> None:
        box.weight.mul_(4.0)
        box.bias.copy_(torch.tensor([0.0, 0.0, math.log(0.2 / 0.8), math.log(0.2 / 0.8)]))

    return _sharp_model(cfg, seed, centre)


def save_tiny_checkpoint(path: Path, backbone: str = "resnet18", seed: int = 0, stable: bool = True) -> Path:
    """Save a tiny `stable_model` (or `peaked_model`) with `save_checkpoint`: random weights, plumbing only."""
    from siamtool.engine.checkpoint import save_checkpoint

    cfg = tiny_config(*(STABLE if stable else ()), backbone=backbone)
    model = stable_model(cfg, seed) if stable else peaked_model(cfg, seed)
    return save_checkpoint(path, model, cfg)


@pytest.fixture(scope="session")
def stable_checkpoint(tmp_path_factory) -> Path:
    """A run folder `stable-run/` with `tiny.pt`: a tiny resnet18 `stable_model`."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("export") / "stable-run" / "tiny.pt")


@pytest.fixture(scope="session")
def stable_export(stable_checkpoint, tmp_path_factory) -> Path:
    """`stable_checkpoint` exported (fp32) to a folder `stable-onnx/`."""
    from siamtool.export.onnx import export_checkpoint

    out = tmp_path_factory.mktemp("export") / "stable-onnx"
    result = export_checkpoint(stable_checkpoint, out)
    assert result.passed, result.to_dict()
    return out


TUNED = ("track.window_influence=0.1", "track.lost_threshold=0.1", "track.lost_ratio=0.3", "track.scale=head")
"""Tracking settings unlike the library defaults, as the shipped checkpoint's are."""


def save_tuned(path: Path, seed: int = 0) -> Path:
    """A tiny random checkpoint whose config carries `TUNED` tracking settings (plumbing only)."""
    from siamtool.engine.checkpoint import save_checkpoint

    cfg = tiny_config(*STABLE, *TUNED, backbone="resnet18")
    return save_checkpoint(path, stable_model(cfg, seed), cfg)


@pytest.fixture(scope="session")
def tuned_checkpoint(tmp_path_factory) -> Path:
    """A run folder `tuned-run/` with `tuned.pt` (`save_tuned`)."""
    return save_tuned(tmp_path_factory.mktemp("tuned") / "tuned-run" / "tuned.pt")


def sequence_frames(n: int, fallback: Path, synthetic: str = "cat-1") -> tuple[list, object, str]:
    """The first `n` frames (BGR) and 0-based first box of real_lasot bag-1, else of the synthetic sequence
    `synthetic` of `fallback` (cat-2: a target whose tracked box changes size by > 2 px, as bag-1's does)."""
    import cv2

    from siamtool.data.lasot import load_sequence
    from siamtool.geometry import from_lasot
    from tests.conftest import SHARED

    real = SHARED / "real_lasot" / "bag" / "bag-1"
    seq = load_sequence(real if real.is_dir() else fallback / synthetic.split("-")[0] / synthetic)
    frames = [cv2.imread(str(seq.frame_path(i))) for i in range(n)]
    return frames, from_lasot(seq.gt[0]), seq.name
