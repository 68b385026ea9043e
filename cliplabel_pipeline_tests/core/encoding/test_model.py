"""Model loading: local directories, the local Hugging Face cache, clear errors, device and precision."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from cliplabel_pipeline.core.encoding import devices
from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.encoding.devices import resolve_precision
from cliplabel_pipeline.core.encoding.model import load_clip
from cliplabel_pipeline.core.encoding.weights import ModelNotFoundError


def test_loads_a_local_transformers_directory_once_per_process(toy_model):
    a = load_clip(toy_model, device="cpu", precision="fp32")
    b = load_clip(toy_model, device="cpu", precision="fp32")
    assert a is b
    assert a.model.__class__.__name__ == "CLIPModel"
    assert (a.image_size, a.crop_size) == (48, 48)


def test_hub_id_resolves_from_the_local_cache_only(toy_model, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    snap = cache / "models--acme--toy-clip" / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(toy_model, snap)
    (cache / "models--acme--toy-clip" / "refs").mkdir()
    (cache / "models--acme--toy-clip" / "refs" / "main").write_text(snap.name)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    handle = load_clip("acme/toy-clip", device="cpu", precision="fp32")
    assert handle.model_dir == snap


def test_missing_model_fails_with_one_line_naming_pull_and_the_variable(tmp_path, monkeypatch):
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelNotFoundError) as err:
        load_clip("openai/clip-vit-base-patch32", device="cpu")
    message = str(err.value)
    assert "\n" not in message
    assert "cliplabel model pull" in message and "CLIPLABEL_MODEL" in message


def test_directory_without_config_is_refused(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load_clip(str(tmp_path), device="cpu")


@pytest.mark.parametrize("bf16,device,expected", [
    (True, "cpu", "bf16"), (False, "cpu", "fp32"), (True, "cuda", "fp16"), (False, "cuda", "fp16"),
])
def test_auto_precision_follows_the_hardware(monkeypatch, bf16, device, expected):
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: bf16)
    assert resolve_precision("auto", device) == expected
    assert resolve_precision("fp32", device) == "fp32"


def test_unknown_precision_is_a_clear_error():
    with pytest.raises(Exception, match="unknown precision 'int4'"):
        resolve_precision("int4", "cpu")


def test_int8_is_a_cpu_mode_and_says_so_on_cuda():
    assert resolve_precision("int8", "cpu") == "int8"
    with pytest.raises(Exception, match="int8 runs on the CPU only"):
        resolve_precision("int8", "cuda")


def test_int8_without_onnx_runtime_names_the_extra_to_install(monkeypatch):
    from cliplabel_pipeline.core.encoding import int8

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(CliplabelError, match=r"pip install 'cliplabel_pipeline\[int8\]'"):
        int8.Int8ImageTower(Path("unused.onnx"))


@pytest.mark.parametrize("model", ["./no-such-model", "/tmp/no/such/model", "~/no-such-model", "a/b/c"])
def test_a_missing_model_path_is_named_as_a_path_not_sent_to_model_pull(model):
    from cliplabel_pipeline.core.encoding.weights import ModelNotFoundError, resolve_model_dir

    with pytest.raises(ModelNotFoundError, match="does not exist") as caught:
        resolve_model_dir(model)
    assert "model pull" not in str(caught.value)
