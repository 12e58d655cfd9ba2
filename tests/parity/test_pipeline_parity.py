"""End-to-end parity of ltx.pipeline with ltx-video==0.1.2's LTXVideoPipeline / LTXMultiScalePipeline.

Tiny random models in fp32 on CPU; precomputed text embeddings (no T5). Both sides load the transformer from
the same official-format file (our side through ltx.convert.formats.load_dit). The VAE and the latent
upsampler are the *reference* modules on both sides (wrapped in `RefVAE` for our pipeline): this file tests
the sampling pipeline (noise, schedule, conditioning, guidance, sampler, decode-noise, tone map, AdaIN,
multi-scale); VAE numerics are the VAE's own parity test. RNG: the same generator seed and the same global
seed before each call; both sides consume them in the same order (docs: ltx/conditioning.py).

Compared: the latent tokens after every step (captured from the reference's `denoising_step`), the final
latents and the decoded frames. Measured max |diff| (this machine, torch 2.13 CPU, fp32): per-step latents
<= 2.5e-6 (values O(1)), decoded frames in [0, 1] <= 2.4e-6; bound 1e-5. The residue is fp32 summation order
(batch rows of different sizes through matmul / SDPA: we skip no-op perturbed rows, the reference does not).
Negative control (run by hand): changing the CFG-star epsilon to 0.1 on our side moves step 1 by 1.4e-5.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("ltx_video")

from conftest import official_dit, official_dit_file, randomize_  # noqa: E402
from ltx_video.models.autoencoders.causal_video_autoencoder import (  # noqa: E402
    CausalVideoAutoencoder,
    create_video_autoencoder_demo_config,
)
from ltx_video.models.autoencoders.latent_upsampler import LatentUpsampler  # noqa: E402
from ltx_video.models.transformers.symmetric_patchifier import SymmetricPatchifier  # noqa: E402
from ltx_video.pipelines.pipeline_ltx_video import (  # noqa: E402
    ConditioningItem as RefItem,
)
from ltx_video.pipelines.pipeline_ltx_video import (  # noqa: E402
    LTXMultiScalePipeline,
    LTXVideoPipeline,
)
from ltx_video.schedulers.rf import RectifiedFlowScheduler  # noqa: E402
from ltx_video.utils.skip_layer_strategy import SkipLayerStrategy  # noqa: E402

from ltx.conditioning import ConditioningItem  # noqa: E402
from ltx.convert.formats import load_dit  # noqa: E402
from ltx.models.dit import DiTConfig, STGMode  # noqa: E402
from ltx.pipeline import (  # noqa: E402
    PassOptions,
    SchedulerSpec,
    decode,
    denoise_pass,
    generate_multiscale,
    resize_frames,
)
from ltx.presets import PassConfig  # noqa: E402
from ltx.sched.guidance import TextConditioning  # noqa: E402

pytestmark = pytest.mark.parity
ATOL = 1e-5  # measured <= 2.5e-6 (see the file docstring)

CFG = DiTConfig(num_layers=2, num_heads=2, head_dim=16, in_channels=16, out_channels=16, caption_channels=24,
                causal_temporal_positioning=True)
STG_REF = {STGMode.attention_values: SkipLayerStrategy.AttentionValues,
           STGMode.attention_skip: SkipLayerStrategy.AttentionSkip,
           STGMode.transformer_block: SkipLayerStrategy.TransformerBlock,
           STGMode.residual: SkipLayerStrategy.Residual}


class RefVAE:
    """The reference CausalVideoAutoencoder behind ltx.pipeline.LatentVAE (normalized latents)."""

    def __init__(self, vae: CausalVideoAutoencoder):
        self.vae = vae
        self.timestep_conditioning = vae.decoder.timestep_conditioning
        self.mean = vae.mean_of_means.view(1, -1, 1, 1, 1)
        self.std = vae.std_of_means.view(1, -1, 1, 1, 1)

    def normalize(self, z):
        return (z - self.mean) / self.std

    def unnormalize(self, z):
        return z * self.std + self.mean

    def encode(self, pixels):
        return self.normalize(self.vae.encode(pixels).latent_dist.sample())

    def decode(self, latents, timestep):
        B, _, f, h, w = latents.shape
        kw = {} if timestep is None else {"timestep": timestep}
        return self.vae.decode(self.unnormalize(latents), return_dict=False,
                               target_shape=(1, 3, 8 * (f - 1) + 1, 32 * h, 32 * w), **kw)[0]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.manual_seed(0)
    ref = randomize_(official_dit(CFG), seed=3).eval()
    path = official_dit_file(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", ref)
    ours = load_dit(path)
    c = create_video_autoencoder_demo_config(latent_channels=16)
    c.update(encoder_base_channels=16, decoder_base_channels=16)
    vae = CausalVideoAutoencoder.from_config(c)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in vae.parameters():  # the demo init decodes almost everything to a constant
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    vae.register_buffer("std_of_means", 0.5 + torch.rand(16, generator=g))
    vae.register_buffer("mean_of_means", 0.1 * torch.randn(16, generator=g))
    vae.eval()
    up = LatentUpsampler(in_channels=16, mid_channels=32, num_blocks_per_stage=1).eval()
    with torch.no_grad():
        for p in up.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return ref, ours, vae, up


def text(batch: int, seed: int = 7, length: int = 6) -> TextConditioning:
    g = torch.Generator().manual_seed(seed)
    ctx = torch.randn(batch, length, CFG.caption_channels, generator=g)
    neg = torch.randn(batch, length, CFG.caption_channels, generator=g)
    mask = torch.ones(batch, length)
    mask[:, length - 2 :] = 0
    neg_mask = torch.ones(batch, length)
    neg_mask[:, 1:] = 0
    return TextConditioning(ctx, mask, neg, neg_mask)


def media(frames: int, height: int, width: int, seed: int, batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, height, width, generator=g) * 2 - 1


def ref_pipe(models, scheduler, allowed=None):
    ref, _, vae, _ = models
    return LTXVideoPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=ref, scheduler=scheduler,
                            patchifier=SymmetricPatchifier(patch_size=1), prompt_enhancer_image_caption_model=None,
                            prompt_enhancer_image_caption_processor=None, prompt_enhancer_llm_model=None,
                            prompt_enhancer_llm_tokenizer=None, allowed_inference_steps=allowed)


def capture_ref_steps(pipe):
    """Record the reference's latents after every step (its denoising_step, which includes the freeze)."""
    steps = []
    original = pipe.denoising_step

    def wrapped(*args, **kwargs):
        out = original(*args, **kwargs)
        steps.append(out.clone())
        return out

    pipe.denoising_step = wrapped
    return steps


def ref_kwargs(p: PassConfig, t: TextConditioning, **extra):
    kw = dict(
        prompt_embeds=t.context, prompt_attention_mask=t.mask, negative_prompt_embeds=t.neg_context,
        negative_prompt_attention_mask=t.neg_mask, negative_prompt=None, is_video=True,
        vae_per_channel_normalize=True, guidance_scale=p.guidance_scale, stg_scale=p.stg_scale,
        rescaling_scale=p.rescaling_scale, skip_block_list=p.skip_block_list,
        guidance_timesteps=p.guidance_timesteps, cfg_star_rescale=p.cfg_star_rescale,
        skip_initial_inference_steps=p.skip_initial_inference_steps,
        skip_final_inference_steps=p.skip_final_inference_steps,
    )
    if p.timesteps is not None:
        kw["timesteps"] = p.timesteps
    else:
        kw["num_inference_steps"] = p.num_inference_steps
    if p.guidance_timesteps is None:  # the reference needs plain values when there are no breakpoints
        kw.update(guidance_scale=p.guidance_scale[0], stg_scale=p.stg_scale[0],
                  rescaling_scale=p.rescaling_scale[0], skip_block_list=p.skip_block_list[0])
    kw.update(extra)
    return kw


def run_both(models, p, sched_ref, sched_ours, *, batch=1, items=(), stg_mode=STGMode.attention_values,
             stochastic=False, noise_scale=0.0, size=(64, 96, 17), fps=25.0, output="pt", allowed=None,
             decode_timestep=0.05, decode_noise_scale=0.025, tone=0.0):
    ref, ours, vae, _ = models
    h, w, n = size
    t = text(batch)
    pipe = ref_pipe(models, sched_ref, allowed)
    ref_steps = capture_ref_steps(pipe)
    ref_items = [RefItem(it.pixels, it.frame, it.strength) for it in items]
    torch.manual_seed(11)
    with torch.no_grad():
        out_ref = pipe(height=h, width=w, num_frames=n, frame_rate=fps, generator=torch.Generator().manual_seed(42),
                       output_type=output, conditioning_items=ref_items or None, skip_layer_strategy=STG_REF[stg_mode],
                       stochastic_sampling=stochastic, image_cond_noise_scale=noise_scale,
                       decode_timestep=decode_timestep, decode_noise_scale=decode_noise_scale,
                       tone_map_compression_ratio=tone, **ref_kwargs(p, t)).images
    our_steps = []
    opts = PassOptions(stg_mode=stg_mode, stochastic=stochastic, image_cond_noise_scale=noise_scale,
                       callback=lambda i, x: our_steps.append(x.clone()))
    torch.manual_seed(11)
    with torch.no_grad():
        lat = denoise_pass(ours, RefVAE(vae), t, p, sched_ours, height=h, width=w, num_frames=n, fps=fps,
                           generator=torch.Generator().manual_seed(42), items=items, opts=opts)
        out = lat if output == "latent" else decode(RefVAE(vae), lat, decode_timestep=decode_timestep,
                                                     decode_noise_scale=decode_noise_scale, tone_map_ratio=tone)
    assert len(our_steps) == len(ref_steps) > 0
    errs = [(a - b).abs().max().item() for a, b in zip(our_steps, ref_steps)]
    assert max(errs) <= ATOL, errs
    assert out.shape == out_ref.shape
    torch.testing.assert_close(out, out_ref, atol=ATOL, rtol=0)
    return errs, opts.forward_rows


LQ = RectifiedFlowScheduler(sampler="LinearQuadratic")
LQ_OURS = SchedulerSpec(sampler="LinearQuadratic")


@pytest.mark.parametrize("stg_mode", [STGMode.attention_values, STGMode.attention_skip, STGMode.transformer_block])
def test_guided_i2v_with_keyframe(models, stg_mode):
    """CFG + STG + rescale + CFG-star, frame-0 image + keyframe at frame 16, image-cond noise, decoded frames."""
    p = PassConfig(num_inference_steps=3, guidance_scale=[3.0], stg_scale=[1.0], rescaling_scale=[0.7],
                   skip_block_list=[[1]], cfg_star_rescale=True)
    items = [ConditioningItem(media(1, 64, 96, 1), 0, 1.0), ConditioningItem(media(1, 64, 96, 2), 16, 0.8)]
    errs, rows = run_both(models, p, LQ, LQ_OURS, items=items, stg_mode=stg_mode, noise_scale=0.15)
    assert rows == [3, 3, 3]


def test_per_step_guidance_sd3_schedule(models):
    """13B-dev-style per-step lists (guidance_timesteps) on the shifted (0.9.0/0.9.1) schedule, latent output."""
    p = PassConfig(num_inference_steps=4, guidance_timesteps=[1.0, 0.95, 0.6], guidance_scale=[1, 4, 2],
                   stg_scale=[0, 2, 1], rescaling_scale=[1, 0.5, 1], skip_block_list=[[], [0, 1], [1]],
                   cfg_star_rescale=True, skip_final_inference_steps=1)
    sd3 = RectifiedFlowScheduler(shifting="SD3", target_shift_terminal=0.1)
    errs, rows = run_both(models, p, sd3, SchedulerSpec(sampler="Uniform", shifting="SD3", terminal=0.1),
                          output="latent")
    assert len(rows) == 3 and rows[0] == 1  # first step (sigma 1): guidance off -> one row


def test_distilled_stochastic_video_extension(models):
    """Distilled timesteps checked against allowed_inference_steps, stochastic sampling, batch 2 (no STG, so the
    reference's batch-1-only skip mask is not involved), a 9-frame video at frame 0 and another at frame 8."""
    lq8 = [1.0, 0.9937, 0.9875, 0.9812, 0.975, 0.9094, 0.725, 0.4219]  # as stored (4 decimals) and in the yamls
    p = PassConfig(timesteps=[0.9875, 0.725, 0.4219])
    items = [ConditioningItem(media(9, 64, 64, 3, 2), 0, 1.0), ConditioningItem(media(9, 64, 64, 4, 2), 8, 0.9)]
    run_both(models, p, LQ, SchedulerSpec(sampler="LinearQuadratic", allowed_sigmas=tuple(lq8)), batch=2, items=items,
             stochastic=True, size=(64, 64, 25), allowed=lq8)


def test_multiscale_matches_reference(models):
    ref, ours, vae, up = models
    first = PassConfig(num_inference_steps=3, guidance_scale=[2.0], stg_scale=[1.0], rescaling_scale=[0.7],
                       skip_block_list=[[0]], skip_final_inference_steps=1)
    second = PassConfig(num_inference_steps=4, skip_initial_inference_steps=2, stg_scale=[1.0],
                        skip_block_list=[[1]], tone_map_compression_ratio=0.6)
    t = text(1)
    items = [ConditioningItem(media(1, 96, 96, 1), 0, 1.0)]
    h, w, n, fps = 96, 96, 9, 24.0
    pipe = LTXMultiScalePipeline(ref_pipe(models, RectifiedFlowScheduler(sampler="LinearQuadratic")), up)
    strip = {"negative_prompt_embeds", "negative_prompt_attention_mask", "prompt_embeds", "prompt_attention_mask",
             "negative_prompt", "is_video", "vae_per_channel_normalize"}
    fp = {k: v for k, v in ref_kwargs(first, t).items() if k not in strip}
    sp = {k: v for k, v in ref_kwargs(second, t).items() if k not in strip}
    sp["tone_map_compression_ratio"] = 0.6
    torch.manual_seed(11)
    with torch.no_grad():
        out_ref = pipe(downscale_factor=0.6666666, first_pass=fp, second_pass=sp, height=h, width=w, num_frames=n,
                       frame_rate=fps, generator=torch.Generator().manual_seed(42), output_type="pt",
                       conditioning_items=[RefItem(it.pixels, it.frame, it.strength) for it in items],
                       skip_layer_strategy=SkipLayerStrategy.AttentionValues, decode_timestep=0.05,
                       decode_noise_scale=0.025, **{k: v for k, v in ref_kwargs(first, t).items() if k in strip}).images
    torch.manual_seed(11)
    rvae = RefVAE(vae)
    with torch.no_grad():
        lat = generate_multiscale(ours, rvae, up, t, first, second, LQ_OURS, height=h, width=w, num_frames=n, fps=fps,
                                  downscale_factor=0.6666666, generator=torch.Generator().manual_seed(42), items=items)
        frames = decode(rvae, lat, decode_timestep=0.05, decode_noise_scale=0.025, tone_map_ratio=0.6)
        frames = resize_frames(frames, h, w)
    assert frames.shape == out_ref.shape == (1, 3, n, h, w)
    torch.testing.assert_close(frames, out_ref, atol=ATOL, rtol=0)
