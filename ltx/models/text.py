"""T5 text encoder wrapper: prompts -> (context (B, S, D_text), mask (B, S)), local weights only.

Official behaviour (`LTXVideoPipeline.encode_prompt`): prompts are stripped, tokenized to exactly
`max_tokens` = 256 tokens (padding "max_length", truncation, special tokens added), and the states are
T5's `last_hidden_state` from a forward *with* the attention mask; the mask (1 = real token) is reused as the
transformer's cross-attention mask. The official encoder is T5-v1.1-XXL (PixArt-alpha's `text_encoder`
folder, d_model 4096) in bf16.

`path` is a local folder, either a T5 model folder holding its tokenizer too, or a pipeline root with
`text_encoder/` and `tokenizer/` sub-folders. Nothing is downloaded (`local_files_only=True`).
Embeddings are cached per (prompt, max_tokens); `save_embeddings` / `load_embeddings` store precomputed ones
so generation can run without T5.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

MAX_TOKENS = 256


class TextEncoderMissing(FileNotFoundError):
    pass


def _sub(root: Path, name: str) -> Path:
    return root / name if (root / name).is_dir() else root


class T5TextEncoder:
    def __init__(self, path: str | os.PathLike, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.bfloat16, max_tokens: int = MAX_TOKENS):
        root = Path(path)
        if not root.is_dir():
            raise TextEncoderMissing(
                f"text encoder folder {root} does not exist; pass the local T5 folder (e.g. a download of "
                "PixArt-alpha/PixArt-XL-2-1024-MS with text_encoder/ and tokenizer/) or precomputed embeddings"
            )
        from transformers import AutoTokenizer, T5EncoderModel  # heavy import only when a T5 is used

        self.tokenizer = AutoTokenizer.from_pretrained(_sub(root, "tokenizer"), local_files_only=True)
        self.model = T5EncoderModel.from_pretrained(_sub(root, "text_encoder"), local_files_only=True,
                                                    dtype=dtype).to(device).eval()
        self.max_tokens = max_tokens
        self.device = torch.device(device)
        self.cache: dict[str, tuple[Tensor, Tensor]] = {}

    def tokenize(self, prompts: list[str] | str) -> tuple[Tensor, Tensor]:
        """(ids, mask), both (B, max_tokens) on the encoder's device, as the official pipeline tokenizes."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        tok = self.tokenizer([p.strip() for p in prompts], padding="max_length", max_length=self.max_tokens,
                             truncation=True, add_special_tokens=True, return_tensors="pt")
        return tok.input_ids.to(self.device), tok.attention_mask.to(self.device)

    @torch.no_grad()
    def _encode_one(self, prompt: str) -> tuple[Tensor, Tensor]:
        key = prompt.strip()
        if key not in self.cache:
            ids, mask = self.tokenize(key)
            states = self.model(ids, attention_mask=mask).last_hidden_state  # (1, S, D)
            self.cache[key] = (states[0], mask[0])
        return self.cache[key]

    def encode(self, prompts: list[str] | str) -> tuple[Tensor, Tensor]:
        """(context (B, max_tokens, D), mask (B, max_tokens) int64 with 1 = real token)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        pairs = [self._encode_one(p) for p in prompts]
        return torch.stack([c for c, _ in pairs]), torch.stack([m for _, m in pairs])


def save_embeddings(path: str | os.PathLike, context: Tensor, mask: Tensor, *, overwrite: bool = False) -> Path:
    """Store precomputed prompt embeddings as safetensors {"context": (B, S, D), "mask": (B, S)}."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    save_file({"context": context.contiguous(), "mask": mask.contiguous()}, str(path))
    return path


def load_embeddings(path: str | os.PathLike) -> tuple[Tensor, Tensor]:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"precomputed embeddings {path} do not exist")
    sd = load_file(str(path))
    if set(sd) != {"context", "mask"} or sd["context"].ndim != 3 or sd["mask"].shape != sd["context"].shape[:2]:
        raise ValueError(f"{path}: expected tensors context (B, S, D) and mask (B, S), got "
                         f"{ {k: tuple(v.shape) for k, v in sd.items()} }")
    return sd["context"], sd["mask"]
