"""Where to run, in which precision, and how fast the hardware could go."""

from __future__ import annotations

import time

import torch

__all__ = ["autocast_dtype", "measure_matmul_flops", "peak_flops", "pick_device"]

# Dense bf16/fp16 tensor-core peaks (FLOP/s, no sparsity), from the vendors' data sheets.
_GPU_PEAKS = {
    "H200": 989e12,
    "H100": 989e12,  # SXM; the PCIe card is lower, see below
    "H100 PCIe": 756e12,
    "A100": 312e12,
    "L4": 121e12,
    "A10G": 125e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
    "V100": 125e12,
    "T4": 65e12,
}


def pick_device(preference: str = "auto") -> torch.device:
    """``auto``: CUDA if present, else Apple's MPS, else the CPU."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(preference)
    except RuntimeError:
        raise ValueError(f"device={preference!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA GPU is visible; use device='auto' or 'cpu'")
    return device


def autocast_dtype(device: torch.device, requested: str = "auto") -> torch.dtype:
    """Compute dtype: bf16 on GPUs that support it (same range as fp32, no loss
    scaling needed), fp16 on older GPUs, fp32 on the CPU and MPS."""
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if requested != "auto":
        if requested not in table:
            raise ValueError(f"dtype={requested!r}: use auto, float32, bfloat16 or float16")
        return table[requested]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """The hardware's peak FLOP/s for dense matmuls, or None if unknown.

    On a GPU this is the data-sheet figure; on the CPU it is measured (a large
    fp32 matmul), since CPUs vary too much for a table.
    """
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key in sorted(_GPU_PEAKS, key=len, reverse=True):
            if key in name:
                peak = _GPU_PEAKS[key]
                return peak if dtype in (torch.bfloat16, torch.float16) else peak / 2
        return None
    if device.type == "cpu":
        return measure_matmul_flops()
    return None


def measure_matmul_flops(n: int = 1024, seconds: float = 0.5) -> float:
    """Best FLOP/s of an n x n fp32 matmul on the CPU, with the current thread count."""
    gen = torch.Generator().manual_seed(0)  # its own generator: never disturb the caller's RNG
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    a @ b  # warm-up: thread pool and caches
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best
