"""The shard stream: splits, worker/rank dealing, epoch length, determinism, resume, the Batch contract."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch

from siamtool.data.shards import ShardReader, load_shard_index
from siamtool.data.stream import Batch, Part, build_loader, deal_parts, split_parts
from siamtool.errors import ConfigError, DatasetError
from tests.conftest import tiny_config

# synthetic_shards: 8 shards x 16 pairs at template 32 / search 64 (stored search crop 96).


def cfg_(*overrides: str):
    return tiny_config("train.batch_size=8", "train.shuffle_buffer=32", "train.val_fraction=0.25",
                       "train.samples_per_epoch=50", "train.val_samples=20", *overrides)


def collect(loader) -> list[Batch]:
    return list(loader)


def assert_same(a: list[Batch], b: list[Batch]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for name in ("template", "search", "search_box", "positive", "kind"):
            assert torch.equal(getattr(x, name), getattr(y, name)), name


def single_shard_dir(src: Path, dst: Path, n: int = 1) -> Path:
    """A copy of the first `n` shards of `src` with their own index.json."""
    dst.mkdir()
    index = json.loads((src / "index.json").read_text())
    index["shards"] = index["shards"][:n]
    for s in index["shards"]:
        shutil.copy(src / s["file"], dst / s["file"])
    (dst / "index.json").write_text(json.dumps(index))
    return dst


# ------------------------------------------------------------------------------------ split and deal


def test_split_is_by_name_and_keeps_a_validation_shard():
    shards = [(Path(f"/s/shard-{i:05d}.h5"), 10) for i in (3, 0, 2, 1)]
    train, val = split_parts(shards, 0.05)
    assert [shards[p.shard][0].name for p in val] == ["shard-00003.h5"]  # the last by name, at least one
    assert sorted(shards[p.shard][0].name for p in train) == [f"shard-{i:05d}.h5" for i in range(3)]
    train, val = split_parts(shards, 0.5)
    assert len(val) == 2 and len(train) == 2
    train, val = split_parts(shards, 0.99)
    assert len(train) == 1  # never all
    train, val = split_parts(shards, 0.0)
    assert val == [] and len(train) == 4


def test_single_shard_holds_out_its_tail():
    train, val = split_parts([(Path("/s/a.h5"), 100)], 0.05)
    assert list(train[0].rows) == list(range(95)) and list(val[0].rows) == list(range(95, 100))
    train, val = split_parts([(Path("/s/a.h5"), 3)], 0.05)
    assert len(train[0].rows) == 2 and len(val[0].rows) == 1
    with pytest.raises(DatasetError, match="a.h5"):
        split_parts([(Path("/s/a.h5"), 1)], 0.05)


@pytest.mark.parametrize("n_parts,n_slots", [(8, 1), (8, 3), (8, 8), (3, 8), (1, 4), (5, 6), (2, 2)])
def test_dealing_covers_every_row_exactly_once(n_parts, n_slots):
    parts = [Part(i, 0, 10 + i) for i in range(n_parts)]
    rows = [(p.shard, r) for s in range(n_slots) for p in deal_parts(parts, n_slots, s) for r in p.rows]
    assert sorted(rows) == sorted((p.shard, r) for p in parts for r in p.rows)
    assert all(deal_parts(parts, n_slots, s) for s in range(n_slots))  # nobody idle


def test_ranks_and_workers_read_disjoint_pairs_covering_the_train_split(synthetic_shards):
    """One pass of every (rank, worker) reader slot reads each training pair exactly once."""
    cfg = cfg_()
    index = load_shard_index(synthetic_shards)
    train, _ = split_parts(index.shards, cfg.train.val_fraction)
    expected = sorted(f"{index.shards[p.shard][0]} row {r}" for p in train for r in p.rows)
    world, workers = 2, 2
    seen = []
    for rank in range(world):
        stream = build_loader(synthetic_shards, cfg, "cpu", rank=rank, world_size=world).stream
        for wid in range(workers):
            slot = rank * workers + wid
            n = sum(len(p.rows) for p in stream.slot_parts(slot, world * workers))
            seen += [w for _, w in itertools.islice(stream.slot_pairs(slot, world * workers, {}), n)]
    assert sorted(seen) == expected


# ------------------------------------------------------------------------------------ the loader


def test_batches_follow_the_contract_and_samples_per_epoch(synthetic_shards):
    cfg = cfg_()
    loader = build_loader(synthetic_shards, cfg, "cpu", workers=0)
    batches = collect(loader)
    assert len(loader) == len(batches) == 7  # ceil(50 / 8)
    assert [len(b) for b in batches] == [8] * 6 + [2]
    kinds = torch.cat([b.kind for b in batches])
    assert kinds.dtype == torch.uint8 and (kinds == 0).any() and (kinds > 0).any()
    for b in batches:
        assert b.template.shape == (len(b), 3, 32, 32) and b.template.dtype == torch.float32
        assert b.search.shape == (len(b), 3, 64, 64) and b.search.dtype == torch.float32
        assert b.search_box.shape == (len(b), 4) and b.search_box.dtype == torch.float32
        assert torch.equal(b.positive, b.kind == 0)
        assert b.search.min() >= 0 and b.search.max() <= 255 and b.search.std() > 10
        pos = b.search_box[b.positive]
        assert (pos[:, 2:] > 1).all()
    # Target centres spread over the crop, not pinned to its middle.
    pos = torch.cat([b.search_box[b.positive] for b in batches])
    centre = pos[:, :2] + pos[:, 2:] / 2
    assert (centre - 32).abs().max() > 8


def test_epoch_length_is_independent_of_the_dataset_and_of_workers_and_ranks(synthetic_shards):
    cfg = cfg_("train.samples_per_epoch=300")  # more than the 96 training pairs: the shards cycle
    assert sum(len(b) for b in build_loader(synthetic_shards, cfg, "cpu", workers=2)) == 300
    per_rank = [sum(len(b) for b in build_loader(synthetic_shards, cfg, "cpu", rank=r, world_size=2, workers=0))
                for r in range(2)]
    assert per_rank == [150, 150]
    loaders = [build_loader(synthetic_shards, cfg_(), "cpu", rank=r, world_size=3) for r in range(3)]
    assert [len(x) for x in loaders] == [3, 3, 3]  # ceil(ceil(50/3)/8): equal on every rank, as DDP needs


def test_train_stream_is_seeded_by_epoch_and_resumes_exactly(synthetic_shards):
    cfg = cfg_("train.samples_per_epoch=40")
    a = collect(build_loader(synthetic_shards, cfg, "cpu", epoch=1, workers=2))
    assert_same(a, collect(build_loader(synthetic_shards, cfg, "cpu", epoch=1, workers=2)))
    other = collect(build_loader(synthetic_shards, cfg, "cpu", epoch=2, workers=2))
    assert not torch.equal(a[0].search, other[0].search)
    resumed = build_loader(synthetic_shards, cfg, "cpu", epoch=1, workers=2, start_batch=2)
    assert len(resumed) == 3
    assert_same(a[2:], collect(resumed))


def test_validation_is_deterministic_and_unjittered(synthetic_shards):
    cfg = cfg_()
    v0 = collect(build_loader(synthetic_shards, cfg, "cpu", "val", workers=0))
    assert [len(b) for b in v0] == [8, 8, 4]
    assert_same(v0, collect(build_loader(synthetic_shards, cfg, "cpu", "val", epoch=5, workers=2)))
    # Sample 0 is row 0 of the first validation shard; its template is the stored crop, untouched.
    index = load_shard_index(synthetic_shards)
    _, val = split_parts(index.shards, cfg.train.val_fraction)
    with ShardReader(index.shards[val[0].shard][0]) as r:
        pair = r.read(0)
    stored = cv2.cvtColor(cv2.imdecode(pair.template_jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    got = v0[0].template[0].permute(1, 2, 0).numpy()
    assert np.abs(got - stored).max() <= 2  # two libjpeg builds may round differently by a level
    assert v0[0].kind[0] == pair.kind
    # Training crops get photometric jitter (the same pairs and geometry with it switched off differ only
    # in colour), and all crops are integer-valued, like the uint8 crops the tracker feeds the model.
    off = [f"train.augment.{k}=0" for k in ("brightness", "contrast", "saturation", "grayscale_prob", "blur_prob")]
    plain = collect(build_loader(synthetic_shards, cfg_(*off), "cpu", workers=0))
    jittered = collect(build_loader(synthetic_shards, cfg_("train.augment.brightness=0.5"), "cpu", workers=0))
    for a, b in zip(plain, jittered):
        assert torch.equal(a.search_box, b.search_box) and torch.equal(a.kind, b.kind)
        assert not torch.equal(a.template, b.template) and not torch.equal(a.search, b.search)
        assert torch.equal(b.search, b.search.round()) and torch.equal(v0[0].search, v0[0].search.round())


def test_device_decode_path_matches_worker_path(synthetic_shards):
    """The CUDA code paths (bytes decoded in the main process / uint8 copied then rendered) give the same
    batches as CPU rendering in the workers; exercised here on the CPU."""
    cfg = cfg_("train.samples_per_epoch=24")
    ref = collect(build_loader(synthetic_shards, cfg, "cpu", workers=1))
    for mode in ("bytes", "decoded"):
        loader = build_loader(synthetic_shards, cfg, "cpu", workers=1)
        loader.stream.mode = mode
        assert_same(ref, collect(loader))


def test_single_shard_trains_and_validates_on_disjoint_rows(synthetic_shards, tmp_path):
    one = single_shard_dir(synthetic_shards, tmp_path / "one")
    cfg = cfg_("train.samples_per_epoch=30", "train.val_samples=6")
    assert sum(len(b) for b in build_loader(one, cfg, "cpu", workers=2)) == 30
    val = collect(build_loader(one, cfg, "cpu", "val", workers=0))
    assert sum(len(b) for b in val) == 6
    train_rows, val_rows = split_parts(load_shard_index(one).shards, cfg.train.val_fraction)
    assert set(train_rows[0].rows).isdisjoint(val_rows[0].rows) and len(val_rows[0].rows) == 4


def test_corrupt_crops_are_dropped_and_counted(synthetic_shards, tmp_path):
    one = single_shard_dir(synthetic_shards, tmp_path / "bad")
    shard = next(one.glob("*.h5"))
    with h5py.File(shard, "r+") as f:
        f["search"][0] = np.frombuffer(b"not a jpeg at all", np.uint8)
    cfg = cfg_("train.samples_per_epoch=36", "train.val_fraction=0.1")  # 14 training rows, read 2-3 times
    loader = build_loader(one, cfg, "cpu", workers=0)
    total = sum(len(b) for b in loader)
    assert loader.corrupt >= 1 and total == 36 - loader.corrupt


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the nvjpeg probe is about a CUDA device")
def test_gpu_decode_probe_agrees_with_decoding_real_crops_on_cuda(synthetic_shards):
    """On CUDA the probe answers True exactly when nvjpeg turns real stored crops into the CPU decoder's pixels."""
    from siamtool.data import stream

    device = torch.device("cuda")
    stream._GPU_DECODE.pop(str(device), None)
    works = stream.gpu_decode_works(device)
    path, _ = load_shard_index(synthetic_shards).shards[0]
    with ShardReader(path) as r:
        pairs = r.read_many(range(4))
    size = int(cv2.imdecode(pairs[0].search_jpeg, cv2.IMREAD_COLOR).shape[0])
    data = [torch.from_numpy(p.search_jpeg) for p in pairs]
    cpu = stream.decode_jpegs(data, size, "cpu")
    try:
        gpu = stream.decode_jpegs(data, size, device)
    except RuntimeError:
        gpu = [None] * len(data)
    decoded = all(g is not None and g.device.type == "cuda" for g in gpu)
    assert works == decoded
    if works:  # nvjpeg's IDCT may round differently from libjpeg-turbo by a few levels, never more
        for g, c in zip(gpu, cpu):
            assert (g.cpu().int() - c.int()).abs().max() <= 8


def test_gpu_decode_probe_says_no_where_the_gpu_cannot_decode(monkeypatch, caplog):
    """No CUDA device: False without a warning. A CUDA device whose decoder fails: False, warned once, cached."""
    from siamtool.data import stream

    stream._GPU_DECODE.pop("cpu", None)
    assert stream.gpu_decode_works(torch.device("cpu")) is False
    assert "not available" not in caplog.text

    def broken(data, size, device="cpu"):
        raise RuntimeError("nvjpeg is not part of this torchvision build")

    monkeypatch.setattr(stream, "decode_jpegs", broken)
    gpu = torch.device("cuda", 7)
    stream._GPU_DECODE.pop(str(gpu), None)
    try:
        assert stream.gpu_decode_works(gpu) is False
        assert stream.gpu_decode_works(gpu) is False
        assert caplog.text.count("not available") == 1 and "nvjpeg is not part" in caplog.text
    finally:
        stream._GPU_DECODE.pop(str(gpu), None)


# ------------------------------------------------------------------------------------ refusals


def test_bad_inputs_fail_with_one_clear_line(synthetic_shards, tmp_path):
    with pytest.raises(DatasetError, match="index.json"):
        build_loader(tmp_path, cfg_(), "cpu")
    with pytest.raises(ConfigError, match="val_fraction"):
        build_loader(synthetic_shards, cfg_("train.val_fraction=0"), "cpu", "val")
    with pytest.raises(ConfigError, match="data.context"):
        build_loader(synthetic_shards, cfg_("data.context=0.3"), "cpu")
    with pytest.raises(ConfigError, match="search_size"):
        build_loader(synthetic_shards, cfg_("data.search_size=128"), "cpu")
