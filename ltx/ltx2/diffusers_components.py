"""The diffusers 0.42.1 layout of the LTX-2 family's other components: the video VAE (`AutoencoderKLLTX2Video`),
the audio VAE (`AutoencoderKLLTX2Audio`), the vocoder (`LTX2Vocoder` / `LTX2VocoderWithBWE`), the text
connectors (`LTX2TextConnectors`: LTX-2.0's shared feature projection, `per_modality_projections=False`, and the
2.3 / 2.5 per-modality projections) and LTX-2.5's duration head (`LTX2DurationHead`). The transformer is
ltx/ltx2/diffusers_layout.py.

Each `*_to_diffusers(cfg, state_dict)` takes our module's config and state dict (our keys are the official file's
without its `vae.` / `audio_vae.` / `vocoder.` prefix; the text module's are ours) and returns the diffusers
constructor kwargs and the renamed state dict (the tensors are shared, not copied). Only the names and the config
are translated; what the two implementations compute with them is checked end to end in
tests/ltx2/test_ltx2_25_e2e.py.

Video VAE. The official block lists become diffusers' fixed shape: the encoder's list is
[res_x, compress, res_x, compress, ..., res_x] and diffusers' down block i holds res_x 2i and compress 2i + 1
(`downsamplers.0`), the last res_x its `mid_block`; the decoder's list runs reversed, so the first (reversed)
res_x is the `mid_block` and up block i holds the upsampler 2i + 1 (`upsamplers.0`) then res_x 2i + 2. Decoder
widths: the official compress conv gives prod(stride) * C / multiplier channels, diffusers' upsampler
out * prod(stride) with out = C / upsample_factor, so upsample_factor = multiplier and
decoder_block_out_channels (listed pixels-side first) are the widths entering each upsampler.
`upsample_type` is the one decoder list diffusers takes latent-side first (its __init__ does not reverse it).
`per_channel_statistics.mean-of-means` / `std-of-means` are diffusers' `latents_mean` / `latents_std`; the
`channel` and `mean-of-stds` vectors have no diffusers counterpart and are dropped.
"""

from __future__ import annotations

import math
import re

from torch import Tensor

# diffusers' LTX2Pipeline subfolder and class of each component (the vocoder's class comes with its config)
DIFFUSERS_FOLDERS = {"transformer": ("transformer", "LTX2VideoTransformer3DModel"),
                     "text": ("connectors", "LTX2TextConnectors"), "vae": ("vae", "AutoencoderKLLTX2Video"),
                     "audio_vae": ("audio_vae", "AutoencoderKLLTX2Audio"), "vocoder": ("vocoder", None),
                     "duration_head": ("duration_head", "LTX2DurationHead")}

_ENCODER_TYPES = {"compress_space_res": "spatial", "compress_time_res": "temporal",
                  "compress_all_res": "spatiotemporal"}
_DECODER_TYPES = {"compress_space": "spatial", "compress_time": "temporal", "compress_all": "spatiotemporal"}
_STATS = {"per_channel_statistics.mean-of-means": "latents_mean", "per_channel_statistics.std-of-means": "latents_std"}
_DROPPED_STATS = ("per_channel_statistics.channel", "per_channel_statistics.mean-of-stds")


def _alternating(blocks, what: str) -> None:
    names = [b.name for b in blocks]
    if len(names) % 2 == 0 or any((n == "res_x") != (i % 2 == 0) for i, n in enumerate(names)):
        raise ValueError(f"the diffusers video VAE needs the {what} blocks as res_x, compress, res_x, ..., res_x; "
                         f"got {names}")


def video_vae_to_diffusers(cfg, state_dict: dict[str, Tensor]) -> tuple[dict, dict[str, Tensor]]:
    """(AutoencoderKLLTX2Video kwargs, state dict) of our `VideoVAE` (ltx.ltx2.vae)."""
    enc, dec = cfg.encoder_blocks, list(reversed(cfg.decoder_blocks))
    _alternating(enc, "encoder")
    _alternating(dec, "decoder")
    widths, width = [], cfg.latent_channels
    for b in enc[1::2]:
        width *= b.multiplier
        widths.append(width)
    dec_in, width = [], 8 * cfg.decoder_base_channels
    for b in dec[1::2]:
        dec_in.append(width)
        width //= b.multiplier
    ups = dec[1::2]
    config = dict(
        in_channels=cfg.in_channels, out_channels=cfg.out_channels, latent_channels=cfg.latent_channels,
        block_out_channels=tuple(widths), down_block_types=("LTX2VideoDownBlock3D",) * len(widths),
        layers_per_block=tuple(b.num_layers for b in enc[0::2]),
        spatio_temporal_scaling=(True,) * len(widths),
        downsample_type=tuple(_ENCODER_TYPES[b.name] for b in enc[1::2]),
        # diffusers lists the decoder from the pixels' side (its __init__ reverses them)
        decoder_block_out_channels=tuple(reversed(dec_in)),
        decoder_layers_per_block=tuple(reversed([b.num_layers for b in dec[0::2]])),
        decoder_spatio_temporal_scaling=(True,) * len(ups),
        decoder_inject_noise=(False,) * (len(ups) + 1),
        upsample_type=tuple(_DECODER_TYPES[b.name] for b in ups),  # the one list diffusers does not reverse
        upsample_residual=tuple(reversed([b.residual for b in ups])),
        upsample_factor=tuple(reversed([b.multiplier for b in ups])),
        timestep_conditioning=False, patch_size=cfg.patch_size, patch_size_t=1,
        encoder_causal=True, decoder_causal=False,
        encoder_spatial_padding_mode=cfg.encoder_spatial_padding_mode,
        decoder_spatial_padding_mode=cfg.decoder_spatial_padding_mode,
        spatial_compression_ratio=cfg.patch_size * math.prod(_stride(b.name)[1] for b in enc[1::2]),
        temporal_compression_ratio=math.prod(_stride(b.name)[0] for b in enc[1::2]),
    )
    last_enc, last_dec = len(enc) - 1, 0

    def rename(key: str) -> str:
        if key in _STATS:
            return _STATS[key]
        m = re.match(r"(encoder\.down_blocks|decoder\.up_blocks)\.(\d+)\.(.*)", key)
        if m is None:
            return key
        half, i, rest = m.group(1), int(m.group(2)), m.group(3).replace("res_blocks.", "resnets.", 1)
        if half.startswith("encoder"):
            if i == last_enc:
                return f"encoder.mid_block.{rest}"
            return f"encoder.down_blocks.{i // 2}.{rest}" if i % 2 == 0 else \
                f"encoder.down_blocks.{i // 2}.downsamplers.0.{rest}"
        if i == last_dec:
            return f"decoder.mid_block.{rest}"
        return f"decoder.up_blocks.{(i - 1) // 2}.upsamplers.0.{rest}" if i % 2 else \
            f"decoder.up_blocks.{(i - 2) // 2}.{rest}"

    return config, {rename(k): v for k, v in state_dict.items() if k not in _DROPPED_STATS}


def _stride(name: str) -> tuple[int, int, int]:
    kind = name.split("_")[1]
    return {"space": (1, 2, 2), "time": (2, 1, 1), "all": (2, 2, 2)}[kind]


def audio_vae_to_diffusers(cfg, state_dict: dict[str, Tensor]) -> tuple[dict, dict[str, Tensor]]:
    """(AutoencoderKLLTX2Audio kwargs, state dict) of our `AudioVAE` (ltx.ltx2.audio_vae): the same module tree,
    only the statistics renamed."""
    config = dict(base_channels=cfg.ch, output_channels=cfg.out_ch, ch_mult=tuple(cfg.ch_mult),
                  num_res_blocks=cfg.num_res_blocks, attn_resolutions=None, in_channels=cfg.in_channels,
                  resolution=cfg.resolution, latent_channels=cfg.z_channels, norm_type="pixel",
                  causality_axis="height", dropout=cfg.dropout, mid_block_add_attention=False,
                  sample_rate=cfg.sample_rate, mel_hop_length=cfg.hop_length, is_causal=True, mel_bins=cfg.mel_bins,
                  double_z=cfg.double_z)
    return config, {_STATS.get(k, k): v for k, v in state_dict.items()}


_VOCODER_PARTS = {"conv_pre": "conv_in", "conv_post": "conv_out", "act_post": "act_out", "resblocks": "resnets",
                  "ups": "upsamplers"}


def _generator_config(g, prefix: str = "") -> dict:
    if g.resblock == "1":
        act, antialias = "leaky_relu", False
    else:
        act, antialias = "snakebeta", True
    final = (("tanh" if g.use_tanh_at_final else "clamp") if g.apply_final_activation else None)
    return {f"{prefix}hidden_channels": g.upsample_initial_channel,
            f"{prefix}upsample_kernel_sizes": list(g.upsample_kernel_sizes),
            f"{prefix}upsample_factors": list(g.upsample_rates),
            f"{prefix}resnet_kernel_sizes": list(g.resblock_kernel_sizes),
            f"{prefix}resnet_dilations": [list(d) for d in g.resblock_dilation_sizes],
            f"{prefix}act_fn": act, f"{prefix}antialias": antialias, f"{prefix}final_act_fn": final,
            f"{prefix}final_bias": g.use_bias_at_final}


def vocoder_to_diffusers(cfg, state_dict: dict[str, Tensor], mel_bins: int = 64,
                         channels: int = 2) -> tuple[str, dict, dict[str, Tensor]]:
    """(class name "LTX2Vocoder" or "LTX2VocoderWithBWE", its kwargs, state dict) of our vocoder
    (ltx.ltx2.vocoder; `cfg` is its `.cfg`: a GeneratorConfig for the 19B HiFi-GAN, a VocoderConfig with BWE):
    `conv_pre` / `conv_post` / `act_post` / `resblocks` / `ups` are `conv_in` / `conv_out` / `act_out` /
    `resnets` / `upsamplers`, an anti-aliased activation's `downsample.lowpass.filter` is `downsample.filter`."""

    def rename(key: str) -> str:
        parts = [_VOCODER_PARTS.get(p, p) for p in key.split(".")]
        return ".".join(parts).replace(".downsample.lowpass.filter", ".downsample.filter")

    sd = {rename(k): v for k, v in state_dict.items()}
    v, b = getattr(cfg, "vocoder", cfg), getattr(cfg, "bwe", None)  # a Vocoder's GeneratorConfig, or VocoderConfig
    if b is None:
        config = dict(in_channels=channels * mel_bins, out_channels=channels, **_generator_config(v),
                      output_sampling_rate=v.output_sampling_rate)
        return "LTX2Vocoder", config, sd
    config = dict(in_channels=channels * mel_bins, out_channels=channels, **_generator_config(v),
                  bwe_in_channels=channels * b.num_mels, bwe_out_channels=channels,
                  **_generator_config(b.generator, "bwe_"), filter_length=b.n_fft, hop_length=b.hop_length,
                  window_length=b.n_fft, num_mel_channels=b.num_mels, input_sampling_rate=b.input_sampling_rate,
                  output_sampling_rate=b.output_sampling_rate)
    return "LTX2VocoderWithBWE", config, sd


_CONNECTOR_TOP = [("feature_extractor.video_aggregate_embed.", "video_text_proj_in."),
                  ("feature_extractor.audio_aggregate_embed.", "audio_text_proj_in."),
                  ("video_connector.", "video_connector."), ("audio_connector.", "audio_connector.")]
# LTX-2.0 (our feature extractor "v1"): one shared projection, diffusers' `text_proj_in`
_CONNECTOR_TOP_V1 = [("feature_extractor.aggregate_embed.", "text_proj_in."),
                     ("video_connector.", "video_connector."), ("audio_connector.", "audio_connector.")]
_CONNECTOR_INNER = [(".transformer_1d_blocks.", ".transformer_blocks."), (".attn1.q_norm.", ".attn1.norm_q."),
                    (".attn1.k_norm.", ".attn1.norm_k.")]


def text_connectors_to_diffusers(cfg, state_dict: dict[str, Tensor]) -> tuple[dict, dict[str, Tensor]]:
    """(LTX2TextConnectors kwargs, state dict) of our `EmbeddingsProcessor` (ltx.ltx2.text), either feature
    extractor:

    - V2 (LTX-2.3 / 2.5): `per_modality_projections=True`, `proj_bias=True`; `feature_extractor.video_aggregate_embed`
      / `audio_aggregate_embed` are `video_text_proj_in` / `audio_text_proj_in`, `video_hidden_dim` /
      `audio_hidden_dim` the connector widths.
    - V1 (LTX-2.0): `per_modality_projections=False`, `proj_bias=False`; `feature_extractor.aggregate_embed` (D*L ->
      D, no bias) is `text_proj_in`. diffusers' module runs the same per-prompt, per-layer masked mean / range
      normalisation (x 8, its forward's `scale_factor` default; left padding, its `padding_side` default and what
      `LTX2Pipeline` passes for Gemma) in `per_layer_masked_mean_norm`, flattened d-major / layer-minor as ours, and
      feeds the one projection to both connectors. `video_hidden_dim` / `audio_hidden_dim` are not read by that
      layout and are left out (diffusers' defaults, as its own LTX-2.0 conversion leaves them).

    Both: `{video,audio}_connector.transformer_1d_blocks.*` -> `transformer_blocks.*`, `attn1.q_norm` / `k_norm` ->
    `norm_q` / `norm_k`; split RoPE with a float64 grid, theta 1e4. diffusers' connector MLPs always have biases: a
    `connector_ff_bias=false` model has no diffusers layout (refused). Outputs: tests/ltx2/test_ltx2_diffusers_read.py
    (V2), tests/ltx2/test_ltx2_connectors20_diffusers.py (V1: fp32 bitwise)."""
    if not cfg.ff_bias:
        raise ValueError("diffusers' LTX2TextConnectors has connector MLP biases; this model has none "
                         "(connector_ff_bias=false)")
    v2 = cfg.feature_extractor == "v2"
    config = dict(
        caption_channels=cfg.text_dim, text_proj_in_factor=cfg.num_hidden_states,
        video_connector_num_attention_heads=cfg.video_heads, video_connector_attention_head_dim=cfg.video_head_dim,
        video_connector_num_layers=cfg.video_layers, video_connector_num_learnable_registers=cfg.num_registers,
        video_gated_attn=cfg.gated_attention, audio_connector_num_attention_heads=cfg.audio_heads,
        audio_connector_attention_head_dim=cfg.audio_head_dim, audio_connector_num_layers=cfg.audio_layers,
        audio_connector_num_learnable_registers=cfg.num_registers, audio_gated_attn=cfg.gated_attention,
        connector_rope_base_seq_len=cfg.rope_max_pos, rope_theta=10_000.0, rope_double_precision=True,
        rope_type="split", per_modality_projections=v2)
    if v2:
        config.update(video_hidden_dim=cfg.video_dim, audio_hidden_dim=cfg.audio_dim)
    config.update(proj_bias=v2)
    top = _CONNECTOR_TOP if v2 else _CONNECTOR_TOP_V1
    out = {}
    for key, value in state_dict.items():
        src, dst = next(((s, d) for s, d in top if key.startswith(s)), (None, None))
        if src is None:
            raise ValueError(f"key {key!r} is not a {cfg.feature_extractor.upper()} text-connector key "
                             f"(prefixes: {', '.join(s for s, _ in top)})")
        key = dst + key[len(src):]
        for a, b in _CONNECTOR_INNER:
            key = key.replace(a, b)
        out[key] = value
    return config, out


# ------------------------------------------------------------------------------------------------ the way back
#
# `*_from_diffusers(config, state_dict)` read a diffusers component (its config.json as a dict, its tensors)
# back into our config and state dict: the inverse of the maps above. A key config.json leaves out takes
# diffusers 0.42.1's __init__ default (`_DIFFUSERS_DEFAULTS`, checked against diffusers' signatures in
# tests/ltx2/test_ltx2_diffusers_read.py); `_`-prefixed keys (`_class_name`, `_diffusers_version`) are ignored.
# A value our module (or the official metadata) cannot express raises one ValueError line.

_VIDEO_DEFAULTS = dict(
    in_channels=3, out_channels=3, latent_channels=128, block_out_channels=(256, 512, 1024, 2048),
    down_block_types=("LTX2VideoDownBlock3D",) * 4, decoder_block_out_channels=(256, 512, 1024),
    layers_per_block=(4, 6, 6, 2, 2), decoder_layers_per_block=(5, 5, 5, 5),
    spatio_temporal_scaling=(True,) * 4, decoder_spatio_temporal_scaling=(True,) * 3,
    decoder_inject_noise=(False,) * 4, downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
    upsample_type=("spatiotemporal",) * 3, upsample_residual=(True,) * 3, upsample_factor=(2, 2, 2),
    timestep_conditioning=False, patch_size=4, patch_size_t=1, resnet_norm_eps=1e-06, scaling_factor=1.0,
    encoder_causal=True, decoder_causal=True, encoder_spatial_padding_mode="zeros",
    decoder_spatial_padding_mode="reflect", spatial_compression_ratio=None, temporal_compression_ratio=None)
_AUDIO_DEFAULTS = dict(
    base_channels=128, output_channels=2, ch_mult=(1, 2, 4), num_res_blocks=2, attn_resolutions=None, in_channels=2,
    resolution=256, latent_channels=8, norm_type="pixel", causality_axis="height", dropout=0.0,
    mid_block_add_attention=False, sample_rate=16000, mel_hop_length=160, is_causal=True, mel_bins=64, double_z=True)
_GENERATOR_DEFAULTS = dict(
    hidden_channels=1024, upsample_kernel_sizes=[16, 15, 8, 4, 4], upsample_factors=[6, 5, 2, 2, 2],
    resnet_kernel_sizes=[3, 7, 11], resnet_dilations=[[1, 3, 5], [1, 3, 5], [1, 3, 5]], act_fn="leaky_relu",
    leaky_relu_negative_slope=0.1, antialias=False, antialias_ratio=2, antialias_kernel_size=12, final_act_fn="tanh",
    final_bias=True)
_BIGVGAN_DEFAULTS = dict(
    upsample_kernel_sizes=[11, 4, 4, 4, 4, 4], upsample_factors=[5, 2, 2, 2, 2, 2], resnet_kernel_sizes=[3, 7, 11],
    resnet_dilations=[[1, 3, 5], [1, 3, 5], [1, 3, 5]], act_fn="snakebeta", leaky_relu_negative_slope=0.1,
    antialias=True, antialias_ratio=2, antialias_kernel_size=12, final_act_fn=None, final_bias=False)
_DIFFUSERS_DEFAULTS = {
    "AutoencoderKLLTX2Video": _VIDEO_DEFAULTS,
    "AutoencoderKLLTX2Audio": _AUDIO_DEFAULTS,
    "LTX2Vocoder": dict(in_channels=128, out_channels=2, **_GENERATOR_DEFAULTS, output_sampling_rate=24000),
    "LTX2VocoderWithBWE": dict(
        in_channels=128, hidden_channels=1536, out_channels=2, **_BIGVGAN_DEFAULTS, bwe_in_channels=128,
        bwe_hidden_channels=512, bwe_out_channels=2,
        **{f"bwe_{k}": v for k, v in {**_BIGVGAN_DEFAULTS, "upsample_kernel_sizes": [12, 11, 4, 4, 4],
                                      "upsample_factors": [6, 5, 2, 2, 2]}.items()},
        filter_length=512, hop_length=80, window_length=512, num_mel_channels=64, input_sampling_rate=16000,
        output_sampling_rate=48000),
    "LTX2TextConnectors": dict(
        caption_channels=3840, text_proj_in_factor=49, video_connector_num_attention_heads=30,
        video_connector_attention_head_dim=128, video_connector_num_layers=2,
        video_connector_num_learnable_registers=128, video_gated_attn=False, audio_connector_num_attention_heads=30,
        audio_connector_attention_head_dim=128, audio_connector_num_layers=2,
        audio_connector_num_learnable_registers=128, audio_gated_attn=False, connector_rope_base_seq_len=4096,
        rope_theta=10000.0, rope_double_precision=True, causal_temporal_positioning=False, rope_type="interleaved",
        per_modality_projections=False, video_hidden_dim=4096, audio_hidden_dim=2048, proj_bias=False),
    "LTX2DurationHead": dict(video_cross_attention_dim=4096, audio_cross_attention_dim=2048, pooler_hidden_dim=256,
                             num_queries=1, num_pooler_heads=4, mlp_hidden_dim=256),
}  # fmt: skip


def _plain(v):
    """JSON-like value with tuples as lists (config.json holds lists, our forward maps give tuples)."""
    return [_plain(x) for x in v] if isinstance(v, (list, tuple)) else v


def _full_config(cls: str, config: dict) -> dict:
    defaults = _DIFFUSERS_DEFAULTS[cls]
    given = {k: v for k, v in config.items() if not k.startswith("_")}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"diffusers {cls} config keys {unknown} are not known (diffusers 0.42.1 layout)")
    return {k: _plain(v) for k, v in {**defaults, **given}.items()}


def _require(cls: str, c: dict, key: str, supported) -> None:
    if c[key] != supported:
        raise ValueError(f"diffusers {cls} {key}={c[key]!r} has no counterpart here (supported: {supported!r})")


def _per_block(cls: str, c: dict, key: str, n: int) -> list:
    """A diffusers `bool | tuple[bool, ...]` setting as n values."""
    v = c[key]
    v = [v] * n if not isinstance(v, list) else v
    if len(v) != n:
        raise ValueError(f"diffusers {cls} {key} has {len(v)} entries for {n} blocks")
    return v


def _lengths(cls: str, c: dict, want: dict[str, int]) -> None:
    bad = {k: len(c[k]) for k, n in want.items() if len(c[k]) != n}
    if bad:
        raise ValueError(f"diffusers {cls} block lists disagree in length: {bad}, expected {want}")


def video_vae_from_diffusers(config: dict, state_dict: dict[str, Tensor]):
    """(VideoVAEConfig, our state dict) of an AutoencoderKLLTX2Video config and state dict; the inverse of
    `video_vae_to_diffusers`. The config has `extra_statistics=False` (diffusers keeps no `channel` /
    `mean-of-stds`)."""
    from ltx.ltx2.vae import VAEBlock, VideoVAEConfig

    cls = "AutoencoderKLLTX2Video"
    c = _full_config(cls, config)
    for key, value in (("timestep_conditioning", False), ("patch_size_t", 1), ("resnet_norm_eps", 1e-06),
                       ("scaling_factor", 1.0), ("encoder_causal", True), ("decoder_causal", False)):
        _require(cls, c, key, value)
    widths, ups = c["block_out_channels"], c["upsample_type"]
    n, m = len(widths), len(ups)
    _lengths(cls, c, {"down_block_types": n, "downsample_type": n, "layers_per_block": n + 1,
                      "decoder_block_out_channels": m, "decoder_layers_per_block": m + 1, "upsample_factor": m})
    _require(cls, c, "down_block_types", ["LTX2VideoDownBlock3D"] * n)
    if not all(_per_block(cls, c, "spatio_temporal_scaling", n)) or \
            not all(_per_block(cls, c, "decoder_spatio_temporal_scaling", m)):
        raise ValueError(f"diffusers {cls} blocks without spatio-temporal scaling have no counterpart here")
    if any(_per_block(cls, c, "decoder_inject_noise", m + 1)):
        raise ValueError(f"diffusers {cls} decoder_inject_noise has no counterpart here (supported: all False)")
    encoder_types = {v: k for k, v in _ENCODER_TYPES.items()}
    decoder_types = {v: k for k, v in _DECODER_TYPES.items()}
    for key, known, values in (("downsample_type", encoder_types, c["downsample_type"]),
                               ("upsample_type", decoder_types, ups)):
        if any(v not in known for v in values):
            raise ValueError(f"diffusers {cls} {key}={values!r} is not supported (supported: {sorted(known)})")
    enc, width = [], c["latent_channels"]
    for i, (w, kind) in enumerate(zip(widths, c["downsample_type"])):
        if w % width:
            raise ValueError(f"diffusers {cls} block_out_channels {widths} with latent_channels {c['latent_channels']}:"
                             f" block {i} is not a whole multiple of the width before it (the official multiplier)")
        enc += [VAEBlock(name="res_x", num_layers=c["layers_per_block"][i]),
                VAEBlock(name=encoder_types[kind], multiplier=w // width)]
        width = w
    enc.append(VAEBlock(name="res_x", num_layers=c["layers_per_block"][n]))
    dec_in = c["decoder_block_out_channels"][::-1]  # latent side first
    factors, layers = c["upsample_factor"][::-1], c["decoder_layers_per_block"][::-1]
    residual = _per_block(cls, c, "upsample_residual", m)[::-1]
    follows = [dec_in[i] // factors[i] for i in range(m - 1)]
    if dec_in[0] % 8 or any(dec_in[i] % factors[i] for i in range(m)) or follows != dec_in[1:]:
        raise ValueError(f"diffusers {cls} decoder_block_out_channels {c['decoder_block_out_channels']} with "
                         f"upsample_factor {c['upsample_factor']}: the official layout needs 8 x decoder_base_channels "
                         "at the latent side, each next width the last divided by its factor")
    dec = [VAEBlock(name="res_x", num_layers=layers[0])]
    for i in range(m):
        dec += [VAEBlock(name=decoder_types[ups[i]], multiplier=factors[i], residual=residual[i]),
                VAEBlock(name="res_x", num_layers=layers[i + 1])]
    cfg = VideoVAEConfig(
        encoder_blocks=enc, decoder_blocks=dec[::-1], in_channels=c["in_channels"], out_channels=c["out_channels"],
        latent_channels=c["latent_channels"], patch_size=c["patch_size"], decoder_base_channels=dec_in[0] // 8,
        encoder_spatial_padding_mode=c["encoder_spatial_padding_mode"],
        decoder_spatial_padding_mode=c["decoder_spatial_padding_mode"], extra_statistics=False)
    ratios = {"spatial_compression_ratio": cfg.patch_size * math.prod(_stride(b.name)[1] for b in enc[1::2]),
              "temporal_compression_ratio": math.prod(_stride(b.name)[0] for b in enc[1::2])}
    for key, value in ratios.items():
        if c[key] is not None and c[key] != value:
            raise ValueError(f"diffusers {cls} {key}={c[key]} disagrees with its blocks' {value}")
    last_enc = len(enc) - 1
    stats = {v: k for k, v in _STATS.items()}

    def rename(key: str) -> str:
        if key in stats:
            return stats[key]
        m_ = re.match(r"(encoder|decoder)\.(mid_block|down_blocks\.(\d+)|up_blocks\.(\d+))\.(.*)", key)
        if m_ is None:
            return key
        half, block, rest = m_.group(1), m_.group(2), m_.group(5)
        if rest.startswith(("downsamplers.0.", "upsamplers.0.")):
            i, rest = 2 * int(m_.group(3) or m_.group(4)) + 1, rest.split(".", 2)[2]
        elif block == "mid_block":
            i = last_enc if half == "encoder" else 0
        else:
            i = 2 * int(m_.group(3)) if half == "encoder" else 2 * int(m_.group(4)) + 2
        rest = rest.replace("resnets.", "res_blocks.", 1)
        return f"{half}.{'down_blocks' if half == 'encoder' else 'up_blocks'}.{i}.{rest}"

    return cfg, {rename(k): v for k, v in state_dict.items()}


def audio_vae_from_diffusers(config: dict, state_dict: dict[str, Tensor]):
    """(AudioVAEConfig, our state dict) of an AutoencoderKLLTX2Audio config and state dict. diffusers' config has
    no STFT size: `n_fft` is the released 1024."""
    from ltx.ltx2.audio_vae import AudioVAEConfig

    cls = "AutoencoderKLLTX2Audio"
    c = _full_config(cls, config)
    if c["attn_resolutions"]:
        raise ValueError(f"diffusers {cls} attn_resolutions={c['attn_resolutions']!r} has no counterpart here "
                         "(supported: none)")
    for key, value in (("norm_type", "pixel"), ("causality_axis", "height"), ("mid_block_add_attention", False),
                       ("is_causal", True)):
        _require(cls, c, key, value)
    if c["mel_bins"] is None:
        raise ValueError(f"diffusers {cls} mel_bins=None has no counterpart here (an integer is needed)")
    cfg = AudioVAEConfig(ch=c["base_channels"], ch_mult=tuple(c["ch_mult"]), num_res_blocks=c["num_res_blocks"],
                         z_channels=c["latent_channels"], double_z=c["double_z"], in_channels=c["in_channels"],
                         out_ch=c["output_channels"], mel_bins=c["mel_bins"], resolution=c["resolution"],
                         dropout=c["dropout"], sample_rate=c["sample_rate"], hop_length=c["mel_hop_length"])
    stats = {v: k for k, v in _STATS.items()}
    return cfg, {stats.get(k, k): v for k, v in state_dict.items()}


def _generator_from_diffusers(cls: str, c: dict, prefix: str, output_sampling_rate: int, main: bool):
    from ltx.ltx2.vocoder import BIGVGAN, HIFIGAN, LEAKY_SLOPE, GeneratorConfig

    g = {k[len(prefix):]: v for k, v in c.items() if k.startswith(prefix)} if prefix else c
    act = (g["act_fn"], g["antialias"])
    if act == ("leaky_relu", False):
        resblock = HIFIGAN
        if g["leaky_relu_negative_slope"] != LEAKY_SLOPE:
            raise ValueError(f"diffusers {cls} {prefix}leaky_relu_negative_slope={g['leaky_relu_negative_slope']!r} "
                             f"has no counterpart here (supported: {LEAKY_SLOPE})")
    elif act == ("snakebeta", True):
        resblock = BIGVGAN
    else:
        raise ValueError(f"diffusers {cls} {prefix}act_fn / {prefix}antialias = {act} has no counterpart here "
                         "(supported: ('leaky_relu', False), ('snakebeta', True))")
    if (g["antialias_ratio"], g["antialias_kernel_size"]) != (2, 12):
        raise ValueError(f"diffusers {cls} {prefix}antialias_ratio / kernel_size = "
                         f"{(g['antialias_ratio'], g['antialias_kernel_size'])} has no counterpart here "
                         "(supported: (2, 12))")
    final = g["final_act_fn"]
    if final not in (("tanh", "clamp") if main else (None,)):
        raise ValueError(f"diffusers {cls} {prefix}final_act_fn={final!r} has no counterpart in the official layout "
                         f"(supported: {'tanh, clamp' if main else 'None'})")
    return GeneratorConfig(
        resblock=resblock, upsample_initial_channel=g["hidden_channels"], upsample_rates=g["upsample_factors"],
        upsample_kernel_sizes=g["upsample_kernel_sizes"], resblock_kernel_sizes=g["resnet_kernel_sizes"],
        resblock_dilation_sizes=g["resnet_dilations"], use_tanh_at_final=final == "tanh",
        apply_final_activation=main, use_bias_at_final=g["final_bias"], output_sampling_rate=output_sampling_rate)


def vocoder_from_diffusers(class_name: str, config: dict, state_dict: dict[str, Tensor]):
    """(VocoderConfig, our state dict) of a diffusers `LTX2Vocoder` (HiFi-GAN, 19B) or `LTX2VocoderWithBWE`
    (2.3 / 2.5) config and state dict. The BWE generator's unused `use_tanh_at_final` reads as the released
    False."""
    from ltx.ltx2.vocoder import MEL_BINS, STEREO, BWEConfig, VocoderConfig

    if class_name not in ("LTX2Vocoder", "LTX2VocoderWithBWE"):
        raise ValueError(f"diffusers vocoder class {class_name!r} is not supported (LTX2Vocoder, LTX2VocoderWithBWE)")
    c = _full_config(class_name, config)
    io = {"in_channels": STEREO * MEL_BINS, "out_channels": STEREO}
    if class_name == "LTX2VocoderWithBWE":
        io.update(bwe_in_channels=STEREO * MEL_BINS, bwe_out_channels=STEREO, num_mel_channels=MEL_BINS,
                  window_length=c["filter_length"])
    for key, value in io.items():
        _require(class_name, c, key, value)
    if class_name == "LTX2Vocoder":
        cfg = VocoderConfig(vocoder=_generator_from_diffusers(class_name, c, "", c["output_sampling_rate"], True))
    else:
        main = {k: v for k, v in c.items() if not k.startswith("bwe_")}
        bwe = BWEConfig(generator=_generator_from_diffusers(class_name, c, "bwe_", c["output_sampling_rate"], False),
                        input_sampling_rate=c["input_sampling_rate"], output_sampling_rate=c["output_sampling_rate"],
                        hop_length=c["hop_length"], n_fft=c["filter_length"], num_mels=c["num_mel_channels"])
        cfg = VocoderConfig(vocoder=_generator_from_diffusers(class_name, main, "", c["input_sampling_rate"], True),
                            bwe=bwe)
    parts = {v: k for k, v in _VOCODER_PARTS.items()}

    def rename(key: str) -> str:
        key = key.replace(".downsample.filter", ".downsample.lowpass.filter")
        return ".".join(parts.get(p, p) for p in key.split("."))

    return cfg, {rename(k): v for k, v in state_dict.items()}


def text_connectors_from_diffusers(config: dict, state_dict: dict[str, Tensor]):
    """(TextConnectorConfig, our state dict) of a diffusers `LTX2TextConnectors` config and state dict; the inverse
    of `text_connectors_to_diffusers`. `per_modality_projections=True` (2.3 / 2.5, `proj_bias=True`) reads as
    feature extractor "v2"; `per_modality_projections=False` (LTX-2.0, `proj_bias=False`) as "v1", whose shared
    `caption_channels`-wide projection feeds both connectors, so both must be `caption_channels` wide
    (`video_hidden_dim` / `audio_hidden_dim` are unused there and not read)."""
    from ltx.ltx2.text import TextConnectorConfig

    cls = "LTX2TextConnectors"
    c = _full_config(cls, config)
    v2 = bool(c["per_modality_projections"])
    for key, value in (("proj_bias", v2), ("rope_theta", 10000.0), ("rope_double_precision", True),
                       ("causal_temporal_positioning", False), ("rope_type", "split"),
                       ("audio_gated_attn", c["video_gated_attn"]),
                       ("audio_connector_num_learnable_registers", c["video_connector_num_learnable_registers"])):
        _require(cls, c, key, value)
    if c["video_connector_num_learnable_registers"] is None:
        raise ValueError(f"diffusers {cls} connectors without learnable registers have no counterpart here")
    if not v2:
        widths = {what: (c[f"{what}_connector_num_attention_heads"], c[f"{what}_connector_attention_head_dim"])
                  for what in ("video", "audio")}
        bad = {w: f"{h}*{d}" for w, (h, d) in widths.items() if h * d != c["caption_channels"]}
        if bad:
            raise ValueError(f"diffusers {cls} per_modality_projections=False (LTX-2.0) feeds its "
                             f"caption_channels={c['caption_channels']}-wide projection to both connectors, but "
                             f"{', '.join(f'{w} is {v}' for w, v in bad.items())} wide (heads * head dim must equal "
                             "caption_channels)")
    cfg = TextConnectorConfig(
        feature_extractor="v2" if v2 else "v1", text_dim=c["caption_channels"],
        num_hidden_states=c["text_proj_in_factor"],
        video_heads=c["video_connector_num_attention_heads"], video_head_dim=c["video_connector_attention_head_dim"],
        video_layers=c["video_connector_num_layers"], audio_heads=c["audio_connector_num_attention_heads"],
        audio_head_dim=c["audio_connector_attention_head_dim"], audio_layers=c["audio_connector_num_layers"],
        gated_attention=c["video_gated_attn"], num_registers=c["video_connector_num_learnable_registers"],
        rope_max_pos=c["connector_rope_base_seq_len"], ff_bias=True)
    if v2:
        _require(cls, c, "video_hidden_dim", cfg.video_dim)
        _require(cls, c, "audio_hidden_dim", cfg.audio_dim)
    top = _CONNECTOR_TOP if v2 else _CONNECTOR_TOP_V1
    out = {}
    for key, value in state_dict.items():
        src, dst = next(((d, s) for s, d in top if key.startswith(d)), ("", ""))
        key = dst + key[len(src):]
        for a, b in _CONNECTOR_INNER:
            key = key.replace(b, a)
        out[key] = value
    return cfg, out


_POOLER = "attention_pooler."


def duration_head_to_diffusers(cfg, state_dict: dict[str, Tensor]) -> tuple[dict, dict[str, Tensor]]:
    """(LTX2DurationHead kwargs, state dict) of our `DurationHead` (ltx.ltx2.duration): the pooler's packed
    (3D, D) q/k/v projection (torch MHA layout, as the official file) split into diffusers' to_q / to_k / to_v, its
    out_proj renamed to_out; the rest keeps its names."""
    config = dict(video_cross_attention_dim=cfg.video_dim, audio_cross_attention_dim=cfg.audio_dim,
                  pooler_hidden_dim=cfg.hidden, num_queries=cfg.queries, num_pooler_heads=cfg.heads,
                  mlp_hidden_dim=cfg.mlp_hidden)
    out = {}
    for key, t in state_dict.items():
        if key.startswith(_POOLER + "cross_attn.in_proj_"):
            kind = key.rsplit("_", 1)[1]  # weight | bias
            for name, part in zip(("to_q", "to_k", "to_v"), t.chunk(3), strict=True):
                out[f"{_POOLER}{name}.{kind}"] = part
        else:
            out[key.replace(_POOLER + "cross_attn.out_proj.", _POOLER + "to_out.")] = t
    return config, out


def duration_head_from_diffusers(config: dict, state_dict: dict[str, Tensor]):
    """(DurationHeadConfig, our state dict) of a diffusers LTX2DurationHead: the inverse of
    `duration_head_to_diffusers` (q, k, v concatenated back: a new tensor, bitwise)."""
    import torch

    from ltx.ltx2.duration import DurationHeadConfig

    c = _full_config("LTX2DurationHead", config)
    cfg = DurationHeadConfig(video_dim=c["video_cross_attention_dim"], audio_dim=c["audio_cross_attention_dim"],
                             hidden=c["pooler_hidden_dim"], queries=c["num_queries"], heads=c["num_pooler_heads"],
                             mlp_hidden=c["mlp_hidden_dim"])
    sd = dict(state_dict)
    for kind in ("weight", "bias"):
        parts = [sd.pop(f"{_POOLER}{name}.{kind}", None) for name in ("to_q", "to_k", "to_v")]
        if any(p is None for p in parts):
            raise ValueError(f"the duration head's pooler has no to_q / to_k / to_v {kind}")
        sd[f"{_POOLER}cross_attn.in_proj_{kind}"] = torch.cat(parts)
    return cfg, {k.replace(_POOLER + "to_out.", _POOLER + "cross_attn.out_proj."): v for k, v in sd.items()}


def read_diffusers_component(folder, name: str):
    """A diffusers `LTX2Pipeline` component folder (config.json + *.safetensors) -> our module, in eval mode:
    `name` is text (connectors/), vae, audio_vae, vocoder or duration_head. Built on `meta` from the inverse config
    and filled strictly (every renamed key, shapes and dtypes checked before loading); the video VAE is built
    without the two statistics diffusers does not keep (`extra_statistics=False`)."""
    import json
    from pathlib import Path

    import torch

    from ltx.core.checkpoint import CheckpointError, SafetensorsReader, load_strict
    from ltx.ltx2.audio_vae import AudioVAE
    from ltx.ltx2.checkpoint import place_nonpersistent
    from ltx.ltx2.duration import DurationHead
    from ltx.ltx2.text import EmbeddingsProcessor
    from ltx.ltx2.vae import VideoVAE
    from ltx.ltx2.vocoder import build_vocoder

    builders = {"text": (text_connectors_from_diffusers, EmbeddingsProcessor),
                "vae": (video_vae_from_diffusers, VideoVAE), "audio_vae": (audio_vae_from_diffusers, AudioVAE),
                "vocoder": (None, build_vocoder), "duration_head": (duration_head_from_diffusers, DurationHead)}
    if name not in builders:
        raise CheckpointError(f"diffusers component {name!r} is not read here (supported: {list(builders)})")
    src = Path(folder)
    if not (src / "config.json").is_file():
        raise CheckpointError(f"{src}: no config.json; a diffusers component folder holds config.json and "
                              "*.safetensors")
    config = json.loads((src / "config.json").read_text())
    cls = config.get("_class_name")
    want = DIFFUSERS_FOLDERS[name][1] or ("LTX2Vocoder", "LTX2VocoderWithBWE")
    if cls not in (want if isinstance(want, tuple) else (want,)):
        raise CheckpointError(f"{src}: config _class_name {cls!r} is not {want!r} (the {name} component)")
    files = sorted(src.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{src}: no .safetensors weights")
    sd = {}
    for f in files:
        reader = SafetensorsReader(f)
        sd.update({k: reader.get(k) for k in reader.keys()})
    inverse, build = builders[name]
    try:
        cfg, sd = vocoder_from_diffusers(cls, config, sd) if name == "vocoder" else inverse(config, sd)
    except ValueError as e:
        raise CheckpointError(f"{src}: {e}") from None
    with torch.device("meta"):
        module = build(cfg)
    load_strict(module, sd, what=str(src))
    place_nonpersistent(module, "cpu", str(src))
    return module.eval()
