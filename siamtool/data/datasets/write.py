"""Write sequences out in another benchmark's layout (tests, and checking a reader against LaSOT's).

`write_layout("got10k", index.sequences, out, split="val")` turns any indexed sequences into the files a
GOT-10k download unpacks to, so the same footage can be read back through each reader and must give
the same boxes and scores. Images are hard-linked where the file system allows (copied otherwise);
`images=False` writes annotations only. What a layout cannot hold is approximated and said here:

* GOT-10k: ``absence.label`` from the absent flags, ``cover.label`` 0 where absent and 8 elsewhere,
  ``meta_info.ini`` with the class and the first frame's resolution;
* TrackingNet, OTB: no absence flags: absent frames become 0,0,0,0 rows, which those readers read as
  absent (LaSOT's own way to write it);
* UAV, VOT: absent frames become NaN rows / ``0`` lines, the layouts' own way to say absent;
* NfS: the 30 fps boxes as x1 y1 x2 y2 rows (``lost`` = absent), each repeated 8 times as the 240 fps file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from siamtool.data.lasot import LasotSequence
from siamtool.errors import SiamtoolError
from siamtool.images import read_image


def _place(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _frames(seq: LasotSequence, names: Callable[[int], Path], images: bool) -> None:
    if images:
        for i in range(seq.n_frames):
            _place(seq.frame_path(i), names(i))


def _rows(gt: np.ndarray, sep: str = ",") -> str:
    return "".join(sep.join("nan" if np.isnan(v) else f"{v:.17g}" for v in row) + "\n" for row in gt)


def _zeroed(seq: LasotSequence) -> np.ndarray:
    gt = seq.gt.copy()
    gt[seq.absent] = 0.0
    return gt


def _flags(values: np.ndarray) -> str:
    return "".join(f"{int(v)}\n" for v in values)


def _got10k(seqs: list[LasotSequence], out: Path, split: str, images: bool) -> None:
    folder = out / split
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "list.txt").write_text("".join(f"{s.name}\n" for s in seqs))
    for s in seqs:
        d = folder / s.name
        d.mkdir(parents=True, exist_ok=True)
        _frames(s, lambda i, d=d: d / f"{i + 1:08d}.jpg", images)
        first = read_image(s.frame_path(0))
        resolution = s.resolution or ((first.shape[1], first.shape[0]) if first is not None else (0, 0))
        if split == "test":
            (d / "groundtruth.txt").write_text(_rows(s.gt[:1]))
        else:
            (d / "groundtruth.txt").write_text(_rows(s.gt))
            (d / "absence.label").write_text(_flags(s.absent))
            cover = s.cover if s.cover is not None else np.where(s.absent, 0, 8)
            (d / "cover.label").write_text(_flags(cover))
            (d / "cut_by_image.label").write_text(_flags(np.zeros(s.n_frames)))
        (d / "meta_info.ini").write_text(f"[METAINFO]\nobject_class: {s.class_name}\n"
                                         f"resolution: ({resolution[0]}, {resolution[1]})\n")


def _trackingnet(seqs: list[LasotSequence], out: Path, split: str, images: bool) -> None:
    chunk = out / split
    for s in seqs:
        (chunk / "anno").mkdir(parents=True, exist_ok=True)
        (chunk / "anno" / f"{s.name}.txt").write_text(_rows(s.gt[:1] if split == "TEST" else _zeroed(s)))
        _frames(s, lambda i, s=s: chunk / "frames" / s.name / f"{i}.jpg", images)


def _otb(seqs: list[LasotSequence], out: Path, split: str, images: bool) -> None:
    for s in seqs:
        d = out / s.name
        d.mkdir(parents=True, exist_ok=True)
        (d / "groundtruth_rect.txt").write_text(_rows(_zeroed(s), "\t"))
        _frames(s, lambda i, d=d: d / "img" / f"{i + 1:04d}.jpg", images)


def _uav(seqs: list[LasotSequence], out: Path, split: str, images: bool) -> None:
    for s in seqs:
        gt = s.gt.copy()
        gt[s.absent] = np.nan
        (out / "anno" / split).mkdir(parents=True, exist_ok=True)
        (out / "anno" / split / f"{s.name}.txt").write_text(_rows(gt))
        _frames(s, lambda i, s=s: out / "data_seq" / split / s.name / f"{i + 1:06d}.jpg", images)


def _nfs(seqs: list[LasotSequence], out: Path, split: str, images: bool) -> None:
    for s in seqs:
        d = out / s.name
        (d / "240").mkdir(parents=True, exist_ok=True)
        corners = np.concatenate([s.gt[:, :2], s.gt[:, :2] + s.gt[:, 2:]], axis=1)
        lines = [f"1 {' '.join(f'{v:.17g}' for v in c)} {8 * i + k} {int(a)} 0 0 \"{s.class_name}\"\n"
                 for i, (c, a) in enumerate(zip(corners, s.absent)) for k in range(8)]
        (d / "240" / f"{s.name}.txt").write_text("".join(lines))
        _frames(s, lambda i, d=d, s=s: d / "30" / s.name / f"{i + 1:05d}.jpg", images)


def _vot(seqs: list[LasotSequence], out: Path, split: str, images: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "list.txt").write_text("".join(f"{s.name}\n" for s in seqs))
    for s in seqs:
        d = out / s.name
        d.mkdir(parents=True, exist_ok=True)
        lines = ["0\n" if a else ",".join(f"{v:.17g}" for v in row) + "\n" for row, a in zip(s.gt, s.absent)]
        (d / "groundtruth.txt").write_text("".join(lines))
        _frames(s, lambda i, d=d: d / "color" / f"{i + 1:08d}.jpg", images)


_WRITERS = {"got10k": (_got10k, "val"), "trackingnet": (_trackingnet, "TRAIN_0"), "otb": (_otb, ""),
            "uav": (_uav, "UAV123"), "nfs": (_nfs, ""), "vot": (_vot, "")}
LAYOUTS = tuple(_WRITERS)


def write_layout(kind: str, sequences: list[LasotSequence], out: str | Path, split: str | None = None,
                 images: bool = True) -> Path:
    """Write `sequences` under `out` in `kind`'s layout (split: GOT-10k's val/test/train, a TrackingNet chunk,
    a UAV set); returns `out`. Names are kept, so sequences can be read back and compared one to one."""
    if kind not in _WRITERS:
        raise SiamtoolError(f"cannot write layout {kind!r}: use one of {', '.join(LAYOUTS)}")
    writer, default = _WRITERS[kind]
    out = Path(out)
    writer(list(sequences), out, split or default, images)
    return out
