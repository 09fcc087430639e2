"""Issue #12, eval's part: where eval finds the LaSOT root when not told, one policy for bad ground truth and
bad frames, and LaSOT attributes only for LaSOT's footage. Every case runs `siamtool eval` (or `track`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from siamtool.cli import app
from siamtool.data.lasot import lasot_frame_counts, load_attributes
from tests.conftest import output_lines
from tests.eval.conftest import write_result, write_sequence

runner = CliRunner()


def one_line_error(r) -> str:
    assert r.exit_code == 2, r.output
    lines = output_lines(r.output)
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    return lines[0]


def first_line(r) -> str:
    return output_lines(r.output)[0]


# ------------------------------------------------------------------------------- the LaSOT root


def test_without_a_root_eval_names_every_way_to_give_one(tiny):
    line = one_line_error(runner.invoke(app, ["eval", "--split", str(tiny["split"]), "--results", str(tiny["good"])]))
    for way in ("--lasot ROOT", "siamtool prepare --lasot ROOT", "SIAMTOOL_LASOT=ROOT", "eval.lasot"):
        assert way in line


def test_root_order_prepare_record_then_environment_then_config(tiny, monkeypatch, empty_working_folder):
    """Each source is used when the ones before it are absent, and the first line says which was used."""
    out = tiny["tmp"] / "o"
    args = ["eval", "--split", str(tiny["split"]), "--results", str(tiny["good"]), "--out", str(out)]
    nowhere = tiny["tmp"] / "no-such-root"

    cfg = tiny["tmp"] / "eval.yaml"
    cfg.write_text(f"eval:\n  lasot: {tiny['root']}\n")
    r = runner.invoke(app, [*args, "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    assert first_line(r) == f"eval: LaSOT root {tiny['root']} (eval.lasot in the config)"
    assert json.loads((out / "report.json").read_text())["trackers"]["good"]["sequences"] == 2

    monkeypatch.setenv("SIAMTOOL_LASOT", str(tiny["root"]))
    cfg.write_text(f"eval:\n  lasot: {nowhere}\n")
    r = runner.invoke(app, [*args, "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    assert first_line(r) == f"eval: LaSOT root {tiny['root']} ($SIAMTOOL_LASOT)"

    # `siamtool prepare --lasot ROOT` in this folder recorded its root in shards/prepare.json.
    monkeypatch.setenv("SIAMTOOL_LASOT", str(nowhere))
    (empty_working_folder / "shards").mkdir()
    (empty_working_folder / "shards" / "prepare.json").write_text(
        json.dumps({"fingerprint": {"source_root": str(tiny["root"])}}))
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert first_line(r) == f"eval: LaSOT root {tiny['root']} (recorded by `siamtool prepare` in shards/prepare.json)"

    # Shards from several sources: the LaSOT source's root, never another dataset's root as LaSOT.
    other = tiny["tmp"] / "GOT-10k"
    (empty_working_folder / "shards" / "prepare.json").write_text(json.dumps({"fingerprint": {
        "source_root": str(other), "sources": [{"kind": "got10k", "root": str(other)},
                                                {"kind": "lasot", "root": str(tiny["root"])}]}}))
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert first_line(r) == f"eval: LaSOT root {tiny['root']} (recorded by `siamtool prepare` in shards/prepare.json)"

    # A recorded root that has gone since: one line saying where the root came from.
    shutil.move(tiny["root"], tiny["tmp"] / "moved")
    line = one_line_error(runner.invoke(app, args))
    assert f"{tiny['root']}: LaSOT root not found (recorded by `siamtool prepare`" in line and "--lasot" in line


# ----------------------------------------------------------------------- bad ground-truth rows


def test_nan_and_negative_ground_truth_rows_are_scored_and_counted_not_refused(tiny):
    """Before: a NaN row made eval refuse the whole run without naming --skip-missing. Now such rows are
    treated like LaSOT's own three visible frames without a box: scored as the toolkits do, and counted."""
    out = tiny["tmp"] / "o"
    before = runner.invoke(app, ["eval", "--lasot", str(tiny["root"]), "--split", str(tiny["split"]),
                                 "--results", str(tiny["good"]), "--out", str(out)])
    assert before.exit_code == 0, before.output
    auc_before = json.loads((out / "report.json").read_text())["trackers"]["good"]["per_sequence"]
    write_sequence(tiny["root"], "airplane-1", [[1, 1, 10, 10], [np.nan] * 4, [1, 1, 10, 10], [1, 1, 10, 10]],
                   absent=[0, 0, 0, 1])
    write_sequence(tiny["root"], "basketball-1", [[1, 1, 10, 10], [1, 1, -3, 10]])
    r = runner.invoke(app, ["eval", "--lasot", str(tiny["root"]), "--split", str(tiny["split"]),
                            "--results", str(tiny["good"]), "--out", str(out)], env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    gt = tiny["root"] / "airplane" / "airplane-1" / "groundtruth.txt"
    assert (f"warning: 2 visible frame(s) have no usable ground-truth box (NaN or a size <= 0), e.g. {gt}:2: "
            "nan,nan,nan,nan: scored as failures for success and precision") in r.output
    after = json.loads((out / "report.json").read_text())["trackers"]["good"]["per_sequence"]
    for name in ("airplane-1", "basketball-1"):  # the frame that lost its box now counts as a failure
        assert after[name]["success_auc"] < auc_before[name]["success_auc"]


def test_a_malformed_annotation_file_is_refused_naming_skip_missing_which_scores_the_rest(tiny):
    gt = tiny["root"] / "basketball" / "basketball-1" / "groundtruth.txt"
    gt.write_text("1,1,10,10\n1,1,ten,10\n")
    args = ["eval", "--lasot", str(tiny["root"]), "--split", str(tiny["split"]), "--results", str(tiny["good"]),
            "--out", str(tiny["tmp"] / "o")]
    line = one_line_error(runner.invoke(app, args))
    assert "1 of 2 sequences" in line and f"{gt}:2" in line and "pass --skip-missing to score the other 1" in line
    r = runner.invoke(app, [*args, "--skip-missing"])
    assert r.exit_code == 0, r.output
    assert "scoring 1" in r.output


# ---------------------------------------------------------------------------------- attributes


def test_lasot_attributes_only_for_lasot_footage(tmp_path):
    """airplane-1 with LaSOT's 2788 frames is LaSOT's airplane-1; a user's 4-frame person-2 is not, and stays
    out of the per-attribute table, which says so."""
    assert lasot_frame_counts()["airplane-1"] == 2788 and lasot_frame_counts()["person-2"] != 4
    root = tmp_path / "lasot"
    write_sequence(root, "airplane-1", [[1, 1, 10, 10]] * 2788)
    write_sequence(root, "person-2", [[1, 1, 10, 10]] * 4)
    split = tmp_path / "split.txt"
    split.write_text("airplane-1\nperson-2\n")
    results = tmp_path / "mine"
    write_result(results, "airplane-1", [[1, 1, 10, 10]] * 2788)
    write_result(results, "person-2", [[1, 1, 10, 10], [3, 1, 10, 10], [5, 1, 10, 10], [7, 1, 10, 10]])
    out = tmp_path / "o"
    r = runner.invoke(app, ["eval", "--lasot", str(root), "--split", str(split), "--results", str(results),
                            "--out", str(out)], env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    per_attribute = report["trackers"]["mine"]["per_attribute"]
    airplane = load_attributes()["airplane-1"]
    for code, entry in per_attribute.items():  # every count is airplane-1's alone, person-2's flags are ignored
        assert entry["sequences"] == int(airplane[code]), code
    assert any(load_attributes()["person-2"][c] and not airplane[c] for c in per_attribute)  # would have shown
    assert report["attributes"]["left_out"] == ["person-2"]
    note = next(line for line in r.output.splitlines() if line.startswith("note:"))
    assert "the per-attribute table covers 1 of 2 sequences" in note and "(person-2)" in note
    assert f"person-2: 4 frames, LaSOT's has {lasot_frame_counts()['person-2']}" in note


# ---------------------------------------------------------------------------------- bad frames


@pytest.fixture
def truncated_frame_root(synthetic_lasot, tmp_path) -> tuple[Path, Path]:
    """The synthetic dataset with cat-1's frame 10 cut in half (a copy interrupted mid-file)."""
    root = tmp_path / "lasot"
    shutil.copytree(synthetic_lasot, root)
    frame = root / "cat" / "cat-1" / "img" / "00000010.jpg"
    data = frame.read_bytes()
    frame.write_bytes(data[: len(data) // 2])
    return root, frame


def test_eval_skips_and_counts_a_truncated_frame_instead_of_tracking_it_half_grey(truncated_frame_root,
                                                                                  tiny_checkpoint, tmp_path):
    root, _ = truncated_frame_root
    out = tmp_path / "o"
    r = runner.invoke(app, ["--device", "cpu", "eval", "--lasot", str(root), "--split", "all", "--checkpoint",
                            str(tiny_checkpoint), "--out", str(out), "--set", "track.backend=torch"],
                      env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    assert "cat-1: 1 unreadable frame(s) (10): previous box kept, counted lost" in r.output
    assert "(4 sequences, 0 resumed, 1 unreadable frames" in r.output
    rows = np.loadtxt(out / "tiny-run-tiny" / "frames" / "cat-1.csv", delimiter=",", skiprows=1)
    assert rows[9].tolist()[2:] == [0.0, 1.0]  # frame 10: score 0, lost
    assert len((out / "tiny-run-tiny" / "cat-1.txt").read_text().splitlines()) == 40  # still one line per frame


def test_track_skips_and_counts_a_truncated_frame(truncated_frame_root, tiny_checkpoint, tmp_path):
    root, _ = truncated_frame_root
    boxes = tmp_path / "boxes.txt"
    r = runner.invoke(app, ["--device", "cpu", "track", str(root / "cat" / "cat-1" / "img"), "--checkpoint",
                            str(tiny_checkpoint), "--no-show", "--init", "60,40,40,40", "--save-boxes", str(boxes),
                            "--set", "track.backend=torch"])
    assert r.exit_code == 0, r.output
    assert "tracked 39 frames" in r.output and "1 unreadable skipped" in r.output
    rows = np.loadtxt(boxes, delimiter=",", ndmin=2)
    assert len(rows) == 40  # one line per frame, as eval writes (issue #23: 39 lines, all later ones misaligned)
    assert rows[9].tolist() == [*rows[8, :4], 0.0, 1.0]  # frame 10: the previous box, score 0, lost


def test_results_longer_than_their_sequence_are_scored_with_a_warning(tiny):
    """Issue #23: `eval --results` with 50 lines more than frames was cut without a word."""
    long = tiny["tmp"] / "long"
    write_result(long, "airplane-1", [[1, 1, 10, 10], [1, 1, 10, 10], [6, 1, 10, 10], [1, 1, 10, 10]]
                 + [[99, 99, 10, 10]] * 50)
    write_result(long, "basketball-1", [[1, 1, 10, 10], [1, 1, 10, 10]])
    args = ["eval", "--lasot", str(tiny["root"]), "--split", str(tiny["split"]), "--results", str(tiny["good"]),
            "--results", str(long), "--out", str(tiny["tmp"] / "o")]
    r = runner.invoke(app, args, env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    warnings = [line for line in output_lines(r.output) if "more lines than their sequence" in line]
    assert warnings == [f"warning: long: 1 result file(s) have more lines than their sequence has frames (e.g. "
                        f"{long / 'airplane-1.txt'}: 50 more); only the first lines, one per frame, are scored: "
                        "check they are results of these sequences"], r.output
    report = json.loads((tiny["tmp"] / "o" / "report.json").read_text())["trackers"]
    assert report["long"]["per_sequence"] == report["good"]["per_sequence"]  # the cut itself is unchanged


def test_an_annotations_only_root_with_a_tracker_says_no_images(tiny, tiny_checkpoint):
    """Issue #23: `eval --checkpoint` on LaSOT's annotations said "2 of 2 sequences ... have no usable
    annotations"; the annotations are fine, the frames are missing."""
    r = runner.invoke(app, ["--device", "cpu", "eval", "--lasot", str(tiny["root"]), "--split", str(tiny["split"]),
                            "--checkpoint", str(tiny_checkpoint), "--out", str(tiny["tmp"] / "o")],
                      env={"COLUMNS": "300"})
    line = one_line_error(r)
    assert f"{tiny['root']}: no images: the 2 sequence(s) of split" in line and "--results DIR" in line
    assert "no usable annotations" not in line


def test_the_skipped_sequences_warning_of_eval_checkpoint_prints_once(synthetic_lasot, tiny_checkpoint, tmp_path):
    """Issue #23: "279 of 280 sequences ... have no usable annotations" printed twice (before tracking and
    again when scoring)."""
    root = tmp_path / "lasot"
    shutil.copytree(synthetic_lasot, root)
    (root / "dog" / "dog-2" / "groundtruth.txt").write_text("1,2,abc,4\n")
    r = runner.invoke(app, ["--device", "cpu", "eval", "--lasot", str(root), "--split", "all", "--checkpoint",
                            str(tiny_checkpoint), "--out", str(tmp_path / "o"), "--skip-missing", "--set",
                            "track.backend=torch"], env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    assert len([line for line in output_lines(r.output) if "have no usable annotations" in line]) == 1, r.output
