"""LTX-2 text side: Gemma hidden states -> per-layer normalised features -> video / audio text contexts.

References: Lightricks LTX-2 `ltx_core/text_encoders/gemma/` (ltx-core 1.0.0; 1.2.0 at Lightricks/LTX-2 400fd31
for LTX-2.5): `feature_extractor.py`, `embeddings_connector.py`, `embeddings_processor.py`,
`encoders/{base_encoder,encoder_configurator}.py`, `tokenizer.py`; the 1-D RoPE of the connectors is
`ltx_core/model/transformer/rope.py` (split layout). diffusers 0.42.1 `pipelines/ltx2/` (`connectors.py`,
`_get_gemma_prompt_embeds`, `utils.resolve_default_image_crf`). Parity: tests/ltx2/test_ltx2_text.py (2.0/2.3 vs
ltx-core 1.0.0), tests/ltx2/test_ltx2_text25.py (2.5 vs diffusers 0.42.1).

Text encoders. LTX-2 (19B) and LTX-2.3 read Gemma 3 12B ("gemma3"); LTX-2.5 reads an LTX fine-tune of Gemma 4 12B
("gemma4_unified", e.g. `gemma4-12b-ltx-v1`; encode only). The hidden-state path is the same for both: all
num_hidden_layers + 1 hidden states of the base model, the last one after the final norm, left padding, a leading
<bos> (the official 1.2.0 tokenizer prepends it when the tokenizer does not: Gemma 4's). 2.5 uses the V2 feature
extractor below with Gemma 4's width and layer count, which the official code reads from the Gemma config, not from
the checkpoint (`TextConnectorConfig.from_metadata(..., gemma=)`). Which Gemma a checkpoint needs:
`check_gemma_version` (metadata `gemma_source_checkpoint.gemma_version` against the Gemma config's `gemma_version`).

Shapes: B prompts · T = 1024 tokens (left padded) · D = 3840 Gemma width · L = 49 hidden states (the embedding
output and the 48 layer outputs, the last one after Gemma's final norm) · Dv / Da video / audio context width.
D and L are Gemma 3 12B's; with Gemma 4 they are its config's hidden_size and num_hidden_layers + 1.

    prompts --GemmaTextEncoder--> L x (B, T, D), mask (B, T)   (1 = real token, padding on the left)
            --feature_extractor--> video feats (B, T, Dv), audio feats (B, T, Da)
                V1 (19B):  per prompt and layer, (x - mean) / (max - min) * 8 over the valid tokens, flattened
                           d-major / layer-minor to D*L, one Linear D*L -> D (no bias); video = audio features
                V2 (2.3):  per token and layer RMS norm, flattened, two Linears D*L -> Dv, Da (with bias) on the
                           features scaled by sqrt(Dv / D), sqrt(Da / D)
            --video_connector / audio_connector--> (B, T, Dv), (B, T, Da)
                padding replaced by learnt registers: the valid tokens move to the front, the tail holds the
                registers (tiled by position), then full attention (no mask) in `layers` pre-norm blocks with
                1-D RoPE over arange(T) / max_pos, then a weightless RMS norm (MLP biases unless the metadata's
                `connector_ff_bias` is false, an ltx-core 1.2.0 key)
    The transformer then attends to all T context tokens (the returned mask is all ones).

The 19B transformer still projects the 3840-wide contexts to 4096 / 2048 itself (caption_projection); 2.3 has
no projection there. Module names equal the official checkpoint keys after the renames in `OFFICIAL_PREFIXES`.

Batches: the official code runs one prompt at a time (its register replacement indexes with `mask.squeeze()`).
Here every step is per prompt, so B > 1 gives the B = 1 results row by row (tested). Only left padding, as the
official tokenizer produces, is supported: any other mask raises ValueError.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ltx.core.nn import FeedForward
from ltx.ltx2.rope import RopeTable, rope_table
from ltx.ltx2.transformer import Attention

GEMMA_WIDTH = 3840  # Gemma-3 12B hidden size (`caption_channels` in the metadata)
GEMMA_HIDDEN_STATES = 49  # embedding output + 48 layers
MAX_TOKENS = 1024  # official tokenizer length
# Our metadata key (in `config["transformer"]`) for a text encoder with another hidden-state count than Gemma-3
# 12B's 49 (the demo's tiny Gemma); ltx-core ignores it and hard-codes 49. Written only when it is not 49.
HIDDEN_STATES_KEY = "text_encoder_num_hidden_states"
CONNECTOR_ROPE_THETA = 10_000.0  # the official connector never reads a theta from the metadata
EPS = 1e-6  # every norm and denominator on the text side

# Gemma folders by config.json `model_type` (the multimodal top-level type of an official download)
GEMMA3_TYPES = ("gemma3", "gemma3_text")  # LTX-2 / 2.3 text encoder (and their prompt enhancer); "_text": our demo
GEMMA4_ENCODER_TYPES = ("gemma4_unified",)  # LTX-2.5 text encoder, encode only
GEMMA4_ENHANCER_TYPES = ("gemma4",)  # dense Gemma 4 instruct: the LTX-2.5 prompt enhancer, not a text encoder
# From this model_version on, a checkpoint must name its text encoder in `gemma_source_checkpoint` (ltx-core 1.2.0
# `_GEMMA_SOURCE_CHECKPOINT_REQUIRED_SINCE`, below the 2.5 stamp so that pre-release 2.4 builds are covered too) and
# conditioning images default to CRF 18 (ltx-pipelines `_PARAMS_SINCE_VERSION`). Official: (2, 4, 0) for the
# first, (2, 4) for the second, so a bare "2.4" is old to one and new to the other; here it is 2.4 for both.
GEMMA_VERSION_REQUIRED_SINCE = (2, 4)
# H.264 CRF of the one-frame round trip of conditioning images: the compression each generation was trained with
IMAGE_CRF_LTX2 = 33  # LTX-2 / 2.3 (ltx-pipelines DEFAULT_IMAGE_CRF)
IMAGE_CRF_LTX2_5 = 18  # LTX-2.5, model_version >= 2.4 (ltx-pipelines LTX_2_4_IMAGE_CRF, diffusers LTX2_5_IMAGE_CRF)

# file key prefix -> our key prefix (EmbeddingsProcessor state dict); everything else in the file is not ours
OFFICIAL_PREFIXES = {
    "text_embedding_projection.": "feature_extractor.",
    "model.diffusion_model.video_embeddings_connector.": "video_connector.",
    "model.diffusion_model.audio_embeddings_connector.": "audio_connector.",
}

# the only values of the V2 keys the official code implements (encoder_configurator.py::_V2_EXPECTED_CONFIG)
_V2_KEYS = {
    "caption_proj_before_connector": True,
    "caption_projection_first_linear": False,
    "caption_proj_input_norm": False,
    "caption_projection_second_linear": False,
}


# ---------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class TextConnectorConfig:
    """Defaults are LTX-2 19B (`TextConnectorConfig.ltx2_19b()`); `ltx2_3()` is LTX-2.3."""

    feature_extractor: str = "v1"  # "v1" (19B, shared 3840-wide features) | "v2" (2.3, separate video/audio)
    text_dim: int = GEMMA_WIDTH
    num_hidden_states: int = GEMMA_HIDDEN_STATES  # a Gemma constant, not in the metadata
    video_heads: int = 30
    video_head_dim: int = 128
    video_layers: int = 2
    audio_heads: int = 30
    audio_head_dim: int = 128
    audio_layers: int = 2
    gated_attention: bool = False  # per-head 2*sigmoid gates (2.3), both connectors
    num_registers: int = 128
    rope_max_pos: int = 4096  # connector positions are arange(T) / rope_max_pos
    ff_bias: bool = True  # the connector MLPs' biases (metadata `connector_ff_bias`, ltx-core 1.2.0; absent = True)

    def __post_init__(self):
        if self.feature_extractor not in ("v1", "v2"):
            raise ValueError(f"feature_extractor={self.feature_extractor!r} is not supported (supported: 'v1', 'v2')")
        for name in ("text_dim", "num_hidden_states", "video_heads", "video_head_dim", "audio_heads",
                     "audio_head_dim", "num_registers", "rope_max_pos"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TextConnectorConfig.{name}={getattr(self, name)!r} must be a positive integer")
        if self.video_layers < 0 or self.audio_layers < 0:
            raise ValueError(f"connector layer counts must be >= 0, got {self.video_layers}, {self.audio_layers}")
        if self.video_head_dim % 2 or self.audio_head_dim % 2:
            raise ValueError(f"split RoPE needs even head dims, got {self.video_head_dim}, {self.audio_head_dim}")
        if self.feature_extractor == "v1" and (self.video_dim, self.audio_dim) != (self.text_dim, self.text_dim):
            raise ValueError(
                f"feature extractor v1 feeds {self.text_dim}-wide features to both connectors, but they are "
                f"{self.video_dim} (video) and {self.audio_dim} (audio) wide"
            )

    @property
    def video_dim(self) -> int:
        return self.video_heads * self.video_head_dim

    @property
    def audio_dim(self) -> int:
        return self.audio_heads * self.audio_head_dim

    @classmethod
    def ltx2_19b(cls) -> TextConnectorConfig:
        return cls()

    @classmethod
    def ltx2_3(cls) -> TextConnectorConfig:
        return cls(feature_extractor="v2", video_heads=32, video_head_dim=128, video_layers=8, audio_heads=32,
                   audio_head_dim=64, audio_layers=8, gated_attention=True)

    @classmethod
    def from_metadata(cls, d: dict, *, gemma: GemmaInfo | None = None) -> TextConnectorConfig:
        """From the checkpoint metadata's `config["transformer"]` dict, read as the official configurators do
        (`Embeddings1DConnectorConfigurator`, `AudioEmbeddings1DConnectorConfigurator`,
        `_create_feature_extractor`), including their defaults for absent keys. Raises ValueError for values we
        do not implement (whose official default, where absent, is one of them: interleaved RoPE, fp32 grid).

        `gemma`: the text encoder's config (`read_gemma_info`). Given, the feature extractor's input width and
        hidden-state count are the Gemma's hidden_size and num_hidden_layers + 1, as ltx-core 1.2.0 reads them
        (the only source for LTX-2.5's Gemma 4); absent, `caption_channels` and 49 (Gemma 3 12B), as 1.0.0."""

        def only(key: str, supported: object, default: object) -> None:
            value = d.get(key, default)
            if value != supported:
                where = "" if key in d else " (absent: the official default)"
                raise ValueError(f"transformer.{key}={value!r}{where} is not supported (supported: {supported!r})")

        only("rope_type", "split", "interleaved")
        only("frequencies_precision", "float64", False)
        only("connector_norm_output", True, True)
        only("use_embeddings_connector", True, True)
        max_pos = list(d.get("connector_positional_embedding_max_pos", [1]))
        if len(max_pos) != 1:
            raise ValueError(f"transformer.connector_positional_embedding_max_pos={max_pos!r} is not supported "
                             "(supported: one axis, e.g. [4096])")

        v2_present = d.keys() & _V2_KEYS.keys()
        if d.get("caption_proj_before_connector") is False:  # the 19B value, as our transformer metadata writes it
            v2_present -= {"caption_proj_before_connector"}
        if not v2_present:
            extractor = "v1"
        elif v2_present != _V2_KEYS.keys():
            missing = sorted(_V2_KEYS.keys() - v2_present)
            raise ValueError(f"transformer has only part of the V2 text-projection keys (missing: {missing})")
        else:
            for key, supported in _V2_KEYS.items():
                only(key, supported, None)
            extractor = "v2"
        if "text_encoder_norm_type" in d:  # not read by the official code; checked so a new variant is noticed
            only("text_encoder_norm_type", "per_token_rms" if extractor == "v2" else None, None)

        heads = d.get("connector_num_attention_heads", 30)
        head_dim = d.get("connector_attention_head_dim", 128)
        layers = d.get("connector_num_layers", 2)
        cfg = cls(
            feature_extractor=extractor,
            video_heads=int(heads),
            video_head_dim=int(head_dim),
            video_layers=int(layers),
            audio_heads=int(d.get("audio_connector_num_attention_heads", heads)),
            audio_head_dim=int(d.get("audio_connector_attention_head_dim", head_dim)),
            audio_layers=int(d.get("audio_connector_num_layers", layers)),
            gated_attention=bool(d.get("connector_apply_gated_attention", False)),
            num_registers=int(d.get("connector_num_learnable_registers", 128)),
            rope_max_pos=int(max_pos[0]),
            ff_bias=bool(d.get("connector_ff_bias", True)),
            **_text_width(d, gemma),
        )
        if extractor == "v2":
            # the V2 projections are sized by the transformer's widths, which must be the connectors' widths
            for what, heads_key, dim_key, width in (("video", "num_attention_heads", "attention_head_dim",
                                                     cfg.video_dim),
                                                    ("audio", "audio_num_attention_heads", "audio_attention_head_dim",
                                                     cfg.audio_dim)):
                if heads_key not in d or dim_key not in d:
                    raise ValueError(f"V2 text projection needs transformer.{heads_key} and transformer.{dim_key}")
                if d[heads_key] * d[dim_key] != width:
                    raise ValueError(f"transformer {what} width {d[heads_key]}*{d[dim_key]} differs from the {what} "
                                     f"connector width {width}; not supported (they must be equal)")
        return cfg

    def to_metadata(self) -> dict:
        """A `config["transformer"]` dict (text-side keys only) that `from_metadata` reads back and the official
        EmbeddingsProcessorConfigurator accepts (it always builds 128 registers, whatever the value here)."""
        d = {
            "caption_channels": self.text_dim,
            "rope_type": "split",
            "frequencies_precision": "float64",
            "use_embeddings_connector": True,
            "connector_norm_output": True,
            "connector_num_attention_heads": self.video_heads,
            "connector_attention_head_dim": self.video_head_dim,
            "connector_num_layers": self.video_layers,
            "audio_connector_num_attention_heads": self.audio_heads,
            "audio_connector_attention_head_dim": self.audio_head_dim,
            "audio_connector_num_layers": self.audio_layers,
            "connector_apply_gated_attention": self.gated_attention,
            "connector_num_learnable_registers": self.num_registers,
            "connector_positional_embedding_max_pos": [self.rope_max_pos],
        }
        if self.num_hidden_states != GEMMA_HIDDEN_STATES:  # another text encoder (the demo's tiny Gemma)
            d[HIDDEN_STATES_KEY] = self.num_hidden_states
        if not self.ff_bias:  # written only when not the default, so 2.0/2.3 metadata stays as ltx-core 1.0.0's
            d["connector_ff_bias"] = False
        if self.feature_extractor == "v2":
            d.update(_V2_KEYS)
            d.update(text_encoder_norm_type="per_token_rms", num_attention_heads=self.video_heads,
                     attention_head_dim=self.video_head_dim, audio_num_attention_heads=self.audio_heads,
                     audio_attention_head_dim=self.audio_head_dim)
        return d


def _text_width(d: dict, gemma: GemmaInfo | None) -> dict:
    """text_dim and num_hidden_states: from the Gemma config when given, else from the metadata."""
    if gemma is None:
        return {"text_dim": int(d.get("caption_channels", GEMMA_WIDTH)),
                "num_hidden_states": int(d.get(HIDDEN_STATES_KEY, GEMMA_HIDDEN_STATES))}
    if HIDDEN_STATES_KEY in d and int(d[HIDDEN_STATES_KEY]) != gemma.num_hidden_states:
        raise ValueError(f"transformer.{HIDDEN_STATES_KEY}={d[HIDDEN_STATES_KEY]} but the Gemma at {gemma.path} "
                         f"gives {gemma.num_hidden_states} hidden states ({gemma.num_hidden_states - 1} layers + 1)")
    return {"text_dim": gemma.hidden_size, "num_hidden_states": gemma.num_hidden_states}


# ---------------------------------------------------------------------------------------------------------------
# Masks and stacking
# ---------------------------------------------------------------------------------------------------------------


def check_left_padded(mask: Tensor) -> Tensor:
    """mask: (B, T) of 0/1 (or bool), padding on the left. Returns it as bool; ValueError otherwise."""
    if mask.ndim != 2:
        raise ValueError(f"attention mask must be (B, T), got shape {tuple(mask.shape)}")
    if mask.dtype != torch.bool and ((mask != 0) & (mask != 1)).any():
        raise ValueError("attention mask must hold only 0 and 1")
    valid = mask.bool()
    if (valid[:, :-1] & ~valid[:, 1:]).any():  # a real token followed by padding
        raise ValueError("attention mask must be left padded (zeros first, then ones), as the Gemma tokenizer pads")
    return valid


def stack_hidden_states(hidden_states: Sequence[Tensor] | Tensor, num: int, width: int) -> Tensor:
    """L tensors (B, T, D), or one (B, T, D, L), -> (B, T, D, L); ValueError for a wrong count or width."""
    if isinstance(hidden_states, Tensor):
        x = hidden_states
        if x.ndim != 4:
            raise ValueError(f"stacked hidden states must be (B, T, D, L), got shape {tuple(x.shape)}")
    else:
        if len(hidden_states) != num:
            raise ValueError(f"expected {num} Gemma hidden states (embeddings + layers), got {len(hidden_states)}")
        shapes = {tuple(h.shape) for h in hidden_states}
        if len(shapes) != 1 or len(next(iter(shapes))) != 3:
            raise ValueError(f"hidden states must all be (B, T, D) with one shape, got {sorted(shapes)}")
        x = torch.stack(list(hidden_states), dim=-1)  # (B, T, D, L)
    if x.shape[-1] != num:
        raise ValueError(f"expected {num} Gemma hidden states (embeddings + layers), got {x.shape[-1]}")
    if x.shape[2] != width:
        raise ValueError(f"hidden states are {x.shape[2]} wide, expected {width} (the Gemma hidden size)")
    return x


# ---------------------------------------------------------------------------------------------------------------
# Feature extractors
# ---------------------------------------------------------------------------------------------------------------


class FeatureExtractorV1(nn.Module):
    """LTX-2 19B: per prompt and layer, `8 (x - mean) / (max - min + eps)` over the valid tokens and all of D.

    Dtypes as the official code (it runs in bf16): the sums, min and max are in the input dtype, the mean is a
    float32 tensor (an integer count divides it), so the normalised values are float32 until the Linear's input
    is cast back to the input dtype.
    """

    def __init__(self, text_dim: int, num_hidden_states: int):
        super().__init__()
        self.aggregate_embed = nn.Linear(text_dim * num_hidden_states, text_dim, bias=False)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        # x: (B, T, D, L); mask: (B, T), left padded
        B, T, D, L = x.shape
        valid = mask.bool()[:, :, None, None]  # (B, T, 1, 1)
        count = valid.sum(dim=1, keepdim=True) * D  # (B, 1, 1, 1) int64: valid entries per layer
        total = x.masked_fill(~valid, 0.0).sum(dim=(1, 2), keepdim=True)  # (B, 1, 1, L) in x.dtype
        mean = total / (count + EPS)  # float32
        lo = x.masked_fill(~valid, float("inf")).amin(dim=(1, 2), keepdim=True)
        hi = x.masked_fill(~valid, float("-inf")).amax(dim=(1, 2), keepdim=True)
        feats = 8 * (x - mean) / (hi - lo + EPS)  # (B, T, D, L) float32
        feats = feats.reshape(B, T, D * L).masked_fill(~valid[..., 0], 0.0)  # d-major, layer-minor
        out = self.aggregate_embed(feats.to(x.dtype))  # (B, T, D)
        return out, out


class FeatureExtractorV2(nn.Module):
    """LTX-2.3: per-token RMS norm over D of each layer, then separate video and audio Linears (with bias) on
    the features scaled by sqrt(out_width / D)."""

    def __init__(self, text_dim: int, num_hidden_states: int, video_dim: int, audio_dim: int):
        super().__init__()
        self.text_dim = text_dim
        self.video_aggregate_embed = nn.Linear(text_dim * num_hidden_states, video_dim)
        self.audio_aggregate_embed = nn.Linear(text_dim * num_hidden_states, audio_dim)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        # x: (B, T, D, L); mask: (B, T)
        B, T, D, L = x.shape
        feats = x * torch.rsqrt(torch.mean(x**2, dim=2, keepdim=True) + EPS)  # (B, T, D, L)
        feats = feats.reshape(B, T, D * L)
        feats = torch.where(mask.bool()[..., None], feats, torch.zeros_like(feats)).to(x.dtype)
        video_scale = math.sqrt(self.video_aggregate_embed.out_features / self.text_dim)
        audio_scale = math.sqrt(self.audio_aggregate_embed.out_features / self.text_dim)
        return self.video_aggregate_embed(feats * video_scale), self.audio_aggregate_embed(feats * audio_scale)


# ---------------------------------------------------------------------------------------------------------------
# Connector: 1-D RoPE, attention, blocks
# ---------------------------------------------------------------------------------------------------------------


def _rms(x: Tensor) -> Tensor:
    return F.rms_norm(x, (x.shape[-1],), eps=EPS)  # weightless


class ConnectorBlock(nn.Module):
    """h += attn1(rms(h)); h += ff(rms(h))."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, gated: bool, ff_bias: bool = True):
        super().__init__()
        self.attn1 = Attention(dim, dim, num_heads, head_dim, EPS, gated)  # the transformer's, without a mask
        self.ff = FeedForward(dim, 4 * dim, bias=ff_bias)

    def forward(self, x: Tensor, rope: RopeTable) -> Tensor:
        x = self.attn1(_rms(x), rope=rope) + x
        return self.ff(_rms(x)) + x


class EmbeddingsConnector(nn.Module):
    """The official Embeddings1DConnector: registers for the padding, `num_layers` blocks, a final RMS norm."""

    def __init__(self, *, num_heads: int, head_dim: int, num_layers: int, gated: bool, num_registers: int,
                 max_pos: int, ff_bias: bool = True):
        super().__init__()
        self.num_heads, self.head_dim, self.max_pos = num_heads, head_dim, max_pos
        dim = num_heads * head_dim
        self.transformer_1d_blocks = nn.ModuleList(
            ConnectorBlock(dim, num_heads, head_dim, gated, ff_bias) for _ in range(num_layers)
        )
        self.learnable_registers = nn.Parameter(torch.empty(num_registers, dim))
        nn.init.uniform_(self.learnable_registers, -1.0, 1.0)  # as the official init (weights come from the file)

    def replace_padding(self, x: Tensor, valid: Tensor) -> Tensor:
        """x: (B, T, dim); valid: (B, T) bool, left padded. The n valid tokens of each row move to positions
        [0, n) in order; position j >= n holds register j % R."""
        B, T, dim = x.shape
        R = self.learnable_registers.shape[0]
        if T % R:
            raise ValueError(f"text length {T} must be a multiple of the connector's {R} registers "
                             f"(the official tokenizer pads to {MAX_TOKENS})")
        n = valid.sum(dim=1, keepdim=True)  # (B, 1)
        j = torch.arange(T, device=x.device)[None, :]  # (1, T)
        src = (j + (T - n)).clamp(max=T - 1)  # (B, T): where token j comes from
        moved = x.gather(1, src[..., None].expand(B, T, dim))  # (B, T, dim)
        registers = self.learnable_registers.to(x.dtype).repeat(T // R, 1)  # (T, dim)
        return torch.where((j < n)[..., None], moved, registers)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        # x: (B, T, dim); mask: (B, T) 0/1, left padded -> (B, T, dim), every position now a real token
        if x.ndim != 3 or x.shape[-1] != self.num_heads * self.head_dim:
            raise ValueError(f"connector input must be (B, T, {self.num_heads * self.head_dim}), "
                             f"got {tuple(x.shape)}")
        if tuple(mask.shape) != tuple(x.shape[:2]):
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match the features' (B, T) {tuple(x.shape[:2])}")
        x = self.replace_padding(x, check_left_padded(mask))
        B, T, dim = x.shape
        positions = torch.arange(T, dtype=torch.float32, device=x.device).expand(B, 1, T)  # (B, 1, T): token index
        rope = rope_table(positions, dim=dim, num_heads=self.num_heads, max_pos=[self.max_pos],
                          theta=CONNECTOR_ROPE_THETA, layout="split", float64_grid=True, dtype=x.dtype, middle=False)
        for block in self.transformer_1d_blocks:
            x = block(x, rope)
        return _rms(x)


# ---------------------------------------------------------------------------------------------------------------
# The processor: hidden states -> contexts
# ---------------------------------------------------------------------------------------------------------------


class EmbeddingsProcessor(nn.Module):
    """Feature extractor + video and audio connectors (official EmbeddingsProcessor.process_hidden_states)."""

    def __init__(self, config: TextConnectorConfig):
        super().__init__()
        self.config = c = config
        if c.feature_extractor == "v1":
            self.feature_extractor = FeatureExtractorV1(c.text_dim, c.num_hidden_states)
        else:
            self.feature_extractor = FeatureExtractorV2(c.text_dim, c.num_hidden_states, c.video_dim, c.audio_dim)
        self.video_connector = EmbeddingsConnector(num_heads=c.video_heads, head_dim=c.video_head_dim,
                                                   num_layers=c.video_layers, gated=c.gated_attention,
                                                   num_registers=c.num_registers, max_pos=c.rope_max_pos,
                                                   ff_bias=c.ff_bias)
        self.audio_connector = EmbeddingsConnector(num_heads=c.audio_heads, head_dim=c.audio_head_dim,
                                                   num_layers=c.audio_layers, gated=c.gated_attention,
                                                   num_registers=c.num_registers, max_pos=c.rope_max_pos,
                                                   ff_bias=c.ff_bias)

    def forward(
        self, hidden_states: Sequence[Tensor] | Tensor, attention_mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """hidden_states: num_hidden_states x (B, T, text_dim) (or stacked (B, T, text_dim, L)); attention_mask:
        (B, T), 1 = real token, left padded. Returns video context (B, T, Dv), audio context (B, T, Da) and the
        context mask (B, T) int64, all ones (registers fill the padding)."""
        video, audio = self.features(hidden_states, attention_mask)
        return self.connect(video, audio, attention_mask)

    def features(self, hidden_states: Sequence[Tensor] | Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """The feature extractor alone: (video features (B, T, Dv'), audio features (B, T, Da')), what a training
        cache stores (train.preprocess) so that training never runs Gemma. V1 gives the same tensor twice."""
        x = stack_hidden_states(hidden_states, self.config.num_hidden_states, self.config.text_dim)
        if tuple(attention_mask.shape) != tuple(x.shape[:2]):
            raise ValueError(f"attention mask shape {tuple(attention_mask.shape)} does not match the hidden states' "
                             f"(B, T) {tuple(x.shape[:2])}")
        check_left_padded(attention_mask)
        T, R = x.shape[1], self.config.num_registers
        if T % R:
            raise ValueError(f"text length {T} must be a multiple of the connectors' {R} registers "
                             f"(the official tokenizer pads to {MAX_TOKENS})")
        return self.feature_extractor(x, attention_mask)

    def connect(self, video: Tensor, audio: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The two connectors on extracted features (B, T, .) with their left-padded mask (B, T): video context,
        audio context and the all-ones context mask (the official trainer's `create_embeddings`)."""
        check_left_padded(attention_mask)
        video = self.video_connector(video, attention_mask)
        audio = self.audio_connector(audio, attention_mask)
        mask = torch.ones(video.shape[:2], dtype=torch.int64, device=video.device)
        return video, audio, mask


def official_to_ours(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """An `EmbeddingsProcessor` state dict from tensors named as the official file names them
    (`text_embedding_projection.*`, `model.diffusion_model.{video,audio}_embeddings_connector.*`, see
    `OFFICIAL_PREFIXES`); ValueError for a key outside those prefixes. Load the result with strict=True."""
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        src = next((p for p in OFFICIAL_PREFIXES if key.startswith(p)), None)
        if src is None:
            raise ValueError(f"key {key!r} is not a text-side key of the official layout "
                             f"(prefixes: {', '.join(OFFICIAL_PREFIXES)})")
        out[OFFICIAL_PREFIXES[src] + key[len(src):]] = value
    return out


# ---------------------------------------------------------------------------------------------------------------
# Gemma folders: which Gemma, and whether it fits the checkpoint
# ---------------------------------------------------------------------------------------------------------------


class GemmaFolderMissing(FileNotFoundError):
    pass


@dataclass(frozen=True)
class GemmaInfo:
    """What the LTX text side reads from a local Hugging Face Gemma folder's config.json (no weights)."""

    path: Path
    model_type: str  # "gemma3", "gemma3_text", "gemma4_unified", "gemma4", ...
    gemma_version: str | None  # the LTX fine-tune's stamp (`gemma4-12b-ltx-v1`); Google's releases have none
    hidden_size: int  # of the text model: the feature extractor's D
    num_hidden_states: int  # num_hidden_layers + 1 (the embedding output): the feature extractor's L

    @property
    def generation(self) -> int:
        """3 or 4 (Gemma family by model_type); 0 for anything else."""
        return 3 if self.model_type.startswith("gemma3") else 4 if self.model_type.startswith("gemma4") else 0

    def describe(self) -> str:
        version = f", gemma_version {self.gemma_version!r}" if self.gemma_version else ", no gemma_version"
        return f"{self.path} (model_type {self.model_type!r}{version})"


def read_gemma_info(path: str | os.PathLike) -> GemmaInfo:
    """config.json of a local Gemma folder (or the `gemma_config` of LTX-2.5's packed text-encoder file,
    ltx.ltx2.gemma_pack) -> GemmaInfo; GemmaFolderMissing (one line) without one."""
    from ltx.ltx2 import gemma_pack

    root = Path(path)
    if gemma_pack.is_packed(root):
        config = gemma_pack.read_packed(root).hf_config()
        text = config.get_text_config()
        return GemmaInfo(path=root, model_type=str(config.model_type),
                         gemma_version=getattr(config, "gemma_version", None),
                         hidden_size=int(text.hidden_size), num_hidden_states=int(text.num_hidden_layers) + 1)
    if not root.is_dir():
        if root.is_file():
            raise GemmaFolderMissing(f"{root} is a file but not a packed text encoder (no 'gemma_config' in its "
                                     "metadata); pass a Hugging Face Gemma folder or the packed "
                                     "gemma4-12b-with-proj-ltx-2.5-bf16.safetensors")
        raise GemmaFolderMissing(f"Gemma folder {root} does not exist; pass a local Hugging Face Gemma folder "
                                 "(config.json, model*.safetensors, tokenizer) or LTX-2.5's packed text-encoder "
                                 "file")
    if not (root / "config.json").is_file():
        raise GemmaFolderMissing(f"{root} has no config.json; it is not a Hugging Face Gemma folder")
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(root, local_files_only=True)
    except (ValueError, KeyError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{root}/config.json: transformers cannot read it ({first})") from None
    text = config.get_text_config()
    return GemmaInfo(path=root, model_type=str(config.model_type),
                     gemma_version=getattr(config, "gemma_version", None),
                     hidden_size=int(text.hidden_size), num_hidden_states=int(text.num_hidden_layers) + 1)


def _as_info(gemma: GemmaInfo | str | os.PathLike) -> GemmaInfo:
    return gemma if isinstance(gemma, GemmaInfo) else read_gemma_info(gemma)


def _metadata_value(metadata: Mapping, key: str) -> object:
    """A top-level safetensors metadata value, JSON-decoded when it is a JSON string (as in the file), else as is
    (the official loader decodes every value that parses and keeps the others as strings)."""
    value = metadata.get(key)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def model_version_tuple(version: object) -> tuple[int, ...]:
    """"2.3.0" -> (2, 3, 0); "2.4-rc2" -> (2, 4) ('-' read as '.', as ltx-pipelines' detect_model_version);
    parsing stops at the first non-integer part; None / "" -> () (below every version)."""
    if version is None:
        return ()
    parts = []
    for part in str(version).replace("-", ".").split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


def expected_gemma_version(metadata: Mapping) -> str | None:
    """The checkpoint's `gemma_source_checkpoint.gemma_version` (LTX-2.5: "gemma4-12b-ltx-v1"), or None when the
    metadata has no `gemma_source_checkpoint` (LTX-2 / 2.3). ValueError for one without a gemma_version."""
    source = _metadata_value(metadata, "gemma_source_checkpoint")
    if source is None:
        return None
    if not isinstance(source, Mapping) or not isinstance(source.get("gemma_version"), str):
        raise ValueError(f"checkpoint metadata gemma_source_checkpoint={source!r} has no gemma_version string")
    return source["gemma_version"]


def check_gemma_version(metadata: Mapping, gemma: GemmaInfo | str | os.PathLike) -> None:
    """The text encoder folder `gemma` is the one the checkpoint was trained with, else ValueError (one line).

    `metadata`: the checkpoint's top-level safetensors metadata (`model_version`, `gemma_source_checkpoint`, ...),
    values as in the file (JSON strings) or decoded. The rules of ltx-core 1.2.0 `_check_gemma_version`:
    - `gemma_source_checkpoint` present (LTX-2.5): its `gemma_version` must equal the Gemma config's
      `gemma_version` (a Gemma 3 folder or Google's own Gemma 4, which carry none, are refused);
    - absent, and model_version >= 2.4: an error (such a checkpoint must name its Gemma), except that a Gemma
      folder without a gemma_version only warns, as the official code (it cannot be checked);
    - absent, and older (LTX-2 / 2.3, or no model_version): the folder must be a Gemma 3. The official code
      accepts model_type "gemma3" only; "gemma3_text" (a text-only Gemma 3, the demo's) is accepted here too.
    """
    info = _as_info(gemma)
    version = metadata.get("model_version")
    expected = expected_gemma_version(metadata)
    if expected is not None:
        if info.gemma_version != expected:
            family = {3: "a Gemma 3 folder, ", 4: "a Gemma 4 folder, "}.get(info.generation, "")
            raise ValueError(f"text encoder mismatch: the checkpoint (model_version {version!r}) was trained with "
                             f"gemma_version {expected!r} (metadata gemma_source_checkpoint), but the Gemma given is "
                             f"{family}{info.describe()}; pass the {expected} folder")
        return
    if model_version_tuple(version) >= GEMMA_VERSION_REQUIRED_SINCE:
        if info.gemma_version is None:
            warnings.warn(f"checkpoint model_version {version!r} names no text encoder (no metadata "
                          f"gemma_source_checkpoint) and {info.path} has no gemma_version: the pair is not checked",
                          stacklevel=2)
            return
        raise ValueError(f"checkpoint model_version {version!r} (2.4 or later) must name its text encoder in the "
                         f"metadata gemma_source_checkpoint.gemma_version and does not; cannot check "
                         f"{info.describe()} against it")
    if info.model_type not in GEMMA3_TYPES:
        raise ValueError(f"text encoder mismatch: the checkpoint (model_version {version!r}, no metadata "
                         f"gemma_source_checkpoint) is LTX-2 / 2.3, trained with Gemma 3 (model_type 'gemma3'), but "
                         f"the Gemma given is {info.describe()}; pass a Gemma 3 12B folder (google/gemma-3-12b-it)")


def text_config_for(metadata: Mapping, gemma: GemmaInfo | str | os.PathLike) -> TextConnectorConfig:
    """The `EmbeddingsProcessor` config of a checkpoint paired with a Gemma folder: `check_gemma_version`, then
    `TextConnectorConfig.from_metadata(metadata["config"]["transformer"], gemma=...)` (as ltx-core 1.2.0's
    EmbeddingsProcessorConfigurator, which sizes the feature extractor from the Gemma config)."""
    info = _as_info(gemma)
    check_gemma_version(metadata, info)
    config = _metadata_value(metadata, "config")
    if not isinstance(config, Mapping) or not isinstance(config.get("transformer"), Mapping):
        raise ValueError("checkpoint metadata has no config.transformer object (the text connectors' config)")
    return TextConnectorConfig.from_metadata(dict(config["transformer"]), gemma=info)


def default_image_crf(metadata: Mapping | None = None, gemma: GemmaInfo | str | None = None) -> int:
    """The H.264 CRF conditioning images are round-tripped through by default: 18 for LTX-2.5, 33 before.

    From the checkpoint when its metadata tells (ltx-pipelines `detect_params`: model_version >= 2.4, or a
    `gemma_source_checkpoint`, which only 2.5 files have), else from the text encoder (diffusers
    `resolve_default_image_crf`: a Gemma 4 model_type, "gemma4_unified" or "gemma4"). `gemma`: a GemmaInfo or a
    model_type string. Neither known: 33. An explicit CRF from the user always wins over this default."""
    if metadata is not None:
        if model_version_tuple(metadata.get("model_version")) >= GEMMA_VERSION_REQUIRED_SINCE:
            return IMAGE_CRF_LTX2_5
        if expected_gemma_version(metadata) is not None:
            return IMAGE_CRF_LTX2_5
        if metadata.get("model_version") is not None:
            return IMAGE_CRF_LTX2
    model_type = gemma.model_type if isinstance(gemma, GemmaInfo) else gemma
    return IMAGE_CRF_LTX2_5 if model_type in (*GEMMA4_ENCODER_TYPES, *GEMMA4_ENHANCER_TYPES) else IMAGE_CRF_LTX2


# ---------------------------------------------------------------------------------------------------------------
# Gemma 3 / Gemma 4: local folder -> hidden states
# ---------------------------------------------------------------------------------------------------------------


def tokenizer_folder(root: Path) -> Path:
    for cand in (root, root / "tokenizer"):
        if any((cand / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
            return cand
    raise GemmaFolderMissing(f"no tokenizer (tokenizer.json / tokenizer.model) in {root} or {root / 'tokenizer'}")


def _encoder_classes() -> dict[str, type]:
    from transformers import (
        Gemma3ForCausalLM,
        Gemma3ForConditionalGeneration,
        Gemma4UnifiedForConditionalGeneration,
    )

    return {"gemma3": Gemma3ForConditionalGeneration, "gemma3_text": Gemma3ForCausalLM,
            "gemma4_unified": Gemma4UnifiedForConditionalGeneration}


class GemmaTextEncoder(nn.Module):
    """Gemma 3 (LTX-2 / 2.3) or the LTX Gemma 4 (`gemma4_unified`, LTX-2.5) run as the official
    `encode`: prompts stripped, tokenised with truncation to `max_length` (1024), a <bos> put first when the
    tokenizer does not (Gemma 4's; ltx-core 1.2.0 `LTXGemmaTokenizer`), left padded to exactly `max_length`,
    then the base model (no lm_head) with the attention mask and default positions; returns all hidden states
    and the mask.

    `from_folder(path)` loads a local Hugging Face folder (google/gemma-3-12b-it or gemma4-12b-ltx-v1 layout:
    config.json, the weights and the tokenizer, the tokenizer possibly in `tokenizer/`) or LTX-2.5's packed
    text-encoder file (ltx.ltx2.gemma_pack); nothing is downloaded.
    A "gemma3" folder loads Gemma3ForConditionalGeneration, "gemma3_text" Gemma3ForCausalLM, "gemma4_unified"
    Gemma4UnifiedForConditionalGeneration. Pair it with a checkpoint through `check_gemma_version` /
    `text_config_for` (`from_folder(..., checkpoint_metadata=)` runs the check before loading any weight).
    """

    def __init__(self, model: nn.Module, tokenizer: object, max_length: int = MAX_TOKENS):
        super().__init__()
        self.model = model  # a transformers Gemma model with a `.model` base (text or multimodal)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.tokenizer.bos_token_id is None:
            raise ValueError("the Gemma tokenizer has no bos_token; the LTX text path puts <bos> first")

    @property
    def model_type(self) -> str:
        return str(getattr(self.model.config, "model_type", ""))

    @classmethod
    def from_folder(cls, path: str | os.PathLike, *, dtype: torch.dtype = torch.bfloat16,
                    device: str | torch.device = "cpu", max_length: int = MAX_TOKENS,
                    checkpoint_metadata: Mapping | None = None) -> GemmaTextEncoder:
        info = read_gemma_info(path)
        classes = _encoder_classes()
        if info.model_type in GEMMA4_ENHANCER_TYPES:
            raise ValueError(f"{info.path}: a dense Gemma 4 (model_type {info.model_type!r}) is LTX-2.5's prompt "
                             "enhancer, not its text encoder; pass the LTX Gemma 4 folder (model_type "
                             "'gemma4_unified', e.g. gemma4-12b-ltx-v1)")
        if info.model_type not in classes:
            raise ValueError(f"{info.path}: model_type={info.model_type!r} is not supported as a text encoder "
                             f"(supported: {sorted(classes)})")
        if checkpoint_metadata is not None:
            check_gemma_version(checkpoint_metadata, info)
        from ltx.ltx2 import gemma_pack

        if gemma_pack.is_packed(info.path):  # LTX-2.5's one-file text encoder
            packed = gemma_pack.read_packed(info.path)
            model = packed.load_model(classes[info.model_type], dtype=dtype, device=device)
            return cls(model, packed.tokenizer(max_length), max_length)
        from transformers import AutoTokenizer

        model = classes[info.model_type].from_pretrained(info.path, local_files_only=True, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder(info.path), local_files_only=True,
                                                  model_max_length=max_length)
        return cls(model.to(device).eval(), tokenizer, max_length)

    def _ids(self, prompt: str, truncate: bool = True) -> list[int]:
        """Token ids of one prompt, stripped, <bos> first (prepended when the tokenizer does not add it)."""
        kwargs = {"truncation": True, "max_length": self.max_length} if truncate else {}
        ids = list(self.tokenizer(prompt.strip(), **kwargs).input_ids)
        bos = self.tokenizer.bos_token_id
        if not ids or ids[0] != bos:
            ids = [bos, *ids]
        return ids[: self.max_length] if truncate else ids

    def tokenize(self, prompts: str | Sequence[str]) -> tuple[Tensor, Tensor]:
        """(input_ids, attention_mask), both (B, max_length) int64 on the model's device."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        tok = self.tokenizer.pad({"input_ids": [self._ids(p) for p in prompts]}, padding="max_length",
                                 max_length=self.max_length, return_tensors="pt", return_attention_mask=True)
        device = next(self.model.parameters()).device
        return tok["input_ids"].to(device), tok["attention_mask"].to(device)

    def token_count(self, prompt: str) -> int:
        """How many tokens `prompt` has before truncation, <bos> included (more than `max_length`: the model reads
        only the first `max_length`)."""
        return len(self._ids(prompt, truncate=False))

    @torch.no_grad()
    def encode_ids(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[tuple[Tensor, ...], Tensor]:
        """input_ids, attention_mask: (B, T) -> (num_layers + 1 hidden states (B, T, D), attention_mask)."""
        out = self.model.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return tuple(out.hidden_states), attention_mask

    def encode(self, prompts: str | Sequence[str]) -> tuple[tuple[Tensor, ...], Tensor]:
        """Prompts -> (L x (B, 1024, D) hidden states, (B, 1024) mask), for `EmbeddingsProcessor` (Gemma 3 12B:
        L = 49, D = 3840)."""
        return self.encode_ids(*self.tokenize(prompts))
