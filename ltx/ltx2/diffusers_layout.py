"""The diffusers layout of the LTX-2 family's transformer: key names and config, both ways.

diffusers 0.42.1 (`LTX2VideoTransformer3DModel`, which also runs LTX-2.3 and 2.5) keeps the official module tree
and renames a few of its nodes. A key maps by its dot-separated parts, so `adaln_single` (the video timestep
AdaLN) is never confused with `av_ca_a2v_gate_adaln_single`, which only contains it:

    official (ltx-core)                    diffusers
    patchify_proj / audio_patchify_proj    proj_in / audio_proj_in                 (top level)
    adaln_single / audio_adaln_single      time_embed / audio_time_embed           (top level)
    prompt_adaln_single (+ audio_)         prompt_adaln (+ audio_)                 (top level, 2.3)
    av_ca_{video,audio}_scale_shift_...    av_cross_attn_{video,audio}_scale_shift (top level)
    av_ca_a2v_gate_adaln_single            av_cross_attn_video_a2v_gate            (top level)
    av_ca_v2a_gate_adaln_single            av_cross_attn_audio_v2a_gate            (top level)
    scale_shift_table_a2v_ca_{video,audio} {video,audio}_a2v_cross_attn_scale_shift_table   (per block)
    q_norm / k_norm                        norm_q / norm_k                          (per attention)

Everything else (attention projections, gate logits, MLPs, modulation tables, output heads, caption projections,
`keyframes_abs_pos_embedding`) has the same name. The mapping is a bijection on the model's keys, so a state dict
round-trips bitwise (tests/ltx2/test_ltx2_transformer25.py).

Semantics that differ between the two implementations (documented in the README; the parity tests use inputs on
which they agree):
- the video self-attention mask: ltx-core turns a weight w in [0, 1] into the additive bias log(w); diffusers into
  (w - 1) * 10000. They agree on 0/1 masks and differ on fractional weights (IC-LoRA attention strength);
- diffusers takes no audio self-attention mask;
- diffusers' STG perturbs the video and the audio self-attention of the same blocks together.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ltx.core.checkpoint import CheckpointError
from ltx.ltx2.diffusers_components import DIFFUSERS_FOLDERS
from ltx.ltx2.transformer import AVTransformer, AVTransformerConfig

_TOP = {
    "patchify_proj": "proj_in",
    "audio_patchify_proj": "audio_proj_in",
    "adaln_single": "time_embed",
    "audio_adaln_single": "audio_time_embed",
    "prompt_adaln_single": "prompt_adaln",
    "audio_prompt_adaln_single": "audio_prompt_adaln",
    "av_ca_video_scale_shift_adaln_single": "av_cross_attn_video_scale_shift",
    "av_ca_audio_scale_shift_adaln_single": "av_cross_attn_audio_scale_shift",
    "av_ca_a2v_gate_adaln_single": "av_cross_attn_video_a2v_gate",
    "av_ca_v2a_gate_adaln_single": "av_cross_attn_audio_v2a_gate",
}
_INNER = {
    "scale_shift_table_a2v_ca_video": "video_a2v_cross_attn_scale_shift_table",
    "scale_shift_table_a2v_ca_audio": "audio_a2v_cross_attn_scale_shift_table",
    "q_norm": "norm_q",
    "k_norm": "norm_k",
}
_TOP_BACK = {v: k for k, v in _TOP.items()}
_INNER_BACK = {v: k for k, v in _INNER.items()}


def _rename(key: str, top: dict[str, str], inner: dict[str, str]) -> str:
    head, *rest = key.split(".")
    return ".".join([top.get(head, head), *(inner.get(p, p) for p in rest)])


def transformer_key_to_diffusers(key: str) -> str:
    """One official transformer key (without `model.diffusion_model.`) -> its diffusers name."""
    return _rename(key, _TOP, _INNER)


def transformer_key_from_diffusers(key: str) -> str:
    """One diffusers transformer key -> its official name (without `model.diffusion_model.`)."""
    return _rename(key, _TOP_BACK, _INNER_BACK)


def transformer_to_diffusers(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Official transformer keys -> diffusers keys (the tensors themselves are shared, not copied)."""
    return {transformer_key_to_diffusers(k): v for k, v in state_dict.items()}


def transformer_from_diffusers(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """diffusers transformer keys -> official keys (without `model.diffusion_model.`)."""
    return {transformer_key_from_diffusers(k): v for k, v in state_dict.items()}


def diffusers_transformer_config(cfg: AVTransformerConfig) -> dict[str, Any]:
    """`LTX2VideoTransformer3DModel(**config)` arguments that build the same network as `AVTransformer(cfg)`."""
    return dict(
        in_channels=cfg.in_channels, out_channels=cfg.out_channels,
        num_attention_heads=cfg.num_attention_heads, attention_head_dim=cfg.attention_head_dim,
        cross_attention_dim=cfg.cross_attention_dim,
        pos_embed_max_pos=cfg.positional_embedding_max_pos[0], base_height=cfg.positional_embedding_max_pos[1],
        base_width=cfg.positional_embedding_max_pos[2],
        gated_attn=cfg.apply_gated_attention, cross_attn_mod=cfg.cross_attention_adaln,
        audio_in_channels=cfg.audio_in_channels, audio_out_channels=cfg.audio_out_channels,
        audio_num_attention_heads=cfg.audio_num_attention_heads, audio_attention_head_dim=cfg.audio_attention_head_dim,
        audio_cross_attention_dim=cfg.audio_cross_attention_dim,
        audio_pos_embed_max_pos=cfg.audio_positional_embedding_max_pos[0],
        audio_gated_attn=cfg.apply_gated_attention, audio_cross_attn_mod=cfg.cross_attention_adaln,
        num_layers=cfg.num_layers, norm_eps=cfg.norm_eps, caption_channels=cfg.caption_channels,
        rope_theta=cfg.positional_embedding_theta, rope_double_precision=cfg.frequencies_precision == "float64",
        timestep_scale_multiplier=cfg.timestep_scale_multiplier,
        cross_attn_timestep_scale_multiplier=cfg.av_ca_timestep_scale_multiplier, rope_type=cfg.rope_type,
        use_prompt_embeddings=not cfg.caption_proj_before_connector, perturbed_attn=True,
        ff_bias=cfg.ff_bias, audio_ff_bias=cfg.audio_ff_bias, use_prompt_adaln_single=cfg.use_prompt_adaln_single,
        use_keyframes_abs_pos_embedding=cfg.use_keyframes_abs_pos_embedding,
    )


# diffusers' config.json values that have no official counterpart and must keep their meaning here
_DIFFUSERS_FIXED = {"patch_size": 1, "patch_size_t": 1, "activation_fn": "gelu-approximate",
                    "qk_norm": "rms_norm_across_heads", "norm_elementwise_affine": False, "attention_bias": True,
                    "attention_out_bias": True}


def config_from_diffusers(d: dict[str, Any]) -> AVTransformerConfig:
    """A diffusers transformer `config.json` -> AVTransformerConfig; one line for what the official model lacks."""
    for key, expected in _DIFFUSERS_FIXED.items():
        if key in d and d[key] != expected:
            raise ValueError(f"diffusers transformer config {key}={d[key]!r} is not supported (supported: "
                             f"{expected!r})")
    if d.get("gated_attn", False) != d.get("audio_gated_attn", False) or \
            d.get("cross_attn_mod", False) != d.get("audio_cross_attn_mod", False):
        raise ValueError("diffusers transformer config: gated_attn / cross_attn_mod differ between the video and the "
                         "audio stream (supported: the same value for both, as every official model)")
    get = d.get
    return AVTransformerConfig(
        num_layers=get("num_layers", 48), num_attention_heads=get("num_attention_heads", 32),
        attention_head_dim=get("attention_head_dim", 128),
        audio_num_attention_heads=get("audio_num_attention_heads", 32),
        audio_attention_head_dim=get("audio_attention_head_dim", 64),
        in_channels=get("in_channels", 128), out_channels=get("out_channels") or get("in_channels", 128),
        audio_in_channels=get("audio_in_channels", 128),
        audio_out_channels=get("audio_out_channels") or get("audio_in_channels", 128),
        cross_attention_dim=get("cross_attention_dim", 4096),
        audio_cross_attention_dim=get("audio_cross_attention_dim", 2048),
        caption_channels=get("caption_channels", 3840), norm_eps=get("norm_eps", 1e-6),
        positional_embedding_theta=get("rope_theta", 10000.0),
        positional_embedding_max_pos=(get("pos_embed_max_pos", 20), get("base_height", 2048), get("base_width", 2048)),
        audio_positional_embedding_max_pos=(get("audio_pos_embed_max_pos", 20),),
        timestep_scale_multiplier=get("timestep_scale_multiplier", 1000),
        av_ca_timestep_scale_multiplier=get("cross_attn_timestep_scale_multiplier", 1000),
        rope_type=get("rope_type", "interleaved"),
        frequencies_precision="float64" if get("rope_double_precision", True) else "float32",
        apply_gated_attention=get("gated_attn", False), cross_attention_adaln=get("cross_attn_mod", False),
        caption_proj_before_connector=not get("use_prompt_embeddings", True),
        use_prompt_adaln_single=get("use_prompt_adaln_single", True), ff_bias=get("ff_bias", True),
        audio_ff_bias=get("audio_ff_bias", True),
        use_keyframes_abs_pos_embedding=get("use_keyframes_abs_pos_embedding", False),
    )


# ------------------------------------------------------------------------------------------------ folders

DIFFUSERS_CLASS = DIFFUSERS_FOLDERS["transformer"][1]
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


def write_diffusers_transformer(ckpt, dst: str | os.PathLike, *, dtype: torch.dtype | None = None,
                                overwrite: bool = False) -> Path:
    """An LTX-2 checkpoint's transformer (ltx.ltx2.checkpoint.LTX2Checkpoint) as a diffusers component folder:
    `dst/config.json` (`LTX2VideoTransformer3DModel`'s arguments) and `dst/diffusion_pytorch_model.safetensors`
    (diffusers key names; tensors bitwise unless `dtype` casts the floating ones), each written atomically.
    `LTX2VideoTransformer3DModel.from_pretrained(dst)` loads it; `read_diffusers_transformer` reads it back."""
    from ltx.core.checkpoint import TensorEntry, write_safetensors
    from ltx.ltx2 import checkpoint as ltx2_checkpoint

    module = ltx2_checkpoint.check(ckpt, ["transformer"])["transformer"]
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise CheckpointError(f"{dst}: exists and is not a folder (a diffusers component is a folder)")
    if (dst / WEIGHTS_NAME).exists() and not overwrite:
        raise CheckpointError(f"{dst / WEIGHTS_NAME} exists; pass overwrite=True (--overwrite) to replace it")
    dst.mkdir(parents=True, exist_ok=True)
    entries = []
    for ours, key in ckpt.keys["transformer"].items():
        info = ckpt.reader.infos[key]
        out_dtype = dtype if dtype is not None and info.dtype.is_floating_point else info.dtype
        entries.append((info.offsets[0], TensorEntry(transformer_key_to_diffusers(ours), out_dtype, info.shape,
                                                     lambda k=key, d=out_dtype: ckpt.reader.get(k).to(d))))
    entries = [e for _, e in sorted(entries, key=lambda pair: pair[0])]
    out = write_safetensors(dst / WEIGHTS_NAME, entries, {"format": "pt"}, overwrite=True)
    config = {"_class_name": DIFFUSERS_CLASS, **diffusers_transformer_config(module.cfg)}
    tmp = dst / "config.json.tmp"
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    os.replace(tmp, dst / "config.json")
    return out.parent


def read_diffusers_transformer(src: str | os.PathLike, *, device: str | torch.device = "cpu",
                               dtype: torch.dtype | None = None) -> AVTransformer:
    """A diffusers `LTX2VideoTransformer3DModel` folder -> AVTransformer, built from its config.json and filled
    strictly (every key renamed back, shapes checked before a tensor is read)."""
    from ltx.core.checkpoint import SafetensorsReader, load_strict

    src = Path(src)
    if not (src / "config.json").is_file():
        raise CheckpointError(f"{src}: no config.json; a diffusers transformer folder holds config.json and "
                              f"{WEIGHTS_NAME}")
    config = json.loads((src / "config.json").read_text())
    if config.get("_class_name") != DIFFUSERS_CLASS:
        raise CheckpointError(f"{src}: config _class_name {config.get('_class_name')!r} is not {DIFFUSERS_CLASS!r}")
    files = sorted(src.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{src}: no .safetensors weights")
    try:
        cfg = config_from_diffusers(config)
    except ValueError as e:
        raise CheckpointError(f"{src}: {e}") from None
    with torch.device("meta"):
        model = AVTransformer(cfg)
    sd = {}
    for f in files:
        reader = SafetensorsReader(f)
        for key in reader.keys():
            t = reader.get(key)
            sd[transformer_key_from_diffusers(key)] = t.to(device, dtype) if dtype is not None and \
                t.is_floating_point() else t.to(device)
    return load_strict(model, sd, what=str(src)).eval()




def write_diffusers(ckpt, dst: str | os.PathLike, components: tuple[str, ...] | None = None, *,
                    dtype: torch.dtype | None = None, overwrite: bool = False) -> list[Path]:
    """An LTX-2 checkpoint's components as diffusers `LTX2Pipeline` component folders under `dst` (transformer/,
    connectors/, vae/, audio_vae/, vocoder/, duration_head/: config.json + diffusion_pytorch_model.safetensors
    each; the tokenizer and text encoder are the Gemma folder's own, the scheduler the caller's). The transformer
    is streamed tensor by tensor; the others are loaded (small) and renamed by ltx.ltx2.diffusers_components."""
    from ltx.core.checkpoint import TensorEntry, write_safetensors
    from ltx.ltx2 import checkpoint as ltx2_checkpoint

    names = tuple(components or (n for n in DIFFUSERS_FOLDERS if n in ckpt.keys))
    unknown = [n for n in names if n not in DIFFUSERS_FOLDERS]
    if unknown:
        raise CheckpointError(f"{unknown} have no diffusers layout (LTX2Pipeline has {list(DIFFUSERS_FOLDERS)})")
    for name in names:  # every component's layout checked (on meta) before anything is written
        if name != "transformer":
            _diffusers_parts(name, ltx2_checkpoint.build(ckpt, name), {}, ckpt)
    dst, written = Path(dst), []
    for name in names:
        folder = dst / DIFFUSERS_FOLDERS[name][0]
        if name == "transformer":
            written.append(write_diffusers_transformer(ckpt, folder, dtype=dtype, overwrite=overwrite))
            continue
        if (folder / WEIGHTS_NAME).exists() and not overwrite:
            raise CheckpointError(f"{folder / WEIGHTS_NAME} exists; pass overwrite=True (--overwrite) to replace it")
        module = ltx2_checkpoint.load(ckpt, [name])[name]
        cls, config, out = _diffusers_parts(name, module, module.state_dict(), ckpt)
        folder.mkdir(parents=True, exist_ok=True)
        entries = [TensorEntry(k, dtype if dtype is not None and t.is_floating_point() else t.dtype, tuple(t.shape),
                               lambda t=t, d=dtype: t if d is None or not t.is_floating_point() else t.to(d))
                   for k, t in out.items()]
        write_safetensors(folder / WEIGHTS_NAME, entries, {"format": "pt"}, overwrite=True)
        tmp = folder / "config.json.tmp"
        tmp.write_text(json.dumps({"_class_name": cls, **config}, indent=2) + "\n")
        os.replace(tmp, folder / "config.json")
        written.append(folder)
    return written


def _diffusers_parts(name: str, module, sd: dict[str, Tensor], ckpt) -> tuple[str, dict, dict[str, Tensor]]:
    """(diffusers class, config, renamed state dict) of one non-transformer component; CheckpointError (one line)
    for a layout diffusers cannot hold (e.g. connectors without MLP biases)."""
    from ltx.ltx2 import checkpoint as ltx2_checkpoint
    from ltx.ltx2 import diffusers_components as dc

    try:
        if name == "text":
            return (DIFFUSERS_FOLDERS[name][1], *dc.text_connectors_to_diffusers(module.config, sd))
        if name == "vae":
            return (DIFFUSERS_FOLDERS[name][1], *dc.video_vae_to_diffusers(module.cfg, sd))
        if name == "audio_vae":
            return (DIFFUSERS_FOLDERS[name][1], *dc.audio_vae_to_diffusers(module.cfg, sd))
        if name == "duration_head":
            return (DIFFUSERS_FOLDERS[name][1], *dc.duration_head_to_diffusers(module.cfg, sd))
        mel_bins = ltx2_checkpoint.build(ckpt, "audio_vae").cfg.mel_bins if "audio_vae" in ckpt.keys else 64
        return dc.vocoder_to_diffusers(module.cfg, sd, mel_bins=mel_bins)
    except ValueError as e:
        raise CheckpointError(f"--to diffusers: {name}: {e}") from None


def is_diffusers_ltx2(root: str | os.PathLike) -> bool:
    """A folder holding diffusers LTX-2 components (`transformer/config.json` of LTX2VideoTransformer3DModel)."""
    config = Path(root) / "transformer" / "config.json"
    try:
        return config.is_file() and json.loads(config.read_text()).get("_class_name") == DIFFUSERS_CLASS
    except (OSError, json.JSONDecodeError):
        return False


def read_diffusers(root: str | os.PathLike, *, device: str | torch.device = "cpu") -> dict[str, torch.nn.Module]:
    """The LTX2Pipeline component folders under `root` that exist (transformer/, connectors/, vae/, audio_vae/,
    vocoder/, duration_head/) -> our modules, each filled strictly; `ltx.ltx2.checkpoint.write_modules` writes
    them as the official bundled file."""
    from ltx.ltx2.diffusers_components import read_diffusers_component

    root, out = Path(root), {}
    for name, (folder, _) in DIFFUSERS_FOLDERS.items():
        if not (root / folder / "config.json").is_file():
            continue
        out[name] = (read_diffusers_transformer(root / folder, device=device) if name == "transformer"
                     else read_diffusers_component(root / folder, name))
    if not out:
        folders = ", ".join(f for f, _ in DIFFUSERS_FOLDERS.values())
        raise CheckpointError(f"{root}: no diffusers LTX-2 component folder ({folders})")
    return out
