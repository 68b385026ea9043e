"""The text-embedding cache is checked before use: a damaged one is rebuilt with one warning, never used and
never a traceback; a cache that cannot be written is done without."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from cliplabel_pipeline.core.encoding.model import load_clip
from cliplabel_pipeline.core.labelling.calibration import PROBE_COUNT
from cliplabel_pipeline.core.labelling.concepts import load_bank
from cliplabel_pipeline.core.labelling.index import (
    build_concept_index,
    index_cache_path,
    load_cached_index,
)
from cliplabel_pipeline.core.labelling.npz_cache import checksum, write_npz

LABELS = ["red star", "blue circle", "green square"]


@pytest.fixture(scope="module")
def handle(toy_model):
    return load_clip(toy_model, device="cpu", precision="fp32")


@pytest.fixture
def cache(handle, tmp_path):
    """A good cache of ``LABELS`` and what it holds: ``(bank, path, text_emb)``."""
    bank = load_bank(labels=LABELS)
    index = build_concept_index(handle, bank, tmp_path)
    return bank, index_cache_path(tmp_path, handle.identity, handle.text_precision, bank), index.text_emb


def _good(emb, **changes):
    arrays = {"text_emb": emb, "logit_scale": np.float64(100.0), "null_emb": _unit(PROBE_COUNT, emb.shape[1]),
              "null_concept_stats": np.ones((2, len(emb))), "null_stats": np.ones(8)}
    return {**arrays, **changes}


def _unit(rows: int, width: int) -> np.ndarray:
    x = np.random.default_rng(0).normal(size=(rows, width)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _save(path, save, *args, **arrays) -> None:
    """``save`` (np.save or np.savez) straight onto ``path``, with no suffix added."""
    with path.open("wb") as fh:
        save(fh, *args, **arrays)


DAMAGE = {  # how a cache file goes bad -> write it so (each with a correct checksum where one is written)
    "truncated": lambda p, emb: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "empty": lambda p, emb: p.write_bytes(b""),
    "not an npz": lambda p, emb: p.write_text("text-embedding cache, honest\n"),
    "a bare .npy": lambda p, emb: _save(p, np.save, emb),
    "wrong width": lambda p, emb: write_npz(p, **_good(_unit(len(emb), emb.shape[1] + 3))),
    "wrong count of concepts": lambda p, emb: write_npz(p, **_good(_unit(len(emb) + 1, emb.shape[1]))),
    "object arrays": lambda p, emb: _save(p, np.savez, text_emb=np.array([[1.0], "x"], dtype=object),
                                          logit_scale=np.float64(100.0), checksum=np.array("0")),
    "all NaN": lambda p, emb: write_npz(p, **_good(np.full_like(emb, np.nan))),
    "zero rows": lambda p, emb: write_npz(p, **_good(np.zeros_like(emb))),
    "integer embeddings": lambda p, emb: write_npz(p, **_good(np.ones(emb.shape, np.int32))),
    "negative logit scale": lambda p, emb: write_npz(p, **_good(emb, logit_scale=np.float64(-1.0))),
    "logit scale as text": lambda p, emb: write_npz(p, **_good(emb, logit_scale=np.array(["100"]))),
    "no match calibration (an older cache)": lambda p, emb: write_npz(p, text_emb=emb, logit_scale=np.float64(100.0)),
    "null probes of another width": lambda p, emb: write_npz(
        p, **_good(emb, null_emb=_unit(PROBE_COUNT, emb.shape[1] + 1))),
    "one null probe (a list would be calibrated from it)": lambda p, emb: write_npz(
        p, **_good(emb, null_emb=_unit(1, emb.shape[1]))),
    "null statistics as text": lambda p, emb: write_npz(p, **_good(emb, null_stats=np.ones(8).astype(str))),
    "null statistics as booleans": lambda p, emb: write_npz(p, **_good(emb, null_stats=np.ones(8, bool))),
    "complex null statistics": lambda p, emb: write_npz(p, **_good(emb, null_stats=np.ones(8, complex))),
    "NaN null statistics": lambda p, emb: write_npz(p, **_good(emb, null_stats=np.full(8, np.nan))),
    "a zero spread": lambda p, emb: write_npz(p, **_good(emb, null_stats=np.zeros(8))),
    "no concept statistics (an older cache)": lambda p, emb: write_npz(
        p, **{k: v for k, v in _good(emb).items() if k != "null_concept_stats"}),
    "NaN concept statistics": lambda p, emb: write_npz(p, **_good(emb, null_concept_stats=np.full((2, len(emb)), np.nan))),
    "integer concept statistics": lambda p, emb: write_npz(
        p, **_good(emb, null_concept_stats=np.ones((2, len(emb)), np.int64))),
    "a concept's zero spread": lambda p, emb: write_npz(p, **_good(emb, null_concept_stats=np.zeros((2, len(emb))))),
    "concept statistics for another bank": lambda p, emb: write_npz(
        p, **_good(emb, null_concept_stats=np.ones((2, len(emb) + 1)))),
    "no checksum (an older cache)": lambda p, emb: _save(p, np.savez, **_good(emb)),
    "checksum mismatch": lambda p, emb: _save(p, np.savez, **_good(emb[::-1].copy()),
                                              checksum=np.array(checksum(_good(emb)))),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_cache_is_rebuilt_with_one_warning_naming_it(handle, cache, caplog, damage):
    bank, path, good = cache
    DAMAGE[damage](path, good)
    with caplog.at_level(logging.WARNING):
        index = build_concept_index(handle, bank, path.parent)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0].getMessage() and "rebuilt" in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage() and warnings[0].exc_info is None
    assert index.cache_hit is False
    np.testing.assert_allclose(index.text_emb, good, atol=1e-6)  # rebuilt, not the damaged values
    caplog.clear()
    again = build_concept_index(handle, bank, path.parent)  # the rebuilt file passes every check
    assert again.cache_hit is True and not caplog.records


def test_a_damaged_cache_found_without_the_model_is_reported_once_and_not_used(handle, cache, caplog):
    bank, path, good = cache
    DAMAGE["all NaN"](path, good)
    with caplog.at_level(logging.WARNING):
        first = load_cached_index(path.parent, handle.identity, handle.text_precision, bank)
        second = load_cached_index(path.parent, handle.identity, handle.text_precision, bank)
    assert first is None and second is None and not path.exists()
    assert len(caplog.records) == 1


def test_the_cache_is_written_atomically_with_its_checksum_and_nothing_beside_it(cache):
    _bank, path, _good_emb = cache
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["checksum.npy", "logit_scale.npy", "null_concept_stats.npy",
                                           "null_emb.npy", "null_stats.npy", "text_emb.npy"]
    with np.load(path, allow_pickle=False) as data:
        assert str(data["checksum"]) == checksum({k: data[k] for k in data.files})
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


def test_a_cache_that_cannot_be_written_is_done_without(handle, tmp_path, caplog):
    (tmp_path / "a-file").write_text("not a folder")
    with caplog.at_level(logging.WARNING):
        index = build_concept_index(handle, load_bank(labels=LABELS), tmp_path / "a-file" / "cache")
    assert index.text_emb.shape[0] == len(LABELS)
    assert len(caplog.records) == 1 and "could not write the cache file" in caplog.records[0].getMessage()


def test_the_cli_rebuilds_a_damaged_cache_without_a_traceback(toy_model, handle, tmp_path):
    from PIL import Image

    from cliplabel_pipeline.core.labelling.concepts import bank_for, reference_bank_for
    from cliplabel_pipeline.core.values import BankSpec

    spec = BankSpec(labels=tuple(LABELS))  # as --labels gives it: judged beside the model's own bank
    bank, reference = bank_for(spec, handle.model_dir), reference_bank_for(spec, handle.model_dir)
    good = build_concept_index(handle, bank, tmp_path, reference=reference).text_emb
    path = index_cache_path(tmp_path, handle.identity, handle.text_precision, bank, reference)

    Image.new("RGB", (64, 64), (220, 30, 30)).save(tmp_path / "red.png")
    DAMAGE["truncated"](path, good)
    env = {**os.environ, "CLIPLABEL_CACHE": str(path.parent), "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-m", "cliplabel_pipeline.cli", "classify", "--model", toy_model,
                          "--device", "cpu", "--precision", "fp32", "--labels", ",".join(LABELS),
                          str(tmp_path / "red.png")], capture_output=True, text=True, env=env, timeout=300,
                         check=False)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert [line for line in run.stderr.splitlines() if str(path) in line and "rebuilt" in line]
    assert path.exists() and '"top1"' in run.stdout


def test_the_text_embedding_cache_stays_within_its_size_least_recently_used_first(tmp_path, monkeypatch):
    """Every distinct label list writes a cache file (the HTTP service's `labels=`); past the cap the least
    recently used go, the one just written and the ones read lately stay."""
    import os

    import numpy as np

    from cliplabel_pipeline.core.labelling.npz_cache import read_npz, write_npz
    from cliplabel_pipeline.core.settings import Settings

    monkeypatch.setenv("CLIPLABEL_CACHE_MAX_MB", "0.2")  # room for three 64 KB files
    budget = int(Settings.from_env().cache_max_mb * 1e6)  # as Labeller.load passes it on
    paths = [tmp_path / f"text-{i:02d}.npz" for i in range(5)]
    for i, path in enumerate(paths[:3]):
        assert write_npz(path, max_bytes=budget, text_emb=np.full((128, 128), i, np.float32))
        os.utime(path, ns=(i * 10**9, i * 10**9))  # written in order, a second apart
    assert read_npz(paths[0], lambda arrays: None) is not None  # the oldest is used again
    (tmp_path / "int8-tower.onnx").write_bytes(b"x" * 300_000)  # another kind of cache file: never evicted
    for path in paths[3:]:
        assert write_npz(path, max_bytes=budget, text_emb=np.zeros((128, 128), np.float32))
    left = sorted(p.name for p in tmp_path.glob("text-*.npz"))
    assert left == ["text-00.npz", "text-03.npz", "text-04.npz"]
    assert sum(p.stat().st_size for p in tmp_path.glob("text-*.npz")) <= 200_000
    assert (tmp_path / "int8-tower.onnx").exists()
