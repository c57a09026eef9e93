"""The timing harness of ``benchmarks/latency.py``: device synchronisation, wall-clock timing of one call,
the peak FLOP/s the achieved fraction is measured against, and one-line failure reasons for the report."""
from __future__ import annotations

import time

import torch

H100_PEAK = 989e12  # dense bf16/fp16 tensor-core FLOP/s (SXM); the brief's figure for CUDA devices


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device, fn):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def cpu_matmul_peak(n: int = 1024, reps: int = 5) -> float:
    """Best-of FLOP/s of an fp32 n×n matmul with this process's thread count (the CPU 'peak')."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(timed(torch.device("cpu"), lambda: a @ b)[0] for _ in range(reps))
    return 2 * n ** 3 / best


def peak_flops(device: torch.device, dtype: torch.dtype) -> tuple[float, str]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return H100_PEAK, f"989 TFLOP/s (H100 dense bf16, the reference figure; device: {name})"
    p = cpu_matmul_peak()
    return p, f"{p / 1e9:.1f} GFLOP/s (measured: fp32 1024² matmul, {torch.get_num_threads()} threads)"



def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"
