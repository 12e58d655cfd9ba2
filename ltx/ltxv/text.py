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

Prompt normalisation: a folder may hold `ltx_text.json` = {"normalize": "<rule>"} naming how its tokenizer's
training text was written (`NORMALIZERS`); prompts are normalised the same way before tokenizing. The demo
encoder (byte-level, trained on lower-case ShapesWorld captions) uses "lowercase_words": "A GREEN TRIANGLE
MOVES UP!" reads as "a green triangle moves up". T5-XXL folders have no such file: prompts are only stripped,
as the official pipeline does. `seen(prompts)` says what the model reads: the normalised text cut to
`max_tokens` tokens, and whether it was cut.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ltx.core.checkpoint import CheckpointError, SafetensorsReader, atomic_file

MAX_TOKENS = 256


TEXT_CONFIG = "ltx_text.json"
NORMALIZERS = {
    "strip": str.strip,  # the official T5 pipeline
    "lowercase_words": lambda text: " ".join(re.findall(r"[a-z0-9]+", text.lower())),  # the demo's captions
}


class TextEncoderMissing(FileNotFoundError):
    pass


@dataclass(frozen=True)
class PromptView:
    """What the text encoder reads of a prompt: `text` (normalised and cut to the token limit), its token
    count before cutting, and whether it was cut."""

    prompt: str
    text: str
    tokens: int
    truncated: bool


def text_normalizer(path: str | os.PathLike) -> str:
    """The normalisation rule of a text encoder folder (its ltx_text.json), "strip" when it has none."""
    cfg = Path(path) / TEXT_CONFIG
    if not cfg.is_file():
        return "strip"
    try:
        rule = json.loads(cfg.read_text()).get("normalize", "strip")
    except (OSError, ValueError, AttributeError) as e:
        raise ValueError(f"{cfg}: not a JSON object with a 'normalize' rule ({e})") from None
    if rule not in NORMALIZERS:
        raise ValueError(f"{cfg}: unknown normalize rule {rule!r}; known: {sorted(NORMALIZERS)}")
    return rule


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
        self.normalize = text_normalizer(root)
        self.device = torch.device(device)
        self.cache: dict[str, tuple[Tensor, Tensor]] = {}

    def prepare(self, prompt: str) -> str:
        """The prompt as the tokenizer gets it (see the module docstring on normalisation)."""
        return NORMALIZERS[self.normalize](prompt)

    def seen(self, prompts: list[str] | str) -> list[PromptView]:
        """What the model reads of each prompt (normalised, cut to max_tokens tokens incl. the end token)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        out = []
        for p in prompts:
            ids = self.tokenizer(self.prepare(p), add_special_tokens=True, truncation=False).input_ids
            kept = ids[: self.max_tokens]
            text = self.tokenizer.decode(kept, skip_special_tokens=True).strip() if len(ids) > len(kept) else \
                self.prepare(p)
            out.append(PromptView(p, text, len(ids), len(ids) > self.max_tokens))
        return out

    def tokenize(self, prompts: list[str] | str) -> tuple[Tensor, Tensor]:
        """(ids, mask), both (B, max_tokens) on the encoder's device, as the official pipeline tokenizes."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        tok = self.tokenizer([self.prepare(p) for p in prompts], padding="max_length", max_length=self.max_tokens,
                             truncation=True, add_special_tokens=True, return_tensors="pt")
        return tok.input_ids.to(self.device), tok.attention_mask.to(self.device)

    @torch.no_grad()
    def _encode_one(self, prompt: str) -> tuple[Tensor, Tensor]:
        key = self.prepare(prompt)
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


def truncation_summary(views: list[PromptView], max_tokens: int, what: str = "prompts") -> str | None:
    """One line for all the prompts (`T5TextEncoder.seen` views) longer than the token limit: how many, and the
    first of them with what the model reads of it; None when none is cut."""
    cut = [v for v in views if v.truncated]
    if not cut:
        return None
    v = cut[0]
    return (f"{len(cut)} of {len(views)} {what} exceed the text encoder's limit of {max_tokens} tokens and are cut, "
            f"e.g. {v.prompt[:60]!r}... has {v.tokens} tokens; the text encoder reads the first {max_tokens}: "
            f"{v.text!r}")


def save_embeddings(path: str | os.PathLike, context: Tensor, mask: Tensor, *, overwrite: bool = False) -> Path:
    """Store precomputed prompt embeddings as safetensors {"context": (B, S, D), "mask": (B, S)}."""
    from safetensors.torch import save

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    with atomic_file(path, "wb") as f:
        f.write(save({"context": context.contiguous(), "mask": mask.contiguous()}))
    return path


def load_embeddings(path: str | os.PathLike) -> tuple[Tensor, Tensor]:
    """(context (B, S, D), mask (B, S)) from a `save_embeddings` file; ValueError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"precomputed embeddings {path} do not exist")
    try:
        reader = SafetensorsReader(path)  # checks the header, sizes and truncation before reading
        sd = {k: reader.get(k) for k in reader.keys()}
    except CheckpointError as e:
        raise ValueError(str(e)) from None
    if set(sd) != {"context", "mask"} or sd["context"].ndim != 3 or sd["mask"].shape != sd["context"].shape[:2]:
        raise ValueError(f"{path}: expected tensors context (B, S, D) and mask (B, S), got "
                         f"{ {k: tuple(v.shape) for k, v in sd.items()} }")
    if not sd["context"].is_floating_point():
        raise ValueError(f"{path}: context must be floating point, got {sd['context'].dtype}")
    return sd["context"], sd["mask"]
