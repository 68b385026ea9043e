"""Running CLIP's towers: fixed-shape image batches, batched text, CUDA out-of-memory fallback."""

from __future__ import annotations

import logging
import time
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


TEXT_BATCH_CUDA = 2048  # prompts per forward on a GPU: CLIP's prompts are short (under 32 tokens), 2048 fit in MBs


@torch.inference_mode()
def encode_texts(handle: ClipHandle, texts: list[str], batch_size: int | None = None,
                 progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Unit-norm fp32 text embeddings ``[len(texts), d]``.

    Prompts are tokenized once, in one call, then encoded in order of token length, so each batch pads only
    to its own longest prompt (about half the compute of batches in bank order); results come back in the
    input order. Batches are padded here as the tokenizer pads (its pad id, its side), so they are the
    tokenizer's own tensors. ``batch_size``: 256 on the CPU (the cached results were made so),
    ``TEXT_BATCH_CUDA`` on a GPU, where results stay on the device until the end.
    """
    dim = handle.model.config.projection_dim
    if not texts:
        return np.zeros((0, dim), np.float32)
    cuda = handle.device.startswith("cuda")
    batch_size = batch_size or (TEXT_BATCH_CUDA if cuda else 256)
    t0 = time.perf_counter()
    ids = handle.tokenizer(texts, truncation=True, max_length=handle.max_text_length)["input_ids"]
    tokenize_s = time.perf_counter() - t0
    order = np.argsort([len(i) for i in ids], kind="stable")
    parts: list[tuple[np.ndarray, torch.Tensor]] = []
    for start in range(0, len(texts), batch_size):
        idx = order[start:start + batch_size]
        input_ids, mask = _padded([ids[i] for i in idx], handle.tokenizer)
        emb = handle.model.get_text_features(input_ids=input_ids.to(handle.device),
                                             attention_mask=mask.to(handle.device)).pooler_output
        parts.append((idx, F.normalize(emb.float(), dim=-1)))
        if not cuda:
            parts[-1] = (idx, parts[-1][1].numpy())
        if progress:
            progress(min(start + batch_size, len(texts)))
    out = np.empty((len(texts), dim), np.float32)
    for idx, emb in parts:
        out[idx] = emb if isinstance(emb, np.ndarray) else emb.cpu().numpy()
    log.info("encoded %d texts: tokenized in %.2fs, encoded in %.2fs (batch %d)", len(texts), tokenize_s,
             time.perf_counter() - t0 - tokenize_s, batch_size)
    return out


def _padded(ids: list[list[int]], tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` int64 as ``tokenizer(..., padding=True, return_tensors="pt")`` gives them."""
    width = max(len(i) for i in ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(ids), width), pad, dtype=torch.int64)
    mask = torch.zeros((len(ids), width), dtype=torch.int64)
    for row, seq in enumerate(ids):
        cols = slice(0, len(seq)) if tokenizer.padding_side == "right" else slice(width - len(seq), width)
        input_ids[row, cols] = torch.tensor(seq, dtype=torch.int64)
        mask[row, cols] = 1
    return input_ids, mask
