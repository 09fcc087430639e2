"""Cached features of the frozen backbone: head training at the speed of the heads.

With `model.freeze_backbone` the backbone's output for a given crop never changes during training, yet
a plain training step recomputes it for every pair, every epoch: on a CPU that is ~88 % of the step
(`benchmarks/train_speed.py`). `train.feature_cache` removes that cost:

1. `build_feature_cache` renders `train.cache_views` jittered views of every training pair with the
   normal training augmentation (`train.augment`: search-window shift and scale jitter, photometric
   jitter, drawn by the same `plan_pairs` / `render_pairs` as the streaming loader, seeded per view and
   pair), and the validation loader's fixed geometric jitter of every validation pair;
2. it runs the backbone on them once (onnxruntime on CPU, where it is several times faster than eager
   PyTorch for these networks; PyTorch on CUDA) and stores the feature maps as float16 in HDF5 files
   next to the shards (`cache_dir`: a folder per crop and jitter setting), one file per split and view,
   each written to a temp name and renamed: an interrupted build resumes at the first missing view, and a
   file whose fingerprint (shards, backbone weights, crop and jitter settings) does not match is rebuilt;
3. `cached_loader_factory` then feeds the trainer batches whose `template` and `search` hold feature
   maps instead of images; `SiamTracker.features` passes such maps through, so the neck, heads, losses,
   validation and checkpoints are exactly those of image training.

The jitter is still there, but drawn from a finite set of views instead of fresh each epoch: with
4 views and ~5 epochs each view is seen about once or twice, which the training log and MODEL_CARD.md
report as "pair presentations".
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from siamtool.config import Config
from siamtool.data.augment import plan_pairs, render_pairs
from siamtool.data.shards import INDEX_NAME, KIND_POSITIVE, ShardIndex, ShardReader, load_shard_index
from siamtool.data.stream import VAL_SALT, Batch, Part, decode_jpegs, split_parts
from siamtool.errors import DatasetError
from siamtool.fileio import atomic_path
from siamtool.models.siamese import feature_fingerprint
from siamtool.onnx_format import onnx_session
from siamtool.provenance import file_digest, fingerprint
from siamtool.reporting import SILENT, Reporter

CACHE_DIR = "features"
COLUMNS = ("template", "search", "search_box", "kind")
"""What a view file holds per pair: backbone maps of both crops, the jittered search box, the pair kind."""
FORMAT = 1


def cache_fingerprint(shards_dir: Path, cfg: Config, weights: float) -> dict[str, Any]:
    """What decides the cached bytes: the shards, the backbone and its weights, crops and jitter."""
    return {"format": FORMAT, "shards": file_digest(shards_dir / INDEX_NAME, 16),
            "backbone": cfg.model.backbone, "weights": f"{weights:.6e}", "model_weights": cfg.model.weights,
            "data": fingerprint(cfg.to_dict()["data"]), "augment": fingerprint(cfg.to_dict()["train"]["augment"]),
            "seed": cache_seed(cfg)}


def cache_seed(cfg: Config) -> int:
    """The seed of the cached views' jitter: `train.cache_seed`, else `train.seed`."""
    return cfg.train.seed if cfg.train.cache_seed is None else cfg.train.cache_seed


def cache_dir(shards_dir: str | Path, cfg: Config) -> Path:
    """One folder per setting that shapes the views (crops, jitter, the cache seed, the backbone's
    weights): two trainings with other jitter on the same shards, even at the same time, never read or
    overwrite each other's views. (One shared folder did: two runs started together trained on the same
    views, whichever was written last.)"""
    d = cfg.to_dict()
    key = fingerprint({"data": d["data"], "augment": d["train"]["augment"], "seed": cache_seed(cfg),
                       "model_weights": cfg.model.weights}, 12)
    return Path(shards_dir) / CACHE_DIR / cfg.model.backbone / key


def _other_caches(directory: Path) -> str | None:
    """A line about the caches of other settings beside `directory` (they cost disk), or None."""
    others = [p for p in directory.parent.iterdir() if p.is_dir() and p != directory]
    if not others:
        return None
    size = sum(f.stat().st_size for p in others for f in p.glob("*.h5"))
    return (f"feature cache: {len(others)} cache(s) of other jitter or crop settings in {directory.parent} "
            f"({size / 1e9:.1f} GB): delete those no run needs")


def view_file(directory: Path, split: str, view: int) -> Path:
    return directory / f"{split}-view{view:02d}.h5"


# ------------------------------------------------------------------------------------- backbone


class BackboneRunner:
    """The frozen backbone as a batch function (B,3,H,W) 0..255 -> float16 numpy (B,C,h,w).

    On CPU it runs through onnxruntime (the backbone exported once per input size, into a temp folder);
    on CUDA, or without onnxruntime, through PyTorch under `inference_mode`.
    """

    def __init__(self, backbone: torch.nn.Module, device: torch.device, threads: int | None = None) -> None:
        self.backbone = backbone.eval()
        self.device = device
        self.threads = threads or torch.get_num_threads()
        self.sessions: dict[int, Any] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="siamtool-backbone-")
        try:
            import onnxruntime  # noqa: F401

            self.use_ort = device.type == "cpu"
        except ImportError:
            self.use_ort = False

    def _session(self, size: int):
        if size not in self.sessions:
            path = Path(self._tmp.name) / f"backbone-{size}.onnx"
            dummy = torch.zeros(2, 3, size, size)
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # tracer chatter; the parity test proves the graph right
                torch.onnx.export(self.backbone.cpu(), (dummy,), str(path), input_names=["x"], output_names=["f"],
                                  dynamic_axes={"x": {0: "b"}, "f": {0: "b"}}, opset_version=17, dynamo=False)
            self.backbone.to(self.device)
            self.sessions[size] = onnx_session(path, ["CPUExecutionProvider"], self.threads)
        return self.sessions[size]

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        if self.use_ort:
            (f,) = self._session(int(images.shape[-1])).run(None, {"x": images.float().cpu().numpy()})
            return f.astype(np.float16)
        with torch.inference_mode():
            return self.backbone(images.to(self.device).float()).half().cpu().numpy()

    def close(self) -> None:
        self._tmp.cleanup()


# ---------------------------------------------------------------------------------------- build


@dataclass
class CacheSummary:
    directory: Path
    train_items: int
    val_items: int
    built: int
    """View files written by this call (0 = everything was already cached)."""


def _split_parts(shards_dir: Path, cfg: Config):
    index = load_shard_index(shards_dir)
    train, val = split_parts(index.shards, cfg.train.val_fraction, index.splits)
    return index, train, val


def walk_views(index: ShardIndex, parts: list[Part], cfg: Config, view: int, jitter: bool,
               batch_size: int = 64) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]]:
    """Every pair of `parts` exactly once, rendered as training renders it: (templates, searches,
    search boxes, kinds) per batch. `jitter`: training jitter seeded by (seed, view, pair), photometric
    included; else validation's geometry-only jitter. Pairs whose crops do not decode are skipped."""
    salt = view if jitter else VAL_SALT
    for part in parts:
        rows = list(part.rows)
        with ShardReader(index.shards[part.shard][0]) as reader:
            for b in range(0, len(rows), batch_size):
                chunk = rows[b:b + batch_size]
                pairs = reader.read_many(chunk)
                z = decode_jpegs([torch.from_numpy(p.template_jpeg) for p in pairs], index.template_size)
                x = decode_jpegs([torch.from_numpy(p.search_jpeg) for p in pairs], index.search_crop_size)
                keep = [i for i in range(len(pairs)) if z[i] is not None and x[i] is not None]
                if not keep:
                    continue
                pairs = [pairs[i] for i in keep]
                rngs = [np.random.default_rng([cache_seed(cfg), salt, part.shard, chunk[i]]) for i in keep]
                plan = plan_pairs(np.stack([p.template_box for p in pairs]), np.stack([p.search_box for p in pairs]),
                                  index.search_crop_size, cfg, rngs, photometric=jitter).to_tensors()
                zt, xt = render_pairs(torch.stack([z[i] for i in keep]), torch.stack([x[i] for i in keep]), plan, cfg)
                yield zt, xt, plan["search_box"].numpy(), np.array([p.kind for p in pairs], np.uint8)


def _write_view(path: Path, arrays: dict[str, np.ndarray], fingerprint: dict[str, Any], view: int) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
        f.attrs["fingerprint"] = json.dumps(fingerprint, sort_keys=True)
        f.attrs["view"] = view


def _is_current(path: Path, fingerprint: dict[str, Any]) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return json.loads(f.attrs["fingerprint"]) == fingerprint
    except (OSError, KeyError, ValueError):
        return False


def build_feature_cache(shards_dir: str | Path, cfg: Config, model: Any, device: torch.device | str = "cpu",
                        reporter: Reporter = SILENT) -> CacheSummary:
    """Make sure every view file of `cfg` exists and is current (see the module docstring).

    `model` is the `SiamTracker` being trained (its frozen backbone makes the features); pairs count on
    the progress task "feature cache" of `reporter`, which also gets one status line per file written.
    """
    shards_dir = Path(shards_dir)
    device = torch.device(device)
    index, train_parts, val_parts = _split_parts(shards_dir, cfg)
    n_train = sum(len(p.rows) for p in train_parts)
    n_val = sum(len(p.rows) for p in val_parts)
    fingerprint = cache_fingerprint(shards_dir, cfg, feature_fingerprint(model))
    directory = cache_dir(shards_dir, cfg)
    directory.mkdir(parents=True, exist_ok=True)
    if (others := _other_caches(directory)) is not None:
        reporter.status(others)
    jobs = [("train", v, n_train) for v in range(cfg.train.cache_views)] + ([("val", 0, n_val)] if n_val else [])
    with _build_lock(directory, reporter):
        for stale in directory.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        todo = [(s, v, n) for s, v, n in jobs if not _is_current(view_file(directory, s, v), fingerprint)]
        total, done = sum(n for *_, n in todo), 0
        runner = BackboneRunner(model.backbone, device) if todo else None
        try:
            for split, view, _ in todo:
                cols: dict[str, list[np.ndarray]] = {k: [] for k in COLUMNS}
                parts = train_parts if split == "train" else val_parts
                for z, x, box, kind in walk_views(index, parts, cfg, view, jitter=split == "train"):
                    cols["template"].append(runner(z))  # type: ignore[misc]
                    cols["search"].append(runner(x))  # type: ignore[misc]
                    cols["search_box"].append(box.astype(np.float32))
                    cols["kind"].append(kind)
                    done += len(kind)
                    reporter.progress("feature cache", completed=done, total=total)
                arrays = {k: np.concatenate(v) for k, v in cols.items()}
                _write_view(view_file(directory, split, view), arrays, fingerprint, view)
                reporter.status(f"feature cache: {split} view {view + 1} ({len(arrays['kind']):,} pairs) written")
        finally:
            if runner is not None:
                runner.close()
    return CacheSummary(directory, n_train * cfg.train.cache_views, n_val, len(todo))


@contextlib.contextmanager
def _build_lock(directory: Path, reporter: Reporter) -> Iterator[None]:
    """One builder per cache folder: a second run on the same settings (seeds of a study started together,
    sharing `train.cache_seed`) waits, then finds the views current, instead of deleting the first one's
    temp files as stale and building the same views again. An advisory lock (fcntl): where there is none
    (Windows) runs started together may build twice."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(directory / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            reporter.status(f"feature cache: another run is building {directory}; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------- loading


_LOADED: dict[tuple[tuple[str, int, int], ...], dict[str, np.ndarray]] = {}
"""`load_views`' arrays by (file, mtime, size) of their view files: both splits of the cache in use."""


def load_views(files: list[Path]) -> dict[str, np.ndarray]:
    """All view files of a split, concatenated in memory (kept for the process: every epoch reuses it).

    Each column is allocated once at its full length and every file is read straight into its slice:
    reading the files and then concatenating held the cache twice at the peak (12.5 GB for a 6.4 GB
    cache), which is what stopped two trainings sharing one machine. Both splits of one cache are kept:
    training and validation alternate every epoch, and keeping only the last one read the 7 GB of the
    shipped recipe's training views again each epoch (half a minute). Another cache's arrays, or files
    rewritten since (a rebuilt view), are dropped first, so a second run in one process neither doubles
    the memory nor trains on stale views."""
    stats = []
    for f in files:
        if not f.is_file():
            raise DatasetError(f"{f}: feature cache file missing; run `siamtool train` again to rebuild it")
        stats.append(f.stat())
    key = tuple((str(f), st.st_mtime_ns, st.st_size) for f, st in zip(files, stats))
    if key not in _LOADED:
        folders, paths = {str(Path(f).parent) for f in files}, {str(f) for f in files}
        for old in [k for k in _LOADED if any(str(Path(p).parent) not in folders or p in paths for p, _, _ in k)]:
            del _LOADED[old]
        counts = []
        for f in files:
            with h5py.File(f, "r") as h:
                counts.append(len(h[COLUMNS[0]]))
                layout = {k: (h[k].shape[1:], h[k].dtype) for k in COLUMNS}
        data = {k: np.empty((sum(counts), *shape), dtype) for k, (shape, dtype) in layout.items()}
        start = 0
        for f, n in zip(files, counts):
            with h5py.File(f, "r") as h:
                for k in COLUMNS:
                    if n:
                        h[k].read_direct(data[k], dest_sel=np.s_[start:start + n])
            start += n
        _LOADED[key] = data
    return _LOADED[key]


class CachedLoader:
    """The batches of one rank over cached features, under the trainer's `LoaderFactory` contract.

    Training: full batches from this rank's batch `start_batch` on, counted from the start of training
    (epochs are pair counts, see trainer.py), to the end of the epoch that batch is in (the trainer asks
    again for the next one, so `list()` of a call is one epoch or what is left of it): item j of rank r's
    batch b is item ``g = (b * world_size + r) * batch_size + j`` of the concatenated passes over all
    views, pass p a permutation seeded by (train.seed, p), so every view comes once per pass and a resume
    is exact on any epoch boundary. Validation walks the validation view in order, `train.val_samples`
    items.
    """

    def __init__(self, data: dict[str, np.ndarray], cfg: Config, split: str, epoch: int, rank: int,
                 world_size: int, start_batch: int, device: torch.device) -> None:
        del epoch  # the position says which epoch; validation is the same every epoch
        self.n = len(data["kind"])
        self.data = data
        self.device = device
        self.batch_size = cfg.train.batch_size
        self.split = split
        self.seed = cfg.train.seed
        self.rank, self.world_size, self.start = rank, world_size, start_batch
        rank_batch = self.batch_size * world_size
        epoch_of_start = start_batch * rank_batch // cfg.train.samples_per_epoch
        self.stop = max(start_batch + 1, math.ceil((epoch_of_start + 1) * cfg.train.samples_per_epoch / rank_batch))
        self.order = (np.arange(self.n)[rank::world_size][: math.ceil(cfg.train.val_samples / world_size)]
                      if split != "train" else np.zeros(0, np.int64))

    def __len__(self) -> int:
        if self.split == "train":
            return self.stop - self.start
        return math.ceil(len(self.order) / self.batch_size)

    def _train_batches(self) -> Iterator[np.ndarray]:
        perms: dict[int, np.ndarray] = {}
        b = self.start
        while b < self.stop:
            g = (b * self.world_size + self.rank) * self.batch_size + np.arange(self.batch_size)
            passes, at = g // self.n, g % self.n
            for p in set(passes.tolist()) - set(perms):
                perms[p] = np.random.default_rng([self.seed, p, 0xCAC4E]).permutation(self.n)
            yield np.array([perms[p][i] for p, i in zip(passes.tolist(), at.tolist())])
            for p in [p for p in perms if p < passes.min()]:
                del perms[p]
            b += 1

    def __iter__(self) -> Iterator[Batch]:
        pin = self.device.type == "cuda"
        batches = (self._train_batches() if self.split == "train"
                   else (self.order[i:i + self.batch_size] for i in range(0, len(self.order), self.batch_size)))
        for order in batches:
            idx = np.sort(order)
            t = {k: torch.from_numpy(self.data[k][idx]) for k in COLUMNS}
            if pin:
                t = {k: v.pin_memory() for k, v in t.items()}
            t = {k: v.to(self.device, non_blocking=True) for k, v in t.items()}
            kind = t["kind"]
            yield Batch(template=t["template"].float(), search=t["search"].float(), search_box=t["search_box"],
                        positive=kind == KIND_POSITIVE, kind=kind)


def cached_loader_factory(shards_dir: str | Path, cfg: Config, device: torch.device):
    """A `LoaderFactory` (trainer.py) over the feature cache that `build_feature_cache` made."""
    directory = cache_dir(shards_dir, cfg)

    def make(split: str, epoch: int, rank: int, world_size: int, start_batch: int = 0) -> Iterable[Batch]:
        files = ([view_file(directory, "train", v) for v in range(cfg.train.cache_views)] if split == "train"
                 else [view_file(directory, "val", 0)])
        return CachedLoader(load_views(files), cfg, split, epoch, rank, world_size, start_batch, device)

    return make
