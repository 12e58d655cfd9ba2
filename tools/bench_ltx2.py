#!/usr/bin/env python
"""Benchmark our LTX-2 modules (ltx/ltx2/) against the reference ltx-core 1.0.0 on the same inputs and weights.

Rows (ratios are ours / reference: < 1 = ours is faster or needs less memory):

- transformer: `AVTransformer` vs ltx-core `LTXModel` at a tiny width (video 4 heads x 16, audio 4 x 8,
  `--layers` blocks, 19B layout or `--variant 2.3`) but realistic token counts: 6,144 video tokens (a 121-frame
  512 x 768 stage-1 latent, 16 x 16 x 24), 126 audio tokens (5.04 s), 1,024 text tokens; and a smaller count
  (1,536 video tokens: 121 x 256 x 384). Per size:
  * one pass, batch 1 (the transformer call of an unguided step);
  * a guided step, twice: ours making one call per pass (ltx.ltx2.pipelines's default), and ours running
    cond / uncond / STG / isolated-modality as one batch of 4 (`Perturbations.cat`, `batch_passes=True`),
    against the 4 separate batch-1 calls the reference pipeline makes
    (ltx_pipelines/utils/helpers.py `multi_modal_guider_denoising_func`; the STG pass skips the video and audio
    self-attention of the last block, the isolated pass both A<->V attentions of every block). Velocities are
    timed (the reference's X0Model wrapper adds one elementwise op per pass).
- vae: video VAE decode, `VideoVAE.decode` vs ltx-core `VideoDecoder`, the 19B and the 2.3 block lists at the
  released depth and 128 latent channels, decoder base channels 16 (released: 128), latent (1, 128, 3, 8, 12)
  -> 17 x 256 x 384 pixels.
- audio: audio VAE decode at the released size (`AudioVAE.decode` vs ltx-core `AudioDecoder`, ~32M params,
  51 latent frames = 2.04 s -> 201 mel frames), and both released vocoders at full size on 101 mel frames
  (~1 s): 19B HiFi-GAN (`Vocoder`, 24 kHz) and 2.3 BigVGAN-v2 + bandwidth extension (`VocoderWithBWE`, 48 kHz).

Method. Each row runs in its own subprocess that builds both models (the reference from ltx-core's
configurators, random weights - not the default init, so no zero-initialised path is cheaper - loaded strictly
into ours) and the inputs, then: `--warmup` calls of each (the first one also checks that both give the same
output: the max |diff| column), `--repeats` timed calls alternating ours / reference (A B A B ...) so that a slow
spell of the shared machine hits both alike, reported as medians. Peak memory is then measured in separate
calls (alternating as well, median of up to 3): glibc's free lists are returned to the kernel
(`malloc_trim(0)`), the process's peak RSS is reset to its current RSS (Linux `/proc/self/clear_refs` 5), the
call runs, and the row reports VmHWM - VmRSS-before: the extra resident memory the call needed for its
activations, workspace and output, above the weights and inputs already resident (the same in both; counting
them would only dilute the ratio). The timed calls do no trimming, so allocator reuse is as in real use. On CUDA
(`--gpu`) times use torch.cuda.synchronize() and memory is max_memory_allocated() - memory_allocated() before.

CPU runs are fp32: bf16 is ~6x slower on CPUs without bf16 units (as these), which would measure the fallback
kernels, not the code. `--threads` sets torch's intra-op threads in each subprocess (default 2).

`--gpu`: the 19B transformer at full width (32 heads x 128 video, 32 x 64 audio, caption 3,840) with `--layers`
blocks (default 4), bf16, 6,144 + 126 tokens, 1,024 text tokens, one pass and the guided step. Extra columns:
ms per block (call time / blocks: includes the per-call embedding and head, ~5% at 4 blocks) and MFU against
the H200's dense bf16 peak of 989 TFLOP/s, with matmul FLOPs counted from the architecture (`av_flops`;
agrees with torch.utils.flop_counter on our model to 0.1%).

    python tools/bench_ltx2.py                          # all rows, fp32 CPU, ~5 min with --threads 1
    python tools/bench_ltx2.py --quick                  # smallest sizes, 1 repeat: a smoke run (~30 s)
    python tools/bench_ltx2.py --only transformer --threads 1 --repeats 3
    python tools/bench_ltx2.py --gpu --layers 4         # needs CUDA
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
H200_BF16_PEAK = 989.4e12  # dense bf16 FLOP/s (NVIDIA H200 SXM datasheet)
MODULES = ("transformer", "vae", "audio")
VARIANTS = ("19b", "2.3", "2.5")

# Token counts of the transformer rows: (name, latent grid F x H x W, audio tokens, text tokens).
SIZES = {
    "full": [("121x512x768", (16, 16, 24), 126, 1024), ("121x256x384", (16, 8, 12), 126, 1024)],
    "quick": [("9x128x192", (2, 4, 6), 26, 128)],
}


def _imports() -> None:
    # ltx-core needs torchaudio only for an import; the tests' stub stands in when it is absent, and
    # ltx_core.loader must come first (ltx_core.quantization alone has a circular import)
    import importlib.util

    sys.path.insert(0, str(REPO))
    if importlib.util.find_spec("torchaudio") is None:
        sys.path.insert(0, str(REPO / "tests/ltx2/stubs"))
    import ltx_core.loader  # noqa: F401


# ------------------------------------------------------------------------------------------------ FLOPs


def av_flops(cfg, video_tokens: int, audio_tokens: int, text_tokens: int, *, stg_blocks: int = 0,
             isolated: bool = False) -> float:
    """Matmul FLOPs (2 x multiply-adds) of one batch-1 `AVTransformer` forward, counted from the architecture.

    Per block, with T, Ta video / audio tokens, S text tokens, D, Da the stream widths:
      self-attention  4 * 2 T D^2 (q, k, v, out)  + 2 * 2 T^2 D (scores, weighted sum)     [and the audio twin]
                      an STG-perturbed one: 2 * 2 T D^2 (v, out only), no scores
      text attention  2 * 2 T D^2 (q, out) + 2 * 2 S D^2 (k, v) + 2 * 2 T S D               [and the audio twin]
      MLP             2 * 2 T D (4 D) = 16 T D^2                                            [and the audio twin]
      audio->video    2 T D Da (q) + 2 * 2 Ta Da^2 (k, v) + 2 * 2 T Ta Da + 2 T Da D (out)
      video->audio    2 Ta Da^2 (q) + 2 * 2 T D Da (k, v) + 2 * 2 Ta T Da + 2 Ta Da^2 (out)
                      (both absent when the modalities are isolated)
    Per call and stream: patchify 2 T C D, per-token AdaLN 2 T (256 D + D^2 + rows D^2) (the timesteps are
    per token, so this runs on every token), caption projection 2 S (C_text D + D^2) (19B only), output
    projection 2 T D C. The 2.3 gate logits (2 T D H per attention) and the per-sample AdaLNs are left out
    (< 0.1%). `stg_blocks`: how many blocks have both self-attentions perturbed.
    """
    T, Ta, S = video_tokens, audio_tokens, text_tokens
    D, Da, rows = cfg.inner_dim, cfg.audio_inner_dim, cfg.adaln_rows

    def stream(n: int, d: int, perturbed: bool) -> float:
        self_attn = 2 * 2 * n * d * d if perturbed else 4 * 2 * n * d * d + 2 * 2 * n * n * d
        text = 2 * 2 * n * d * d + 2 * 2 * S * d * d + 2 * 2 * n * S * d
        return self_attn + text + 16 * n * d * d

    cross = 0.0 if isolated else (2 * T * D * Da + 4 * Ta * Da * Da + 4 * T * Ta * Da + 2 * T * Da * D
                                  + 2 * Ta * Da * Da + 4 * T * D * Da + 4 * Ta * T * Da + 2 * Ta * Da * Da)
    block = stream(T, D, False) + stream(Ta, Da, False) + cross
    perturbed_block = stream(T, D, True) + stream(Ta, Da, True) + cross
    per_call = 0.0
    for n, d, c_in, c_out in ((T, D, cfg.in_channels, cfg.out_channels),
                              (Ta, Da, cfg.audio_in_channels, cfg.audio_out_channels)):
        per_call += 2 * n * c_in * d + 2 * n * (256 * d + d * d + rows * d * d) + 2 * n * d * c_out
        if not cfg.caption_proj_before_connector:
            per_call += 2 * S * (cfg.caption_channels * d + d * d)
    return (cfg.num_layers - stg_blocks) * block + stg_blocks * perturbed_block + per_call


def guided_flops(cfg, T: int, Ta: int, S: int) -> float:
    """cond + uncond + STG (last block) + isolated, as the guided rows run them."""
    return 2 * av_flops(cfg, T, Ta, S) + av_flops(cfg, T, Ta, S, stg_blocks=1) + av_flops(cfg, T, Ta, S, isolated=True)


# ------------------------------------------------------------------------------------------------ weights


def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Random weights in a sane range: matrices / kernels N(0, 1 / fan_in), norm weights 1 + N(0, 0.1^2), biases
    N(0, 0.02^2), AdaLN tables and snake parameters N(0, 0.1^2); latent statistics random and positive std."""
    gens: dict[torch.device, torch.Generator] = {}

    def gen(device: torch.device) -> torch.Generator:  # one per device: noise is drawn where the weight lives
        if device not in gens:
            gens[device] = torch.Generator(device).manual_seed(seed)
        return gens[device]

    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen(p.device), device=p.device).to(p.dtype)
            if "scale_shift_table" in name or p.ndim < 2 and not name.endswith(("weight", "bias")):
                p.copy_(0.1 * noise)
            elif p.ndim >= 2:
                p.copy_(noise / p[0].numel() ** 0.5)
            elif name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(0.02 * noise)
        for name, b in model.named_buffers():
            if name.endswith("std-of-means"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen(b.device), device=b.device))
            elif name.endswith("mean-of-means"):
                b.copy_(0.2 * torch.randn(b.shape, generator=gen(b.device), device=b.device))


# ------------------------------------------------------------------------------------------------ cases
# Each builder returns (ours, ref, compare): closures running one call, and a function giving max |diff| of
# their outputs. Inputs are built once, outside the closures.

Case = tuple[Callable[[], object], Callable[[], object], Callable[[object, object], float]]


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        raise RuntimeError(f"ours and the reference disagree on the output shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    return (a.float() - b.float()).abs().max().item()


def transformer_config(spec: dict):
    from ltx.ltx2.transformer import AVTransformerConfig

    v23, v25 = spec["variant"] in ("2.3", "2.5"), spec["variant"] == "2.5"
    flags = dict(apply_gated_attention=v23, cross_attention_adaln=v23, caption_proj_before_connector=v23)
    if v25:
        flags.update(use_prompt_adaln_single=False, ff_bias=False, use_keyframes_abs_pos_embedding=True)
    if spec["full_width"]:
        base = {"19b": AVTransformerConfig.ltx2_19b, "2.3": AVTransformerConfig.ltx2_3_22b,
                "2.5": AVTransformerConfig.ltx2_5_22b}[spec["variant"]]()
        return replace(base, num_layers=spec["layers"])
    return AVTransformerConfig(num_layers=spec["layers"], num_attention_heads=4, attention_head_dim=16,
                               audio_num_attention_heads=4, audio_attention_head_dim=8, cross_attention_dim=64,
                               audio_cross_attention_dim=32, caption_channels=3840, **flags)


def build_transformer(spec: dict, device: torch.device, dtype: torch.dtype) -> Case:
    from ltx_core.guidance.perturbations import (
        BatchedPerturbationConfig,
        Perturbation,
        PerturbationConfig,
        PerturbationType,
    )
    from ltx_core.model.transformer.modality import Modality
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator

    from ltx.ltx2.transformer import AVTransformer, Perturbations, StreamInput

    cfg = transformer_config(spec)
    if spec["variant"] == "2.5":  # ltx-core 1.0.0 has no 2.5: diffusers 0.42.1 is the reference
        return _build_transformer_25(spec, cfg, device, dtype)
    with torch.device("meta"):
        ref = LTXModelConfigurator.from_config({"transformer": cfg.to_metadata()})
        ours = AVTransformer(cfg)
    ref = ref.to_empty(device=device)
    randomize_(ref, seed=1)
    ref = ref.to(dtype).eval()
    ours = ours.to_empty(device=device).to(dtype)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()

    d = _transformer_inputs(cfg, spec, device, dtype)
    x, ax, ctx, actx, neg, aneg = d["x"], d["ax"], d["ctx"], d["actx"], d["neg"], d["aneg"]
    vpos, apos, sigma, vts, ats = d["vpos"], d["apos"], d["sigma"], d["vts"], d["ats"]

    def modality(lat, ts, pos, c) -> Modality:
        return Modality(latent=lat, sigma=sigma, timesteps=ts, positions=pos, context=c)

    if not spec["guided"]:
        rv, ra = modality(x, vts, vpos, ctx), modality(ax, ats, apos, actx)
        ov = StreamInput(x=x, timesteps=vts, sigma=sigma, positions=vpos, context=ctx)
        oa = StreamInput(x=ax, timesteps=ats, sigma=sigma, positions=apos, context=actx)

        def compare(o, r) -> float:
            return max(_max_diff(o[0], r[0]), _max_diff(o[1], r[1]))

        return (lambda: ours(ov, oa)), (lambda: ref(rv, ra, None)), compare

    # guided step. Reference: 4 calls as multi_modal_guider_denoising_func makes them.
    L = cfg.num_layers
    stg = BatchedPerturbationConfig([PerturbationConfig([
        Perturbation(type=PerturbationType.SKIP_VIDEO_SELF_ATTN, blocks=[L - 1]),
        Perturbation(type=PerturbationType.SKIP_AUDIO_SELF_ATTN, blocks=[L - 1])])])
    iso = BatchedPerturbationConfig([PerturbationConfig([
        Perturbation(type=PerturbationType.SKIP_A2V_CROSS_ATTN, blocks=None),
        Perturbation(type=PerturbationType.SKIP_V2A_CROSS_ATTN, blocks=None)])])
    pos_v, pos_a = modality(x, vts, vpos, ctx), modality(ax, ats, apos, actx)
    neg_v, neg_a = modality(x, vts, vpos, neg), modality(ax, ats, apos, aneg)

    def ref_step():
        return [ref(pos_v, pos_a, None), ref(neg_v, neg_a, None), ref(pos_v, pos_a, stg), ref(pos_v, pos_a, iso)]

    # ours: one batch of 4 rows; the text batch is built once per generation, the latent batch per step
    perturb = Perturbations.cat([Perturbations.none(L, 2), Perturbations.stg(L, 1, blocks=[L - 1]),
                                 Perturbations.isolate_modalities(L, 1)])
    ctx4, actx4 = torch.cat([ctx, neg, ctx, ctx]), torch.cat([actx, aneg, actx, actx])
    sigma4, vpos4, apos4 = sigma.expand(4), vpos.expand(4, -1, -1, -1), apos.expand(4, -1, -1, -1)

    def our_step():
        v = StreamInput(x=x.expand(4, -1, -1), timesteps=vts.expand(4, -1), sigma=sigma4, positions=vpos4,
                        context=ctx4)
        a = StreamInput(x=ax.expand(4, -1, -1), timesteps=ats.expand(4, -1), sigma=sigma4, positions=apos4,
                        context=actx4)
        return ours(v, a, perturb)

    if spec["guided"] == "separate":  # ltx.ltx2.pipelines's default: one call per pass, as the reference
        passes = [(ctx, actx, None), (neg, aneg, None), (ctx, actx, Perturbations.stg(L, 1, blocks=[L - 1])),
                  (ctx, actx, Perturbations.isolate_modalities(L, 1))]

        def our_step():  # noqa: F811 - the batched step above is the other mode
            outs = [ours(StreamInput(x=x, timesteps=vts, sigma=sigma, positions=vpos, context=c),
                         StreamInput(x=ax, timesteps=ats, sigma=sigma, positions=apos, context=ac), p)
                    for c, ac, p in passes]
            return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])

    def compare(o, r) -> float:
        return max(max(_max_diff(o[0][k: k + 1], rv), _max_diff(o[1][k: k + 1], ra)) for k, (rv, ra) in enumerate(r))

    return our_step, ref_step, compare


def _transformer_inputs(cfg, spec: dict, device: torch.device, dtype: torch.dtype) -> dict:
    """Video / audio latents, [start, end) positions (as ltx-core's VideoLatentTools: frames [8f - 7, 8f + 1) clamped,
    / 24 fps; x32 px; video bounds in the activation dtype, as the pipelines), a prompt's and a negative prompt's
    text states (the caption width for 19B, the stream widths after 2.3's connector projection), every token at
    sigma 0.7 (text-to-video)."""
    (F, H, W), Ta, S = spec["grid"], spec["audio_tokens"], spec["text_tokens"]
    T = F * H * W
    g = torch.Generator().manual_seed(0)
    f, h, w = torch.meshgrid(torch.arange(F), torch.arange(H), torch.arange(W), indexing="ij")
    t0, t1 = (f * 8 - 7).clamp(min=0) / 24.0, (f * 8 + 1) / 24.0
    vpos = torch.stack([torch.stack([t0, t1], -1), torch.stack([h * 32, h * 32 + 32], -1),
                        torch.stack([w * 32, w * 32 + 32], -1)]).float().reshape(1, 3, T, 2)
    i = torch.arange(Ta)
    apos = (torch.stack([(4 * i - 3).clamp(min=0), 4 * i + 1], -1) * 0.01).float().view(1, 1, Ta, 2)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(device, dtype)

    sigma = torch.full((1,), 0.7, device=device)
    ctx_v = cfg.inner_dim if cfg.caption_proj_before_connector else cfg.caption_channels
    ctx_a = cfg.audio_inner_dim if cfg.caption_proj_before_connector else cfg.caption_channels
    x, ax = rnd(1, T, cfg.in_channels), rnd(1, Ta, cfg.audio_in_channels)
    return dict(x=x, ax=ax, ctx=rnd(1, S, ctx_v), actx=rnd(1, S, ctx_a), neg=rnd(1, S, ctx_v), aneg=rnd(1, S, ctx_a),
                vpos=vpos.to(device, dtype), apos=apos.to(device), sigma=sigma, vts=sigma.expand(1, T).clone(),
                ats=sigma.expand(1, Ta).clone())


def _build_transformer_25(spec: dict, cfg, device: torch.device, dtype: torch.dtype) -> Case:
    """LTX-2.5: ours vs diffusers' LTX2VideoTransformer3DModel (our random weights through the key map), one pass
    or the guided step of 4 calls (cond, uncond, STG on the last block, isolated modalities)."""
    from diffusers import LTX2VideoTransformer3DModel

    from ltx.ltx2.diffusers_layout import diffusers_transformer_config, transformer_to_diffusers
    from ltx.ltx2.transformer import AVTransformer, Perturbations, StreamInput

    with torch.device("meta"):
        ours = AVTransformer(cfg)
        ref = LTX2VideoTransformer3DModel(**diffusers_transformer_config(cfg))
    ours = ours.to_empty(device=device)
    randomize_(ours, seed=1)
    ours = ours.to(dtype).eval()
    ref = ref.to_empty(device=device).to(dtype)
    ref.load_state_dict(transformer_to_diffusers(ours.state_dict()), strict=True)
    ref.eval()
    d, L = _transformer_inputs(cfg, spec, device, dtype), cfg.num_layers

    def ref_call(ctx, actx, **kw):
        return ref(hidden_states=d["x"], audio_hidden_states=d["ax"], encoder_hidden_states=ctx,
                   audio_encoder_hidden_states=actx, timestep=d["vts"] * 1000, audio_timestep=d["ats"] * 1000,
                   sigma=d["sigma"] * 1000, audio_sigma=d["sigma"] * 1000, video_coords=d["vpos"],
                   audio_coords=d["apos"], use_cross_timestep=True, return_dict=False, **kw)

    def our_call(ctx, actx, perturb=None):
        return ours(StreamInput(x=d["x"], timesteps=d["vts"], sigma=d["sigma"], positions=d["vpos"], context=ctx),
                    StreamInput(x=d["ax"], timesteps=d["ats"], sigma=d["sigma"], positions=d["apos"], context=actx),
                    perturb)

    def compare(o, r) -> float:
        if isinstance(o, list):
            return max(max(_max_diff(a[0], b[0]), _max_diff(a[1], b[1])) for a, b in zip(o, r))
        return max(_max_diff(o[0], r[0]), _max_diff(o[1], r[1]))

    if not spec["guided"]:
        return (lambda: our_call(d["ctx"], d["actx"])), (lambda: ref_call(d["ctx"], d["actx"])), compare
    if spec["guided"] == "batched":
        raise SystemExit("--variant 2.5 runs the one-pass and the 4-call guided rows (diffusers has no batched "
                         "perturbation rows to compare the batched step with)")

    def our_step():
        return [our_call(d["ctx"], d["actx"]), our_call(d["neg"], d["aneg"]),
                our_call(d["ctx"], d["actx"], Perturbations.stg(L, 1, blocks=[L - 1])),
                our_call(d["ctx"], d["actx"], Perturbations.isolate_modalities(L, 1))]

    def ref_step():
        return [ref_call(d["ctx"], d["actx"]), ref_call(d["neg"], d["aneg"]),
                ref_call(d["ctx"], d["actx"], spatio_temporal_guidance_blocks=[L - 1]),
                ref_call(d["ctx"], d["actx"], isolate_modalities=True)]

    return our_step, ref_step, compare


def build_diffusion_decoder(spec: dict, device: torch.device, dtype: torch.dtype) -> Case:
    """LTX-2.5's diffusion decoder, `decode` vs diffusers' LTX2VideoDiffusionDecoderModel.decode (same weights, same
    noise, the default 2 x0 steps) at a small layout: diffusers' CPU attention is flex attention run uncompiled,
    which materialises every query-key score (O(tokens^2) memory: the released layout's 17 x 224 x 224 output
    was killed at 24 GiB), while ours attends within each query tile's neighbourhood (bounded memory)."""
    from diffusers.models.autoencoders.ltx2_diffusion_decoder import LTX2VideoDiffusionDecoderModel

    from ltx.ltx2.diffusion_decoder import DiffusionDecoder, DiffusionDecoderConfig, decode, to_diffusers_keys

    cfg = DiffusionDecoderConfig(
        in_channels=128, patch_size=2, head_dim=16, stage_channels=(64, 32, 32, 32, 32), stage_depths=(2, 2, 2, 2, 2),
        stage_kernels=((3, 1, 3), (3, 3, 3), (3, 3, 3), (3, 3, 5), (3, 3, 3)),
        upsamples=(((1, 2, 2), 2), ((2, 1, 1), 1), ((2, 1, 1), 1), ((2, 1, 1), 1)), stage5_kernel=(3, 3, 5),
        t_emb_dim=32, default_num_inference_steps=2, model_output_type="x0")
    ours = DiffusionDecoder(cfg)
    randomize_(ours, seed=1)
    ours = ours.to(device, dtype).eval()
    ref = LTX2VideoDiffusionDecoderModel(**cfg.to_diffusers_config()).to(device, dtype).eval()
    ref.load_state_dict(to_diffusers_keys(ours.state_dict()), strict=True)
    z = torch.randn(1, cfg.in_channels, *spec["grid"], generator=torch.Generator().manual_seed(0)).to(device, dtype)

    def compare(o, r) -> float:
        return _max_diff(o, r)

    return (lambda: decode(ours, z, normalized=False, seed=3)), \
        (lambda: ref.decode(z, generator=torch.Generator().manual_seed(3)).sample), compare


def build_video_vae(spec: dict, device: torch.device, dtype: torch.dtype) -> Case:
    from ltx_core.model.video_vae import VideoDecoderConfigurator

    from ltx.core.nn import LatentStatistics
    from ltx.ltx2.vae import USED_STATISTICS, VIDEO_VAE_PRESETS, Decoder, VideoVAE

    preset = VIDEO_VAE_PRESETS["ltx-2-19b" if spec["variant"] == "19b" else "ltx-2.3-22b"]
    cfg = replace(preset, decoder_base_channels=spec["base_channels"], extra_statistics=False)
    ref = VideoDecoderConfigurator.from_config({"vae": cfg.to_metadata()})
    randomize_(ref, seed=2)
    ref = ref.to(device, dtype).eval()
    with torch.device("meta"):  # the encoder (up to 2,048 channels at 128 latent channels) is not needed
        ours = VideoVAE(cfg)
    del ours.encoder
    ours.decoder = Decoder(cfg)
    ours.per_channel_statistics = LatentStatistics(cfg.latent_channels, tuple(sorted(USED_STATISTICS)))
    sd = ref.state_dict()
    ours.decoder.load_state_dict({k: v for k, v in sd.items() if not k.startswith("per_channel")}, strict=True)
    ours.per_channel_statistics.load_state_dict(
        {k.removeprefix("per_channel_statistics."): v for k, v in sd.items() if k.startswith("per_channel")},
        strict=True)
    ours = ours.to(device, dtype).eval()
    z = torch.randn(1, cfg.latent_channels, *spec["grid"], generator=torch.Generator().manual_seed(0)).to(device, dtype)
    return (lambda: ours.decode(z)), (lambda: ref(z)), _max_diff


def build_audio_vae(spec: dict, device: torch.device, dtype: torch.dtype) -> Case:
    from ltx_core.model.audio_vae.model_configurator import AudioDecoderConfigurator

    from ltx.ltx2.audio_vae import AudioVAE, AudioVAEConfig

    cfg = AudioVAEConfig()  # the released config
    ref = AudioDecoderConfigurator.from_config({"audio_vae": cfg.to_metadata()})
    randomize_(ref, seed=3)
    ref = ref.to(device, dtype).eval()
    ours = AudioVAE(cfg)
    sd = ref.state_dict()
    ours.decoder.load_state_dict({k: v for k, v in sd.items() if not k.startswith("per_channel")}, strict=True)
    ours.per_channel_statistics.load_state_dict(
        {k.removeprefix("per_channel_statistics."): v for k, v in sd.items() if k.startswith("per_channel")},
        strict=True)
    ours = ours.to(device, dtype).eval()
    z = torch.randn(1, cfg.z_channels, spec["frames"], cfg.latent_mel_bins,
                    generator=torch.Generator().manual_seed(0)).to(device, dtype)
    return (lambda: ours.decode(z)), (lambda: ref(z)), _max_diff


def build_vocoder(spec: dict, device: torch.device, dtype: torch.dtype) -> Case:
    from ltx_core.model.audio_vae.model_configurator import VocoderConfigurator

    from ltx.ltx2.vocoder import VOCODER_METADATA, VocoderConfig
    from ltx.ltx2.vocoder import build_vocoder as build_ours

    meta = copy.deepcopy(VOCODER_METADATA[spec["variant"]])
    if spec["channels"]:  # narrowed (quick): the released rates and kernels at fewer channels
        if "bwe" in meta:
            meta["vocoder"]["upsample_initial_channel"] = spec["channels"]
            meta["bwe"]["upsample_initial_channel"] = spec["channels"] // 2
        else:
            meta["upsample_initial_channel"] = spec["channels"]
    ref = VocoderConfigurator.from_config({"vocoder": meta})
    randomize_(ref, seed=4)
    ref = ref.to(device, dtype).eval()
    ours = build_ours(VocoderConfig.from_metadata(meta))
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours = ours.to(device, dtype).eval()
    mel = (torch.randn(1, 2, spec["frames"], 64, generator=torch.Generator().manual_seed(0)) - 3.0).to(device, dtype)
    return (lambda: ours(mel)), (lambda: ref(mel)), _max_diff


BUILDERS = {"transformer": build_transformer, "video_vae": build_video_vae, "audio_vae": build_audio_vae,
            "vocoder": build_vocoder, "diffusion_decoder": build_diffusion_decoder}


# ------------------------------------------------------------------------------------------------ measuring


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> int:
    """Give free heap memory back to the kernel, reset VmHWM to VmRSS; returns VmRSS."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_bytes("VmRSS")


def measure(ours, ref, compare, *, repeats: int, warmup: int, device: torch.device) -> dict:
    fns = {"ours": ours, "ref": ref}
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    outs = {k: fn() for k, fn in fns.items()}  # first warm-up call of each, and the parity check
    diff = compare(outs["ours"], outs["ref"])
    del outs
    for _ in range(warmup - 1):
        for fn in fns.values():
            fn()
    sync()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():  # A B A B ...
            sync()
            t0 = time.perf_counter()
            out = fn()
            sync()
            times[k].append(time.perf_counter() - t0)
            del out
    peaks: dict[str, list[int]] = {k: [] for k in fns}
    for _ in range(min(repeats, 3)):
        for k, fn in fns.items():
            gc.collect()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            else:
                base = _reset_peak_rss()
            out = fn()
            sync()
            peak = torch.cuda.max_memory_allocated() if cuda else _status_bytes("VmHWM")
            peaks[k].append(peak - base)
            del out
    return {"diff": diff, **{f"{k}_s": statistics.median(v) for k, v in times.items()},
            **{f"{k}_bytes": statistics.median(v) for k, v in peaks.items()}}


def worker(spec: dict) -> None:
    _imports()
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    device, dtype = torch.device(spec["device"]), getattr(torch, spec["dtype"])
    with torch.inference_mode():
        ours, ref, compare = BUILDERS[spec["kind"]](spec, device, dtype)
        result = measure(ours, ref, compare, repeats=spec["repeats"], warmup=spec["warmup"], device=device)
    print(json.dumps(result))


# ------------------------------------------------------------------------------------------------ driver


def cases(args) -> list[dict]:
    """The rows to run: each a spec for one worker subprocess."""
    common = dict(threads=args.threads, repeats=args.repeats, warmup=args.warmup, device="cpu", dtype="float32")
    out: list[dict] = []
    if args.gpu:
        common.update(device="cuda", dtype="bfloat16")
        for guided in (False, "separate") if args.variant == "2.5" else (False, "separate", "batched"):
            out.append(dict(common, kind="transformer", module="transformer", variant=args.variant,
                            layers=args.layers, full_width=True, grid=(16, 16, 24), audio_tokens=126,
                            text_tokens=1024, guided=guided, size="121x512x768"))
        return out
    quick = args.quick
    if "transformer" in args.only:
        for size, grid, audio, text in SIZES["quick" if quick else "full"]:
            for guided in (False, "separate") if args.variant == "2.5" else (False, "separate", "batched"):
                out.append(dict(common, kind="transformer", module="transformer", variant=args.variant,
                                layers=args.layers, full_width=False, grid=grid, audio_tokens=audio,
                                text_tokens=text, guided=guided, size=size))
    if "vae" in args.only:
        for variant in ("19b", "2.3"):
            out.append(dict(common, kind="video_vae", module="vae", variant=variant,
                            base_channels=8 if quick else 16, grid=(2, 2, 3) if quick else (3, 8, 12)))
        if args.variant == "2.5":
            out.append(dict(common, kind="diffusion_decoder", module="vae", variant="2.5",
                            grid=(3, 2, 3) if quick else (3, 4, 6)))
    if "audio" in args.only:
        out.append(dict(common, kind="audio_vae", module="audio", frames=6 if quick else 51))
        for variant in ("19B", "2.3"):
            out.append(dict(common, kind="vocoder", module="audio", variant=variant, channels=64 if quick else 0,
                            frames=20 if quick else 101))
    return out


def describe(spec: dict) -> tuple[str, str]:
    """(module, case) cells of a row."""
    kind = spec["kind"]
    if kind == "transformer":
        T = spec["grid"][0] * spec["grid"][1] * spec["grid"][2]
        width = "19B width" if spec["full_width"] else "video 4x16, audio 4x8"
        what = {False: "1 pass, batch 1", "separate": "guided step: 4 calls x batch 1 each (our default)",
                "batched": "guided step: ours 1 call x batch 4 (batch_passes), ref 4 calls"}[spec["guided"]]
        return (f"transformer {spec['variant']} ({width}, {spec['layers']} blocks)",
                f"{what}; {T}+{spec['audio_tokens']} tokens ({spec['size']}), {spec['text_tokens']} text")
    if kind == "diffusion_decoder":
        F, H, W = spec["grid"]
        return ("diffusion decoder 2.5 (small layout: widths 64-32, 2 blocks a stage, x4 space), 2 x0 steps",
                f"latent (1, 128, {F}, {H}, {W}) -> {8 * (F - 1) + 1}x{4 * H}x{4 * W}")
    if kind == "video_vae":
        F, H, W = spec["grid"]
        return (f"video VAE decode {spec['variant']} (base ch {spec['base_channels']})",
                f"latent (1, 128, {F}, {H}, {W}) -> {8 * (F - 1) + 1}x{32 * H}x{32 * W}")
    if kind == "audio_vae":
        frames = spec["frames"]
        return "audio VAE decode (released size)", f"latent (1, 8, {frames}, 16) -> {4 * frames - 3} mel frames"
    hop, rate = (240, "24 kHz") if spec["variant"] == "19B" else (480, "48 kHz")
    name = "HiFi-GAN" if spec["variant"] == "19B" else "BigVGAN-v2 + BWE"
    size = f"{spec['channels']} ch" if spec["channels"] else "full size"
    return (f"vocoder {spec['variant']} {name} ({size})",
            f"{spec['frames']} mel frames -> {spec['frames'] * hop} samples at {rate}")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 1
        print(f"error: {message} (--help lists the options)", file=sys.stderr)
        raise SystemExit(1)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = _Parser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smallest sizes, 1 repeat (a smoke run)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads per subprocess (default 2)")
    ap.add_argument("--only", default=",".join(MODULES), help=f"comma list of {', '.join(MODULES)} (default all)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per implementation (default 5, quick 1)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls per implementation first (>= 1)")
    ap.add_argument("--layers", type=int, default=None, help="transformer blocks (default 2 on CPU, 4 with --gpu)")
    ap.add_argument("--variant", default="19b", help="transformer layout: 19b (default), 2.3 or 2.5 (2.5: the "
                    "reference is diffusers 0.42.1, ltx-core 1.0.0 has no 2.5)")
    ap.add_argument("--gpu", action="store_true", help="the 19B-width transformer in bf16 on CUDA, with MFU")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return args
    args.only = [m.strip() for m in args.only.split(",") if m.strip()]
    bad = [m for m in args.only if m not in MODULES]
    if bad or not args.only:
        ap.error(f"--only {','.join(args.only) or repr('')}: give a comma list of {', '.join(MODULES)}")
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    if args.layers is None:
        args.layers = 4 if args.gpu else 2
    for name, low in (("threads", 1), ("repeats", 1), ("warmup", 1), ("layers", 1)):
        if getattr(args, name) < low:
            ap.error(f"--{name} {getattr(args, name)}: give an integer >= {low}")
    if args.variant not in VARIANTS:
        ap.error(f"--variant {args.variant}: give one of {', '.join(VARIANTS)}")
    if args.gpu:
        if args.quick:
            ap.error("--gpu and --quick do not go together (the GPU rows have one size)")
        if args.only != list(MODULES):
            ap.error("--gpu runs the transformer rows only; leave out --only")
        if not torch.cuda.is_available():
            ap.error("--gpu needs a CUDA device, and torch sees none")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        return worker(json.loads(args.worker))
    rows = []
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    for spec in cases(args):
        module, case = describe(spec)
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                           env=env)
        if r.returncode != 0 or not r.stdout.strip():
            print(f"  FAILED: {module} | {case}\n{r.stderr[-3000:]}", file=sys.stderr)
            rows.append((spec, module, case, None))
            continue
        rows.append((spec, module, case, json.loads(r.stdout.strip().splitlines()[-1])))
        print(f"  done ({time.perf_counter() - t0:.0f} s): {module} | {case}", file=sys.stderr)

    dev = f"CUDA ({torch.cuda.get_device_name()}), bf16" if args.gpu else f"CPU, threads {args.threads}, fp32"
    ref_name = "diffusers 0.42.1 (2.5 transformer rows), ltx-core 1.0.0" if args.variant == "2.5" else "ltx-core 1.0.0"
    print(f"\nltx.ltx2 vs {ref_name}: {dev}, torch {torch.__version__}; median of {args.repeats} timed calls "
          f"(alternating ours / ref, after {args.warmup} warm-up), memory = extra peak "
          f"{'allocated' if args.gpu else 'RSS'} of one call (median)")
    if not args.gpu:
        print("(fp32: bf16 runs ~6x slower on CPUs without bf16 units, so CPU rows use fp32)")
    print()
    if args.gpu:
        print(f"{rows[0][1]}; MFU vs {H200_BF16_PEAK / 1e12:.0f} TFLOP/s (H200 dense bf16); "
              "ms/block = call time / blocks\n")
        print("| case | ours ms | ref ms | time ours/ref | ours ms/block | ref ms/block | ours MFU | ref MFU "
              "| ours GiB | ref GiB | mem ours/ref | max abs diff |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    else:
        print("| module | case | ours ms | ref ms | time ours/ref | ours MiB | ref MiB | mem ours/ref | max abs diff |")
        print("|---|---|---|---|---|---|---|---|---|")
    for spec, module, case, r in rows:
        if r is None:
            print(f"| {module} | {case} | failed |" if not args.gpu else f"| {case} | failed |")
            continue
        t_ratio = f"{r['ours_s'] / r['ref_s']:.2f}x"
        m_ratio = f"{r['ours_bytes'] / r['ref_bytes']:.2f}x" if r["ref_bytes"] > 0 else "-"
        if args.gpu:
            cfg = transformer_config(spec)
            T = spec["grid"][0] * spec["grid"][1] * spec["grid"][2]
            fl = (guided_flops if spec["guided"] else av_flops)(cfg, T, spec["audio_tokens"], spec["text_tokens"])
            L = spec["layers"]
            print(f"| {case} | {1e3 * r['ours_s']:.1f} | {1e3 * r['ref_s']:.1f} | {t_ratio} "
                  f"| {1e3 * r['ours_s'] / L:.2f} | {1e3 * r['ref_s'] / L:.2f} "
                  f"| {fl / r['ours_s'] / H200_BF16_PEAK:.1%} | {fl / r['ref_s'] / H200_BF16_PEAK:.1%} "
                  f"| {r['ours_bytes'] / 2**30:.2f} | {r['ref_bytes'] / 2**30:.2f} | {m_ratio} | {r['diff']:.1e} |")
        else:
            print(f"| {module} | {case} | {1e3 * r['ours_s']:.1f} | {1e3 * r['ref_s']:.1f} | {t_ratio} "
                  f"| {r['ours_bytes'] / 2**20:.1f} | {r['ref_bytes'] / 2**20:.1f} | {m_ratio} | {r['diff']:.1e} |")
    if any(r is None for *_, r in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
