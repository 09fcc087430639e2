"""KeepTrack-style candidate association, a probe of issue #20's look-alike routes (not a setting).

Each frame the fused score map's local maxima (>= 0.3 x its maximum, at most 5) are candidates with a
frame position and an L2-normalised backbone feature. They are matched to the previous frame's
candidates greedily by ``distance / target size + (1 - cosine)``, within 1.5 target sizes; the candidate
at the chosen box is the target. While a candidate matched to the target exists, the cells within one
cell of a candidate matched to a previous non-target candidate keep half their fused score: a look-alike
followed as such cannot take over by outscoring the target for a frame. KeepTrack learns this matching;
this probe asks whether a hand-made one moves validation (docs/benchmarks.md, "Candidate association").

    python benchmarks/association_probe.py --lasot $S/train_real --lasot $S/train_real2 \\
        --lasot /work/train/render_val --sequences $VAL22 --init-jitter 4

Prints the shipped tracker's and the probe's scores, five starts per sequence as tune_tracking.py does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tune_tracking  # noqa: E402
from tune_tracking import INIT_JITTER, backend_for, load_frames  # noqa: E402

from siamtool.tracking.online import local_maxima  # noqa: E402
from siamtool.tracking.tracker import Tracker  # noqa: E402

RELATIVE, MAX_CANDIDATES, RADIUS, SUPPRESS = 0.3, 5, 1.5, 0.5
"""Fixed before the probe's numbers (RULES.md, rule K), not tuned."""


class AssociatingTracker(Tracker):
    """The shipped Tracker with the candidates of consecutive frames matched (see the module docstring)."""

    def initialize(self, frame_bgr, box_xywh):
        super().initialize(frame_bgr, box_xywh)
        self.previous: list[dict] | None = None
        self.current: list[dict] | None = None

    def next_window(self):
        self.window = super().next_window()
        return self.window

    def _candidates(self, fused: np.ndarray, features: np.ndarray) -> list[dict]:
        stride = self.cfg.data.search_size / fused.shape[0]
        out = []
        rows, cols = local_maxima(fused, RELATIVE * float(np.max(fused)))
        for i, j in zip(rows[:MAX_CANDIDATES].tolist(), cols[:MAX_CANDIDATES].tolist()):
            xy = np.array([(j + 0.5) * stride, (i + 0.5) * stride]) / self.window.scale
            feature = features[:, i, j].astype(np.float64)
            out.append({"cell": (i, j), "xy": xy + [self.window.x0, self.window.y0],
                        "feature": feature / (np.linalg.norm(feature) + 1e-12), "match": None, "target": False})
        return out

    def _match(self, candidates: list[dict]) -> None:
        size = float(np.sqrt(np.prod(self.size)))
        pairs = sorted((np.hypot(*(c["xy"] - p["xy"])) / size + 1.0 - float(c["feature"] @ p["feature"]), a, b)
                       for a, c in enumerate(candidates) for b, p in enumerate(self.previous or [])
                       if np.hypot(*(c["xy"] - p["xy"])) <= RADIUS * size)
        taken_a, taken_b = set(), set()
        for _, a, b in pairs:
            if a not in taken_a and b not in taken_b:
                taken_a.add(a)
                taken_b.add(b)
                candidates[a]["match"] = self.previous[b]  # type: ignore[index]

    def _fuse(self, score, out, upsample):
        fused, fine, weight = super()._fuse(score, out, upsample)
        self.current = None
        if len(out) < 3 or not np.all(np.isfinite(out[2])):
            return fused, fine, weight
        self.current = self._candidates(fused, out[2])
        self._match(self.current)
        if any(c["match"] is not None and c["match"]["target"] for c in self.current):
            fused = fused.copy()
            for c in self.current:
                if c["match"] is not None and not c["match"]["target"]:
                    i, j = c["cell"]
                    fused[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2] *= SUPPRESS
        return fused, fine, weight

    def track(self, frame_bgr):
        result = super().track(frame_bgr)
        if self.current is not None:
            if result.lost:  # identities carry over: a candidate keeps its match's role
                for c in self.current:
                    c["target"] = c["match"] is not None and c["match"]["target"]
            elif self.current:
                nearest = int(np.argmin([np.hypot(*(c["xy"] - self.center)) for c in self.current]))
                self.current[nearest]["target"] = True
            for c in self.current:
                c["match"] = None  # one frame of history: the graph of dicts must not grow
            self.previous = self.current
        return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lasot", type=Path, action="append", required=True, help="LaSOT-layout root (repeatable)")
    ap.add_argument("--sequences", nargs="+", required=True, help="sequence names to track")
    ap.add_argument("--init-jitter", type=int, default=4, choices=range(len(INIT_JITTER) + 1), metavar="K",
                    help="also track from K moved initial boxes and score the mean (default 4)")
    ap.add_argument("--json", type=Path, help="write both rows here")
    args = ap.parse_args(argv)
    data = load_frames(args.lasot, args.sequences)
    backend, trained = backend_for(argparse.Namespace(checkpoint=None, backend="onnx"))
    rows = []
    for name, cls in (("shipped", Tracker), ("association", AssociatingTracker)):
        row = tune_tracking.score(backend, trained, [], data, args.init_jitter, tracker_cls=cls)
        row.pop("config")
        row["setting"] = name
        rows.append(row)
        print(f"{name:12s} AUC {row['auc']:.2f}  runs {row.get('run_auc')}  {row['per_sequence']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
