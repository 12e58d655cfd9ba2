"""Generate videos from text (+ images / keyframes): a Hydra app over the Python API (parse the options -> the
family's API, `ltx.ltxv.api` or `ltx.ltx2.api` via infer/generate_ltx2.py -> write the files).

    python -m infer.generate model=ltxv-2b-0.9.8-distilled checkpoint=/w/ltxv-2b-0.9.8-distilled.safetensors \
        upsampler_checkpoint=/w/ltxv-spatial-upscaler-0.9.8.safetensors text_encoder=/w/PixArt-XL-2-1024-MS \
        'prompts=["a red ball bounces on a wooden floor"]' height=704 width=1216 num_frames=121

IC-LoRA control (depth, pose, canny, your own): a control video guides the frames through an IC-LoRA,
    python -m infer.generate 'prompts=["..."]' 'loras=[{path: runs/control/lora.safetensors}]' \
        'control=[{path: depth.mp4, strength: 1.0}]'
(`frame`: where the control starts; `downscale`: its size is the video's / downscale, by default the LoRA's
`reference_downscale_factor` metadata). tools/make_control.py makes canny maps and packs depth / pose maps.

`model=<name>` picks configs/model/<name>.yaml: the architecture the checkpoint must have and the release's
official sampling defaults (schedule, guidance, multi-scale). `python -m infer.generate --help` lists every
option. The schema is `GenerateConfig` below; the YAML (configs/generate.yaml) holds values only, and the
config is converted once, in `main`; nothing under ltx/ sees OmegaConf.

Order of work: every check that can fail on bad input runs before any weights are loaded (sizes against the
VAE's factors, step counts against a distilled checkpoint's allowed timesteps, keyframe indices, readable
images, text encoder / embeddings present, LoRA module names and shapes, output folder free), reading only
checkpoint *headers* (and the small LoRA files). Then the prompts are encoded (and the text encoder is freed), the
transformer / VAE / upsampler are loaded (LoRAs merged into the transformer's weights, one line each printed), and
each video is written to <output_dir>/<run>/: `<k>_<prompt>.mp4` (H.264, yuv420p, PyAV), `.png` (a contact
sheet of evenly spaced frames, captioned with the prompt) and `.yaml` (the resolved config, the prompt, the
seed and the sigmas). A run folder is never overwritten: without `name` the next free `run_NNN` is used; an
existing `name` is refused unless `overwrite=true`.

Seeding follows the official inference script: torch.manual_seed(seed) (posterior samples, decode noise)
and a torch.Generator(device) seeded with `seed` (initial and conditioning noise).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import torch
from torch import Tensor

from infer.output import InputError, check_output, existing, output_folder, resolve_device, write_text
from infer.weights import load_weights, text_device
from ltx.core.checkpoint import CheckpointError
from ltx.core.media import MediaError, load_image, slug, write_contact_sheet, write_mp4
from ltx.core.media import crf_compress as crf_compress  # re-exported: the official image preprocessing
from ltx.core.media import gaussian_blur3 as gaussian_blur3
from ltx.core.offload import MODES as OFFLOAD_MODES
from ltx.core.parallel import Dist
from ltx.core.quant import LAYOUTS as QUANTIZE_LAYOUTS
from ltx.core.quant import PLAN_LAYOUTS
from ltx.core.sequence_parallel import start_parallel
from ltx.core.step_cache import CachePolicy, cached
from ltx.data.shapes import VOCABULARY, unknown_words
from ltx.ltxv import api
from ltx.ltxv.api import generate
from ltx.ltxv.checkpoint import Checkpoint
from ltx.ltxv.conditioning import ConditioningItem
from ltx.ltxv.guidance import TextConditioning
from ltx.ltxv.pipelines import passes, vae_scale
from ltx.ltxv.text import NORMALIZERS, T5TextEncoder, load_embeddings, text_normalizer, truncation_summary
from ltx.ltxv.transformer import DiTConfig
from ltx.ltxv.vae import VAEConfig
from ltx.plan import plan_memory
from ltx.presets import ModelPreset, PipelineType, SamplingDefaults, config_root


class Precision(Enum):
    auto = "auto"  # bfloat16 on CUDA (the official precision), float32 on CPU
    float32 = "float32"
    bfloat16 = "bfloat16"


@dataclass(kw_only=True)
class ConditioningSpec:
    """An image placed at pixel frame `frame` (0 = image-to-video; n > 0 = a keyframe) with `strength`."""

    path: str
    frame: int = 0
    strength: float = 1.0


@dataclass(kw_only=True)
class ControlSpec:
    """A control video (or image) for an IC-LoRA, aligned with the video from pixel frame `frame`, used at
    `strength` (1 = a fixed guide, as the official IC-LoRAs); `downscale` None = the LoRAs' metadata, else 1."""

    path: str
    strength: float = 1.0
    frame: int = 0
    downscale: int | None = None


PARALLEL = ("none", "sp")
PARALLEL_MODES = ("ulysses", "ring")


def check_parallel(cfg) -> None:
    """`parallel=sp` under `torchrun --nproc_per_node N -m infer.generate`: one video over N processes
    (ltx.core.sequence_parallel). Plain values, not a config group: the training apps own `parallel=ddp|fsdp`."""
    if cfg.parallel not in PARALLEL:
        raise InputError(f"parallel={cfg.parallel!r} is not supported by generate (supported: {', '.join(PARALLEL)})")
    if cfg.parallel_mode not in PARALLEL_MODES:
        raise InputError(f"parallel_mode={cfg.parallel_mode!r} is not supported (supported: "
                         f"{', '.join(PARALLEL_MODES)})")


@dataclass(kw_only=True)
class LoraSpec:
    """A LoRA for the transformer (any layout ltx.core.lora reads: ComfyUI, diffusers folder, trainer, ltx) and its
    strength (1 = as trained, 0 = off; negative values subtract it)."""

    path: str
    strength: float = 1.0

    def __post_init__(self):
        if not math.isfinite(self.strength):
            raise ValueError(f"lora {self.path}: strength must be a finite number, got {self.strength}")


@dataclass(kw_only=True)
class GenerateConfig:
    model: ModelPreset  # configs/model/<name>.yaml, chosen with model=<name>
    prompts: list[str] = field(default_factory=list)  # one video per prompt, sampled as one batch
    negative_prompt: str | None = None  # None: the preset's (official models: inference.py's default)
    checkpoint: str | None = None  # transformer (+ VAE) file: official single file, ltx file or diffusers folder
    # LTX-2: the transformer's weights from their own file (a community GGUF, a quantized single file); the
    # checkpoint (bundle) gives its config and the other components
    transformer: str | None = None
    vae_checkpoint: str | None = None  # when the VAE is not in `checkpoint`
    upsampler_checkpoint: str | None = None  # latent upsampler (multi-scale presets)
    text_encoder: str | None = None  # local T5 folder (model + tokenizer, or text_encoder/ + tokenizer/)
    embeddings: str | None = None  # precomputed prompt embeddings (ltx.ltxv.text.save_embeddings): no T5 needed
    negative_embeddings: str | None = None  # the same for the negative prompt (needed for CFG without T5)
    # None: the preset's generation defaults (official models: 704 x 1216 x 121 at 30 fps; demo: 64 x 64 x 17)
    height: int | None = None
    width: int | None = None
    num_frames: int | None = None
    fps: float | None = None
    seed: int = 171198
    steps: int | None = None  # first-pass step count (replaces the preset's step count or timestep list)
    timesteps: list[float] | None = None  # first-pass sigma list instead (distilled students: their grid)
    guidance_scale: float | None = None  # first-pass overrides: CFG (1 = off)
    stg_scale: float | None = None  # STG (0 = off)
    rescaling_scale: float | None = None  # STG rescale (1 = off)
    stg_blocks: list[int] | None = None  # transformer blocks STG perturbs
    conditioning: list[ConditioningSpec] = field(default_factory=list)
    control: list[ControlSpec] = field(default_factory=list)  # IC-LoRA guides (control videos), see the docstring
    # merged into the transformer's weights right after it loads (one rounding to its dtype; sampling then costs
    # nothing extra); names and shapes are checked against the checkpoint's transformer before any weights load
    loras: list[LoraSpec] = field(default_factory=list)
    official_image_preprocessing: bool = True  # blur (3x3, sigma 1) + one-frame H.264 at CRF 29, as inference.py
    image_cond_noise_scale: float = 0.15  # official inference default
    segments: int = 1  # > 1: a long video of chained segments of num_frames each (ltx.ltxv.chain)
    segment_overlap: int = 9  # frames shared by consecutive segments (8k + 1)
    noise_mix: float = 0.5  # SLERP from the previous segment's noise to fresh noise (0 = same noise)
    # encode / decode in tiles (bounded memory, ltx.ltxv.vae_tiling); LTX-2.5: the diffusion decoder's decode
    # (vae_checkpoint=, ltx.ltx2.diffusion_decoder.DiffusionDecodeTiling's defaults)
    vae_tiling: bool = False
    offload: str = "none"  # none | model | blocks: CPU offload of components / transformer blocks (ltx.core.offload)
    offload_prefetch: int = 1  # offload=blocks: blocks copied ahead on a side CUDA stream
    vram_budget: str | None = None  # e.g. 24GB: the memory planner (ltx.plan) sets offload and vae_tiling to fit
    plan: bool = False  # print the memory plan for this request (vram_budget, default 24GB) and stop
    # the transformer quantized in memory after loading (fp8-scaled | fp8-cast | nvfp4 | gguf-q8_0 | gguf-q4_k | ...):
    # a bf16 checkpoint on a smaller card; vram_budget= sets it when the plan needs it
    quantize: str | None = None
    text_encoder_device: str = "auto"  # auto (= device) | cpu: T5 / Gemma run on the CPU (a card too small for them)
    # LTX-2: a local instruct Gemma rewrites each prompt into a detailed caption first (ltx.ltx2.enhance); the
    # original and the enhanced prompt go into the yaml. LTX-2 / 2.3 use their Gemma 3 text encoder; LTX-2.5 needs
    # prompt_enhancer= (a Gemma 4 instruct folder: its text encoder is not trained for it)
    enhance_prompt: bool = False
    prompt_enhancer: str | None = None
    # LTX-2.5 HDR output (ltx.ltx2.hdr, the official --hdr): the decoded video read as ACEScct codes, written as
    # half-float EXR frames in this colour space (srgb_linear | acescg | acescct) in `NN_<prompt>_hdr_exr/` and a
    # 10-bit BT.2020 / HLG HEVC master `NN_<prompt>_hdr.mp4`, beside the usual SDR mp4
    hdr: str | None = None
    cache: CachePolicy = field(default_factory=CachePolicy)  # cache=teacache|first_block: step caching (configs/cache)
    # one video over N processes: torchrun --nproc_per_node N -m infer.generate ... parallel=sp (every rank samples
    # with the same seed; rank 0 writes the files)
    parallel: str = "none"  # none | sp (ltx.core.sequence_parallel)
    parallel_mode: str = "ulysses"  # ulysses (all-to-all; heads divisible by the shard count) | ring (any count)
    parallel_cfg: bool = False  # guidance rows / passes over 2 groups, sequence parallel inside each (N even)
    parallel_vae: bool = True  # with vae_tiling=true: the decode's tiles spread over all N processes (0.9.x)
    device: str = "auto"  # auto = cuda if available, else cpu
    precision: Precision = Precision.auto
    output_dir: str = "outputs/generate"
    name: str | None = None  # run folder name under output_dir; default: the next free run_NNN
    overwrite: bool = False  # allow writing into an existing `name` folder
    contact_sheet_frames: int = 8
    # LTX-2 presets only (model=ltx-2-*): audio CFG, modality-isolation guidance (both streams), and the distilled
    # LoRA file that stage 2 of the two-stage pipeline fuses in (see infer/generate_ltx2.py)
    audio_guidance_scale: float | None = None
    modality_scale: float | None = None
    distilled_lora: str | None = None
    # LTX-2.5 DFR (model=ltx-2.5-22b-dfr): temporal x2 refine rounds (0-2; each doubles the frame rate) with the
    # temporal upscaler file, the optional x2 detailing IC-LoRA of stage 2, and the optional tiled x2 spatial epilogue
    # after the rounds (frames at twice height x width; off by default, as diffusers composes it only on request)
    temporal_rounds: int = 0
    spatial_epilogue: bool = False
    temporal_upsampler_checkpoint: str | None = None
    detailing_lora: str | None = None
    detailing_lora_strength: float = 1.0
    # the HDR IC-LoRA (model=ltx-2.3-22b-distilled / ltx-2.5-22b-distilled; the official HDRICLoraPipeline): the
    # SDR video of control=[{path: sdr.mp4}] regenerated as HDR light (LogC3), written as EXR frames (hdr=, default
    # srgb_linear) and the HLG master beside an sRGB preview mp4 (silent: the pipeline is video only)
    hdr_lora: str | None = None
    # with hdr_lora: the official high_quality_hdr mode, 2 num_frames - 1 frames generated from the SDR frames each
    # given twice, every other one kept (about 2x the work). Any height / width works with hdr_lora: generated at
    # each rounded up to a multiple of 64 and cropped back
    hdr_high_quality: bool = False
    # LTX-2 audio-to-video: a soundtrack (any file with an audio stream) kept as given; the video is generated
    # for it, starting `audio_start` seconds in
    audio: str | None = None
    audio_start: float = 0.0
    # LTX-2 video-to-audio (one-stage presets, e.g. model=ltx2-demo): a clip whose first num_frames frames are kept
    # (fitted to height x width); the soundtrack is generated for it
    video: str | None = None
    # a student of python -m train.distill: its run_dir (or its student.json). Its LoRA (or full model) is used, and
    # its sigma list without guidance unless steps / timesteps / guidance_scale are given. A LoRA in `loras` with a
    # student.json beside it that names it gets the same sampling defaults.
    student: str | None = None

    def __post_init__(self):
        """Every number finite and in range (NaN / inf never reach the sampler); the error names the option."""
        def check(name: str, value, ok: bool, valid: str) -> None:
            if value is not None and not ok:
                raise ValueError(f"{name}={value} is invalid: {valid}")

        def fin(v) -> bool:
            return v is None or math.isfinite(v)

        check("fps", self.fps, fin(self.fps) and (self.fps or 0) > 0, "give a positive number of frames per second")
        check("steps", self.steps, (self.steps or 0) >= 1, "give a positive integer")
        check("guidance_scale", self.guidance_scale, fin(self.guidance_scale)
              and (self.guidance_scale is None or self.guidance_scale >= 1),
              "give a finite CFG scale >= 1 (1 = off)")
        check("stg_scale", self.stg_scale, fin(self.stg_scale) and (self.stg_scale or 0) >= 0,
              "give a finite STG scale >= 0 (0 = off)")
        check("rescaling_scale", self.rescaling_scale, fin(self.rescaling_scale) and 0 <= (self.rescaling_scale or 0)
              <= 1, "give a value in [0, 1] (1 = off)")
        check("stg_blocks", self.stg_blocks, all(b >= 0 for b in self.stg_blocks or []), "give block indices >= 0")
        check("image_cond_noise_scale", self.image_cond_noise_scale, fin(self.image_cond_noise_scale) and
              0 <= self.image_cond_noise_scale <= 1, "give a value in [0, 1] (official 0.15)")
        check("seed", self.seed, 0 <= self.seed <= 2**63 - 1, "give an integer in [0, 2**63 - 1]")
        check("audio_guidance_scale", self.audio_guidance_scale, fin(self.audio_guidance_scale)
              and (self.audio_guidance_scale is None or self.audio_guidance_scale >= 1),
              "give a finite CFG scale >= 1 (1 = off)")
        check("modality_scale", self.modality_scale, fin(self.modality_scale)
              and (self.modality_scale is None or self.modality_scale >= 1),
              "give a finite scale >= 1 (1 = off)")
        check("audio_start", self.audio_start, fin(self.audio_start) and self.audio_start >= 0,
              "give a start time >= 0 seconds")
        check("temporal_rounds", self.temporal_rounds, 0 <= self.temporal_rounds <= 2,
              "give 0, 1 or 2 (LTX-2.5 DFR: each round doubles the frame rate)")
        check("detailing_lora_strength", self.detailing_lora_strength, fin(self.detailing_lora_strength),
              "give a finite LoRA strength (1.0 = as trained)")
        if self.audio is None and self.audio_start:
            raise ValueError(f"audio_start={self.audio_start} is for audio-to-video: give audio=FILE too (the "
                             "soundtrack it starts in)")
        check("contact_sheet_frames", self.contact_sheet_frames, 1 <= self.contact_sheet_frames <= 64,
              "give 1 to 64")
        check("segments", self.segments, self.segments >= 1, "give a positive integer (1 = one video)")
        check("noise_mix", self.noise_mix, fin(self.noise_mix) and 0 <= self.noise_mix <= 1, "give a value in [0, 1]")
        for name in ("height", "width", "num_frames"):
            v = getattr(self, name)
            check(name, v, (v or 0) >= 1, "give a positive integer")
        for i, c in enumerate(self.conditioning):
            if not 0.0 <= c.strength <= 1.0:
                raise ValueError(f"conditioning[{i}] ({c.path}): strength {c.strength} is outside [0, 1]")
            check(f"conditioning[{i}].frame", c.frame, c.frame >= 0, "give a pixel frame index >= 0")
        for i, c in enumerate(self.control):
            check(f"control[{i}].strength", c.strength, fin(c.strength) and 0 <= c.strength <= 1,
                  "give a value in [0, 1] (IC-LoRAs are used at 1)")
            check(f"control[{i}].frame", c.frame, c.frame >= 0, "give a pixel frame index >= 0")
            check(f"control[{i}].downscale", c.downscale, (c.downscale or 0) >= 1,
                  "give an integer >= 1 (the control's size is the video's / downscale), or leave it unset")
        for i, p in enumerate(self.prompts):
            if not p.strip():
                raise ValueError(f"prompts[{i}] is empty: the model would generate without a caption; write a "
                                 f"prompt (the demo's unconditional branch is its negative prompt \"\")")
        if self.name is not None and (not self.name.strip() or "/" in self.name or self.name in (".", "..")):
            raise ValueError(f"name={self.name!r} is invalid: give a folder name (no '/'), or leave it unset")


# ------------------------------------------------------------------------------------------------ checks


def pass_overrides(cfg: GenerateConfig) -> dict:
    """The command line's first-pass overrides as `Pipeline.check` arguments (official names). A scalar replaces
    a per-step guidance list at every breakpoint; `steps` replaces the step count or the timestep list (a
    distilled checkpoint then checks the resulting schedule)."""
    if cfg.steps is not None and cfg.timesteps is not None:
        raise InputError("give steps or timesteps, not both")
    given = {"num_inference_steps": cfg.steps,
             "timesteps": None if cfg.timesteps is None else [float(t) for t in cfg.timesteps],
             "guidance_scale": cfg.guidance_scale, "stg_scale": cfg.stg_scale, "rescaling_scale": cfg.rescaling_scale,
             "skip_block_list": None if cfg.stg_blocks is None else list(cfg.stg_blocks)}
    return {name: value for name, value in given.items() if value is not None}


def open_loras(cfg: GenerateConfig, dit_cfg: DiTConfig) -> list:
    """(LoraSpec, LoRAWeights) per LoRA: read (small files) and checked against the transformer built on meta."""
    try:
        return api.open_loras(cfg.loras, dit_cfg)
    except (CheckpointError, FileNotFoundError) as e:  # missing, unreadable, not a LoRA, or not for this model
        raise InputError(str(e)) from None


def open_checkpoints(cfg: GenerateConfig) -> tuple[Checkpoint, Checkpoint, Checkpoint | None]:
    """(transformer checkpoint, VAE checkpoint, upsampler checkpoint or None), headers only (ltx.ltxv.api), with the
    app's hints for missing files."""
    hint = f"pass checkpoint=/path/to/{cfg.model.checkpoint} (this preset's official file)"
    if cfg.model.generation.weights_hint:
        hint = cfg.model.generation.weights_hint
    existing(cfg.checkpoint, "checkpoint", hint)
    if cfg.vae_checkpoint is not None:
        existing(cfg.vae_checkpoint, "vae_checkpoint", "pass the VAE file or folder")
    multi = cfg.model.sampling.pipeline_type is PipelineType.multi_scale
    if multi:
        name = cfg.model.sampling.spatial_upscaler or "the spatial upscaler"
        existing(cfg.upsampler_checkpoint, "upsampler_checkpoint",
                f"the {cfg.model.name} preset is multi-scale: pass upsampler_checkpoint=/path/to/{name}")
    try:
        return api.open_checkpoints(cfg.checkpoint, cfg.vae_checkpoint, cfg.upsampler_checkpoint, multi_scale=multi)
    except CheckpointError as e:  # unreadable, or without the component this run needs
        raise InputError(str(e)) from None


def text_source(cfg: GenerateConfig, caption_channels: int) -> tuple[list[str], tuple[Tensor, Tensor] | None,
                                                                     tuple[Tensor, Tensor] | None]:
    """Prompts (captions), and the precomputed (context, mask) / negative ones when given; checks that a T5
    folder exists when they are not."""
    prompts = list(cfg.prompts)
    if cfg.embeddings is None:
        if not prompts:
            raise InputError("no prompts: pass 'prompts=[\"...\"]' (or embeddings=/path/to/embeddings.safetensors)")
        root = existing(cfg.text_encoder, "text encoder", cfg.model.generation.weights_hint or (
                       "pass text_encoder=/path/to/t5 (local T5 weights + tokenizer) or precomputed "
                       "embeddings=/path/to/embeddings.safetensors"))  # fmt: skip
        model_dir = root / "text_encoder" if (root / "text_encoder").is_dir() else root
        if not (model_dir / "config.json").is_file():
            raise InputError(f"text encoder {root} has no config.json (in it or in text_encoder/): not T5 weights")
        d_model = json.loads((model_dir / "config.json").read_text()).get("d_model")
        if d_model != caption_channels:
            raise InputError(f"text encoder width {d_model} != the transformer's caption_channels {caption_channels}")
        return prompts, None, None
    def read(path: str, what: str):
        try:
            e = load_embeddings(existing(path, what, "pass a file written by ltx.ltxv.text.save_embeddings"))
        except (ValueError, OSError, RuntimeError) as err:  # not safetensors, truncated, wrong tensors
            raise InputError(f"{what} {path} is not an embeddings file ({str(err).splitlines()[0]}); write one with "
                             f"ltx.ltxv.text.save_embeddings") from None
        for t, name in ((e[0], "context"), (e[1], "mask")):
            if not bool(torch.isfinite(t.float()).all()):
                raise InputError(f"{what} {path}: the {name} tensor holds NaN / inf values")
        return e

    pos = read(cfg.embeddings, "embeddings")
    neg = read(cfg.negative_embeddings, "negative_embeddings") if cfg.negative_embeddings is not None else None
    B = pos[0].shape[0]
    if prompts and len(prompts) != B:
        raise InputError(f"{len(prompts)} prompts but the embeddings file holds {B}; give one caption per row")
    prompts = prompts or [f"precomputed embeddings {i}" for i in range(B)]
    for what, e in (("embeddings", pos), ("negative_embeddings", neg)):
        if e is not None and e[0].shape[-1] != caption_channels:
            raise InputError(f"{what} have width {e[0].shape[-1]}; the transformer takes {caption_channels}")
    if neg is not None and neg[0].shape[0] not in (1, B):
        raise InputError(f"negative_embeddings hold {neg[0].shape[0]} rows; need 1 or {B}")
    return prompts, pos, neg


def conditioning_items(cfg: GenerateConfig) -> list[ConditioningItem]:
    for i, c in enumerate(cfg.conditioning):
        if not 0 <= c.frame < cfg.num_frames:
            raise InputError(f"conditioning[{i}] ({c.path}): frame {c.frame} is outside the video "
                             f"(frames 0..{cfg.num_frames - 1})")
    items = []
    for c in cfg.conditioning:
        try:
            image = load_image(c.path, cfg.height, cfg.width, cfg.official_image_preprocessing)
        except MediaError as e:
            raise InputError(f"cannot read conditioning image {e}") from None
        items.append(ConditioningItem(image, c.frame, c.strength))
    return items


def control_guides(cfg: GenerateConfig, loras: list, temporal: int):
    """(guides, notes): the control videos as guides (ltx.ltxv.api.control_guides), read before any weights load."""
    if not cfg.control:
        return [], []
    specs = []
    for i, c in enumerate(cfg.control):
        existing(c.path, f"control[{i}]", "pass an existing control video (or image); tools/make_control.py makes them")
        specs.append({"path": c.path, "strength": c.strength, "frame": c.frame, "downscale": c.downscale})
    total = cfg.num_frames * cfg.segments - cfg.segment_overlap * (cfg.segments - 1)
    try:
        guides, notes = api.control_guides(specs, num_frames=total, temporal=temporal, size=(cfg.height, cfg.width),
                                           downscale=api.reference_downscale([w for _, w in loras]))
    except ValueError as e:
        raise InputError(str(e)) from None
    if not cfg.loras:
        notes.append("control videos without a LoRA: the base model was not trained with guide tokens, so expect "
                     "them to be ignored or to disturb the video; pass the IC-LoRA with loras=[{path: ...}]")
    return guides, notes


def encode_text(cfg: GenerateConfig, prompts: list[str], pos, neg, needs_negative: bool, device, dtype):
    """TextConditioning (B rows) from precomputed embeddings or a T5 loaded (and freed) here."""
    B = len(prompts)
    views = None
    if pos is None:
        try:
            t5 = T5TextEncoder(cfg.text_encoder, device=text_device(cfg, device), dtype=dtype,
                               max_tokens=cfg.model.generation.text_tokens)
        except (OSError, ValueError) as e:  # a folder without usable weights / tokenizer
            raise InputError(f"text encoder {cfg.text_encoder} cannot be loaded: {str(e).splitlines()[0]}") from None
        views = t5.seen(prompts)
        cut = truncation_summary(views, t5.max_tokens)
        if cut:  # one line for the run, however many prompts are cut
            print(f"warning: {cut} (recorded as encoded_prompt)")
        pos = t5.encode(prompts)
        neg = t5.encode([cfg.negative_prompt] * B) if needs_negative else None
        del t5
    elif needs_negative and neg is None:
        raise InputError("CFG (guidance scale > 1) needs negative_embeddings when prompts are precomputed")

    def prep(e, rows: int):
        ctx, mask = e
        ctx, mask = ctx.to(device=device, dtype=dtype), mask.to(device)
        return (ctx.expand(rows, -1, -1), mask.expand(rows, -1)) if ctx.shape[0] == 1 else (ctx, mask)

    ctx, mask = prep(pos, B)
    n_ctx, n_mask = prep(neg, B) if neg is not None else (None, None)
    return TextConditioning(ctx, mask, n_ctx, n_mask), views


def needs_cfg(s: SamplingDefaults) -> bool:
    return any(g > 1 for p in passes(s) for g in p.guidance_scale)


def warn_vocabulary(vocabulary: str | None, prompts: list[str], with_loras: bool = False,
                    text_encoder: str | None = None) -> None:
    """Prompts outside a demo model's training vocabulary still generate; say so (unless LoRAs are applied,
    which may have taught the model new words). The words checked are what the model reads: the prompt after
    the text encoder's normalisation (the demo's: lower case, letters and digits only), said when it differs."""
    if vocabulary != "shapes":
        return
    rule = "strip"
    if text_encoder is not None and Path(text_encoder).is_dir():
        try:
            rule = text_normalizer(text_encoder)
        except ValueError as e:
            raise InputError(str(e)) from None
    seen = [NORMALIZERS[rule](p) for p in prompts]
    changed = [(p, s) for p, s in zip(prompts, seen) if s != p.strip()]
    if changed:  # once per run: the first example and how many more
        (p, s), more = changed[0], len(changed) - 1
        print(f"note: the demo text encoder reads {p!r} as {s!r}" + (f" (and {more} more prompts likewise)" if more
              else "") + ": its captions are lower case, words only")
    unknown = list(dict.fromkeys(w for s in seen for w in unknown_words(s)))
    if unknown and not with_loras:
        users = [s for s in seen if unknown_words(s)]
        print(f"warning: {len(users)} of {len(prompts)} prompts use words the ShapesWorld demo never saw: "
              f"{', '.join(unknown)} (e.g. {users[0]!r}); it knows {', '.join(sorted(VOCABULARY))}. Generating anyway.")


def read_student(path: Path) -> dict:
    """A distilled student's student.json (train/distill.py writes it), checked: {"timesteps": descending sigmas
    in (0, 1], "guidance_scale": >= 1, "result": the file name of the LoRA / model beside it, ...}."""
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{path} cannot be read as JSON ({e})") from None
    grid = info.get("timesteps") if isinstance(info, dict) else None
    ok = isinstance(grid, list) and grid and all(isinstance(x, (int, float)) and 0 < x <= 1 for x in grid) and \
        all(a > b for a, b in zip(grid, grid[1:]))
    scale = info.get("guidance_scale", 1.0) if isinstance(info, dict) else None
    if not ok or not isinstance(scale, (int, float)) or not scale >= 1 or not isinstance(info.get("result"), str):
        raise InputError(f"{path} is not a student.json of python -m train.distill (it needs timesteps: descending "
                         "sigmas in (0, 1], guidance_scale >= 1 and result: the student's file name)")
    return info


def with_student(cfg: GenerateConfig) -> GenerateConfig:
    """Apply `student=RUN` (its LoRA or full model), or a student.json beside a LoRA of `loras` that names it: the
    student's sigma list and no guidance (what it was distilled for), where the command line sets neither."""
    info = None
    if cfg.student is not None:
        given = Path(cfg.student).expanduser()
        path = given / "student.json" if given.is_dir() else given
        if not path.is_file():
            raise InputError(f"student={cfg.student}: no {path.name} there; give the run_dir of a finished "
                             "python -m train.distill run (it writes student.json next to the student)")
        info = read_student(path)
        result = path.parent / info["result"]
        if not result.is_file():
            raise InputError(f"student={cfg.student}: {path} names {info['result']}, which is not in {path.parent}")
        run_cfg = {}
        if (path.parent / "config.json").is_file():
            try:
                run_cfg = json.loads((path.parent / "config.json").read_text())
            except ValueError:
                run_cfg = {}
        model = (run_cfg.get("model") or {}).get("name")
        if model and model != cfg.model.name:
            raise InputError(f"student={cfg.student} was distilled from model={model}; pass model={model}")
        if cfg.model.is_ltx2:
            raise InputError("student= is for students of python -m train.distill (LTX-Video 0.9.x presets)")
        if result.name.startswith("lora"):  # a LoRA on its teacher's (base) checkpoint
            base = run_cfg.get("checkpoint")
            checkpoint = cfg.checkpoint or (base if base and Path(base).exists() else None)
            loras = [LoraSpec(path=str(result))] + [x for x in cfg.loras if Path(x.path) != result]
            cfg = dataclasses.replace(cfg, checkpoint=checkpoint, loras=loras)
        else:  # a full student: its own checkpoint (transformer + VAE)
            if cfg.checkpoint is not None and Path(cfg.checkpoint).resolve() != result.resolve():
                raise InputError(f"student={cfg.student} is a full model ({result}); leave checkpoint unset")
            cfg = dataclasses.replace(cfg, checkpoint=str(result))
        where = path
    else:
        for spec in cfg.loras:
            beside = Path(spec.path).expanduser().parent / "student.json"
            if beside.is_file():
                found = read_student(beside)
                if found["result"] == Path(spec.path).name:
                    info, where = found, beside
                    break
    if info is None:
        return cfg
    changes = {}
    if cfg.steps is None and cfg.timesteps is None:
        changes["timesteps"] = [float(x) for x in info["timesteps"]]
    if cfg.guidance_scale is None:
        changes |= {"guidance_scale": float(info.get("guidance_scale", 1.0))}
        changes |= {"stg_scale": 0.0} if cfg.stg_scale is None else {}
        changes |= {"rescaling_scale": 1.0} if cfg.rescaling_scale is None else {}
    if changes:
        shown = ", ".join(f"{k}={v}" for k, v in changes.items())
        print(f"note: sampling the distilled student of {where} with {shown} (its training; set them to override)")
    return dataclasses.replace(cfg, **changes)


def with_preset_defaults(cfg: GenerateConfig) -> GenerateConfig:
    """Fill what the command line left unset from the preset's `generation` defaults; the preset's local
    weight paths (the bundled demo) are relative to the repository root."""
    g = cfg.model.generation
    repo = config_root()  # the checkout, or <prefix>/share/ltx for an installed package

    def local(path: str | None) -> str | None:
        return None if path is None else str(path if Path(path).is_absolute() else repo / path)

    text_encoder = cfg.text_encoder
    if text_encoder is None and cfg.embeddings is None:
        text_encoder = local(g.text_encoder_path)
    return dataclasses.replace(
        cfg,
        height=cfg.height if cfg.height is not None else g.height,
        width=cfg.width if cfg.width is not None else g.width,
        num_frames=cfg.num_frames if cfg.num_frames is not None else g.num_frames,
        fps=cfg.fps if cfg.fps is not None else g.fps,
        negative_prompt=cfg.negative_prompt if cfg.negative_prompt is not None else g.negative_prompt,
        checkpoint=cfg.checkpoint if cfg.checkpoint is not None else local(g.checkpoint_path),
        text_encoder=text_encoder,
    )


def memory_settings(cfg: GenerateConfig) -> GenerateConfig:
    """offload / vram_budget / plan: check them; with a budget (or plan=true) print the memory plan and take its
    settings: offload, VAE tiling, the weights (quantize= when the plan needs a quantized transformer and none was
    asked for) and the text encoder's device."""
    if cfg.offload not in OFFLOAD_MODES:
        raise InputError(f"offload={cfg.offload!r} is not supported (supported: {', '.join(OFFLOAD_MODES)})")
    if cfg.vram_budget is None and not cfg.plan:
        return cfg
    try:
        plan = plan_memory(cfg.model, height=cfg.height, width=cfg.width, num_frames=cfg.num_frames,
                           batch=max(1, len(cfg.prompts)), budget=cfg.vram_budget or "24GB",
                           dtype="fp32" if cfg.precision == Precision.float32 else "bf16")
    except ValueError as e:
        raise InputError(f"vram_budget: {e}") from None
    print(plan.table())
    s = plan.settings
    te_device = "cpu" if s.text_encoder_device == "cpu" else cfg.text_encoder_device
    return dataclasses.replace(cfg, offload=s.offload, vae_tiling=s.vae_tiling or cfg.vae_tiling,
                               quantize=cfg.quantize or PLAN_LAYOUTS.get(s.weights), text_encoder_device=te_device)


def check_quantize(cfg: GenerateConfig) -> None:
    if cfg.text_encoder_device not in ("auto", "cpu"):
        raise InputError(f"text_encoder_device={cfg.text_encoder_device!r} is not supported (supported: auto, cpu)")
    if cfg.quantize is not None and cfg.quantize not in QUANTIZE_LAYOUTS:
        raise InputError(f"quantize={cfg.quantize!r} is not a layout ltx quantizes to (supported: "
                         f"{', '.join(QUANTIZE_LAYOUTS)})")


def run(cfg: GenerateConfig) -> list[Path]:
    """Generate one video per prompt; returns the mp4 paths (see the file docstring for the order of work)."""
    from omegaconf import OmegaConf
    from tqdm import tqdm

    frames_given = cfg.num_frames is not None  # LTX-2.5 without num_frames: the duration head's length
    cfg = with_preset_defaults(with_student(cfg))
    cfg = memory_settings(cfg)
    check_parallel(cfg)
    check_quantize(cfg)
    if cfg.plan:
        return []
    if cfg.model.is_ltx2:  # video + sound: its own checks and outputs
        from infer import generate_ltx2

        return generate_ltx2.run(cfg, frames_given=frames_given)
    if cfg.audio_guidance_scale is not None or cfg.modality_scale is not None or cfg.distilled_lora is not None \
            or cfg.audio is not None or cfg.video is not None or cfg.transformer is not None or cfg.enhance_prompt \
            or cfg.prompt_enhancer is not None or cfg.hdr is not None or cfg.temporal_rounds \
            or cfg.temporal_upsampler_checkpoint is not None or cfg.detailing_lora is not None \
            or cfg.hdr_lora is not None or cfg.spatial_epilogue or cfg.hdr_high_quality:
        raise InputError("audio, video, audio_guidance_scale, modality_scale, distilled_lora, transformer, "
                         "enhance_prompt, prompt_enhancer, hdr, temporal_rounds, temporal_upsampler_checkpoint, "
                         "detailing_lora, spatial_epilogue, hdr_lora and hdr_high_quality are for the LTX-2 presets "
                         "(model=ltx-2-19b-dev, ltx2-demo, ...)")

    # --- checks on configs, headers and small files only
    device, dtype = resolve_device(cfg)
    checkpoints = open_checkpoints(cfg)
    dit_cfg: DiTConfig = checkpoints[0].components["dit"].config
    vae_cfg: VAEConfig = checkpoints[1].components["vae"].config
    try:
        api.check_architecture(cfg.model, dit_cfg, vae_cfg)
    except ValueError as e:
        raise InputError(str(e)) from None
    overrides = pass_overrides(cfg)
    loras = open_loras(cfg, dit_cfg)
    pipe = api.Pipeline.opened(cfg.model, checkpoints, loras=loras)
    prompts, pos, neg = text_source(cfg, dit_cfg.caption_channels)
    warn_vocabulary(cfg.model.generation.prompt_vocabulary, prompts if pos is None else [], bool(cfg.loras),
                    cfg.text_encoder)
    has_negative = pos is None or neg is not None
    items = conditioning_items(cfg)
    t = vae_cfg.temporal_factor
    if cfg.segments > 1 and not (1 <= cfg.segment_overlap < cfg.num_frames and (cfg.segment_overlap - 1) % t == 0):
        raise InputError(f"segment_overlap must be {t}k + 1 frames and less than num_frames ({cfg.num_frames}), got "
                         f"{cfg.segment_overlap}")  # fmt: skip
    guides, notes = control_guides(cfg, loras, t)
    try:
        request = pipe.check(height=cfg.height, width=cfg.width, num_frames=cfg.num_frames, frame_rate=cfg.fps,
                             conditioning_items=items, image_cond_noise_scale=cfg.image_cond_noise_scale,
                             has_negative=has_negative, num_segments=cfg.segments, segment_overlap=cfg.segment_overlap,
                             noise_mix=cfg.noise_mix, control=guides, **overrides)
    except ValueError as e:
        if not has_negative and "negative" in str(e):
            raise InputError(f"{e}: pass negative_embeddings=... or set guidance_scale=1") from None
        raise InputError(str(e)) from None
    for note in notes:  # only for a request that passed its checks
        print(f"note: {note}")
    check_output(cfg)

    # --- heavy work: the prompts (the text encoder freed), then the weights (LoRAs merged), then sampling
    text, views = encode_text(cfg, prompts, pos, neg, needs_cfg(request.sampling), device, dtype)
    load_weights(pipe, cfg, device, dtype)
    world = Dist() if cfg.parallel == "none" else start_parallel(
        pipe.dit, pipe.vae if cfg.vae_tiling and cfg.parallel_vae else None, mode=cfg.parallel_mode,
        cfg=cfg.parallel_cfg)
    torch.manual_seed(cfg.seed)  # the same seed on every rank: the same noise
    generator = torch.Generator(device).manual_seed(cfg.seed)
    total = sum(len(s) - 1 for s in request.sigmas) * cfg.segments
    with tqdm(total=total, desc="denoising", unit="step", disable=not world.is_main) as bar, torch.no_grad():
        try:  # nothing non-finite reaches a file
            with cached(pipe.dit, cfg.cache, request.sigmas) as step_cache:
                frames = generate(pipe, text, request, generator, tiled=cfg.vae_tiling,
                                  progress=lambda i: bar.update(1))
        except api.NonFiniteError as e:
            raise InputError(f"{e}; nothing was written" + (", or use precision=float32" if dtype != torch.float32
                                                             else "")) from None

    if not world.is_main:  # every rank holds the frames; rank 0 writes them
        world.destroy()
        return []

    # --- outputs: staged and renamed into place when complete, so a failed run leaves no folder behind
    resolved = OmegaConf.to_container(OmegaConf.structured(dataclasses.replace(cfg, model=dataclasses.replace(
        cfg.model, sampling=request.sampling))), enum_to_str=True)  # fmt: skip
    encoded = [v.text for v in views] if views is not None else list(prompts)
    names = []
    with output_folder(cfg) as folder:
        for k, (prompt, seen, video) in enumerate(zip(prompts, encoded, frames)):
            stem = folder.path / f"{k:02d}_{slug(prompt)}"
            write_mp4(stem.with_suffix(".mp4"), video, cfg.fps)
            write_contact_sheet(stem.with_suffix(".png"), video, cfg.contact_sheet_frames, seen)
            record = {"prompt": prompt, "encoded_prompt": seen,
                      "prompt_truncated": bool(views and views[k].truncated), "index": k, "seed": cfg.seed,
                      "vae_scale": list(vae_scale(vae_cfg)),
                      "sigmas": [[round(float(v), 6) for v in s] for s in request.sigmas], "config": resolved,
                      "cache_stats": step_cache.stats}  # forwards computed / skipped (config.cache: the policy)
            write_text(stem.with_suffix(".yaml"), OmegaConf.to_yaml(OmegaConf.create(record)))
            names.append(stem.with_suffix(".mp4").name)
        # the evaluator's contract (tools/eval_shapes.py): prompts.json maps each video to the prompt the model read
        write_text(folder.path / "prompts.json", json.dumps(dict(zip(names, encoded)), indent=2) + "\n")
    paths = [folder.final / n for n in names]
    print(f"wrote {len(paths)} video(s) to {folder.final}:")
    for p in paths:
        print(f"  {p}  (+ {p.with_suffix('.png').name}, {p.with_suffix('.yaml').name})")
    world.destroy()
    return paths


def to_config(raw) -> GenerateConfig:
    """The one OmegaConf -> dataclass conversion (raw: the composed Hydra config)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(GenerateConfig), raw))


def _main() -> None:
    from infer.app import hydra_app

    hydra_app(GenerateConfig, "generate", run)

if __name__ == "__main__":
    _main()

