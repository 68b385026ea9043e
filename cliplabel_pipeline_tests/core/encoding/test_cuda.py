"""The CUDA path on a real GPU: fp16 agrees with fp32, the GPU input path labels as the CPU path does, and a real
out-of-memory ends in the retry in halves and then the CPU fallback. Skipped where CUDA is absent; `make gpu-check`
runs them on a GPU machine. Imports stay within what that machine has (no DuckDB, no Dagster)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from cliplabel_pipeline.core.encoding import model as model_mod
from cliplabel_pipeline.core.encoding.embedding import embed_images, job_loaders
from cliplabel_pipeline.core.encoding.encode import encode_images
from cliplabel_pipeline.core.encoding.gpu_input import embed_jobs_on_device
from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.labelling.labels import assign_labels
from cliplabel_pipeline.core.reading.items import list_job_items
from cliplabel_pipeline.core.values import LabelSettings
from cliplabel_pipeline.toyworld.jobs import write_toy_jobs

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here (run `make gpu-check` on one)")]


@pytest.fixture(scope="module")
def toy_jobs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cuda-jobs")
    return [list_job_items(JobFolder.open(root, j)) for j in write_toy_jobs(root, 6, seed=2718, prefix="cuda")]


@pytest.fixture(scope="module")
def cuda_handle(toy_model):
    return model_mod.load_clip(toy_model, "cuda", "auto")


def _tops(embedded, index):
    return {r.path: r.top1 for r in assign_labels(embedded, index, LabelSettings()) if r.kind != "source"}


def test_fp16_on_cuda_agrees_with_fp32_on_the_cpu(labeller, cuda_handle, toy_jobs):
    assert cuda_handle.precision == "fp16" and cuda_handle.model.dtype == torch.float16
    agree = total = 0
    for manifest in toy_jobs:
        want = embed_images(labeller.encoder, job_loaders(manifest))
        got = embed_images(cuda_handle, job_loaders(manifest))
        assert (got.embeddings * want.embeddings).sum(1).min() > 0.995
        a, b = _tops(got, labeller.index), _tops(want, labeller.index)
        agree += sum(a[p] == b[p] for p in b)
        total += len(b)
    assert agree / total >= 0.97, f"{agree}/{total}"


def test_gpu_input_path_labels_as_the_cpu_path(labeller, cuda_handle, toy_jobs):
    """Built on the GPU and encoded in fp16, against decoded per file and encoded in fp16 (same model)."""
    agree = total = 0
    for manifest, got in zip(toy_jobs, embed_jobs_on_device(cuda_handle, toy_jobs)):
        want = embed_images(cuda_handle, job_loaders(manifest))
        assert [(i.path, i.area) for i in got.items] == [(i.path, i.area) for i in want.items]
        assert (got.embeddings * want.embeddings).sum(1).min() > 0.999
        a, b = _tops(got, labeller.index), _tops(want, labeller.index)
        agree += sum(a[p] == b[p] for p in b)
        total += len(b)
    assert agree / total >= 0.99, f"{agree}/{total}"


def test_out_of_memory_retries_in_halves_then_falls_back_to_the_cpu(toy_model, labeller, caplog):
    """A real out-of-memory: the process's share of the GPU capped just above what it holds, then a batch whose
    pixels alone exceed it (and so does half of it). The batch is still encoded, on the CPU, as the CPU encodes it."""
    handle = model_mod._load.__wrapped__(model_mod.resolve_model_dir(toy_model), toy_model, "cuda", "fp16", None)
    pixels = torch.randn(512, 3, handle.crop_size, handle.crop_size)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()  # cached blocks would serve the batch: the cap must bite
    total = torch.cuda.get_device_properties(0).total_memory
    held = torch.cuda.memory_reserved(0)
    torch.cuda.set_per_process_memory_fraction(min(1.0, (held + (8 << 20)) / total), 0)
    try:
        with caplog.at_level(logging.WARNING):
            emb = encode_images(handle, pixels.numpy())
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, 0)
        torch.cuda.empty_cache()
    words = caplog.text
    assert "retrying in halves" in words and "falling back to CPU" in words
    assert handle.device == "cpu"
    want = encode_images(labeller.encoder, pixels.numpy())
    assert (emb * want).sum(1).min() > 0.99  # the CPU's best precision (bf16 where native) against fp32
    assert np.isfinite(emb).all()
