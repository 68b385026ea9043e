"""Label Studio's brush RLE: the run-length code its ``brushlabels`` results carry.

The mask is flattened as an RGBA image (each pixel four bytes, 255 inside the mask); the code is a bit string:
32 bits of length, 5 bits of word size less one, four 4-bit run-size widths less one (3, 4, 8, 16), then for
each run a flag bit (1: a run of one value), 2 bits choosing a width, the run's length less one in that many
bits, and the value in 8 bits; padded with zeros to whole bytes, handed over as a list of byte values.
"""

from __future__ import annotations

import numpy as np

RUN_WIDTHS = (3, 4, 8, 16)
MAX_RUN = 1 << 16


def _runs(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    change = np.flatnonzero(flat[1:] != flat[:-1])
    ends = np.append(change, len(flat) - 1)
    lengths = np.diff(np.append(-1, ends))
    return lengths, flat[ends]


def encode_brush_rle(mask: np.ndarray) -> list[int]:
    """Label Studio's RLE of a bool mask ``[h, w]`` (``original_width`` w, ``original_height`` h)."""
    flat = np.repeat(np.where(mask.ravel(), 255, 0).astype(np.uint8), 4)
    bits = [f"{len(flat):032b}", f"{8 - 1:05b}", "".join(f"{w - 1:04b}" for w in RUN_WIDTHS)]
    for length, value in zip(*_runs(flat)):
        length, byte = int(length), f"{int(value):08b}"
        while length > 0:
            run = min(length, MAX_RUN)
            if run == 1:
                bits.append("0" + "00" + "000" + byte)
            else:
                which = next(i for i, w in enumerate(RUN_WIDTHS) if run <= 1 << w)
                bits.append("1" + f"{which:02b}" + f"{run - 1:0{RUN_WIDTHS[which]}b}" + byte)
            length -= run
    text = "".join(bits)
    text += "0" * (-len(text) % 8)
    return list(np.packbits(np.frombuffer(text.encode("ascii"), np.uint8) - ord("0")).tolist())
