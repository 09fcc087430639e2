"""train.feature_cache: the cached features are the backbone's features of the very crops the streaming
loader renders (jitter included), the cache resumes and notices a changed setting, and training on it
runs the same neck and heads."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from siamtool.config import config_from_dict
from siamtool.data.feature_cache import (
    BackboneRunner,
    build_feature_cache,
    cache_dir,
    cached_loader_factory,
    load_views,
    view_file,
    walk_views,
)
from siamtool.data.shards import load_shard_index
from siamtool.data.stream import split_parts
from siamtool.models import build_model
from tests.conftest import tiny_config


@pytest.fixture
def synthetic_shards(synthetic_shards, tmp_path):
    """A private copy: the cache is written next to the shards, and the session's shards must stay as
    other tests expect them (nothing but shards and the index in the folder)."""
    return Path(shutil.copytree(synthetic_shards, tmp_path / "shards"))


@pytest.fixture
def cfg():
    return tiny_config("train.feature_cache=true", "train.cache_views=2", "train.batch_size=8",
                       "train.samples_per_epoch=32", "train.val_samples=16", "train.val_fraction=0.25")


def test_views_are_jittered_like_training_and_differ_per_view(synthetic_shards, cfg):
    index = load_shard_index(synthetic_shards)
    train, _ = split_parts(index.shards, cfg.train.val_fraction, index.splits)
    a = next(walk_views(index, train[:1], cfg, view=0, jitter=True, batch_size=8))
    b = next(walk_views(index, train[:1], cfg, view=1, jitter=True, batch_size=8))
    again = next(walk_views(index, train[:1], cfg, view=0, jitter=True, batch_size=8))
    assert a[0].shape == (8, 3, 32, 32) and a[1].shape == (8, 3, 64, 64)
    assert torch.equal(a[1], again[1]) and np.array_equal(a[2], again[2])  # deterministic per view
    assert not np.allclose(a[2], b[2])  # another view: another shift/scale of the search window
    centres = a[2][:, :2] + a[2][:, 2:] / 2
    assert np.abs(centres - 32).max() > 2  # the target is not always in the middle: no centre bias


def test_cache_holds_the_backbone_features_resumes_and_rebuilds(synthetic_shards, cfg, tmp_path):
    model = build_model(cfg)
    first = build_feature_cache(synthetic_shards, cfg, model)
    assert first.built == 3  # 2 training views + 1 validation view
    assert build_feature_cache(synthetic_shards, cfg, model).built == 0  # resumed: everything current
    directory = cache_dir(synthetic_shards, cfg)
    data = load_views([view_file(directory, "train", 0)])
    index = load_shard_index(synthetic_shards)
    train, _ = split_parts(index.shards, cfg.train.val_fraction, index.splits)
    z, x, box, kind = next(walk_views(index, train, cfg, view=0, jitter=True))
    with torch.no_grad():
        ref = model.backbone(x[:4]).numpy()
    np.testing.assert_allclose(data["search"][:4].astype(np.float32), ref, rtol=0.01, atol=0.02)
    np.testing.assert_array_equal(data["search_box"][:4], box[:4])
    # Another jitter setting: the views are stale and built again.
    cfg.train.augment.shift = 1.0
    assert build_feature_cache(synthetic_shards, cfg, model).built == 3


def test_both_splits_stay_loaded_and_a_rebuilt_view_is_read_again(synthetic_shards, cfg):
    """Training and validation alternate every epoch: keeping only the last split read the shipped
    recipe's 7 GB of training views again each epoch. A view rewritten since (other backbone weights) must
    be read again, not served from memory."""
    model = build_model(cfg)
    build_feature_cache(synthetic_shards, cfg, model)
    directory = cache_dir(synthetic_shards, cfg)
    train_files = [view_file(directory, "train", v) for v in range(cfg.train.cache_views)]
    train = load_views(train_files)
    load_views([view_file(directory, "val", 0)])
    assert load_views(train_files) is train  # the epoch after validation: no second read
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.mul_(1.5)
    assert build_feature_cache(synthetic_shards, cfg, model).built == 3  # same folder, rewritten
    again = load_views(train_files)
    assert again is not train and not np.array_equal(again["search"], train["search"])


def test_backbone_runner_matches_pytorch(cfg):
    model = build_model(cfg)
    x = torch.rand(3, 3, 64, 64) * 255
    runner = BackboneRunner(model.backbone, torch.device("cpu"), threads=1)
    try:
        got = runner(x)
    finally:
        runner.close()
    with torch.no_grad():
        ref = model.backbone(x).numpy()
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), ref, rtol=0.01, atol=0.02)


def test_the_model_gives_the_same_outputs_on_features_as_on_images(cfg):
    model = build_model(cfg)
    z, x = torch.rand(2, 3, 32, 32) * 255, torch.rand(2, 3, 64, 64) * 255
    with torch.no_grad():
        heat, box = model(z, x)
        heat_f, box_f = model(model.backbone(z), model.backbone(x))
    torch.testing.assert_close(heat, heat_f)
    torch.testing.assert_close(box, box_f)


def test_cached_loader_epochs_and_exact_resume(synthetic_shards, cfg):
    """The trainer's contract (trainer.LoaderFactory): `start_batch` counts from the start of training,
    a call runs to the end of the epoch that batch is in, every batch is full."""
    build_feature_cache(synthetic_shards, cfg, build_model(cfg))
    make = cached_loader_factory(synthetic_shards, cfg, torch.device("cpu"))
    full = list(make("train", 0, 0, 1, 0))
    assert len(full) == 4 and all(len(b) == 8 for b in full)
    resumed = list(make("train", 0, 0, 1, 2))
    assert len(resumed) == 2 and torch.equal(resumed[0].search, full[2].search)  # start_batch skips exactly
    other = list(make("train", 1, 0, 1, 4))  # epoch 1 starts at batch 4
    assert len(other) == 4 and not torch.equal(other[0].search, full[0].search)  # the next pairs
    ranks = [list(make("train", 0, r, 2, 0)) for r in (0, 1)]
    assert sum(len(b) for r in ranks for b in r) == 32
    val = list(make("val", 0, 0, 1, 0))
    assert sum(len(b) for b in val) == 16


def test_train_with_the_feature_cache(synthetic_shards, cfg, tmp_path):
    from siamtool.engine.trainer import train

    cfg.train.epochs = 1
    result = train(cfg, synthetic_shards, tmp_path / "run", device="cpu")
    assert result.step == 4 and result.best_path is not None
    assert (cache_dir(synthetic_shards, cfg) / "val-view00.h5").is_file()


def test_seeds_sharing_a_cache_seed_share_the_cache(synthetic_shards, cfg):
    """train.cache_seed: a seed study reuses one cache (the jitter is the cache seed's, not the run's);
    without it every seed draws its own views and rebuilds."""
    model = build_model(cfg)
    cfg.train.cache_seed = 0
    assert build_feature_cache(synthetic_shards, cfg, model).built == 3
    cfg.train.seed = 1
    assert build_feature_cache(synthetic_shards, cfg, model).built == 0  # same cache seed: reused
    index = load_shard_index(synthetic_shards)
    train, _ = split_parts(index.shards, cfg.train.val_fraction, index.splits)
    shared = next(walk_views(index, train[:1], cfg, view=0, jitter=True, batch_size=8))
    cfg.train.cache_seed = None  # the run's own seed (1) draws other views
    own = next(walk_views(index, train[:1], cfg, view=0, jitter=True, batch_size=8))
    assert not np.allclose(shared[2], own[2])
    assert build_feature_cache(synthetic_shards, cfg, model).built == 3


def test_runs_with_other_jitter_on_the_same_shards_keep_their_own_views(synthetic_shards, cfg):
    """Two trainings that differ in `train.augment` (a jitter ablation, run side by side) each train on
    their own views: building one setting's cache leaves the other's current, not overwritten."""
    model = build_model(cfg)
    assert build_feature_cache(synthetic_shards, cfg, model).built == 3
    wide = config_from_dict(cfg.to_dict(), "test")
    wide.train.augment.scale = 0.5
    assert cache_dir(synthetic_shards, wide) != cache_dir(synthetic_shards, cfg)
    assert build_feature_cache(synthetic_shards, wide, model).built == 3
    assert build_feature_cache(synthetic_shards, cfg, model).built == 0  # still there, still current
    a = load_views([view_file(cache_dir(synthetic_shards, cfg), "train", 0)])
    b = load_views([view_file(cache_dir(synthetic_shards, wide), "train", 0)])
    assert not np.array_equal(a["search_box"], b["search_box"])


def test_two_runs_building_the_same_cache_at_once_build_it_once(synthetic_shards, cfg, monkeypatch):
    """Seeds of a study started together share `train.cache_seed`, so the same folder: the second waits for
    the first (a lock) and finds the views current, instead of deleting the first one's temp files as
    stale and building everything again."""
    import threading
    import time

    import siamtool.data.feature_cache as feature_cache

    writing, write = threading.Event(), feature_cache._write_view

    def slow_write(*args, **kwargs):
        writing.set()
        time.sleep(0.5)  # the first builder is mid-build while the second starts
        write(*args, **kwargs)

    monkeypatch.setattr(feature_cache, "_write_view", slow_write)
    model = build_model(cfg)
    built = []
    first = threading.Thread(target=lambda: built.append(build_feature_cache(synthetic_shards, cfg, model).built))
    first.start()
    assert writing.wait(60)
    built.append(build_feature_cache(synthetic_shards, cfg, model).built)
    first.join()
    assert sorted(built) == [0, 3]
    assert not list(cache_dir(synthetic_shards, cfg).glob(".*.tmp"))
