"""Score trackers from raw-result folders against a benchmark `Index`: JSON report, tables, plots.

The index's `kind` (`siamtool.data.datasets`) picks pytracking's per-dataset rule in the curves, the
attribute table (LaSOT's 14, OTB's 11, UAV's 12) and, for GOT-10k, the official AO / SR0.50 / SR0.75
next to the curves (each tracker and each sequence gets ``ao``, ``sr50``, ``sr75``).

`evaluate_results` is the one entry point, used by `siamtool eval --results` and by the runner that
tracks with a checkpoint and then scores its results folder. Trackers are always compared on the same
sequences: a sequence missing for any tracker is an error, or with ``skip_missing`` left out for all
of them, with the count said out loud (the classic "279 of 280 sequences silently evaluated").
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from siamtool import __version__
from siamtool.data.lasot import Index, LasotSequence, lasot_frame_counts
from siamtool.errors import DatasetError, SiamtoolError
from siamtool.eval.metrics import (
    CENTRE_THRESHOLDS,
    NORM_THRESHOLDS,
    REPORT_INDEX,
    Curves,
    batch_curves,
    check_convention,
    got10k_scores,
    got10k_sequence_ious,
    overlap_thresholds,
)
from siamtool.eval.results import TrackerResults, extra_lines_warning, frame1_warnings, load_tracker_results
from siamtool.fileio import atomic_path, write_json_atomic
from siamtool.reporting import Reporter, WarningsReporter

LASOT_KINDS = ("lasot", "lasot_ext")
BENCHMARK_TITLES = {"lasot": "LaSOT", "lasot_ext": "LaSOT_ext", "got10k": "GOT-10k", "trackingnet": "TrackingNet",
                    "otb": "OTB", "uav": "UAV", "nfs": "NfS", "vot": "VOT"}
PLOT_FILES = {"success": "success.png", "precision": "precision.png", "norm_precision": "norm_precision.png"}
"""Plot file names inside the output folder."""
REPORT_FILE = "report.json"
_MAX_LISTED = 8


class EvalWarning(UserWarning):
    """Something about the results deserves a look but does not stop scoring (e.g. a one-pixel shift)."""


def tracker_dirs(paths: list[str | Path]) -> dict[str, Path]:
    """Tracker name -> folder; the folder name is the tracker name (with its parent where two clash)."""
    paths = [Path(p) for p in paths]
    names = [p.resolve().name or str(p) for p in paths]
    out: dict[str, Path] = {}
    for p, name in zip(paths, names):
        if names.count(name) > 1:
            name = f"{p.resolve().parent.name}/{name}"
        if name in out:
            raise SiamtoolError(f"{p}: the same results folder is given twice")
        out[name] = p
    return out


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f", ... ({len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else "")


def _pct(x: float | None) -> float | None:
    return None if x is None else float(x) * 100.0


def _scores(c: Curves) -> dict[str, float | None]:
    return {"success_auc": _pct(c.auc), "precision_20": _pct(c.precision_20),
            "norm_precision_20": _pct(c.norm_precision_20)}


def check_annotations(index: Index, split: str, skip_missing: bool, reporter: Reporter) -> None:
    """The split must be complete unless skip_missing; malformed annotations count as missing.

    A visible frame whose box is NaN or has no positive size is not malformed: it is scored as the
    toolkits score LaSOT's own three such frames, and `evaluate_results` counts it in a warning.
    """
    # A skipped line reads "<file in the sequence folder>[:line]: why".
    gone = index.missing + [Path(line.split(":", 1)[0]).parent.name for line in index.skipped]
    if not gone:
        return
    total = len(index.sequences) + len(gone)
    why = f" (first problem: {index.skipped[0]})" if index.skipped else ""
    if not skip_missing:
        raise DatasetError(
            f"{len(gone)} of {total} sequences of split {split!r} have no usable annotations: {_listed(gone)}"
            f"{why}; pass --skip-missing to score the other {len(index.sequences)}"
        )
    reporter.warning(f"{len(gone)} of {total} sequences of split {split!r} have no usable annotations "
                     f"({_listed(gone)}){why}; scoring {len(index.sequences)}")




def check_scorable(index: Index) -> None:
    """A test split that publishes only the first box cannot be scored here: say where the score comes from."""
    test = [s for s in index.sequences if s.gt_frames is not None]
    if test:
        bench = BENCHMARK_TITLES.get(index.kind, index.kind)
        raise DatasetError(
            f"{test[0].annotation_file}: {bench} {index.split} publishes only the first box, so it is scored by the "
            f"benchmark's evaluation server: run the tracker with --checkpoint to write the submission zip, or "
            "score a split with full annotations")


def _load_all(
    trackers: Mapping[str, Path], sequences: list[LasotSequence], convention: str, reporter: Reporter
) -> list[TrackerResults]:
    """Read every tracker's files, counting them on the progress task "results"."""
    reporter.progress("results", completed=0, total=len(trackers) * len(sequences))
    out = []
    for name, directory in trackers.items():
        reporter.progress("results", detail=name)
        out.append(load_tracker_results(name, directory, sequences, convention,
                                        count_done=lambda n: reporter.progress("results", advance=n)))
    return out


def _score_tracker(res: TrackerResults, sequences: list[LasotSequence], convention: str, index: Index) -> dict[str, Any]:
    per_seq = batch_curves([res.boxes[s.name] for s in sequences], [s.gt for s in sequences],
                           [s.absent for s in sequences], convention, dataset=index.kind)
    overall = per_seq.mean(convention)
    per_attribute: dict[str, Any] = {}
    if any(s.attributes for s in sequences):
        for code, long_name in index.attribute_names.items():
            rows = np.array([bool(s.attributes.get(code)) for s in sequences])
            entry: dict[str, Any] = {"name": long_name, "sequences": int(rows.sum())}
            if rows.any():
                entry.update(_scores(per_seq[rows].mean(convention)))
            else:
                entry.update({"success_auc": None, "precision_20": None, "norm_precision_20": None})
            per_attribute[code] = entry
    out = {
        **_scores(overall),
        "sequences": len(sequences),
        "success_curve": (overall.success * 100).tolist(),
        "precision_curve": (overall.precision * 100).tolist(),
        "norm_precision_curve": (overall.norm_precision * 100).tolist(),
        "per_sequence": {s.name: _scores(per_seq[i]) for i, s in enumerate(sequences)},
        "per_attribute": per_attribute,
    }
    if index.kind == "got10k":
        _add_got10k_scores(out, res, sequences)
    return out


def _add_got10k_scores(entry: dict[str, Any], res: TrackerResults, sequences: list[LasotSequence]) -> None:
    """GOT-10k's AO, SR0.50, SR0.75 (percent) for the tracker (pooled frames) and each sequence."""
    ious = []
    for s in sequences:
        if s.cover is None or s.resolution is None:
            what = "cover.label" if s.cover is None else "meta_info.ini (its resolution)"
            raise DatasetError(f"{s.path / what.split(' ')[0]}: missing; GOT-10k's AO needs the cover labels and "
                               "the resolution of every scored sequence")
        seq_ious = got10k_sequence_ious(res.raw[s.name], s.gt, s.cover, s.resolution)
        ious.append(seq_ious)
        if seq_ious.size:
            entry["per_sequence"][s.name].update(got10k_scores(seq_ious))
    entry.update(got10k_scores(np.concatenate(ious)))


def _attribute_coverage(sequences: list[LasotSequence], kind: str = "lasot") -> dict[str, Any]:
    """Which scored sequences carry attributes, and which LaSOT-named ones were refused LaSOT's.

    A sequence gets LaSOT's attributes only when its name and frame count are LaSOT's (`load_sequence`):
    a user's own `person-2` is other footage, and LaSOT person-2's 14 flags would misfile its score.
    """
    counts = lasot_frame_counts() if kind in LASOT_KINDS else {}
    foreign = [s for s in sequences if not s.attributes and s.name in counts]
    return {
        "sequences": sum(1 for s in sequences if s.attributes),
        "left_out": [s.name for s in sequences if not s.attributes],
        "not_lasot_footage": {s.name: {"frames": s.n_frames, "lasot_frames": counts[s.name]} for s in foreign},
    }


def evaluate_results(
    results: Mapping[str, str | Path],
    index: Index,
    out_dir: str | Path | None = None,
    report_path: str | Path | None = None,
    convention: str = "pytracking",
    skip_missing: bool = False,
    split: str = "test",
    plots: bool = True,
    reporter: Reporter | None = None,
    annotations_checked: bool = False,
) -> dict[str, Any]:
    """Score raw results of several trackers ({tracker name: results folder}) on the sequences of `index`.

    Writes the JSON report to `report_path` (default ``out_dir/report.json``) and, with `plots`, the
    success / precision / normalized-precision PNGs into `out_dir`; returns the report dict (values in
    percent). Missing sequences (in the annotations or in any tracker's folder) raise a one-line
    `DatasetError` unless `skip_missing`, which scores every tracker on the sequences all of them have.
    Warnings (a one-pixel shift, frame-1 boxes that are not the GT, skipped sequences) go to `reporter`
    when given, else to Python's `warnings` as `EvalWarning`. `annotations_checked`: the caller ran
    `check_annotations` on `index` already (eval --checkpoint, before tracking), so its warning is not
    repeated.
    """
    check_convention(convention)
    if not results:
        raise SiamtoolError("no results folders to score")
    reporter = reporter or WarningsReporter(EvalWarning)
    check_scorable(index)
    if not annotations_checked:
        check_annotations(index, split, skip_missing, reporter)
    boxless = index.boxless_lines()
    if boxless:
        reporter.warning(f"{len(boxless)} visible frame(s) have no usable ground-truth box (NaN or a size <= 0), "
                         f"e.g. {boxless[0]}: scored as failures for success and precision, as the LaSOT toolkits do")
    sequences = list(index.sequences)
    loaded = _load_all({k: Path(v) for k, v in results.items()}, sequences, convention, reporter)
    scored = _common_sequences(loaded, sequences, skip_missing, reporter)
    report = {
        "trackers": {res.name: _score_tracker(res, scored, convention, index) for res in loaded},
        "convention": convention,
        "split": split,
        "siamtool_version": __version__,
        "attributes": _attribute_coverage(scored, index.kind),
    }
    if report_path is None and out_dir is not None:
        report_path = Path(out_dir) / REPORT_FILE
    if report_path is not None:
        write_json_atomic(report_path, report)
    if plots and out_dir is not None:
        write_plots(report, out_dir, index.kind)
    return report


def _common_sequences(loaded: list[TrackerResults], sequences: list[LasotSequence], skip_missing: bool,
                      reporter: Reporter) -> list[LasotSequence]:
    """The sequences every tracker has results for: all of them, or with `skip_missing` the common ones
    (said out loud, with each tracker's frame-1 warnings)."""
    for res in loaded:
        if res.missing and not skip_missing:
            raise DatasetError(
                f"{res.directory}: no results for {len(res.missing)} of {len(sequences)} sequences: "
                f"{_listed(res.missing)} (expected {res.directory}/<sequence>.txt; pass --skip-missing to "
                "score only the sequences every tracker has)"
            )
    missing_any = {name for res in loaded for name in res.missing}
    scored = [s for s in sequences if s.name not in missing_any]
    if not scored:
        names = ", ".join(res.name for res in loaded)
        raise DatasetError(f"no sequence has results from every tracker ({names}): nothing to score")
    for res in loaded:
        if res.missing:
            reporter.warning(f"{res.name}: {len(res.missing)} of {len(sequences)} sequences have no results "
                             f"({_listed(res.missing)}); scoring {len(scored)} sequences for every tracker")
        for message in [*frame1_warnings(res), extra_lines_warning(res)]:
            if message is not None:
                reporter.warning(message)
    return scored


# ------------------------------------------------------------------------------------------- plots

_PLOTS = {
    # key: (curve key, score key, x values, x label, title, legend location)
    "success": ("success_curve", "success_auc", None, "Overlap threshold", "Success plot (AUC)", "lower left"),
    "precision": ("precision_curve", "precision_20", CENTRE_THRESHOLDS, "Location error threshold (px)",
                  "Precision plot (at 20 px)", "lower right"),
    "norm_precision": ("norm_precision_curve", "norm_precision_20", NORM_THRESHOLDS,
                       "Normalized location error threshold", "Normalized precision plot (at 0.20)", "lower right"),
}


def write_plots(report: dict[str, Any], out_dir: str | Path, benchmark: str = "lasot") -> dict[str, Path]:
    """One PNG per metric, one curve per tracker, best first, the score in the legend. Atomic writes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    written = {}
    trackers = report["trackers"]
    for key, (curve_key, score_key, xs, xlabel, title, loc) in _PLOTS.items():
        if xs is None:
            xs = overlap_thresholds(report["convention"])
        fig = Figure(figsize=(7.0, 5.2), dpi=120)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        order = sorted(trackers, key=lambda n: -trackers[n][score_key])
        for i, name in enumerate(order):
            t = trackers[name]
            ax.plot(xs, t[curve_key], lw=2.2, color=f"C{i % 10}", linestyle=("-", "--", ":")[(i // 10) % 3],
                    label=f"[{t[score_key]:.2f}] {name}")
        if key != "success":
            ax.axvline(xs[REPORT_INDEX], color="0.5", lw=1, linestyle=":")
        n = next(iter(trackers.values()))["sequences"]
        bench = BENCHMARK_TITLES.get(benchmark, benchmark)
        ax.set_title(f"{title}\n{bench} {report['split']}: {n} sequences, {report['convention']} convention",
                     fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("Success rate (%)" if key == "success" else "Precision (%)")
        ax.set_xlim(float(xs[0]), float(xs[-1]))
        ax.set_ylim(0, 100)
        ax.grid(True, linestyle=":", alpha=0.7)
        ax.legend(loc=loc, fontsize=9, title="[score] tracker", title_fontsize=9)
        fig.tight_layout()
        path = out_dir / PLOT_FILES[key]
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        written[key] = path
    return written


# ------------------------------------------------------------------------------------------- notes


def attribute_note(report: dict[str, Any], benchmark: str = "lasot") -> str | None:
    """One line on the sequences the per-attribute table leaves out (None when it covers them all)."""
    cov = report.get("attributes") or {}
    covered, left, foreign = cov.get("sequences", 0), cov.get("left_out") or [], cov.get("not_lasot_footage") or {}
    if not left or (not covered and not foreign):
        return None  # every sequence is covered, or none claims to be LaSOT: nothing to explain
    if benchmark not in LASOT_KINDS:
        bench = BENCHMARK_TITLES.get(benchmark, benchmark)
        return (f"the per-attribute table covers {covered} of {covered + len(left)} sequences; {len(left)} have no "
                f"{bench} attributes ({_listed(left)})")
    why = ""
    if foreign:
        name, n = next(iter(foreign.items()))
        why = (f"; {len(foreign)} share a LaSOT name but not its frame count (e.g. {name}: {n['frames']} frames, "
               f"LaSOT's has {n['lasot_frames']}), so LaSOT's attributes do not describe them")
    if not covered:
        return f"no per-attribute table: none of the {len(left)} sequences is LaSOT footage{why}"
    return (f"the per-attribute table covers {covered} of {covered + len(left)} sequences; {len(left)} are not "
            f"LaSOT footage and are left out ({_listed(left)}){why}")
