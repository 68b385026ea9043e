"""Train the toy-world CLIP and save it in Transformers format.

    python -m cliplabel_pipeline.toyworld.train [OUT_DIR]

Deterministic: fixed seeds, a fixed data set drawn up front, single-threaded data generation. The model is
a real ``CLIPModel`` (same code path as ViT-B/32), only small: 48 px images, 8 px patches, hidden 96.

Besides the world's 20 concepts, every batch shows the model pictures that are none of them: toy shapes split
into two of the world's colours, pushed towards an even softmax over the concepts (outlier exposure). A real
CLIP has seen far more than any label list holds; without this, a model that has only ever seen its own 20
concepts maps everything onto one of them. None of the out-of-world families that ``open_set.py`` measures
(noise, gradients, empty backgrounds, unseen colours, unseen shapes) is among these pictures. Likewise the
text tower reads, beside the world's prompts, prompts of the bundled bank's other nouns ("a photo of a
cat."), which no picture of the toy world matches; one noun in four is kept out of training and recorded
beside the weights (``held_out_nouns``), so tests can ask about words the model never read.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

from cliplabel_pipeline.core.labelling.concepts import BANK_DIR, read_lines
from cliplabel_pipeline.toyworld.draw import LABELS, draw_sample, draw_split_sample
from cliplabel_pipeline.toyworld.tokenizer import build_toy_tokenizer

MODEL_DIR = Path(__file__).parent / "model"
HELD_OUT_FILE = "held_out_nouns.txt"  # written beside the weights: the bank's nouns training kept out
IMAGE_SIZE, MAX_TEXT = 48, 24
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def toy_config(vocab_size: int, eos_id: int, bos_id: int) -> CLIPConfig:
    text = dict(vocab_size=vocab_size, hidden_size=96, intermediate_size=384, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=MAX_TEXT, eos_token_id=eos_id,
                bos_token_id=bos_id, pad_token_id=eos_id)
    vision = dict(hidden_size=96, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4,
                  image_size=IMAGE_SIZE, patch_size=8)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=64)


def _tensor(pictures) -> torch.Tensor:
    pixels = (np.stack([np.asarray(p, dtype=np.float32) for p in pictures]) / 255.0 - MEAN) / STD
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()


def draw_dataset(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = random.Random(seed)
    labels = [rng.randrange(len(LABELS)) for _ in range(n)]
    return _tensor(draw_sample(LABELS[i], IMAGE_SIZE, rng) for i in labels), torch.tensor(labels)


def draw_outliers(n: int, seed: int) -> torch.Tensor:
    rng = random.Random(seed)
    return _tensor(draw_split_sample(IMAGE_SIZE, rng) for _ in range(n))


def _other_nouns() -> list[str]:
    """The bundled bank's nouns that name nothing of the toy world (no colour or shape word in them)."""
    world = {w for label in LABELS for w in label.split()}
    return [n for n in read_lines(BANK_DIR / "concepts.txt") if not world & set(n.lower().replace("-", " ").split())]


def held_out_nouns(model_dir: Path = MODEL_DIR) -> list[str]:
    """Nouns of the bank the model in ``model_dir`` never read, as its training recorded them."""
    return read_lines(Path(model_dir) / HELD_OUT_FILE)


def train(out_dir: Path = MODEL_DIR, steps: int = 6000, batch: int = 96, outliers: int = 32,
          outlier_weight: float = 0.5, other_texts: int = 20, seed: int = 0) -> float:
    """Train, save to ``out_dir``, and return held-out top-1 accuracy on freshly drawn samples."""
    torch.manual_seed(seed)
    templates = read_lines(BANK_DIR / "templates.txt")
    words = " ".join(templates + LABELS).replace("{}", " ").replace(".", " . ").split()
    tok = build_toy_tokenizer(words, MAX_TEXT)
    model = CLIPModel(toy_config(len(tok), tok.eos_token_id, tok.bos_token_id))
    print(f"toy CLIP: {sum(p.numel() for p in model.parameters()):,} parameters")
    prompts = [[t.format(label) for t in templates] for label in LABELS]
    text_inputs = [tok(p, padding="max_length", max_length=MAX_TEXT, return_tensors="pt") for p in prompts]
    nouns = _other_nouns()
    others, held_out = [n for i, n in enumerate(nouns) if i % 4], nouns[::4]
    other_inputs = tok([t.format(n) for n in others for t in templates], padding="max_length",
                       max_length=MAX_TEXT, truncation=True, return_tensors="pt")
    x, y = draw_dataset(24_000, seed)
    x_out = draw_outliers(8000, seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    start = time.time()
    for step in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        pick = torch.randint(0, len(templates), (len(LABELS),), generator=gen)
        ids = torch.stack([text_inputs[c]["input_ids"][pick[c]] for c in range(len(LABELS))])
        mask = torch.stack([text_inputs[c]["attention_mask"][pick[c]] for c in range(len(LABELS))])
        other = torch.randint(0, len(other_inputs["input_ids"]), (other_texts,), generator=gen)
        ids = torch.cat([ids, other_inputs["input_ids"][other]])
        mask = torch.cat([mask, other_inputs["attention_mask"][other]])
        out_idx = torch.randint(0, len(x_out), (outliers,), generator=gen)
        pixels = torch.cat([x[idx], x_out[out_idx]])
        img = F.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
        txt = F.normalize(model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output, dim=-1)
        logits = model.logit_scale.exp() * img @ txt.T
        # the world's pictures to their concept, against the world's and the other nouns' prompts; the outliers
        # to none of the world's concepts (cross-entropy to an even softmax over them)
        loss = F.cross_entropy(logits[:batch], y[idx])
        loss = loss - outlier_weight * F.log_softmax(logits[batch:, :len(LABELS)], dim=1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)
        if step % 500 == 0 or step == steps - 1:
            print(f"step {step:5d} loss {loss.item():.4f} ({time.time() - start:.0f}s)")
    accuracy = evaluate(model, tok, templates)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                       crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(out_dir)
    (out_dir / "concepts.txt").write_text("\n".join(LABELS) + "\n")
    (out_dir / HELD_OUT_FILE).write_text("\n".join(held_out) + "\n")
    print(f"held-out top-1 {accuracy:.3f}; saved to {out_dir}")
    return accuracy


@torch.inference_mode()
def evaluate(model: CLIPModel, tok, templates: list[str], n: int = 2000) -> float:
    x, y = draw_dataset(n, seed=12345)
    inputs = tok([t.format(c) for c in LABELS for t in templates], padding=True, return_tensors="pt")
    txt = F.normalize(model.get_text_features(**inputs).pooler_output, dim=-1)
    txt = F.normalize(txt.view(len(LABELS), len(templates), -1).mean(1), dim=-1)
    img = F.normalize(model.get_image_features(pixel_values=x).pooler_output, dim=-1)
    return (img @ txt.T).argmax(1).eq(y).float().mean().item()


if __name__ == "__main__":
    train(Path(sys.argv[1]) if len(sys.argv) > 1 else MODEL_DIR)
