"""Running CLIP's towers: fixed-shape image batches, batched text, CUDA out-of-memory fallback."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from cliplabel_pipeline.core.encoding.model import ClipHandle

log = logging.getLogger(__name__)


@torch.inference_mode()
def _image_forward(handle: ClipHandle, pixels: torch.Tensor) -> np.ndarray:
    if handle.image_tower is not None:
        out = torch.from_numpy(handle.image_tower(pixels.numpy()))
        return F.normalize(out, dim=-1).numpy()
    if handle.device.startswith("cuda"):
        if pixels.device.type == "cpu":
            pixels = pixels.pin_memory()
        pixels = pixels.to(handle.device, non_blocking=True)
    else:  # pixels built on the GPU reach here after a fallback to the CPU
        pixels = pixels.to("cpu")
    out = handle.model.get_image_features(pixel_values=pixels.to(handle.dtype)).pooler_output
    return F.normalize(out.float(), dim=-1).cpu().numpy()


def encode_images(handle: ClipHandle, pixels: np.ndarray | torch.Tensor, batch_size: int | None = None) -> np.ndarray:
    """Unit-norm fp32 image embeddings ``[n, d]`` for preprocessed ``pixels`` ``[n, 3, H, W]``.

    A short batch is padded to ``batch_size`` so every forward pass has the same shape (oneDNN caches
    one kernel plan per shape). On CUDA out-of-memory: retry once in two halves, then fall back to CPU.
    """
    pixels = torch.as_tensor(pixels)
    n = pixels.shape[0]
    if batch_size and n < batch_size and not handle.device.startswith("cuda"):
        pad = pixels.new_zeros((batch_size - n, *pixels.shape[1:]))
        pixels = torch.cat([pixels, pad])
    try:
        return _image_forward(handle, pixels)[:n]
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        log.warning("CUDA out of memory on a batch of %d; retrying in halves", n)
    try:
        half = max(1, n // 2)
        return np.concatenate([_image_forward(handle, pixels[i:i + half]) for i in range(0, n, half)])[:n]
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        log.warning("CUDA out of memory again at batch %d; falling back to CPU for the rest of this process", half)
    handle.move_to_cpu()
    return _image_forward(handle, pixels[:n])


@torch.inference_mode()
def encode_texts(handle: ClipHandle, texts: list[str], batch_size: int = 256,
                 progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Unit-norm fp32 text embeddings ``[len(texts), d]``.

    Prompts are encoded in order of token length, so each batch pads only to its own longest prompt
    (about half the compute of batches in bank order); results come back in the input order.
    """
    dim = handle.model.config.projection_dim
    if not texts:
        return np.zeros((0, dim), np.float32)
    lengths = [len(ids) for ids in handle.tokenizer(texts, truncation=True, max_length=handle.max_text_length)["input_ids"]]
    order = np.argsort(lengths, kind="stable")
    out = np.empty((len(texts), dim), np.float32)
    for start in range(0, len(texts), batch_size):
        idx = order[start:start + batch_size]
        tokens = handle.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                  max_length=handle.max_text_length, return_tensors="pt").to(handle.device)
        emb = handle.model.get_text_features(**tokens).pooler_output
        out[idx] = F.normalize(emb.float(), dim=-1).cpu().numpy()
        if progress:
            progress(min(start + batch_size, len(texts)))
    return out
