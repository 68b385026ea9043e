"""Loading CLIP (offline only) and choosing device and precision."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import CLIPModel, CLIPTokenizer

from cliplabel_pipeline.core.errors import CliplabelError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
# int8 (CPU only): the image tower runs in ONNX Runtime with int8 weights (core/int8.py)
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.float32}


class ModelNotFoundError(CliplabelError):
    """The model is neither a local directory nor in the local Hugging Face cache."""


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX512_BF16 or AMX); elsewhere bf16 is slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; an explicit ``cuda`` without CUDA is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise CliplabelError(f"unknown device {device!r}: use auto, cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CliplabelError("device cuda was asked for but CUDA is not available; use --device cpu or auto")
    return device


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` -> fp16 on CUDA, bf16 on a CPU with native bf16, else fp32."""
    if precision == "auto":
        if device.startswith("cuda"):
            return "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if precision not in PRECISIONS:
        raise CliplabelError(f"unknown precision {precision!r}: use auto, fp32, bf16, fp16 or int8")
    if precision == "int8" and device.startswith("cuda"):
        raise CliplabelError("precision int8 runs on the CPU only: use fp16 (or auto) on CUDA, or --device cpu")
    return precision


def resolve_model_dir(model: str) -> Path:
    """A local Transformers directory for ``model`` (a directory, or a hub id found in the local cache)."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"model directory {path} has no config.json: not a Transformers model")
        return path.resolve()
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(model, local_files_only=True))
    except (LocalEntryNotFoundError, ValueError, OSError) as exc:
        raise ModelNotFoundError(
            f"model {model!r} is not a local directory nor in the local Hugging Face cache: run "
            f"`cliplabel model pull --model {model}` once (it downloads), or set CLIPLABEL_MODEL to a model directory"
        ) from exc


def model_identity(model_dir: Path) -> str:
    """A short hash naming these exact weights: config plus size and ends of each weights file."""
    digest = hashlib.sha256((model_dir / "config.json").read_bytes())
    for weights in sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin")):
        size = weights.stat().st_size
        digest.update(str(size).encode())
        with weights.open("rb") as fh:
            digest.update(fh.read(1 << 20))
            fh.seek(max(0, size - (1 << 20)))
            digest.update(fh.read())
    return digest.hexdigest()[:16]


@dataclass
class ClipHandle:
    """A loaded CLIP model with what the rest of the core needs to use it."""

    name: str
    model_dir: Path
    model: CLIPModel
    tokenizer: CLIPTokenizer
    device: str
    precision: str
    identity: str
    image_size: int
    crop_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    max_text_length: int
    image_tower: Callable[[np.ndarray], np.ndarray] | None = None  # the int8 tower; None: the PyTorch model

    @property
    def text_precision(self) -> str:
        """The precision of the PyTorch model: int8 quantises only the image tower, and its text tower runs
        in the CPU's best float precision (so it shares the text cache with ``auto``)."""
        return resolve_precision("auto", "cpu") if self.precision == "int8" else self.precision

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the PyTorch model's weights."""
        return PRECISIONS[self.text_precision]

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().float().exp().item())

    def move_to_cpu(self) -> None:
        """Fall back to the CPU (after CUDA ran out of memory), in the CPU's best precision."""
        self.device = "cpu"
        self.precision = resolve_precision("auto", "cpu")
        self.model = self.model.to(device="cpu", dtype=self.dtype)


def _processor_settings(model_dir: Path) -> dict:
    path = model_dir / "preprocessor_config.json"
    cfg = json.loads(path.read_text()) if path.is_file() else {}
    size = cfg.get("size", {"shortest_edge": 224})
    crop = cfg.get("crop_size", {"height": 224, "width": 224})
    return dict(
        image_size=size["shortest_edge"] if isinstance(size, dict) else int(size),
        crop_size=crop["height"] if isinstance(crop, dict) else int(crop),
        mean=tuple(cfg.get("image_mean", (0.48145466, 0.4578275, 0.40821073))),
        std=tuple(cfg.get("image_std", (0.26862954, 0.26130258, 0.27577711))),
    )


@functools.lru_cache(maxsize=2)
def _load(model_dir: Path, name: str, device: str, precision: str, cache_dir: Path | None) -> ClipHandle:
    log.info("loading CLIP %s on %s in %s", name, device, precision)
    try:
        model = CLIPModel.from_pretrained(model_dir, local_files_only=True, dtype=PRECISIONS[precision])
        tokenizer = CLIPTokenizer.from_pretrained(model_dir, local_files_only=True)
    except Exception as exc:  # corrupt weights/config raise many types (OSError, ValueError, SafetensorError...)
        raise CliplabelError(
            f"cannot load the CLIP model in {model_dir}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
            f"(files damaged or incomplete: run `cliplabel model pull --model {name}` again, or fix CLIPLABEL_MODEL)"
        ) from None
    model = model.to(device).eval()
    handle = ClipHandle(
        name=name, model_dir=model_dir, model=model, tokenizer=tokenizer, device=device, precision=precision,
        identity=model_identity(model_dir), max_text_length=model.config.text_config.max_position_embeddings,
        **_processor_settings(model_dir),
    )
    if precision == "int8":  # loaded in fp32 for the export; then the text tower moves to its own precision
        from cliplabel_pipeline.core.int8 import load_int8_tower

        handle.image_tower = load_int8_tower(model, handle.identity, handle.crop_size, cache_dir)
        model.vision_model = model.visual_projection = None  # ONNX Runtime holds the image tower now
        handle.model = model.to(handle.dtype)
    return handle


def default_cache_dir() -> Path:
    """Where derived files live (text embeddings, the int8 image tower): ``CLIPLABEL_CACHE``."""
    return Path(os.environ.get("CLIPLABEL_CACHE", Path.home() / ".cache" / "cliplabel"))


def load_clip(model: str = DEFAULT_MODEL, device: str = "auto", precision: str = "auto",
              cache_dir: Path | None = None) -> ClipHandle:
    """Load ``model`` (hub id from the local cache, or a Transformers directory) once per process.

    Never downloads. Raises ``ModelNotFoundError`` with one line naming ``cliplabel model pull``.
    ``cache_dir`` holds the int8 image tower when ``precision`` is int8.
    """
    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    int8_dir = Path(cache_dir or default_cache_dir()) if precision == "int8" else None
    return _load(resolve_model_dir(model), model, device, precision, int8_dir)


def pull_model(model: str = DEFAULT_MODEL) -> Path:
    """Download ``model`` into the local Hugging Face cache (the only function that touches the network)."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.txt", "*.safetensors"]
    try:
        return Path(snapshot_download(model, allow_patterns=patterns))
    except Exception as exc:  # network, auth and hub errors come in many classes; all end the same way
        raise CliplabelError(f"could not download {model!r}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
