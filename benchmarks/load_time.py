"""How long `siamtool.load_tracker()` takes to hand back the shipped tracker on CPU, in a fresh process, once
the ONNX export cache exists (issue #22's goal: under 2 s).

Each repetition starts a new Python process (what a script pays) and times, inside it, from before
``import siamtool`` to the returned tracker, split into the imports (`siamtool.api`: OpenCV, onnxruntime;
torch too before the ONNX path stopped importing it) and the `load_tracker` call (cache lookup, checkpoint
hash, two onnxruntime sessions); a second kind of process times ``import torch`` alone, the floor any
torch-importing path pays. Run it from an older checkout to measure the code as it was: the processes
import the siamtool of the folder this script is in. The two
kinds alternate, so both see the same machine load (this CPU is shared); reported are the median and the
best (minimum) of each, and the 1-minute load average. The first call fills the cache (`SIAMTOOL_CACHE`,
default ~/.cache/siamtool) if it is empty and is not counted.

    python benchmarks/load_time.py                 # 7 repetitions
    python benchmarks/load_time.py --repeat 3 --json load.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

LOAD = """
import json, time
t0 = time.perf_counter()
import siamtool.api
t1 = time.perf_counter()
tracker = siamtool.load_tracker(device="cpu")
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "total_s": t2 - t0, "backend": type(tracker.backend).__name__}))
"""
TORCH = """
import json, time
t0 = time.perf_counter()
import torch
print(json.dumps({"torch_s": time.perf_counter() - t0}))
"""


def child(code: str) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, env=env,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="fresh processes of each kind (default 7)")
    parser.add_argument("--json", type=Path, help="also write the raw timings here")
    args = parser.parse_args()
    first = child(LOAD)  # fills the export cache if needed; not counted
    runs: list[dict] = []
    for _ in range(args.repeat):
        runs.append({**child(LOAD), **child(TORCH)})
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"backend: {first['backend']}, {args.repeat} fresh processes each, 1-min load average {load:.2f}")
    print("| measure | median s | best s |\n| --- | ---: | ---: |")
    for key, label in (("total_s", "import siamtool + load_tracker()"), ("import_s", "  imports (siamtool.api)"),
                       ("load_s", "  load_tracker() call"), ("torch_s", "import torch alone")):
        values = [r[key] for r in runs]
        print(f"| {label} | {statistics.median(values):.2f} | {min(values):.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"load_average": load, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
