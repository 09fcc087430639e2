"""The shard format: round trip, atomic writes, the index, fork safety, the stored crop geometry."""

from __future__ import annotations

import json
import multiprocessing as mp
import os

import h5py
import numpy as np
import pytest

from siamtool.config import DataConfig
from siamtool.data import shards as sh
from siamtool.data.shards import Pair, ShardReader, load_shard_index, write_shard
from siamtool.errors import DatasetError
from siamtool.geometry import CropWindow, search_window, template_window


def random_pairs(n: int, seed: int = 0) -> list[Pair]:
    rng = np.random.default_rng(seed)
    return [Pair(
        template_jpeg=rng.integers(0, 256, rng.integers(10, 200), dtype=np.uint8),
        search_jpeg=rng.integers(0, 256, rng.integers(10, 500), dtype=np.uint8),
        template_box=rng.uniform(0, 128, 4).astype(np.float32),
        search_box=rng.uniform(0, 384, 4).astype(np.float32),
        kind=int(rng.integers(0, 4)), sequence=f"cat-{i}", search_sequence=f"dög-{i}",
        frames=rng.integers(0, 3000, 2).astype(np.int32),
    ) for i in range(n)]


def assert_same(a: Pair, b: Pair) -> None:
    np.testing.assert_array_equal(a.template_jpeg, b.template_jpeg)
    np.testing.assert_array_equal(a.search_jpeg, b.search_jpeg)
    np.testing.assert_array_equal(a.template_box, b.template_box)
    np.testing.assert_array_equal(a.search_box, b.search_box)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert (a.kind, a.sequence, a.search_sequence) == (b.kind, b.sequence, b.search_sequence)


def test_round_trip_and_layout(tmp_path):
    pairs = random_pairs(7)
    path = tmp_path / "shard-00000.h5"
    size = write_shard(path, pairs, {"config": "data: {}\n", "siamtool_version": "0.1.0", "source_root": "/x"})
    assert size == path.stat().st_size
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no temp file may stay behind"
    with ShardReader(path) as r:
        assert len(r) == 7
        got = r.read_many([6, 0, 3, 0])
        for i, g in zip([6, 0, 3, 0], got):
            assert_same(pairs[i], g)
        assert_same(pairs[-1], r.read(-1))
        assert r.attrs["format_version"] == sh.FORMAT_VERSION and r.attrs["source_root"] == "/x"
        np.testing.assert_array_equal(r.kinds(), [p.kind for p in pairs])
        with pytest.raises(IndexError):
            r.read(7)
    with h5py.File(path) as f:  # the contract's dataset layout, for readers outside siamtool
        assert f["template"].dtype == h5py.vlen_dtype(np.uint8)
        assert f["template_box"].shape == (7, 4) and f["template_box"].dtype == np.float32
        assert f["frames"].shape == (7, 2) and f["frames"].dtype == np.int32
        assert f["kind"].dtype == np.uint8


def test_slice_reads_match_read_many(tmp_path):
    pairs = random_pairs(300)
    write_shard(tmp_path / "s.h5", pairs, {"config": ""})
    with ShardReader(tmp_path / "s.h5") as r:
        for rows in ([5], [0, 1, 2, 3], [3, 9, 10, 11, 40], list(range(0, 300, 7)), [0, 150, 299]):
            cols = r.read_columns(rows)
            for k, i in enumerate(rows):
                np.testing.assert_array_equal(cols["search"][k], pairs[i].search_jpeg)
                np.testing.assert_array_equal(cols["template_box"][k], pairs[i].template_box)
                assert cols["kind"][k] == pairs[i].kind
        block = r.read_rows(10, 20)
        assert set(block) == {"template", "search", "template_box", "search_box", "kind"}
        assert len(block["kind"]) == 10


def test_empty_shard(tmp_path):
    write_shard(tmp_path / "s.h5", [], {"config": ""})
    with ShardReader(tmp_path / "s.h5") as r:
        assert len(r) == 0 and r.read_many([]) == []


def test_failed_write_leaves_nothing(tmp_path):
    bad = random_pairs(3)
    bad[1].template_box = np.zeros(3)  # wrong shape: the write fails part way
    with pytest.raises(ValueError):
        write_shard(tmp_path / "shard-00000.h5", bad, {"config": ""})
    assert list(tmp_path.iterdir()) == []


def _read_in_child(reader: ShardReader, q) -> None:
    q.put(reader.read(2).sequence)


def test_reader_survives_fork(tmp_path):
    write_shard(tmp_path / "s.h5", random_pairs(4), {"config": ""})
    reader = ShardReader(tmp_path / "s.h5")
    assert reader.read(1).sequence == "cat-1"  # handle open in the parent before the fork
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_read_in_child, args=(reader, q))
    p.start()
    assert q.get(timeout=20) == "cat-2"
    p.join(20)
    assert p.exitcode == 0
    assert reader.read(3).sequence == "cat-3"
    reader.close()


def write_index(tmp_path, **extra):
    write_shard(tmp_path / "shard-00000.h5", random_pairs(3), {"config": ""})
    data = {"format_version": 1, "siamtool_version": "0.1.0", "source_root": "/x", "config": {"data": {}},
            "template_size": 128, "search_crop_size": 384,
            "shards": [{"file": "shard-00000.h5", "pairs": 3}], "pairs": 3, **extra}
    (tmp_path / "index.json").write_text(json.dumps(data))


def test_load_shard_index(tmp_path):
    write_index(tmp_path)
    idx = load_shard_index(tmp_path)
    assert idx.shards == [(tmp_path / "shard-00000.h5", 3)] and idx.pairs == 3
    assert (idx.template_size, idx.search_crop_size) == (128, 384) and idx.config == {"data": {}}


def test_load_shard_index_errors(tmp_path):
    with pytest.raises(DatasetError, match="siamtool prepare"):
        load_shard_index(tmp_path / "nope")
    write_index(tmp_path, format_version=99)
    with pytest.raises(DatasetError, match="version 99"):
        load_shard_index(tmp_path)
    write_index(tmp_path)
    (tmp_path / "shard-00000.h5").unlink()
    with pytest.raises(DatasetError, match="shard-00000.h5.*missing"):
        load_shard_index(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(DatasetError, match="unreadable"):
        load_shard_index(tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "emptied", "not hdf5"])
def test_damaged_shard_given_to_train_is_one_line_and_leaves_no_run_folder(damage, synthetic_shards, tmp_path):
    """`siamtool train` with DataLoader worker processes, as a user runs it, on a damaged shard: one line
    naming the shard and what to do, exit 2, no worker traceback, no run folder, no other file touched."""
    import shutil

    from tests.conftest import output_lines, run_cli, tiny_config

    shards = tmp_path / "shards"
    shutil.copytree(synthetic_shards, shards)
    victim = shards / "shard-00003.h5"
    kept = {p.name: p.read_bytes() for p in shards.iterdir() if p != victim}
    if damage == "truncated":
        os.truncate(victim, victim.stat().st_size // 2)
    else:
        victim.write_bytes(b"" if damage == "emptied" else b"not hdf5 at all")
    cfg = tmp_path / "tiny.yaml"
    tiny_config("train.workers=2", "train.epochs=1", "train.samples_per_epoch=16", "train.batch_size=8",
                "train.val_samples=8").save(cfg)
    r = run_cli("--device", "cpu", "train", str(cfg), "--shards", str(shards), "--out", str(tmp_path / "run"))
    assert r.returncode == 2, r.output
    lines = output_lines(r.output)
    assert len(lines) == 1, r.output
    assert lines[0].startswith("error:") and str(victim) in lines[0] and "siamtool prepare" in lines[0]
    assert not (tmp_path / "run").exists()
    assert {p.name: p.read_bytes() for p in shards.iterdir() if p != victim} == kept


@pytest.mark.parametrize("margin", [1.0, 1.5, 1.33])
def test_stored_windows_follow_the_geometry(margin):
    data = DataConfig(search_margin=margin)
    box = np.array([40.3, 70.1, 33.0, 81.5])
    t = sh.stored_template_window(box, data)
    s = sh.stored_search_window(box, data)
    assert t == template_window(box, data.context, data.template_size)
    assert s.out_size == round(data.search_size * margin) == sh.search_crop_size(data)
    assert (s.cx, s.cy) == (t.cx, t.cy)
    assert s.scale == pytest.approx(t.scale, rel=1e-12), "stored search crop has the template's scale"
    # The final search crop (no jitter) is the centred search_size window of the stored crop.
    c = s.out_size / 2
    final = s.sub_window(CropWindow(c, c, data.search_size, data.search_size))
    ref = search_window(box, data.context, data.template_size, data.search_size)
    np.testing.assert_allclose([final.cx, final.cy, final.side], [ref.cx, ref.cy, ref.side], rtol=1e-12)


def test_shard_files_are_readable_by_others(tmp_path):
    write_shard(tmp_path / "s.h5", random_pairs(1), {"config": ""})
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "s.h5").stat().st_mode & 0o777 == 0o666 & ~umask
