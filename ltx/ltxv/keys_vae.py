"""Key tables and config maps for the VAE and the latent upsamplers: official <-> ltx <-> diffusers.

Official single file (ltx-video 0.1.2): VAE tensors under `vae.`, our module names are the official ones, so
the table is a prefix strip; `metadata["config"]["vae"]` is the official `CausalVideoAutoencoder` config
(the 0.9.0 file uses one shared `"blocks"` list, later ones `encoder_blocks` / `decoder_blocks`).
`vae.per_channel_statistics.*` holds five per-channel vectors; encode/decode read `mean-of-means` and
`std-of-means`, and the other three (`channel`, `mean-of-stds`, `mean-of-stds_over_std-of-means`) are kept
as buffers so that official -> ltx -> official is bitwise (`VAEConfig.extra_statistics` says they exist).

Latent upsampler file: unprefixed keys, *flat* `metadata["config"]` = {in_channels, mid_channels,
num_blocks_per_stage, dims, spatial_upsample, temporal_upsample}; diffusers `LTXLatentUpsamplerModel` uses the
same names and config. One component, "upsampler", covers the spatial and the temporal model (its config
says which).

diffusers `AutoencoderKLLTXVideo` groups the official flat block list into down/up blocks:
  encoder: official res_x -> down_blocks.i.resnets, compress -> down_blocks.i.downsamplers.0,
           res_x_y -> down_blocks.i.conv_out, last res_x -> mid_block;
  decoder (run order): first res_x -> mid_block, then per up block i: res_x_y -> up_blocks.i.conv_in,
           compress_all -> up_blocks.i.upsamplers.0, res_x -> up_blocks.i.resnets (+ its time_embedder);
  inside blocks: res_blocks -> resnets, conv_shortcut -> conv_shortcut.conv, norm3.norm -> norm3;
  decoder.last_time_embedder / last_scale_shift_table -> decoder.time_embedder / scale_shift_table;
  per_channel_statistics.mean-of-means / std-of-means -> latents_mean / latents_std.
The diffusers config is translated block list <-> (block_out_channels, layers_per_block, ...), and a layout
diffusers cannot express (a non-zeros padding mode, a timestep-conditioned res_x_y, ...) is refused.
Dropped on the way to diffusers (it has no place for them): the three unused statistics.

Tables are written diffusers -> ours; ours -> diffusers is `invert(...)` plus the documented drop rules.
"""

from __future__ import annotations

from dataclasses import replace

from ltx.core.keymap import Rule, invert
from ltx.ltxv.keys_official import ConfigError, _check_fixed
from ltx.ltxv.upsampler import UpsamplerConfig
from ltx.ltxv.vae import STATISTICS, USED_STATISTICS, VAEBlock, VAEConfig

VAE_PREFIX = "vae."
VAE_FROM_OFFICIAL = (Rule(VAE_PREFIX + "{rest}", "{rest}"),)
VAE_CLASS = "CausalVideoAutoencoder"
VAE_DIFFUSERS_CLASS = "AutoencoderKLLTXVideo"

# Official CausalVideoAutoencoder.from_config arguments every release sets to one value, with the value the
# official code assumes when the key is missing (so a config that relies on another default is refused).
VAE_FIXED = {
    "dims": 3,
    "norm_layer": "pixel_norm",
    "latent_log_var": "uniform",
    "use_quant_conv": False,
    "normalize_latent_channels": False,
    "scaling_factor": 1.0,
    "double_z": True,
}
_VAE_OFFICIAL_DEFAULTS = {"norm_layer": "group_norm", "use_quant_conv": True}
# The rest of the official config, in the released files' order: each key is the VAEConfig field of that name.
_VAE_FIELDS = (
    "in_channels", "out_channels", "latent_channels", "encoder_blocks", "decoder_blocks", "patch_size",
    "encoder_base_channels", "decoder_base_channels", "timestep_conditioning", "causal_decoder", "spatial_padding_mode",
)  # fmt: skip
_VAE_KNOWN = set(VAE_FIXED) | {"_class_name", "blocks", *_VAE_FIELDS}  # 0.9.0 files: one shared "blocks" list

# Block parameters the official code reads, per block kind and side (anything else it ignores).
_PARAMS = {
    ("encoder", "res_x"): {"num_layers": None},
    ("encoder", "res_x_y"): {"multiplier": 2},
    ("encoder", "compress_all"): {},
    ("encoder", "compress_space_res"): {"multiplier": 2},
    ("encoder", "compress_time_res"): {"multiplier": 2},
    ("encoder", "compress_all_res"): {"multiplier": 2},
    ("decoder", "res_x"): {"num_layers": None, "inject_noise": False},
    ("decoder", "res_x_y"): {"multiplier": 2, "inject_noise": False},
    ("decoder", "compress_all"): {"residual": False, "multiplier": 1},
}
_BLOCK_PARAM_NAMES = {"num_layers", "multiplier", "inject_noise", "residual"}


def _block_from_official(entry: list, side: str) -> VAEBlock:
    name, params = entry
    if (side, name) not in _PARAMS:
        raise ConfigError(f"VAE {side} block {name!r} is not used by any release; ltx implements "
                          f"{sorted(n for s, n in _PARAMS if s == side)}")  # fmt: skip
    if isinstance(params, int):  # official shorthand: ["res_x", 4] = {"num_layers": 4}
        params = {"num_layers": params}
    unknown = set(params) - _BLOCK_PARAM_NAMES
    if unknown:
        raise ConfigError(f"VAE {side} block {name!r} has parameters ltx does not know: {sorted(unknown)}")
    kw = {}
    for key, default in _PARAMS[(side, name)].items():
        if key not in params and default is None:
            raise ConfigError(f"VAE {side} block {name!r} needs {key!r}")
        kw[key] = params.get(key, default)
    return VAEBlock(name=name, **kw)


def _block_to_official(b: VAEBlock, side: str) -> list:
    return [b.name, {key: getattr(b, key) for key in _PARAMS[(side, b.name)]}]


def vae_config_from_official(c: dict) -> VAEConfig:
    """Official `config["vae"]` -> VAEConfig (asserting every knob ltx does not implement)."""
    if c.get("_class_name") != VAE_CLASS:
        raise ConfigError(f"vae config is a {c.get('_class_name')!r}, ltx reads {VAE_CLASS!r}")
    c = {**_VAE_OFFICIAL_DEFAULTS, **c}
    if isinstance(c.get("dims"), list):
        c["dims"] = tuple(c["dims"])
    _check_fixed(c, VAE_FIXED, "vae config")
    unknown = sorted(k for k in set(c) - _VAE_KNOWN if not k.startswith("_"))
    if unknown:
        raise ConfigError(f"vae config has fields ltx does not know: {unknown}")
    enc = c.get("encoder_blocks", c.get("blocks"))
    dec = c.get("decoder_blocks", c.get("blocks"))
    if enc is None or dec is None:
        raise ConfigError("vae config has no block list (`blocks` or `encoder_blocks` + `decoder_blocks`)")
    try:
        return VAEConfig(
            encoder_blocks=[_block_from_official(e, "encoder") for e in enc],
            decoder_blocks=[_block_from_official(e, "decoder") for e in dec],
            in_channels=c.get("in_channels", 3),
            out_channels=c.get("out_channels", 3),
            latent_channels=c["latent_channels"],
            patch_size=c.get("patch_size", 1),
            encoder_base_channels=c.get("encoder_base_channels", 128),
            decoder_base_channels=c.get("decoder_base_channels", 128),
            timestep_conditioning=bool(c.get("timestep_conditioning", False)),
            causal_decoder=bool(c.get("causal_decoder", False)),
            spatial_padding_mode=c.get("spatial_padding_mode", "zeros"),
        )
    except ValueError as e:
        raise ConfigError(f"vae config: {e}") from None


def vae_config_to_official(cfg: VAEConfig) -> dict:
    """VAEConfig -> a complete official vae config (what `CausalVideoAutoencoder.from_config` takes)."""
    official = {"_class_name": VAE_CLASS, **VAE_FIXED}
    for name in _VAE_FIELDS:
        value = getattr(cfg, name)
        if name.endswith("_blocks"):  # VAEBlocks -> [name, params] lists
            value = [_block_to_official(b, name.removesuffix("_blocks")) for b in value]
        official[name] = value
    return official


def vae_config_from_keys(cfg: VAEConfig, keys: list[str]) -> VAEConfig:
    """What the metadata does not record: whether the unused statistics are in the file (keys without prefix)."""
    present = {s for s in STATISTICS if f"per_channel_statistics.{s}" in keys}
    if present and not set(USED_STATISTICS) <= present:
        raise ConfigError(f"vae per_channel_statistics has {sorted(present)}, needs at least {list(USED_STATISTICS)}")
    extra = bool(present - set(USED_STATISTICS))
    if extra and present != set(STATISTICS):
        raise ConfigError(f"vae per_channel_statistics has {sorted(present)}: all of {list(STATISTICS)} or only "
                          f"{list(USED_STATISTICS)}")  # fmt: skip
    return replace(cfg, extra_statistics=extra)


# ------------------------------------------------------------------------------------------------ diffusers layout

_DOWNSAMPLE = {"compress_space_res": "spatial", "compress_time_res": "temporal", "compress_all_res": "spatiotemporal"}
VAE_DIFFUSERS_FIXED = {"patch_size_t": 1, "resnet_norm_eps": 1e-6, "scaling_factor": 1.0, "encoder_causal": True}
_VAE_DIFFUSERS_KNOWN = set(VAE_DIFFUSERS_FIXED) | {
    "in_channels", "out_channels", "latent_channels", "block_out_channels", "down_block_types", "layers_per_block",
    "spatio_temporal_scaling", "downsample_type", "decoder_block_out_channels", "decoder_layers_per_block",
    "decoder_spatio_temporal_scaling", "decoder_inject_noise", "upsample_residual", "upsample_factor",
    "timestep_conditioning", "patch_size", "decoder_causal", "spatial_compression_ratio", "temporal_compression_ratio",
}  # fmt: skip


def _encoder_groups(blocks: list[VAEBlock]) -> tuple[list[dict[str, int]], int]:
    """Official encoder indices grouped as diffusers down blocks ({"res", "down"?, "grow"?}) + the mid block."""
    n = len(blocks)
    if n == 0 or blocks[-1].name != "res_x":
        raise ConfigError("diffusers needs the encoder block list to end with res_x (its mid_block)")
    groups, i = [], 0
    while i < n - 1:
        if blocks[i].name != "res_x":
            raise ConfigError(f"diffusers down blocks start with res_x; encoder block {i} is {blocks[i].name}")
        g = {"res": i}
        i += 1
        if i < n - 1 and blocks[i].name.startswith("compress"):
            g["down"] = i
            i += 1
        if i < n - 1 and blocks[i].name == "res_x_y":
            g["grow"] = i
            i += 1
        groups.append(g)
    return groups, n - 1


def _decoder_groups(blocks: list[VAEBlock]) -> tuple[int, list[dict[str, int]]]:
    """Decoder run-order indices: the mid block + diffusers up blocks ({"shrink"?, "up"?, "res"})."""
    run = list(reversed(blocks))
    if not run or run[0].name != "res_x":
        raise ConfigError("diffusers needs the decoder to start with res_x (its mid_block)")
    groups, i = [], 1
    while i < len(run):
        g = {}
        if run[i].name == "res_x_y":
            g["shrink"] = i
            i += 1
        if i < len(run) and run[i].name == "compress_all":
            g["up"] = i
            i += 1
        if i >= len(run) or run[i].name != "res_x":
            raise ConfigError("diffusers up blocks end with res_x; this decoder block list does not")
        g["res"] = i
        i += 1
        groups.append(g)
    return 0, groups


def vae_config_from_diffusers(c: dict, **_: object) -> VAEConfig:
    """diffusers `AutoencoderKLLTXVideo` config -> VAEConfig. (Keyword arguments, such as the transformer's
    `causal_temporal_positioning`, do not concern the VAE and are ignored.)"""
    if c.get("_class_name", VAE_DIFFUSERS_CLASS) != VAE_DIFFUSERS_CLASS:
        raise ConfigError(f"diffusers config is a {c['_class_name']!r}, not a {VAE_DIFFUSERS_CLASS!r}")
    _check_fixed(c, VAE_DIFFUSERS_FIXED, "diffusers vae config")
    unknown = sorted(k for k in set(c) - _VAE_DIFFUSERS_KNOWN if not k.startswith("_"))
    if unknown:
        raise ConfigError(f"diffusers vae config has fields ltx does not know: {unknown}")
    ch = list(c.get("block_out_channels", (128, 256, 512, 512)))
    layers = list(c.get("layers_per_block", (4, 3, 3, 3, 4)))
    types = list(c.get("down_block_types", ("LTXVideoDownBlock3D",) * 4))
    scaling = list(c.get("spatio_temporal_scaling", (True, True, True, False)))
    downsample = list(c.get("downsample_type", ("conv",) * 4))
    new = types[-1] == "LTXVideo095DownBlock3D"
    if any(t != types[-1] for t in types):
        raise ConfigError(f"diffusers down_block_types mixes block kinds: {types}")
    n = len(ch) - 1 if new else len(ch)
    enc: list[VAEBlock] = []
    for i in range(n):
        c_in, c_out = ch[i], (ch[i + 1] if new or i + 1 < n else ch[i])
        if c_out % c_in:
            raise ConfigError(f"block_out_channels {ch}: {c_out} is not a multiple of {c_in}")
        enc.append(VAEBlock(name="res_x", num_layers=layers[i]))
        if new:
            if not scaling[i] or downsample[i] not in _DOWNSAMPLE.values():
                raise ConfigError(f"LTXVideo095DownBlock3D {i}: ltx implements space-to-depth downsampling only")
            name = {v: k for k, v in _DOWNSAMPLE.items()}[downsample[i]]
            enc.append(VAEBlock(name=name, multiplier=c_out // c_in))
        else:
            if scaling[i]:
                enc.append(VAEBlock(name="compress_all"))
            if c_out != c_in:
                enc.append(VAEBlock(name="res_x_y", multiplier=c_out // c_in))
    enc.append(VAEBlock(name="res_x", num_layers=layers[n]))

    b = list(reversed(c.get("decoder_block_out_channels", (128, 256, 512, 512))))
    L = list(reversed(c.get("decoder_layers_per_block", (4, 3, 3, 3, 4))))
    S = list(reversed(c.get("decoder_spatio_temporal_scaling", (True, True, True, False))))
    N = list(reversed(c.get("decoder_inject_noise", (False,) * (len(b) + 1))))
    R = list(reversed(c.get("upsample_residual", (False,) * len(b))))
    U = list(reversed(c.get("upsample_factor", (1,) * len(b))))
    run = [VAEBlock(name="res_x", num_layers=L[0], inject_noise=N[0])]
    width = b[0]
    for i in range(len(b)):
        out = b[i] // U[i]
        if U[i] > 1 and not (S[i] and out == width // U[i]):
            raise ConfigError(f"diffusers up block {i}: upsample_factor {U[i]} without a matching upsampler")
        if U[i] == 1 and out != width:
            if width % out:
                raise ConfigError(f"diffusers up block {i}: {width} -> {out} channels is not a division")
            run.append(VAEBlock(name="res_x_y", multiplier=width // out, inject_noise=N[i + 1]))
        if S[i]:
            run.append(VAEBlock(name="compress_all", multiplier=U[i], residual=R[i]))
        run.append(VAEBlock(name="res_x", num_layers=L[i + 1], inject_noise=N[i + 1]))
        width = out
    timestep_conditioning = bool(c.get("timestep_conditioning", False))
    try:
        cfg = VAEConfig(
            encoder_blocks=enc,
            decoder_blocks=list(reversed(run)),
            in_channels=c.get("in_channels", 3),
            out_channels=c.get("out_channels", 3),
            latent_channels=c.get("latent_channels", 128),
            patch_size=c.get("patch_size", 4),
            encoder_base_channels=ch[0],
            decoder_base_channels=width,
            timestep_conditioning=timestep_conditioning,
            causal_decoder=bool(c.get("decoder_causal", False)),
            extra_statistics=False,  # diffusers stores latents_mean / latents_std only
        )
    except ValueError as e:
        raise ConfigError(f"diffusers vae config: {e}") from None
    if timestep_conditioning and any(blk.name == "res_x_y" for blk in run):
        raise ConfigError("a timestep-conditioned diffusers decoder with a width-changing conv_in has no official form")
    return cfg


def vae_config_to_diffusers(cfg: VAEConfig) -> dict:
    """VAEConfig -> diffusers `AutoencoderKLLTXVideo` config; refuses layouts diffusers cannot express."""
    if cfg.spatial_padding_mode != "zeros":
        raise ConfigError(f"diffusers' LTX VAE pads with zeros only; this VAE uses {cfg.spatial_padding_mode!r}")
    groups, mid = _encoder_groups(cfg.encoder_blocks)
    enc = cfg.encoder_blocks
    new = any(b.name.endswith("_res") for b in enc)
    ch, layers, scaling, downsample = [cfg.encoder_base_channels], [], [], []
    for g in groups:
        down = enc[g["down"]] if "down" in g else None
        grow = enc[g["grow"]].multiplier if "grow" in g else 1
        layers.append(enc[g["res"]].num_layers)
        scaling.append(down is not None)
        downsample.append(_DOWNSAMPLE.get(down.name, "conv") if down is not None else "conv")
        ch.append(ch[-1] * grow * (down.multiplier if down is not None and new else 1))
    layers.append(enc[mid].num_layers)
    if not new:  # the last LTXVideoDownBlock3D keeps its width: block_out_channels has one entry per block
        ch = ch[:-1]
    run = list(reversed(cfg.decoder_blocks))
    _, dgroups = _decoder_groups(cfg.decoder_blocks)
    width = cfg.decoder_base_channels * cfg.decoder_width_factor
    b, L, S, N, R, U = [], [run[0].num_layers], [], [run[0].inject_noise], [], []
    for g in dgroups:
        up = run[g["up"]] if "up" in g else None
        shrink = run[g["shrink"]].multiplier if "shrink" in g else 1
        factor = up.multiplier if up is not None else 1
        b.append(width if factor > 1 else width // shrink)
        width = width // shrink // factor
        L.append(run[g["res"]].num_layers)
        N.append(run[g["res"]].inject_noise)
        S.append(up is not None)
        R.append(up.residual if up is not None else False)
        U.append(factor)
    out = {
        "_class_name": VAE_DIFFUSERS_CLASS,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "latent_channels": cfg.latent_channels,
        "block_out_channels": ch,
        "down_block_types": ["LTXVideo095DownBlock3D" if new else "LTXVideoDownBlock3D"] * len(groups),
        "layers_per_block": layers,
        "spatio_temporal_scaling": scaling,
        "downsample_type": downsample,
        "decoder_block_out_channels": b[::-1],
        "decoder_layers_per_block": L[::-1],
        "decoder_spatio_temporal_scaling": S[::-1],
        "decoder_inject_noise": N[::-1],
        "upsample_residual": R[::-1],
        "upsample_factor": U[::-1],
        "timestep_conditioning": cfg.timestep_conditioning,
        "patch_size": cfg.patch_size,
        "decoder_causal": cfg.causal_decoder,
        **VAE_DIFFUSERS_FIXED,
    }
    back = vae_config_from_diffusers(out)
    back.extra_statistics = cfg.extra_statistics
    if back != cfg:  # the translation must be exact; anything else is a layout diffusers cannot hold
        raise ConfigError(f"this VAE layout has no diffusers AutoencoderKLLTXVideo form ({cfg.version} blocks)")
    return out


def _res_stack_rules(dif: str, ours: str, time_embedder: bool) -> list[Rule]:
    rules = [Rule(f"{dif}.resnets.{{i}}.{{rest}}", f"{ours}.res_blocks.{{i}}.{{rest}}")]
    if time_embedder:
        rules.append(Rule(f"{dif}.time_embedder.{{rest}}", f"{ours}.time_embedder.{{rest}}"))
    return rules


def _res_block_rules(dif: str, ours: str) -> list[Rule]:
    return [
        Rule(f"{dif}.conv_shortcut.conv.{{rest}}", f"{ours}.conv_shortcut.{{rest}}"),  # a CausalConv3d in diffusers
        Rule(f"{dif}.norm3.{{rest}}", f"{ours}.norm3.norm.{{rest}}"),
        Rule(f"{dif}.{{rest}}", f"{ours}.{{rest}}"),
    ]


def vae_diffusers_rules(cfg: VAEConfig) -> tuple[Rule, ...]:
    """diffusers `AutoencoderKLLTXVideo` keys -> ours, for this layout."""
    rules = [
        Rule("encoder.conv_in.{rest}", "encoder.conv_in.{rest}"),
        Rule("encoder.conv_out.{rest}", "encoder.conv_out.{rest}"),
        Rule("decoder.conv_in.{rest}", "decoder.conv_in.{rest}"),
        Rule("decoder.conv_out.{rest}", "decoder.conv_out.{rest}"),
        Rule("latents_mean", "per_channel_statistics.mean-of-means"),
        Rule("latents_std", "per_channel_statistics.std-of-means"),
    ]
    groups, mid = _encoder_groups(cfg.encoder_blocks)
    for i, g in enumerate(groups):
        rules += _res_stack_rules(f"encoder.down_blocks.{i}", f"encoder.down_blocks.{g['res']}", False)
        if "down" in g:
            src, dst = f"encoder.down_blocks.{i}.downsamplers.0", f"encoder.down_blocks.{g['down']}"
            rules.append(Rule(src + ".{rest}", dst + ".{rest}"))
        if "grow" in g:
            rules += _res_block_rules(f"encoder.down_blocks.{i}.conv_out", f"encoder.down_blocks.{g['grow']}")
    rules += _res_stack_rules("encoder.mid_block", f"encoder.down_blocks.{mid}", False)
    tc = cfg.timestep_conditioning
    dmid, dgroups = _decoder_groups(cfg.decoder_blocks)
    rules += _res_stack_rules("decoder.mid_block", f"decoder.up_blocks.{dmid}", tc)
    for i, g in enumerate(dgroups):
        if "shrink" in g:
            rules += _res_block_rules(f"decoder.up_blocks.{i}.conv_in", f"decoder.up_blocks.{g['shrink']}")
        if "up" in g:
            src, dst = f"decoder.up_blocks.{i}.upsamplers.0", f"decoder.up_blocks.{g['up']}"
            rules.append(Rule(src + ".{rest}", dst + ".{rest}"))
        rules += _res_stack_rules(f"decoder.up_blocks.{i}", f"decoder.up_blocks.{g['res']}", tc)
    if tc:
        rules += [
            Rule("decoder.time_embedder.{rest}", "decoder.last_time_embedder.{rest}"),
            Rule("decoder.scale_shift_table", "decoder.last_scale_shift_table"),
            Rule("decoder.timestep_scale_multiplier", "decoder.timestep_scale_multiplier"),
        ]
    return tuple(rules)


def vae_to_diffusers_rules(cfg: VAEConfig) -> tuple[Rule, ...]:
    """Ours -> diffusers: the inverse table, plus the statistics diffusers has no place for (dropped)."""
    drops = tuple(Rule(f"per_channel_statistics.{s}", None) for s in STATISTICS if s not in USED_STATISTICS)
    return drops + invert(vae_diffusers_rules(cfg))


# ------------------------------------------------------------------------------------------------ latent upsampler

UPSAMPLER_CLASS = "LatentUpsampler"
UPSAMPLER_DIFFUSERS_CLASS = "LTXLatentUpsamplerModel"
# Same names in all three formats; written out so that an unknown key is an error.
UPSAMPLER_RULES = (
    Rule("initial_conv.{rest}", "initial_conv.{rest}"),
    Rule("initial_norm.{rest}", "initial_norm.{rest}"),
    Rule("res_blocks.{i}.{rest}", "res_blocks.{i}.{rest}"),
    Rule("upsampler.0.{rest}", "upsampler.0.{rest}"),
    Rule("post_upsample_res_blocks.{i}.{rest}", "post_upsample_res_blocks.{i}.{rest}"),
    Rule("final_conv.{rest}", "final_conv.{rest}"),
)
_UPSAMPLER_KNOWN = {"in_channels", "mid_channels", "num_blocks_per_stage", "dims", "spatial_upsample",
                    "temporal_upsample"}  # fmt: skip


def upsampler_config_from_official(c: dict, **_: object) -> UpsamplerConfig:
    """Flat upsampler config (official metadata or diffusers config.json) -> UpsamplerConfig.

    Missing keys take the official `LatentUpsampler.from_config` defaults (in 4, mid 128, dims 2, ...)."""
    if c.get("_class_name", UPSAMPLER_CLASS) not in (UPSAMPLER_CLASS, UPSAMPLER_DIFFUSERS_CLASS):
        raise ConfigError(f"upsampler config is a {c['_class_name']!r}, not a latent upsampler")
    unknown = sorted(k for k in set(c) - _UPSAMPLER_KNOWN if not k.startswith("_"))
    if unknown:
        raise ConfigError(f"upsampler config has fields ltx does not know: {unknown}")
    if c.get("dims", 2) != 3:
        raise ConfigError(f"upsampler config has dims={c.get('dims', 2)}; the released upsamplers (and ltx) use 3")
    try:
        return UpsamplerConfig(
            in_channels=c.get("in_channels", 4),
            mid_channels=c.get("mid_channels", 128),
            num_blocks_per_stage=c.get("num_blocks_per_stage", 4),
            spatial=bool(c.get("spatial_upsample", True)),
            temporal=bool(c.get("temporal_upsample", False)),
        )
    except ValueError as e:
        raise ConfigError(f"upsampler config: {e}") from None


def upsampler_config_to_official(cfg: UpsamplerConfig, class_name: str = UPSAMPLER_CLASS) -> dict:
    return {
        "_class_name": class_name,
        "in_channels": cfg.in_channels,
        "mid_channels": cfg.mid_channels,
        "num_blocks_per_stage": cfg.num_blocks_per_stage,
        "dims": 3,
        "spatial_upsample": cfg.spatial,
        "temporal_upsample": cfg.temporal,
    }


def upsampler_config_to_diffusers(cfg: UpsamplerConfig) -> dict:
    return upsampler_config_to_official(cfg, UPSAMPLER_DIFFUSERS_CLASS)
