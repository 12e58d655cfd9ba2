"""Schema of a released-model preset: architecture plus the official sampling defaults of that release.

The values live in `configs/model/*.yaml` (one file per release, read by the Hydra apps); this file only
defines their shape. Field names follow the official pipeline YAMLs (github.com/Lightricks/LTX-Video,
`configs/*.yaml`) so that a preset can be checked line by line against them.

Guidance values are lists indexed by `guidance_timesteps` (the official per-step schedules of the 13B dev
configs): step with timestep t uses entry j = the first i with guidance_timesteps[i] <= t (else the last).
A constant setting is a one-element list.

The checkpoint's own metadata stays authoritative for the architecture: loading a checkpoint against a
preset whose `dit` differs raises with the differing fields (ltx.ltxv.checkpoint.load_component).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from ltx.ltx2.pipelines import AVPipeline
from ltx.ltxv.transformer import DiTConfig, STGMode


class PipelineType(Enum):
    base = "base"  # one pass at the requested size
    multi_scale = "multi_scale"  # low-res pass, latent x2 upsample, refining pass (official "multi-scale")


@dataclass(kw_only=True)
class PassConfig:
    """One denoising pass (the official `first_pass` / `second_pass` blocks, or the whole base pipeline)."""

    num_inference_steps: int | None = None  # None when `timesteps` is given
    timesteps: list[float] | None = None  # explicit sigma list (distilled checkpoints)
    # a scalar or a one-entry list (a flat block list) = that value at every breakpoint; stored as lists
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
        # scalars (and a flat block list) mean the same value at every breakpoint, as in the official configs
        n = len(self.guidance_timesteps) if _is_list(self.guidance_timesteps) else 1
        for name in ("guidance_scale", "stg_scale", "rescaling_scale"):
            value = getattr(self, name)
            value = list(value) if _is_list(value) else [value]
            setattr(self, name, value * n if len(value) == 1 else value)
        blocks = self.skip_block_list
        if not _is_list(blocks):
            raise ValueError(f"skip_block_list must be a list of block indices (or one list per guidance_timesteps "
                             f"entry), got {blocks!r}")
        if all(not _is_list(b) for b in blocks):  # [19, 20]: the same blocks at every breakpoint
            blocks = [list(blocks)] * n
        elif len(blocks) == 1:
            blocks = list(blocks) * n
        elif not all(_is_list(b) for b in blocks):
            raise ValueError(f"skip_block_list mixes block indices and lists: {blocks!r}; give [i, j] or [[i], [j]]")
        self.skip_block_list = [list(b) for b in blocks]
        check_pass(self)


def _is_list(x: object) -> bool:
    return isinstance(x, list | tuple)


def _number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _count(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_pass(p: PassConfig) -> None:
    """Every value of a pass is finite and in range; ValueError naming the field, the value and what is valid."""
    if (p.num_inference_steps is None) == (p.timesteps is None):
        raise ValueError("a pass needs exactly one of num_inference_steps or timesteps")
    if p.num_inference_steps is not None and not (_count(p.num_inference_steps) and p.num_inference_steps >= 1):
        raise ValueError(f"num_inference_steps must be a positive integer, got {p.num_inference_steps!r}")
    if p.timesteps is not None:
        t = p.timesteps
        if not _is_list(t) or not t or not all(_number(v) and 0 < v <= 1 for v in t) or any(
                a <= b for a, b in zip(t, t[1:])):
            raise ValueError(f"timesteps must be a non-empty, strictly descending list of sigmas in (0, 1], got {t!r}")
    if p.guidance_timesteps is not None:
        g = p.guidance_timesteps
        if not _is_list(g) or not g or not all(_number(v) and 0 <= v <= 1 for v in g):
            raise ValueError(f"guidance_timesteps must be a non-empty list of sigmas in [0, 1], got {g!r}")
    n = len(p.guidance_timesteps) if p.guidance_timesteps is not None else 1
    ranges = {"guidance_scale": (1.0, math.inf, "finite and >= 1 (1 = off)"),
              "stg_scale": (0.0, math.inf, "finite and >= 0 (0 = off)"),
              "rescaling_scale": (0.0, 1.0, "in [0, 1] (1 = off)")}
    for name, (lo, hi, valid) in ranges.items():
        values = getattr(p, name)
        if len(values) != n:
            raise ValueError(f"{name} has {len(values)} entries; it needs one per guidance_timesteps entry ({n})")
        bad = [v for v in values if not (_number(v) and lo <= v <= hi)]
        if bad:
            raise ValueError(f"{name} must be {valid}, got {values!r}")
    if len(p.skip_block_list) != n:
        raise ValueError(f"skip_block_list has {len(p.skip_block_list)} entries; it needs one per "
                         f"guidance_timesteps entry ({n})")
    for blocks in p.skip_block_list:
        if not all(_count(b) and b >= 0 for b in blocks):
            raise ValueError(f"skip_block_list entries must be non-negative block indices, got {p.skip_block_list!r}")
    for name in ("skip_initial_inference_steps", "skip_final_inference_steps"):
        v = getattr(p, name)
        if not (_count(v) and v >= 0):
            raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    if not isinstance(p.cfg_star_rescale, bool):
        raise ValueError(f"cfg_star_rescale must be true or false, got {p.cfg_star_rescale!r}")
    if not (_number(p.tone_map_compression_ratio) and 0 <= p.tone_map_compression_ratio <= 1):
        raise ValueError(f"tone_map_compression_ratio must be in [0, 1] (0 = off), got "
                         f"{p.tone_map_compression_ratio!r}")


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
        if self.pipeline_type is PipelineType.multi_scale and not (
                _number(self.downscale_factor) and 0 < self.downscale_factor < 1):
            raise ValueError(f"downscale_factor must be in (0, 1) for a multi-scale preset, got "
                             f"{self.downscale_factor!r}")
        for name in ("decode_timestep", "decode_noise_scale"):
            v = getattr(self, name)
            if not (_number(v) and 0 <= v <= 1):
                raise ValueError(f"{name} must be in [0, 1], got {v!r}")


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
class AVGuidance:
    """One modality's multi-modal guidance (official `MultiModalGuiderParams`): CFG, STG on `stg_blocks`,
    rescale (0 = off), modality-isolation guidance (1 = off)."""

    cfg_scale: float = 1.0
    stg_scale: float = 0.0
    stg_blocks: list[int] = field(default_factory=list)
    rescale_scale: float = 0.0
    modality_scale: float = 1.0
    skip_step: int = 0

    def __post_init__(self):
        for name, lo, hi, valid in (("cfg_scale", 0.0, math.inf, ">= 0 (1 = off)"),
                                    ("stg_scale", 0.0, math.inf, ">= 0 (0 = off)"),
                                    ("rescale_scale", 0.0, 1.0, "in [0, 1] (0 = off)"),
                                    ("modality_scale", 0.0, math.inf, ">= 0 (1 = off)")):
            v = getattr(self, name)
            if not (_number(v) and lo <= v <= hi):
                raise ValueError(f"{name} must be finite and {valid}, got {v!r}")
        if not all(_count(b) and b >= 0 for b in self.stg_blocks):
            raise ValueError(f"stg_blocks must be block indices >= 0, got {self.stg_blocks!r}")
        if not (_count(self.skip_step) and self.skip_step >= 0):
            raise ValueError(f"skip_step must be an integer >= 0, got {self.skip_step!r}")


@dataclass(kw_only=True)
class AVDefaults:
    """An LTX-2 release: which official pipeline, its schedule and guidance (ltx_pipelines/utils/constants.py),
    and the companion files. The checkpoint's metadata stays authoritative for the architecture."""

    model_version: str  # "2" (LTX-2, 19B), "2.3" or "2.5" (22B): checked against the file's model_version
    pipeline: AVPipeline = AVPipeline.two_stage
    num_inference_steps: int | None = None  # guided stage 1 (LTX2Scheduler); None for the distilled pipeline
    sigmas: list[float] | None = None  # the distilled stage-1 sigma list instead
    stage_2_sigmas: list[float] | None = None  # two-stage / distilled refine pass (official: 3 steps)
    video: AVGuidance = field(default_factory=AVGuidance)
    audio: AVGuidance = field(default_factory=AVGuidance)
    distilled_lora: str | None = None  # official file name (two-stage: merged into the stage-2 transformer)
    distilled_lora_strength: float = 1.0  # in stage 2
    stage_1_lora_strength: float = 0.0  # the distilled LoRA in stage 1 too (hq: 0.25, with 0.5 in stage 2)
    spatial_upscaler: str | None = None  # official file name (two-stage and distilled)
    temporal_upscaler: str | None = None  # official file name (LTX-2.5 DFR's temporal refine rounds)
    detailing_lora: str | None = None  # official file name (LTX-2.5 DFR's optional x2 detailing IC-LoRA, stage 2)
    text_encoder: str = "google/gemma-3-12b-it-qat-q4_0-unquantized"  # Hugging Face repo, for reference only
    # conditioning images go through one H.264 frame at this CRF (0 = off); None = the checkpoint's generation's
    # (ltx.ltx2.text.default_image_crf: 33 before LTX-2.5, 18 from it, as ltx-pipelines 1.2 `detect_params`)
    image_crf: int | None = None

    def __post_init__(self):
        two = self.pipeline.two_stages
        if self.pipeline in (AVPipeline.distilled, AVPipeline.dfr):
            if self.sigmas is None or self.num_inference_steps is not None:
                raise ValueError(f"a {self.pipeline.value} preset gives `sigmas` (and no num_inference_steps)")
        elif (self.num_inference_steps is None) or not (_count(self.num_inference_steps)
                                                        and self.num_inference_steps >= 1):
            raise ValueError(f"num_inference_steps must be a positive integer for the {self.pipeline.value} "
                             f"pipeline, got {self.num_inference_steps!r}")
        for name in ("sigmas", "stage_2_sigmas"):
            t = getattr(self, name)
            if t is not None and (not t or not all(_number(v) and 0 <= v <= 1 for v in t)
                                  or any(a <= b for a, b in zip(t, t[1:])) or t[-1] != 0):
                raise ValueError(f"{name} must be a strictly descending list of sigmas in [0, 1] ending in 0, "
                                 f"got {t!r}")
        if two and self.stage_2_sigmas is None:
            raise ValueError(f"the {self.pipeline.value} pipeline needs stage_2_sigmas")
        for name in ("distilled_lora_strength", "stage_1_lora_strength"):
            if not (_number(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.stage_1_lora_strength and not self.pipeline.uses_distilled_lora:
            raise ValueError("stage_1_lora_strength needs a pipeline with a distilled LoRA (two_stage or hq)")
        if self.stage_1_lora_strength and self.pipeline is AVPipeline.dfr:
            raise ValueError("the dfr pipeline fuses the distilled LoRA at distilled_lora_strength into every pass; "
                             "give no stage_1_lora_strength")
        if self.image_crf is not None and not (_count(self.image_crf) and 0 <= self.image_crf <= 51):
            raise ValueError(f"image_crf must be an integer in [0, 51] (0 = off), got {self.image_crf!r}")


@dataclass(kw_only=True)
class ModelPreset:
    """A released model. LTX-Video 0.9.x presets fill `dit`, `vae` and `sampling`; LTX-2 presets fill `av`."""

    name: str
    checkpoint: str  # official single-file name (Hugging Face Lightricks/LTX-Video or LTX-2), for reference only
    dit: DiTConfig | None = None
    vae: str | None = None  # VAE layout version: "0.9.0", "0.9.1" or "0.9.5" (0.9.5 to 0.9.8)
    sampling: SamplingDefaults | None = None
    av: AVDefaults | None = None  # LTX-2 / LTX-2.3
    generation: GenerationDefaults = field(default_factory=GenerationDefaults)

    def __post_init__(self):
        video = [n for n in ("dit", "vae", "sampling") if getattr(self, n) is not None]
        if self.av is not None and video:
            raise ValueError(f"preset {self.name!r} mixes an LTX-2 `av` section with LTX-Video fields {video}")
        if self.av is None and len(video) != 3:
            missing = sorted({"dit", "vae", "sampling"} - set(video))
            raise ValueError(f"preset {self.name!r}: an LTX-Video preset needs {missing} (or `av` for LTX-2)")

    @property
    def is_ltx2(self) -> bool:
        return self.av is not None

    def local_weights(self, checkpoint: str | os.PathLike | None, text_encoder: str | os.PathLike | None
                      ) -> tuple[Path | str | os.PathLike, Path | str | os.PathLike | None]:
        """(checkpoint, text encoder folder or packed file): the given ones, else the preset's bundled files (the demos,
        `generation.checkpoint_path` / `text_encoder_path`, relative to `config_root()`); missing bundled weights
        are refused with the preset's `weights_hint` (how to make them)."""
        g = self.generation

        def local(path):
            return None if path is None else Path(path) if Path(path).is_absolute() else config_root() / path

        if checkpoint is None:
            checkpoint = local(g.checkpoint_path)
            if checkpoint is None:
                raise ValueError(f"no checkpoint given; the {self.name} preset's official file is {self.checkpoint}")
            if not Path(checkpoint).exists() and g.weights_hint:
                raise FileNotFoundError(f"the bundled weights {checkpoint} are missing; {g.weights_hint}")
        if text_encoder is None:
            text_encoder = local(g.text_encoder_path)
        te = None if text_encoder is None else Path(text_encoder).expanduser()
        if te is not None and not te.is_dir() and not (te.is_file() and te.suffix == ".safetensors"):
            raise FileNotFoundError(f"text encoder {text_encoder} does not exist (give a Gemma folder, or LTX-2.5's "
                                    "packed text-encoder .safetensors file)")
        return checkpoint, text_encoder

    def require_ltx_video(self, what: str) -> None:
        """Refuse an LTX-2 preset where only the 0.9.x models are supported, naming the alternatives."""
        if self.is_ltx2:
            names = [n for n in preset_names() if not n.startswith(("ltx-2", "ltx2"))]
            raise ValueError(f"model={self.name} is an LTX-2 preset; {what} supports the LTX-Video 0.9.x presets "
                             f"({', '.join(names)})")


# ------------------------------------------------------------------------------------------------ loading


def config_root() -> Path:
    """The folder holding `configs/` and the bundled `demo/` weights: the repository checkout, or
    `<prefix>/share/ltx` for a wheel install (pyproject's data-files); `LTX_HOME` overrides both."""
    import os
    import sys

    if os.environ.get("LTX_HOME"):
        return Path(os.environ["LTX_HOME"]).expanduser()
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "configs" / "model").is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "ltx"


def preset_names() -> list[str]:
    return sorted(p.stem for p in (config_root() / "configs" / "model").glob("*.yaml"))


def load_preset(model: str | os.PathLike) -> ModelPreset:
    """A preset by name (configs/model/<name>.yaml) or by path to such a YAML; errors name the file and field."""
    import yaml

    path = Path(model).expanduser()
    if path.suffix not in (".yaml", ".yml"):
        path = config_root() / "configs" / "model" / f"{model}.yaml"
        if not path.is_file():
            raise ValueError(f"no model preset {model!r}; presets: {', '.join(preset_names())} (or a path to a "
                             f"preset .yaml)")
    elif not path.is_file():
        raise FileNotFoundError(f"model preset {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: not a readable YAML file ({str(e).splitlines()[0]})") from None
    try:
        return from_dict(ModelPreset, data)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None


def from_dict(cls: type, data: object, where: str = "") -> object:
    """Build the (nested) dataclass `cls` from plain YAML/JSON data, checking keys and types; errors name the
    dotted field. Enums are given by value, tuples and lists by lists, optional fields may be null."""
    import dataclasses
    import types
    import typing

    def build(tp, value, at: str):
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin in (typing.Union, types.UnionType):
            if value is None and type(None) in args:
                return None
            inner = [a for a in args if a is not type(None)]
            return build(inner[0], value, at)
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ValueError(f"{at or 'the file'} must be a mapping of {tp.__name__} fields, got {value!r}")
            hints = typing.get_type_hints(tp)
            names = {f.name for f in dataclasses.fields(tp) if f.init}
            unknown = sorted(set(value) - names)
            if unknown:
                raise ValueError(f"unknown field(s) {[f'{at}.{k}'.lstrip('.') for k in unknown]}; "
                                 f"{tp.__name__} has {sorted(names)}")
            kwargs = {k: build(hints[k], v, f"{at}.{k}".lstrip(".")) for k, v in value.items()}
            try:
                return tp(**kwargs)
            except TypeError as e:  # a required field missing
                raise ValueError(f"{at or tp.__name__}: {e}") from None
        if isinstance(tp, type) and issubclass(tp, Enum):
            try:
                return tp(value)
            except ValueError:
                raise ValueError(f"{at} must be one of {[m.value for m in tp]}, got {value!r}") from None
        if origin in (list, tuple):
            if not isinstance(value, list | tuple):
                raise ValueError(f"{at} must be a list, got {value!r}")
            if origin is tuple and args and args[-1] is not Ellipsis:
                return tuple(build(a, v, f"{at}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
            item = args[0] if args else object
            out = [build(item, v, f"{at}[{i}]") for i, v in enumerate(value)]
            return tuple(out) if origin is tuple else out
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{at} must be a number, got {value!r}")
            return float(value)
        if tp in (int, bool, str):
            if type(value) is not tp:
                raise ValueError(f"{at} must be {tp.__name__}, got {value!r}")
            return value
        return value

    return build(cls, data, where)
