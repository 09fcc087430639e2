import time

import numpy as np
import pytest

from siamtool.data.lasot import ATTRIBUTES, index_lasot, load_attributes, load_sequence, official_split
from siamtool.errors import DatasetError
from tests.conftest import shared


def test_official_splits_ship_with_the_package():
    assert len(official_split("train")) == 1120
    assert len(official_split("test")) == 280
    assert len(official_split("extension")) == 150
    assert official_split("test")[0] == "airplane-1"
    attrs = load_attributes()
    assert len(attrs) == 1400  # LaSOT's train and test sequences; the extension's 150 have no attribute file
    assert set(attrs) == set(official_split("train")) | set(official_split("test"))
    assert set(attrs["airplane-1"]) == set(ATTRIBUTES)
    assert attrs["airplane-1"]["POC"] and not attrs["airplane-1"]["IV"]


def test_synthetic_dataset_indexes(synthetic_lasot):
    idx = index_lasot(synthetic_lasot, "all")
    assert [s.name for s in idx.sequences] == ["cat-1", "cat-2", "dog-1", "dog-2"]
    s = idx.sequences[0]
    assert s.class_name == "cat" and s.n_frames == 40 and s.n_images == 40
    assert s.full_occlusion.any() and s.out_of_view.any()
    assert not s.visible[s.full_occlusion].any()
    assert s.frame_path(0).name == "00000001.jpg" and s.frame_path(0).is_file()
    assert (s.gt[s.absent] == 0).all()


def test_flat_layout_and_split_file(synthetic_lasot, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "cat-1").symlink_to(synthetic_lasot / "cat" / "cat-1")
    idx = index_lasot(flat, "all")
    assert [s.name for s in idx.sequences] == ["cat-1"]
    split = tmp_path / "split.txt"
    split.write_text("cat-1\ncat-9\n")
    idx = index_lasot(flat, str(split))
    assert idx.missing == ["cat-9"]


def test_bad_sequences_are_named(synthetic_lasot, tmp_path):
    import shutil

    seq = tmp_path / "x" / "cat-1"
    shutil.copytree(synthetic_lasot / "cat" / "cat-1", seq)
    gt = seq / "groundtruth.txt"
    lines = gt.read_text().splitlines()
    lines[6] = "1,2,abc,4"
    gt.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"groundtruth.txt:7: cannot parse"):
        load_sequence(seq)
    lines[6] = "1,2,3"
    gt.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"groundtruth.txt:7: expected 4 values"):
        load_sequence(seq)
    gt.write_text("\n".join(lines[:6] + lines[7:]) + "\n")
    with pytest.raises(DatasetError, match="flags but groundtruth.txt has 39 lines"):
        load_sequence(seq)
    # Non-strict indexing skips the bad sequence and says why.
    (seq.parent / "cat-2").symlink_to(synthetic_lasot / "cat" / "cat-2")
    idx = index_lasot(tmp_path / "x", "all")
    assert [s.name for s in idx.sequences] == ["cat-2"] and "cat-1" in idx.skipped[0]
    with pytest.raises(DatasetError):
        index_lasot(tmp_path / "x", "all", strict=True)


def test_real_lasot_samples():
    idx = index_lasot(shared("real_lasot"), "all")
    names = {s.name: s for s in idx.sequences}
    assert set(names) == {"bag-1", "face-3", "motorcycle-2", "person-1", "toy-1"}
    assert names["motorcycle-2"].absent.sum() == 66
    np.testing.assert_allclose(names["bag-1"].gt[0], [291.827, 124.711, 150.346, 139.578])


def test_indexing_the_whole_test_set_annotations_is_fast():
    root = shared("lasot_test_annos")
    t = time.perf_counter()
    idx = index_lasot(root, "test", require_images=False)
    dt = time.perf_counter() - t
    assert len(idx.sequences) == 280 and not idx.missing
    assert sum(s.n_frames for s in idx.sequences) == 685360
    assert sum(int(s.absent.sum()) for s in idx.sequences) == 18346
    assert dt < 20, f"indexing 280 sequences took {dt:.1f}s"
