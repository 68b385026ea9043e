"""The optional int8 image tower (``--precision int8``, CPU only): ONNX Runtime with int8 weights.

The image tower is exported to ONNX once per model, its MatMul weights quantised to int8 per output
channel (dynamic quantisation: activations are scaled per batch at run time; the patch convolution stays
fp32, which measured both faster and closer to fp32), and the result cached beside the text embeddings.
ONNX Runtime then runs it with VNNI int8 kernels. The text tower stays in PyTorch (bf16 or fp32).

Because activation scales are computed per batch, an item's embedding depends very slightly on the other
items in its batch; the top-1 agreement with fp32 is what the tests hold to (>= 99% of the toy jobs' items).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from cliplabel_pipeline.core.errors import CliplabelError

log = logging.getLogger(__name__)


class _ImageTower(torch.nn.Module):
    """pixel_values -> projected image embedding (not normalised), as ``get_image_features`` gives it."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values=pixel_values).pooler_output


def _require_onnxruntime():
    try:
        import onnxruntime
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise CliplabelError("precision int8 needs ONNX Runtime: pip install 'cliplabel_pipeline[int8]' "
                             "(or use --precision auto)") from None
    return onnxruntime, quantize_dynamic, QuantType


def build_int8_tower(model, size: int, out: Path) -> Path:
    """Export ``model``'s image tower (fp32) to ONNX and write its int8-quantised copy to ``out`` atomically."""
    _, quantize_dynamic, QuantType = _require_onnxruntime()
    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, 3, size, size)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        fp32, int8 = Path(tmp, "image-fp32.onnx"), Path(tmp, "image-int8.onnx")
        for name in ("torch.onnx", "torch.export", "onnxscript"):  # the exporter logs every step at INFO/WARNING
            logging.getLogger(name).setLevel(logging.ERROR)
        with warnings.catch_warnings():  # torch's own deprecations inside the exporter: nothing a user can act on
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.onnx.export(
                _ImageTower(model).eval(), (example,), dynamo=True, verbose=False,
                dynamic_shapes={"pixel_values": {0: torch.export.Dim("batch", min=1, max=4096)}})
        program.save(str(fp32), external_data=False)
        # the quantiser logs each tensor on the root logger, and advice meant for its own developers at WARNING;
        # what goes wrong in it raises, and is reported as one line by the caller
        logging.disable(logging.WARNING)
        try:
            quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul"])
        finally:
            logging.disable(logging.NOTSET)
        os.replace(int8, out)
    log.info("built the int8 image tower %s in %.1fs", out.name, time.perf_counter() - start)
    return out


class Int8ImageTower:
    """An ONNX Runtime session over the cached int8 image tower; ``__call__`` maps pixels to embeddings."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        onnxruntime, _, _ = _require_onnxruntime()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3
        # idle threads sleep instead of spinning: spinning took CPU from image decoding between batches
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = path
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"pixel_values": np.ascontiguousarray(pixels, dtype=np.float32)})[0]


def load_int8_tower(model, identity: str, size: int, cache_dir: Path) -> Int8ImageTower:
    """The int8 tower for these weights, built on first use (seconds to a minute) and cached in ``cache_dir``."""
    path = Path(cache_dir) / "onnx" / f"image-int8-{identity}.onnx"
    if not path.is_file():
        log.warning("building the int8 image tower for this model once (export and quantisation)")
        try:
            build_int8_tower(model, size, path)
        except CliplabelError:
            raise
        except Exception as exc:  # noqa: BLE001 - the exporter and quantiser raise many types; all mean the same to a user
            raise CliplabelError(f"could not build the int8 image tower: {type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''} (use --precision auto)") from None
    return Int8ImageTower(path)
