"""prepare from several datasets at once (issue 21 item 2): the `KIND:ROOT[:SPLIT][@WEIGHT]` spec and
`data.sources`, weighted shares, the still-image source (augmented search crops, in-image negatives), a
second video layout through the datasets API (GOT-10k), the records in index.json, resume, bad specs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from siamtool.cli import app
from siamtool.config import Config, SourceSpec, load_config, parse_source
from siamtool.data import prepare as prep
from siamtool.data.shards import KIND_OTHER_CLASS, KIND_POSITIVE, KIND_SAME_CLASS, ShardReader, load_shard_index
from siamtool.data.stills import MIN_BOX_SIDE, STRETCH, index_stills
from siamtool.errors import ConfigError, DatasetError
from siamtool.geometry import crop, from_lasot, iou_xywh, template_window
from tests.conftest import REPO, Recorder, shared
from tests.data.test_prepare import all_rows

# ------------------------------------------------------------------------------------- data in code

COLOURS = {"red": (0, 0, 255), "green": (0, 255, 0), "blue": (255, 0, 0)}
"""BGR of the rectangles the stills images are drawn with: a box is found again by its colour."""
STILL_IMAGES = [
    ("a.jpg", [(20, 20, 40, 30, "car", "red"), (90, 50, 50, 40, "car", "green"), (5, 5, 4, 4, "car", "blue")]),
    ("b.jpg", [(30, 30, 60, 50, "dog", "blue")]),
    ("c.jpg", [(60, 40, 40, 40, "person", "red"), (10, 10, 30, 60, "dog", "green")]),
]


def make_stills(root: Path, missing: bool = True) -> Path:
    """Three 160x120 images of coloured rectangles on grey (one box too small to be a target) and, listed
    in the JSON, one image that is not on disk."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    entries = []
    for name, boxes in STILL_IMAGES:
        img = np.full((120, 160, 3), 128, np.uint8)
        for x, y, w, h, _, colour in boxes:
            cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), COLOURS[colour], -1)
        cv2.imwrite(str(root / "images" / name), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        entries.append({"file": f"images/{name}", "width": 160, "height": 120,
                        "boxes": [[x, y, w, h, cls] for x, y, w, h, cls, _ in boxes]})
    if missing:
        entries.append({"file": "images/gone.jpg", "width": 160, "height": 120, "boxes": [[1, 1, 50, 50, "cat"]]})
    (root / "annotations.json").write_text(json.dumps({"images": entries}))
    return root


def make_got10k(lasot: Path, root: Path) -> Path:
    """The synthetic LaSOT sequences written out in GOT-10k's train layout (frames in the sequence folder,
    absence/cover labels, meta_info.ini with the class)."""
    split = root / "train"
    names = []
    for k, gt_file in enumerate(sorted(lasot.glob("*/*/groundtruth.txt")), 1):
        src = gt_file.parent
        name = f"GOT-10k_Train_{k:06d}"
        names.append(name)
        dst = split / name
        shutil.copytree(src / "img", dst)
        shutil.copy(gt_file, dst / "groundtruth.txt")
        absent = [int(a) | int(b) for a, b in zip((src / "full_occlusion.txt").read_text().strip().split(","),
                                                   (src / "out_of_view.txt").read_text().strip().split(","))]
        (dst / "absence.label").write_text("\n".join(str(a) for a in absent) + "\n")
        (dst / "cover.label").write_text("\n".join("0" if a else "8" for a in absent) + "\n")
        (dst / "cut_by_image.label").write_text("\n".join("0" for _ in absent) + "\n")
        (dst / "meta_info.ini").write_text(f"[METAINFO]\nobject_class: {src.parent.name}\nresolution: (192, 144)\n")
    (split / "list.txt").write_text("\n".join(names) + "\n")
    return root


@pytest.fixture(scope="module")
def stills(tmp_path_factory) -> Path:
    return make_stills(tmp_path_factory.mktemp("stills"))


@pytest.fixture(scope="module")
def got10k(synthetic_lasot, tmp_path_factory) -> Path:
    return make_got10k(synthetic_lasot, tmp_path_factory.mktemp("got10k"))


def mixed_cfg(lasot: Path, stills: Path, got: Path, **data) -> Config:
    """lasot@1 (4 sequences), stills@1 (3 images), got10k:train@2 (4 sequences); 8 pairs per unit."""
    cfg = Config()
    cfg.data.pairs_per_sequence = 8
    cfg.data.pairs_per_shard = 16
    cfg.data.neg_prob = 0.4
    cfg.data.sources = [SourceSpec("lasot", str(lasot), "all"), SourceSpec("stills", str(stills)),
                        SourceSpec("got10k", str(got), "train", 2.0)]
    for k, v in data.items():
        setattr(cfg.data, k, v)
    return cfg


def pairs_of(out: Path) -> list:
    pairs = []
    for path, _ in load_shard_index(out).shards:
        with ShardReader(path) as r:
            pairs += r.read_many(range(len(r)))
    return pairs


@pytest.fixture(scope="module")
def mixed(synthetic_lasot, stills, got10k, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mixed") / "shards"
    prep.prepare_shards(None, out, mixed_cfg(synthetic_lasot, stills, got10k), split="train", workers=1)
    return out


# ------------------------------------------------------------------------------------------ the spec


@pytest.mark.parametrize("text,kind,root,split,weight", [
    ("lasot:/data/LaSOT", "lasot", "/data/LaSOT", None, 1.0),
    ("lasot:/data/LaSOT:train", "lasot", "/data/LaSOT", "train", 1.0),
    ("got10k:/data/GOT-10k:train@2", "got10k", "/data/GOT-10k", "train", 2.0),
    ("trackingnet:/d/TN:TRAIN_0,TRAIN_1@0.5", "trackingnet", "/d/TN", "TRAIN_0,TRAIN_1", 0.5),
    ("lasot:C:\\data\\LaSOT", "lasot", "C:\\data\\LaSOT", None, 1.0),  # a drive letter is part of the root
    ("lasot:/mnt/a:b/LaSOT@3", "lasot", "/mnt/a:b/LaSOT", None, 3.0),  # ':' inside a path component
    ("lasot:/runs/x@y/LaSOT", "lasot", "/runs/x@y/LaSOT", None, 1.0),  # '@' not followed by a number
    ("lasot:/mnt/x:train:all", "lasot", "/mnt/x:train", "all", 1.0),  # a root ending in :name + its split
    ("Stills:../coco", "stills", "../coco", None, 1.0),
])
def test_source_spec_is_cut_by_the_documented_rule(text, kind, root, split, weight):
    assert parse_source(text) == SourceSpec(kind, root, split, weight)


def test_a_split_file_is_a_split_even_with_a_path(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("cat-1\n")
    assert parse_source(f"lasot:/data/LaSOT:{names}@2") == SourceSpec("lasot", "/data/LaSOT", str(names), 2.0)
    # Not a file and not a plain name: part of the root.
    assert parse_source("lasot:/data:/no/such/file").root == "/data:/no/such/file"


@pytest.mark.parametrize("text,message", [
    ("lasot", "expected KIND:ROOT[:SPLIT][@WEIGHT]"),
    ("lasot:", "expected KIND:ROOT[:SPLIT][@WEIGHT]"),
    (":/data", "expected KIND:ROOT[:SPLIT][@WEIGHT]"),
    ("lasot:/data@0", "the weight must be a number > 0, got 0"),
    ("lasot:/data@-2", "the weight must be a number > 0, got -2"),
    ("lasot:/data@inf", "the weight must be a number > 0, got inf"),
    ("la sot:/data", "is not a dataset kind"),
])
def test_bad_specs_are_refused(text, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_source(text)


def test_yaml_sources_take_strings_and_mappings(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  sources:\n    - lasot:/data/LaSOT:train\n"
                    "    - {kind: got10k, root: /data/GOT-10k, split: train, weight: 2}\n")
    cfg = load_config(path)
    assert cfg.data.sources == [SourceSpec("lasot", "/data/LaSOT", "train", 1.0),
                                SourceSpec("got10k", "/data/GOT-10k", "train", 2.0)]
    from siamtool.config import config_from_dict

    assert config_from_dict(cfg.to_dict()).data.sources == cfg.data.sources  # saved configs read back
    path.write_text("data:\n  sources:\n    - {kind: got10k, root: /g, wieght: 2}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: data\.sources\[0\]: unknown key 'wieght'; did you mean 'weight'"):
        load_config(path)
    path.write_text("data:\n  sources:\n    - {kind: got10k}\n")
    with pytest.raises(ConfigError, match=r"data\.sources\[0\]: a source needs a kind and a root"):
        load_config(path)
    path.write_text("data:\n  sources:\n    - got10k:/g@0\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: data\.sources\[0\] got10k:/g@0: the weight must be"):
        load_config(path)


def test_got10k_protocol_config_trains_on_got10k_train_only():
    cfg = load_config(REPO / "configs" / "got10k.yaml")
    assert [(s.kind, s.split) for s in cfg.data.sources] == [("got10k", "train")]
    base = load_config(REPO / "configs" / "base.yaml")
    # The GPU recipe of base.yaml otherwise: same model, same training, same crops.
    assert cfg.model == base.model and cfg.train == base.train
    assert (cfg.data.template_size, cfg.data.search_size, cfg.data.context) == \
        (base.data.template_size, base.data.search_size, base.data.context)


# ----------------------------------------------------------------------------------------- stills


def test_stills_index_keeps_usable_boxes_and_lists_missing_images(stills):
    index = index_stills(stills)
    assert index.images == 4 and len(index.skipped) == 1 and "gone.jpg: image missing" in index.skipped[0]
    # The 4 px box is no target (MIN_BOX_SIDE); names say image and box.
    assert index.names == ["a#0", "a#1", "b#0", "c#0", "c#1"] and index.small == 1 and MIN_BOX_SIDE > 4
    with pytest.raises(DatasetError, match="gone.jpg: image missing"):
        index_stills(stills, strict=True)


@pytest.mark.parametrize("text,message", [
    ("{not json", r"annotations\.json:1: not valid JSON"),
    ('{"images": []}', "with at least one image"),
    ('{"images": [{"file": "images/a.jpg", "width": 160, "height": 120, "boxes": [[1, 2, 3]]}]}',
     r"images\[0\] \(images/a\.jpg\): boxes\[0\] must be \[x, y, w, h, \"class\"\]"),
    ('{"images": [{"file": "images/a.jpg", "width": "wide", "height": 120, "boxes": []}]}',
     r"images\[0\] \(images/a\.jpg\): bad width, height or box value"),
])
def test_malformed_stills_json_is_one_line_naming_the_entry(tmp_path, text, message):
    root = make_stills(tmp_path / "s", missing=False)
    (root / "annotations.json").write_text(text)
    with pytest.raises(DatasetError, match=message):
        index_stills(root)


# -------------------------------------------------------------------------------- several sources


def test_each_source_gets_its_weighted_share_and_index_json_records_it(mixed, synthetic_lasot, stills, got10k):
    index = json.loads((mixed / "index.json").read_text())
    # 8 pairs x (4 LaSOT sequences + 3 still images + 4 GOT-10k sequences) = 88, split 1 : 1 : 2.
    assert index["pairs"] == 88
    by_label = {s["label"]: s for s in index["sources"]}
    assert [s["label"] for s in index["sources"]] == ["lasot", "stills", "got10k"]
    assert {k: v["pairs"] for k, v in by_label.items()} == {"lasot": 22, "stills": 22, "got10k": 44}
    assert by_label["got10k"] == {"label": "got10k", "kind": "got10k", "root": str(got10k.resolve()),
                                  "split": "train", "weight": 2.0, "share": 0.5, "sequences": 4, "pairs": 44}
    assert by_label["stills"]["split"] is None and by_label["stills"]["images"] == 3
    assert by_label["stills"]["boxes"] == 5 and by_label["lasot"]["split"] == "all"
    assert index["source_root"] == str(synthetic_lasot.resolve())  # where `eval` looks for LaSOT
    # What each shard holds: its pairs per source and per kind, read back from the shard itself.
    for shard in index["shards"]:
        with ShardReader(mixed / shard["file"]) as r:
            pairs = r.read_many(range(len(r)))
        labels = [p.sequence.split("/", 1)[0] for p in pairs]
        assert shard["sources"] == {k: labels.count(k) for k in sorted(set(labels))}
        assert sum(shard["kinds"].values()) == shard["pairs"] == len(pairs)
    assert len({tuple(s["sources"]) for s in index["shards"]}) > 1 or len(index["shards"][0]["sources"]) > 1


def test_mixed_pairs_map_back_to_each_sources_ground_truth(mixed, synthetic_lasot, got10k):
    """Every template box maps back to its own dataset's annotation (LaSOT and GOT-10k: 1-based files;
    stills: the JSON's 0-based box); negatives never cross sources."""
    gts = {f"lasot/{p.parent.name}": np.loadtxt(p, delimiter=",", ndmin=2)
           for p in synthetic_lasot.glob("*/*/groundtruth.txt")}
    gts |= {f"got10k/{p.parent.name}": np.loadtxt(p, delimiter=",", ndmin=2)
            for p in (got10k / "train").glob("*/groundtruth.txt")}
    still_boxes = {f"stills/{Path(n).stem}#{j}": np.array(b[:4], float)
                   for n, boxes in STILL_IMAGES for j, b in enumerate(boxes)}
    seen = set()
    for p in pairs_of(mixed):
        label = p.sequence.split("/")[0]
        assert p.search_sequence.split("/")[0] == label
        seen.add((label, int(p.kind)))
        box = still_boxes[p.sequence] if label == "stills" else from_lasot(gts[p.sequence][int(p.frames[0])])
        back = template_window(box, 0.5, 128).box_to_frame(p.template_box)
        assert np.abs(back - box).max() <= 0.5, (p.sequence, back, box)
    assert {("lasot", KIND_POSITIVE), ("got10k", KIND_POSITIVE), ("stills", KIND_POSITIVE)} <= seen
    assert ("stills", KIND_SAME_CLASS) in seen or ("stills", KIND_OTHER_CLASS) in seen


def _colour_box(img: np.ndarray, colour: str) -> np.ndarray | None:
    """x,y,w,h of the pixels of one of the rectangles' colours (after gains, gamma and blur)."""
    b, g, r = (img[..., k].astype(int) for k in range(3))
    mask = {"red": (r > 150) & (g < 100) & (b < 100), "green": (g > 150) & (r < 100) & (b < 100),
            "blue": (b > 150) & (r < 100) & (g < 100)}[colour]
    ys, xs = np.nonzero(mask)
    return None if xs.size < 20 else np.array([xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()])


def test_still_search_crops_are_augmented_and_their_boxes_follow(mixed):
    """A positive still pair: the stored search box is where the target's rectangle really is in the
    stretched, recoloured crop (found by its colour), and the stretch changes the aspect ratio."""
    colours = {f"stills/{Path(n).stem}#{j}": b[5] for n, boxes in STILL_IMAGES for j, b in enumerate(boxes)}
    ratios, checked = [], 0
    for p in pairs_of(mixed):
        if not p.sequence.startswith("stills/") or p.kind != KIND_POSITIVE:
            continue
        crop = cv2.imdecode(p.search_jpeg, cv2.IMREAD_COLOR)
        found = _colour_box(crop, colours[p.sequence])
        assert found is not None and iou_xywh(found, p.search_box) > 0.8, (p.sequence, found, p.search_box)
        t, s = p.template_box, p.search_box
        ratios.append((s[2] / s[3]) / (t[2] / t[3]))
        checked += 1
    assert checked >= 5
    ratios = np.log(np.array(ratios))
    assert np.abs(ratios).max() <= 2 * STRETCH + 1e-3 and np.abs(ratios).max() > 0.02  # stretched, within range


def test_in_image_negatives_are_semantic(mixed):
    """A still negative whose image has other boxes is centred on one of them; same class -> kind 1."""
    classes = {f"stills/{Path(n).stem}#{j}": b[4] for n, boxes in STILL_IMAGES for j, b in enumerate(boxes)}
    negatives = [p for p in pairs_of(mixed) if p.sequence.startswith("stills/") and p.kind != KIND_POSITIVE]
    assert negatives
    for p in negatives:
        image, other = p.sequence.split("#")[0], p.search_sequence.split("#")[0]
        if image != "stills/b":  # a and c have two usable boxes each: the negative stays in the image
            assert other == image and p.search_sequence != p.sequence
        same = classes[p.sequence] == classes[p.search_sequence]
        assert p.kind == (KIND_SAME_CLASS if same else KIND_OTHER_CLASS)


def test_same_pairs_for_any_worker_count_and_resume_is_exact(mixed, synthetic_lasot, stills, got10k, tmp_path):
    cfg = mixed_cfg(synthetic_lasot, stills, got10k)
    out = tmp_path / "shards"
    shutil.copytree(mixed, out)
    (out / "index.json").unlink()
    for i in (0, 3):
        (out / f"shard-{i:05d}.h5").unlink()
    (out / ".shard-00003.h5.x1.tmp").write_bytes(b"half")
    recorder = Recorder()
    summary = prep.prepare_shards(None, out, cfg, split="train", workers=2, reporter=recorder)
    assert "resumed: 4/6 shards present (1 unfinished temp file(s) removed)" in recorder.text
    assert summary.pairs == 88 and summary.pairs_made == 32
    assert all_rows(out) == all_rows(mixed)
    assert json.loads((out / "index.json").read_text())["sources"] == \
        json.loads((mixed / "index.json").read_text())["sources"]


def test_a_changed_weight_or_source_is_refused(mixed, synthetic_lasot, stills, got10k, tmp_path):
    out = tmp_path / "shards"
    shutil.copytree(mixed, out)
    cfg = mixed_cfg(synthetic_lasot, stills, got10k)
    cfg.data.sources[2].weight = 3.0
    with pytest.raises(ConfigError, match=r"sources: .*--overwrite"):
        prep.prepare_shards(None, out, cfg, split="train", workers=1)
    cfg = mixed_cfg(synthetic_lasot, stills, got10k)
    cfg.data.sources = cfg.data.sources[:2]
    with pytest.raises(ConfigError, match="different settings"):
        prep.prepare_shards(None, out, cfg, split="train", workers=1)


def test_one_lasot_source_is_what_lasot_always_was(synthetic_lasot, tmp_path):
    """`data.sources: [lasot:DIR]` writes the pairs `prepare --lasot DIR` writes, and the fingerprint of
    folders prepared before sources existed (no `sources` key), so those folders still resume."""
    cfg = Config()
    cfg.data.pairs_per_sequence, cfg.data.pairs_per_shard = 6, 8
    prep.prepare_shards(synthetic_lasot, tmp_path / "a", cfg, split="all", workers=1)
    cfg.data.sources = [SourceSpec("lasot", str(synthetic_lasot), "all")]
    prep.prepare_shards(None, tmp_path / "b", cfg, split="train", workers=1)
    assert [r[1:] for r in all_rows(tmp_path / "a")] == [r[1:] for r in all_rows(tmp_path / "b")]
    fp = json.loads((tmp_path / "b" / "prepare.json").read_text())["fingerprint"]
    assert set(fp) == {"format_version", "data", "source_root", "split", "sequences"} and "sources" not in fp["data"]
    assert fp["sequences"] == ["cat-1", "cat-2", "dog-1", "dog-2"]  # unprefixed with a single source


def test_validation_sequences_are_named_with_their_source(synthetic_lasot, stills, got10k, tmp_path):
    cfg = mixed_cfg(synthetic_lasot, stills, got10k, val_sequences=["got10k/GOT-10k_Train_000002"])
    summary = prep.prepare_shards(None, tmp_path / "v", cfg, split="train", workers=1)
    assert summary.val_sequences == ["got10k/GOT-10k_Train_000002"]
    index = json.loads((tmp_path / "v" / "index.json").read_text())
    for shard in index["shards"]:
        with ShardReader(tmp_path / "v" / shard["file"]) as r:
            names = {n for p in r.read_many(range(len(r))) for n in (p.sequence, p.search_sequence)}
        assert (names == {"got10k/GOT-10k_Train_000002"}) == (shard["split"] == "val")


def test_a_bare_validation_name_with_several_sources_says_to_add_the_label(synthetic_lasot, stills, got10k, tmp_path):
    cfg = mixed_cfg(synthetic_lasot, stills, got10k, val_sequences=["GOT-10k_Train_000002"])
    with pytest.raises(ConfigError, match=r"carry the source label: got10k/GOT-10k_Train_000002\)"):
        prep.prepare_shards(None, tmp_path / "v", cfg, split="train", workers=1)


def test_a_first_box_only_split_is_refused(got10k, tmp_path):
    test = got10k / "test"
    shutil.copytree(got10k / "train", test)
    for gt in test.glob("*/groundtruth.txt"):  # as published: the first box, no labels
        gt.write_text(gt.read_text().splitlines()[0] + "\n")
        for name in ("absence.label", "cover.label", "cut_by_image.label"):
            (gt.parent / name).unlink()
    cfg = Config()
    cfg.data.sources = [SourceSpec("got10k", str(got10k), "test")]
    with pytest.raises(ConfigError, match="publishes only each sequence's first box"):
        prep.prepare_shards(None, tmp_path / "o", cfg, workers=1)


def test_real_lasot_with_the_shared_stills(tmp_path):
    """The shared COCO stills next to real LaSOT sequences: every still template maps back to its JSON box."""
    coco = shared("stills_coco")
    lasot = shared("real_lasot")
    cfg = Config()
    cfg.data.pairs_per_sequence, cfg.data.pairs_per_shard = 2, 256
    cfg.data.sources = [SourceSpec("lasot", str(lasot), "all"), SourceSpec("stills", str(coco), None, 0.25)]
    summary = prep.prepare_shards(None, tmp_path / "o", cfg, workers=1)
    data = json.loads((coco / "annotations.json").read_text())
    boxes = {f"stills/{Path(e['file']).stem}#{j}": np.array(b[:4], float)
             for e in data["images"] for j, b in enumerate(e["boxes"])}
    total = 2 * (5 + len(data["images"]))
    assert summary.pairs == total and {s["label"]: s["pairs"] for s in summary.sources}["stills"] == round(total / 5)
    for p in pairs_of(tmp_path / "o"):
        if p.sequence.startswith("stills/"):
            back = template_window(boxes[p.sequence], 0.5, 128).box_to_frame(p.template_box)
            assert np.abs(back - boxes[p.sequence]).max() <= 0.5


# --------------------------------------------------------------------------------------------- CLI


def test_cli_prepares_several_sources_and_resumes(synthetic_lasot, stills, tmp_path):
    out = tmp_path / "shards"
    args = ["prepare", "--lasot", str(synthetic_lasot), "--data", f"stills:{stills}@0.5", "--split", "all",
            "--out", str(out), "--pairs-per-sequence", "4", "--workers", "1", "--set", "data.pairs_per_shard=8"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "from lasot" in res.output and "from stills" in res.output
    # 4 x (4 + 3) = 28 pairs: 2/3 LaSOT, 1/3 stills.
    assert {s["label"]: s["pairs"] for s in json.loads((out / "index.json").read_text())["sources"]} == \
        {"lasot": 19, "stills": 9}
    assert load_config(out / "config.yaml").data.sources == [SourceSpec("lasot", str(synthetic_lasot)),
                                                             SourceSpec("stills", str(stills), None, 0.5)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "resumed: 4/4 shards present" in res.output


@pytest.mark.parametrize("args,message", [
    (["--data", "lasot"], "--data 'lasot': expected KIND:ROOT[:SPLIT][@WEIGHT]"),
    (["--data", "lasot:/x@0"], "--data lasot:/x@0: the weight must be a number > 0"),
    (["--data", "nope:/tmp"], "source nope:/tmp: unknown dataset kind 'nope'; use lasot, "),
    (["--data", "got10k:/nonexistent/got:train"], "/nonexistent/got: dataset folder not found"),
    (["--data", "stills:/nonexistent/coco"], "/nonexistent/coco/annotations.json: stills annotations not found"),
])
def test_cli_bad_specs_are_one_line_exit_2(args, message):
    res = CliRunner().invoke(app, ["prepare", *args])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1


def test_cli_stills_with_a_split_is_refused(stills):
    res = CliRunner().invoke(app, ["prepare", "--data", f"stills:{stills}:train"])
    assert res.exit_code == 2 and "still images have no split (got 'train')" in res.output


def test_a_source_without_a_split_reads_prepares_split_where_the_dataset_has_it(got10k):
    (got, ) = prep.resolve_sources([SourceSpec("got10k", str(got10k))], "train", strict=False)
    assert got.split == "train" and len(got.sequences) == 4
    # Where the dataset has no such split, or its kind implies one, the dataset's own default is read.
    assert prep._split_of(SourceSpec("lasot_ext", "/x"), "train") is None
    assert prep._split_of(SourceSpec("got10k", "/x"), "train") == "train"
    assert prep._split_of(SourceSpec("got10k", "/x", "val"), "train") == "val"


def test_an_empty_source_list_leaves_every_other_fingerprint_as_it_was():
    """Eval results, feature caches and exports hash `cfg.to_dict()`: without sources it has no new key."""
    cfg = Config()
    assert "sources" not in cfg.to_dict()["data"]
    cfg.data.sources = [SourceSpec("lasot", "/d")]
    assert cfg.to_dict()["data"]["sources"] == [{"kind": "lasot", "root": "/d", "split": None, "weight": 1.0}]


def test_cli_reads_the_sources_of_the_config_and_data_replaces_them(synthetic_lasot, stills, got10k, tmp_path):
    cfg = tmp_path / "mix.yaml"
    cfg.write_text(f"data:\n  pairs_per_shard: 64\n  sources:\n    - {{kind: got10k, root: '{got10k}', split: train}}\n"
                   f"    - stills:{stills}@3\n")
    res = CliRunner().invoke(app, ["prepare", "--config", str(cfg), "--out", str(tmp_path / "a"),
                                   "--pairs-per-sequence", "2", "--workers", "1"])
    assert res.exit_code == 0, res.output
    # 2 x (4 + 3) = 14 pairs, 1 : 3.
    index = json.loads((tmp_path / "a" / "index.json").read_text())
    assert [(s["label"], s["pairs"]) for s in index["sources"]] == [("got10k", 4), ("stills", 10)]
    assert index["source_root"] == str(got10k.resolve())  # no LaSOT source: the first source's root
    res = CliRunner().invoke(app, ["prepare", "--config", str(cfg), "--data", f"lasot:{synthetic_lasot}:all",
                                   "--out", str(tmp_path / "b"), "--pairs-per-sequence", "2", "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert [s["label"] for s in json.loads((tmp_path / "b" / "index.json").read_text())["sources"]] == ["lasot"]


def test_source_totals_add_up_and_follow_the_weights():
    def src(kind: str, units: int, weight: float):
        seqs = [type("S", (), {"name": f"{kind}{i}"})() for i in range(units)]
        return prep.Source(SourceSpec(kind, "/x", None, weight), kind, Path("/x"), None, None, seqs)

    assert prep.source_totals([src("lasot", 7, 1.0)], 10) == [70]  # one source: pairs_per_sequence each
    totals = prep.source_totals([src("a", 3, 1.0), src("b", 3, 1.0), src("c", 4, 1.0)], 1)
    assert sum(totals) == 10 and sorted(totals) == [3, 3, 4]  # 10/3 each, the remainder by largest fraction
    assert prep.source_totals([src("a", 1, 1.0), src("b", 100, 3.0)], 4) == [101, 303]


def test_spread_meets_the_total_with_a_seeded_remainder():
    from siamtool.data.sampling import spread

    assert spread(12, 4, 0) == [3, 3, 3, 3]
    counts = spread(14, 4, 0)
    assert sum(counts) == 14 and sorted(counts) == [3, 3, 4, 4] and counts == spread(14, 4, 0)
    assert {tuple(spread(14, 4, seed)) for seed in range(20)} != {tuple(counts)}  # the seed picks who gets more
    assert spread(5, 0, 0) == []


def test_a_trackingnet_chunk_mixes_in_and_its_0_based_frames_are_the_right_ones(synthetic_lasot, tmp_path):
    """TrackingNet names frames 0.jpg, 1.jpg, ...: every crop of a TrackingNet pair is closer to the same
    crop of the right LaSOT frame than of the next one (a frame off-by-one would invert that)."""
    from siamtool.data.datasets.write import write_layout
    from siamtool.data.lasot import index_lasot

    seqs = index_lasot(synthetic_lasot, "all").sequences
    tn = write_layout("trackingnet", seqs, tmp_path / "tn", "TRAIN_0")
    cfg = Config()
    cfg.data.pairs_per_sequence, cfg.data.pairs_per_shard = 6, 64
    cfg.data.sources = [SourceSpec("lasot", str(synthetic_lasot), "all"),
                        SourceSpec("trackingnet", str(tn), "TRAIN_0", 1.0)]
    summary = prep.prepare_shards(None, tmp_path / "o", cfg, workers=1)
    assert {s["label"]: (s["split"], s["pairs"]) for s in summary.sources} == \
        {"lasot": ("all", 24), "trackingnet": ("TRAIN_0", 24)}
    dirs = {p.parent.name: p.parent for p in synthetic_lasot.glob("*/*/groundtruth.txt")}
    checked = 0
    for p in pairs_of(tmp_path / "o"):
        if not p.sequence.startswith("trackingnet/") or not 0 < int(p.frames[0]) < 38:
            continue
        name, t = p.sequence.split("/")[1], int(p.frames[0])
        box = from_lasot(np.loadtxt(dirs[name] / "groundtruth.txt", delimiter=",")[t])
        window = template_window(box, 0.5, 128)
        stored = cv2.imdecode(p.template_jpeg, cv2.IMREAD_COLOR).astype(float)
        error = [float(np.abs(stored - crop(cv2.imread(str(dirs[name] / "img" / f"{f + 1:08d}.jpg")), window)).mean())
                 for f in (t - 1, t, t + 1)]
        assert error[1] < min(error[0], error[2]), (p.sequence, t, error)
        checked += 1
    assert checked >= 8
