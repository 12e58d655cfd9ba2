"""The Python API: open a checkpoint once, then call it with the official pipeline's argument names.

    import ltx

    pipe = ltx.load_pipeline()                                  # the bundled ShapesWorld demo model
    out = pipe("a red circle moves to the left", seed=0)
    out.frames                                                  # (1, 3, 17, 64, 64) in [0, 1]

    pipe = ltx.load_pipeline("/w/ltxv-2b-0.9.8-distilled.safetensors", model="ltxv-2b-0.9.8-distilled",
                             text_encoder="/w/PixArt-XL-2-1024-MS",
                             upsampler="/w/ltxv-spatial-upscaler-0.9.8.safetensors",
                             loras=[("/w/my-lora.safetensors", 0.8)])
    out = pipe("a red ball bounces", height=480, width=704, num_frames=97, frame_rate=24, seed=42,
               conditioning_media_paths=["first.png"], conditioning_start_frames=[0])

`open_pipeline` reads checkpoint headers only and builds the modules on the `meta` device, so `check(...)`
validates a request (sizes, steps against a distilled checkpoint's allowed timesteps, guidance values, STG
blocks, conditioning frames, LoRA module names and shapes) before any weights load; `load()` then loads
them (LoRAs merged into the transformer's weights). `load_pipeline` = `open_pipeline(...).load()`.
`Pipeline.from_modules` wraps modules already in memory (tests, notebooks, a training loop).

Arguments follow `ltx_video`'s `LTXVideoPipeline.__call__` / `inference.py`: `prompt`, `negative_prompt`,
`height`, `width`, `num_frames`, `frame_rate`, `num_inference_steps`, `timesteps`, `guidance_scale`,
`stg_scale`, `rescaling_scale`, `skip_block_list`, `guidance_timesteps`, `cfg_star_rescale`,
`skip_initial_inference_steps`, `skip_final_inference_steps`, `skip_layer_strategy`, `stochastic_sampling`,
`image_cond_noise_scale` (default 0.15, as the official inference), `decode_timestep`, `decode_noise_scale`,
`tone_map_compression_ratio`, `downscale_factor`, `first_pass` / `second_pass` (dicts, as the official
multi-scale pipeline), `prompt_embeds` / `prompt_attention_mask` / `negative_prompt_embeds` /
`negative_prompt_attention_mask`, `conditioning_items` or `conditioning_media_paths` +
`conditioning_start_frames` + `conditioning_strengths`, `generator` or `seed`, `output_type` ("pt" or
"latent"). IC-LoRA control (not in the official pipeline): `control=[...]`, each a GuideItem, a path or a
dict {path, strength, frame, downscale} (ltx/ltxv/conditioning.py; `downscale` defaults to the LoRAs'
`reference_downscale_factor` metadata, else 1). Guidance values are a scalar or one value per
`guidance_timesteps` entry. The pass arguments change the preset's first pass (the only pass of a base
preset); `first_pass` / `second_pass` change any field of either pass. Unset arguments keep the preset's
values (its official sampling defaults).

The raw VAE and the pipeline's decode differ on purpose: `VideoVAE.decode(z, timestep)` maps *normalized*
latents to pixels in [-1, 1], deterministically; `ltx.ltxv.pipelines.decode` is what the pipeline does around it
(decode noise from the global RNG for timestep-conditioned VAEs, the tone map, frames in [0, 1]). See the
README's Python section for the raw VAE (`encode_moments`, `denormalize`, which RNG the 0.9.1 noise uses).
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ltx.core.checkpoint import CheckpointError
from ltx.core.device import resolve_device
from ltx.core.media import MediaError, is_video, load_image, read_image, read_video
from ltx.core.requests import check_generator, check_prompts, check_seed, lora_specs
from ltx.core.sequence_parallel import tile_parallel_decode
from ltx.core.step_cache import CachePolicy, cached
from ltx.ltxv.chain import generate_chain
from ltx.ltxv.checkpoint import COMPONENTS, Checkpoint, load_component, read_checkpoint
from ltx.ltxv.conditioning import ConditioningItem, GuideItem, slice_guide
from ltx.ltxv.guidance import TextConditioning
from ltx.ltxv.keys_official import config_diff
from ltx.ltxv.lora import apply_lora_weights, check_lora, load_lora_file, merge_lora, reference_downscale, remove_lora
from ltx.ltxv.pipelines import (
    PassOptions,
    SchedulerSpec,
    check_request,
    decode,
    denoise_pass,
    generate_multiscale,
    passes,
    resize_frames,
)
from ltx.ltxv.text import T5TextEncoder
from ltx.ltxv.transformer import DiT, DiTConfig, STGMode
from ltx.ltxv.vae import VAEConfig, VideoVAE
from ltx.presets import (
    GenerationDefaults,
    ModelPreset,
    PassConfig,
    PipelineType,
    SamplingDefaults,
    load_preset,
)

SKIP_LAYER_STRATEGIES = {  # the official SkipLayerStrategy names and ours
    "attentionvalues": STGMode.attention_values, "attentionskip": STGMode.attention_skip,
    "residual": STGMode.residual, "transformerblock": STGMode.transformer_block,
}


class NonFiniteError(ValueError):
    """The sampler or the decoder produced NaN / inf (nothing is written)."""


def check_finite(x: Tensor, what: str, hint: str = "") -> Tensor:
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise NonFiniteError(f"{what} hold {bad} non-finite values (NaN / inf) out of {x.numel()}"
                             + (f"; {hint}" if hint else ""))
    return x


def _finite(name: str, value: float, lo: float, hi: float, valid: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not (
            lo <= value <= hi):
        raise ValueError(f"{name} must be {valid}, got {value!r}")
    return float(value)


@dataclass
class Output:
    """frames (B, 3, F, H, W) in [0, 1] (None for output_type="latent"); latents: the last pass's normalized
    latents (None for chained segments); sigmas: each pass's schedule; prompts: what the text encoder read of
    each prompt (ltx.ltxv.text.PromptView; None for precomputed embeddings)."""

    frames: Tensor | None
    latents: Tensor | None
    sigmas: list[Tensor]
    prompts: list | None = None
    forward_rows: list[int] = field(default_factory=list)  # transformer batch rows per step (CFG / STG cost)
    cache_stats: dict | None = None  # step caching (cache=CachePolicy(...)): forwards computed / skipped


@dataclass
class Request:
    """A validated request: the sampling after the overrides, the sizes, the conditioning and the schedules."""

    sampling: SamplingDefaults
    height: int
    width: int
    num_frames: int
    frame_rate: float
    items: list[ConditioningItem]
    sigmas: list[Tensor]
    image_cond_noise_scale: float
    output_type: str
    num_segments: int = 1
    segment_overlap: int = 9
    noise_mix: float = 0.5
    guides: list[GuideItem] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ opening


def open_checkpoints(checkpoint, vae=None, upsampler=None, *, multi_scale: bool = False,
                     upsampler_name: str = "the spatial upscaler") -> tuple[Checkpoint, Checkpoint, Checkpoint | None]:
    """(transformer, VAE, upsampler or None) checkpoints, headers only; errors say which component is missing."""
    ckpt = read_checkpoint(_exists(checkpoint, "checkpoint"))
    if "dit" not in ckpt.components:
        raise CheckpointError(f"{ckpt.path} holds no transformer (it has {sorted(ckpt.components)})")
    vae_ckpt = read_checkpoint(_exists(vae, "vae checkpoint")) if vae is not None else ckpt
    if "vae" not in vae_ckpt.components:
        raise CheckpointError(f"{vae_ckpt.path} holds no VAE (it has {sorted(vae_ckpt.components)}); pass the VAE "
                              f"file or folder")
    up = None
    if multi_scale:
        if upsampler is None:
            raise ValueError(f"this preset is multi-scale: pass the latent upsampler ({upsampler_name})")
        up = read_checkpoint(_exists(upsampler, "upsampler checkpoint"))
        if "upsampler" not in up.components:
            raise CheckpointError(f"{up.path} is not a latent upsampler (it has {sorted(up.components)})")
    return ckpt, vae_ckpt, up


def _exists(path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{what} {p} does not exist")
    return p


def check_architecture(preset: ModelPreset, dit: DiTConfig, vae: VAEConfig) -> None:
    preset.require_ltx_video("this pipeline")
    diff = config_diff(dit, preset.dit)
    if diff:
        shown = ", ".join(f"{k}: checkpoint {a!r} vs preset {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"the checkpoint's transformer is not the {preset.name} preset's: {shown}")
    if vae.version != preset.vae:
        raise ValueError(f"the checkpoint's VAE is the {vae.version} layout; the {preset.name} preset uses "
                         f"{preset.vae}")


def scheduler_spec(ckpt: Checkpoint, vae: VAEConfig) -> SchedulerSpec:
    """The checkpoint's scheduler config; files without one (diffusers folders) get their release family's:
    0.9.0 / 0.9.1 VAEs -> uniform + SD3 shift (terminal 0.1), later ones -> linear-quadratic."""
    sched = ckpt.extra.get("scheduler")
    allowed = ckpt.extra.get("allowed_inference_steps")
    if sched is None:
        sched = {"sampler": "LinearQuadratic"} if vae.version == "0.9.5" else {
            "sampler": "Uniform", "shifting": "SD3", "target_shift_terminal": 0.1}  # fmt: skip
    return SchedulerSpec.from_official(sched, allowed)


@dataclass
class LoRASpec:
    path: str | os.PathLike
    strength: float = 1.0


def _lora_specs(loras) -> list[LoRASpec]:
    return [LoRASpec(path, strength) for path, strength in lora_specs(loras or ())]


# ------------------------------------------------------------------------------------------------ pipeline


@dataclass(eq=False)
class Pipeline:
    """Loaded (or meta) modules + the preset's sampling defaults + the checkpoint's scheduler."""

    dit: DiT
    vae: VideoVAE
    sampling: SamplingDefaults
    scheduler: SchedulerSpec
    upsampler: torch.nn.Module | None = None
    generation: GenerationDefaults = field(default_factory=GenerationDefaults)
    text_encoder: object | None = None  # a T5TextEncoder, or a folder path loaded on first use
    name: str = ""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    _checkpoints: tuple | None = None  # (dit, vae, upsampler) Checkpoints of an opened, not yet loaded pipeline
    _loras: list = field(default_factory=list)  # [(LoRASpec, LoRAWeights)]

    @classmethod
    def from_modules(cls, dit: DiT, vae: VideoVAE, *, sampling: SamplingDefaults | PassConfig,
                     scheduler: SchedulerSpec | None = None, upsampler=None, text_encoder=None,
                     generation: GenerationDefaults | None = None) -> Pipeline:
        """Wrap modules in memory; `sampling` may be a single PassConfig (a base pipeline)."""
        if isinstance(sampling, PassConfig):
            sampling = SamplingDefaults(first_pass=sampling)
        p = next(dit.parameters())
        return cls(dit, vae, sampling, scheduler or SchedulerSpec(), upsampler, generation or GenerationDefaults(),
                   text_encoder, device=p.device, dtype=p.dtype)

    @classmethod
    def opened(cls, preset: ModelPreset, checkpoints: tuple[Checkpoint, Checkpoint, Checkpoint | None], *,
               loras: Sequence = (), text_encoder: str | os.PathLike | None = None) -> Pipeline:
        """A pipeline with modules on `meta` over checkpoints read (`open_checkpoints`) and checked
        (`check_architecture`); `loras`: (spec with .strength, LoRAWeights) pairs (`open_loras`)."""
        ckpt, vae_ckpt, up_ckpt = checkpoints
        dit_cfg, vae_cfg = ckpt.components["dit"].config, vae_ckpt.components["vae"].config
        with torch.device("meta"):
            dit, video_vae = DiT(dit_cfg), VideoVAE(vae_cfg)
            up = COMPONENTS["upsampler"].build(up_ckpt.components["upsampler"].config) if up_ckpt is not None else None
        return cls(dit, video_vae, preset.sampling, scheduler_spec(ckpt, vae_cfg), up, preset.generation,
                   None if text_encoder is None else Path(text_encoder).expanduser(), preset.name,
                   device=torch.device("meta"), _checkpoints=checkpoints, _loras=list(loras))

    @property
    def loaded(self) -> bool:
        return self._checkpoints is None

    # --- loading
    def load(self, device: str | torch.device = "auto", dtype: str | torch.dtype | None = None) -> Pipeline:
        """Load the weights of an opened pipeline (LoRAs merged into the transformer); returns self."""
        if self.loaded:
            return self
        self.device, self.dtype = resolve_device(device, dtype)
        ckpt, vae_ckpt, up_ckpt = self._checkpoints
        dit = load_component(ckpt, "dit", dtype=self.dtype, device=self.device)
        for i, (spec, weights) in enumerate(self._loras):  # fp32 adapters, merged: W += s * alpha/r * B @ A
            print(apply_lora_weights(dit, weights, f"lora{i}", spec.strength, dtype=torch.float32))
        merge_lora(dit)
        remove_lora(dit)  # plain nn.Linear modules again, the LoRAs folded into their weights
        self.dit = dit
        self.vae = load_component(vae_ckpt, "vae", dtype=self.dtype, device=self.device)
        if up_ckpt is not None:
            self.upsampler = load_component(up_ckpt, "upsampler", dtype=self.dtype, device=self.device)
        self._checkpoints = None
        return self

    def _text_encoder(self):
        if self.text_encoder is None:
            raise ValueError("no text encoder: pass text_encoder=/path/to/t5 to open_pipeline, or prompt_embeds")
        if not isinstance(self.text_encoder, T5TextEncoder):
            self.text_encoder = T5TextEncoder(self.text_encoder, device=self.device, dtype=self.dtype,
                                              max_tokens=self.generation.text_tokens)
        return self.text_encoder

    def prompt_views(self, prompts: Sequence[str]) -> list:
        """What the text encoder reads of each prompt (ltx.ltxv.text.PromptView): normalised and cut."""
        return self._text_encoder().seen(list(prompts))

    def encode_prompt(self, prompt: str | Sequence[str], negative_prompt: str | None = None, *,
                      needs_negative: bool = True) -> TextConditioning:
        """TextConditioning (B rows) from the text encoder; negative_prompt None = the preset's."""
        prompts = check_prompts(prompt, "a list of prompts, or prompt_embeds")
        t5 = self._text_encoder()
        for view in t5.seen(prompts):
            if view.truncated:
                warnings.warn(f"prompt of {view.tokens} tokens cut to the text encoder's {t5.max_tokens}: the "
                              f"model reads {view.text!r}", stacklevel=2)
        ctx, mask = t5.encode(prompts)
        neg = self.generation.negative_prompt if negative_prompt is None else negative_prompt
        n_ctx, n_mask = t5.encode([neg] * len(prompts)) if needs_negative else (None, None)
        return TextConditioning(ctx, mask, n_ctx, n_mask)

    # --- requests
    def check(self, *, height: int | None = None, width: int | None = None, num_frames: int | None = None,
              frame_rate: float | None = None, conditioning_items: Sequence[ConditioningItem] | None = None,
              conditioning_media_paths: Sequence[str] | None = None,
              conditioning_start_frames: Sequence[int] | None = None,
              conditioning_strengths: Sequence[float] | None = None, official_image_preprocessing: bool = True,
              image_cond_noise_scale: float = 0.15, output_type: str = "pt", has_negative: bool = True,
              num_segments: int = 1, segment_overlap: int = 9, noise_mix: float = 0.5, control=None,
              **overrides) -> Request:
        """Validate a request from configs alone (works before `load`): the sampling after the overrides (see the
        module docstring), sizes, conditioning, schedules; raises ValueError naming the argument."""
        g = self.generation
        height = g.height if height is None else height
        width = g.width if width is None else width
        num_frames = g.num_frames if num_frames is None else num_frames
        frame_rate = _finite("frame_rate", g.fps if frame_rate is None else frame_rate, 1e-6, 1e6,
                             "a positive number of frames per second")
        for name, v in (("height", height), ("width", width), ("num_frames", num_frames)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{name} must be an integer, got {v!r}")
        noise = _finite("image_cond_noise_scale", image_cond_noise_scale, 0, 1, "in [0, 1] (official 0.15)")
        if output_type not in ("pt", "latent"):
            raise ValueError(f"output_type must be 'pt' (frames) or 'latent', got {output_type!r}")
        sampling = with_overrides(self.sampling, **overrides)
        items = conditioning(conditioning_items, conditioning_media_paths, conditioning_start_frames,
                             conditioning_strengths, height=height, width=width, num_frames=num_frames,
                             official=official_image_preprocessing)
        if isinstance(num_segments, bool) or not isinstance(num_segments, int) or num_segments < 1:
            raise ValueError(f"num_segments must be a positive integer, got {num_segments!r}")
        _finite("noise_mix", noise_mix, 0, 1, "in [0, 1]")
        t = self.vae.cfg.temporal_factor
        if num_segments > 1 and not (isinstance(segment_overlap, int) and 1 <= segment_overlap < num_frames
                                     and (segment_overlap - 1) % t == 0):
            raise ValueError(f"segment_overlap must be {t}k + 1 frames and less than num_frames ({num_frames}), got "
                             f"{segment_overlap!r}")
        total = num_frames * num_segments - segment_overlap * (num_segments - 1)
        guides, notes = control_guides(control, num_frames=total, temporal=t, size=(height, width),
                                       downscale=reference_downscale([w for _, w in self._loras]))
        sigmas = check_segments(self.dit.cfg, self.vae.cfg, sampling, self.scheduler, height=height, width=width,
                                num_frames=num_frames, items=items, has_negative=has_negative, guides=guides,
                                num_segments=num_segments, overlap=segment_overlap)
        if sampling.pipeline_type is PipelineType.multi_scale and self.upsampler is None:
            raise ValueError("a multi-scale preset needs the latent upsampler (open_pipeline(..., upsampler=...))")
        for note in notes:  # only for a request that passed its checks
            print(f"note: {note}")
        return Request(sampling, height, width, num_frames, frame_rate, items, sigmas, noise, output_type,
                       num_segments, segment_overlap, noise_mix, guides)

    def __call__(self, prompt: str | Sequence[str] | None = None, negative_prompt: str | None = None, *,
                 prompt_embeds: Tensor | None = None, prompt_attention_mask: Tensor | None = None,
                 negative_prompt_embeds: Tensor | None = None, negative_prompt_attention_mask: Tensor | None = None,
                 generator: torch.Generator | None = None, seed: int | None = None, vae_tiling: bool = False,
                 callback: Callable[[int, Tensor], None] | None = None, progress: bool | Callable = False,
                 cache: CachePolicy | None = None, **kwargs) -> Output:
        """Generate (see the module docstring for the arguments). Seeding follows the official inference script:
        `seed` sets torch.manual_seed (posterior samples, decode noise) and a Generator(device) (noise).
        `cache`: step caching of the transformer for this call (ltx.core.step_cache; stats in Output.cache_stats)."""
        if not self.loaded:
            raise ValueError("the pipeline was opened without weights; call .load() first")
        if seed is not None:
            check_seed(seed)
        check_generator(generator)
        if prompt_embeds is None:
            prompts = check_prompts(prompt, "a list of prompts, or prompt_embeds")
            text, views = None, self.prompt_views(prompts)
        else:
            prompts, views = None, None
            text = embeddings_conditioning(prompt_embeds, prompt_attention_mask, negative_prompt_embeds,
                                           negative_prompt_attention_mask, self.dit.cfg.caption_channels)
        req = self.check(has_negative=text is None or text.neg_context is not None, **kwargs)
        if text is None:
            text = self.encode_prompt(prompts, negative_prompt, needs_negative=needs_cfg(req.sampling))
        text = TextConditioning(*(None if t is None else t.to(self.device, self.dtype if t.is_floating_point()
                                                               else t.dtype) for t in dataclasses.astuple(text)))
        if seed is not None:
            torch.manual_seed(seed)
            if generator is None:
                generator = torch.Generator(self.device).manual_seed(seed)
        step = progress if callable(progress) else None
        if progress is True:
            from tqdm import tqdm

            bar = tqdm(total=sum(len(s) - 1 for s in req.sigmas) * req.num_segments, desc="denoising", unit="step")
            step = lambda i: bar.update(1)  # noqa: E731
        rows: list[int] = []
        with torch.no_grad(), cached(self.dit, cache, req.sigmas) as step_cache:
            frames, latents = run_request(self, text, req, generator, tiled=vae_tiling, progress=step,
                                          callback=callback, forward_rows=rows)
        if progress is True:
            bar.close()
        return Output(frames, latents, req.sigmas, views, rows, None if step_cache is None else step_cache.stats)


def embeddings_conditioning(ctx, mask, n_ctx, n_mask, caption_channels: int) -> TextConditioning:
    """Precomputed embeddings (context (B, S, D), mask (B, S); the negative ones with 1 or B rows), checked."""
    def check(c, m, what):
        if not isinstance(c, Tensor) or c.ndim != 3:
            raise ValueError(f"{what}_embeds must be a (B, S, D) tensor, got {getattr(c, 'shape', c)!r}")
        if c.shape[-1] != caption_channels:
            raise ValueError(f"{what}_embeds have width {c.shape[-1]}; the transformer takes {caption_channels}")
        m = torch.ones(c.shape[:2], dtype=torch.long) if m is None else m
        if tuple(m.shape) != tuple(c.shape[:2]):
            raise ValueError(f"{what}_attention_mask must be {tuple(c.shape[:2])}, got {tuple(m.shape)}")
        check_finite(c.float(), f"{what}_embeds")
        return c, m

    ctx, mask = check(ctx, mask, "prompt")
    B = ctx.shape[0]
    if n_ctx is not None:
        n_ctx, n_mask = check(n_ctx, n_mask, "negative_prompt")
        if n_ctx.shape[0] not in (1, B):
            raise ValueError(f"negative_prompt_embeds hold {n_ctx.shape[0]} rows; need 1 or {B}")
        n_ctx, n_mask = n_ctx.expand(B, -1, -1), n_mask.expand(B, -1)
    return TextConditioning(ctx, mask, n_ctx, n_mask)


def needs_cfg(s: SamplingDefaults) -> bool:
    return any(g > 1 for p in passes(s) for g in p.guidance_scale)


PASS_FIELDS = {f.name for f in dataclasses.fields(PassConfig)}


def with_overrides(s: SamplingDefaults, *, first_pass: dict | None = None, second_pass: dict | None = None,
                   skip_layer_strategy: str | STGMode | None = None, stochastic_sampling: bool | None = None,
                   decode_timestep: float | None = None, decode_noise_scale: float | None = None,
                   downscale_factor: float | None = None, tone_map_compression_ratio: float | None = None,
                   **pass_args) -> SamplingDefaults:
    """The preset's sampling with call arguments applied (validated by PassConfig / SamplingDefaults)."""
    unknown = sorted(set(pass_args) - PASS_FIELDS)
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown}; pass arguments are {sorted(PASS_FIELDS)}, others: "
                         f"first_pass, second_pass, skip_layer_strategy, stochastic_sampling, decode_timestep, "
                         f"decode_noise_scale, downscale_factor, tone_map_compression_ratio, height, width, "
                         f"num_frames, frame_rate, conditioning_*, image_cond_noise_scale, output_type, seed")

    def change(p: PassConfig, changes: dict, what: str) -> PassConfig:
        changes = {k: v for k, v in changes.items() if v is not None}
        bad = sorted(set(changes) - PASS_FIELDS)
        if bad:
            raise ValueError(f"{what}: unknown field(s) {bad}; a pass has {sorted(PASS_FIELDS)}")
        if not changes:
            return p
        if "timesteps" in changes:
            changes.setdefault("num_inference_steps", None)
        elif "num_inference_steps" in changes:
            changes.setdefault("timesteps", None)
        if "guidance_timesteps" not in changes:  # a new scalar guidance value replaces every breakpoint's
            n = len(p.guidance_timesteps) if p.guidance_timesteps is not None else 1
            for k in ("guidance_scale", "stg_scale", "rescaling_scale"):
                if k in changes and not isinstance(changes[k], list | tuple):
                    changes[k] = [changes[k]] * n
            blocks = changes.get("skip_block_list")
            if isinstance(blocks, list | tuple) and all(isinstance(b, int) for b in blocks):
                changes["skip_block_list"] = [list(blocks)] * n
        try:
            return dataclasses.replace(p, **changes)
        except TypeError as e:
            raise ValueError(f"{what}: {e}") from None

    first = change(s.first_pass, {**pass_args, **(first_pass or {})}, "first_pass")
    second = s.second_pass
    if second_pass:
        if second is None:
            raise ValueError("second_pass given but the preset is single-pass (pipeline_type base)")
        second = change(second, second_pass, "second_pass")
    if tone_map_compression_ratio is not None:  # applied where the pipeline decodes: the last pass
        if second is not None:
            second = change(second, {"tone_map_compression_ratio": tone_map_compression_ratio}, "second_pass")
        else:
            first = change(first, {"tone_map_compression_ratio": tone_map_compression_ratio}, "first_pass")
    changes = {"first_pass": first, "second_pass": second}
    if skip_layer_strategy is not None:
        changes["stg_mode"] = stg_mode(skip_layer_strategy)
    if stochastic_sampling is not None:
        if not isinstance(stochastic_sampling, bool):
            raise ValueError(f"stochastic_sampling must be true or false, got {stochastic_sampling!r}")
        changes["stochastic_sampling"] = stochastic_sampling
    for k, v in (("decode_timestep", decode_timestep), ("decode_noise_scale", decode_noise_scale),
                 ("downscale_factor", downscale_factor)):
        if v is not None:
            changes[k] = v
    return dataclasses.replace(s, **changes)


def stg_mode(value: str | STGMode) -> STGMode:
    if isinstance(value, STGMode):
        return value
    key = str(value).lower().replace("_", "").replace("skiplayerstrategy.", "")
    if key not in SKIP_LAYER_STRATEGIES:
        raise ValueError(f"skip_layer_strategy {value!r} is not one of {[m.value for m in STGMode]}")
    return SKIP_LAYER_STRATEGIES[key]


def conditioning(items, paths, start_frames, strengths, *, height: int, width: int, num_frames: int,
                 official: bool = True) -> list[ConditioningItem]:
    """ConditioningItems from `conditioning_items`, or from media paths (images or videos) with their start
    frames and strengths (official inference.py arguments; strengths default to 1)."""
    out = list(items or [])
    if paths:
        paths = list(paths)
        if start_frames is None or len(start_frames) != len(paths):
            raise ValueError(f"conditioning_start_frames needs one frame index per media path ({len(paths)}), got "
                             f"{start_frames!r}")
        strengths = [1.0] * len(paths) if strengths is None else list(strengths)
        if len(strengths) != len(paths):
            raise ValueError(f"conditioning_strengths needs one value per media path ({len(paths)}), got {strengths}")
        for i, (path, frame, strength) in enumerate(zip(paths, start_frames, strengths)):
            if isinstance(frame, bool) or not isinstance(frame, int) or not 0 <= frame < num_frames:
                raise ValueError(f"conditioning_start_frames[{i}] ({path}): frame {frame!r} is outside the video "
                                 f"(frames 0..{num_frames - 1})")
            _finite(f"conditioning_strengths[{i}] ({path})", strength, 0, 1, "in [0, 1]")
            try:
                if is_video(path):
                    video, _ = read_video(path)  # (3, F, H, W) in [-1, 1]
                    video = torch.nn.functional.interpolate(video.transpose(0, 1), size=(height, width),
                                                            mode="bilinear", align_corners=False).transpose(0, 1)
                    pixels = video[None]
                else:
                    pixels = load_image(path, height, width, official)
            except MediaError as e:
                raise ValueError(f"cannot read conditioning media {e}") from None
            out.append(ConditioningItem(pixels, frame, float(strength)))
    for i, it in enumerate(out):
        _finite(f"conditioning item {i} strength", it.strength, 0, 1, "in [0, 1]")
        check_finite(it.pixels.float(), f"conditioning item {i} pixels")
    return out


def control_guides(control, *, num_frames: int, temporal: int, downscale: int | None = None,
                   size: tuple[int, int] | None = None) -> tuple[list[GuideItem], list[str]]:
    """(GuideItems, notes) from `control`: GuideItems, paths, or dicts {path, strength=1, frame=0, downscale}.

    A video is read up to the frames left after `frame` and cut to the longest temporal * k + 1 frames (a note
    says so); an image is a one-frame guide. `downscale` (the LoRAs' factor, else 1) applies where a dict gives
    none. Values are checked here (one error naming the entry); sizes against the video in `check_request`.
    `size` (height, width) of the video: a control of another aspect ratio gets a note (it is stretched)."""
    out, notes = [], []
    for i, spec in enumerate(control or ()):
        if isinstance(spec, GuideItem):
            out.append(spec)
            continue
        if isinstance(spec, str | os.PathLike):
            spec = {"path": spec}
        if not isinstance(spec, dict) or "path" not in spec:
            raise ValueError(f"control[{i}] must be a GuideItem, a path or {{path, strength, frame, downscale}}, got "
                             f"{spec!r}")
        unknown = sorted(set(spec) - {"path", "strength", "frame", "downscale"})
        if unknown:
            raise ValueError(f"control[{i}]: unknown keys {unknown}; valid: path, strength, frame, downscale")
        path = Path(spec["path"]).expanduser()
        strength = _finite(f"control[{i}] strength", spec.get("strength", 1.0), 0, 1, "in [0, 1] (IC-LoRAs: 1)")
        frame = spec.get("frame", 0)
        if isinstance(frame, bool) or not isinstance(frame, int) or not 0 <= frame < num_frames:
            raise ValueError(f"control[{i}] ({path}): frame {frame!r} is outside the video (frames "
                             f"0..{num_frames - 1})")
        d = spec.get("downscale")
        d = (downscale or 1) if d is None else d
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(f"control[{i}] ({path}): downscale {d!r} must be an integer >= 1 (the reference's size "
                             "is the video's / downscale)")
        try:
            if is_video(path):
                pixels, _ = read_video(path, max_frames=num_frames - frame)  # (3, F, H, W) in [0, 1]
            else:
                pixels = read_image(path)[:, None]
        except MediaError as e:
            raise ValueError(f"cannot read control video {e}") from None
        n, h, w = pixels.shape[1:]
        if size is not None and abs((w / h) / (size[1] / size[0]) - 1) > 0.01:
            notes.append(f"control[{i}] {path.name} is {w}x{h}, the video {size[1]}x{size[0]}: it is stretched to the "
                         "video's aspect ratio (crop it to match for aligned control)")
        keep = (n - 1) // temporal * temporal + 1
        if keep != n:
            notes.append(f"control[{i}] {path.name}: {n} frames; using the first {keep} (guides need "
                         f"{temporal}k + 1 frames)")
        pixels = check_finite(pixels[:, :keep] * 2 - 1, f"control[{i}] pixels")[None]
        out.append(GuideItem(pixels, float(strength), frame, d))
    return out, notes


def segment_guides(guides: Sequence[GuideItem], num_segments: int, segment_frames: int, overlap: int,
                   temporal: int) -> list[list[GuideItem]]:
    """Each chained segment's share of the guides (`ltx.ltxv.conditioning.slice_guide`); one list per segment."""
    if num_segments == 1:
        return [list(guides)]
    step = segment_frames - overlap
    return [[p for g in guides if (p := slice_guide(g, k * step, segment_frames, temporal)) is not None]
            for k in range(num_segments)]


def check_segments(dit: DiTConfig, vae: VAEConfig, sampling: SamplingDefaults, sched: SchedulerSpec, *, height: int,
                   width: int, num_frames: int, items, has_negative: bool, guides: Sequence[GuideItem],
                   num_segments: int = 1, overlap: int = 9) -> list[Tensor]:
    """`check_request` for every chained segment with its slice of the guides (the first with the conditioning
    items); returns the sigmas of each pass. Errors of a later segment name it."""
    per_segment = segment_guides(guides, num_segments, num_frames, overlap, vae.temporal_factor)
    sigmas = check_request(dit, vae, sampling, sched, height=height, width=width, num_frames=num_frames, items=items,
                           has_negative=has_negative, guides=per_segment[0])
    for k, g in enumerate(per_segment[1:], start=1):
        try:
            check_request(dit, vae, sampling, sched, height=height, width=width, num_frames=num_frames,
                          has_negative=has_negative, guides=g)
        except ValueError as e:
            raise ValueError(f"segment {k}: {e}") from None
    return sigmas


def generate(pipe: Pipeline, text: TextConditioning, req: Request, generator, *, tiled: bool = False,
             progress=None) -> Tensor:
    """Frames (B, 3, F, H, W) in [0, 1] of a validated request (`Pipeline.check`) for encoded prompts, on a
    loaded pipeline; NonFiniteError when the sampler or the decoder produced NaN / inf."""
    frames, _ = run_request(pipe, text, dataclasses.replace(req, output_type="pt"), generator, tiled=tiled,
                            progress=progress)
    return frames


def run_request(pipe: Pipeline, text: TextConditioning, req: Request, generator, *, tiled: bool = False,
                progress=None, callback=None, forward_rows: list[int] | None = None) -> tuple[Tensor | None, Tensor]:
    """(frames or None, latents) of a validated request; non-finite latents or frames raise NonFiniteError."""
    s = req.sampling
    hint = ("lower the guidance / STG scales, or sample in float32" if pipe.dtype != torch.float32 else
            "lower the guidance / STG scales")
    common = dict(height=req.height, width=req.width, fps=req.frame_rate, generator=generator, items=req.items,
                  guides=req.guides)
    if req.num_segments > 1:
        if req.output_type == "latent":
            raise ValueError("output_type='latent' is not available for chained segments (num_segments > 1)")
        frames = generate_chain(pipe.dit, pipe.vae, text, s, pipe.scheduler, num_segments=req.num_segments,
                                segment_frames=req.num_frames, overlap=req.segment_overlap, noise_mix=req.noise_mix,
                                upsampler=pipe.upsampler, image_cond_noise_scale=req.image_cond_noise_scale,
                                tiled_vae=tiled, progress=progress, **common)
        return check_finite(frames, "the generated frames", hint), None
    opts = PassOptions(stg_mode=s.stg_mode, stochastic=s.stochastic_sampling,
                       image_cond_noise_scale=req.image_cond_noise_scale, progress=progress, callback=callback,
                       forward_rows=forward_rows if forward_rows is not None else [])
    if s.pipeline_type is PipelineType.multi_scale:
        latents = generate_multiscale(pipe.dit, pipe.vae, pipe.upsampler, text, s.first_pass, s.second_pass,
                                      pipe.scheduler, num_frames=req.num_frames, downscale_factor=s.downscale_factor,
                                      opts=opts, tiled_vae=tiled, **common)
    else:
        latents = denoise_pass(pipe.dit, pipe.vae, text, s.first_pass, pipe.scheduler, num_frames=req.num_frames,
                               opts=opts, tiled_vae=tiled, **common)
    check_finite(latents, "the sampled latents", hint)
    if req.output_type == "latent":
        return None, latents
    last = s.second_pass or s.first_pass
    frames = tile_parallel_decode(pipe.vae, lambda: decode(  # tiles spread over ranks where parallel=sp marked it
        pipe.vae, latents, decode_timestep=s.decode_timestep, decode_noise_scale=s.decode_noise_scale,
        tone_map_ratio=last.tone_map_compression_ratio, tiled=tiled, finite=True))
    return resize_frames(frames, req.height, req.width), latents


# ------------------------------------------------------------------------------------------------ entry points


def open_pipeline(checkpoint: str | os.PathLike | None = None, *, model: str | os.PathLike | ModelPreset | None = None,
                  vae: str | os.PathLike | None = None, upsampler: str | os.PathLike | None = None,
                  text_encoder: str | os.PathLike | None = None, loras: Sequence = ()) -> Pipeline:
    """A pipeline with modules on `meta`, every header and LoRA checked; `.load()` loads the weights.

    checkpoint: transformer (+ VAE) file (official single file, ltx file or diffusers folder); None = the
    preset's bundled weights (the demo). model: a preset name (configs/model/<name>.yaml), a path to one, or a
    ModelPreset; None = the demo ("ltx-demo"). loras: paths, (path, strength) pairs or {path, strength} dicts.
    """
    preset = model if isinstance(model, ModelPreset) else load_preset(model or "ltx-demo")
    preset.require_ltx_video("ltx.load_pipeline")
    checkpoint, text_encoder = preset.local_weights(checkpoint, text_encoder)
    multi = preset.sampling.pipeline_type is PipelineType.multi_scale
    checkpoints = open_checkpoints(checkpoint, vae, upsampler, multi_scale=multi,
                                   upsampler_name=preset.sampling.spatial_upscaler or "spatial upscaler")
    dit_cfg = checkpoints[0].components["dit"].config
    check_architecture(preset, dit_cfg, checkpoints[1].components["vae"].config)
    return Pipeline.opened(preset, checkpoints, loras=open_loras(loras, dit_cfg), text_encoder=text_encoder)


def open_loras(loras: Sequence, dit: DiTConfig) -> list[tuple[LoRASpec, object]]:
    """(spec, LoRAWeights) per LoRA (paths, (path, strength) pairs or {path, strength} dicts, or specs with
    .path / .strength), each read (small files) and checked against the transformer built on `meta`; errors
    name loras[i]."""
    specs = _lora_specs(loras)
    if not specs:
        return []
    with torch.device("meta"):
        model = DiT(dit)
    opened = []
    for i, spec in enumerate(specs):
        weights = load_lora_file(_exists(spec.path, f"loras[{i}]"))
        try:
            check_lora(model, weights)
        except ValueError as e:  # unreadable, not a LoRA, or not for this transformer
            raise CheckpointError(f"loras[{i}]: {e}") from None
        opened.append((spec, weights))
    return opened


def load_pipeline(checkpoint: str | os.PathLike | None = None, *, model=None, vae=None, upsampler=None,
                  text_encoder=None, loras: Sequence = (), device: str | torch.device = "auto",
                  dtype: str | torch.dtype | None = None) -> Pipeline:
    """`open_pipeline(...).load(device, dtype)`: see both."""
    resolve_device(device, dtype)  # an unavailable device fails before anything is read
    return open_pipeline(checkpoint, model=model, vae=vae, upsampler=upsampler, text_encoder=text_encoder,
                         loras=loras).load(device, dtype)
