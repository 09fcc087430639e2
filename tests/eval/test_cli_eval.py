"""`siamtool eval --results` end to end through the CLI: table, files, one-line errors with exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from siamtool.cli import app
from tests.conftest import shared
from tests.eval.conftest import write_result

runner = CliRunner()


def _eval(tiny, *extra):
    return runner.invoke(app, ["eval", "--lasot", str(tiny["root"]), "--split", str(tiny["split"]), *extra])


def _one_line_error(r) -> str:
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    return lines[0]


def test_atom_end_to_end(tmp_path):
    out = tmp_path / "eval_atom"
    r = runner.invoke(app, ["eval", "--lasot", str(shared("lasot_test_annos")), "--split", "test",
                            "--results", str(shared("raw_results", "ATOM")), "--out", str(out)])
    assert r.exit_code == 0, r.output
    row = next(line for line in r.output.splitlines() if "ATOM" in line and "280" in line)
    for number in ("51.4338", "57.6806", "50.5428"):
        assert number in row
    assert "Full Occlusion" in r.output
    report = json.loads((out / "report.json").read_text())
    assert report["trackers"]["ATOM"]["success_auc"] == float(np.float64(report["trackers"]["ATOM"]["success_auc"]))
    for name in ("success.png", "precision.png", "norm_precision.png"):
        assert (out / name).stat().st_size > 10_000


def test_two_trackers_table_and_files(tiny):
    out = tiny["tmp"] / "out"
    worse = tiny["tmp"] / "worse"
    write_result(worse, "airplane-1", [[1, 1, 10, 10]] + [[30, 30, 10, 10]] * 3)
    write_result(worse, "basketball-1", [[1, 1, 10, 10], [30, 30, 10, 10]])
    r = _eval(tiny, "--results", str(tiny["good"]), "--results", str(worse), "--out", str(out),
              "--report-json", str(tiny["tmp"] / "rep.json"))
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    good_row = next(i for i, line in enumerate(lines) if "good" in line)
    worse_row = next(i for i, line in enumerate(lines) if "worse" in line)
    assert good_row < worse_row  # best first
    report = json.loads((tiny["tmp"] / "rep.json").read_text())
    assert set(report["trackers"]) == {"good", "worse"}
    # worse: only frame 1 (replaced by the GT) succeeds: 1 of 4 and 1 of 2 frames, below IoU 1.
    assert report["trackers"]["worse"]["success_auc"] == pytest.approx(100 * (1 / 4 + 1 / 2) / 2 * 20 / 21)
    assert report["trackers"]["worse"]["precision_20"] == pytest.approx(100 * (1 / 4 + 1 / 2) / 2)
    assert (out / "success.png").is_file() and not (out / "report.json").exists()


def test_missing_sequence_is_one_line_and_skip_missing_prints_the_count(tiny):
    (tiny["good"] / "basketball-1.txt").unlink()
    msg = _one_line_error(_eval(tiny, "--results", str(tiny["good"]), "--out", str(tiny["tmp"] / "o")))
    assert "no results for 1 of 2 sequences: basketball-1" in msg and "--skip-missing" in msg
    r = _eval(tiny, "--results", str(tiny["good"]), "--out", str(tiny["tmp"] / "o"), "--skip-missing")
    assert r.exit_code == 0, r.output
    assert "1 of 2 sequences have no results" in r.output and "scoring 1" in r.output


def test_malformed_file_is_one_line_naming_file_and_line(tiny):
    write_result(tiny["good"], "airplane-1", [[1, 1, 10, 10], [1, 1, 10, -10], [1, 1, 10, 10], [1, 1, 10, 10]])
    msg = _one_line_error(_eval(tiny, "--results", str(tiny["good"]), "--out", str(tiny["tmp"] / "o")))
    assert "airplane-1.txt:2: negative box size" in msg
    r = _eval(tiny, "--results", str(tiny["good"]), "--out", str(tiny["tmp"] / "o"), "--convention", "official")
    assert r.exit_code == 0, r.output
    assert "official convention" in r.output


def test_short_file_is_one_line(tiny):
    write_result(tiny["good"], "airplane-1", [[1, 1, 10, 10]] * 3)
    msg = _one_line_error(_eval(tiny, "--results", str(tiny["good"]), "--out", str(tiny["tmp"] / "o")))
    assert "airplane-1.txt:4: file ends after 3 lines but the sequence has 4 frames" in msg


def test_shift_warning_is_printed(tiny):
    shifted = tiny["tmp"] / "zero_based"
    write_result(shifted, "airplane-1", [[0, 0, 10, 10]] * 4)
    write_result(shifted, "basketball-1", [[0, 0, 10, 10]] * 2)
    r = _eval(tiny, "--results", str(shifted), "--out", str(tiny["tmp"] / "o"))
    assert r.exit_code == 0, r.output
    assert "warning:" in r.output and "look 0-based" in r.output


def test_usage_errors_are_one_line(tiny):
    assert "--convention" in _one_line_error(_eval(tiny, "--results", str(tiny["good"]), "--convention", "vot"))
    assert "the default tracker is missing" in _one_line_error(_eval(tiny))
    assert "--lasot" in _one_line_error(runner.invoke(app, ["eval", "--results", str(tiny["good"])]))
    assert "results folder not found" in _one_line_error(_eval(tiny, "--results", str(tiny["tmp"] / "nope")))
