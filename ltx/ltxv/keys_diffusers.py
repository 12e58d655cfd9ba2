"""The diffusers layout (`LTXVideoTransformer3DModel`): a component folder with `config.json` and
`diffusion_pytorch_model*.safetensors` (sharded with an index, or single).

Transformer keys differ from the official ones by four renames. diffusers hard-codes RoPE (theta 10000,
max positions 20/2048/2048) and the timestep scale (it multiplies by 1000 outside the model), so a DiTConfig
with other values has no diffusers form and writing it is refused. The causal temporal positioning flag is
a pipeline property in diffusers (`LTXConditionPipeline` applies it, `LTXPipeline` does not); it is read
from the pipeline's `model_index.json` when there is one.
"""

from __future__ import annotations

from ltx.core.keymap import Rule
from ltx.ltxv.keys_official import ConfigError, _check_fixed, dit_sizes
from ltx.ltxv.transformer import DiTConfig

DIT_FROM_DIFFUSERS = (
    Rule("proj_in.{rest}", "patchify_proj.{rest}"),
    Rule("time_embed.{rest}", "adaln_single.{rest}"),
    Rule("transformer_blocks.{i}.attn{j}.norm_q.weight", "transformer_blocks.{i}.attn{j}.q_norm.weight"),
    Rule("transformer_blocks.{i}.attn{j}.norm_k.weight", "transformer_blocks.{i}.attn{j}.k_norm.weight"),
    Rule("{rest}", "{rest}"),  # everything else already has the official (= our) name
)
DIT_CLASS = "LTXVideoTransformer3DModel"
DIT_FIXED = {
    "activation_fn": "gelu-approximate",
    "qk_norm": "rms_norm_across_heads",
    "norm_elementwise_affine": False,
    "attention_bias": True,
    "attention_out_bias": True,
    "patch_size": 1,
    "patch_size_t": 1,
}
# What diffusers hard-codes (transformer_ltx.py) and therefore cannot store.
DIT_IMPLICIT = {"max_positions": (20, 2048, 2048), "rope_theta": 10_000.0, "timestep_scale": 1000.0}
CAUSAL_PIPELINES = {"LTXConditionPipeline"}  # pipelines that apply the causal temporal position fix


def dit_config_from_diffusers(c: dict, *, causal_temporal_positioning: bool = False) -> DiTConfig:
    if c.get("_class_name", DIT_CLASS) != DIT_CLASS:
        raise ConfigError(f"diffusers config is a {c['_class_name']!r}, not a {DIT_CLASS!r}")
    _check_fixed(c, DIT_FIXED, "diffusers transformer config")
    return DiTConfig(
        **dit_sizes(c),
        norm_eps=float(c.get("norm_eps", 1e-6)),
        causal_temporal_positioning=causal_temporal_positioning,
        **DIT_IMPLICIT,
    )


def dit_config_to_diffusers(cfg: DiTConfig) -> dict:
    lost = {k: getattr(cfg, k) for k, v in DIT_IMPLICIT.items() if getattr(cfg, k) != v}
    if lost:
        raise ConfigError(f"diffusers' LTXVideoTransformer3DModel hard-codes {DIT_IMPLICIT}; this model has {lost}")
    return {
        "_class_name": DIT_CLASS,
        **DIT_FIXED,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "num_attention_heads": cfg.num_heads,
        "attention_head_dim": cfg.head_dim,
        "cross_attention_dim": cfg.dim,
        "num_layers": cfg.num_layers,
        "norm_eps": cfg.norm_eps,
        "caption_channels": cfg.caption_channels,
    }
