"""A tiny byte-level BPE tokenizer in CLIP's format, sized for the toy world.

CLIP's real vocabulary (49,408 tokens) would make the toy model's embedding table larger than the rest
of it together. This one keeps CLIP's byte alphabet, so any text still encodes (unknown words fall back
to bytes), and adds whole-word merges only for the words the toy world uses.
"""

from __future__ import annotations

from pathlib import Path

from transformers import CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def build_toy_tokenizer(words: list[str], max_length: int) -> CLIPTokenizer:
    """A ``CLIPTokenizer`` whose vocabulary is CLIP's byte alphabet plus one token per word in ``words``."""
    alphabet = list(bytes_to_unicode().values())
    vocab_list = alphabet + [c + "</w>" for c in alphabet]
    merges: list[tuple[str, str]] = []
    for word in sorted(set(words)):
        encoded = "".join(bytes_to_unicode()[b] for b in word.encode("utf-8"))
        if len(encoded) < 2:
            continue
        left = encoded[0]
        for i, ch in enumerate(encoded[1:], start=1):
            right = ch + ("</w>" if i == len(encoded) - 1 else "")
            merged = left + right
            if (left, right) not in merges:
                merges.append((left, right))
            if merged not in vocab_list:
                vocab_list.append(merged)
            left = merged
    vocab_list += [BOS, EOS]  # EOS last: CLIP pools the text at the highest token id
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def save_random_vit_b32(model_dir: Path) -> Path:
    """A full-size ViT-B/32 (``CLIPConfig()`` defaults) with seeded random weights, in Transformers format, with
    a word-level tokenizer over the bundled bank: the real model's compute, for benchmarks (no download)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from cliplabel_pipeline.core.labelling.concepts import load_bank

    torch.manual_seed(0)
    bank = load_bank()
    words = " ".join(list(bank.names) + list(bank.templates)).replace("{}", " ").replace(".", " . ").split()
    CLIPModel(CLIPConfig()).save_pretrained(model_dir)
    build_toy_tokenizer(words, 77).save_pretrained(model_dir)
    CLIPImageProcessor().save_pretrained(model_dir)
    return model_dir
