"""Every benchmark layout behind `index_dataset`: a tiny dataset per layout made in code, with the quirks
each reader exists for, read back as the same sequences (boxes, absence, frames) as the LaSOT layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from siamtool.data.datasets import KINDS, default_split, detect_kind, index_dataset, resolve_kind
from siamtool.data.datasets.vot import mask_box, region_box
from siamtool.data.datasets.write import LAYOUTS, write_layout
from siamtool.errors import DatasetError

READ_SPLIT = {"got10k": "val", "trackingnet": "TRAIN_0", "otb": "all", "uav": "UAV123", "nfs": "all", "vot": "list"}


@pytest.fixture(scope="module")
def source(synthetic_lasot):
    return index_dataset("lasot", synthetic_lasot, "all", strict=True)


@pytest.mark.parametrize("kind", LAYOUTS)
def test_each_layout_reads_back_the_same_sequences(kind, source, tmp_path):
    root = write_layout(kind, source.sequences, tmp_path / kind)
    assert detect_kind(root) == kind
    index = index_dataset(kind, root, READ_SPLIT[kind], strict=True)
    assert index.kind == kind and [s.name for s in index.sequences] == [s.name for s in source.sequences]
    for got, want in zip(index.sequences, source.sequences):
        assert got.dataset == kind and got.n_frames == want.n_frames
        np.testing.assert_array_equal(got.absent, want.absent)
        visible = want.visible
        np.testing.assert_allclose(got.gt[visible], want.gt[visible], rtol=0, atol=1e-9)
        np.testing.assert_array_equal(got.usable, want.usable)
        for i in (0, 9, want.n_frames - 1):  # the i-th frame is the same image (10 after 9: natural order)
            assert got.frame_path(i).read_bytes() == want.frame_path(i).read_bytes()


def test_got10k_meta_cover_and_the_test_split(source, tmp_path):
    root = write_layout("got10k", source.sequences, tmp_path / "GOT-10k", split="val")
    write_layout("got10k", source.sequences, root, split="test")
    val = index_dataset("got10k", root)  # default split: val
    seq = val.sequences[0]
    assert val.split == "val" and seq.class_name == "cat" and seq.resolution == (192, 144)
    np.testing.assert_array_equal(seq.cover, np.where(seq.absent, 0, 8))
    test = index_dataset("got10k", root, "test")
    t = test.sequences[0]
    assert t.gt_frames == 1 and t.n_frames == 40 and np.isnan(t.gt[1:]).all()
    np.testing.assert_array_equal(t.gt[0], seq.gt[0])
    assert not t.usable[1:].any() and not t.boxless_lines()
    # A test folder that kept per-frame labels (a user's own copy) reads as the published one does.
    folder = t.path
    (folder / "absence.label").write_text("0\n" * t.n_frames)
    (folder / "cover.label").write_text("8\n" * t.n_frames)
    again = next(s for s in index_dataset("got10k", root, "test", strict=True).sequences if s.name == t.name)
    assert again.gt_frames == 1 and again.n_frames == t.n_frames
    # The split folder itself works as --root too.
    assert len(index_dataset("got10k", root / "val", "val").sequences) == 4


def test_got10k_bad_files_are_one_line_naming_the_file(source, tmp_path):
    root = write_layout("got10k", source.sequences, tmp_path / "g", split="val")
    seq_dir = root / "val" / "cat-1"
    (seq_dir / "absence.label").unlink()
    with pytest.raises(DatasetError, match=r"cat-1/absence.label: missing"):
        index_dataset("got10k", root, "val", strict=True)
    index = index_dataset("got10k", root, "val")  # not strict: skipped with its reason
    assert [s.name for s in index.sequences] == ["cat-2", "dog-1", "dog-2"]
    assert "absence.label" in index.skipped[0]
    (seq_dir / "absence.label").write_text("0\n" * 40)
    (seq_dir / "cover.label").write_text("8\n" * 39)
    with pytest.raises(DatasetError, match=r"cover.label: 39 lines but .*groundtruth.txt has 40 lines"):
        index_dataset("got10k", root, "val", strict=True)
    (seq_dir / "cover.label").write_text("8\n" * 40)
    (seq_dir / "00000040.jpg").unlink()
    with pytest.raises(DatasetError, match=r"cat-1: 39 frames but .*groundtruth.txt has 40 lines"):
        index_dataset("got10k", root, "val", strict=True)
    assert len(index_dataset("got10k", root, "val", require_images=False, strict=True).sequences) == 4


def test_trackingnet_chunks_test_and_natural_order(source, tmp_path):
    root = write_layout("trackingnet", source.sequences[:2], tmp_path / "TN", split="TRAIN_0")
    write_layout("trackingnet", source.sequences[2:], root, split="TRAIN_3")
    write_layout("trackingnet", source.sequences, root, split="TEST")
    assert [s.name for s in index_dataset("trackingnet", root, "TRAIN_0,TRAIN_3").sequences] == \
        ["cat-1", "cat-2", "dog-1", "dog-2"]
    with pytest.raises(DatasetError, match=r"TRAIN_1/anno: missing"):
        index_dataset("trackingnet", root, "train")
    with pytest.raises(DatasetError, match="unknown TrackingNet split 'TRAIN_12'"):
        index_dataset("trackingnet", root, "TRAIN_12")
    test = index_dataset("trackingnet", root)  # default: TEST
    assert test.split == "TEST" and all(s.gt_frames == 1 and s.n_frames == 40 for s in test.sequences)
    assert test.sequences[0].frame_path(10).name == "10.jpg" and test.sequences[0].frame_path(2).name == "2.jpg"


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def _otb_sequence(root: Path, folder: str, first: int, last: int, digits: int = 4, gt_files=("groundtruth_rect.txt",),
                  n_rows: int | None = None, sep: str = ",") -> None:
    """An OTB folder with its first and last image (all the reader opens) and rows x = 1..n."""
    _touch(root / folder / "img" / f"{first:0{digits}d}.jpg")
    _touch(root / folder / "img" / f"{last:0{digits}d}.jpg")
    n = n_rows or last - first + 1
    for k, name in enumerate(gt_files):
        rows = [sep.join(str(v) for v in (i + 1, k + 1, 10, 20)) for i in range(n)]
        (root / folder / name).write_text("\n".join(rows) + "\n")


def test_otb_quirks_from_the_shipped_table(tmp_path):
    root = tmp_path / "OTB100"
    _otb_sequence(root, "David", 300, 770)
    _otb_sequence(root, "Tiger1", 1, 354, sep="\t")
    _touch(root / "Tiger1" / "img" / "0006.jpg")  # Tiger1 is scored from frame 6
    _otb_sequence(root, "Jogging", 1, 307, gt_files=("groundtruth_rect.1.txt", "groundtruth_rect.2.txt"))
    _otb_sequence(root, "Human4", 1, 667, gt_files=("groundtruth_rect.txt", "groundtruth_rect.2.txt"))
    _otb_sequence(root, "Board", 1, 698, digits=5)
    _otb_sequence(root, "BlurCar1", 247, 988, sep="\t")
    text = (root / "BlurCar1" / "groundtruth_rect.txt").read_text().splitlines()
    text[495] = text[495].replace("\t", " ")  # BlurCar1's one space-separated line
    (root / "BlurCar1" / "groundtruth_rect.txt").write_text("\n".join(text) + "\n")
    assert detect_kind(root) == "otb"
    index = index_dataset("otb", root, strict=True)  # otb100: the other 93 are missing, not errors
    seqs = {s.name: s for s in index.sequences}
    assert sorted(seqs) == ["BlurCar1", "Board", "David", "Human4", "Jogging-1", "Jogging-2", "Tiger1"]
    assert len(index.missing) == 93
    assert seqs["David"].n_frames == 471 and seqs["David"].frame_path(0).name == "0300.jpg"
    assert seqs["BlurCar1"].frame_path(0).name == "0247.jpg" and seqs["BlurCar1"].gt[495, 0] == 496
    tiger = seqs["Tiger1"]
    assert tiger.n_frames == 349 and tiger.frame_path(0).name == "0006.jpg" and tiger.gt[0, 0] == 6
    assert seqs["Jogging-1"].gt[0, 1] == 1 and seqs["Jogging-2"].gt[0, 1] == 2
    assert seqs["Human4"].gt[0, 1] == 2  # groundtruth_rect.2.txt
    assert seqs["Board"].frame_path(697).name == "00698.jpg"
    assert seqs["David"].attributes["IV"] and not seqs["David"].attributes["LR"] and index.attribute_names["OPR"]
    assert {s.name for s in index_dataset("otb", root, "otb2013").sequences} == \
        {"David", "Jogging-1", "Jogging-2", "Tiger1"}
    (root / "David" / "groundtruth_rect.txt").write_text("1,2,3,4\n" * 470)
    with pytest.raises(DatasetError, match=r"David/groundtruth_rect.txt: 470 lines but OTB's David has 471"):
        index_dataset("otb", root, strict=True)


def test_uav_pieces_nan_rows_attributes_and_10fps(tmp_path):
    root = tmp_path / "UAV123"
    for uav_set, first, last in (("UAV123", 775, 1477), ("UAV123_10fps", 259, 493)):
        n = last - first + 1
        rows = ["NaN,NaN,NaN,NaN" if i == 3 else f"{i},5,10,10" for i in range(n)]
        (root / "anno" / uav_set).mkdir(parents=True)
        (root / "anno" / uav_set / "bird1_2.txt").write_text("\n".join(rows) + "\n")
        _touch(root / "data_seq" / uav_set / "bird1" / f"{first:06d}.jpg")
        _touch(root / "data_seq" / uav_set / "bird1" / f"{last:06d}.jpg")
    (root / "anno" / "UAV123" / "att").mkdir()
    (root / "anno" / "UAV123" / "att" / "bird1_2.txt").write_text("1,0,0,1,0,0,0,0,0,0,0,1\n")
    assert detect_kind(root) == "uav"
    seq = index_dataset("uav", root, strict=True).sequences[0]
    assert seq.n_frames == 703 and seq.frame_path(0).name == "000775.jpg" and seq.class_name == "bird"
    assert seq.absent[3] and seq.absent.sum() == 1 and not seq.boxless_lines()
    assert seq.attributes["SV"] and seq.attributes["SOB"] and not seq.attributes["ARC"]
    (root / "anno" / "UAV20L").mkdir()  # UAV20L: its own annotations, UAV123's frames of the whole video
    (root / "anno" / "UAV20L" / "bird1.txt").write_text("1,2,3,4\n" * 1477)
    _touch(root / "data_seq" / "UAV123" / "bird1" / "000001.jpg")
    long = index_dataset("uav20l", root, strict=True).sequences[0]
    assert long.n_frames == 1477 and long.frame_path(0) == root / "data_seq" / "UAV123" / "bird1" / "000001.jpg"
    ten = index_dataset("uav123_10fps", root, strict=True).sequences[0]
    assert ten.n_frames == 235 and ten.frame_path(0).name == "000259.jpg" and ten.attributes == {}
    (root / "anno" / "UAV123" / "bird1_2.txt").write_text("1,2,3,4\n" * 700)
    with pytest.raises(DatasetError, match=r"bird1_2.txt: 700 lines but UAV123 bird1_2 is images 775-1477"):
        index_dataset("uav", root, strict=True)


def test_nfs_240fps_rows_every_8th_and_one_extra(tmp_path):
    root = tmp_path / "Nfs"
    for i in range(1, 11):
        _touch(root / "Gymnastics" / "30" / "Gymnastics" / f"{i:05d}.jpg")
    rows = [f"1 {r} 2 {r + 10} 22 {r} 0 0 0 \"person\"" for r in range(81)]  # 81 = 10 x 8 + 1
    (root / "Gymnastics" / "240").mkdir(parents=True)
    (root / "Gymnastics" / "240" / "Gymnastics.txt").write_text("\n".join(rows) + "\n")
    assert detect_kind(root) == "nfs"
    seq = index_dataset("nfs", root, strict=True).sequences[0]
    assert seq.n_frames == 10 and seq.class_name == "person"
    np.testing.assert_array_equal(seq.gt[:, 0], np.arange(0, 80, 8))  # every 8th row
    np.testing.assert_array_equal(seq.gt[0], [0, 2, 10, 20])  # x1 y1 x2 y2 -> x y w h
    # A 30/<seq>.txt that holds 240 fps rows too (as in some NfS sequences) is thinned the same way.
    (root / "Gymnastics" / "30" / "Gymnastics.txt").write_text("\n".join(rows[:80]) + "\n")
    again = index_dataset("nfs", root, strict=True).sequences[0]
    assert again.gt_path.parent.name == "30"
    np.testing.assert_array_equal(again.gt, seq.gt)


def test_vot_regions_rect_polygon_mask_and_absent():
    p = Path("groundtruth.txt")
    assert region_box("10,20,30,40", p, 1) == [10, 20, 30, 40]
    assert region_box("10,20,40,20,40,60,10,60", p, 1) == [10, 20, 30, 40]
    # A 4x3 mask at (100, 50): runs 5 zeros, 2 ones, 3 zeros, 2 ones -> ones at (1,1),(2,1),(2,2),(3,2).
    assert mask_box([100, 50, 4, 3, 5, 2, 3, 2]) == [101, 51, 3, 2]
    assert region_box("m100,50,4,3,5,2,3,2", p, 1) == [101, 51, 3, 2]
    assert np.isnan(region_box("0", p, 1)).all() and np.isnan(region_box("m0,0,2,2,4", p, 1)).all()
    with pytest.raises(DatasetError, match=r"groundtruth.txt:7: 5 values"):
        region_box("1,2,3,4,5", p, 7)


def test_detection_names_and_errors(tmp_path, synthetic_lasot):
    assert detect_kind(synthetic_lasot) == "lasot"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty: no known dataset layout .*--benchmark NAME"):
        detect_kind(tmp_path / "empty")
    with pytest.raises(DatasetError, match="dataset folder not found"):
        index_dataset("auto", tmp_path / "nope")
    assert resolve_kind("OTB2013") == ("otb", "otb2013") and resolve_kind("LaSOT_ext") == ("lasot_ext", "extension")
    assert default_split("lasot") == "test" and default_split("got10k") == "val" and set(LAYOUTS) < set(KINDS)
    with pytest.raises(DatasetError, match="unknown benchmark 'imagenet'"):
        resolve_kind("imagenet")


def test_nan_where_the_layout_cannot_mean_absent_is_one_line(source, tmp_path):
    root = write_layout("trackingnet", source.sequences, tmp_path / "TN", split="TRAIN_0")
    anno = root / "TRAIN_0" / "anno" / "dog-1.txt"
    lines = anno.read_text().splitlines()
    lines[6] = "nan,nan,nan,nan"
    anno.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"TRAIN_0/anno/dog-1.txt:7: NaN in the box"):
        index_dataset("trackingnet", root, "TRAIN_0", strict=True)
    got = write_layout("got10k", source.sequences, tmp_path / "G", split="val")
    gt_file = got / "val" / "cat-1" / "groundtruth.txt"
    absent = np.flatnonzero(source.sequences[0].absent)
    lines = gt_file.read_text().splitlines()
    lines[absent[0]] = "nan,nan,nan,nan"  # allowed: absence.label says the target is absent there
    gt_file.write_text("\n".join(lines) + "\n")
    assert index_dataset("got10k", got, "val", strict=True).sequences[0].absent[absent[0]]
    lines[0] = "nan,nan,nan,nan"
    gt_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"cat-1/groundtruth.txt:1: NaN"):
        index_dataset("got10k", got, "val", strict=True)
