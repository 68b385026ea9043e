"""Finding a model's files offline and naming its exact weights, without loading them (no torch here)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cliplabel_pipeline.core.errors import CliplabelError


class ModelNotFoundError(CliplabelError):
    """The model is neither a local directory nor in the local Hugging Face cache."""


def resolve_model_dir(model: str) -> Path:
    """A local Transformers directory for ``model`` (a directory, or a hub id found in the local cache)."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"model directory {path} has no config.json: not a Transformers model")
        return path.resolve()
    if path.is_absolute() or model.startswith((".", "~")) or model.count("/") != 1:  # a path, not a hub id
        raise ModelNotFoundError(f"model directory {path} does not exist (a hub id is <owner>/<name>, such as "
                                 f"openai/clip-vit-base-patch32); set --model or CLIPLABEL_MODEL to a model directory")
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


def embedding_width(model_dir: Path) -> int | None:
    """The width of the model's projected embeddings, from its ``config.json`` (None when it does not say)."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    width = config.get("projection_dim")
    return int(width) if isinstance(width, int) else None
