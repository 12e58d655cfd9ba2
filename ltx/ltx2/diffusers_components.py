"""The diffusers 0.42.1 layout of the LTX-2 family's other components: the video VAE (`AutoencoderKLLTX2Video`),
the audio VAE (`AutoencoderKLLTX2Audio`), the vocoder (`LTX2Vocoder` / `LTX2VocoderWithBWE`) and the text
connectors (`LTX2TextConnectors`, 2.3 / 2.5 layout: per-modality feature projections). The transformer is
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
_CONNECTOR_INNER = [(".transformer_1d_blocks.", ".transformer_blocks."), (".attn1.q_norm.", ".attn1.norm_q."),
                    (".attn1.k_norm.", ".attn1.norm_k.")]


def text_connectors_to_diffusers(cfg, state_dict: dict[str, Tensor]) -> tuple[dict, dict[str, Tensor]]:
    """(LTX2TextConnectors kwargs, state dict) of our `EmbeddingsProcessor` (ltx.ltx2.text) with the V2 feature
    extractor (LTX-2.3 / 2.5). diffusers' connector MLPs always have biases: a `connector_ff_bias=false` model has
    no diffusers layout (refused)."""
    if cfg.feature_extractor != "v2":
        raise ValueError("text_connectors_to_diffusers maps the V2 (LTX-2.3 / 2.5) feature extractor only")
    if not cfg.ff_bias:
        raise ValueError("diffusers' LTX2TextConnectors has connector MLP biases; this model has none "
                         "(connector_ff_bias=false)")
    config = dict(
        caption_channels=cfg.text_dim, text_proj_in_factor=cfg.num_hidden_states,
        video_connector_num_attention_heads=cfg.video_heads, video_connector_attention_head_dim=cfg.video_head_dim,
        video_connector_num_layers=cfg.video_layers, video_connector_num_learnable_registers=cfg.num_registers,
        video_gated_attn=cfg.gated_attention, audio_connector_num_attention_heads=cfg.audio_heads,
        audio_connector_attention_head_dim=cfg.audio_head_dim, audio_connector_num_layers=cfg.audio_layers,
        audio_connector_num_learnable_registers=cfg.num_registers, audio_gated_attn=cfg.gated_attention,
        connector_rope_base_seq_len=cfg.rope_max_pos, rope_theta=10_000.0, rope_double_precision=True,
        rope_type="split", per_modality_projections=True, video_hidden_dim=cfg.video_dim,
        audio_hidden_dim=cfg.audio_dim, proj_bias=True)
    out = {}
    for key, value in state_dict.items():
        src, dst = next((s, d) for s, d in _CONNECTOR_TOP if key.startswith(s))
        key = dst + key[len(src):]
        for a, b in _CONNECTOR_INNER:
            key = key.replace(a, b)
        out[key] = value
    return config, out
