"""Which device and precision a run uses: rules that need no model, so that commands which never encode
(cleanup, restore, export) can find the cached concept index of a job's model without importing torch.
torch is imported only to ask whether CUDA is there."""

from __future__ import annotations

from pathlib import Path

from cliplabel_pipeline.core.errors import CliplabelError

PRECISION_NAMES = ("fp32", "bf16", "fp16", "int8")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX512_BF16 or AMX); elsewhere bf16 is slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def text_precision(precision: str) -> str:
    """The precision of the PyTorch text tower: int8 quantises only the image tower, and its text tower runs
    in the CPU's best float precision (so it shares the text cache with ``auto``)."""
    return resolve_precision("auto", "cpu") if precision == "int8" else precision


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; an explicit ``cuda`` without CUDA is an error."""
    if device == "auto":
        return "cuda" if _cuda_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise CliplabelError(f"unknown device {device!r}: use auto, cpu or cuda")
    if device.startswith("cuda") and not _cuda_available():
        raise CliplabelError("device cuda was asked for but CUDA is not available; use --device cpu or auto")
    return device


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` -> fp16 on CUDA, bf16 on a CPU with native bf16, else fp32."""
    if precision == "auto":
        if device.startswith("cuda"):
            return "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if precision not in PRECISION_NAMES:
        raise CliplabelError(f"unknown precision {precision!r}: use auto, fp32, bf16, fp16 or int8")
    if precision == "int8" and device.startswith("cuda"):
        raise CliplabelError("precision int8 runs on the CPU only: use fp16 (or auto) on CUDA, or --device cpu")
    return precision
