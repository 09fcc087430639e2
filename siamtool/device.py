"""Pick the torch device: CUDA when present (or asked for), else CPU; a clear error for a bad request.

torch is imported where it is needed: `device_name` answers "cpu" without it when no GPU driver is
loaded, so the Python API's ONNX path on CPU never imports torch (`benchmarks/load_time.py`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from siamtool.errors import SiamtoolError

if TYPE_CHECKING:
    import torch


def resolve_device(name: Any = "auto", what: str = "--device") -> torch.device:
    """`name` (auto, cpu, cuda, cuda:N, or a torch.device) as a torch.device; `what` names the option in the
    one-line error."""
    import torch

    name = str(name)
    shown = f"{what}{name!r}" if what.endswith("=") else f"{what} {name}"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise SiamtoolError(f"{shown}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SiamtoolError(f"{shown}: CUDA is not available here; use cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SiamtoolError(f"{shown}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif dev.type != "cpu":
        raise SiamtoolError(f"{shown}: expected auto, cpu, cuda or cuda:N")
    return dev


def no_gpu_driver() -> bool:
    """True when this Linux machine has neither an NVIDIA driver loaded nor a ROCm device (torch's "cuda" on
    AMD), so torch cannot see a GPU; False where that cannot be told without asking torch (other systems)."""
    return (sys.platform.startswith("linux") and not Path("/proc/driver/nvidia/version").exists()
            and not Path("/dev/kfd").exists())


def device_name(name: Any = "auto", what: str = "--device") -> str:
    """`resolve_device` as a string ("cpu", "cuda:0"), without importing torch for "cpu", and for "auto" on a
    machine without a GPU driver (where `resolve_device` would answer "cpu" too)."""
    if str(name) == "cpu" or (str(name) == "auto" and no_gpu_driver()):
        return "cpu"
    return str(resolve_device(name, what))


def thread_budget() -> int | None:
    """Intra-op threads for a runtime beside torch: torch's count where torch is loaded (eval workers and
    benchmarks set their CPU budget with `torch.set_num_threads`), else what torch would start with:
    $OMP_NUM_THREADS, or None (the runtime's default, one thread per physical core, as torch's)."""
    if "torch" in sys.modules:
        return sys.modules["torch"].get_num_threads()
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def available_cores() -> int:
    """CPU cores this process may use (respects taskset/cgroup affinity, unlike os.cpu_count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)
