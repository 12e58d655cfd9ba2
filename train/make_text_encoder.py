"""Create the demo text encoder: a tiny T5 encoder with a byte-level tokenizer, seeded and (optionally)
pretrained on ShapesWorld captions.

    python -m train.make_text_encoder demo/text_encoder --overwrite                   # pretrained (default)
    python -m train.make_text_encoder /tmp/t5 --pretrain-steps 0                      # fixed-seed weights only

No download is involved: `transformers.ByT5Tokenizer` needs no vocabulary file (bytes are the vocabulary)
and the weights come from a seeded initialization. The folder loads with `ltx.ltxv.text.T5TextEncoder`.

Why pretrain. The released models read prompts through T5-XXL, which already knows which words go
together. A randomly initialized T5 does not: its outputs carry little word order (T5 has only relative
position biases), so in "a red circle moves up and a blue square moves down" the transformer cannot tell
which colour belongs to the first (larger, "dominant") shape. The first demo, trained on a random T5, drew
single shapes right (colour 97%, motion 94%) but two-shape scenes at chance. So before the DiT sees it, the
encoder is trained for a few minutes to read captions: linear heads on its masked-mean output predict every
attribute of the scene (per shape slot: colour, shape, motion, or "no second shape"; the background). Only
training-split captions are used, so held-out colour x shape x motion triples stay unseen. The heads are
thrown away; the encoder's `last_hidden_state` is what the DiT attends to.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ltx.core.checkpoint import atomic_dir
from ltx.data.shapes import BACKGROUNDS, KINDS, MOTIONS, PALETTE, caption, sample_params
from ltx.ltxv.text import TEXT_CONFIG

WIDTH = 128
MAX_TOKENS = 96  # = the demo preset's generation.text_tokens
# per shape slot: colour, kind, motion, each with a "none" class for a missing second shape; then background
FIELDS = [(f"{slot}_{name}", len(values) + 1) for slot in ("first", "second")
          for name, values in (("color", PALETTE), ("kind", KINDS), ("motion", MOTIONS))] + [
    ("background", len(BACKGROUNDS))]


def scene_labels(params) -> list[int]:
    """Class indices in FIELDS order for a SceneParams or SceneSpec (index len(values) = no such shape)."""
    out = []
    for slot in range(2):
        shape = params.shapes[slot] if slot < len(params.shapes) else None
        for values, attr in ((list(PALETTE), "color"), (list(KINDS), "kind"), (list(MOTIONS), "motion")):
            out.append(values.index(getattr(shape, attr)) if shape is not None else len(values))
    return out + [list(BACKGROUNDS).index(params.background)]


def caption_batch(split: str, n: int, seed: int) -> tuple[list[str], torch.Tensor]:
    """n captions of a ShapesWorld split (the training mix: half two-shape, half tinted) and their labels."""
    rng = np.random.default_rng(seed)
    scenes = [sample_params(rng, split) for _ in range(n)]
    return [caption(s) for s in scenes], torch.tensor([scene_labels(s) for s in scenes])


def pretrain(model, tokenizer, *, steps: int, batch: int = 32, lr: float = 2e-3, seed: int = 0,
             log_every: int = 100) -> dict[str, float]:
    """Train `model` (a T5EncoderModel) to read ShapesWorld captions; returns held-out attribute accuracy."""
    from tqdm import tqdm

    def encode(texts: list[str]) -> torch.Tensor:  # masked mean of last_hidden_state, (B, WIDTH)
        # padding to the longest caption gives the same states as padding to MAX_TOKENS (masked attention,
        # relative positions), for less work
        tok = tokenizer(texts, padding="longest", max_length=MAX_TOKENS, truncation=True, return_tensors="pt")
        h = model(tok.input_ids, attention_mask=tok.attention_mask).last_hidden_state
        m = tok.attention_mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1)

    g = torch.Generator().manual_seed(seed)
    heads = nn.ModuleList(nn.Linear(WIDTH, n) for _, n in FIELDS)
    for h in heads:
        nn.init.normal_(h.weight, std=0.02, generator=g)
        nn.init.zeros_(h.bias)
    params = list(model.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    bar = tqdm(range(steps), desc="pretraining the text encoder")
    for step in bar:
        texts, labels = caption_batch("train", batch, seed * 1_000_003 + step)
        pooled = encode(texts)
        loss = sum(nn.functional.cross_entropy(head(pooled), labels[:, k]) for k, head in enumerate(heads))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        for group in opt.param_groups:  # linear decay to 0
            group["lr"] = lr * (1 - step / steps)
        opt.step()
        if (step + 1) % log_every == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    model.eval()
    with torch.no_grad():  # captions whose dominant triple was never seen
        texts, labels = caption_batch("heldout", 512, seed + 7)
        pooled = encode(texts)
        acc = {name: (head(pooled).argmax(-1) == labels[:, k]).float().mean().item()
               for k, ((name, _), head) in enumerate(zip(FIELDS, heads))}
    return {"final_loss": loss.item(), "heldout_caption_accuracy": acc}


def save_text_encoder(model, tokenizer, path: Path, report: dict | None = None) -> Path:
    """Write a T5 folder (text_encoder/ + tokenizer/ [+ report.json]) that `T5TextEncoder` loads, atomically,
    with the prompt normalisation its training captions imply (lower-case words: ltx.ltxv.text.TEXT_CONFIG)."""
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp / "text_encoder", safe_serialization=True)
        tokenizer.save_pretrained(tmp / "tokenizer")
        (tmp / TEXT_CONFIG).write_text(json.dumps({"normalize": "lowercase_words"}) + "\n")
        if report is not None:
            (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return path


@dataclass(kw_only=True)
class MakeTextEncoderConfig:
    """The command line of this app, checked field by field (like the training configs)."""

    path: str
    seed: int = 0
    pretrain_steps: int = 1500
    threads: int = 2
    overwrite: bool = False

    def __post_init__(self):
        from train.runner import check_int

        if not str(self.path):
            raise ValueError("path='' is invalid: give the folder to write the text encoder to")
        check_int("seed", self.seed, 0)
        check_int("pretrain_steps", self.pretrain_steps, 0)
        check_int("threads", self.threads)

    def check_target(self) -> None:
        """Refuse, before any work, a target that exists (without overwrite), is a file, or cannot be written."""
        from train.runner import check_run_dir

        path = Path(self.path)
        if path.exists() and not path.is_dir():
            raise FileExistsError(f"{path} is a file, not a text encoder folder; remove it or pick another path")
        if path.exists() and not self.overwrite:
            raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
        check_run_dir(path.parent if str(path.parent) else Path("."), name=f"the folder of {path}")


def make(path: Path, seed: int = 0, overwrite: bool = False, pretrain_steps: int = 0) -> Path:
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    MakeTextEncoderConfig(path=str(path), seed=seed, overwrite=overwrite, pretrain_steps=pretrain_steps).check_target()
    path = Path(path)
    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=384, d_model=WIDTH, d_kv=32, d_ff=256, num_layers=2, num_heads=4,
                   feed_forward_proj="gated-gelu", dropout_rate=0.0, is_encoder_decoder=False)
    model = T5EncoderModel(cfg).eval()
    tokenizer = ByT5Tokenizer()
    report = {"seed": seed, "pretrain_steps": pretrain_steps}
    if pretrain_steps:
        report |= pretrain(model, tokenizer, steps=pretrain_steps, seed=seed)
        print(json.dumps(report, indent=2))
    return save_text_encoder(model, tokenizer, path, report)


def main(argv: list[str] | None = None) -> None:
    """The command line (documented in the README, so argparse rather than Hydra): bad input ends in one line
    `error: ...` and exit status 1, as `infer.app.hydra_app` does (LTX_DEBUG=1 shows the traceback)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pretrain-steps", type=int, default=1500, help="caption-reading steps (0: seeded weights)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    try:
        cfg = MakeTextEncoderConfig(path=str(a.path), seed=a.seed, pretrain_steps=a.pretrain_steps,
                                    threads=a.threads, overwrite=a.overwrite)
        cfg.check_target()
        torch.set_num_threads(cfg.threads)
        print(f"wrote {make(Path(cfg.path), cfg.seed, cfg.overwrite, cfg.pretrain_steps)}")
    except (ValueError, OSError) as e:  # FileExistsError, PermissionError, RunError, ...
        if os.environ.get("LTX_DEBUG"):
            raise
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
