"""Create the demo text encoder: a tiny T5 encoder with a byte-level tokenizer, fixed-seed weights.

    python -m train.make_text_encoder demo/text_encoder

No download is involved: `transformers.ByT5Tokenizer` needs no vocabulary file (bytes are the vocabulary)
and the weights come from a seeded initialization. The folder loads with `ltx.models.text.T5TextEncoder`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

WIDTH = 128


def make(path: Path, seed: int = 0, overwrite: bool = False) -> Path:
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=384, d_model=WIDTH, d_kv=32, d_ff=256, num_layers=2, num_heads=4,
                   feed_forward_proj="gated-gelu", dropout_rate=0.0, is_encoder_decoder=False)
    model = T5EncoderModel(cfg).eval()
    model.save_pretrained(path / "text_encoder", safe_serialization=True)
    ByT5Tokenizer().save_pretrained(path / "tokenizer")
    return path


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args()
    print(f"wrote {make(a.path, a.seed, a.overwrite)}")
