"""Loading CLIP (offline only) and choosing device and precision."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import CLIPModel, CLIPTokenizer

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.settings import DEFAULT_MODEL, default_cache_dir
from cliplabel_pipeline.core.encoding import heap
from cliplabel_pipeline.core.encoding.devices import resolve_device, resolve_precision, text_precision
from cliplabel_pipeline.core.encoding.weights import model_identity, resolve_model_dir
from cliplabel_pipeline.core.values import EncoderInfo


log = logging.getLogger(__name__)

# int8 (CPU only): the image tower runs in ONNX Runtime with int8 weights (core/int8.py)
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.float32}


@functools.cache
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
        return text_precision(self.precision)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the PyTorch model's weights."""
        return PRECISIONS[self.text_precision]

    @property
    def info(self) -> EncoderInfo:
        return EncoderInfo(self.name, self.identity, self.precision, self.device)

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
    except Exception as exc:  # noqa: BLE001 - corrupt weights/config raise many types (OSError, ValueError, SafetensorError...)
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
        from cliplabel_pipeline.core.encoding.int8 import load_int8_tower

        handle.image_tower = load_int8_tower(model, handle.identity, handle.crop_size, cache_dir)
        model.vision_model = model.visual_projection = None  # ONNX Runtime holds the image tower now
        handle.model = model.to(handle.dtype)
    return handle


def quiet_transformers() -> None:
    """Transformers' own progress bars and notices say nothing a cliplabel user can act on (the service's log
    showed its weight-loading bar): off, in every face that loads a model. Process-wide: a process that loads
    a model (a Dagster code location too) no longer shows Transformers' warnings below errors."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def load_clip(model: str = DEFAULT_MODEL, device: str = "auto", precision: str = "auto",
              cache_dir: Path | None = None) -> ClipHandle:
    """Load ``model`` (hub id from the local cache, or a Transformers directory) once per process.

    Never downloads. Raises ``ModelNotFoundError`` with one line naming ``cliplabel model pull``.
    ``cache_dir`` (the default cache folder when None) holds the int8 image tower when ``precision`` is int8.
    """
    quiet_transformers()
    heap.keep_buffers()
    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    int8_dir = Path(cache_dir or default_cache_dir()) if precision == "int8" else None
    return _load(resolve_model_dir(model), model, device, precision, int8_dir)


CONNECT_TIMEOUT_S = 10.0  # for `model pull`; reads wait HF_HUB_DOWNLOAD_TIMEOUT (the hub's own setting)


def _bound_every_wait(request) -> None:
    """A request hook: huggingface_hub sends some requests (the repository listing) with no timeout at all, so
    a server that accepts and never answers would hold ``model pull`` for good. Each unset limit is filled."""
    from huggingface_hub import constants

    read = float(constants.HF_HUB_DOWNLOAD_TIMEOUT)
    limits = {"connect": CONNECT_TIMEOUT_S, "read": read, "write": read, "pool": CONNECT_TIMEOUT_S}
    given = request.extensions.get("timeout") or {}
    request.extensions = {**request.extensions,
                          "timeout": {k: given.get(k) if given.get(k) is not None else v for k, v in limits.items()}}


def _network_failure(exc: BaseException) -> str | None:
    """``"timeout"`` or ``"connect"`` when the chain of ``exc`` holds such a network error, else None."""
    seen: BaseException | None = exc
    while seen is not None:
        name = type(seen).__name__
        if "Timeout" in name or isinstance(seen, TimeoutError):
            return "timeout"
        if name in ("ConnectError", "ConnectionError") or isinstance(seen, ConnectionError):
            return "connect"
        seen = seen.__cause__ or seen.__context__
    return None


def pull_model(model: str = DEFAULT_MODEL) -> Path:
    """Download ``model`` into the local Hugging Face cache (the only function that touches the network).

    Every request has connect and read timeouts; a failure ends in one ``CliplabelError`` line naming the fix.
    ``model`` is a hub id: the caller has already told a local folder apart (there is nothing to download).
    """
    from huggingface_hub import constants, get_session, snapshot_download
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(model)
    except HFValidationError:
        raise CliplabelError(f"{model!r} is neither a local folder nor a Hugging Face model id (owner/name, such "
                             f"as {DEFAULT_MODEL}): nothing to download") from None

    session = get_session()
    if _bound_every_wait not in session.event_hooks["request"]:
        session.event_hooks = {**session.event_hooks,
                               "request": [*session.event_hooks["request"], _bound_every_wait]}
    patterns = ["*.json", "*.txt", "*.safetensors"]
    try:
        return Path(snapshot_download(model, allow_patterns=patterns))
    except Exception as exc:  # noqa: BLE001 - network, auth and hub errors come in many classes; all end the same way
        failure = _network_failure(exc)
        if failure == "timeout":
            raise CliplabelError(
                f"could not download {model!r}: {constants.ENDPOINT} did not answer within "
                f"{float(constants.HF_HUB_DOWNLOAD_TIMEOUT):g} s; check the network, proxy or HF_ENDPOINT, or allow "
                f"longer with HF_HUB_DOWNLOAD_TIMEOUT=<seconds>") from None
        if failure == "connect":
            raise CliplabelError(f"could not download {model!r}: cannot connect to {constants.ENDPOINT}; check the "
                                 f"network, proxy or HF_ENDPOINT") from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CliplabelError(f"could not download {model!r}: {type(exc).__name__}: {first}") from None
