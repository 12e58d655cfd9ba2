"""End-to-end parity of ltx.ltxv.pipelines with ltx-video==0.1.2's LTXVideoPipeline / LTXMultiScalePipeline.

Tiny random models in fp32 on CPU; precomputed text embeddings (no T5). One official-format single file per
VAE layout holds the transformer (`model.diffusion_model.*`), the VAE (`vae.*`) and its five per-channel
statistics (`vae.per_channel_statistics.*`); a second, standalone official file holds the latent upsampler.
The reference loads its VAE and upsampler from those files with its own `from_pretrained`; we load all
three with ltx.ltxv.checkpoint.load_component. So this tests the whole chain: converter, native VAE and
upsampler, and the sampling pipeline (noise, schedule, conditioning, guidance, sampler, decode noise, tone
map, AdaIN, multi-scale). VAE layouts: the released 0.9.5 block list at width 8 (timestep-conditioned
decoder: decode timestep + decode noise), and the demo VAE of configs/demo/vae.yaml (patch size 1, 8x space,
8x time, no decode timestep), which checks that sizes and positions follow the VAE's own factors.
RNG: the same generator seed and the same global seed before each call; both sides consume them in the same
order (posterior samples and decode noise from the global RNG; docs: ltx/ltxv/conditioning.py, ltx/ltxv/pipelines.py).

Compared: the latent tokens after every step (captured from the reference's `denoising_step`), the final
latents and the decoded frames. Measured max |diff| (this machine, torch 2.13 CPU, fp32), per-step latents /
decoded frames in [0, 1]: 0.9.5-layout cases <= 7.4e-6 / 4.8e-6 (the largest on frozen conditioning tokens,
|x| <= 5.5); multi-scale frames 2.2e-6; demo VAE 3.6e-6 / 1.5e-6; bound 1e-5. The residue is fp32 rounding:
VAE encoder ops in another order (rsqrt vs division in PixelNorm: ~3e-7 relative per block, 1.5e-6 on the
posterior mean), and batch rows of different sizes through matmul / SDPA in the transformer (we skip no-op
perturbed rows, the reference does not). Our VAE convs go through PyTorch's dispatch, as the reference's.
Negative controls (run by hand): CFG-star epsilon 0.1 on our side moves step 1 by 1.4e-5; encoding the
conditioning with the posterior mean instead of a sample moves step 0 by 0.23; positions in units of the
released (8, 32, 32) instead of the demo VAE's (8, 8, 8) move step 0 by 0.020.
"""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("ltx_video")

from conftest import REPO, official_dit, randomize_, save_official  # noqa: E402
from ltx_video.models.autoencoders.causal_video_autoencoder import CausalVideoAutoencoder  # noqa: E402
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

from ltx.ltxv.api import Pipeline  # noqa: E402
from ltx.ltxv.checkpoint import load_component, load_dit  # noqa: E402
from ltx.ltxv.conditioning import ConditioningItem  # noqa: E402
from ltx.ltxv.guidance import TextConditioning  # noqa: E402
from ltx.ltxv.keys_official import DIT_PREFIX  # noqa: E402
from ltx.ltxv.keys_vae import upsampler_config_to_official, vae_config_to_official  # noqa: E402
from ltx.ltxv.pipelines import SchedulerSpec  # noqa: E402
from ltx.ltxv.transformer import DiTConfig, STGMode  # noqa: E402
from ltx.ltxv.upsampler import UpsamplerConfig  # noqa: E402
from ltx.ltxv.vae import STATISTICS, VAE_PRESETS, VAEConfig, tiny  # noqa: E402
from ltx.presets import PassConfig, PipelineType, SamplingDefaults  # noqa: E402

pytestmark = pytest.mark.parity
ATOL = 1e-5  # measured <= 7.4e-6 (see the file docstring)

CFG = DiTConfig(num_layers=2, num_heads=2, head_dim=16, in_channels=16, out_channels=16, caption_channels=24,
                causal_temporal_positioning=True)
STG_REF = {STGMode.attention_values: SkipLayerStrategy.AttentionValues,
           STGMode.attention_skip: SkipLayerStrategy.AttentionSkip,
           STGMode.transformer_block: SkipLayerStrategy.TransformerBlock,
           STGMode.residual: SkipLayerStrategy.Residual}


def demo_vae_config() -> VAEConfig:
    from omegaconf import OmegaConf

    return VAEConfig(**OmegaConf.to_container(OmegaConf.load(REPO / "configs/demo/vae.yaml")))


VAE_LAYOUTS = {"0.9.5-w8": tiny(VAE_PRESETS["0.9.5"], width=8), "demo": demo_vae_config()}


@torch.no_grad()
def official_file(path, dit_ref, vae_cfg: VAEConfig, seed: int):
    """Reference VAE with random weights + statistics, saved with the transformer as one official file."""
    vae = CausalVideoAutoencoder.from_config(vae_config_to_official(vae_cfg))
    g = torch.Generator().manual_seed(seed)
    for p in vae.parameters():  # perturb the init: it decodes almost everything to a constant
        p.add_(0.05 * torch.randn(p.shape, generator=g))
    vae.encoder.conv_out.conv.bias[-1] -= 6.0  # log-variance channel: posterior std ~0.05, as trained VAEs
    C = vae_cfg.latent_channels
    # statistics of this VAE's latents (jittered), so that normalized latents are O(1) as with real checkpoints
    z = vae.encode(media(9, 64, 64, seed=0)).latent_dist.mean  # (1, C, F', H', W') raw
    std, mean = torch.std_mean(z, dim=(0, 2, 3, 4))
    stats = {"channel": torch.arange(C).float(), "mean-of-means": mean + 0.1 * std * torch.randn(C, generator=g),
             "std-of-means": std * (0.8 + 0.4 * torch.rand(C, generator=g)), "mean-of-stds": torch.rand(C, generator=g),
             "mean-of-stds_over_std-of-means": torch.rand(C, generator=g)}
    assert set(stats) == set(STATISTICS)
    tensors = {DIT_PREFIX + k: v for k, v in dit_ref.state_dict().items()}
    tensors |= {"vae." + k: v for k, v in vae.state_dict().items()}
    tensors |= {"vae.per_channel_statistics." + k: v for k, v in stats.items()}
    return save_official(path, tensors, {"transformer": dict(dit_ref.config), "vae": vae_config_to_official(vae_cfg)})


@torch.no_grad()
def upsampler_file(path, seed: int):
    c = upsampler_config_to_official(UpsamplerConfig(in_channels=16, mid_channels=32, num_blocks_per_stage=1))
    up = LatentUpsampler.from_config(c)
    g = torch.Generator().manual_seed(seed)
    for p in up.parameters():
        p.copy_(0.1 * torch.randn(p.shape, generator=g))
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in up.state_dict().items()}, str(path), metadata={"config": json.dumps(c)})
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    torch.manual_seed(0)
    ref = randomize_(official_dit(CFG), seed=3).eval()
    root = tmp_path_factory.mktemp("ckpt")
    out = {name: official_file(root / f"{name}.safetensors", ref, cfg, seed=5 + n)
           for n, (name, cfg) in enumerate(VAE_LAYOUTS.items())}
    return ref, out, upsampler_file(root / "upsampler.safetensors", seed=9)


def load_models(files, layout: str = "0.9.5-w8"):
    """(reference DiT, our DiT, reference VAE, our VAE), both VAEs read from the same official file."""
    ref, paths, _ = files
    path = paths[layout]
    ref_vae = CausalVideoAutoencoder.from_pretrained(path).eval()
    ours = load_component(path, "vae")
    assert ours.cfg.extra_statistics and ours.cfg.spatial_factor == ref_vae.spatial_downscale_factor
    return ref, load_dit(path), ref_vae, ours



@pytest.fixture(scope="module")
def models(files):
    return load_models(files)


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
    ref, ours, _, vae = models
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
    pipe = Pipeline.from_modules(ours, vae, sampling=p, scheduler=sched_ours)  # the Python API, official names
    torch.manual_seed(11)
    result = pipe(prompt_embeds=t.context, prompt_attention_mask=t.mask, negative_prompt_embeds=t.neg_context,
                  negative_prompt_attention_mask=t.neg_mask, height=h, width=w, num_frames=n, frame_rate=fps,
                  generator=torch.Generator().manual_seed(42), output_type=output, conditioning_items=list(items),
                  skip_layer_strategy=stg_mode, stochastic_sampling=stochastic, image_cond_noise_scale=noise_scale,
                  decode_timestep=decode_timestep, decode_noise_scale=decode_noise_scale,
                  tone_map_compression_ratio=tone, callback=lambda i, x: our_steps.append(x.clone()))
    out = result.latents if output == "latent" else result.frames
    assert len(our_steps) == len(ref_steps) > 0
    errs = [(a - b).abs().max().item() for a, b in zip(our_steps, ref_steps)]
    for a, b in zip(our_steps, ref_steps):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    assert out.shape == out_ref.shape
    torch.testing.assert_close(out, out_ref, atol=ATOL, rtol=0)
    print(f"per-step max |diff| {max(errs):.2e}, output {(out - out_ref).abs().max().item():.2e}")
    return errs, result.forward_rows


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


def test_multiscale_matches_reference(models, files):
    ref, ours, ref_vae, vae = models
    ref_up = LatentUpsampler.from_pretrained(files[2]).eval()
    up = load_component(files[2], "upsampler")
    first = PassConfig(num_inference_steps=3, guidance_scale=[2.0], stg_scale=[1.0], rescaling_scale=[0.7],
                       skip_block_list=[[0]], skip_final_inference_steps=1)
    second = PassConfig(num_inference_steps=4, skip_initial_inference_steps=2, stg_scale=[1.0],
                        skip_block_list=[[1]], tone_map_compression_ratio=0.6)
    t = text(1)
    items = [ConditioningItem(media(1, 96, 96, 1), 0, 1.0)]
    h, w, n, fps = 96, 96, 9, 24.0
    pipe = LTXMultiScalePipeline(ref_pipe(models, RectifiedFlowScheduler(sampler="LinearQuadratic")), ref_up)
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
    sampling = SamplingDefaults(pipeline_type=PipelineType.multi_scale, first_pass=first, second_pass=second,
                                downscale_factor=0.6666666)
    pipe = Pipeline.from_modules(ours, vae, sampling=sampling, scheduler=LQ_OURS, upsampler=up)
    torch.manual_seed(11)
    frames = pipe(prompt_embeds=t.context, prompt_attention_mask=t.mask, negative_prompt_embeds=t.neg_context,
                  negative_prompt_attention_mask=t.neg_mask, height=h, width=w, num_frames=n, frame_rate=fps,
                  generator=torch.Generator().manual_seed(42), conditioning_items=items, image_cond_noise_scale=0.0,
                  decode_timestep=0.05, decode_noise_scale=0.025).frames
    assert frames.shape == out_ref.shape == (1, 3, n, h, w)
    torch.testing.assert_close(frames, out_ref, atol=ATOL, rtol=0)
    print(f"multi-scale frames max |diff| {(frames - out_ref).abs().max().item():.2e}")


def test_demo_vae_own_scale_factors(files):
    """The demo VAE (patch 1, 8x space and time, no decode timestep): 64x64x17 -> a 3x8x8 latent grid, positions
    in units of 8 pixels; CFG + STG, a frame-0 image and a keyframe at frame 8, decoded frames."""
    models = load_models(files, "demo")
    assert models[3].cfg.spatial_factor == 8 and not models[3].cfg.timestep_conditioning
    p = PassConfig(num_inference_steps=3, guidance_scale=[3.0], stg_scale=[1.0], rescaling_scale=[0.7],
                   skip_block_list=[[1]], cfg_star_rescale=True)
    items = [ConditioningItem(media(1, 64, 64, 1), 0, 1.0), ConditioningItem(media(1, 64, 64, 2), 8, 0.8)]
    run_both(models, p, LQ, LQ_OURS, items=items, noise_scale=0.15, size=(64, 64, 17))
