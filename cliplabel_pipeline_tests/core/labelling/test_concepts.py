"""The bundled concept bank, templates, and the on-disk text-embedding cache."""

from __future__ import annotations

import numpy as np
import torch
import pytest

from cliplabel_pipeline.core.encoding import encode
from cliplabel_pipeline.core.labelling.concepts import BANK_DIR, load_bank, read_lines
from cliplabel_pipeline.core.labelling.index import build_concept_index
from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.encoding.model import load_clip


def test_bundled_bank_is_large_deduplicated_and_covers_coco_and_open_images():
    bank = load_bank()
    lowered = [n.lower() for n in bank.names]
    assert len(bank.names) > 2000
    assert len(set(lowered)) == len(lowered)
    aliases = dict(line.split("\t") for line in read_lines(BANK_DIR / "synonyms.tsv")[1:])
    for name in read_lines(BANK_DIR / "sources" / "coco.txt") + ["jellyfish", "saxophone", "wheelchair"]:
        assert aliases.get(name, name) in bank.names, name
    assert aliases["skis"] == "ski"  # COCO's plural folded into Open Images' singular
    assert "couches" not in bank.names and "sofa" not in bank.names  # folded into COCO's "couch"
    assert len(bank.templates) == 7 and all(t.count("{}") == 1 for t in bank.templates)


def test_user_labels_and_templates_replace_the_defaults(tmp_path):
    (tmp_path / "t.txt").write_text("a drawing of a {}.\n")
    bank = load_bank(labels=["cat", "dog", "cat"], templates_file=tmp_path / "t.txt")
    assert bank.names == ("cat", "dog") and bank.templates == ("a drawing of a {}.",)
    (tmp_path / "bad.txt").write_text("no placeholder\n")
    with pytest.raises(CliplabelError, match="exactly one"):
        load_bank(labels=["cat"], templates_file=tmp_path / "bad.txt")


def test_second_run_does_no_text_encoding(toy_model, tmp_path, monkeypatch):
    handle = load_clip(toy_model, device="cpu", precision="fp32")
    bank = load_bank(labels=["red star", "blue circle"])
    first_index = build_concept_index(handle, bank, tmp_path)
    calls = []
    monkeypatch.setattr(encode, "encode_texts", lambda *a, **k: calls.append(a))
    second_index = build_concept_index(handle, bank, tmp_path)
    (first, hit1), (second, hit2) = [(i.text_emb, i.cache_hit) for i in (first_index, second_index)]
    assert (hit1, hit2) == (False, True) and calls == []
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)


def test_cache_key_changes_with_templates(toy_model, tmp_path):
    handle = load_clip(toy_model, device="cpu", precision="fp32")
    (tmp_path / "t.txt").write_text("a photo of the large {}.\n")
    build_concept_index(handle, load_bank(labels=["red star"]), tmp_path)
    index = build_concept_index(handle, load_bank(labels=["red star"], templates_file=tmp_path / "t.txt"), tmp_path)
    assert index.cache_hit is False


def test_embedding_is_the_renormalised_mean_of_template_embeddings(toy_model, tmp_path):
    handle = load_clip(toy_model, device="cpu", precision="fp32")
    bank = load_bank(labels=["purple square"])
    emb = build_concept_index(handle, bank, tmp_path).text_emb
    per_template = encode.encode_texts(handle, [t.format("purple square") for t in bank.templates])
    mean = per_template.mean(0)
    np.testing.assert_allclose(emb[0], mean / np.linalg.norm(mean), atol=1e-5)


def test_texts_tokenized_once_encode_as_the_tokenizers_own_batches(toy_model):
    """One tokenizer call padded here gives the tokenizer's own padded tensors, and the same embeddings as
    encoding each prompt alone (so the cached bank is unchanged)."""
    handle = load_clip(toy_model, device="cpu", precision="fp32")
    bank = load_bank()
    texts = [t.format(n) for n in list(bank.names)[:40] for t in bank.templates[:3]]
    ids = handle.tokenizer(texts, truncation=True, max_length=handle.max_text_length)["input_ids"]
    want = handle.tokenizer(texts, padding=True, truncation=True, max_length=handle.max_text_length,
                            return_tensors="pt")
    got_ids, got_mask = encode._padded(ids, handle.tokenizer)
    assert torch.equal(got_ids, want["input_ids"]) and torch.equal(got_mask, want["attention_mask"])
    together = encode.encode_texts(handle, texts, batch_size=64)
    alone = np.concatenate([encode.encode_texts(handle, [t]) for t in texts[:12]])
    np.testing.assert_allclose(together[:12], alone, atol=1e-5)
