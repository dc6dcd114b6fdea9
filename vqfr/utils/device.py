"""Turn a ``--device`` value into a usable ``torch.device`` (one rule for restoration and training), and what
the CPU computes natively (where ``auto`` picks bfloat16 for restoration and training)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vqfr.errors import VQFRError

if TYPE_CHECKING:
    import torch


def select_device(device: str | torch.device = "auto", allow_mps: bool = True) -> torch.device:
    """``auto`` picks CUDA, then Apple MPS (if ``allow_mps``), then the CPU; a ``torch.device`` is taken as is.

    An explicit choice that is not available here is a one-line error.
    """
    import torch

    device = str(device or "auto").lower()  # str() also takes a torch.device (its canonical name)
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(allow_mps and mps and mps.is_available())
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise VQFRError(f"--device {device}: no CUDA GPU is available to PyTorch here (use --device cpu)")
    if device == "mps" and not has_mps:
        raise VQFRError("--device mps: Apple MPS is not available here (use --device cpu)")
    try:
        return torch.device(device)
    except RuntimeError:
        raise VQFRError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps") from None


def cpu_flags() -> set[str]:
    """The CPU feature flags Linux reports (x86 ``flags``, Arm ``Features``); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return set(value.split())
    return set()


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bfloat16 natively (x86 AMX-BF16 or AVX512-BF16, Arm BF16)."""
    return bool(cpu_flags() & {"amx_bf16", "avx512_bf16", "bf16"})
