"""Prompt enhancement: a local instruct Gemma rewrites a short prompt into the long, detailed caption kind LTX-2
was trained on, before the prompt is encoded. Off unless a caller asks for it.

Which Gemma (config.json `model_type`):
- LTX-2.5: a dense Gemma 4 instruct ("gemma4", e.g. google/gemma-4-E2B-it). The 2.5 text encoder, the LTX Gemma 4
  ("gemma4_unified"), is not trained for enhancement and is refused.
- LTX-2 / 2.3: their text encoder, Gemma 3 12B instruct ("gemma3"), doubles as the enhancer:
  `PromptEnhancer.from_encoder(encoder)` reuses the loaded `ltx.ltx2.text.GemmaTextEncoder` (no second copy).
Text-only Gemma checkpoints ("gemma3_text", "gemma4_text") work too. Nothing is downloaded.

What runs: the chat template of the folder's tokenizer on [system prompt, user request], the generation prompt
appended, then greedy decoding (deterministic: one request gives one enhancement, whatever the RNG state) with
no 5-gram repeated, up to `max_new_tokens` (the official 600 for Gemma 4, 512 for Gemma 3). The new tokens are
decoded without special tokens and their whitespace collapsed into one paragraph.

Differences from the official code (Lightricks/LTX-2 400fd31 `ltx_core/text_encoders/gemma/encoders/base_encoder.py`,
diffusers 0.42.1 `LTX2Pipeline.enhance_prompt`): the system prompt is ours (below) unless the caller passes
`official_system_prompt(...)`, which reads Lightricks' text at run time from the installed diffusers; the official
Gemma 3 path samples (temperature 0.7, seed 10), here it is greedy as Gemma 4's; the official input is left padded
to a multiple of 8 for flash attention, here it is not padded (a single prompt needs no mask); text-to-video only
(the official image-conditioned enhancement, which needs the Gemma processor and an image, is not here).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from ltx.ltx2.text import GEMMA4_ENCODER_TYPES, GemmaTextEncoder, read_gemma_info, tokenizer_folder

# Ours, written for this repo: what the enhancer is asked to produce. One prompt for both Gemma generations.
SYSTEM_PROMPT = (
    "You turn a short request for a video with sound into one detailed caption for a text-to-video model. "
    "Keep every element of the request and contradict none of it; add concrete details where it is vague. "
    "Describe, in the present tense and in the order things happen: the people or things in view and how they "
    "look, the place and its light, each movement, the shot size and the camera (say that it stays still if it "
    "does), and everything heard: speech quoted word for word, music, ambient sound and sound effects. "
    "Only what can be seen or heard, in plain, specific words. "
    "Reply with the caption alone: one paragraph of English, about 150 words, with no title, list or markup."
)
USER_PREFIX = "Request: "  # ours; the user turn is USER_PREFIX + the prompt
MAX_NEW_TOKENS = {3: 512, 4: 600}  # by Gemma generation: the official defaults
NO_REPEAT_NGRAM = 5  # the official Gemma 4 setting: greedy decoding otherwise loops


def _enhancer_classes() -> dict[str, type]:
    from transformers import (
        Gemma3ForCausalLM,
        Gemma3ForConditionalGeneration,
        Gemma4ForCausalLM,
        Gemma4ForConditionalGeneration,
    )

    return {"gemma3": Gemma3ForConditionalGeneration, "gemma3_text": Gemma3ForCausalLM,
            "gemma4": Gemma4ForConditionalGeneration, "gemma4_text": Gemma4ForCausalLM}


def _refuse_unified(model_type: str, where: object) -> None:
    if model_type in GEMMA4_ENCODER_TYPES:
        raise ValueError(f"{where}: the LTX-2.5 text encoder (model_type {model_type!r}) is not trained for prompt "
                         "enhancement; pass a dense Gemma 4 instruct folder (model_type 'gemma4', e.g. "
                         "google/gemma-4-E2B-it)")


def official_system_prompt(model_type: str) -> str:
    """Lightricks' text-to-video enhancement system prompt for a Gemma generation ("gemma3*": LTX-2 / 2.3,
    "gemma4*": LTX-2.5), read at run time from the installed diffusers (>= 0.42, `diffusers.pipelines.ltx2.utils`);
    ValueError when it is not installed. Nothing of the text is kept in this repo."""
    names = {"gemma3": "T2V_DEFAULT_SYSTEM_PROMPT", "gemma4": "LTX2_5_T2V_DEFAULT_SYSTEM_PROMPT"}
    family = model_type[:6]
    if family not in names or model_type in GEMMA4_ENCODER_TYPES:
        raise ValueError(f"no official enhancement system prompt for model_type {model_type!r} "
                         "(one for 'gemma3' and one for 'gemma4')")
    try:
        from diffusers.pipelines.ltx2 import utils
    except ImportError:
        raise ValueError("the official system prompts are read from diffusers (>= 0.42), which is not installed; "
                         "use ltx.ltx2.enhance.SYSTEM_PROMPT") from None
    text = getattr(utils, names[family], None)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"the installed diffusers has no {names[family]} (diffusers.pipelines.ltx2.utils)")
    return text.strip()


class PromptEnhancer:
    """A local instruct Gemma (model + tokenizer with a chat template) that rewrites prompts, greedily.

    Build with `from_folder(path)` (loads the model) or `from_encoder(encoder)` (LTX-2 / 2.3: reuses the text
    encoder's Gemma 3), then `enhance(prompt) -> str`.
    """

    def __init__(self, model: nn.Module, tokenizer: object, *, system_prompt: str = SYSTEM_PROMPT,
                 max_new_tokens: int | None = None, no_repeat_ngram_size: int = NO_REPEAT_NGRAM):
        model_type = str(getattr(model.config, "model_type", ""))
        _refuse_unified(model_type, type(model).__name__)
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(f"the {model_type or 'Gemma'} tokenizer has no chat template (chat_template.jinja or "
                             "tokenizer_config.json 'chat_template'); prompt enhancement needs an instruct (-it) Gemma")
        if tokenizer.bos_token_id is None:
            raise ValueError("the Gemma tokenizer has no bos_token")
        generation = 4 if model_type.startswith("gemma4") else 3
        self.model, self.tokenizer = model, tokenizer
        self.system_prompt = system_prompt
        self.max_new_tokens = int(max_new_tokens or MAX_NEW_TOKENS[generation])
        self.no_repeat_ngram_size = int(no_repeat_ngram_size)
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens!r}")

    @classmethod
    def from_folder(cls, path: str | os.PathLike, *, dtype: torch.dtype = torch.bfloat16,
                    device: str | torch.device = "cpu", **kwargs) -> PromptEnhancer:
        """Load a local Hugging Face Gemma instruct folder (config.json, weights, tokenizer with a chat template).
        GemmaFolderMissing (one line) when the folder or its config.json is missing; ValueError for a folder that
        cannot enhance (the LTX-2.5 text encoder, no chat template, another model)."""
        info = read_gemma_info(path)
        _refuse_unified(info.model_type, info.path)
        classes = _enhancer_classes()
        if info.model_type not in classes:
            raise ValueError(f"{info.path}: model_type={info.model_type!r} cannot enhance prompts "
                             f"(supported: {sorted(classes)})")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder(info.path), local_files_only=True)
        if getattr(tokenizer, "chat_template", None) is None:  # before the weights are read
            raise ValueError(f"{info.path}: the tokenizer has no chat template; prompt enhancement needs an "
                             "instruct (-it) Gemma")
        model = classes[info.model_type].from_pretrained(info.path, local_files_only=True, dtype=dtype)
        return cls(model.to(device).eval(), tokenizer, **kwargs)

    @classmethod
    def from_encoder(cls, encoder: GemmaTextEncoder, **kwargs) -> PromptEnhancer:
        """LTX-2 / 2.3: the text encoder's own Gemma 3 (with its lm_head) as the enhancer, nothing loaded again."""
        return cls(encoder.model, encoder.tokenizer, **kwargs)

    def messages(self, prompt: str) -> list[dict]:
        return [{"role": "system", "content": self.system_prompt},
                {"role": "user", "content": USER_PREFIX + prompt.strip()}]

    def chat_text(self, prompt: str) -> str:
        """The chat template applied to the system prompt and the request, the model's turn opened."""
        return self.tokenizer.apply_chat_template(self.messages(prompt), tokenize=False, add_generation_prompt=True)

    def input_ids(self, prompt: str) -> Tensor:
        """(1, N) token ids of `chat_text` with exactly one <bos> first (the template usually writes it)."""
        ids = list(self.tokenizer(self.chat_text(prompt), add_special_tokens=False).input_ids)
        bos = self.tokenizer.bos_token_id
        if not ids or ids[0] != bos:
            ids = [bos, *ids]
        device = next(self.model.parameters()).device
        return torch.tensor([ids], dtype=torch.int64, device=device)

    @torch.no_grad()
    def generate(self, prompt: str, max_new_tokens: int | None = None) -> Tensor:
        """The new token ids (1-D, at most `max_new_tokens`; fewer when the model ends its turn), greedy."""
        from transformers import GenerationConfig

        n = int(max_new_tokens or self.max_new_tokens)
        eos = self.model.generation_config.eos_token_id
        pad = self.tokenizer.pad_token_id
        config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=n,
                                  no_repeat_ngram_size=self.no_repeat_ngram_size,
                                  eos_token_id=eos if eos is not None else self.tokenizer.eos_token_id,
                                  pad_token_id=pad if pad is not None else self.tokenizer.eos_token_id,
                                  bos_token_id=self.tokenizer.bos_token_id)
        ids = self.input_ids(prompt)
        out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
        return out[0, ids.shape[1]:]

    def enhance(self, prompt: str, max_new_tokens: int | None = None) -> str:
        """The enhanced prompt: one paragraph. An empty generation gives `prompt` back, with a warning."""
        text = self.tokenizer.decode(self.generate(prompt, max_new_tokens), skip_special_tokens=True)
        text = " ".join(text.split())
        if not text:
            warnings.warn("the enhancer generated no text; the prompt is used as given", stacklevel=2)
            return prompt
        return text


def enhance_prompt(gemma_folder: str | os.PathLike | Path, prompt: str, *, dtype: torch.dtype = torch.bfloat16,
                   device: str | torch.device = "cpu", **kwargs) -> str:
    """Load the enhancer from `gemma_folder`, enhance one prompt, free it. kwargs: `PromptEnhancer`'s
    (system_prompt, max_new_tokens, no_repeat_ngram_size)."""
    return PromptEnhancer.from_folder(gemma_folder, dtype=dtype, device=device, **kwargs).enhance(prompt)
