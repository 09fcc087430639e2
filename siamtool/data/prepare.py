"""`siamtool prepare`: sample pairs from one or several datasets, crop them once, write HDF5 shards in
parallel, resumably.

Order of work:
  1. index every source (`index_source`, the one seam between prepare and the dataset readers;
     malformed sequences skipped with file and line unless strict),
  2. sample every pair up front in the main process (`sampling.sample_pairs` per video source,
     `stills.sample_still_pairs` for still images; each source gets its weighted share of the pairs,
     `source_totals`; deterministic, so the pairs do not depend on --workers) and cut the list into
     shards of `data.pairs_per_shard`,
  3. compare the run's fingerprint with `<out>/prepare.json`: the same -> resume (complete shards are
     kept, stray temp files removed), different -> refused unless --overwrite,
  4. check free disk space against an estimate, then let worker processes write the missing shards,
     each shard by one worker to a temp name, renamed when complete,
  5. write `index.json` (the reader's entry point) only when every shard exists.

A worker decodes each frame once per shard, at the coarsest JPEG reduction (1/2, 1/4, 1/8) that
every crop it feeds still allows (libjpeg-turbo's DCT-domain scaling, `images.decode_reduced`), then
cuts each crop with one warpAffine (`geometry.crop`). Frames that cannot be read are skipped with the
pairs that need them, counted and listed.

Why the whole frame is decoded, not only the region the crops need: libjpeg-turbo can skip the IDCT
outside a region (`tj3SetCroppingRegion`), but no maintained Python binding with a wheel exposes it
(simplejpeg and OpenCV scale only; PyTurboJPEG needs a system libturbojpeg >= 3.0, which Debian 12
does not have, and does not wrap the call either). It would save less than it seems: the Huffman
decode of every row above the region's bottom cannot be skipped, and at the reductions used it is
most of the decode (a 960x720 frame: 1.14 ms at 1/2, 0.87 ms at 1/8 where the IDCT is almost nil).
A ctypes prototype of the cropped decode measured 1.01 ms against 1.36 ms per frame on the 720p
benchmark pairs (docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import math
import shutil
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from siamtool import __version__
from siamtool.config import Config, DataConfig, SourceSpec
from siamtool.data.datasets import ALIASES, KINDS, index_dataset, resolve_kind, splits
from siamtool.data.lasot import index_lasot
from siamtool.data.sampling import PairSpec, sample_pairs
from siamtool.data.shards import (
    CONFIG_NAME,
    FORMAT_VERSION,
    INDEX_NAME,
    KIND_NAMES,
    Pair,
    ShardReader,
    search_crop_size,
    stored_search_window,
    stored_template_window,
    write_shard,
)
from siamtool.data.stills import StillsIndex, augment_box, augment_crop, index_stills, sample_still_pairs
from siamtool.errors import ConfigError, DatasetError, SiamtoolError
from siamtool.fileio import LockHeld, exclusive_lock, write_json_atomic
from siamtool.geometry import CropWindow, crop, reduced_decode_factor
from siamtool.images import decode_reduced
from siamtool.pool import report_progress, run_in_pool
from siamtool.provenance import differences, file_digest
from siamtool.reporting import SILENT, Reporter

PLAN_NAME = "prepare.json"
LOCK_NAME = ".prepare.lock"
"""Held while a prepare run owns the folder (says who); removed when the run ends."""
"""The fingerprint of the run that owns an output folder (resume and changed-config detection)."""

BYTES_PER_CROP_PIXEL = 0.25
"""Disk estimate: JPEG q<=95 of natural images measured 0.08-0.19 bytes per crop pixel; 0.25 is safe."""

_PROGRESS_EVERY = 16  # pairs between progress messages from a worker


def shard_name(index: int) -> str:
    """Shard file name. Numbered by the global shard index, not the worker, so any --workers resumes."""
    return f"shard-{index:05d}.h5"


def _is_temp(name: str) -> bool:
    return name.startswith(".shard-") and name.endswith(".tmp")


# ------------------------------------------------------------------------------------------ cropping


@dataclass(frozen=True)
class CropParams:
    """What a worker needs to cut and encode crops (picklable: travels to the workers with each shard)."""

    data: DataConfig
    max_decode_factor: int = 8
    """Largest JPEG reduction used (1 disables reduced decoding; the benchmark measures the gain)."""
    decoder: str = "auto"
    """`images.decode_reduced`'s decoder: auto (simplejpeg, else OpenCV) or opencv (the benchmark's old path)."""


@dataclass
class Timing:
    """Seconds a worker spent per stage; the benchmark reports the decode share."""

    read: float = 0.0
    decode: float = 0.0
    crop: float = 0.0
    encode: float = 0.0
    write: float = 0.0
    total: float = 0.0
    frames: int = 0
    decode_factors: Counter = field(default_factory=Counter)

    def add(self, other: Timing) -> None:
        for k in ("read", "decode", "crop", "encode", "write", "total", "frames"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.decode_factors.update(other.decode_factors)


def pair_windows(spec: PairSpec, data: DataConfig) -> tuple[CropWindow, CropWindow]:
    """The template and stored-search windows of a pair (frame pixels)."""
    return (stored_template_window(np.asarray(spec.template_box), data),
            stored_search_window(np.asarray(spec.search_box), data))


def read_frame(path: Path, factor: int, timing: Timing, decoder: str = "auto") -> np.ndarray | None:
    """Decode a frame at 1/factor size, BGRX or BGR (`images.decode_reduced`); None when missing,
    empty or not an image. Read with one `read()`: np.fromfile took 3x longer for a 90 kB frame."""
    t0 = time.perf_counter()
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    t1 = time.perf_counter()
    img = decode_reduced(data, factor, decoder)
    t2 = time.perf_counter()
    timing.read += t1 - t0
    timing.decode += t2 - t1
    timing.frames += 1
    timing.decode_factors[factor] += 1
    return img


def prepare_frame(img: np.ndarray, windows: list[CropWindow]) -> tuple[np.ndarray, list[CropWindow]]:
    """Make a decoded frame fast to crop with `geometry.crop`; return it and the windows in its pixels.

    Measured OpenCV facts (384 px crop, one thread): bilinear warpAffine has a SIMD path for 4 channels
    but not for 3 (0.30 vs 0.81 ms), and output pixels that sample outside the image with
    BORDER_REPLICATE take a slow per-pixel path (a window 3x the frame: 1.3-2.0 ms instead of 0.4).
    So only the part of the frame the windows cover is converted to BGRA (imencode writes the same
    JPEG bytes for BGRA as for BGR; a BGRX decode is used as it is), and it is padded with replicated
    edges only where a window leaves the frame. The crops equal those of the whole frame: replicate
    padding is what BORDER_REPLICATE samples, and inside the frame no window reads beyond the region
    (+1 px for bilinear taps).
    """
    h, w = img.shape[:2]
    x_lo = math.floor(min(win.x0 for win in windows)) - 1
    y_lo = math.floor(min(win.y0 for win in windows)) - 1
    x_hi = math.ceil(max(win.x0 + win.side for win in windows)) + 1
    y_hi = math.ceil(max(win.y0 + win.side for win in windows)) + 1
    # The region of the frame the windows need (at least one pixel, for windows entirely outside).
    rx0, ry0 = min(max(x_lo, 0), w - 1), min(max(y_lo, 0), h - 1)
    rx1, ry1 = max(min(x_hi, w), rx0 + 1), max(min(y_hi, h), ry0 + 1)
    roi = img[ry0:ry1, rx0:rx1]
    if roi.ndim == 2 or roi.shape[2] != 4:
        roi = cv2.cvtColor(roi, cv2.COLOR_BGR2BGRA if roi.ndim == 3 else cv2.COLOR_GRAY2BGRA)
    left, top = max(0, rx0 - x_lo), max(0, ry0 - y_lo)
    right, bottom = max(0, x_hi - rx1), max(0, y_hi - ry1)
    if left or top or right or bottom:
        roi = cv2.copyMakeBorder(roi, top, bottom, left, right, cv2.BORDER_REPLICATE)
    dx, dy = left - rx0, top - ry0
    return roi, [CropWindow(win.cx + dx, win.cy + dy, win.side, win.out_size) for win in windows]


def make_pairs(
    specs: list[PairSpec], params: CropParams, timing: Timing | None = None,
    count_done: Callable[[int], None] | None = None,
) -> tuple[list[Pair], list[str]]:
    """Crop and JPEG-encode `specs`; return the pairs (in spec order, bad ones dropped) and bad frames.

    Frames are visited in path order and decoded once each, at the factor allowed by the most
    demanding crop cut from it (template and search may share a frame, or come from two).
    """
    timing = timing if timing is not None else Timing()
    data = params.data
    quality = [cv2.IMWRITE_JPEG_QUALITY, int(data.jpeg_quality)]
    windows = [pair_windows(s, data) for s in specs]
    uses: dict[Path, list[tuple[int, int]]] = defaultdict(list)  # frame -> (pair, 0 template / 1 search)
    for i, s in enumerate(specs):
        uses[s.template_path].append((i, 0))
        uses[s.search_path].append((i, 1))
    jpegs: list[list[np.ndarray | None]] = [[None, None] for _ in specs]
    bad: list[str] = []
    done_crops = reported = 0
    for path in sorted(uses):
        users = uses[path]
        factor = min(reduced_decode_factor(windows[i][r].scale, params.max_decode_factor) for i, r in users)
        img = read_frame(path, factor, timing, params.decoder)
        if img is None:
            bad.append(str(path))
        else:
            t0 = time.perf_counter()
            img, frame_windows = prepare_frame(img, [windows[i][r].scaled(1.0 / factor) for i, r in users])
            timing.crop += time.perf_counter() - t0
            for (i, r), window in zip(users, frame_windows):
                t0 = time.perf_counter()
                aug = specs[i].augment if r == 1 else None
                patch = crop(img, window) if aug is None else augment_crop(img, window.affine(), window.out_size, aug)
                t1 = time.perf_counter()
                ok, enc = cv2.imencode(".jpg", patch, quality)
                timing.crop += t1 - t0
                timing.encode += time.perf_counter() - t1
                jpegs[i][r] = enc.reshape(-1) if ok else None
        done_crops += len(users)
        if count_done is not None and done_crops // 2 - reported >= _PROGRESS_EVERY:
            count_done(done_crops // 2 - reported)
            reported = done_crops // 2
    if count_done is not None and len(specs) - reported > 0:
        count_done(len(specs) - reported)
    pairs = []
    for s, (tw, sw), (tj, sj) in zip(specs, windows, jpegs):
        if tj is None or sj is None:
            continue
        search_box = sw.box_to_crop(np.asarray(s.search_box))
        if s.augment is not None:
            search_box = augment_box(search_box, s.augment, sw.out_size)
        pairs.append(Pair(
            template_jpeg=tj, search_jpeg=sj,
            template_box=tw.box_to_crop(np.asarray(s.template_box)).astype(np.float32),
            search_box=search_box.astype(np.float32),
            kind=s.kind, sequence=s.sequence, search_sequence=s.search_sequence,
            frames=np.array([s.template_frame, s.search_frame], dtype=np.int32),
        ))
    return pairs, bad


# -------------------------------------------------------------------------------------------- shards


@dataclass
class ShardTask:
    index: int
    path: Path
    specs: list[PairSpec]
    params: CropParams
    attrs: dict[str, Any]
    source: str | None = None
    """The label of the run's only source; None: several, named by each pair's `label/` prefix."""


def count_sources(pairs: list[Pair], source: str | None) -> dict[str, int]:
    """Pairs per source label: the label prefix of the sequence names (`label/name`), or the only source."""
    if source is not None:
        return {source: len(pairs)} if pairs else {}
    return dict(sorted(Counter(p.sequence.split("/", 1)[0] for p in pairs).items()))


@dataclass
class ShardResult:
    index: int
    pairs: int
    kinds: Counter
    bad_frames: list[str]
    bytes: int
    timing: Timing


def run_shard(task: ShardTask, count_done: Callable[[int], None] | None = None) -> ShardResult:
    """Make and write one shard (atomically). The unit of work of a worker process."""
    timing = Timing()
    t0 = time.perf_counter()
    pairs, bad = make_pairs(task.specs, task.params, timing, count_done)
    t1 = time.perf_counter()
    attrs = {**task.attrs, "shard": task.index, "skipped_frames": json.dumps(bad),
             "sources": json.dumps(count_sources(pairs, task.source))}
    size = write_shard(task.path, pairs, attrs)
    timing.write += time.perf_counter() - t1
    timing.total += time.perf_counter() - t0
    return ShardResult(task.index, len(pairs), Counter(p.kind for p in pairs), bad, size, timing)


def _worker_init() -> None:
    """Worker processes: the main process owns Ctrl-C; OpenCV's own threads would fight the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)


def _worker_run(task: ShardTask) -> ShardResult:
    return run_shard(task, report_progress)


@contextlib.contextmanager
def _opencv_threads(n: int) -> Iterator[None]:
    old = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(old)


def run_tasks(tasks: list[ShardTask], workers: int, count_done: Callable[[int], None]) -> Iterator[ShardResult]:
    """Run shard tasks with `workers` processes (in this process for 1), yielding results as they finish;
    `count_done(n)` hears every n pairs made.

    On Ctrl-C or an error the pool is terminated; the caller removes the temp files it left.
    """
    if workers <= 1 or len(tasks) <= 1:
        with _opencv_threads(1):
            for task in tasks:
                yield run_shard(task, count_done)
        return
    # Not plain fork: a parent that has used OpenCV's thread pool (or runs rich's refresh thread) can
    # hand a locked mutex to a forked child, which then hangs forever (seen in the tests). The fork
    # server is a clean process that preloads this module, so workers still start in milliseconds.
    with contextlib.closing(run_in_pool(_worker_run, tasks, min(workers, len(tasks)), count_done,
                                        start_method="forkserver", preload=(__name__,),
                                        initializer=_worker_init)) as results:
        yield from results


# ------------------------------------------------------------------------------------------- prepare


@dataclass
class PrepareSummary:
    """What a prepare run produced (for the CLI summary, the benchmark and tests)."""

    out: Path
    pairs: int
    kinds: dict[str, int]
    shards: int
    resumed: int
    bytes: int
    seconds: float
    """Wall time of the whole run (index, sampling, writing, index.json)."""
    write_seconds: float
    """Wall time of the shard-writing phase (what pairs/s is measured over)."""
    pairs_made: int
    """Pairs written by this run (not counting resumed shards)."""
    skipped_frames: list[str]
    skipped_sequences: list[str]
    missing_sequences: list[str]
    timing: Timing
    val_sequences: list[str] = field(default_factory=list)
    """Sequences written to validation shards only (`data.val_sequences` / `val_sequence_fraction`)."""
    boxless_frames: list[str] = field(default_factory=list)
    """`groundtruth.txt:LINE: x,y,w,h` of visible frames with no usable box (never sampled)."""
    sources: list[dict[str, Any]] = field(default_factory=list)
    """index.json's `sources`: label, kind, root, split, weight, share, sequences, pairs written."""

    @property
    def bytes_per_pair(self) -> float:
        return self.bytes / max(1, self.pairs)

    @property
    def pairs_per_second(self) -> float:
        return self.pairs_made / self.write_seconds if self.write_seconds > 0 else 0.0


def _fingerprint(cfg: Config, root: Path, split: str, sources: list[Any]) -> dict[str, Any]:
    """Everything that decides the bytes of the shards: a different value means different pairs.

    One LaSOT source of weight 1 is fingerprinted as before sources existed, so folders prepared then
    still resume; otherwise every source (kind, root, split, weight) is recorded, and a stills source
    by its annotation file's digest too.
    """
    data = cfg.to_dict()["data"]
    data.pop("sources", None)  # recorded below, resolved (the config may name them relative to the cwd)
    names = sorted(q.name for src in sources for q in src.sequences)
    only = sources[0]
    if len(sources) == 1 and only.spec.kind == "lasot" and only.spec.weight == 1.0:
        return {"format_version": FORMAT_VERSION, "data": data, "source_root": str(root),
                "split": only.split, "sequences": names}
    records = [{**src.record(), **({"annotations": file_digest(src.index.json_path)} if src.stills else {})}
               for src in sources]
    return {"format_version": FORMAT_VERSION, "data": data, "source_root": str(root), "split": split,
            "sources": records, "sequences": names}


def _own_files(out: Path) -> list[Path]:
    """Files prepare writes in `out` (what --overwrite deletes; nothing else in the folder is touched)."""
    if not out.is_dir():
        return []
    names = {INDEX_NAME, CONFIG_NAME, PLAN_NAME, "preview.png"}
    return [p for p in out.iterdir() if p.is_file() and (
        p.name in names or _is_temp(p.name) or (p.name.startswith("shard-") and p.name.endswith(".h5")))]


def _remove_temps(out: Path) -> int:
    n = 0
    for p in _own_files(out):
        if _is_temp(p.name):
            p.unlink(missing_ok=True)
            n += 1
    return n


def _complete(path: Path, index: int, planned: int) -> bool:
    """A shard left by an earlier run is kept only if it opens and is the shard this run would write."""
    try:
        with ShardReader(path) as r:
            return int(r.attrs.get("shard", -1)) == index and len(r) <= planned
    except (SiamtoolError, OSError, KeyError):
        return False


def estimate_bytes(pairs: int, data: DataConfig) -> int:
    """A generous disk estimate for `pairs` stored pairs."""
    px = data.template_size ** 2 + search_crop_size(data) ** 2
    return int(pairs * (px * BYTES_PER_CROP_PIXEL + 512))


def format_bytes(n: float) -> str:
    """A byte count in the unit that keeps two significant digits visible: 812 kB, 34.5 MB, 1.2 GB."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def check_disk_space(out: Path, pairs: int, data: DataConfig) -> None:
    need = estimate_bytes(pairs, data)
    free = shutil.disk_usage(out).free
    if free < need:
        raise SiamtoolError(f"{out}: about {format_bytes(need)} needed for {pairs} pairs but only "
                            f"{format_bytes(free)} free; free some space or choose another --out")


_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def _is_disk_full(e: BaseException) -> bool:
    """ENOSPC/EDQUOT, also from HDF5, whose OSError keeps the errno only in its text on some builds."""
    return isinstance(e, OSError) and (e.errno in _DISK_FULL or "No space left on device" in str(e)
                                       or "Disk quota exceeded" in str(e) or "errno = 28," in str(e))


def _disk_full_error(out: Path, chunks: list[list[PairSpec]], data: DataConfig) -> SiamtoolError:
    """The one line for a full disk: where, what is kept, what is still needed, and how to go on."""
    left = [i for i in range(len(chunks)) if not (out / shard_name(i)).is_file()]
    done = [i for i in range(len(chunks)) if i not in left]
    left_pairs = sum(len(chunks[i]) for i in left)
    need = estimate_bytes(left_pairs, data)
    if done:  # what the finished shards actually took per pair beats the estimate (q100 JPEGs exceed it)
        per_pair = sum((out / shard_name(i)).stat().st_size for i in done) / max(1, sum(len(chunks[i]) for i in done))
        need = max(need, int(per_pair * left_pairs))
    try:
        free = format_bytes(shutil.disk_usage(out).free)
    except OSError:
        free = "?"
    return SiamtoolError(
        f"{out}: disk full ({free} free); about {format_bytes(need)} more is needed for the {len(left)} "
        f"shard(s) still to write; the {len(chunks) - len(left)} complete shard(s) are kept: free some space "
        "(or choose another --out) and run the same command again to resume")


# ------------------------------------------------------------------------------------------ sources

STILLS = "stills"
"""The kind of the still-image source (`siamtool.data.stills`)."""


class _Renamed:
    """A sequence seen under the name `label/name`, so names stay unique when several sources are mixed
    (the sampler seeds, pools and stores pairs by name)."""

    def __init__(self, seq: Any, name: str) -> None:
        self._seq, self.name = seq, name

    def __getattr__(self, key: str) -> Any:
        return getattr(self._seq, key)


@dataclass
class Source:
    """One source of a prepare run: the spec, its label, the split read and what its root holds."""

    spec: SourceSpec
    label: str
    """Its name in index.json and, with several sources, the prefix of its sequence names (`label/...`)."""
    root: Path
    split: str | None
    """The split read (None for stills, which have none)."""
    index: Any
    """A `lasot.Index` (or the datasets API's Index) for video kinds, a `stills.StillsIndex` for stills."""
    sequences: list[Any]
    """The index's sequences (video) or usable boxes (stills), renamed `label/name` with several sources."""

    @property
    def stills(self) -> bool:
        return isinstance(self.index, StillsIndex)

    @property
    def units(self) -> int:
        """What the pair budget counts: sequences, or still images with a usable box."""
        return len({b.image for b in self.sequences}) if self.stills else len(self.sequences)

    def record(self) -> dict[str, Any]:
        """What index.json and the fingerprint say about the source."""
        return {"label": self.label, "kind": self.spec.kind, "root": str(self.root), "split": self.split,
                "weight": self.spec.weight}


def index_source(spec: SourceSpec, split: str | None, strict: bool) -> Any:
    """The seam between prepare and the dataset readers: a source's kind, root and split -> its index.

    lasot (as before) and stills are read here; every other kind (or alias: uav123, otb2013, ...) goes to
    `siamtool.data.datasets.index_dataset`. A split that publishes only the first box (GOT-10k test,
    TrackingNet TEST) has nothing to sample and is refused.
    """
    root = Path(spec.root).expanduser().resolve()
    if spec.kind == STILLS:
        if split not in (None, "all"):
            raise ConfigError(f"source {spec}: still images have no split (got {split!r}); write stills:ROOT")
        return index_stills(root, require_images=True, strict=strict)
    if spec.kind == "lasot":
        return index_lasot(root, split or "train", require_images=True, strict=strict)
    index = index_dataset(spec.kind, root, split, require_images=True, strict=strict)
    if index.sequences and all(q.gt_frames is not None for q in index.sequences):
        raise ConfigError(f"source {spec}: split {index.split!r} publishes only each sequence's first box, nothing "
                          "to sample pairs from; use a split with full annotations (train)")
    return index


def resolve_sources(specs: list[SourceSpec], split: str, strict: bool) -> list[Source]:
    """Index every source; a source without a split reads `split` (stills: none). Labels are the kind,
    then kind2, kind3, ... for a kind given again."""
    if not specs:
        raise ConfigError("no source to prepare: pass --data KIND:ROOT[:SPLIT][@WEIGHT] (or --lasot DIR), "
                          "or set data.sources in the --config")
    seen: Counter = Counter()
    sources = []
    for spec in specs:
        _check_kind(spec)
        seen[spec.kind] += 1
        label = spec.kind if seen[spec.kind] == 1 else f"{spec.kind}{seen[spec.kind]}"
        index = index_source(spec, _split_of(spec, split), strict)
        items = index.boxes if isinstance(index, StillsIndex) else list(index.sequences)
        if len(specs) > 1:
            items = [dataclasses.replace(b, name=f"{label}/{b.name}") if isinstance(index, StillsIndex)
                     else _Renamed(b, f"{label}/{b.name}") for b in items]
        read = None if isinstance(index, StillsIndex) else str(getattr(index, "split", _split_of(spec, split)))
        sources.append(Source(spec, label, Path(spec.root).expanduser().resolve(), read, index, items))
    return sources


def _check_kind(spec: SourceSpec) -> None:
    if spec.kind in (STILLS, "lasot"):
        return
    try:
        resolve_kind(spec.kind)
    except DatasetError:
        raise ConfigError(f"source {spec}: unknown dataset kind {spec.kind!r}; use {', '.join((*KINDS, STILLS))} "
                          f"(or {', '.join(ALIASES)})") from None


def _split_of(spec: SourceSpec, split: str) -> str | None:
    """The split a source reads: its own, else prepare's `split` where the dataset has that split (lasot:
    always), else the dataset's default (lasot_ext: extension; an alias like uav123 implies its own)."""
    if spec.split is not None or spec.kind == STILLS:
        return spec.split
    if spec.kind == "lasot":
        return split
    kind, implied = resolve_kind(spec.kind)
    return split if implied is None and (split == "all" or split in splits(kind)) else None


def source_totals(sources: list[Source], pairs_per_sequence: int) -> list[int]:
    """Pairs of each source: the run makes `pairs_per_sequence` x all the sequences and still images of
    all sources, and source i gets weight_i / sum(weights) of them (the mixing ratios OSTrack and
    pytracking sample datasets by), rounded by largest remainder so they add up exactly. One source
    gets exactly `pairs_per_sequence` per sequence."""
    total = pairs_per_sequence * sum(s.units for s in sources)
    weights = [Fraction(s.spec.weight) for s in sources]
    quotas = [total * w / sum(weights) for w in weights]
    counts = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(sources)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in by_remainder[:total - sum(counts)]:
        counts[i] += 1
    return counts


def _round(x: float) -> int:
    return int(math.floor(x + 0.5))


@dataclass
class Plan:
    """What a prepare run will write: the sampled pairs cut into shards, and what decides their bytes."""

    root: Path
    """The first LaSOT source's root (else the first source's): recorded for `eval` (`siamtool.workspace`)."""
    split: str
    sources: list[Source]
    train_sequences: list[Any]
    val_sequences: list[Any]
    chunks: list[list[PairSpec]]
    """The pairs of each shard, in shard order (training shards first)."""
    splits: list[str]
    """"train" or "val", per shard."""
    skipped: list[str]
    """Sequences sampling skipped (no usable frames)."""
    fingerprint: dict[str, Any]
    source_pairs: dict[str, int] = field(default_factory=dict)
    """Pairs planned per source label."""

    @property
    def total_pairs(self) -> int:
        return sum(len(c) for c in self.chunks)

    @property
    def index_skipped(self) -> list[str]:
        return [line for s in self.sources for line in s.index.skipped]

    @property
    def missing(self) -> list[str]:
        prefix = len(self.sources) > 1
        return [f"{s.label}/{m}" if prefix else m for s in self.sources if not s.stills for m in s.index.missing]

    def boxless_lines(self) -> list[str]:
        return [line for s in self.sources if not s.stills for line in s.index.boxless_lines()]


def prepare_shards(
    lasot: str | Path | None, out: str | Path, cfg: Config, split: str = "train", workers: int = 1,
    overwrite: bool = False, strict: bool = False, reporter: Reporter = SILENT,
    max_decode_factor: int = 8, decoder: str = "auto",
) -> PrepareSummary:
    """Write the shards of `split` under `out` (see the module docstring); resumes what exists.

    The sources are `lasot` (a LaSOT root, read as `lasot:ROOT`) followed by `cfg.data.sources`; a
    source without its own split reads `split`. `cfg.data` decides the pairs (set
    `cfg.data.pairs_per_sequence` for --pairs-per-sequence). Skipped sequences, resumed shards and the
    write progress (task "pairs") go to `reporter`.
    """
    start = time.perf_counter()
    out = Path(out)
    specs = ([SourceSpec("lasot", str(lasot))] if lasot is not None else []) + list(cfg.data.sources)
    plan = plan_shards(resolve_sources(specs, split, strict), split, cfg, reporter)
    if out.exists() and not out.is_dir():
        raise SiamtoolError(f"--out {out}: exists and is not a folder; choose a folder for the shards")
    out.mkdir(parents=True, exist_ok=True)
    try:
        with exclusive_lock(out / LOCK_NAME, wait=False):
            summary = _write(out, cfg, plan, workers, overwrite, reporter,
                             CropParams(cfg.data, max_decode_factor, decoder), start)
    except LockHeld as e:
        raise SiamtoolError(f"--out {out}: another `siamtool prepare` is writing there ({e.holder or 'pid unknown'});"
                            " wait for it to finish, or choose another --out") from None
    summary.boxless_frames = plan.boxless_lines()
    return summary


def _report_index(index: Any, root: Path, split: str, reporter: Reporter) -> None:
    """Say what the split leaves out before anything is sampled: skipped, missing and boxless sequences."""
    for line in index.skipped:
        reporter.warning(line, label="skipped sequence")
    if isinstance(index, StillsIndex):
        reporter.status(f"{index.json_path}: {len(index.boxes)} usable boxes in {index.images} images "
                        f"({index.small} too small to be a target)")
        return
    if index.missing:
        reporter.warning(f"{len(index.missing)} sequence(s) of split {split!r} not under {root} "
                         f"(e.g. {', '.join(index.missing[:3])})", label=None)
    kept = len(index.sequences) + len(index.skipped)
    if split != "all" and kept * 2 < index.on_disk:
        reporter.warning(f"split {split!r} keeps {kept} of the {index.on_disk} sequences under {root} (the others "
                         "are not in it); pass --split all to use every sequence there")
    boxless = index.boxless_lines()
    if boxless:
        reporter.warning(f"{len(boxless)} visible frame(s) have no usable ground-truth box (NaN or a size <= 0) and "
                         f"are never sampled, e.g. {boxless[0]}")


def _sample_source(src: Source, total: int, val_names: set[str], data: DataConfig) -> tuple[list, list, list]:
    """(training pairs, validation pairs, skipped lines) of one source's `total` pairs; a video source's
    validation sequences get their share of them."""
    if src.stills:  # a box of an image in validation and another in training would leak: stills only train
        return sample_still_pairs(src.sequences, data.seed, data.neg_prob, total), [], []
    train = [q for q in src.sequences if q.name not in val_names]
    val = [q for q in src.sequences if q.name in val_names]
    n_train = _round(total * len(train) / max(1, len(src.sequences)))
    sampled = sample_pairs(train, data, total=n_train)
    val_sampled = sample_pairs(val, data, total=total - n_train) if val else None
    return (sampled.pairs, val_sampled.pairs if val_sampled else [],
            sampled.skipped + (val_sampled.skipped if val_sampled else []))


def _shuffled(pairs: list[PairSpec], seed: int, several: bool) -> list[PairSpec]:
    """Mix the sources' pairs (each list is shuffled already; one source is kept as it is)."""
    if not several:
        return pairs
    order = np.random.default_rng([seed, 0x50C]).permutation(len(pairs))
    return [pairs[i] for i in order]


def plan_shards(sources: list[Source], split: str, cfg: Config, reporter: Reporter = SILENT) -> Plan:
    """Sample the pairs of the training and validation sequences and cut them into shards (no I/O)."""
    data = cfg.data
    for src in sources:
        _report_index(src.index, src.root, src.split or "all", reporter)
    videos = [q for src in sources if not src.stills for q in src.sequences]
    where = ", ".join(str(src.root) for src in sources)
    train_seqs, val_seqs = split_sequences(videos, data, where) if videos else ([], [])
    val_names = {q.name for q in val_seqs}
    train_pairs, val_pairs, skipped, per_source = [], [], [], {}
    for src, total in zip(sources, source_totals(sources, data.pairs_per_sequence)):
        t, v, sk = _sample_source(src, total, val_names, data)
        train_pairs += t
        val_pairs += v
        skipped += sk
        per_source[src.label] = len(t) + len(v)
    for line in skipped:
        reporter.warning(line, label="skipped sequence")
    if not train_pairs:
        raise SiamtoolError(f"{where}: no pairs could be sampled for split {split!r} "
                            f"({len(train_seqs)} usable training sequences)")
    if val_seqs:
        reporter.status(f"validation: {len(val_seqs)} sequences in their own shards, never in training "
                        f"({', '.join(sorted(s.name for s in val_seqs)[:6])}{', ...' if len(val_seqs) > 6 else ''})")
    several, per = len(sources) > 1, data.pairs_per_shard
    train_pairs, val_pairs = _shuffled(train_pairs, data.seed, several), _shuffled(val_pairs, data.seed + 1, several)
    chunks = [train_pairs[i:i + per] for i in range(0, len(train_pairs), per)]
    val_chunks = [val_pairs[i:i + per] for i in range(0, len(val_pairs), per)]
    root = next((src.root for src in sources if src.spec.kind == "lasot"), sources[0].root)
    return Plan(root, split, sources, train_seqs, val_seqs, chunks + val_chunks,
                ["train"] * len(chunks) + ["val"] * len(val_chunks), skipped,
                _fingerprint(cfg, root, split, sources), per_source)


def _check_resumable(out: Path, plan: Plan, overwrite: bool) -> None:
    """Refuse a folder holding shards of other settings (or of an unknown run); --overwrite clears it.

    A folder whose run stopped before its first shard (a crash, Ctrl-C, a bad value) holds settings but no
    shard: new settings are accepted there, since nothing prepared would be mixed with them.
    """
    if overwrite:
        for p in _own_files(out):
            p.unlink(missing_ok=True)
    plan_path = out / PLAN_NAME
    if plan_path.is_file() and not any(p.name.startswith("shard-") for p in _own_files(out)):
        for p in (plan_path, out / CONFIG_NAME):
            p.unlink(missing_ok=True)
    if plan_path.is_file():
        try:
            old = json.loads(plan_path.read_text())["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigError(f"{plan_path}: unreadable; run with --overwrite to start over") from None
        changes = [str(d) for d in differences(old, plan.fingerprint)]
        if changes:
            raise ConfigError(f"{out} holds shards prepared with different settings ({'; '.join(changes[:3])}); "
                              "rerun with the same settings to resume, --overwrite to start over, or another --out")
    elif any(p.name.startswith("shard-") for p in _own_files(out)):
        raise ConfigError(f"{out} holds shards of an unknown run (no {PLAN_NAME}); use --overwrite or another --out")


def _present_shards(out: Path, chunks: list[list[PairSpec]], reporter: Reporter) -> set[int]:
    """The shards an earlier run finished (kept); damaged or foreign ones are deleted to be written again."""
    removed = _remove_temps(out)
    present = set()
    for i in range(len(chunks)):
        path = out / shard_name(i)
        if path.is_file():
            if _complete(path, i, len(chunks[i])):
                present.add(i)
            else:
                reporter.warning(f"{path}: unreadable or not from this run, writing it again", label=None)
                path.unlink()
    if present or removed:
        reporter.status(f"resumed: {len(present)}/{len(chunks)} shards present"
                        + (f" ({removed} unfinished temp file(s) removed)" if removed else ""))
    return present


def _write(out: Path, cfg: Config, plan: Plan, workers: int, overwrite: bool, reporter: Reporter,
           params: CropParams, start: float) -> PrepareSummary:
    """The part of `prepare_shards` that owns `out` (run under its lock): check, resume, write, index."""
    _check_resumable(out, plan, overwrite)
    chunks = plan.chunks
    present = _present_shards(out, chunks, reporter)
    todo = [i for i in range(len(chunks)) if i not in present]
    if todo:
        check_disk_space(out, sum(len(chunks[i]) for i in todo), cfg.data)
        # Readers must never see an index for a folder that is missing shards.
        (out / INDEX_NAME).unlink(missing_ok=True)
    attrs = {"config": yaml.safe_dump(cfg.to_dict(), sort_keys=False), "siamtool_version": __version__,
             "source_root": str(plan.root)}
    single = plan.sources[0].label if len(plan.sources) == 1 else None
    tasks = [ShardTask(i, out / shard_name(i), chunks[i], params, attrs, single) for i in todo]
    timing = Timing()
    made = 0
    t_write = time.perf_counter()
    try:
        write_json_atomic(out / PLAN_NAME, {"fingerprint": plan.fingerprint, "shards": len(chunks),
                                            "pairs": plan.total_pairs})
        if not (out / CONFIG_NAME).is_file():
            cfg.save(out / CONFIG_NAME)
        if todo:
            reporter.progress("pairs", completed=sum(len(chunks[i]) for i in present), total=plan.total_pairs)
        # closing(): on Ctrl-C the pool is terminated *before* its temp files are removed.
        with contextlib.closing(run_tasks(tasks, workers, lambda n: reporter.progress("pairs", advance=n))) as results:
            for result in results:
                timing.add(result.timing)
                made += result.pairs
        now = time.perf_counter()
        return _finish(out, cfg, plan, made, now - start, now - t_write, timing, len(present))
    except BaseException as e:
        _remove_temps(out)
        if _is_disk_full(e):
            raise _disk_full_error(out, chunks, cfg.data) from None
        raise


def split_sequences(sequences: list[Any], data: DataConfig, root: Path) -> tuple[list[Any], list[Any]]:
    """(training, validation) sequences: `data.val_sequences` by name, else a seeded
    `data.val_sequence_fraction` of them, else none. Pairs of the two groups are sampled separately
    (negatives too), so no frame of a validation sequence ever reaches a training shard."""
    names = sorted(s.name for s in sequences)
    if data.val_sequences:
        unknown = sorted(set(data.val_sequences) - set(names))
        if unknown:
            # with several --data sources every name carries its source's label ("lasot/person-103")
            labelled = [n for n in names if n.split("/", 1)[-1] == unknown[0] and n != unknown[0]]
            hint = f" (with several sources the names carry the source label: {labelled[0]})" if labelled else ""
            raise ConfigError(f"data.val_sequences: {', '.join(unknown[:5])} not among the {len(names)} sequences "
                              f"of {root}{hint}; fix the names or remove them from the config")
        val = set(data.val_sequences)
    elif data.val_sequence_fraction > 0 and len(names) >= 2:
        k = min(len(names) - 1, max(1, round(data.val_sequence_fraction * len(names))))
        rng = np.random.default_rng([data.seed, 0x7A1])
        val = {str(n) for n in rng.choice(names, size=k, replace=False)}
    else:
        return list(sequences), []
    if len(val) >= len(names):
        raise ConfigError("data.val_sequences names every sequence: keep at least one for training")
    return [s for s in sequences if s.name not in val], [s for s in sequences if s.name in val]


def _read_back(path: Path, split: str, single: str | None) -> tuple[dict[str, Any], Counter, list[str]]:
    """A shard's index.json entry (file, pairs, split, pairs per kind and per source), kinds and bad frames.
    A shard written before sources were recorded belongs to the run's only source."""
    with ShardReader(path) as r:
        n = len(r)
        kinds = Counter(int(k) for k in r.kinds())
        bad = json.loads(r.attrs.get("skipped_frames", "[]"))
        raw = r.attrs.get("sources")
    by_source = json.loads(raw) if raw else ({single: n} if single is not None and n else {})
    entry = {"file": path.name, "pairs": n, "split": split,
             "kinds": {KIND_NAMES[k]: int(kinds[k]) for k in sorted(kinds)}, "sources": by_source}
    return entry, kinds, bad


def _finish(out: Path, cfg: Config, plan: Plan, made: int, seconds: float, write_seconds: float, timing: Timing,
            resumed: int) -> PrepareSummary:
    """Read every shard's counts back (so a resumed run reports the whole output) and write index.json."""
    chunks, splits, root = plan.chunks, plan.splits, plan.root
    skipped_sequences = plan.index_skipped + plan.skipped
    val_sequences = sorted(s.name for s in plan.val_sequences)
    single = plan.sources[0].label if len(plan.sources) == 1 else None
    shards, kinds, bad, per_source = [], Counter(), [], Counter()
    total_bytes = 0
    for i in range(len(chunks)):
        entry, shard_kinds, shard_bad = _read_back(out / shard_name(i), splits[i], single)
        shards.append(entry)
        kinds.update(shard_kinds)
        per_source.update(entry["sources"])
        bad += shard_bad
        total_bytes += (out / shard_name(i)).stat().st_size
    pairs = sum(s["pairs"] for s in shards)
    by_kind = {KIND_NAMES[k]: int(kinds.get(k, 0)) for k in KIND_NAMES}
    weights = sum(src.spec.weight for src in plan.sources)
    sources = [{**src.record(), "share": src.spec.weight / weights,
                **({"images": src.units, "boxes": len(src.sequences)} if src.stills else {"sequences": src.units}),
                "pairs": int(per_source.get(src.label, 0))} for src in plan.sources]
    write_json_atomic(out / INDEX_NAME, {
        "format_version": FORMAT_VERSION, "siamtool_version": __version__, "source_root": str(root),
        "config": cfg.to_dict(), "template_size": cfg.data.template_size,
        "search_crop_size": search_crop_size(cfg.data), "shards": shards, "pairs": pairs,
        "split": plan.split, "sources": sources, "kinds": by_kind, "bytes": total_bytes,
        "skipped_frames": sorted(set(bad)), "skipped_sequences": skipped_sequences, "val_sequences": val_sequences,
    })
    return PrepareSummary(out, pairs, by_kind, len(chunks), resumed, total_bytes, seconds, write_seconds, made,
                          sorted(set(bad)), skipped_sequences, plan.missing, timing, val_sequences, sources=sources)
