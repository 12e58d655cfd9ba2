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

The LTX-2 demo's encoder (`--family gemma`) is a tiny Gemma-3 text model (`gemma3_text`, Gemma3ForCausalLM) with
a word-level tokenizer, pretrained the same way; its folder loads with `ltx.ltx2.text.GemmaTextEncoder`:

    python -m train.make_text_encoder demo/ltx2/text_encoder --family gemma --overwrite --threads 1

- Tokenizer (`tokenizers`, no download): one token per ShapesWorld word (VOCABULARY plus the opt-in extra
  colours and motion words), <unk> for any other word, <pad> / <eos> / <bos> / <unk> at Gemma's ids 0 / 1 / 2 / 3,
  <bos> put first as Gemma's tokenizer does. It normalises as the demo T5 folder's "lowercase_words" rule (lower
  case, anything but [a-z0-9] is a space), so "A RED circle moves up!" reads as "a red circle moves up".
  GemmaTextEncoder pads on the left.
- Model: GEMMA_WIDTH wide, GEMMA_LAYERS layers (sliding-window layers and a full-attention last layer, as
  Gemma-3's pattern ends; the window is longer than any caption, so every layer sees the whole prefix),
  4 query / 2 key-value heads of 32, RoPE, tied embeddings, float32.
- Objective: LTX-2 reads ALL num_layers + 1 hidden states (the scaled embeddings, each layer's output, the last
  after the final norm), normalises each and projects their concatenation (ltx.ltx2.text, FeatureExtractorV1 /
  V2). So the heads here read what that path reads: each hidden state RMS-normalised per token (V2's norm; V1's
  per-prompt affine norm differs by a per-layer scale and shift a linear head absorbs), concatenated to
  D * (num_layers + 1) per token, then the mean over the prompt's real tokens (<bos> included). The model is
  causal, so a token knows only its prefix: the words after "and" are where the second shape is told apart.
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
from ltx.data.shapes import (
    BACKGROUNDS,
    EXTRA_COLORS,
    EXTRA_MOTION_PHRASES,
    KINDS,
    MOTIONS,
    PALETTE,
    VOCABULARY,
    caption,
    sample_params,
)
from ltx.ltxv.text import TEXT_CONFIG

WIDTH = 128
MAX_TOKENS = 96  # = the demo preset's generation.text_tokens
FAMILIES = ("t5", "gemma")
PRETRAIN_STEPS = {"t5": 1500, "gemma": 1000}  # gemma: held-out captions are all read right from ~300 steps
GEMMA_WIDTH = 128  # hidden size D (the LTX-2 connector's text_dim)
GEMMA_LAYERS = 3  # -> GEMMA_LAYERS + 1 = 4 hidden states (the LTX-2 connector's num_hidden_states)
GEMMA_SPECIAL = ("<pad>", "<eos>", "<bos>", "<unk>")  # ids 0, 1, 2, 3 as in Gemma's tokenizer
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


def t5_features(model, tokenizer, texts: list[str]) -> torch.Tensor:
    """What the pretraining heads of the T5 read: the masked mean of last_hidden_state, (B, WIDTH)."""
    # padding to the longest caption gives the same states as padding to MAX_TOKENS (masked attention,
    # relative positions), for less work
    tok = tokenizer(texts, padding="longest", max_length=MAX_TOKENS, truncation=True, return_tensors="pt")
    h = model(tok.input_ids, attention_mask=tok.attention_mask).last_hidden_state
    m = tok.attention_mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1)


def gemma_features(model, tokenizer, texts: list[str]) -> torch.Tensor:
    """What the pretraining heads of the Gemma read: all hidden states, each RMS-normalised per token,
    concatenated, averaged over the real tokens: (B, D * (num_layers + 1)). The tokenizer pads on the left;
    padding to the longest caption gives the real tokens the states they get at any longer padding (masked
    attention, RoPE sees only relative positions), up to rounding."""
    tok = tokenizer(texts, padding="longest", return_tensors="pt")
    out = model.model(input_ids=tok.input_ids, attention_mask=tok.attention_mask, output_hidden_states=True,
                      use_cache=False)
    x = torch.stack(out.hidden_states, dim=-1)  # (B, T, D, L)
    x = x * torch.rsqrt(x.pow(2).mean(dim=2, keepdim=True) + 1e-6)
    valid = tok.attention_mask.bool()[:, :, None]  # (B, T, 1)
    x = torch.where(valid, x.flatten(2), 0.0)  # (B, T, D * L), d-major as the feature extractors flatten
    return x.sum(1) / valid.sum(1)


def pretrain(model, tokenizer, *, steps: int, batch: int = 32, lr: float = 2e-3, seed: int = 0,
             log_every: int = 100, features=t5_features, width: int = WIDTH) -> dict[str, float]:
    """Train `model` to read ShapesWorld captions: linear heads on `features(model, tokenizer, texts)` (B, width)
    predict every scene attribute. Returns the final loss and the held-out attribute accuracy."""
    from tqdm import tqdm

    def encode(texts: list[str]) -> torch.Tensor:
        return features(model, tokenizer, texts)

    g = torch.Generator().manual_seed(seed)
    heads = nn.ModuleList(nn.Linear(width, n) for _, n in FIELDS)
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


def gemma_vocabulary() -> list[str]:
    """The tokenizer's words after the special tokens: every word a ShapesWorld caption can hold, the opt-in
    extra colours and motions included (fine-tuning experiments), sorted."""
    extra = set(EXTRA_COLORS) | {w for phrase in EXTRA_MOTION_PHRASES.values() for w in phrase.split()}
    return sorted(VOCABULARY | extra)


def gemma_tokenizer():
    """A word-level fast tokenizer: GEMMA_SPECIAL then gemma_vocabulary(), "lowercase_words" normalisation,
    <bos> first (one per sequence, as Gemma's), pads on the left."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pad, eos, bos, unk = GEMMA_SPECIAL
    vocab = {token: i for i, token in enumerate([*GEMMA_SPECIAL, *gemma_vocabulary()])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(Regex("[^a-z0-9]+"), " ")])
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                       special_tokens=[(bos, vocab[bos])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad, unk_token=unk,
                                   padding_side="left", model_max_length=64)


def gemma_config(vocab_size: int):
    """The tiny Gemma-3 text model's config (float32; the window covers every prompt, so sliding = full)."""
    from transformers import Gemma3TextConfig

    pad, eos, bos = range(3)
    return Gemma3TextConfig(
        vocab_size=vocab_size, hidden_size=GEMMA_WIDTH, intermediate_size=2 * GEMMA_WIDTH,
        num_hidden_layers=GEMMA_LAYERS, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
        query_pre_attn_scalar=32,  # attention scale head_dim**-0.5, as Gemma-3 12B (256 = its head_dim)
        max_position_embeddings=64, sliding_window=64,
        layer_types=["sliding_attention"] * (GEMMA_LAYERS - 1) + ["full_attention"],
        pad_token_id=pad, eos_token_id=eos, bos_token_id=bos, tie_word_embeddings=True, dtype="float32",
    )


def save_gemma(model, tokenizer, path: Path, report: dict) -> Path:
    """Write a Hugging Face folder (config.json, model.safetensors, the tokenizer, report.json) that
    `ltx.ltx2.text.GemmaTextEncoder.from_folder` loads, atomically."""
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        # transformers 5 names the class TokenizersBackend; PreTrainedTokenizerFast is its alias there and the
        # class itself in transformers 4, so both load the folder
        config = json.loads((tmp / "tokenizer_config.json").read_text())
        (tmp / "tokenizer_config.json").write_text(
            json.dumps(config | {"tokenizer_class": "PreTrainedTokenizerFast"}, indent=2) + "\n")
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return path


@dataclass(kw_only=True)
class MakeTextEncoderConfig:
    """The command line of this app, checked field by field (like the training configs)."""

    path: str
    family: str = "t5"  # "t5" (the 0.9.x demo) | "gemma" (the LTX-2 demo)
    seed: int = 0
    pretrain_steps: int | None = None  # None: PRETRAIN_STEPS[family]
    threads: int = 2
    overwrite: bool = False

    def __post_init__(self):
        from train.runner import check_choice, check_int

        if not str(self.path):
            raise ValueError("path='' is invalid: give the folder to write the text encoder to")
        check_choice("family", self.family, FAMILIES)
        if self.pretrain_steps is None:
            self.pretrain_steps = PRETRAIN_STEPS[self.family]
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


def make_gemma(path: Path, seed: int = 0, overwrite: bool = False, pretrain_steps: int = 0) -> Path:
    """The LTX-2 demo's tiny Gemma-3 (see the file docstring): seeded, pretrained for `pretrain_steps`."""
    from transformers import Gemma3ForCausalLM

    MakeTextEncoderConfig(path=str(path), family="gemma", seed=seed, overwrite=overwrite,
                          pretrain_steps=pretrain_steps).check_target()
    path = Path(path)
    tokenizer = gemma_tokenizer()
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(gemma_config(len(tokenizer))).float().eval()
    c = model.config
    report = {"family": "gemma", "seed": seed, "pretrain_steps": pretrain_steps, "hidden_size": c.hidden_size,
              "num_hidden_layers": c.num_hidden_layers, "num_hidden_states": c.num_hidden_layers + 1,
              "vocab_size": c.vocab_size,
              "objective": "heads on the token mean of all hidden states, each RMS-normalised per token"}
    if pretrain_steps:
        report |= pretrain(model, tokenizer, steps=pretrain_steps, seed=seed, features=gemma_features,
                           width=c.hidden_size * (c.num_hidden_layers + 1))
        print(json.dumps(report, indent=2))
    return save_gemma(model, tokenizer, path, report)


MAKERS = {"t5": make, "gemma": make_gemma}


def main(argv: list[str] | None = None) -> None:
    """The command line (documented in the README, so argparse rather than Hydra): bad input ends in one line
    `error: ...` and exit status 1, as `infer.app.hydra_app` does (LTX_DEBUG=1 shows the traceback)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path", type=Path)
    p.add_argument("--family", default="t5",
                   help="t5: the 0.9.x demo's T5 (default); gemma: the LTX-2 demo's tiny Gemma-3")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pretrain-steps", type=int, default=None,
                   help=f"caption-reading steps (0: seeded weights; default {PRETRAIN_STEPS})")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    try:
        cfg = MakeTextEncoderConfig(path=str(a.path), family=a.family, seed=a.seed, pretrain_steps=a.pretrain_steps,
                                    threads=a.threads, overwrite=a.overwrite)
        cfg.check_target()
        torch.set_num_threads(cfg.threads)
        print(f"wrote {MAKERS[cfg.family](Path(cfg.path), cfg.seed, cfg.overwrite, cfg.pretrain_steps)}")
    except (ValueError, OSError) as e:  # FileExistsError, PermissionError, RunError, ...
        if os.environ.get("LTX_DEBUG"):
            raise
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
