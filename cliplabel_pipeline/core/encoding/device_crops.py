"""A job's crops built where its pictures lie (the GPU): the mask rule, the crop to the mask's box, the grey
outside it, the square padding or the centre crop, the bicubic resize and CLIP's normalisation, for a batch
of items of one picture at once. Each step is the CPU path's (``reading.images``), matched to a level: the
resize is Pillow's own (``resampling``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cliplabel_pipeline.core.encoding import resampling as rs

PIXEL_BUDGET = 1 << 23  # padded region pixels built at once: ~100 MB of float32 working set per batch


@dataclass(frozen=True)
class Boxes:
    """Per item, the region ``x0, y0, x1, y1`` of the picture (int64 ``[n, 4]``) and its file size ``[n, 2]``
    (``w, h``: the geometry is computed on it; the region is in decoded pixels, the same unless reduced)."""

    xyxy: torch.Tensor
    size: torch.Tensor


def _regions(picture: torch.Tensor, xyxy: torch.Tensor, levels: torch.Tensor | None, height: int,
             width: int, levels_at_box: bool = False) -> torch.Tensor:
    """float32 ``[n, 3, height, width]``: each box of ``picture`` ``[H, W, 3]`` (uint8) offset by -128, zero (grey)
    where its mask (``levels[i]``) is off; beyond the box, edge pixels the weights ignore."""
    dev = picture.device
    ys = (xyxy[:, 1:2] + torch.arange(height, device=dev)).minimum(xyxy[:, 3:4] - 1)
    xs = (xyxy[:, 0:1] + torch.arange(width, device=dev)).minimum(xyxy[:, 2:3] - 1)
    ys, xs = ys[:, :, None], xs[:, None, :]
    region = picture[ys, xs].to(torch.float32).sub_(rs.GREY)  # [n, height, width, 3]
    if levels is not None:
        n = torch.arange(len(xyxy), device=dev)[:, None, None]
        if levels_at_box:  # each item's levels start at its box's corner
            ys, xs = ys - xyxy[:, 1, None, None], xs - xyxy[:, 0, None, None]
        region.mul_((levels[n, ys, xs] >= 128).unsqueeze(-1))
    return region.permute(0, 3, 1, 2)


def _normalised(placed: torch.Tensor, mean, std, dtype: torch.dtype) -> torch.Tensor:
    """``normalise_batch`` on grey-offset whole levels: ``(x / 255 - mean) / std`` as the CPU computes it."""
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=placed.device).view(1, 3, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(mean, std)], device=placed.device).view(1, 3, 1, 1)
    return placed.add_(rs.GREY).mul_(scale).sub_(shift).to(dtype)


def build_crops(picture: torch.Tensor, boxes: Boxes, levels: torch.Tensor | None, letterboxed: bool, side: int,
                short_side: int, mean, std, dtype: torch.dtype, levels_at_box: bool = False,
                margin: float = 0.0) -> torch.Tensor:
    """Model-ready pixels ``[n, 3, side, side]`` of ``dtype`` for ``n`` regions of one ``picture`` ``[H, W, 3]`` uint8:
    letterboxed on grey with ``margin`` (masks and cut-outs) or resized to ``short_side`` and centre-cropped
    (CLIP's own geometry), grey outside each item's mask where ``levels`` (``[n, H, W]`` uint8) are given. Built
    in batches that fit ``PIXEL_BUDGET``, largest boxes together. With ``levels_at_box`` the levels are
    ``[n, h, w]`` from each box's corner (masks decoded cropped to their box), not the picture's."""
    xyxy = boxes.xyxy
    wh = xyxy[:, 2:] - xyxy[:, :2]
    fw, fh = boxes.size[:, 0], boxes.size[:, 1]
    if letterboxed:
        new_w, new_h, off_x, off_y = rs.letterbox_geometry(fw, fh, side, margin)
    else:
        new_w, new_h, off_x, off_y = rs.centre_crop_geometry(fw, fh, short_side, side)
    down_first = rs.vertical_first(wh[:, 0], wh[:, 1], new_w, new_h)
    out = torch.empty((len(xyxy), 3, side, side), device=picture.device, dtype=dtype)
    sizes = wh.cpu()
    order = torch.argsort(sizes[:, 0] * sizes[:, 1], descending=True)
    start = 0
    while start < len(order):
        top = sizes[order[start]]
        count = max(1, min(len(order) - start, PIXEL_BUDGET // max(1, int(top[0] * top[1]))))
        idx = order[start:start + count].to(picture.device)
        width, height = (int(v) for v in sizes[order[start:start + count]].max(0).values)
        wx = rs.resize_weights(wh[idx, 0], new_w[idx], off_x[idx], side, width)
        wy = rs.resize_weights(wh[idx, 1], new_h[idx], off_y[idx], side, height)
        region = _regions(picture, xyxy[idx], None if levels is None else levels[idx], height, width, levels_at_box)
        out[idx] = _normalised(rs.resample(region, wy, wx, down_first[idx]), mean, std, dtype)
        start += count
    return out


def uint8_crops(pixels: torch.Tensor, mean, std, dtype: torch.dtype) -> torch.Tensor:
    """uint8 crops ``[n, H, W, 3]`` already on the device (the CPU path's own pixels) normalised as
    ``normalise_batch`` does: ``[n, 3, H, W]`` of ``dtype``."""
    placed = pixels.permute(0, 3, 1, 2).to(torch.float32).sub_(rs.GREY)
    return _normalised(placed, mean, std, dtype)
