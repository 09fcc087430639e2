"""Training and validation batches streamed from prepare's HDF5 shards.

`build_loader` is the one entry point (see notes/CONTRACTS.md). How it works (README, "stream"):

* **Split.** Shards are sorted by file name; the last ``max(1, round(val_fraction * n))`` of them
  (never all) are validation, the rest training. With a single shard, its last
  ``max(1, ceil(val_fraction * N))`` pairs are held out instead, so a tiny dataset still validates on
  pairs it never trains on. prepare shuffles pairs before sharding, so every shard mixes sequences.
* **Train stream.** Each epoch the training shards are permuted with a seed of (train.seed, epoch),
  identically on every rank, and dealt round-robin to the ``world_size x workers`` reader slots (DDP
  rank, DataLoader worker); when there are fewer shards than slots each shard is dealt as interleaved
  row slices, so every pair is read by exactly one slot per pass. A slot reads its shards in random
  blocks of `READ_BLOCK` rows through an in-memory shuffle buffer of `train.shuffle_buffer` pairs
  (per worker) and cycles them (re-permuted) until the epoch has `train.samples_per_epoch` pairs, which
  is therefore independent of the dataset size.
* **Batches.** A rank yields ``ceil(ceil(samples / world_size) / batch_size)`` batches (the same number
  on every rank, as DDP needs); batch i is built by worker ``i % workers``, so the DataLoader's
  round-robin returns them in order and the whole epoch is a pure function of (seed, epoch, rank,
  world_size, workers): `start_batch` replays an interrupted epoch exactly, skipping the decode of the
  batches already trained on.
* **Validation** is deterministic: sample j is held-out pair ``j mod n_val`` with the jitter of a
  generator seeded by (train.seed, j), no photometric jitter, whatever the worker count or epoch.
* **Pixels.** On CUDA the workers only read and ship the JPEG bytes (packed into one tensor, pinned);
  the main process decodes them on the GPU (`torchvision.io.decode_jpeg(device="cuda")`, nvjpeg) and
  cuts and jitters the crops there (`augment.render_pairs`); plans and boxes travel pinned with
  non_blocking copies. Without a working nvjpeg the workers decode on the CPU and the uint8 crops are
  copied the same way. On CPU the workers decode (torchvision's decoder: 1.7x less CPU than
  cv2.imdecode + BGR->RGB + HWC->CHW, see benchmarks/data_pipeline.py) and render the final crops
  themselves, so the training process only trains; the crops travel as uint8 (render_pairs rounds).
* **Corrupt crops** (a JPEG that does not decode to the stored size) are dropped from their batch,
  logged with shard and row, and counted in `PairLoader.corrupt`.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from siamtool.config import Config
from siamtool.data.augment import plan_pairs, render_pairs
from siamtool.data.shards import KIND_POSITIVE, Pair, ShardIndex, ShardReader, load_shard_index
from siamtool.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)

READ_BLOCK = 128
"""Rows read from a shard at once: h5py costs ~2 ms per call and column, so reads are batched (0.07 ms/pair
at 128 rows vs 0.19 at 32, measured); the shuffle buffer mixes the blocks."""
VAL_SALT = 0x7A1
"""Seed salt of the validation jitter, so it never coincides with a training stream."""


@dataclass
class Batch:
    """A device-ready training batch (see notes/CONTRACTS.md, "Training batches")."""

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

    def __len__(self) -> int:
        return int(self.kind.shape[0])


# ------------------------------------------------------------------------------------ split and deal


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


def deal_parts(parts: list[Part], n_slots: int, slot: int) -> list[Part]:
    """The parts of reader slot `slot` out of `n_slots`: every row goes to exactly one slot.

    With fewer parts than slots each part is cut into interleaved row slices first (rows a, a+k, ...),
    so a one-shard dataset still feeds every worker of every rank.
    """
    if len(parts) < n_slots:
        k = math.ceil(n_slots / len(parts))
        parts = [Part(p.shard, p.lo, p.hi, p.offset + j * p.step, p.step * k) for p in parts for j in range(k)]
        parts = [p for p in parts if len(p.rows)]
    mine = parts[slot::n_slots]
    # Fewer rows than slots: a slot with nothing re-reads a part (only in toy datasets).
    return mine or [parts[slot % len(parts)]]


# ------------------------------------------------------------------------------------ decoding


def decode_jpegs(data: list[torch.Tensor], size: int, device: torch.device | str = "cpu") -> list[
        torch.Tensor | None]:
    """Decode JPEG byte tensors of `size` x `size` crops to uint8 (3,size,size) RGB tensors on `device`.

    An image that fails to decode or has another size comes back as None. nvjpeg decodes a list in one
    call, but the call fails as a whole when one image is bad; the images are then decoded one by one.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    def run(x: list[torch.Tensor]) -> list[torch.Tensor]:
        with warnings.catch_warnings():  # torchvision 0.29 flags its image codecs as deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_jpeg(x, mode=ImageReadMode.RGB, device=device)

    try:
        images: list[torch.Tensor | None] = list(run(data))
    except RuntimeError:
        images = []
        for x in data:
            try:
                images.extend(run([x]))
            except RuntimeError:
                images.append(None)
    return [im if im is not None and tuple(im.shape) == (3, size, size) else None for im in images]


def _pack(arrays: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Variable-length byte strings -> one flat uint8 tensor + offsets (one pinned copy, one IPC message)."""
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(a) for a in arrays])
    flat = np.concatenate(arrays) if arrays else np.zeros(0, np.uint8)
    return torch.from_numpy(flat), torch.from_numpy(offsets)


def _unpack(flat: torch.Tensor, offsets: torch.Tensor) -> list[torch.Tensor]:
    o = offsets.tolist()
    return [flat[o[i]:o[i + 1]] for i in range(len(o) - 1)]


# ------------------------------------------------------------------------------------ dataset


class PairStream(IterableDataset):
    """Yields the raw batches of one rank; `PairLoader` finishes them on the device.

    `mode`: "render" (decode and render the final crops here; CPU training), "bytes" (ship JPEG bytes
    for decoding on the GPU), "decoded" (decode here, render on the device).
    """

    def __init__(self, index: ShardIndex, parts: list[Part], cfg: Config, split: str, epoch: int, rank: int,
                 world_size: int, samples: int, mode: str, start_batch: int = 0) -> None:
        super().__init__()
        self.shards = [str(p) for p, _ in index.shards]
        self.template_size = index.template_size
        self.search_crop_size = index.search_crop_size
        self.parts = parts
        self.cfg = cfg
        self.split = split
        self.epoch = epoch
        self.rank = rank
        self.world_size = world_size
        self.batch_size = cfg.train.batch_size
        self.per_rank = math.ceil(samples / world_size)
        self.n_batches = math.ceil(self.per_rank / self.batch_size)
        self.mode = mode
        self.start_batch = start_batch

    def __len__(self) -> int:
        return self.n_batches

    def batch_sizes(self) -> list[int]:
        return [min(self.batch_size, self.per_rank - i * self.batch_size) for i in range(self.n_batches)]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        wid, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        sizes = self.batch_sizes()
        mine = range(wid, self.n_batches, workers)
        readers: dict[int, ShardReader] = {}
        try:
            if self.split == "train":
                yield from self._train(mine, sizes, wid, workers, readers)
            else:
                yield from self._val(mine, sizes, readers)
        finally:
            for r in readers.values():
                r.close()

    # -- sample selection -------------------------------------------------------------------------

    def _read(self, readers: dict[int, ShardReader], shard: int, rows: list[int]) -> list[tuple[Pair, str]]:
        reader = readers.get(shard)
        if reader is None:
            reader = readers[shard] = ShardReader(self.shards[shard])
        try:
            pairs = reader.read_many(rows)
        except (OSError, KeyError) as e:
            raise DatasetError(f"{self.shards[shard]}: unreadable rows {rows[0]}..{rows[-1]} ({e}); "
                               "rerun `siamtool prepare`") from None
        return [(p, f"{self.shards[shard]} row {r}") for p, r in zip(pairs, rows)]

    def slot_parts(self, slot: int, n_slots: int) -> list[Part]:
        """This epoch's parts of reader slot `slot`: the same permutation on every rank, then dealt."""
        perm = np.random.default_rng([self.cfg.train.seed, self.epoch, 0]).permutation(len(self.parts))
        return deal_parts([self.parts[i] for i in perm], n_slots, slot)

    def slot_pairs(self, slot: int, n_slots: int, readers: dict[int, ShardReader]) -> Iterator[tuple[Pair, str]]:
        """Endless shuffled pairs of one reader slot (see the module docstring)."""
        parts = self.slot_parts(slot, n_slots)
        rng = np.random.default_rng([self.cfg.train.seed, self.epoch, slot, 1])
        cycle = 0
        while True:
            order = range(len(parts)) if cycle == 0 else rng.permutation(len(parts))
            for k in order:
                part = parts[k]
                rows = part.rows
                # Close the shard of the previous part: a slot reads one shard at a time.
                for s in [s for s in readers if s != part.shard]:
                    readers.pop(s).close()
                blocks = [rows[b:b + READ_BLOCK] for b in range(0, len(rows), READ_BLOCK)]
                for b in rng.permutation(len(blocks)):
                    yield from self._read(readers, part.shard, list(blocks[b]))
            cycle += 1

    def _shuffled(self, source: Iterator[Any], rng: np.random.Generator) -> Iterator[Any]:
        """Shuffle buffer: starts emitting after a short fill, grows to `train.shuffle_buffer`."""
        size = max(1, self.cfg.train.shuffle_buffer)
        initial = min(size, 2 * self.batch_size)
        buf: list[Any] = []
        emitted = 0
        for item in source:
            buf.append(item)
            if len(buf) >= min(size, initial + emitted):
                j = int(rng.integers(len(buf)))
                buf[j], buf[-1] = buf[-1], buf[j]
                emitted += 1
                yield buf.pop()

    def _train(self, mine: range, sizes: list[int], wid: int, workers: int,
               readers: dict[int, ShardReader]) -> Iterator[dict[str, Any]]:
        slot, n_slots = self.rank * workers + wid, self.world_size * workers
        seed = self.cfg.train.seed
        stream = self._shuffled(self.slot_pairs(slot, n_slots, readers),
                                np.random.default_rng([seed, self.epoch, slot, 2]))
        aug_rng = np.random.default_rng([seed, self.epoch, slot, 3])
        for i in mine:
            items = [next(stream) for _ in range(sizes[i])]
            plan = plan_pairs(np.stack([p.template_box for p, _ in items]),
                              np.stack([p.search_box for p, _ in items]),
                              self.search_crop_size, self.cfg, aug_rng, photometric=True)
            if i < self.start_batch:
                continue  # replaying an interrupted epoch: same draws, no decode
            yield self._finish_in_worker(items, plan)

    def _val(self, mine: range, sizes: list[int], readers: dict[int, ShardReader]) -> Iterator[dict[str, Any]]:
        flat = [(p.shard, r) for p in self.parts for r in p.rows]
        first = self.rank * self.per_rank
        for i in mine:
            js = [first + i * self.batch_size + k for k in range(sizes[i])]
            refs = [flat[j % len(flat)] for j in js]
            got: dict[tuple[int, int], tuple[Pair, str]] = {}
            for shard in dict.fromkeys(s for s, _ in refs):  # one sorted read per shard
                rows = sorted({r for s, r in refs if s == shard})
                got.update({(shard, r): it for r, it in zip(rows, self._read(readers, shard, rows))})
            items = [got[ref] for ref in refs]
            rngs = [np.random.default_rng([self.cfg.train.seed, VAL_SALT, j]) for j in js]
            plan = plan_pairs(np.stack([p.template_box for p, _ in items]),
                              np.stack([p.search_box for p, _ in items]),
                              self.search_crop_size, self.cfg, rngs, photometric=False)
            yield self._finish_in_worker(items, plan)

    # -- what leaves the worker -------------------------------------------------------------------

    def _finish_in_worker(self, items: list[tuple[Pair, str]], plan: Any) -> dict[str, Any]:
        raw: dict[str, Any] = {"kind": torch.tensor([p.kind for p, _ in items], dtype=torch.uint8),
                               "where": [w for _, w in items], "plan": plan.to_tensors(), "corrupt": []}
        if self.mode == "bytes":
            raw["template_jpeg"] = _pack([p.template_jpeg for p, _ in items])
            raw["search_jpeg"] = _pack([p.search_jpeg for p, _ in items])
            return raw
        raw, z, x = self.decode(raw, [torch.from_numpy(p.template_jpeg) for p, _ in items],
                                [torch.from_numpy(p.search_jpeg) for p, _ in items], "cpu")
        if z is None or x is None:
            return raw
        if self.mode == "render":  # integer-valued (render_pairs rounds): exact as uint8
            z, x = render_pairs(z, x, raw["plan"], self.cfg)
            raw["template"], raw["search"] = z.to(torch.uint8), x.to(torch.uint8)
        else:
            raw["template_u8"], raw["search_u8"] = z, x
        return raw

    def decode(self, raw: dict[str, Any], zs: list[torch.Tensor], xs: list[torch.Tensor],
               device: torch.device | str) -> tuple[dict[str, Any], torch.Tensor | None, torch.Tensor | None]:
        """Decode a raw batch's crops; pairs with a corrupt crop leave the batch (noted in raw["corrupt"])."""
        z = decode_jpegs(zs, self.template_size, device)
        x = decode_jpegs(xs, self.search_crop_size, device)
        keep = [i for i in range(len(z)) if z[i] is not None and x[i] is not None]
        if len(keep) < len(z):
            lost = [raw["where"][i] for i in range(len(z)) if i not in set(keep)]
            idx = torch.tensor(keep, dtype=torch.long)
            raw = dict(raw, kind=raw["kind"][idx], where=[raw["where"][i] for i in keep],
                       plan={k: v[idx] for k, v in raw["plan"].items()}, corrupt=list(raw["corrupt"]) + lost)
        if not keep:
            return raw, None, None
        return raw, torch.stack([z[i] for i in keep]), torch.stack([x[i] for i in keep])


# ------------------------------------------------------------------------------------ loader


class PairLoader:
    """Iterable of `Batch` for one epoch of one rank; `len()` is its number of batches."""

    def __init__(self, stream: PairStream, device: torch.device, workers: int) -> None:
        self.stream = stream
        self.device = device
        self.workers = workers
        self.corrupt = 0
        """Pairs dropped so far because a crop did not decode (each one is also logged)."""

    def __len__(self) -> int:
        return max(0, self.stream.n_batches - (self.stream.start_batch if self.stream.split == "train" else 0))

    def __iter__(self) -> Iterator[Batch]:
        cuda = self.device.type == "cuda"
        loader = DataLoader(self.stream, batch_size=None, num_workers=self.workers, pin_memory=cuda,
                            prefetch_factor=4 if self.workers else None)
        for raw in loader:
            batch = self._finish(raw)
            if batch is not None:
                yield batch

    def _finish(self, raw: dict[str, Any]) -> Batch | None:
        dev, cfg, mode = self.device, self.stream.cfg, self.stream.mode
        if mode == "bytes":
            raw, z, x = self.stream.decode(raw, _unpack(*raw["template_jpeg"]), _unpack(*raw["search_jpeg"]), dev)
        elif mode == "decoded" and "template_u8" in raw:
            z = raw["template_u8"].to(dev, non_blocking=True)
            x = raw["search_u8"].to(dev, non_blocking=True)
        for where in raw["corrupt"]:
            self.corrupt += 1
            log.warning("%s: a stored crop does not decode; pair dropped (%d so far)", where, self.corrupt)
        if not len(raw["kind"]):
            raise DatasetError(f"every pair of a batch failed to decode (e.g. {raw['corrupt'][0]}); the shards "
                               "are damaged: rerun `siamtool prepare --overwrite`")
        if mode == "render":
            template, search = raw["template"].to(dev).float(), raw["search"].to(dev).float()
        else:
            template, search = render_pairs(z, x, raw["plan"], cfg)
        kind = raw["kind"].to(dev, non_blocking=True)
        return Batch(template=template, search=search,
                     search_box=raw["plan"]["search_box"].to(dev, non_blocking=True),
                     positive=kind == KIND_POSITIVE, kind=kind)


def check_compatible(index: ShardIndex, cfg: Config) -> None:
    """Refuse a config whose crops the shards cannot give without a train/track mismatch."""
    d = cfg.data
    stored = (index.config.get("data") or {}) if isinstance(index.config, dict) else {}
    ctx = stored.get("context")
    if ctx is not None and abs(float(ctx) - d.context) > 1e-9:
        raise ConfigError(f"{index.root}: shards were prepared with data.context={ctx} but the config says "
                          f"{d.context}; the tracker would crop differently. Use --set data.context={ctx} "
                          "or re-run prepare")
    need = d.search_size / d.template_size
    have = index.search_crop_size / index.template_size
    if need > have + 1e-6:
        raise ConfigError(f"{index.root}: data.search_size/template_size = {need:g} needs stored search crops "
                          f"of at least {need:g} template windows, the shards have {have:g}; re-run prepare "
                          "with this config")


def build_loader(shards_dir: str | Path, cfg: Config, device: torch.device | str, split: str = "train",
                 epoch: int = 0, rank: int = 0, world_size: int = 1, *, workers: int | None = None,
                 start_batch: int = 0) -> PairLoader:
    """The batches of one epoch of one rank (see the module docstring and notes/CONTRACTS.md).

    `workers` overrides `train.workers`; `start_batch` skips the first batches of a training epoch
    (resume) while drawing exactly the same pairs and jitter for the rest.
    """
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
    samples = cfg.train.samples_per_epoch if split == "train" else cfg.train.val_samples
    mode = "render" if device.type != "cuda" else ("bytes" if gpu_decode_works(device) else "decoded")
    stream = PairStream(index, parts, cfg, split, epoch, rank, world_size, samples, mode,
                        start_batch if split == "train" else 0)
    n_workers = cfg.train.workers if workers is None else workers
    return PairLoader(stream, device, max(0, n_workers))


_GPU_DECODE: dict[str, bool] = {}


def gpu_decode_works(device: torch.device) -> bool:
    """Whether nvjpeg decodes on `device` (torchvision builds without it exist); probed once."""
    key = str(device)
    if key not in _GPU_DECODE:
        import cv2

        ok, buf = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))
        try:
            (img,) = decode_jpegs([torch.from_numpy(buf.reshape(-1))], 16, device)
            _GPU_DECODE[key] = img is not None and img.device.type == "cuda"
        except Exception as e:  # noqa: BLE001 - any failure means: decode on the CPU instead
            log.warning("JPEG decoding on %s is not available (%s); decoding on the CPU", device, e)
            _GPU_DECODE[key] = False
    return _GPU_DECODE[key]
