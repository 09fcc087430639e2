"""Deterministic template/search pair sampling from LaSOT annotations (no images needed).

Positives: template and search frames of one sequence, both usable (visible, w,h > 0), at most
`data.max_gap` frames apart. Negatives (probability `data.neg_prob`) teach the tracker to say "not
here", which the score threshold and re-detection of the Tracker depend on:

* same class (kind 1): a usable frame of another sequence of the same class, centred on that
  sequence's target, a *semantic distractor* (DaSiamRPN: the hard negatives a tracker actually meets);
* other class (kind 2): the same from a sequence of another class;
* absent (kind 3): a frame of the template's own sequence where the target is fully occluded or out of
  view, centred on the last known box (what the tracker would search when it loses the target).

When a kind is impossible (one sequence in the class, one class, no absent frames) its share goes to
the kinds that are possible, and the pair records the kind it really is. Every draw comes from a
generator seeded by (data.seed, sequence name), so the pairs do not depend on the order of the index
or the worker count (workers only execute the list); the final order is a seeded shuffle so every
shard mixes many sequences (the training stream reads shards a few at a time).
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from siamtool.config import DataConfig
from siamtool.data.lasot import LasotSequence
from siamtool.data.shards import KIND_ABSENT, KIND_OTHER_CLASS, KIND_POSITIVE, KIND_SAME_CLASS
from siamtool.geometry import from_lasot

NEGATIVE_KINDS = (KIND_SAME_CLASS, KIND_OTHER_CLASS, KIND_ABSENT)


@dataclass(frozen=True)
class PairSpec:
    """One sampled pair, resolved to what a worker needs: frame files and 0-based frame boxes.

    `search_box` is the box the stored search crop is centred on: the target (positives), the other
    sequence's target (kinds 1, 2) or the last known box of the template's target (kind 3).
    """

    kind: int
    sequence: str
    template_frame: int
    template_path: Path
    template_box: tuple[float, float, float, float]
    search_sequence: str
    search_frame: int
    search_path: Path
    search_box: tuple[float, float, float, float]
    augment: Any = None
    """`stills.StillAugment` for still-image pairs (the search crop is stretched and recoloured), else None."""


@dataclass
class SamplingResult:
    pairs: list[PairSpec]
    skipped: list[str]
    """One line per sequence that yields no pairs, with the reason."""


def stable_rng(seed: int, name: str, salt: int = 0) -> np.random.Generator:
    """The generator of one sequence (or still box) `name`: the same in every process and on every resume.
    crc32 is stable across processes and Python versions (hash() of a str is salted per process)."""
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8")), salt])


class _Pool:
    """Per-sequence frame tables used by the sampler (computed once)."""

    def __init__(self, seq: LasotSequence) -> None:
        self.seq = seq
        self.usable = np.flatnonzero(seq.usable)
        self.absent = np.flatnonzero(seq.absent)
        self.boxes = from_lasot(seq.gt)

    def box(self, frame: int) -> tuple[float, float, float, float]:
        return tuple(float(v) for v in self.boxes[frame])  # type: ignore[return-value]

    def last_known(self, frame: int) -> int:
        """The usable frame before `frame` closest to it (or the first usable one after it)."""
        k = int(np.searchsorted(self.usable, frame)) - 1
        return int(self.usable[k]) if k >= 0 else int(self.usable[0])

    def near(self, rng: np.random.Generator, frame: int, max_gap: int) -> int:
        """A usable frame at most `max_gap` from `frame` (the nearest one when none is that close)."""
        lo = int(np.searchsorted(self.usable, frame - max_gap, side="left"))
        hi = int(np.searchsorted(self.usable, frame + max_gap, side="right"))
        if hi > lo:
            return int(self.usable[rng.integers(lo, hi)])
        return int(self.usable[np.argmin(np.abs(self.usable - frame))])


def _kind_weights(data: DataConfig, possible: dict[int, bool]) -> tuple[list[int], np.ndarray] | None:
    """The negative kinds possible for a sequence and their renormalised shares (None: none possible)."""
    shares = {KIND_SAME_CLASS: data.neg_same_class, KIND_OTHER_CLASS: data.neg_other_class,
              KIND_ABSENT: data.neg_absent}
    kinds = [k for k in NEGATIVE_KINDS if possible[k]]
    if not kinds:
        return None
    w = np.array([shares[k] for k in kinds], dtype=np.float64)
    # Configured shares of zero for every possible kind: use them equally rather than make no negatives.
    w = w / w.sum() if w.sum() > 0 else np.full(len(kinds), 1.0 / len(kinds))
    return kinds, w


def spread(total: int, n: int, seed: int) -> list[int]:
    """`total` pairs over `n` items: total // n each, and one more for a seeded choice of total % n of them
    (so a source's share is met exactly whatever its size; no draw at all when n divides total)."""
    if n <= 0:
        return []
    counts = [total // n] * n
    rest = total % n
    if rest:
        for i in np.random.default_rng([seed, n, total, 0x5B]).choice(n, size=rest, replace=False):
            counts[int(i)] += 1
    return counts


def sample_pairs(sequences: list[LasotSequence], data: DataConfig, pairs_per_sequence: int | None = None,
                 total: int | None = None) -> SamplingResult:
    """Sample `pairs_per_sequence` (default data.pairs_per_sequence) pairs per sequence, then shuffle.

    `total` instead spreads that many pairs over the sequences (`spread`, in name order; a sequence with
    no usable frame loses its share): how prepare meets a source's weighted share. Deterministic in
    (data, the set of sequences and their annotations); see the module docstring.
    """
    n_pairs = data.pairs_per_sequence if pairs_per_sequence is None else pairs_per_sequence
    ordered = sorted(sequences, key=lambda s: s.name)
    counts = dict(zip((s.name for s in ordered), spread(n_pairs * len(ordered) if total is None else total,
                                                        len(ordered), data.seed)))
    pools: dict[str, _Pool] = {}
    skipped: list[str] = []
    for seq in ordered:
        pool = _Pool(seq)
        if pool.usable.size == 0:
            skipped.append(f"{seq.path}: no visible frame with a positive-size box, no pairs sampled")
            continue
        pools[seq.name] = pool
    by_class: dict[str, list[str]] = defaultdict(list)
    for name, pool in pools.items():
        by_class[pool.seq.class_name].append(name)
    names = list(pools)

    pairs: list[PairSpec] = []
    for name in names:
        pool = pools[name]
        rng = stable_rng(data.seed, name)
        same = [n for n in by_class[pool.seq.class_name] if n != name]
        other = [n for n in names if pools[n].seq.class_name != pool.seq.class_name]
        weights = _kind_weights(data, {KIND_SAME_CLASS: bool(same), KIND_OTHER_CLASS: bool(other),
                                       KIND_ABSENT: pool.absent.size > 0})
        for _ in range(counts[name]):
            negative = weights is not None and rng.random() < data.neg_prob
            kind = KIND_POSITIVE if not negative else int(rng.choice(weights[0], p=weights[1]))
            if kind == KIND_ABSENT:
                s = int(pool.absent[rng.integers(pool.absent.size)])
                t = pool.near(rng, s, data.max_gap)
                pairs.append(_spec(kind, pool, t, pool, s, pool.box(pool.last_known(s))))
                continue
            t = int(pool.usable[rng.integers(pool.usable.size)])
            if kind == KIND_POSITIVE:
                s = pool.near(rng, t, data.max_gap)
                pairs.append(_spec(kind, pool, t, pool, s, pool.box(s)))
                continue
            choices = same if kind == KIND_SAME_CLASS else other
            dist = pools[choices[int(rng.integers(len(choices)))]]
            s = int(dist.usable[rng.integers(dist.usable.size)])
            pairs.append(_spec(kind, pool, t, dist, s, dist.box(s)))

    order = np.random.default_rng([data.seed, 0x5EED]).permutation(len(pairs))
    return SamplingResult([pairs[i] for i in order], skipped)


def _spec(kind: int, tpool: _Pool, t: int, spool: _Pool, s: int, sbox: tuple[float, ...]) -> PairSpec:
    return PairSpec(kind, tpool.seq.name, t, tpool.seq.frame_path(t), tpool.box(t),
                    spool.seq.name, s, spool.seq.frame_path(s), sbox)  # type: ignore[arg-type]
