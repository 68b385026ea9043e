"""Pillow's bicubic resize as two matrix products, for a batch of regions at once on any torch device.

Pillow resizes 8-bit images in two passes (horizontal first, unless the height shrinks by more than twice what
the width does, in the Pillows that choose: probed once); each output pixel is a weighted sum of
input pixels with weights from its bicubic filter (a = -0.5, widened by the scale when shrinking, normalised,
then rounded to 22-bit fixed point), rounded half up and clipped to 0..255 after each pass. Written as dense
weight matrices, a whole batch of regions of different sizes resizes in two batched matmuls, and the matrices
also place each result on its canvas: rows outside the pasted area are zero. Regions are given offset by -128
(neutral grey), so what lies outside the picture on the canvas is grey with no extra step.

The matrix products run in float64: each product of a 22-bit coefficient and a level is exact and so is a sum
of a few hundred, so the result is Pillow's integer sum on every device and BLAS (in float32 the order of the
sums, which differs between CPUs, GPUs and TF32 settings, rounded some exact halves the other way: 0.3% of
values a level apart on the H200 machine). Only the offset by -128 differs from Pillow's sum, by far less than
a level.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

PRECISION = float(1 << 22)  # Pillow's fixed-point coefficients for 8-bit images
GREY = 128.0  # NEUTRAL_GREY, the zero of the offset regions


def _bicubic(x: torch.Tensor) -> torch.Tensor:
    a, x = -0.5, x.abs()
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return torch.where(x < 1.0, near, torch.where(x < 2.0, far, torch.zeros_like(x)))


def resize_weights(in_len: torch.Tensor, out_len: torch.Tensor, offset: torch.Tensor, canvas: int,
                   width: int) -> torch.Tensor:
    """float64 ``[n, canvas, width]``: row ``c`` of item ``i`` weighs the ``in_len[i]`` input pixels (the rest of
    ``width`` is padding, weighted 0) into output pixel ``c - offset[i]`` of a resize to ``out_len[i]``; rows
    outside ``0 <= c - offset < out_len`` are zero. A negative offset crops (``-left``), a positive one pads."""
    dev = in_len.device
    in_len, out_len, offset = (t.to(torch.float64).view(-1, 1, 1) for t in (in_len, out_len, offset))
    out_x = torch.arange(canvas, device=dev, dtype=torch.float64).view(1, -1, 1) - offset
    x = torch.arange(width, device=dev, dtype=torch.float64).view(1, 1, -1)
    scale = in_len / out_len
    filterscale = scale.clamp(min=1.0)
    support = 2.0 * filterscale
    centre = (out_x + 0.5) * scale
    xmin = torch.floor(centre - support + 0.5).clamp(min=0.0)
    xmax = torch.minimum(torch.floor(centre + support + 0.5), in_len)
    w = torch.where((x >= xmin) & (x < xmax), _bicubic((x - centre + 0.5) / filterscale), torch.zeros((), device=dev,
                                                                                                     dtype=torch.float64))
    total = w.sum(-1, keepdim=True)
    w = torch.where(total != 0, w / torch.where(total != 0, total, torch.ones_like(total)), w)
    w = torch.trunc(w * PRECISION + torch.where(w < 0, -0.5, 0.5)) / PRECISION
    inside = (out_x >= 0) & (out_x < out_len)
    return torch.where(inside, w, torch.zeros((), device=dev, dtype=torch.float64))


@functools.cache
def pillow_chooses_order() -> bool:
    """Whether this Pillow runs the vertical pass first when the height shrinks more than twice the width
    (newer Pillows do; older ones always go horizontal first): one tiny resize whose result tells them apart."""
    from PIL import Image

    pixels = (np.arange(6 * 40, dtype=np.int64).reshape(40, 6) * 37 % 251).astype(np.uint8)
    got = np.asarray(Image.fromarray(pixels).resize((5, 9), Image.BICUBIC)).astype(np.float32)
    region = torch.from_numpy(pixels).double().view(1, 1, 40, 6) - GREY
    wy = resize_weights(torch.tensor([40]), torch.tensor([9]), torch.tensor([0]), 9, 40)
    wx = resize_weights(torch.tensor([6]), torch.tensor([5]), torch.tensor([0]), 5, 6)
    vertical = _pass(_pass(wy.unsqueeze(1) @ region) @ wx.transpose(1, 2).unsqueeze(1))[0, 0] + GREY
    return bool(np.array_equal(vertical.numpy(), got))


def vertical_first(in_w: torch.Tensor, in_h: torch.Tensor, out_w: torch.Tensor, out_h: torch.Tensor) -> torch.Tensor:
    """Per item, whether Pillow runs the vertical pass first for this resize (of the whole image)."""
    if not pillow_chooses_order():
        return torch.zeros_like(in_w, dtype=torch.bool)
    shrink_h, shrink_w = in_h - out_h, in_w - out_w
    return (shrink_h > 0) & (shrink_h > 2 * shrink_w)


def _pass(x: torch.Tensor) -> torch.Tensor:
    """One pass's rounding as Pillow does it (half up, clipped), in the grey-offset range."""
    return torch.floor(x + 0.5).clamp_(-GREY, 255.0 - GREY)


def resample(regions: torch.Tensor, wy: torch.Tensor, wx: torch.Tensor,
             down_first: torch.Tensor | None = None) -> torch.Tensor:
    """``regions`` float32 ``[n, C, H, W]`` offset by -128, ``wy`` ``[n, out_h, H]``, ``wx`` ``[n, out_w, W]``:
    the resized, placed pixels ``[n, C, out_h, out_w]``, still offset by -128 (whole levels). Items where
    ``down_first`` is true run the vertical pass first (``vertical_first``)."""
    if regions.dtype != torch.float64:  # exact sums (see the module's docstring); float32 out
        return resample(regions.double(), wy.double(), wx.double(), down_first).float()
    wy, wxt = wy.unsqueeze(1), wx.transpose(1, 2).unsqueeze(1)
    if down_first is None or not bool(down_first.any()):
        return _pass(wy @ _pass(regions @ wxt))
    if bool(down_first.all()):
        return _pass(_pass(wy @ regions) @ wxt)
    out = regions.new_empty((regions.shape[0], regions.shape[1], wy.shape[2], wxt.shape[3]))
    for rows, first in ((~down_first, False), (down_first, True)):
        idx = rows.nonzero().squeeze(1)
        out[idx] = resample(regions[idx], wy[idx, 0], wxt[idx, 0].transpose(1, 2), torch.full_like(idx, first, dtype=torch.bool))
    return out


def letterbox_geometry(w: torch.Tensor, h: torch.Tensor, side: int, margin: float = 0.0) -> tuple[torch.Tensor, ...]:
    """``letterbox``'s sizes and offsets (``reading.images``): longer side and ``margin`` of it on each side to
    ``side``, centred. Returns ``(new_w, new_h, left, top)`` as int64 tensors."""
    w64, h64 = w.to(torch.float64), h.to(torch.float64)
    scale = side / (torch.maximum(w64, h64) * (1 + 2 * margin))
    new_w = torch.round(w64 * scale).clamp(min=1).to(torch.int64)  # round half to even, as Python's round
    new_h = torch.round(h64 * scale).clamp(min=1).to(torch.int64)
    return new_w, new_h, (side - new_w) // 2, (side - new_h) // 2


def centre_crop_geometry(w: torch.Tensor, h: torch.Tensor, size: int, crop: int) -> tuple[torch.Tensor, ...]:
    """``resize_and_crop``'s sizes and offsets (``reading.images``): shortest side to ``size``, centre crop.
    Returns ``(new_w, new_h, -left, -top)``; an offset above 0 means the image is too small to crop."""
    w64, h64 = w.to(torch.float64), h.to(torch.float64)
    new_long = torch.trunc(size * torch.maximum(w64, h64) / torch.minimum(w64, h64)).to(torch.int64)
    tall = w <= h
    new_w = torch.where(tall, torch.full_like(w, size), new_long)
    new_h = torch.where(tall, new_long, torch.full_like(h, size))
    return new_w, new_h, -((new_w - crop) // 2), -((new_h - crop) // 2)
