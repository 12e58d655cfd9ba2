"""The official LTX-Video single-file format (ltx-video 0.1.2, the released `*.safetensors` checkpoints).

One file holds every component under a key prefix (`model.diffusion_model.` for the transformer, `vae.` for
the VAE) and a JSON string `metadata["config"] = {"transformer": {...}, "vae": {...}, "scheduler": {...}}`,
plus an optional top-level `allowed_inference_steps` for distilled checkpoints. Our module names are the
official names, so the transformer table is a prefix strip.

Config knobs the released checkpoints never change are asserted to their only value (`DIT_FIXED`): a file
that sets something else is not a model `ltx` implements, and loading it must fail instead of computing
something different.
"""

from __future__ import annotations

from dataclasses import asdict

from ltx.core.keymap import Rule
from ltx.ltxv.transformer import DiTConfig

DIT_PREFIX = "model.diffusion_model."
DIT_FROM_OFFICIAL = (Rule(DIT_PREFIX + "{rest}", "{rest}"),)

# Official Transformer3DModel arguments that every release sets to the same value (ltx implements only that).
DIT_FIXED = {
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "attention_type": "default",
    "adaptive_norm": "single_scale_shift",
    "double_self_attention": False,
    "dropout": 0.0,
    "norm_elementwise_affine": False,
    "num_vector_embeds": None,
    "only_cross_attention": False,
    "positional_embedding_type": "rope",
    "qk_norm": "rms_norm",
    "standardization_norm": "rms_norm",
    "upcast_attention": False,
    "use_linear_projection": False,
    "use_tpu_flash_attention": False,
}
# Arguments the official model accepts but never reads for this architecture; kept when writing.
DIT_IGNORED = {"norm_num_groups": 32, "num_embeds_ada_norm": 1000, "project_to_2d_pos": True}


class ConfigError(ValueError):
    """A checkpoint config ltx does not implement, or one that contradicts the expected config."""


def _check_fixed(c: dict, fixed: dict, where: str) -> None:
    bad = {k: c[k] for k, only in fixed.items() if k in c and c[k] != only}
    if bad:
        expected = {k: fixed[k] for k in bad}
        raise ConfigError(f"{where} sets {bad}; ltx implements only {expected}")


def dit_sizes(c: dict) -> dict:
    """The size fields shared by the official and diffusers transformer configs, checked: text is projected to
    the model width, so cross_attention_dim must equal heads * head_dim, and caption_channels must exist."""
    heads, head_dim = c["num_attention_heads"], c["attention_head_dim"]
    if c.get("cross_attention_dim", heads * head_dim) != heads * head_dim:
        raise ConfigError(
            f"cross_attention_dim={c['cross_attention_dim']} must equal num_attention_heads * attention_head_dim"
            f" = {heads * head_dim} (the caption projection maps text to the model width)"
        )
    if c.get("caption_channels") is None:
        raise ConfigError("transformer config has no caption_channels; every release projects T5 states")
    return {"num_layers": c["num_layers"], "num_heads": heads, "head_dim": head_dim, "in_channels": c["in_channels"],
            "out_channels": c.get("out_channels") or c["in_channels"], "caption_channels": c["caption_channels"]}


def dit_config_from_official(c: dict) -> DiTConfig:
    """Official `config["transformer"]` -> DiTConfig (asserting every knob we do not implement)."""
    _check_fixed(c, DIT_FIXED, "transformer config")
    known = set(DIT_FIXED) | set(DIT_IGNORED) | {
        "_class_name", "_diffusers_version", "_name_or_path", "num_attention_heads", "attention_head_dim",
        "num_layers", "in_channels", "out_channels", "cross_attention_dim", "caption_channels", "norm_eps",
        "positional_embedding_theta", "positional_embedding_max_pos", "timestep_scale_multiplier",
        "causal_temporal_positioning",
    }  # fmt: skip
    unknown = sorted(k for k in set(c) - known if not k.startswith("_"))  # "_*": diffusers bookkeeping
    if unknown:
        raise ConfigError(f"transformer config has fields ltx does not know: {unknown}")
    return DiTConfig(
        **dit_sizes(c),
        max_positions=tuple(c["positional_embedding_max_pos"]),
        rope_theta=float(c["positional_embedding_theta"]),
        timestep_scale=float(c.get("timestep_scale_multiplier") or 1.0),
        norm_eps=float(c.get("norm_eps", 1e-5)),
        causal_temporal_positioning=bool(c.get("causal_temporal_positioning", False)),
    )


def dit_config_to_official(cfg: DiTConfig) -> dict:
    """DiTConfig -> a complete official transformer config (what `Transformer3DModel.from_config` takes)."""
    return {
        "_class_name": "Transformer3DModel",
        **{k: v for k, v in DIT_FIXED.items() if k != "use_tpu_flash_attention"},
        **DIT_IGNORED,
        "num_attention_heads": cfg.num_heads,
        "attention_head_dim": cfg.head_dim,
        "num_layers": cfg.num_layers,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "cross_attention_dim": cfg.dim,
        "caption_channels": cfg.caption_channels,
        "norm_eps": cfg.norm_eps,
        "positional_embedding_theta": cfg.rope_theta,
        "positional_embedding_max_pos": list(cfg.max_positions),
        "timestep_scale_multiplier": cfg.timestep_scale,
        "causal_temporal_positioning": cfg.causal_temporal_positioning,
    }


def config_diff(a: object, b: object) -> dict[str, tuple[object, object]]:
    """Fields whose values differ between two config dataclasses of the same type: {field: (a, b)}."""
    da, db = asdict(a), asdict(b)
    return {k: (da[k], db[k]) for k in da if da[k] != db.get(k)}
