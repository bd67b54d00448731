"""Measurements: latency and throughput, peak memory, parameters and FLOPs, matmul peak, machine fingerprint.

Memory is the process's peak resident set size, read from ``VmHWM`` in ``/proc/self/status``. Before each phase
(fit, inference) the high-water mark is reset to the current RSS by writing ``5`` to ``/proc/self/clear_refs``
(Linux >= 4.0), so each phase's peak is its own. Where that is not possible the lifetime peak
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is reported and :func:`memory_method` says so. Peaks are whole
process figures (Python, torch and the loaded data included); dataloader worker processes are not counted.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "CPU_FLAGS",
    "count_flops",
    "count_parameters",
    "current_rss_mb",
    "fingerprint",
    "matmul_peak",
    "memory_method",
    "peak_rss_mb",
    "reset_peak_rss",
    "time_callable",
]

#: CPU flags that decide which kernels torch/OpenVINO can use (vector width, int8 dot products, bf16, AMX)
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
             "amx_int8")
_VERSIONED = ("uad_plugins", "torch", "openvino", "nncf", "anomalib", "timm", "numpy", "lightning", "torchmetrics")
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


# ---------------------------------------------------------------------------------------------- memory
def _status_kb(field: str) -> float | None:
    try:
        for line in _STATUS.read_text(encoding="ascii").splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the process's RSS high-water mark to its current RSS; ``False`` where the OS does not allow it."""
    try:
        _CLEAR_REFS.write_text("5", encoding="ascii")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    """Peak resident set size in MiB since the last :func:`reset_peak_rss` (else since the process started)."""
    kb = _status_kb("VmHWM")
    if kb is None:
        import resource

        kb = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
    return round(kb / 1024.0, 1)


def current_rss_mb() -> float | None:
    """Current resident set size in MiB (``None`` without /proc)."""
    kb = _status_kb("VmRSS")
    return None if kb is None else round(kb / 1024.0, 1)


def memory_method() -> str:
    """How peak memory is measured on this machine (recorded in bench.json)."""
    if _status_kb("VmHWM") is not None and reset_peak_rss():
        return "VmHWM from /proc/self/status, reset per phase via /proc/self/clear_refs (whole process RSS)"
    if _status_kb("VmHWM") is not None:
        return "VmHWM from /proc/self/status, not resettable: lifetime peak of the process"
    return "resource.getrusage(RUSAGE_SELF).ru_maxrss: lifetime peak of the process"


# ---------------------------------------------------------------------------------------------- timing
def time_callable(fn: Callable[[], Any], *, warmup: int, iterations: int, batch_size: int) -> dict[str, Any]:
    """Call ``fn`` ``warmup`` times untimed, then ``iterations`` times timed; milliseconds per call.

    Throughput is ``batch_size`` images over the median latency.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    times.sort()
    p50 = statistics.median(times)
    p95 = _percentile(times, 95.0)
    return {"p50_ms": round(p50, 3), "p95_ms": round(p95, 3), "mean_ms": round(statistics.fmean(times), 3),
            "min_ms": round(times[0], 3), "max_ms": round(times[-1], 3),
            "throughput_ips": round(batch_size / (p50 / 1000.0), 2) if p50 > 0 else None,
            "iterations": iterations, "warmup": warmup}


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation percentile of already sorted values (numpy's default method)."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


# ---------------------------------------------------------------------------------------------- model size
def count_parameters(module: Any) -> dict[str, int]:
    """Parameter and buffer element counts (memory banks and Gaussian statistics are buffers)."""
    params = sum(int(p.numel()) for p in module.parameters())
    buffers = sum(int(b.numel()) for b in module.buffers())
    return {"parameters": params, "buffers": buffers}


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` as counted by ``torch.utils.flop_counter.FlopCounterMode``.

    It counts matrix products and convolutions (2 FLOPs per multiply-add); element-wise ops, ``cdist``, sorting
    and top-k are not counted, so this is a lower bound for distance-based models.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fn()
    return int(counter.get_total_flops())


def matmul_peak(size: int = 2048, threads: int = 2, repeats: int = 10, warmup: int = 2) -> dict[str, Any]:
    """Measured fp32 matmul throughput of torch (``size`` x ``size``, ``threads`` threads), GFLOP/s."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=generator)
        b = torch.randn(size, size, generator=generator)
        for _ in range(warmup):
            torch.mm(a, b)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    flops = 2.0 * size ** 3
    return {"gflops_best": round(flops / min(times) / 1e9, 1), "gflops_median": round(flops / statistics.median(times)
                                                                                       / 1e9, 1),
            "size": size, "threads": threads, "repeats": repeats, "dtype": "float32"}


# ---------------------------------------------------------------------------------------------- fingerprint
def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return model, flags


def _cpu_quota() -> str | None:
    """The cgroup v2 CPU quota (``max 100000`` = unlimited; ``200000 100000`` = 2 CPUs), if readable."""
    try:
        return Path("/sys/fs/cgroup/cpu.max").read_text(encoding="ascii").strip()
    except OSError:
        return None


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def fingerprint(*, openvino_threads: int | None = None) -> dict[str, Any]:
    """Hardware and library fingerprint of this machine and process."""
    import torch

    model, flags = _cpuinfo()
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "cpu": model,
        "cpu_flags": {flag: flag in flags for flag in CPU_FLAGS},
        "cores_logical": os.cpu_count(),
        "cores_usable": usable,
        "cgroup_cpu_max": _cpu_quota(),
        "torch_threads": torch.get_num_threads(),
        "openvino_inference_threads": openvino_threads,
        "versions": {dist: _version(dist) for dist in _VERSIONED},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
