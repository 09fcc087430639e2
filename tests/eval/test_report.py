"""evaluate_results: the ATOM reference numbers, the report schema, missing sequences, plots."""

from __future__ import annotations

import json

import numpy as np
import pytest

from siamtool.data.lasot import ATTRIBUTES, index_lasot, load_attributes
from siamtool.errors import DatasetError
from siamtool.eval.report import PLOT_FILES, EvalWarning, evaluate_results, tracker_dirs
from tests.conftest import shared
from tests.eval.conftest import write_result, write_sequence

# Hand-computed for the `tiny` fixture (see its docstring).
AUC_AIRPLANE = (7 * 0.75 + 13 * 0.5) / 21
AUC_BASKETBALL = 20 / 21


def _index(tiny):
    return index_lasot(tiny["root"], str(tiny["split"]), require_images=False)


def test_atom_matches_the_published_numbers():
    """ATOM's published raw LaSOT results: AUC 51.4338, P 50.5428, P_norm 57.6806 (pytracking)."""
    index = index_lasot(shared("lasot_test_annos"), "test", require_images=False)
    report = evaluate_results({"ATOM": shared("raw_results", "ATOM")}, index, plots=False)
    atom = report["trackers"]["ATOM"]
    assert atom["sequences"] == 280
    assert atom["success_auc"] == pytest.approx(51.4338, abs=1e-3)
    assert atom["precision_20"] == pytest.approx(50.5428, abs=1e-3)
    assert atom["norm_precision_20"] == pytest.approx(57.6806, abs=1e-3)
    assert atom["success_auc"] == pytest.approx(np.mean(atom["success_curve"]), abs=1e-12)
    per_seq_auc = np.mean([s["success_auc"] for s in atom["per_sequence"].values()])
    assert atom["success_auc"] == pytest.approx(per_seq_auc, abs=1e-9)
    assert atom["per_attribute"]["FOC"]["sequences"] == sum(
        load_attributes()[s.name]["FOC"] for s in index.sequences)


def test_hand_computed_report_and_schema(tiny):
    out = tiny["tmp"] / "out"
    index = _index(tiny)
    for seq in index.sequences:  # as if this were LaSOT's footage (load_sequence checks the frame count)
        seq.attributes = load_attributes()[seq.name]
    report = evaluate_results({"good": tiny["good"]}, index, out_dir=out, split="tiny")
    assert set(report) == {"trackers", "convention", "split", "siamtool_version", "attributes"}
    assert report["attributes"] == {"sequences": 2, "left_out": [], "not_lasot_footage": {}}
    assert report["convention"] == "pytracking" and report["split"] == "tiny"
    t = report["trackers"]["good"]
    assert set(t) == {"success_auc", "precision_20", "norm_precision_20", "sequences", "success_curve",
                      "precision_curve", "norm_precision_curve", "per_sequence", "per_attribute"}
    assert len(t["success_curve"]) == 21 and len(t["precision_curve"]) == 51 and len(t["norm_precision_curve"]) == 51
    assert t["sequences"] == 2
    assert t["success_auc"] == pytest.approx(100 * (AUC_AIRPLANE + AUC_BASKETBALL) / 2)
    assert t["precision_20"] == pytest.approx(100 * (0.75 + 1.0) / 2)
    assert t["norm_precision_20"] == pytest.approx(100 * (0.5 + 1.0) / 2)
    assert t["per_sequence"]["airplane-1"] == pytest.approx(
        {"success_auc": 100 * AUC_AIRPLANE, "precision_20": 75.0, "norm_precision_20": 50.0})
    # Per attribute: an attribute only airplane-1 has scores as airplane-1 alone.
    attrs = load_attributes()
    assert set(t["per_attribute"]) == set(ATTRIBUTES)
    only_a = [a for a in ATTRIBUTES if attrs["airplane-1"][a] and not attrs["basketball-1"][a]]
    assert only_a
    entry = t["per_attribute"][only_a[0]]
    assert entry["sequences"] == 1 and entry["success_auc"] == pytest.approx(100 * AUC_AIRPLANE)
    assert entry["name"] == ATTRIBUTES[only_a[0]]
    # The JSON on disk is the returned report; the plots are PNGs.
    assert json.loads((out / "report.json").read_text()) == report
    for name in PLOT_FILES.values():
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_json_elsewhere_and_no_plots(tiny):
    target = tiny["tmp"] / "r" / "scores.json"
    evaluate_results({"good": tiny["good"]}, _index(tiny), out_dir=tiny["tmp"] / "o", report_path=target,
                     plots=False)
    assert target.is_file() and not (tiny["tmp"] / "o" / "success.png").exists()


def test_missing_results_are_an_error_unless_skipped(tiny):
    other = tiny["tmp"] / "other"
    write_result(other, "airplane-1", [[1, 1, 10, 10]] * 4)
    index = _index(tiny)
    with pytest.raises(DatasetError, match=r"no results for 1 of 2 sequences: basketball-1.*--skip-missing"):
        evaluate_results({"good": tiny["good"], "other": other}, index)
    with pytest.warns(EvalWarning, match=r"other: 1 of 2 sequences have no results.*scoring 1"):
        report = evaluate_results({"good": tiny["good"], "other": other}, index, skip_missing=True)
    # Both trackers are scored on the same sequences: only airplane-1.
    for name in ("good", "other"):
        assert report["trackers"][name]["sequences"] == 1
        assert list(report["trackers"][name]["per_sequence"]) == ["airplane-1"]
    assert report["trackers"]["good"]["success_auc"] == pytest.approx(100 * AUC_AIRPLANE)


def test_missing_annotations_are_an_error_unless_skipped(tiny):
    tiny["split"].write_text("airplane-1\nbasketball-1\nbear-2\n")
    index = _index(tiny)
    with pytest.raises(DatasetError, match=r"1 of 3 sequences of split .* no usable annotations: bear-2"):
        evaluate_results({"good": tiny["good"]}, index)
    with pytest.warns(EvalWarning, match="1 of 3 sequences"):
        report = evaluate_results({"good": tiny["good"]}, index, skip_missing=True)
    assert report["trackers"]["good"]["sequences"] == 2


def test_malformed_annotations_count_as_missing(tiny):
    write_sequence(tiny["root"], "bear-2", [[1, 1, 10, 10]] * 3)
    (tiny["root"] / "bear" / "bear-2" / "full_occlusion.txt").write_text("0,1\n")
    tiny["split"].write_text("airplane-1\nbasketball-1\nbear-2\n")
    with pytest.raises(DatasetError, match=r"bear-2 \(first problem: .*full_occlusion.txt: 2 flags"):
        evaluate_results({"good": tiny["good"]}, _index(tiny))


def test_official_convention_is_recorded_and_applied(tiny):
    write_result(tiny["good"], "basketball-1", [[1, 1, 10, 10], [np.nan] * 4])
    index = _index(tiny)
    with pytest.raises(DatasetError, match="NaN"):
        evaluate_results({"good": tiny["good"]}, index)
    report = evaluate_results({"good": tiny["good"]}, index, convention="official")
    assert report["convention"] == "official"
    # The NaN row takes frame 1's box, which is exact: the same scores as the clean file.
    assert report["trackers"]["good"]["success_auc"] == pytest.approx(100 * (AUC_AIRPLANE + AUC_BASKETBALL) / 2)


def test_tracker_names_are_folder_names(tmp_path):
    a, b = tmp_path / "x" / "ATOM", tmp_path / "y" / "ATOM"
    assert list(tracker_dirs([a, tmp_path / "DiMP"])) == ["ATOM", "DiMP"]
    assert list(tracker_dirs([a, b])) == ["x/ATOM", "y/ATOM"]
