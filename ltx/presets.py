"""Schema of a released-model preset: architecture plus the official sampling defaults of that release.

The values live in `configs/model/*.yaml` (one file per release, read by the Hydra apps); this file only
defines their shape. Field names follow the official pipeline YAMLs (github.com/Lightricks/LTX-Video,
`configs/*.yaml`) so that a preset can be checked line by line against them.

Guidance values are lists indexed by `guidance_timesteps` (the official per-step schedules of the 13B dev
configs): step with timestep t uses entry j = the first i with guidance_timesteps[i] <= t (else the last).
A constant setting is a one-element list.

The checkpoint's own metadata stays authoritative for the architecture: loading a checkpoint against a
preset whose `dit` differs raises with the differing fields (ltx.convert.formats.load_component).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from ltx.models.dit import DiTConfig, STGMode


class PipelineType(Enum):
    base = "base"  # one pass at the requested size
    multi_scale = "multi_scale"  # low-res pass, latent x2 upsample, refining pass (official "multi-scale")


@dataclass(kw_only=True)
class PassConfig:
    """One denoising pass (the official `first_pass` / `second_pass` blocks, or the whole base pipeline)."""

    num_inference_steps: int | None = None  # None when `timesteps` is given
    timesteps: list[float] | None = None  # explicit sigma list (distilled checkpoints)
    guidance_scale: list[float] = field(default_factory=lambda: [1.0])  # CFG; 1 = off
    stg_scale: list[float] = field(default_factory=lambda: [0.0])  # STG; 0 = off
    rescaling_scale: list[float] = field(default_factory=lambda: [1.0])  # STG rescale; 1 = off
    guidance_timesteps: list[float] | None = None  # breakpoints for the lists above
    skip_block_list: list[list[int]] = field(default_factory=lambda: [[]])  # STG blocks per breakpoint
    skip_initial_inference_steps: int = 0
    skip_final_inference_steps: int = 0
    cfg_star_rescale: bool = False
    tone_map_compression_ratio: float = 0.0  # 0 = off (0.9.8 13B distilled second pass: 0.6)

    def __post_init__(self):
        if (self.num_inference_steps is None) == (self.timesteps is None):
            raise ValueError("a pass needs exactly one of num_inference_steps or timesteps")
        lists = {
            "guidance_scale": self.guidance_scale,
            "stg_scale": self.stg_scale,
            "rescaling_scale": self.rescaling_scale,
            "skip_block_list": self.skip_block_list,
        }
        n = len(self.guidance_timesteps) if self.guidance_timesteps is not None else 1
        bad = {k: len(v) for k, v in lists.items() if len(v) != n}
        if bad:
            raise ValueError(f"guidance lists must have one entry per guidance_timesteps entry ({n}); got {bad}")


@dataclass(kw_only=True)
class SamplingDefaults:
    pipeline_type: PipelineType = PipelineType.base
    first_pass: PassConfig
    second_pass: PassConfig | None = None  # multi-scale only
    downscale_factor: float | None = None  # multi-scale: first pass at floor32(int(size * factor))
    spatial_upscaler: str | None = None  # multi-scale: official upsampler file name
    stg_mode: STGMode = STGMode.attention_values
    stochastic_sampling: bool = False
    decode_timestep: float = 0.05
    decode_noise_scale: float = 0.025

    def __post_init__(self):
        if (self.pipeline_type is PipelineType.multi_scale) != (self.second_pass is not None):
            raise ValueError("multi-scale presets need a second_pass; base presets must not have one")


@dataclass(kw_only=True)
class GenerationDefaults:
    """What `infer.generate` uses where the command line says nothing (official: inference.py defaults)."""

    height: int = 704
    width: int = 1216
    num_frames: int = 121
    fps: float = 30.0
    negative_prompt: str = "worst quality, inconsistent motion, blurry, jittery, distorted"
    text_tokens: int = 256  # prompt length in tokens (official T5: 256)
    # Local default weights (the bundled demo model), relative to the repository root; None = must be given.
    checkpoint_path: str | None = None
    text_encoder_path: str | None = None
    prompt_vocabulary: str | None = None  # "shapes": warn about prompt words the ShapesWorld demo never saw
    # How to make missing default weights (the demo: the commands that train them); said in the error message.
    weights_hint: str | None = None


@dataclass(kw_only=True)
class ModelPreset:
    name: str
    checkpoint: str  # official single-file name (Hugging Face Lightricks/LTX-Video), for reference only
    dit: DiTConfig
    vae: str  # VAE layout version: "0.9.0", "0.9.1" or "0.9.5" (0.9.5 to 0.9.8)
    sampling: SamplingDefaults
    generation: GenerationDefaults = field(default_factory=GenerationDefaults)
