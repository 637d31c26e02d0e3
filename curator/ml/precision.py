"""Is bfloat16 compute fast here? CPUs without native bf16 (AVX512-BF16 / AMX) emulate it.

Measured on an AVX2-only AMD EPYC (2 cores): a 1024³ matmul runs at 117 GFLOP/s in float32 and
0.9 GFLOP/s in bfloat16 (~120× slower), where an AVX512-BF16 machine ran bf16 2.6× *faster* than
float32. So bf16 is a speed option only where oneDNN reports native support; ``default_autocast``
picks it there and float32 elsewhere, and ``warn_if_slow_bfloat16`` tells a user who asks for bf16
on a CPU that will emulate it.
"""

from __future__ import annotations

import functools
import warnings

import torch


@functools.cache
def native_bfloat16(device: str = "cpu") -> bool:
    """True when bf16 matmuls run natively (CUDA with bf16 support, or a CPU oneDNN reports as bf16-capable)."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def default_autocast(device: str = "cpu") -> str:
    """``"bfloat16"`` where bf16 is native, else ``"none"`` (float32)."""
    return "bfloat16" if native_bfloat16(device) else "none"


@functools.cache
def warn_if_slow_bfloat16(where: str, device: str = "cpu") -> None:
    """Warn once per ``where`` that bf16 is emulated on this CPU (correct, but far slower than float32)."""
    if not native_bfloat16(device):
        warnings.warn(f"{where}: bfloat16 was requested but this CPU has no native bf16 support "
                      f"(capability {torch.backends.cpu.get_cpu_capability()}); it is emulated and can be "
                      "~100x slower than float32. Use float32 here.", RuntimeWarning, stacklevel=3)
