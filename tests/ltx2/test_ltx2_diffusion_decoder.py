"""LTX-2.5's diffusion video decoder (ltx.ltx2.diffusion_decoder) against diffusers 0.42.1's
LTX2VideoDiffusionDecoderModel / LTX2VideoDiffusionDecodePipeline on the same tiny random weights, in float32:
stages 1-4, one denoiser call, whole decodes step by step and the pipeline with its latent statistics. Also: the
key layout ltx-core's DiffusionVideoDecoder holds, both file layouts' conversions, the config from the metadata,
and the plain-torch neighbourhood attention against a direct gather.

Measured on this CPU, float32 (max abs diff vs diffusers; max |reference|): context 5.7e-6 (9.2), denoiser
1.2e-6 (3.7), one-step decode 4.3e-6 (3.9), 3-step x0 decode 4.3e-6 (3.6) with the step states <= 2.9e-6,
2-step v decode 3.9e-6 (7.1), pipeline frames in [0, 1] 3.4e-6. Rounding only: the same comparisons in float64
give <= 1e-14 (diffusers' CPU attention is flex attention without compile, dense masked scores; ours SDPA over
masked key boxes). A multi-step x0 decode ends differently by design (module docstring): ltx-core returns the
last prediction, diffusers steps to sigma 0, which is the prediction up to float32 rounding.

diffusers raises on clips shorter than the kernels; ltx-core (and we) pad them (`test_small_latents_are_padded`).
`test_matches_ltx_core_head` runs the official decoder (ltx-core at 400fd31, its eager-SDPA NA) on
the released spatial layout in a subprocess, from the local mirror of Lightricks/LTX-2 (or
LTX_CORE_HEAD_SRC, a checkout's packages/ltx-core/src); without either it skips.
"""

from __future__ import annotations

import copy
import dataclasses
import textwrap
from pathlib import Path

import pytest
import torch
from official_mirror import run_with_ltx_core

from ltx.ltx2.diffusion_decoder import (
    DiffusionDecoder,
    DiffusionDecoderConfig,
    decode,
    from_diffusers_keys,
    from_official_file,
    neighborhood_attention,
    to_diffusers_keys,
    to_official_file,
)

# 4 heads of 16 in stage 1, 2 in stage 5; temporal x8 as released, spatial x2 then 2x2 patches (diffusers' dense
# CPU masks make the released x8 grid too slow here); kernels narrower than some grids, so windows shift
# diffusers runs flex attention uncompiled on the CPU (its dense fallback); the warning says so on every call
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
CFG = DiffusionDecoderConfig(
    in_channels=8, patch_size=2, head_dim=16, stage_channels=(64, 32, 32, 32, 32), stage_depths=(1, 1, 1, 1, 2),
    stage_kernels=((3, 1, 3), (3, 3, 3), (3, 3, 3), (3, 3, 5), (3, 3, 3)),
    upsamples=(((1, 2, 2), 2), ((2, 1, 1), 1), ((2, 1, 1), 1), ((2, 1, 1), 1)), stage5_kernel=(3, 3, 5),
    t_emb_dim=32, default_num_inference_steps=2, timestep_scale_multiplier=1000.0, model_output_type="x0")
LATENT = (2, 8, 3, 2, 3)  # -> pixels (2, 3, 17, 8, 12)
ATOL = 1e-5


def _randomize(decoder: DiffusionDecoder, seed: int = 0) -> DiffusionDecoder:
    """Weights of unit-ish scale everywhere (norm gains near 1, adaLN and tables non-zero, statistics not 0 / 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in decoder.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if p.ndim == 2 and "scale_shift_table" not in name:
                p.copy_(r / p.shape[1] ** 0.5)
            elif "norm" in name:
                p.copy_(1 + 0.2 * r)
            else:
                p.copy_(0.2 * r)
        stats = decoder.per_channel_statistics
        stats.mean.copy_(0.3 * torch.randn(stats.mean.shape, generator=g))
        stats.std.copy_(0.5 + torch.rand(stats.std.shape, generator=g))
    return decoder


def _diffusers(ours: DiffusionDecoder):
    from diffusers.models.autoencoders.ltx2_diffusion_decoder import LTX2VideoDiffusionDecoderModel

    ref = LTX2VideoDiffusionDecoderModel(**ours.cfg.to_diffusers_config()).eval()
    ref.load_state_dict(to_diffusers_keys(ours.state_dict()), strict=True)
    return ref


@pytest.fixture(scope="module")
def pair():
    ours = _randomize(DiffusionDecoder(CFG).eval())
    return ours, _diffusers(ours)


def _latents(seed: int = 1) -> torch.Tensor:
    return torch.randn(LATENT, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------ parity


@pytest.mark.parity
@pytest.mark.parametrize("dtype, atol", [(torch.float32, ATOL), (torch.float64, 1e-12)])
def test_context_denoiser_and_one_step_match_diffusers(pair, dtype, atol):
    """Stages 1-4, one denoiser call (a noise level per sample) and a one-step x0 decode. float64 shows the maths
    is the same (measured <= 1e-14); float32 differs by rounding only (attention kernels, summation order)."""
    ours, ref = (copy.deepcopy(m).to(dtype) for m in pair)
    z = _latents().to(dtype)
    with torch.no_grad():
        context = ours.context(z)
        expected = ref.decoder.forward_stage_4(ref.decoder.forward_stages_1_to_3(z))
        assert context.shape == expected.shape == (2, 17, 4, 6, 32)
        assert (context - expected).abs().max() <= atol  # fp32: 5.7e-6, |context| <= 9.2
        x = torch.randn(2, 3, 17, 8, 12, generator=torch.Generator().manual_seed(2), dtype=dtype)
        sigma = torch.tensor([0.7, 0.25])
        pred = ours(x, expected, sigma)
        want = ref.decoder.forward_diffusion_step(expected, x, sigma)
        assert pred.shape == x.shape and 1 < pred.abs().max() < 10
        assert (pred - want).abs().max() <= atol  # fp32: 1.2e-6, |pred| <= 3.7
        out = decode(ours, z, steps=1, normalized=False, seed=4)
        want = ref.decode(z, generator=torch.Generator().manual_seed(4), num_inference_steps=1).sample
    assert out.shape == want.shape == (2, 3, 17, 8, 12)
    assert (out - want).abs().max() <= atol  # fp32: 4.3e-6, |out| <= 3.9


def _record_steps(ref) -> list[torch.Tensor]:
    """Patch diffusers' stage-5 step to record the pixels it is called on (its decode loop's state per step)."""
    seen, step = [], ref.decoder.forward_diffusion_step

    def recording(context, x_t, timestep):
        seen.append(x_t.clone())
        return step(context, x_t, timestep)

    ref.decoder.forward_diffusion_step = recording
    return seen


@pytest.mark.parity
@pytest.mark.parametrize("output_type, steps, budget", [("x0", 3, None), ("v", 2, 4096)])
def test_decode_matches_diffusers_step_by_step(pair, output_type, steps, budget):
    """Whole decodes from the same seed: the pixels entering every step, then the output. The v case also runs
    our attention in small query tiles (4096 mask elements: 12 to 30 SDPA calls per attention)."""
    base, ref = pair
    ours = DiffusionDecoder(dataclasses.replace(CFG, model_output_type=output_type)).eval()
    ours.load_state_dict(base.state_dict(), strict=True)
    for m in ours.modules():
        if budget is not None and hasattr(m, "score_budget"):
            m.score_budget = budget
    ref.decoder.model_output_type = output_type
    z = _latents(3)
    seen, mine = _record_steps(ref), []
    try:
        with torch.no_grad():
            want = ref.decode(z, generator=torch.Generator().manual_seed(4), num_inference_steps=steps).sample
            out = decode(ours, z, steps=steps, normalized=False, generator=torch.Generator().manual_seed(4),
                         callback=lambda i, x: mine.append(x.clone()))
    finally:
        ref.decoder.model_output_type = CFG.model_output_type
        del ref.decoder.forward_diffusion_step
    assert len(mine) == len(seen) == steps
    for a, b in zip(mine, seen):
        assert (a - b).abs().max() <= ATOL  # measured 0 (the noise), then <= 2.9e-6
    assert out.shape == want.shape == (2, 3, 17, 8, 12) and out.abs().max() > 0.3
    assert (out - want).abs().max() <= ATOL  # measured 4.3e-6 (x0, |out| <= 3.6), 3.9e-6 (v, 7.1)


@pytest.mark.parity
def test_pipeline_with_statistics_matches_diffusers(pair):
    """Normalized latents through diffusers' decode pipeline (the default 2 x0 steps, the latent statistics from
    the decoder's buffers, output in [0, 1]) against `decode` (normalized=True, as ltx-core's decoder)."""
    from diffusers.pipelines.ltx2.pipeline_ltx2_diffusion_decode import LTX2VideoDiffusionDecodePipeline

    ours, ref = pair
    z = _latents(5)
    seen, mine = _record_steps(ref), []
    try:
        pipe = LTX2VideoDiffusionDecodePipeline(diffusion_decoder=ref, scheduler=None)
        pipe.set_progress_bar_config(disable=True)
        video = pipe(z, generator=torch.Generator().manual_seed(6), output_type="pt", return_dict=False)[0]
        with torch.no_grad():
            out = decode(ours, z, seed=6, callback=lambda i, x: mine.append(x.clone()))
    finally:
        del ref.decoder.forward_diffusion_step
    assert len(mine) == len(seen) == 2
    assert max((a - b).abs().max() for a, b in zip(mine, seen)) <= ATOL
    frames = (out / 2 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4)  # (B, F, C, H, W) in [0, 1], diffusers' "pt"
    assert video.shape == frames.shape == (2, 17, 3, 8, 12)
    assert (frames - video).abs().max() <= ATOL and 0.1 < video.std() < 0.5  # measured 3.4e-6


@pytest.mark.parity
def test_small_latents_are_padded():
    """A clip shorter (or smaller) than the kernels: ltx-core edge-pads the latents, keeps at least the stage-5
    kernel's frames of context, and crops the pixels back; diffusers' decoder refuses it. (Matched to ltx-core
    bitwise by the opt-in test below.)"""
    ours = _randomize(DiffusionDecoder(CFG).eval())
    z = torch.randn(1, 8, 1, 1, 2)
    assert CFG.min_latent_size == (3, 2, 3)
    with torch.no_grad():
        out = decode(ours, z, seed=0)
        again = decode(ours, z, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 1, 4, 8) and torch.isfinite(out).all()
    assert torch.equal(out, again)  # seed=n is a fresh CPU generator seeded n
    ref = _diffusers(ours)
    with pytest.raises(ValueError, match="at least its kernel size"), torch.no_grad():
        ref.decode(z, generator=torch.Generator().manual_seed(0))


def _gather_attention(q, k, v, kernel):
    """Neighbourhood attention by gathering each query's window explicitly (the reference)."""
    B, T, H, W, heads, dh = q.shape
    idx = []
    for length, kk in zip((T, H, W), kernel):
        start = (torch.arange(length) - kk // 2).clamp(0, length - kk)
        idx.append(start[:, None] + torch.arange(kk))  # (length, kk)
    it, ih, iw = idx
    sel = (slice(None), it[:, None, None, :, None, None], ih[None, :, None, None, :, None],
           iw[None, None, :, None, None, :])
    kw, vw = k[sel], v[sel]  # (B, T, H, W, kt, kh, kw, heads, dh)
    kw, vw = kw.flatten(4, 6), vw.flatten(4, 6)  # (B, T, H, W, K, heads, dh)
    scores = torch.einsum("bthwnd,bthwknd->bthwnk", q, kw).softmax(-1)
    return torch.einsum("bthwnk,bthwknd->bthwnd", scores, vw)


@pytest.mark.parametrize("budget", [2**24, 2000])
def test_neighborhood_attention_is_the_window_softmax(budget):
    """In float64, so only a wrong window could differ (one query tile, or many)."""
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 5, 6, 7, 2, 8, generator=g, dtype=torch.float64) for _ in range(3))
    kernel = (3, 5, 3)
    out = neighborhood_attention(q, k, v, kernel, budget=budget)
    assert (out - _gather_attention(q, k, v, kernel)).abs().max() <= 1e-12
    with pytest.raises(ValueError, match="at least its kernel"):
        neighborhood_attention(q, k, v, (3, 7, 3))


# ------------------------------------------------------------------------------------------------ keys


def _official_keys(depths: tuple[int, ...]) -> set[str]:
    """The state dict keys of ltx-core's DiffusionVideoDecoder (400fd31, after its loader), written out from its
    modules: NABlock = norm1, attn (NeighborhoodAttention3D: qkv = QKVProjections to_q/to_k/to_v, proj, q_norm,
    k_norm), norm2, mlp (SwiGLU w_up/w_gate/w_down, no biases); CombinedDiffusionNABlock adds context_proj and
    scale_shift_table; persistent buffers: per_channel_statistics' two."""
    linear = ("weight", "bias")
    attn = [f"attn.qkv.{p}.{s}" for p in ("to_q", "to_k", "to_v") for s in linear]
    attn += [f"attn.proj.{s}" for s in linear] + ["attn.q_norm.weight", "attn.k_norm.weight"]
    block = ["norm1.weight", *attn, "norm2.weight", *(f"mlp.{w}.weight" for w in ("w_up", "w_gate", "w_down"))]
    diff = [*block, "context_proj.weight", "context_proj.bias", "scale_shift_table"]
    keys = {"per_channel_statistics.mean-of-means", "per_channel_statistics.std-of-means", "norm_out.weight",
            *(f"{m}.{s}" for m in ("conv_in", "conv_in_x_t", "shared_adaln.proj", "conv_out",
                                   "t_embedder.timestep_embedder.linear_1", "t_embedder.timestep_embedder.linear_2")
              for s in linear)}
    keys |= {f"upsamples.{i}.proj.{s}" for i in range(4) for s in linear}
    keys |= {f"det_stages.{i}.{j}.{b}" for i in range(4) for j in range(depths[i]) for b in block}
    keys |= {f"diff_blocks.{j}.{b}" for j in range(depths[4]) for b in diff}
    return keys


def test_keys_and_shapes_are_ltx_core_layout():
    with torch.device("meta"):
        full = DiffusionDecoder(DiffusionDecoderConfig())  # ltx-core's class defaults
    sd = {k: tuple(v.shape) for k, v in full.state_dict().items()}
    assert set(sd) == _official_keys((4, 6, 4, 2, 8)) and len(sd) == 16 * 15 + 8 * 18 + 23 == 407
    assert sd["conv_in.weight"] == (1024, 128)
    assert sd["det_stages.0.3.attn.qkv.to_q.weight"] == (1024, 1024)
    assert sd["det_stages.1.5.attn.q_norm.weight"] == (64,)
    assert sd["det_stages.3.1.mlp.w_up.weight"] == (1024, 256)
    assert sd["upsamples.0.proj.weight"] == (2048, 1024)  # 4 x 1024 / 2
    assert sd["upsamples.2.proj.weight"] == (2048, 256)  # 8 x 256 / 1
    assert sd["t_embedder.timestep_embedder.linear_1.weight"] == (384, 256)
    assert sd["shared_adaln.proj.weight"] == (7 * 128, 384)
    assert sd["conv_in_x_t.weight"] == (128, 48) and sd["conv_out.weight"] == (48, 128)
    assert sd["diff_blocks.7.scale_shift_table"] == (7, 128)
    assert sd["diff_blocks.7.context_proj.weight"] == (128, 128)
    assert set(DiffusionDecoder(CFG).state_dict()) == _official_keys(CFG.stage_depths)


@pytest.mark.parity
def test_diffusers_key_mapping_round_trips(pair):
    ours, ref = pair
    sd = ours.state_dict()
    theirs = to_diffusers_keys(sd)
    assert set(theirs) == set(ref.state_dict())
    assert theirs["latents_mean"] is sd["per_channel_statistics.mean-of-means"]
    assert theirs["decoder.diff_blocks.1.attn.to_out.0.weight"] is sd["diff_blocks.1.attn.proj.weight"]
    assert theirs["decoder.det_stages.2.0.attn.norm_k.weight"] is sd["det_stages.2.0.attn.k_norm.weight"]
    back = from_diffusers_keys(ref.state_dict())
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)


def test_official_file_layout_round_trips_and_folds_gates(pair):
    ours, _ = pair
    sd = ours.state_dict()
    raw = to_official_file(sd)
    w = raw["vae.decoder.diff_blocks.0.attn.qkv.weight"]
    assert w.shape == (96, 32) and torch.equal(w[32:64], sd["diff_blocks.0.attn.qkv.to_k.weight"])
    assert "vae.decoder.t_embedder.mlp.2.bias" in raw and "vae.per_channel_statistics.std-of-means" in raw
    assert not any(".to_q." in k or "timestep_embedder" in k for k in raw)
    back = from_official_file(raw)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    assert set(to_official_file(sd, prefix="decoder.")) == {k.removeprefix("vae.") for k in raw}

    # what else a released file holds: static gates (folded into the next Linear), the preview head, the two
    # statistics nobody reads, and other components' tensors
    g = torch.Generator().manual_seed(8)
    gates = {f"vae.decoder.diff_blocks.1.{n}": torch.rand(32, generator=g) + 0.5
             for n in ("gate_msa", "gate_mlp", "gate_ctx")}
    extra = {"vae.decoder.coarse_out.weight": torch.ones(3), "vae.per_channel_statistics.channel": torch.ones(8),
             "vae.per_channel_statistics.mean-of-stds": torch.ones(8), "vae.encoder.conv_in.conv.weight": torch.ones(1)}
    folded = from_official_file({**raw, **gates, **extra})
    assert folded.keys() == sd.keys()
    msa, mlp, ctx = gates.values()
    assert torch.allclose(folded["diff_blocks.1.attn.proj.weight"], msa[:, None] * sd["diff_blocks.1.attn.proj.weight"])
    assert torch.allclose(folded["diff_blocks.1.attn.proj.bias"], msa * sd["diff_blocks.1.attn.proj.bias"])
    w_down = sd["diff_blocks.1.mlp.w_down.weight"]
    assert torch.allclose(folded["diff_blocks.1.mlp.w_down.weight"], mlp[:, None] * w_down)
    assert torch.allclose(folded["diff_blocks.1.context_proj.bias"], ctx * sd["diff_blocks.1.context_proj.bias"])
    assert torch.equal(folded["diff_blocks.0.attn.proj.weight"], sd["diff_blocks.0.attn.proj.weight"])
    DiffusionDecoder(CFG).load_state_dict(folded, strict=True)

    with pytest.raises(ValueError, match="gates have no Linear"):
        from_official_file({**raw, "vae.decoder.diff_blocks.9.gate_msa": torch.ones(32)})
    with pytest.raises(ValueError, match="unknown latent statistic"):
        from_official_file({**raw, "vae.per_channel_statistics.median": torch.ones(8)})


# ------------------------------------------------------------------------------------------------ config


def test_config_from_metadata():
    """`config["vae"]` of a diffusion VAE file: decoder keys nested under `decoder`, model_output_type beside it,
    the encoder's keys ignored; absent keys at ltx-core's class defaults; the flat layout reads the same."""
    vae = CFG.to_metadata()
    vae["encoder"] = {"blocks": [["res_x", {"num_layers": 2}]], "out_channels": 8}
    assert vae["_class_name"] == "CausalDiffusionVAE" and DiffusionDecoderConfig.from_metadata(vae) == CFG
    flat = {k: v for k, v in vae.items() if k != "decoder"} | vae["decoder"]
    assert DiffusionDecoderConfig.from_metadata(flat) == CFG
    released = {"_class_name": "CausalDiffusionVAE", "latent_channels": 128, "model_output_type": "x0",
                "decoder": {"na_head_dim": 64, "stage5_kernel": [3, 5, 5], "default_num_inference_steps": 1}}
    assert DiffusionDecoderConfig.from_metadata(released) == DiffusionDecoderConfig(
        model_output_type="x0", stage5_kernel=(3, 5, 5), default_num_inference_steps=1)
    assert DiffusionDecoderConfig.from_diffusers_config(CFG.to_diffusers_config()) == CFG
    assert DiffusionDecoderConfig().scale == (8, 32, 32) and DiffusionDecoderConfig().ghost_frames == 2


@pytest.mark.parametrize("vae, match", [
    ({"latent_channels": 128}, r"vae._class_name='CausalVideoAutoencoder' \(absent"),
    ({"_class_name": "CausalDiffusionVAE", "model_output_type": "eps"}, r"model_output_type='eps'.*\('v', 'x0'\)"),
    ({"_class_name": "X", "decoder": {"stage_channels": [1024, 512, 256, 256, 192]}}, "upsample 3: 256 channels"),
    ({"_class_name": "X", "decoder": {"head_dim": 8}}, "head_dim=8 is not supported"),
    ({"_class_name": "X", "decoder": {"upsamples": [[[3, 2, 2], 2], [[2, 1, 1], 2], [[2, 2, 2], 1],
                                                    [[2, 2, 2], 2]]}}, "temporal stride 3 is not supported"),
    ({"_class_name": "X", "decoder": {"stage_depths": 4}}, "vae.decoder metadata is malformed"),
])  # fmt: skip
def test_bad_metadata_is_one_clear_line(vae, match):
    with pytest.raises(ValueError, match=match) as e:
        DiffusionDecoderConfig.from_metadata(vae)
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------------ opt-in: ltx-core


_OFFICIAL_SCRIPT = textwrap.dedent("""
    import sys, torch
    from ltx_core.model.video_vae.model_configurator import _build_diffusion_video_decoder
    from ltx_core.model.video_vae.transformer import EagerSdpaAttention, NeighborhoodAttention3D
    sys.path.insert(0, sys.argv[1])
    from tests.ltx2.test_ltx2_diffusion_decoder import _randomize
    from ltx.ltx2.diffusion_decoder import DiffusionDecoder, DiffusionDecoderConfig, decode

    # the released spatial layout (ltx-core crops to 8 / 32 / 32 pixels per latent), narrow and shallow
    base = dict(in_channels=8, patch_size=4, head_dim=16, stage_channels=(64, 32, 32, 32, 32),
                stage_depths=(1, 1, 1, 1, 2), stage_kernels=((3, 1, 1), (3, 1, 1), (3, 1, 1), (3, 3, 3), (3, 3, 3)),
                stage5_kernel=(3, 5, 5), t_emb_dim=32, timestep_scale_multiplier=1000.0,
                upsamples=(((1, 2, 2), 2), ((2, 1, 1), 1), ((2, 2, 2), 1), ((2, 2, 2), 1)))
    # ltx-core's multi-step x0 takes batch 1 only (its to_velocity calls .item() on the per-sample sigma)
    for kind, steps, shape in [("x0", 1, (2, 8, 3, 1, 1)), ("x0", 3, (1, 8, 3, 1, 2)), ("v", 2, (1, 8, 4, 1, 1)),
                               ("x0", 2, (1, 8, 1, 1, 1)), ("v", 1, (1, 8, 2, 1, 2))]:
        cfg = DiffusionDecoderConfig(**base, model_output_type=kind, default_num_inference_steps=steps)
        ours = _randomize(DiffusionDecoder(cfg).eval())
        official = _build_diffusion_video_decoder(cfg.to_metadata()).eval()
        for m in official.modules():
            if isinstance(m, NeighborhoodAttention3D):
                m.attention_function = EagerSdpaAttention()
        official.load_state_dict(ours.state_dict(), strict=True)
        z = torch.randn(shape)
        with torch.no_grad():
            a = official(z, generator=torch.Generator().manual_seed(3))
            b = decode(ours, z, generator=torch.Generator().manual_seed(3))
        assert a.shape == b.shape, (a.shape, b.shape)
        print(kind, steps, shape, (a - b).abs().max().item())

    # a file with static gates through ltx-core's loader ops vs from_official_file (bf16: the fold rounds back)
    from ltx_core.model.video_vae.model_configurator import _build_diffusion_vae_decoder_sd_ops
    from ltx.ltx2.diffusion_decoder import from_official_file, to_official_file
    raw = {k: v.to(torch.bfloat16) for k, v in to_official_file(ours.state_dict()).items()}
    gates = {f"diff_blocks.{i}.{n}": (torch.rand(32) + 0.5).to(torch.bfloat16)
             for i in range(2) for n in ("gate_msa", "gate_mlp", "gate_ctx")}
    raw |= {"vae.decoder." + k: v for k, v in gates.items()}
    ops, theirs = _build_diffusion_vae_decoder_sd_ops(gates), {}
    for key, value in raw.items():
        if (key := ops.apply_to_key(key)) is not None:
            theirs |= {r.new_key: r.new_value for r in ops.apply_to_key_value(key, value)}
    mine = from_official_file(raw)
    assert set(theirs) == set(mine), set(theirs) ^ set(mine)
    print("sdops", max((theirs[k].float() - mine[k].float()).abs().max().item() for k in mine))
""")


@pytest.mark.parity
def test_matches_ltx_core_head(tmp_path_factory):
    """ltx-core's DiffusionVideoDecoder.forward (untiled) against `decode`, including padded short clips, and its
    loader ops on a gated file against `from_official_file` (all measured bitwise equal, 0.0). Our state dict loads
    into ltx-core's module strictly. A subprocess: the installed ltx-core 1.0.0 has no diffusion decoder."""
    repo = Path(__file__).resolve().parents[2]
    diffs = run_with_ltx_core(_OFFICIAL_SCRIPT, tmp_path_factory.getbasetemp(), str(repo))
    assert len(diffs) == 6 and max(diffs) <= ATOL, diffs
