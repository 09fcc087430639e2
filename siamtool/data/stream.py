"""Training and validation batches streamed from prepare's HDF5 shards.

`build_loader` is the one entry point (docs/contracts.md, "Training batches"). How it works (README, "stream";
docs/training.md for the GPU side):

* **Split.** Shards are sorted by file name; the last ``max(1, round(val_fraction * n))`` of them
  (never all) are validation, the rest training. With a single shard, its last
  ``max(1, ceil(val_fraction * N))`` pairs are held out instead, so a tiny dataset still validates on
  pairs it never trains on. prepare shuffles pairs before sharding, so every shard mixes sequences.
* **One endless training stream.** Training never restarts its data at an epoch: an epoch is only a
  number of pairs (`train.samples_per_epoch`, counted by the trainer), so workers, their shuffle state
  and their read position carry across epochs (no fork, no refill, no re-read per epoch). The training
  rows are cut into blocks of up to `READ_BLOCK` consecutive rows; pass p over the data permutes the
  blocks with a seed of (train.seed, p), the same on every rank, and deals them round-robin to the
  ``world_size x workers`` reader slots (DDP rank, DataLoader worker), so a pass reads every pair once.
  A slot reads its blocks in groups of about `train.shuffle_buffer` pairs (one slice read per block and
  column) and emits each group in a random order: nothing read is thrown away, and every pair is seen
  as often as any other (within a pass or so), on 1 GPU or 8 (tests/data/test_stream.py simulates it).
* **Batches** all have `train.batch_size` pairs (a fixed shape: `torch.compile` never recompiles). Batch
  n of a rank (counted from the start of training, across epochs) is built by worker ``n % workers``
  from its slot's pairs ``(n // workers) * batch_size`` onwards, with jitter from a generator seeded by
  (train.seed, world_size, rank, n): the stream is a pure function of (seed, world_size, rank, workers,
  n), so `start_batch` resumes it exactly, and skipping is arithmetic (no read or decode of the skipped
  batches).
* **Validation** is deterministic: sample j is held-out pair ``j mod n_val`` with the jitter of a
  generator seeded by (train.seed, j), no photometric jitter, whatever the worker count or epoch. Its
  workers are persistent too.
* **One packed message per batch.** A worker ships a batch as ONE uint8 tensor (a small int64 header,
  the kinds, then the JPEG bytes or the crop pixels) and ONE float32 tensor (the jitter plan): each
  tensor crossing processes costs the main process a shared-memory attach (2.9-4.6 ms for the 10 tensors
  of a batch of 64 before, benchmarks/train_speed.py).
* **Pixels.** On CUDA the workers only read and ship the JPEG bytes; a background thread of the main
  process decodes a batch's templates and searches in ONE `decode_jpeg(device="cuda")` call (nvjpeg),
  cuts and jitters the crops (`augment.render_pairs`) on a side CUDA stream, one batch ahead of the
  training step, which waits on an event only. Plans and pixels travel pinned with non_blocking copies.
  Without a working nvjpeg the workers decode on the CPU and the uint8 crops are copied the same way. On
  CPU the workers decode (torchvision's decoder: 1.7x less CPU than cv2.imdecode + BGR->RGB +
  HWC->CHW, see benchmarks/data_pipeline.py) and render the final crops themselves, so the training
  process only trains; the crops travel as uint8 (render_pairs rounds).
* **Corrupt crops** (a JPEG that does not decode to the stored size) are replaced by another pair of the
  same batch (the shape stays fixed), logged with shard and row, and counted in `PairLoader.corrupt`.
  A training batch with no decodable pair at all raises in a single process; under DDP it becomes a
  zero-weight placeholder (`Batch.weight == 0`) so the other ranks are not left waiting in a collective.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import queue
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from siamtool.config import Config
from siamtool.data.augment import AugmentPlan, plan_pairs, render_pairs
from siamtool.data.shards import KIND_ABSENT, KIND_POSITIVE, TRAIN_COLUMNS, ShardIndex, ShardReader, load_shard_index
from siamtool.device import available_cores
from siamtool.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)

READ_BLOCK = 128
"""Rows read from a shard at once: h5py costs ~2 ms per call and column, so reads are batched (0.07 ms/pair
at 128 rows vs 0.19 at 32, measured); the group shuffle mixes the blocks."""
VAL_SALT = 0x7A1
"""Seed salt of the validation jitter, so it never coincides with a training stream."""
PASS_SALT = 0x5A3
"""Seed salt of the block permutation of each pass and of the in-group orders."""
AUG_SALT = 0x3C7
"""Seed salt of the per-batch training jitter."""
PREFETCH = 1
"""Finished batches the background thread keeps ready (it builds the next while one waits): one batch
ahead of the step, so decode and crop overlap the step without holding more device memory."""


@dataclass
class Batch:
    """A device-ready training batch (docs/contracts.md, "Training batches")."""

    template: torch.Tensor
    """(B,3,Ht,Wt) float32 RGB 0..255."""
    search: torch.Tensor
    """(B,3,Hs,Ws) float32 RGB 0..255, after shift/scale/photometric jitter."""
    search_box: torch.Tensor
    """(B,4) float32 x,y,w,h of the stored search box in final search-crop pixels (negatives: the box
    the crop was centred on; the trainer ignores it)."""
    positive: torch.Tensor
    """(B,) bool: the target is in the search crop."""
    kind: torch.Tensor
    """(B,) uint8: shards.KIND_* of each pair."""
    weight: float = 1.0
    """Loss weight of the whole batch: 0 for a placeholder that stands in for a batch none of whose pairs
    decoded (DDP only: every rank must run the same steps, or the others wait in a collective)."""

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    def tensors(self) -> list[torch.Tensor]:
        return [self.template, self.search, self.search_box, self.positive, self.kind]


# ------------------------------------------------------------------------------------ split and order


@dataclass(frozen=True)
class Part:
    """Rows ``range(lo + offset, hi, step)`` of shard number `shard` (its position in the index)."""

    shard: int
    lo: int
    hi: int
    offset: int = 0
    step: int = 1

    @property
    def rows(self) -> range:
        return range(self.lo + self.offset, self.hi, self.step)


def split_parts(shards: list[tuple[Path, int]], val_fraction: float,
                splits: list[str] | None = None) -> tuple[list[Part], list[Part]]:
    """Deterministic train / validation parts of a shard list (see the module docstring).

    `splits` (per shard 'train'/'val', from a prepare run that split by sequence) wins over
    `val_fraction`: validation then measures sequences the model never trained on.
    """
    if splits is not None:
        train = [Part(i, 0, n) for i, (_, n) in enumerate(shards) if splits[i] != "val" and n > 0]
        val = [Part(i, 0, n) for i, (_, n) in enumerate(shards) if splits[i] == "val" and n > 0]
        if not train:
            raise DatasetError("the shard folder holds no training pairs; rerun `siamtool prepare`")
        return train, val
    order = sorted(range(len(shards)), key=lambda i: shards[i][0].name)
    order = [i for i in order if shards[i][1] > 0]
    if not order:
        raise DatasetError("the shard folder holds no pairs; rerun `siamtool prepare`")
    if len(order) >= 2:
        n_val = 0 if val_fraction <= 0 else min(len(order) - 1, max(1, round(val_fraction * len(order))))
        cut = len(order) - n_val
        train = [Part(i, 0, shards[i][1]) for i in order[:cut]]
        return train, [Part(i, 0, shards[i][1]) for i in order[cut:]]
    (i,), n = order, shards[order[0]][1]
    if n < 2:
        raise DatasetError(f"{shards[i][0]}: a single shard with {n} pair cannot be split into train and "
                           "validation; prepare more pairs")
    n_val = 0 if val_fraction <= 0 else min(n - 1, max(1, math.ceil(val_fraction * n)))
    return [Part(i, 0, n - n_val)], ([Part(i, n - n_val, n)] if n_val else [])


@dataclass(frozen=True)
class Block:
    """Consecutive rows ``lo:hi`` of shard number `shard`: the unit of reading (one slice per column)."""

    shard: int
    lo: int
    hi: int

    def __len__(self) -> int:
        return self.hi - self.lo


def make_blocks(parts: Sequence[Part], n_slots: int) -> list[Block]:
    """The read blocks of the training parts: `READ_BLOCK` rows, smaller when the data is too small to give
    every one of the `n_slots` reader slots a block of its own (toy datasets)."""
    total = sum(len(p.rows) for p in parts)
    size = max(1, min(READ_BLOCK, total // max(1, n_slots)))
    blocks: list[Block] = []
    for p in parts:
        if p.step != 1:  # strided parts (never made by split_parts): one row per block
            blocks += [Block(p.shard, r, r + 1) for r in p.rows]
            continue
        start = p.lo + p.offset
        blocks += [Block(p.shard, a, min(a + size, p.hi)) for a in range(start, p.hi, size)]
    if not blocks:
        raise DatasetError("no training pairs to stream; rerun `siamtool prepare` with more data")
    return blocks


@dataclass
class Group:
    """Blocks read together and emitted in `order` (indices into their concatenated rows)."""

    blocks: list[Block]
    order: np.ndarray

    def refs(self) -> np.ndarray:
        """(len(order), 2) int64 (shard, row) of the emitted rows, in emission order."""
        rows = np.concatenate([np.stack([np.full(len(b), b.shard), np.arange(b.lo, b.hi)], 1) for b in self.blocks])
        return rows[self.order]


class SlotOrder:
    """The endless sample order of one reader slot (see the module docstring): a pure function of (blocks,
    n_slots, slot, seed, group size), and cheap to start anywhere: skipping is block-length arithmetic.

    The slot's blocks, pass after pass, are cut into groups of at least `group_rows` rows (a group may
    span passes, so a slot with a small share of a pass still mixes `group_rows` pairs); each group is
    emitted in its own random order.
    """

    def __init__(self, blocks: Sequence[Block], n_slots: int, slot: int, seed: int, group_rows: int) -> None:
        if not 0 <= slot < n_slots:
            raise ValueError(f"slot {slot} is not in [0, {n_slots})")
        self.blocks = list(blocks)
        self.n_slots = n_slots
        self.slot = slot
        self.seed = seed
        self.group_rows = max(1, group_rows)

    def pass_blocks(self, p: int) -> list[Block]:
        """This slot's blocks in pass p: the pass's permutation (the same on every rank), dealt round-robin."""
        perm = np.random.default_rng([self.seed, PASS_SALT, p]).permutation(len(self.blocks))
        mine = perm[self.slot::self.n_slots]
        if not len(mine):  # fewer blocks than slots: re-read one (toy datasets only)
            mine = perm[[self.slot % len(perm)]]
        return [self.blocks[i] for i in mine]

    def block_groups(self) -> Iterator[list[Block]]:
        """The slot's endless block sequence (pass 0, 1, ...) cut into groups of >= group_rows rows."""
        group: list[Block] = []
        rows = 0
        for p in _count():
            for b in self.pass_blocks(p):
                group.append(b)
                rows += len(b)
                if rows >= self.group_rows:
                    yield group
                    group, rows = [], 0

    def groups(self, start: int = 0) -> Iterator[Group]:
        """Groups from sample `start` of this slot's stream on (the first one cut to begin there)."""
        skip = start
        for g, blocks in enumerate(self.block_groups()):
            n = sum(len(b) for b in blocks)
            if skip >= n:
                skip -= n
                continue
            order = np.random.default_rng([self.seed, PASS_SALT, self.slot, g]).permutation(n)
            yield Group(blocks, order[skip:])
            skip = 0


def _count() -> Iterator[int]:
    p = 0
    while True:
        yield p
        p += 1


# ------------------------------------------------------------------------------------ decoding


def decode_jpegs(data: list[torch.Tensor], size: int | Sequence[int], device: torch.device | str = "cpu") -> list[
        torch.Tensor | None]:
    """Decode JPEG byte tensors of square crops to uint8 (3,s,s) RGB tensors on `device`, in one call.

    `size` is the side of every image, or one side per image (templates and searches decode together).
    An image that fails to decode or has another size comes back as None. nvjpeg decodes a list in one
    call, but the call fails as a whole when one image is bad; the images are then decoded one by one.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    sizes = [size] * len(data) if isinstance(size, int) else list(size)

    def run(x: list[torch.Tensor]) -> list[torch.Tensor]:
        with warnings.catch_warnings():  # torchvision 0.29 flags its image codecs as deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_jpeg(x, mode=ImageReadMode.RGB, device=device)

    if not data:
        return []
    try:
        images: list[torch.Tensor | None] = list(run(data))
    except RuntimeError:
        images = []
        for x in data:
            try:
                images.extend(run([x]))
            except RuntimeError:
                images.append(None)
    return [im if im is not None and tuple(im.shape) == (3, s, s) else None for im, s in zip(images, sizes)]


# ------------------------------------------------------------------------------------ packing
#
# uint8 buffer: int64 header [n, payload, all_bad, batch index] + per pair [shard, row, template bytes,
# search bytes, replaced], then the n kinds, then the payload: JPEG bytes (z0 x0 z1 x1 ...), or stored
# crops (n,3,T,T) + (n,3,X,X), or final crops (n,3,t,t) + (n,3,s,s).
# float32 buffer: the plan's arrays one after the other (each a contiguous slice, so each can be copied
# to the device with non_blocking=True from pinned memory).

PAYLOAD_BYTES, PAYLOAD_STORED, PAYLOAD_FINAL = 0, 1, 2
_HEAD, _PER_PAIR = 4, 5
_PLAN = (("template_windows", 3), ("search_windows", 3), ("search_box", 4), ("template_photo", 5),
         ("search_photo", 5))
PLAN_WIDTH = sum(w for _, w in _PLAN)


def pack_plan(plan: AugmentPlan) -> torch.Tensor:
    return torch.from_numpy(np.concatenate([np.asarray(getattr(plan, k), np.float32).reshape(-1) for k, _ in _PLAN]))


def unpack_plan(flat: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
    out, at = {}, 0
    for k, w in _PLAN:
        out[k] = flat[at:at + n * w].view(n, w)
        at += n * w
    return out


def pack_batch(payload_kind: int, index: int, refs: np.ndarray, kinds: np.ndarray, payload: list[np.ndarray],
               lengths: np.ndarray | None = None, replaced: np.ndarray | None = None,
               all_bad: bool = False) -> torch.Tensor:
    """One uint8 tensor for a batch (layout above); `payload` arrays are concatenated as raw bytes."""
    n = len(kinds)
    head = np.zeros(_HEAD + _PER_PAIR * n, np.int64)
    head[:_HEAD] = (n, payload_kind, int(all_bad), index)
    per = head[_HEAD:].reshape(n, _PER_PAIR)
    per[:, :2] = refs
    if lengths is not None:
        per[:, 2:4] = lengths
    if replaced is not None:
        per[:, 4] = replaced
    parts = [head.view(np.uint8), np.asarray(kinds, np.uint8)]
    parts += [np.ascontiguousarray(a).reshape(-1).view(np.uint8) for a in payload]
    return torch.from_numpy(np.concatenate(parts))


@dataclass
class Packed:
    """A received batch, unpacked into views of its two buffers (no copies)."""

    n: int
    payload_kind: int
    all_bad: bool
    index: int
    refs: list[tuple[int, int]]
    lengths: list[tuple[int, int]]
    replaced: list[bool]
    kind: torch.Tensor
    payload: torch.Tensor
    plan: dict[str, torch.Tensor]


def unpack_batch(data: torch.Tensor, meta: torch.Tensor) -> Packed:
    n = int(data[:8].view(torch.int64)[0])
    head_bytes = 8 * (_HEAD + _PER_PAIR * n)
    head = data[:head_bytes].view(torch.int64)
    h = head.tolist()
    per = [h[_HEAD + _PER_PAIR * i:_HEAD + _PER_PAIR * (i + 1)] for i in range(n)]
    return Packed(n=n, payload_kind=h[1], all_bad=bool(h[2]), index=h[3], refs=[(p[0], p[1]) for p in per],
                  lengths=[(p[2], p[3]) for p in per], replaced=[bool(p[4]) for p in per],
                  kind=data[head_bytes:head_bytes + n], payload=data[head_bytes + n:], plan=unpack_plan(meta, n))


# ------------------------------------------------------------------------------------ dataset


class PairStream(IterableDataset):
    """Yields the packed batches of one rank, ``(uint8 tensor, float32 tensor)``; `PairLoader` finishes
    them on the device.

    `mode`: "render" (decode and render the final crops here; CPU training), "bytes" (ship JPEG bytes
    for decoding on the GPU), "decoded" (decode here, render on the device). Training: batches
    ``start_batch, start_batch + 1, ...`` of the endless stream, `batches` of them when given (else
    endless). Validation: ``ceil(ceil(val_samples / world_size) / batch_size)`` batches.
    """

    def __init__(self, index: ShardIndex, parts: list[Part], cfg: Config, split: str, rank: int = 0,
                 world_size: int = 1, mode: str = "render", start_batch: int = 0,
                 batches: int | None = None) -> None:
        super().__init__()
        self.shards = [str(p) for p, _ in index.shards]
        self.template_size = index.template_size
        self.search_crop_size = index.search_crop_size
        self.parts = parts
        self.cfg = cfg
        self.split = split
        self.rank = rank
        self.world_size = world_size
        self.batch_size = cfg.train.batch_size
        self.mode = mode
        self.start_batch = start_batch if split == "train" else 0
        self.batches = batches
        self.per_rank = math.ceil(cfg.train.val_samples / world_size)
        self.n_batches = math.ceil(self.per_rank / self.batch_size) if split == "val" else batches

    def __len__(self) -> int:
        if self.n_batches is None:
            raise TypeError("the training stream is endless (pass batches= for a finite one)")
        return self.n_batches

    def batch_sizes(self) -> list[int]:
        """Validation batch sizes (the last one may be short: validation is not compiled)."""
        return [min(self.batch_size, self.per_rank - i * self.batch_size) for i in range(self.n_batches or 0)]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        wid, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        readers: dict[int, ShardReader] = {}
        try:
            if self.split == "train":
                yield from self._train(wid, workers, readers)
            else:
                yield from self._val(wid, workers, readers)
        finally:
            for r in readers.values():
                r.close()

    # -- sample selection -------------------------------------------------------------------------

    def _reader(self, readers: dict[int, ShardReader], shard: int) -> ShardReader:
        reader = readers.get(shard)
        if reader is None:
            reader = readers[shard] = ShardReader(self.shards[shard])
        return reader

    def _read_block(self, readers: dict[int, ShardReader], b: Block) -> dict[str, np.ndarray]:
        try:
            return self._reader(readers, b.shard).read_rows(b.lo, b.hi, TRAIN_COLUMNS)
        except (OSError, KeyError, IndexError) as e:
            raise DatasetError(f"{self.shards[b.shard]}: unreadable rows {b.lo}..{b.hi - 1} ({e}); "
                               "rerun `siamtool prepare`") from None

    def slot_order(self, slot: int, n_slots: int) -> SlotOrder:
        """Slot `slot` of `n_slots`: groups of `train.shuffle_buffer` pairs, at most the whole training set."""
        blocks = make_blocks(self.parts, n_slots)
        group = min(max(1, self.cfg.train.shuffle_buffer), sum(len(b) for b in blocks))
        return SlotOrder(blocks, n_slots, slot, self.cfg.train.seed, group)

    def slot_rows(self, slot: int, n_slots: int, readers: dict[int, ShardReader],
                  start: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """Endless columns of one reader slot from its sample `start` on, a group at a time (emission order).

        Column arrays plus "refs" (n,2) (shard, row). Reads each block of a group with one slice per
        column and keeps only the shard being read open (a slot reads one shard at a time).
        """
        for group in self.slot_order(slot, n_slots).groups(start):
            cols: dict[str, list[np.ndarray]] = {k: [] for k in TRAIN_COLUMNS}
            for b in group.blocks:
                for s in [s for s in readers if s != b.shard]:
                    readers.pop(s).close()
                for k, v in self._read_block(readers, b).items():
                    cols[k].append(v)
            out = {k: _concat(v)[group.order] for k, v in cols.items()}
            out["refs"] = group.refs()
            yield out

    def _train(self, wid: int, workers: int, readers: dict[int, ShardReader]) -> Iterator[Any]:
        """Batches n = start + wid, start + wid + workers, ... (the DataLoader's round-robin order)."""
        first = self.start_batch + wid
        slot = self.rank * workers + first % workers
        stop = None if self.batches is None else self.start_batch + self.batches
        rows = self.slot_rows(slot, self.world_size * workers, readers, start=(first // workers) * self.batch_size)
        pending: list[dict[str, np.ndarray]] = []
        have = 0
        n = first
        while stop is None or n < stop:
            while have < self.batch_size:
                chunk = next(rows)
                pending.append(chunk)
                have += len(chunk["kind"])
            cols = {k: _concat([c[k] for c in pending]) for k in pending[0]}
            take = {k: v[:self.batch_size] for k, v in cols.items()}
            rest = {k: v[self.batch_size:] for k, v in cols.items()}
            pending, have = ([rest], len(rest["kind"])) if len(rest["kind"]) else ([], 0)
            rng = np.random.default_rng([self.cfg.train.seed, AUG_SALT, self.world_size, self.rank, n])
            plan = plan_pairs(np.stack(take["template_box"]), np.stack(take["search_box"]), self.search_crop_size,
                              self.cfg, rng, photometric=True)
            yield self._finish_in_worker(take, plan, n, rng)
            n += workers

    def _val(self, wid: int, workers: int, readers: dict[int, ShardReader]) -> Iterator[Any]:
        flat = [(p.shard, r) for p in self.parts for r in p.rows]
        first = self.rank * self.per_rank
        sizes = self.batch_sizes()
        for i in range(wid, len(sizes), workers):
            js = [first + i * self.batch_size + k for k in range(sizes[i])]
            refs = [flat[j % len(flat)] for j in js]
            got: dict[tuple[int, int], int] = {}
            chunks: list[dict[str, np.ndarray]] = []
            at = 0
            for shard in dict.fromkeys(s for s, _ in refs):  # one sorted read per shard
                rows = sorted({r for s, r in refs if s == shard})
                try:
                    chunks.append(self._reader(readers, shard).read_columns(rows, TRAIN_COLUMNS))
                except (OSError, KeyError, IndexError) as e:
                    raise DatasetError(f"{self.shards[shard]}: unreadable rows ({e}); rerun `siamtool prepare`") \
                        from None
                got.update({(shard, r): at + k for k, r in enumerate(rows)})
                at += len(rows)
            cols = {k: _concat([c[k] for c in chunks]) for k in TRAIN_COLUMNS}
            pick = np.array([got[ref] for ref in refs], dtype=np.int64)
            take = {k: v[pick] for k, v in cols.items()}
            take["refs"] = np.array(refs, dtype=np.int64).reshape(-1, 2)
            rngs = [np.random.default_rng([self.cfg.train.seed, VAL_SALT, j]) for j in js]
            plan = plan_pairs(np.stack(take["template_box"]), np.stack(take["search_box"]), self.search_crop_size,
                              self.cfg, rngs, photometric=False)
            yield self._finish_in_worker(take, plan, i, None)

    # -- what leaves the worker -------------------------------------------------------------------

    def _finish_in_worker(self, cols: dict[str, np.ndarray], plan: AugmentPlan, index: int,
                          rng: np.random.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        kinds = np.asarray(cols["kind"], np.uint8)
        refs = cols["refs"]
        if self.mode == "bytes":
            zs, xs = list(cols["template"]), list(cols["search"])
            lengths = np.array([[len(z), len(x)] for z, x in zip(zs, xs)], np.int64).reshape(-1, 2)
            payload = [np.asarray(a, np.uint8) for zx in zip(zs, xs) for a in zx]
            return pack_batch(PAYLOAD_BYTES, index, refs, kinds, payload, lengths=lengths), pack_plan(plan)
        z, x, src = self.decode([torch.from_numpy(np.asarray(a, np.uint8)) for a in cols["template"]],
                                [torch.from_numpy(np.asarray(a, np.uint8)) for a in cols["search"]], "cpu")
        n = len(kinds)
        if src is None:  # nothing decoded: the main process decides (raise, placeholder or drop)
            return pack_batch(PAYLOAD_BYTES, index, refs, kinds, [], all_bad=True), pack_plan(plan)
        replaced = src != np.arange(n)
        if replaced.any():
            kinds = kinds[src]
            plan = AugmentPlan(*(np.ascontiguousarray(getattr(plan, k)[src]) for k, _ in _PLAN))
        if self.mode == "render":  # integer-valued (render_pairs rounds): exact as uint8
            zf, xf = render_pairs(z, x, AugmentPlan.to_tensors(plan), self.cfg)
            z, x, kind_ = zf.to(torch.uint8), xf.to(torch.uint8), PAYLOAD_FINAL
        else:
            kind_ = PAYLOAD_STORED
        return (pack_batch(kind_, index, refs, kinds, [z.numpy(), x.numpy()], replaced=replaced),
                pack_plan(plan))

    def decode(self, zs: list[torch.Tensor], xs: list[torch.Tensor], device: torch.device | str
               ) -> tuple[torch.Tensor | None, torch.Tensor | None, np.ndarray | None]:
        """Decode a batch's crops in one call: (templates, searches, source pair of each row).

        A pair with a corrupt crop is replaced by the next good pair of the batch (`src[i] != i`), so the
        batch keeps its shape; (None, None, None) when no pair decodes.
        """
        n = len(zs)
        images = decode_jpegs(list(zs) + list(xs), [self.template_size] * n + [self.search_crop_size] * n,
                              device)
        good = [i for i in range(n) if images[i] is not None and images[n + i] is not None]
        if not good:
            return None, None, None
        src = np.arange(n)
        if len(good) < n:
            bad = [i for i in range(n) if i not in set(good)]
            src[bad] = [good[k % len(good)] for k in range(len(bad))]
        z = torch.stack([images[i] for i in src])
        x = torch.stack([images[n + i] for i in src])
        return z, x, src


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


# ------------------------------------------------------------------------------------ loader


def worker_context() -> str:
    """The DataLoader start method, set explicitly: "fork" on Linux (Python 3.14 defaults to forkserver,
    where every worker re-imports torch and siamtool), "spawn" elsewhere (fork is unsafe on macOS)."""
    return "fork" if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods() \
        else "spawn"


class PairLoader:
    """Iterable of `Batch` for one rank: endless for training (one iterator serves every epoch), finite
    (`len()` batches) for validation. Iterating starts the workers and a background thread that
    finishes batches one ahead of the consumer; `close()` (or the iterator's) stops them."""

    def __init__(self, stream: PairStream, device: torch.device, workers: int) -> None:
        self.stream = stream
        self.device = device
        self.workers = workers
        self.corrupt = 0
        """Pairs replaced so far because a crop did not decode (each one is also logged)."""
        self.empty = 0
        """Batches none of whose pairs decoded (placeholders under DDP, dropped in validation)."""
        self._dataloader: DataLoader | None = None
        self._iters: weakref.WeakSet[BatchIterator] = weakref.WeakSet()

    def __len__(self) -> int:
        return len(self.stream)

    @property
    def dataloader(self) -> DataLoader:
        """The DataLoader, made once: validation workers persist from one validation to the next."""
        if self._dataloader is None:
            cuda = self.device.type == "cuda"
            w = self.workers
            self._dataloader = DataLoader(
                self.stream, batch_size=None, num_workers=w, pin_memory=cuda, prefetch_factor=4 if w else None,
                persistent_workers=bool(w) and self.stream.split == "val",
                multiprocessing_context=worker_context() if w else None)
        return self._dataloader

    def __iter__(self) -> BatchIterator:
        source = iter(self.dataloader)  # starts (or restarts) the workers, here in the calling thread
        it = BatchIterator(source, self._finish, self.device)
        self._iters.add(it)
        return it

    def close(self) -> None:
        """Stop the background threads and the workers (training: the endless stream's)."""
        for it in list(self._iters):
            it.close()
        if self._dataloader is not None and self._dataloader._iterator is not None:  # persistent workers
            it = self._dataloader._iterator
            self._dataloader._iterator = None
            with contextlib.suppress(Exception):
                it._shutdown_workers()

    # -- in the background thread (on the side CUDA stream) ------------------------------------------

    def _finish(self, raw: tuple[torch.Tensor, torch.Tensor]) -> Batch | None:
        dev, cfg, stream = self.device, self.stream.cfg, self.stream
        p = unpack_batch(*raw)
        kind = p.kind
        plan = p.plan
        if p.payload_kind == PAYLOAD_BYTES and not p.all_bad:
            blobs, at = [], 0
            for lz, lx in p.lengths:
                blobs += [p.payload[at:at + lz], p.payload[at + lz:at + lz + lx]]
                at += lz + lx
            z, x, src = stream.decode(blobs[0::2], blobs[1::2], dev)
            if src is None:
                p.all_bad = True
            elif (src != np.arange(p.n)).any():
                p.replaced = list(src != np.arange(p.n))
                idx = torch.from_numpy(src)
                kind = kind[idx]
                plan = {k: v[idx] for k, v in plan.items()}
        for i in [i for i in range(p.n) if p.replaced[i]]:
            self.corrupt += 1
            log.warning("%s row %d: a stored crop does not decode; pair replaced (%d so far)",
                        stream.shards[p.refs[i][0]], p.refs[i][1], self.corrupt)
        if p.all_bad:
            return self._no_pair_decoded(p)
        if p.payload_kind == PAYLOAD_FINAL:
            t, s = cfg.data.template_size, cfg.data.search_size
            zu = p.payload[:p.n * 3 * t * t].view(p.n, 3, t, t)
            xu = p.payload[p.n * 3 * t * t:p.n * 3 * (t * t + s * s)].view(p.n, 3, s, s)
            template = zu.to(dev, non_blocking=True).float()
            search = xu.to(dev, non_blocking=True).float()
        else:
            if p.payload_kind == PAYLOAD_STORED:
                t, s = stream.template_size, stream.search_crop_size
                z = p.payload[:p.n * 3 * t * t].view(p.n, 3, t, t).to(dev, non_blocking=True)
                x = p.payload[p.n * 3 * t * t:p.n * 3 * (t * t + s * s)].view(p.n, 3, s, s).to(dev, non_blocking=True)
            template, search = render_pairs(z, x, plan, cfg)
        kind = kind.to(dev, non_blocking=True)
        return Batch(template=template, search=search, search_box=plan["search_box"].to(dev, non_blocking=True),
                     positive=kind == KIND_POSITIVE, kind=kind)

    def _no_pair_decoded(self, p: Packed) -> Batch | None:
        self.empty += 1
        where = f"{self.stream.shards[p.refs[0][0]]} row {p.refs[0][1]}"
        if self.stream.split == "val":
            log.error("%s: no pair of a validation batch decodes; batch skipped", where)
            return None
        if self.stream.world_size == 1:
            raise DatasetError(f"every pair of a batch failed to decode (e.g. {where}); the shards are damaged: "
                               "rerun `siamtool prepare --overwrite`")
        log.error("%s: no pair of a training batch decodes; this rank trains a zero-weight placeholder so the "
                  "other ranks do not wait (%d so far)", where, self.empty)
        d, dev, n = self.stream.cfg.data, self.device, p.n
        kind = torch.full((n,), KIND_ABSENT, dtype=torch.uint8, device=dev)
        return Batch(template=torch.zeros(n, 3, d.template_size, d.template_size, device=dev),
                     search=torch.zeros(n, 3, d.search_size, d.search_size, device=dev),
                     search_box=torch.zeros(n, 4, device=dev), positive=kind == KIND_POSITIVE, kind=kind, weight=0.0)


class _End:
    pass


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _put(q: queue.Queue, stop: threading.Event, item: Any) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _produce(source: Iterator[Any], finish: Callable[[Any], Batch | None], device: torch.device,
             side: Any, q: queue.Queue, stop: threading.Event) -> None:
    """The background thread of a `BatchIterator` (a function, so the thread holds no reference to the
    iterator and a dropped iterator is collected, which stops the thread)."""
    try:
        ctx: Any = contextlib.nullcontext()
        if side is not None:
            torch.cuda.set_device(device)
            ctx = torch.cuda.stream(side)
        with ctx:
            for raw in source:
                if stop.is_set():
                    return
                batch = finish(raw)
                if batch is None:
                    continue
                event = None
                if side is not None:
                    event = torch.cuda.Event()
                    event.record(side)
                if not _put(q, stop, (batch, event)):
                    return
        _put(q, stop, _End())
    except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
        _put(q, stop, _Failed(e))


class BatchIterator:
    """Runs `finish` over `source` in a background thread, `PREFETCH` batch(es) ahead of the consumer.

    On CUDA the thread works on a side stream and records an event per batch; `__next__` makes the
    consumer's stream wait on that event (no host synchronisation) and marks the batch's tensors as used
    there, so the caching allocator does not hand their memory back to the side stream too early. The
    training step therefore never waits for a decode or a crop, only (on the device) for its own batch.
    """

    def __init__(self, source: Iterator[Any], finish: Callable[[Any], Batch | None], device: torch.device) -> None:
        self.source = source
        self.device = device
        side = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.queue: queue.Queue = queue.Queue(maxsize=PREFETCH)
        self.stop = threading.Event()
        self.closed = False
        self.thread = threading.Thread(target=_produce, args=(source, finish, device, side, self.queue, self.stop),
                                       name="siamtool-batches", daemon=True)
        self.thread.start()

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> Batch:
        if self.closed:
            raise StopIteration
        item = self.queue.get()
        if isinstance(item, _End):
            self.close()
            raise StopIteration
        if isinstance(item, _Failed):
            self.close()
            raise item.error
        batch, event = item
        if event is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(event)
            for t in batch.tensors():
                t.record_stream(current)
        return batch

    def close(self) -> None:
        """Stop the thread (it finishes the batch in hand) and release the source (the DataLoader's
        iterator: non-persistent workers exit with it)."""
        if self.closed:
            return
        self.closed = True
        self.stop.set()
        while self.thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self.queue.get(timeout=0.05)
            self.thread.join(timeout=0.05)
        with contextlib.suppress(queue.Empty):
            while True:
                self.queue.get_nowait()
        shutdown = getattr(self.source, "_shutdown_workers", None)
        if shutdown is not None and not getattr(self.source, "_persistent_workers", False):
            shutdown()
        self.source = iter(())

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def check_compatible(index: ShardIndex, cfg: Config) -> None:
    """Refuse a config whose crops the shards cannot give without a train/track mismatch."""
    d = cfg.data
    stored = (index.config.get("data") or {}) if isinstance(index.config, dict) else {}
    ctx = stored.get("context")
    if ctx is not None and abs(float(ctx) - d.context) > 1e-9:
        raise ConfigError(f"{index.root}: shards were prepared with data.context={ctx} but the config says "
                          f"{d.context}; the tracker would crop differently. Use --set data.context={ctx} "
                          "or re-run prepare")
    if index.template_size < d.template_size:
        raise ConfigError(f"{index.root}: the shards hold {index.template_size} px template crops but the model "
                          f"trains on data.template_size={d.template_size} px: every crop would be enlarged "
                          f"{d.template_size / index.template_size:g}x (blur, not detail); re-run prepare with this "
                          f"config, or --set data.template_size={index.template_size}")
    need = d.search_size / d.template_size
    have = index.search_crop_size / index.template_size
    if need > have + 1e-6:
        raise ConfigError(f"{index.root}: data.search_size/template_size = {need:g} needs stored search crops "
                          f"of at least {need:g} template windows, the shards have {have:g}; re-run prepare "
                          "with this config")


def build_loader(shards_dir: str | Path, cfg: Config, device: torch.device | str, split: str = "train",
                 epoch: int = 0, rank: int = 0, world_size: int = 1, *, workers: int | None = None,
                 start_batch: int = 0, batches: int | None = None) -> PairLoader:
    """The batches of one rank (see the module docstring and docs/contracts.md).

    Training: the endless stream from this rank's batch `start_batch` on (counted from the start of
    training, across epochs; the trainer passes ``samples_seen // (batch_size * world_size)``), or
    `batches` of them. `epoch` only names the call: the training stream does not restart at epochs and
    validation is the same every epoch. `workers` overrides `train.workers`. Never more workers than
    this process has CPU cores (PyTorch warned twice, once per loader, about 8 workers on 2 cores): the
    stream is then the one of that many workers, the same on every resume on this machine.
    """
    del epoch
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    device = torch.device(device)
    index = load_shard_index(shards_dir)
    check_compatible(index, cfg)
    train_parts, val_parts = split_parts(index.shards, cfg.train.val_fraction, index.splits)
    parts = train_parts if split == "train" else val_parts
    if not parts:
        raise ConfigError(f"{index.root}: no validation pairs because train.val_fraction is "
                          f"{cfg.train.val_fraction}; set it above 0 (e.g. --set train.val_fraction=0.05)")
    mode = "render" if device.type != "cuda" else ("bytes" if gpu_decode_works(device) else "decoded")
    stream = PairStream(index, parts, cfg, split, rank, world_size, mode, start_batch, batches)
    n_workers = min(cfg.train.workers if workers is None else workers, available_cores())
    if split == "val":  # validation is small and deterministic: a couple of persistent workers suffice
        n_workers = min(n_workers, 2)
    return PairLoader(stream, device, max(0, n_workers))


_GPU_DECODE: dict[str, bool] = {}


def gpu_decode_works(device: torch.device) -> bool:
    """Whether nvjpeg decodes on `device` (torchvision builds without it exist); probed once."""
    key = str(device)
    if key not in _GPU_DECODE:
        ok, buf = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))
        try:
            (img,) = decode_jpegs([torch.from_numpy(buf.reshape(-1))], 16, device)
            _GPU_DECODE[key] = img is not None and img.device.type == "cuda"
        except Exception as e:  # noqa: BLE001 - any failure means: decode on the CPU instead
            log.warning("JPEG decoding on %s is not available (%s); decoding on the CPU", device, e)
            _GPU_DECODE[key] = False
    return _GPU_DECODE[key]
