"""Reading raw result files: separators, length, NaN, negative and zero sizes, frame-1 checks."""

from __future__ import annotations

import numpy as np
import pytest

from siamtool.data.lasot import index_lasot
from siamtool.errors import DatasetError
from siamtool.eval.results import (
    TrackerResults,
    check_results_dir,
    clean_boxes,
    frame1_warnings,
    load_tracker_results,
    read_result_file,
)
from tests.eval.conftest import write_result

ROWS = [[1, 1, 10, 10], [2, 2, 10, 10], [3, 3, 10, 10]]


@pytest.mark.parametrize("sep", [",", "\t", ", "])
def test_comma_and_tab_separators(tmp_path, sep):
    path = write_result(tmp_path, "s-1", ROWS, sep=sep)
    np.testing.assert_array_equal(read_result_file(path, 3), ROWS)


def test_longer_file_is_cut_to_the_sequence(tmp_path):
    path = write_result(tmp_path, "s-1", ROWS + [[9, 9, 9, 9]])
    np.testing.assert_array_equal(read_result_file(path, 3), ROWS)


def test_shorter_file_names_file_and_first_missing_line(tmp_path):
    path = write_result(tmp_path, "s-1", ROWS[:2])
    for convention in ("pytracking", "official"):
        with pytest.raises(DatasetError, match=r"s-1\.txt:3: file ends after 2 lines but the sequence has 3"):
            read_result_file(path, 3, convention)


def test_nan_is_an_error_in_pytracking_and_carried_forward_officially(tmp_path):
    path = write_result(tmp_path, "s-1", [ROWS[0], ROWS[1], [np.nan, 3, 10, 10]])
    with pytest.raises(DatasetError, match=r"s-1\.txt:3: NaN"):
        read_result_file(path, 3, "pytracking")
    np.testing.assert_array_equal(read_result_file(path, 3, "official"), [ROWS[0], ROWS[1], ROWS[1]])


def test_nan_beyond_the_sequence_length_still_fails_pytracking(tmp_path):
    """pytracking checks the whole file before cutting it; a result set it refuses is refused here too."""
    path = write_result(tmp_path, "s-1", ROWS + [[np.nan] * 4])
    with pytest.raises(DatasetError, match=r":4: NaN"):
        read_result_file(path, 3, "pytracking")
    np.testing.assert_array_equal(read_result_file(path, 3, "official"), ROWS)


def test_negative_size_is_an_error_in_pytracking_and_carried_forward_officially(tmp_path):
    path = write_result(tmp_path, "s-1", [ROWS[0], [2, 2, 10, -4], ROWS[2]])
    with pytest.raises(DatasetError, match=r"s-1\.txt:2: negative box size w=10 h=-4"):
        read_result_file(path, 3, "pytracking")
    np.testing.assert_array_equal(read_result_file(path, 3, "official"), [ROWS[0], ROWS[0], ROWS[2]])


def test_negative_position_is_fine(tmp_path):
    path = write_result(tmp_path, "s-1", [ROWS[0], [-5, -5, 10, 10]])
    assert read_result_file(path, 2)[1, 0] == -5


def test_zero_size_takes_the_previous_box_in_a_chain():
    boxes = np.array([[1, 1, 10, 10], [2, 2, 0, 10], [3, 3, 10, 0], [4, 4, 10, 10], [5, 5, 0, 0]], float)
    expected = [[1, 1, 10, 10], [1, 1, 10, 10], [1, 1, 10, 10], [4, 4, 10, 10], [4, 4, 10, 10]]
    for convention in ("pytracking", "official"):
        np.testing.assert_array_equal(clean_boxes(boxes, convention), expected)


def test_frame_one_is_never_replaced_so_a_bad_frame_one_propagates():
    """Both toolkits fix rows from frame 2 on, before frame 1 is replaced by the GT."""
    boxes = np.array([[1, 1, 0, 0], [2, 2, 0, 0]], float)
    np.testing.assert_array_equal(clean_boxes(boxes), [[1, 1, 0, 0], [1, 1, 0, 0]])


def test_unparseable_line_is_named(tmp_path):
    path = tmp_path / "s-1.txt"
    path.write_text("1,1,10,10\n1,1,ten,10\n")
    with pytest.raises(DatasetError, match=r"s-1\.txt:2: cannot parse"):
        read_result_file(path, 2)


def test_results_dir_checks(tmp_path):
    with pytest.raises(DatasetError, match="results folder not found"):
        check_results_dir(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no .txt result files"):
        check_results_dir(tmp_path / "empty")


def test_missing_files_are_listed_not_raised(tiny):
    (tiny["good"] / "basketball-1.txt").unlink()
    index = index_lasot(tiny["root"], str(tiny["split"]), require_images=False)
    res = load_tracker_results("good", tiny["good"], index.sequences)
    assert res.missing == ["basketball-1"] and list(res.boxes) == ["airplane-1"]


def _with_frame1(deltas) -> TrackerResults:
    res = TrackerResults(name="T", directory=None)  # type: ignore[arg-type]
    res.frame1 = {f"s-{i}": np.asarray(d, float) for i, d in enumerate(deltas)}
    return res


def test_shift_by_one_pixel_is_flagged():
    shifted = [[-1, -1, 0, 0]] * 3 + [[0, 0, 0, 0]]
    (msg,) = frame1_warnings(_with_frame1(shifted))
    assert "-1 px" in msg and "3 of 4" in msg and "0-based" in msg and "add 1" in msg
    (msg,) = frame1_warnings(_with_frame1([[1, 1, 0, 0]] * 4))
    assert "+1 px" in msg and "subtract 1" in msg


def test_frame_one_mismatch_without_shift_is_reported():
    (msg,) = frame1_warnings(_with_frame1([[0, 0, 0, 0], [0, 0, 0, 0], [3, 0, 2, 0]]))
    assert "not the ground truth in 1 of 3" in msg and "s-2" in msg
    assert frame1_warnings(_with_frame1([[0, 0, 0, 0], [0.004, 0, 0, 0]])) == []


def test_frame_one_deltas_come_from_the_file(tiny):
    write_result(tiny["good"], "airplane-1", [[0, 0, 10, 10], [1, 1, 10, 10], [1, 1, 10, 10], [1, 1, 10, 10]])
    index = index_lasot(tiny["root"], str(tiny["split"]), require_images=False)
    res = load_tracker_results("good", tiny["good"], index.sequences)
    np.testing.assert_array_equal(res.frame1["airplane-1"], [-1, -1, 0, 0])
    np.testing.assert_array_equal(res.frame1["basketball-1"], [0, 0, 0, 0])
