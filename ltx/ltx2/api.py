"""The Python API for LTX-2 / LTX-2.3: open the bundled checkpoint once, then call it with the official
pipeline's argument names (ltx_pipelines 1.0.0).

    import ltx

    pipe = ltx.load_pipeline("/w/ltx-2-19b-dev.safetensors", model="ltx-2-19b-dev",
                             text_encoder="/w/gemma-3-12b-it-qat-q4_0-unquantized",
                             upsampler="/w/ltx-2-spatial-upscaler-x2-1.0.safetensors",
                             distilled_lora="/w/ltx-2-19b-distilled-lora-384.safetensors")
    out = pipe("a dog barks at the sea", seed=42, height=512, width=768, num_frames=121, frame_rate=24,
               images=[("first.png", 0, 1.0)], video_guider_params={"cfg_scale": 4.0})
    out.frames, out.waveform, out.sample_rate      # (B, 3, F, H, W) in [0, 1], (B, 2, N) in [-1, 1], Hz

The preset (`model`) picks the official pipeline (`AVPipeline`: one_stage, two_stage, hq, keyframes, distilled;
`pipeline=` overrides it), its schedule and guidance. `open_pipeline` reads headers only and builds the modules on
`meta`, so `check(...)` validates a request (sizes, frames, steps, guidance, STG blocks, images, the IC-LoRA
control clips, the soundtrack) before any weights load, naming the argument. `load()` loads the bundle and
stages the LoRAs: `loras` are fused into the transformer (both stages); the two-stage pipelines fuse the distilled
LoRA into it in place once stage 1 is done (hq: `stage_1_lora_strength` before stage 1 and the rest before stage
2); with IC-LoRA control (`video_conditioning`, distilled presets) stage 2 runs the transformer's own weights
copied back from the file (`checkpoint.reload_weights`), as the official ICLoraPipeline. A transformer changed
for stage 2 is restored before the next call. Prompts are encoded by Gemma 3, loaded for the call and freed
(`encode_prompts`), then by the bundle's text connector. `audio_path` (+ `audio_start_time`): audio-to-video,
the soundtrack's latent fixed in every stage, the audio guider off, and the input sound returned (cut to the
video's duration), as A2VidPipelineTwoStage. LTX-2.5's DFR (`model="ltx-2.5-22b-dfr"`, `pipelines.dfr`): the
distilled LoRA in every pass, the detailing IC-LoRA (`detailing_lora=`) fused for stage 2 only and the weights
reread after it when temporal rounds follow; `temporal_rounds=1|2` (with `temporal_upsampler=`) returns
(num_frames - 1) 2**rounds + 1 frames at `Output.fps`; `spatial_epilogue=True` adds the tiled x2 spatial pass after
the rounds (frames at twice the height and width; the detailing IC-LoRA fused again for it).

Arguments of a call: `prompt`, `negative_prompt` (None = the preset's), `seed`, `height`, `width`,
`num_frames`, `frame_rate`, `num_inference_steps`, `sigmas` (stage 1 instead), `video_guider_params` /
`audio_guider_params` (an `AVGuidance`, or a dict of its fields: cfg_scale, stg_scale, stg_blocks, rescale_scale,
modality_scale, skip_step; unset = the preset's), `images` [(path or (H, W, 3) tensor in [0, 1], frame,
strength)], `video_conditioning` [(path or (F, H, W, 3) tensor in [0, 1], strength[, downscale])], `audio_path`,
`audio_start_time`, `temporal_rounds` and `spatial_epilogue` (dfr), `hdr`, `hdr_high_quality` (hdr_lora), `progress`.
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

import ltx.ltx2.checkpoint as ltx2_checkpoint
from ltx.core.audio_io import read_audio
from ltx.core.checkpoint import CheckpointError, SafetensorsReader
from ltx.core.device import resolve_device
from ltx.core.media import MediaError, crf_compress, read_image, read_video
from ltx.core.quant import load_quantized, prepare_for_file, read_gguf
from ltx.core.quant.gguf_io import is_gguf
from ltx.core.requests import check_prompts, check_seed, lora_specs
from ltx.core.step_cache import CachePolicy, cached
from ltx.ltx2 import dfr, gemma_pack, pipelines
from ltx.ltx2.audio import waveform_to_mel
from ltx.ltx2.conditioning import fit_image
from ltx.ltx2.diffusion_decoder import DiffusionDecodeTiling, check_tiling, load_decoder, read_decoder_file
from ltx.ltx2.duration import duration_frames
from ltx.ltx2.hdr import HDRLoraConfig
from ltx.ltx2.lora import LoRAWeights, check_lora, fuse_loras, read_lora
from ltx.ltx2.patchify import video_latent_shape
from ltx.ltx2.pipelines import AVModels, AVPipeline, AVRequest, ImageInput, Prompt, ReferenceInput, check_size
from ltx.ltx2.sched import GuiderParams, ltx2_sigmas
from ltx.ltx2.text import (
    GemmaTextEncoder,
    check_gemma_version,
    default_image_crf,
    model_version_tuple,
    read_gemma_info,
)
from ltx.presets import AVGuidance, ModelPreset, load_preset

COMPONENTS = ("transformer", "text", "vae", "audio_vae", "vocoder")
# ltx-pipelines 1.2 seeds the 2.5 ancestral sampler's noise at seed + 10000, so that its first draw is not the
# initial latent noise again
ANCESTRAL_SEED_OFFSET = 10_000


def family(version: str) -> str:
    """The release line a model_version belongs to: "2.5" (and later), "2.3" or "2" (LTX-2 19B)."""
    v = model_version_tuple(version)
    return "2.5" if v >= (2, 5) else "2.3" if v >= (2, 3) else "2"


@dataclass
class Request:
    """A validated request: the pipeline, sizes, both stages' sigmas, guidance, the read inputs."""

    pipeline: AVPipeline
    height: int
    width: int
    num_frames: int
    frame_rate: float
    sigmas: Tensor  # stage 1, float32
    stage_2_sigmas: Tensor | None
    video_guidance: GuiderParams
    audio_guidance: GuiderParams
    images: list[ImageInput] = field(default_factory=list)
    references: list[ReferenceInput] = field(default_factory=list)  # IC-LoRA control clips
    soundtrack: tuple[Tensor, int] | None = None  # (2, N) waveform cut to the video, and its rate
    video: Tensor | None = None  # video-to-audio: the given clip's first num_frames frames (F, H, W, 3) in [0, 1]
    negative_prompt: str | None = None  # None: no pass needs it
    temporal_rounds: int = 0  # LTX-2.5 DFR: temporal x2 refine rounds (0-2)
    stage_2_tiles: int = 1  # the HDR IC-LoRA pipeline: stage 2 runs once per tile
    spatial_epilogue: bool = False  # LTX-2.5 DFR: the tiled x2 spatial pass after the rounds
    hdr_high_quality: bool = False  # the HDR IC-LoRA: 2 num_frames - 1 frames generated, every other one kept

    @property
    def num_evaluations(self) -> int:
        """Progress ticks of a run: Euler steps (hq: res_2s's 2 transformer calls a step, + 1 per stage; dfr: + each
        round's tiles (up to 2**round) of `dfr.REFINE_SIGMAS` steps + the epilogue's tiles of stage 2's steps)."""
        if self.pipeline is AVPipeline.dfr:
            tiles = sum(dfr.round_tiles(self.num_frames, self.temporal_rounds))
            total = len(self.sigmas) - 1 + len(self.stage_2_sigmas) - 1 + tiles * len(dfr.REFINE_SIGMAS)
            if self.spatial_epilogue:
                _, h, w = video_latent_shape(self.num_frames, self.height, self.width)
                with warnings.catch_warnings():  # the run warns about a clamped layout itself
                    warnings.simplefilter("ignore")
                    n = len(dfr.epilogue_layout(self.num_frames, self.temporal_rounds, (h, w)))
                total += n * (len(self.stage_2_sigmas) - 1)
            return total
        per_step = 2 if self.pipeline is AVPipeline.hq else 1
        total = per_step * (len(self.sigmas) - 1)
        if self.stage_2_sigmas is not None:
            total += per_step * (len(self.stage_2_sigmas) - 1) * self.stage_2_tiles
        return total + (2 if self.pipeline is AVPipeline.hq else 0)


@dataclass
class TextStates:
    """Gemma's hidden states of the prompts (and of the negative prompt, repeated per prompt, or None)."""

    positive: tuple[tuple[Tensor, ...], Tensor]  # (hidden states, mask (B, S))
    negative: tuple[tuple[Tensor, ...], Tensor] | None = None


@dataclass
class Output:
    frames: Tensor  # (B, 3, F, H, W) in [0, 1]
    waveform: Tensor  # (B, 2, N) in [-1, 1]: generated, or the given soundtrack
    sample_rate: int
    video_latent: Tensor  # (B, 128, F', H', W')
    audio_latent: Tensor  # (B, 8, T, 16)
    cache_stats: dict | None = None  # step caching (cache=CachePolicy(...)): forwards computed / skipped
    fps: float | None = None  # the frames' rate when the pipeline changes it (DFR: fps x 2**temporal_rounds)
    # the HDR IC-LoRA pipeline (video only: `waveform` is silence, `audio_latent` None): the decoded pixels
    # (B, 3, F, H, W) in [-1, 1] as `hdr_transfer` codes, for ltx.ltx2.hdr.write_hdr_outputs(..., transfer=); `frames`
    # is then their light's sRGB preview (clipped at 1)
    hdr_video: Tensor | None = None
    hdr_transfer: object | None = None


class NonFiniteError(ValueError):
    """The sampler or the decoders produced NaN / inf."""


@dataclass(eq=False)
class Pipeline:
    """An opened LTX-2 bundle: meta modules + the preset's sampling + the companion files, loaded by `load()`."""

    preset: ModelPreset
    bundle: ltx2_checkpoint.LTX2Checkpoint
    metas: dict[str, torch.nn.Module]  # the bundle's components on `meta` (checked against its headers)
    upsampler_file: ltx2_checkpoint.UpsamplerFile | None = None
    distilled_lora: LoRAWeights | None = None
    loras: list[tuple[LoRAWeights, float]] = field(default_factory=list)
    text_encoder: Path | None = None  # the Gemma 3 folder
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    modules: dict[str, torch.nn.Module] | None = None  # loaded: the bundle's components + "upsampler"
    batch_passes: bool = False  # the guidance passes of a step as one batch (parallel_cfg splits its rows)
    transformer_file: Path | None = None  # the transformer's weights from their own file (a GGUF, ...), not the bundle
    vae_decoder_file: Path | None = None  # LTX-2.5's diffusion-VAE file: its decoder decodes the video
    vae_decoder_tiling: DiffusionDecodeTiling | None = None  # its tiled decode (None: untiled)
    temporal_upsampler_file: ltx2_checkpoint.UpsamplerFile | None = None  # LTX-2.5 DFR's temporal x2 upscaler
    detailing_lora: tuple[LoRAWeights, float] | None = None  # LTX-2.5 DFR's x2 detailing IC-LoRA (stage 2 only)
    # the HDR IC-LoRA's curve and reference downscale (its metadata); the LoRA itself is among `loras` (both stages)
    hdr_lora: HDRLoraConfig | None = None
    _transformer_changed: bool = False  # stage 2 changed it in place: restore before the next run

    @property
    def pipeline(self) -> AVPipeline:
        return self.preset.av.pipeline

    @property
    def loaded(self) -> bool:
        return self.modules is not None

    @property
    def model_version(self) -> str:
        return str(self.bundle.model_version or "2")

    @property
    def version(self) -> tuple[int, ...]:
        """model_version as numbers, (2, 5, 0) for "2.5.0" ("2.3-rc1" -> (2, 3)), for "at least 2.5" checks."""
        return model_version_tuple(self.model_version)

    @property
    def image_crf(self) -> int:
        """The CRF of the conditioning images' H.264 round trip: the preset's, else the checkpoint's generation's."""
        crf = self.preset.av.image_crf
        return default_image_crf(self.bundle.reader.metadata) if crf is None else crf

    @property
    def has_duration_head(self) -> bool:
        return "duration_head" in self.metas

    def predict_num_frames(self, text: TextStates, frame_rate: float | None = None, *, min_seconds: float = 1.0,
                           max_seconds: float = 20.0) -> int:
        """LTX-2.5: the clip length the duration head predicts for the (one) prompt, in frames 8k + 1 at
        `frame_rate` within [min_seconds, max_seconds] (the official `--auto-duration` window). Needs `load()`."""
        if not self.has_duration_head:
            raise ValueError(f"checkpoint {self.bundle.path.name} has no duration head (LTX-2.5 files carry one): "
                             "give num_frames")
        if not self.loaded:
            raise ValueError("the pipeline was opened without weights; call .load() first")
        hidden, mask = text.positive
        if mask.shape[0] != 1:
            raise ValueError(f"the duration head predicts one length per prompt; {mask.shape[0]} prompts need "
                             "num_frames")
        fps = self.preset.generation.fps if frame_rate is None else frame_rate
        with torch.no_grad():
            video, audio = self.modules["text"](hidden, mask)[:2]
            seconds = float(self.modules["duration_head"](video, audio)[0])
        frames = duration_frames(seconds, fps, self.metas["vae"].cfg.scale[0], min_seconds, max_seconds)
        print(f"duration head: {seconds:.2f} s -> num_frames={frames} at {fps:g} fps")
        return frames

    # --- requests
    def check(self, *, height: int | None = None, width: int | None = None, num_frames: int | None = None,
              frame_rate: float | None = None, num_inference_steps: int | None = None,
              sigmas: Sequence[float] | None = None, video_guider_params: AVGuidance | dict | None = None,
              audio_guider_params: AVGuidance | dict | None = None, images: Sequence = (),
              video_conditioning: Sequence = (), audio_path: str | os.PathLike | None = None,
              audio_start_time: float = 0.0, negative_prompt: str | None = None,
              video_path: str | os.PathLike | Tensor | None = None, hdr: str | None = None,
              temporal_rounds: int = 0, spatial_epilogue: bool = False, hdr_high_quality: bool = False) -> Request:
        """Validate a request from headers alone (works before `load`); ValueError naming the argument.
        `audio_path`: audio-to-video (the soundtrack kept, audio guidance off); `video_path` (a file, or frames
        (F, H, W, 3) in [0, 1]): video-to-audio, one stage (the clip fitted to the size and kept, video guidance
        off; the trainer's v2a mode). `hdr` (srgb_linear | acescg | acescct): the colour space of `.exr`
        conditioning images (LTX-2.5's `--hdr`): they are fitted in linear light and ACEScct-encoded, not
        H.264-compressed (ltx.ltx2.hdr.exr_conditioning). `temporal_rounds` (dfr pipeline, 0-2): temporal x2 refine
        rounds, each doubling the frame rate (needs the temporal upsampler); `spatial_epilogue` (dfr pipeline): one more
        x2 in space after the rounds, tiled (frames at twice the height and width). With `hdr_lora`: any positive
        height / width (generated at each rounded up to a multiple of 64, the frames cropped back; the
        official size rule), and `hdr_high_quality` (the official high_quality_hdr): 2 num_frames - 1 frames
        generated from the reference's frames each given twice, every other one kept (about 2x the work)."""
        av, g = self.preset.av, self.preset.generation
        height = g.height if height is None else height
        width = g.width if width is None else width
        num_frames = g.num_frames if num_frames is None else num_frames
        frame_rate = g.fps if frame_rate is None else frame_rate
        for name, value in (("height", height), ("width", width), ("num_frames", num_frames)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if isinstance(frame_rate, bool) or not isinstance(frame_rate, int | float) or not 0 < frame_rate < 1e6:
            raise ValueError(f"frame_rate must be a positive number of frames per second, got {frame_rate!r}")
        if not isinstance(hdr_high_quality, bool):
            raise ValueError(f"hdr_high_quality must be True or False, got {hdr_high_quality!r}")
        if hdr_high_quality and self.hdr_lora is None:
            raise ValueError("hdr_high_quality is a mode of the HDR IC-LoRA pipeline: give hdr_lora=... too")
        gen_height, gen_width = height, width
        if self.hdr_lora is not None:  # the official rule: rounded up to a multiple of 64, the frames cropped back
            gen_height, gen_width = pipelines.hdr_generation_size(height, width)
        check_size(gen_height, gen_width, num_frames, self.pipeline.two_stages, self.metas["vae"].cfg.scale)
        if isinstance(temporal_rounds, bool) or temporal_rounds not in range(dfr.MAX_ROUNDS + 1):
            raise ValueError(f"temporal_rounds must be 0, 1 or 2, got {temporal_rounds!r}")
        if temporal_rounds and self.pipeline is not AVPipeline.dfr:
            raise ValueError(f"temporal_rounds runs with the dfr pipeline (model=ltx-2.5-22b-dfr), not "
                             f"{self.pipeline.value}")
        if not isinstance(spatial_epilogue, bool):
            raise ValueError(f"spatial_epilogue must be True or False, got {spatial_epilogue!r}")
        if spatial_epilogue and self.pipeline is not AVPipeline.dfr:
            raise ValueError(f"spatial_epilogue runs with the dfr pipeline (model=ltx-2.5-22b-dfr), not "
                             f"{self.pipeline.value}")
        if temporal_rounds and self.temporal_upsampler_file is None:
            raise ValueError(f"temporal_rounds={temporal_rounds} needs the temporal x2 upsampler: pass "
                             f"temporal_upsampler=/path/to/{av.temporal_upscaler or 'its file'} (generate: "
                             "temporal_upsampler_checkpoint=)")
        if self.pipeline is AVPipeline.dfr and (audio_path is not None or video_path is not None
                                                or video_conditioning):
            raise ValueError("the dfr pipeline generates video and sound from the prompt and images: give no "
                             "audio_path, video_path or video_conditioning")
        if video_path is not None:
            if audio_path is not None:
                raise ValueError("give audio_path (audio-to-video) or video_path (video-to-audio), not both")
            if self.pipeline is not AVPipeline.one_stage:
                raise ValueError(f"video_path (video-to-audio) runs with the one_stage pipeline, not "
                                 f"{self.pipeline.value} (pipeline='one_stage')")
            if images or video_conditioning:
                raise ValueError("video_path (video-to-audio) keeps the whole clip: give no images or "
                                 "video_conditioning")
        if audio_path is None and audio_start_time != 0:
            raise ValueError(f"audio_start_time={audio_start_time!r} is for audio-to-video: give audio_path=FILE too "
                             "(or leave audio_start_time at 0)")
        if self.hdr_lora is not None:
            if audio_path is not None or video_path is not None or images:
                raise ValueError("the HDR IC-LoRA pipeline turns the SDR reference video into HDR: give no "
                                 "audio_path, video_path or images")
            if len(video_conditioning) != 1:
                raise ValueError(f"the HDR IC-LoRA pipeline needs one SDR reference video in video_conditioning "
                                 f"(generate: control=[{{path: sdr.mp4}}]), got {len(video_conditioning)}")
        if audio_path is not None and self.pipeline is AVPipeline.hq:
            raise ValueError("audio_path runs with the one_stage, two_stage and distilled pipelines, not hq")
        if video_path is None:
            video_guidance = _guider(_guidance(av.video, video_guider_params, "video_guider_params"))
        else:  # the video is kept as given, nothing guides it
            video_guidance = _guider(_guidance(AVGuidance(), video_guider_params, "video_guider_params"))
            if pipelines.is_guided(video_guidance):
                raise ValueError("video_guider_params with video_path: the video is kept as given, nothing "
                                 "guides it")
        if audio_path is None:
            audio_guidance = _guider(_guidance(av.audio, audio_guider_params, "audio_guider_params"))
        else:  # the official audio-to-video pipeline's audio guider is off
            audio_guidance = _guider(_guidance(AVGuidance(), audio_guider_params, "audio_guider_params"))
            if pipelines.is_guided(audio_guidance):
                raise ValueError("audio_guider_params with audio_path: the soundtrack is kept as given, nothing "
                                 "guides it")
        num_layers = self.metas["transformer"].cfg.num_layers
        for what, guidance in (("video_guider_params", video_guidance), ("audio_guider_params", audio_guidance)):
            bad = [b for b in guidance.stg_blocks if b >= num_layers] if guidance.needs_perturbed else []
            if bad:
                raise ValueError(f"{what}: stg_blocks {bad} out of range: the transformer has {num_layers} blocks")
        if self.pipeline in (AVPipeline.distilled, AVPipeline.dfr) and pipelines.is_guided(video_guidance,
                                                                                          audio_guidance):
            raise ValueError(f"the {self.pipeline.value} pipeline samples without guidance: give no guidance in "
                             "video_guider_params / audio_guider_params (or pick a -dev preset)")
        needs_negative = video_guidance.needs_uncond or audio_guidance.needs_uncond
        negative_prompt = g.negative_prompt if negative_prompt is None else negative_prompt
        # a preset whose own negative prompt is empty (the demo: its unconditional is the empty caption it was
        # trained with) takes an empty one; the released ones need text
        if needs_negative and not (negative_prompt or "").strip() and g.negative_prompt.strip():
            raise ValueError("CFG needs a negative prompt: give negative_prompt=... or cfg_scale 1 in "
                             "video_guider_params and audio_guider_params")
        first, second = self._sigmas(height, width, num_frames, num_inference_steps, sigmas)
        tiles = 1
        if self.hdr_lora is not None:  # its own stage 2: two steps, over the tiles of the full-size latent
            second = torch.tensor(pipelines.HDR_STAGE_2_SIGMAS)
            shape = video_latent_shape(pipelines.hdr_generation_frames(num_frames, hdr_high_quality), gen_height,
                                       gen_width, self.metas["vae"].cfg.scale)
            tiles = len(pipelines.latent_tiles(shape, pipelines.HDR_STAGE_2_TILING))
        references = self._references(video_conditioning, gen_height, gen_width, num_frames)
        if self.hdr_lora is not None and references[0].pixels.shape[0] < num_frames:
            raise ValueError(f"video_conditioning[0]: the HDR reference has {references[0].pixels.shape[0]} frames, "
                             f"fewer than num_frames={num_frames}")
        return Request(self.pipeline, height, width, num_frames, float(frame_rate), first, second, video_guidance,
                       audio_guidance, self._images(images, num_frames, height, width, hdr),
                       references, _soundtrack(audio_path, audio_start_time, num_frames, frame_rate),
                       _given_video(video_path, num_frames), negative_prompt if needs_negative else None,
                       temporal_rounds, tiles, spatial_epilogue, hdr_high_quality)

    def _sigmas(self, height: int, width: int, num_frames: int, steps: int | None,
                sigmas: Sequence[float] | None) -> tuple[Tensor, Tensor | None]:
        """Stage 1: `sigmas`, the distilled list, LTX2Scheduler at 4096 tokens (hq: shifted for the stage-1
        tokens); stage 2: the preset's list."""
        av = self.preset.av
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise ValueError(f"num_inference_steps must be a positive integer, got {steps!r}")
        if sigmas is not None:
            if steps is not None:
                raise ValueError("give num_inference_steps or sigmas, not both")
            values = [float(s) for s in sigmas]
            if not values or any(not 0 <= s <= 1 for s in values) or any(a <= b for a, b in zip(values, values[1:])):
                raise ValueError(f"sigmas must be a strictly descending list in [0, 1], got {list(sigmas)!r}")
            first = torch.tensor(values if values[-1] == 0 else [*values, 0.0])
        elif self.pipeline in (AVPipeline.distilled, AVPipeline.dfr) and steps is None:
            first = torch.tensor(av.sigmas)
        elif self.pipeline is AVPipeline.hq:
            f, h, w = video_latent_shape(num_frames, height // 2, width // 2)
            first = ltx2_sigmas(steps if steps is not None else av.num_inference_steps, num_tokens=f * h * w)
        else:
            first = ltx2_sigmas(steps if steps is not None else av.num_inference_steps)
        second = torch.tensor(av.stage_2_sigmas) if self.pipeline.two_stages else None
        return first.to(torch.float32), second

    def _images(self, images: Sequence, num_frames: int, height: int, width: int,
                hdr: str | None = None) -> list[ImageInput]:
        """(path or (H, W, 3) in [0, 1], frame, strength) -> ImageInput after the official H.264 round trip; an
        `.exr` path (with `hdr`) -> its first frame fitted to the size in linear light and ACEScct-encoded."""
        out = []
        for i, item in enumerate(images):
            source, frame, strength = _entry(item, f"images[{i}]", 2, (1.0,))
            where = f"images[{i}] ({source})" if not isinstance(source, Tensor) else f"images[{i}]"
            if isinstance(frame, bool) or not isinstance(frame, int) or frame < 0:
                raise ValueError(f"{where}: frame {frame!r} must be a pixel frame index >= 0")
            if frame >= num_frames:
                raise ValueError(f"{where}: frame {frame} is past the last frame ({num_frames - 1})")
            _strength(strength, where)
            if not isinstance(source, Tensor) and str(source).lower().endswith(".exr"):
                out.append(ImageInput(_exr_pixels(source, height, width, hdr, where), frame, float(strength)))
                continue
            if isinstance(source, Tensor):
                x = source.float()
            else:
                try:
                    x = read_image(source).permute(1, 2, 0)  # (H, W, 3) in [0, 1]
                except (MediaError, OSError) as e:
                    raise ValueError(f"images[{i}]: {e}") from None
            if x.ndim != 3 or x.shape[-1] != 3 or min(x.shape[:2]) < 2:
                raise ValueError(f"{where}: need an (H, W, 3) image of at least 2x2 pixels, got {tuple(x.shape)}")
            if self.image_crf:
                x = crf_compress(x, self.image_crf)
            out.append(ImageInput((x * 255.0).round(), frame, float(strength)))
        return out

    def _references(self, control: Sequence, height: int, width: int, num_frames: int) -> list[ReferenceInput]:
        """IC-LoRA control clips (ICLoraPipeline): (path or (F, H, W, 3) in [0, 1], strength[, downscale]);
        `downscale` defaults to the LoRAs' reference_downscale_factor metadata, else 1."""
        if not control:
            return []
        if self.pipeline is not AVPipeline.distilled:
            raise ValueError(f"video_conditioning (IC-LoRA) runs the official ICLoraPipeline, on the distilled "
                             f"checkpoint: pick model=ltx-2-19b-distilled or ltx-2.3-22b-distilled (not "
                             f"{self.preset.name})")
        if not self.loras:
            raise ValueError("video_conditioning needs its IC-LoRA: pass loras=[...ic-lora.safetensors]")
        if self.transformer_file is not None:
            raise ValueError("video_conditioning: stage 2 of the IC-LoRA pipeline reloads the bundle's transformer, "
                             "which a separate transformer file replaces; give a bundle with that transformer "
                             "(tools/convert_weights.py) instead of transformer=")
        factors = {f for lora, _ in self.loras if (f := lora.reference_downscale_factor) is not None}
        if len(factors) > 1:
            raise ValueError(f"the LoRAs disagree on reference_downscale_factor ({sorted(factors)}); give the "
                             "downscale in each video_conditioning entry")
        default = next(iter(factors)) if factors else 1
        out = []
        for i, item in enumerate(control):
            source, strength, downscale = _entry(item, f"video_conditioning[{i}]", 1, (1.0, None))
            _strength(strength, f"video_conditioning[{i}]")
            downscale = default if downscale is None else downscale
            if isinstance(downscale, bool) or not isinstance(downscale, int) or downscale < 1:
                raise ValueError(f"video_conditioning[{i}]: downscale {downscale!r} must be an integer >= 1")
            if (height // 2) % downscale or (width // 2) % downscale:
                raise ValueError(f"video_conditioning[{i}]: downscale {downscale} must divide the stage-1 size "
                                 f"{height // 2}x{width // 2}")
            if isinstance(source, Tensor):
                frames = source.float()[:num_frames]
            else:
                try:
                    frames = read_video(source, max_frames=num_frames)[0].permute(1, 2, 3, 0)  # (F, H, W, 3)
                except (MediaError, OSError) as e:
                    raise ValueError(f"video_conditioning[{i}]: {e}") from None
            if frames.ndim != 4 or frames.shape[-1] != 3:
                raise ValueError(f"video_conditioning[{i}]: need (F, H, W, 3) frames, got {tuple(frames.shape)}")
            out.append(ReferenceInput((frames * 255.0).round(), float(strength), downscale))
        return out

    # --- loading
    def encode_prompts(self, prompts: str | Sequence[str], negative_prompt: str | None = None) -> TextStates:
        """Gemma 3's hidden states of the prompts (and of `negative_prompt` per prompt); Gemma is loaded from
        `text_encoder` for this and freed (works before `load`)."""
        prompts = check_prompts(prompts)
        if self.text_encoder is None:
            raise ValueError("no text_encoder given; pass text_encoder=/path/to/gemma-3-12b-it-qat-q4_0-unquantized "
                             "(a local folder with the model and its tokenizer) to open_pipeline")
        try:
            gemma = GemmaTextEncoder.from_folder(self.text_encoder, dtype=self.dtype, device=self.device,
                                                 max_length=self.preset.generation.text_tokens,
                                                 checkpoint_metadata=self.bundle.reader.metadata)
        except (OSError, ValueError) as e:
            raise ValueError(f"text_encoder: {e}") from None
        with torch.no_grad():
            positive = gemma.encode(prompts)
            negative = gemma.encode([negative_prompt] * len(prompts)) if negative_prompt is not None else None
        del gemma
        return TextStates(positive, negative)

    def load(self) -> Pipeline:
        """Load the bundle's weights (and the upsampler), fuse the LoRAs for stage 1; returns self."""
        if self.loaded:
            return self
        if self.transformer_file is None:
            self.modules = ltx2_checkpoint.load(self.bundle, device=self.device, dtype=self.dtype)
        else:  # the rest of the bundle, and the transformer built from its config, filled from its own file
            others = [n for n in self.bundle.keys if n != "transformer"]
            self.modules = ltx2_checkpoint.load(self.bundle, others, device=self.device, dtype=self.dtype)
            transformer = ltx2_checkpoint.build(self.bundle, "transformer")
            self.modules["transformer"] = load_quantized(transformer, self.transformer_file, device=self.device,
                                                         dtype=self.dtype, prefix=_transformer_prefix(
                                                             self.transformer_file))
        if self.vae_decoder_file is not None:
            self.modules["video_decoder"] = load_decoder(self.vae_decoder_file, device=self.device, dtype=self.dtype)
        if self.upsampler_file is not None:
            self.modules["upsampler"] = ltx2_checkpoint.load_upsampler(self.upsampler_file, device=self.device,
                                                                       dtype=self.dtype)
        if self.temporal_upsampler_file is not None:
            self.modules["temporal_upsampler"] = ltx2_checkpoint.load_upsampler(
                self.temporal_upsampler_file, device=self.device, dtype=self.dtype)
        self._fuse_stage_1()
        return self

    def _fuse_stage_1(self) -> None:
        transformer, av = self.modules["transformer"], self.preset.av
        if self.loras:
            print(f"fused {fuse_loras(transformer, self.loras)} weights from {len(self.loras)} LoRA(s)")
        strength = av.distilled_lora_strength if self.pipeline is AVPipeline.dfr else av.stage_1_lora_strength
        if self.distilled_lora is not None and strength:
            n = fuse_loras(transformer, [(self.distilled_lora, strength)])
            print(f"stage 1: fused the distilled LoRA ({n} weights, strength {strength})")
        self._transformer_changed = False

    def _fuse_detailing(self) -> None:
        """DFR stage 2: the detailing IC-LoRA on top (taken off again by `_restore_transformer`)."""
        if self.detailing_lora is not None:
            n = fuse_loras(self.modules["transformer"], [self.detailing_lora])
            print(f"stage 2: fused the detailing IC-LoRA ({n} weights, strength {self.detailing_lora[1]})")
            self._transformer_changed = True

    def _restore_transformer(self) -> None:
        """The transformer's own weights and the stage-1 LoRAs again (exact: reread, not subtracted)."""
        if self._transformer_changed:
            ltx2_checkpoint.reload_weights(self.bundle, "transformer", self.modules["transformer"])
            self._fuse_stage_1()

    def _stage_2_distilled_lora(self) -> None:
        """Two-stage: W + s1 d, then + (s2 - s1) d in place (one transformer in memory; the official ledger
        builds a second one with every LoRA fused at once, which differs by the rounding of one more addition)."""
        av = self.preset.av
        extra = av.distilled_lora_strength - av.stage_1_lora_strength
        if self.distilled_lora is not None and extra:
            n = fuse_loras(self.modules["transformer"], [(self.distilled_lora, extra)])
            print(f"stage 2: fused the distilled LoRA ({n} weights, now at strength {av.distilled_lora_strength})")
            self._transformer_changed = True

    def _stage_2_own_weights(self) -> None:
        """ICLoraPipeline: stage 2 is the distilled model without the IC-LoRA (or any LoRA)."""
        ltx2_checkpoint.reload_weights(self.bundle, "transformer", self.modules["transformer"])
        print("stage 2: the transformer's own weights again (no LoRA), as the official IC-LoRA pipeline")
        self._transformer_changed = True

    # --- generation
    def generate(self, text: TextStates, request: Request, *, seed: int,
                 progress: Callable[[], None] | None = None, cache: CachePolicy | None = None) -> Output:
        """Run a validated request on encoded prompts; `progress()` is called `request.num_evaluations` times.
        `cache`: step caching of the transformer for this run (ltx.core.step_cache; stats in Output.cache_stats)."""
        if not self.loaded:
            raise ValueError("the pipeline was opened without weights; call .load() first")
        check_seed(seed)
        if request.negative_prompt is not None and text.negative is None:
            raise ValueError("this request uses CFG: encode the negative prompt too (encode_prompts(prompts, "
                             "request.negative_prompt))")
        if self._transformer_changed:  # the last run's stage 2 changed it: its own weights, then stage 1's LoRAs
            ltx2_checkpoint.reload_weights(self.bundle, "transformer", self.modules["transformer"])
            self._fuse_stage_1()
        modules, device = self.modules, self.device
        with torch.no_grad():
            positive = Prompt(*modules["text"](*text.positive)[:2])
            negative = Prompt(*modules["text"](*text.negative)[:2]) if text.negative is not None else None
            soundtrack = self._encode_soundtrack(request.soundtrack)
            given = None
            if request.video is not None:  # fitted to the size as conditioning images are, then encoded
                given = fit_image((request.video * 255.0).round().to(device), request.height, request.width,
                                  self.dtype)  # (1, 3, F, H, W) in [-1, 1]
            av_request = AVRequest(
                height=request.height, width=request.width, num_frames=request.num_frames, fps=request.frame_rate,
                sigmas=request.sigmas.to(device),
                stage_2_sigmas=None if request.stage_2_sigmas is None else request.stage_2_sigmas.to(device),
                video_guidance=request.video_guidance, audio_guidance=request.audio_guidance, images=request.images,
                soundtrack=soundtrack, video=None if given is None else modules["vae"].encode(given),
                generator=torch.Generator(device).manual_seed(seed), dtype=self.dtype, batch_passes=self.batch_passes,
                ancestral_generator=torch.Generator(device).manual_seed(seed + ANCESTRAL_SEED_OFFSET)
                if self.pipeline is AVPipeline.distilled and self.version >= (2, 5) and self.hdr_lora is None else None,
                on_step=None if progress is None else (lambda *_: progress()))
            schedules = [s for s in (request.sigmas, request.stage_2_sigmas) if s is not None]
            with cached(modules["transformer"], cache, schedules) as step_cache:
                result = self._run(positive, negative, av_request, request.references, request.temporal_rounds,
                                   request.spatial_epilogue, request.hdr_high_quality)
        if isinstance(result, pipelines.HDRResult):
            return self._hdr_output(result, request)
        if not (torch.isfinite(result.video).all() and torch.isfinite(result.audio).all()):
            raise NonFiniteError("the generated video or audio is not finite (lower the guidance, or sample in "
                                 "float32)")
        frames = (result.video.float().clamp(-1, 1) + 1) / 2
        waveform, rate = result.audio.float().clamp(-1, 1), result.sample_rate
        if request.soundtrack is not None:  # the input, as the official pipeline returns it (not its VAE decode)
            wave, rate = request.soundtrack
            waveform = wave[None].expand(frames.shape[0], -1, -1).float()
        if given is not None:  # likewise the given clip (fitted to the size), not its VAE decode
            frames = ((given.float().clamp(-1, 1) + 1) / 2).expand(frames.shape[0], -1, -1, -1, -1)
        return Output(frames, waveform, rate, result.video_latent, result.audio_latent,
                      None if step_cache is None else step_cache.stats, result.fps)

    def _hdr_output(self, result: pipelines.HDRResult, request: Request) -> Output:
        """The HDR IC-LoRA run as an Output: the sRGB preview of its light as `frames`, a silent soundtrack."""
        from ltx.ltx2.hdr import linear_to_srgb

        if not torch.isfinite(result.linear).all():
            raise NonFiniteError("the generated HDR video is not finite (sample in float32)")
        frames = linear_to_srgb(result.linear).permute(0, 4, 1, 2, 3)  # (B, 3, F, H, W) in [0, 1]
        rate = int(self.modules["vocoder"].sample_rate)
        silence = torch.zeros(frames.shape[0], 2, round(request.num_frames / request.frame_rate * rate))
        return Output(frames, silence, rate, result.video_latent, None, hdr_video=result.video,
                      hdr_transfer=self.hdr_lora.transfer)

    def _encode_soundtrack(self, soundtrack: tuple[Tensor, int] | None) -> Tensor | None:
        """The waveform through our torch mel and the audio VAE encoder: (1, 8, T, 16)."""
        if soundtrack is None:
            return None
        wave, rate = soundtrack
        mel = waveform_to_mel(wave[None].float().to(self.device), rate).to(self.dtype)
        return self.modules["audio_vae"].encode(mel)

    def _run(self, positive: Prompt, negative: Prompt | None, request: AVRequest,
             references: list[ReferenceInput], temporal_rounds: int = 0,
             spatial_epilogue: bool = False, hdr_high_quality: bool = False) -> pipelines.AVResult:
        """The preset's official pipeline with this pipeline's LoRA staging."""
        m = self.modules
        models = AVModels(m["transformer"], m["vae"], m["audio_vae"], m["vocoder"], m.get("upsampler"),
                          m.get("video_decoder"), self.vae_decoder_tiling)
        match self.pipeline:
            case AVPipeline.distilled if self.hdr_lora is not None:
                (ref,) = references
                return pipelines.hdr_ic_lora(models, positive, request, ref.pixels.to(self.device),
                                             strength=ref.strength, transfer=self.hdr_lora.transfer,
                                             reference_downscale=ref.downscale, high_quality=hdr_high_quality)
            case AVPipeline.dfr:
                lora = self.detailing_lora
                return pipelines.dfr(models, positive, request, rounds=temporal_rounds,
                                     temporal_upsampler=m.get("temporal_upsampler"), detailing=lora is not None,
                                     reference_downscale=(lora[0].reference_downscale_factor or 2) if lora else 2,
                                     before_stage_2=self._fuse_detailing,
                                     after_stage_2=self._restore_transformer if temporal_rounds else None,
                                     spatial_epilogue=spatial_epilogue,
                                     # a detailing pass too: the LoRA again (still fused when no round ran)
                                     before_epilogue=self._fuse_detailing if temporal_rounds else None)
            case AVPipeline.one_stage:
                return pipelines.one_stage(models, positive, negative, request)
            case AVPipeline.distilled if references:
                return pipelines.ic_lora(models, positive, request, references,
                                         before_stage_2=self._stage_2_own_weights)
            case AVPipeline.distilled:
                return pipelines.distilled(models, positive, request)
            case AVPipeline.two_stage if request.soundtrack is not None:
                return pipelines.audio_to_video(models, positive, negative, request,
                                                before_stage_2=self._stage_2_distilled_lora)
            case AVPipeline.two_stage | AVPipeline.hq | AVPipeline.keyframes:
                run = {AVPipeline.two_stage: pipelines.two_stage, AVPipeline.hq: pipelines.hq,
                       AVPipeline.keyframes: pipelines.keyframes}[self.pipeline]
                return run(models, positive, negative, request, before_stage_2=self._stage_2_distilled_lora)
        raise ValueError(f"pipeline {self.pipeline} is not supported")

    def __call__(self, prompt: str | Sequence[str], negative_prompt: str | None = None, *, seed: int,
                 progress: bool | Callable[[], None] = False, cache: CachePolicy | None = None, **request) -> Output:
        """Check the request, encode the prompts (Gemma loaded and freed), generate (see the module docstring)."""
        if not self.loaded:
            raise ValueError("the pipeline was opened without weights; call .load() first")
        check_seed(seed)
        req = self.check(negative_prompt=negative_prompt, **request)
        text = self.encode_prompts(prompt, req.negative_prompt)
        if request.get("num_frames") is None and self.has_duration_head:  # LTX-2.5: the length from the prompt
            request["num_frames"] = self.predict_num_frames(text, request.get("frame_rate"))
            req = self.check(negative_prompt=negative_prompt, **request)
        if progress is True:
            from tqdm import tqdm

            with tqdm(total=req.num_evaluations, desc=req.pipeline.value, unit="step") as bar:
                return self.generate(text, req, seed=seed, progress=lambda: bar.update(1), cache=cache)
        return self.generate(text, req, seed=seed, progress=progress or None, cache=cache)


# ------------------------------------------------------------------------------------------------ helpers


def _guidance(preset: AVGuidance, given: AVGuidance | dict | None, what: str) -> AVGuidance:
    """The preset's guidance, replaced (an AVGuidance) or with some fields changed (a dict)."""
    if given is None:
        return preset
    if isinstance(given, AVGuidance):
        return given
    if not isinstance(given, dict):
        raise ValueError(f"{what} must be an AVGuidance or a dict of its fields, got {given!r}")
    names = {f.name for f in dataclasses.fields(AVGuidance)}
    unknown = sorted(set(given) - names)
    if unknown:
        raise ValueError(f"{what}: unknown field(s) {unknown}; valid: {sorted(names)}")
    try:
        return dataclasses.replace(preset, **given)
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from None


def _guider(g: AVGuidance) -> GuiderParams:
    return GuiderParams(cfg=g.cfg_scale, stg=g.stg_scale, stg_blocks=tuple(g.stg_blocks), rescale=g.rescale_scale,
                        modality=g.modality_scale, skip_step=g.skip_step)


def _entry(item, what: str, required: int, defaults: tuple) -> tuple:
    """An input tuple (source, ...) of `required` values and optional ones (`defaults`); a path or tensor alone
    where only the source is required. The source is a tensor or an existing file's Path."""
    values = (item,) if isinstance(item, str | os.PathLike | Tensor) else tuple(item)
    if not required <= len(values) <= required + len(defaults):
        raise ValueError(f"{what} must hold {required} to {required + len(defaults)} values, got {item!r}")
    values = values + defaults[len(values) - required:]
    source = values[0]
    if not isinstance(source, Tensor):
        path = Path(source).expanduser()
        if not path.is_file():
            raise ValueError(f"{what}: {path} does not exist or is not a file")
        source = path
    return (source, *values[1:])


def _strength(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{what}: strength {value!r} must be in [0, 1]")


def _exr_pixels(path, height: int, width: int, hdr: str | None, where: str) -> Tensor:
    """An EXR still as conditioning pixels (H, W, 3) in 0..255 (unrounded): center-cropped to the size in linear
    light and ACEScct-encoded (the official `load_exr_conditioning_hdr`), for `fit_image` to take as any image."""
    from ltx.ltx2.hdr import exr_conditioning, read_exr_frames

    if hdr is None:
        raise ValueError(f"{where}: an EXR image needs hdr=srgb_linear|acescg|acescct (the colour space its values "
                         "are in)")
    try:
        x = exr_conditioning(read_exr_frames(path)[:1], height, width, hdr, fit="center_crop")  # (1, 3, 1, h, w)
    except (OSError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None
    return ((x[0, :, 0] + 1.0) * 127.5).permute(1, 2, 0)


def _soundtrack(path: str | os.PathLike | None, start: float, num_frames: int, fps: float
                ) -> tuple[Tensor, int] | None:
    """The file's waveform (2, N) from `start` seconds, cut to the video's duration (checked to be long enough),
    and its rate; mono is duplicated to stereo."""
    if path is None:
        return None
    if isinstance(start, bool) or not isinstance(start, int | float) or not 0 <= start < 1e9:
        raise ValueError(f"audio_start_time must be a number of seconds >= 0, got {start!r}")
    try:
        wave, rate = read_audio(path)
    except (MediaError, OSError) as e:
        raise ValueError(f"audio_path {path}: cannot read audio: {e}") from None
    if wave.shape[0] not in (1, 2):
        raise ValueError(f"audio {path}: {wave.shape[0]} channels; LTX-2 takes mono or stereo")
    need = num_frames / fps
    first = round(start * rate)
    have = (wave.shape[1] - first) / rate
    if have <= 0:
        raise ValueError(f"audio_start_time {start:g} s is past the end of audio {path} ({wave.shape[1] / rate:.2f} s "
                         f"long): give a start below it")
    if have + 1e-9 < need:
        fit = math.floor(have * fps - 1) // 8 * 8 + 1  # the longest 8k + 1 frame count that fits
        shorter = f"give num_frames <= {fit}, an earlier audio_start_time" if fit >= 1 else \
            "give an earlier audio_start_time"
        raise ValueError(f"audio {path} has {have:.2f} s from {start:g} s; {num_frames} frames at {fps:g} "
                         f"fps need {need:.2f} s: {shorter} or a longer audio")
    wave = wave[:, first: first + round(need * rate)]
    return (wave.expand(2, -1) if wave.shape[0] == 1 else wave), rate


def _given_video(source: str | os.PathLike | Tensor | None, num_frames: int) -> Tensor | None:
    """Video-to-audio input: the first `num_frames` frames (F, H, W, 3) in [0, 1] of a file or tensor, which must
    have that many."""
    if source is None:
        return None
    if isinstance(source, Tensor):
        frames = source.float()
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise ValueError(f"video_path {path} does not exist or is not a file")
        try:
            frames = read_video(path, max_frames=num_frames)[0].permute(1, 2, 3, 0)  # (F, H, W, 3)
        except (MediaError, OSError) as e:
            raise ValueError(f"video_path {path}: {e}") from None
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"video_path: need (F, H, W, 3) frames in [0, 1], got {tuple(frames.shape)}")
    if frames.shape[0] < num_frames:
        raise ValueError(f"video_path has {frames.shape[0]} frames; num_frames={num_frames} needs as many (give "
                         f"num_frames <= {max(1, (frames.shape[0] - 1) // 8 * 8 + 1)} or a longer video)")
    return frames[:num_frames]


def _transformer_prefix(path: Path) -> str:
    """The key prefix of a transformer file: none in GGUF (ComfyUI-GGUF names), the official one in safetensors."""
    return "" if is_gguf(path) else "model.diffusion_model."


def check_transformer_file(bundle: ltx2_checkpoint.LTX2Checkpoint, path: Path) -> None:
    """A transformer file given beside a bundle: its header (names, shapes, quantized layout) must be the bundle
    transformer's (before any weight is read); one line naming the first differences otherwise."""
    prefix = _transformer_prefix(path)
    reader = read_gguf(path) if is_gguf(path) else SafetensorsReader(path)
    infos = {k[len(prefix):]: i for k, i in reader.infos.items() if k.startswith(prefix)}
    try:
        model = prepare_for_file(ltx2_checkpoint.build(bundle, "transformer"), infos, where=str(path))
    except ValueError as e:  # QuantError: a layer's tensors do not fit it
        raise CheckpointError(f"transformer: {e}") from None
    expected = {k: tuple(t.shape) for k, t in model.state_dict().items()}
    missing, unexpected = sorted(expected.keys() - infos.keys()), sorted(infos.keys() - expected.keys())
    if missing or unexpected:
        raise CheckpointError(f"transformer {path.name} is not this bundle's transformer ({bundle.path.name}): "
                              f"{len(missing)} keys missing (e.g. {missing[:2]}), {len(unexpected)} unexpected "
                              f"(e.g. {unexpected[:2]})")


def _checkpoint_files(source) -> Path | list[Path]:
    """The bundled file, a folder of split component files, or a list of them (LTX-2.5's split layout)."""
    if isinstance(source, (list, tuple)):
        return [_file(p, f"checkpoint[{i}]") for i, p in enumerate(source)]
    p = Path(source).expanduser()
    if p.is_dir():
        return p
    return _file(p, "checkpoint")


def _file(path: str | os.PathLike, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{what} {p} does not exist or is not a file")
    return p


# ------------------------------------------------------------------------------------------------ entry points


def open_pipeline(checkpoint: str | os.PathLike | None = None, *,
                  model: str | os.PathLike | ModelPreset = "ltx-2-19b-distilled",
                  text_encoder: str | os.PathLike | None = None, upsampler: str | os.PathLike | None = None,
                  distilled_lora: str | os.PathLike | None = None, loras: Sequence = (),
                  pipeline: AVPipeline | str | None = None, device: str | torch.device = "auto",
                  dtype: str | torch.dtype | None = None, transformer: str | os.PathLike | None = None,
                  vae_decoder: str | os.PathLike | None = None, temporal_upsampler: str | os.PathLike | None = None,
                  detailing_lora=None, hdr_lora=None, vae_decoder_tiling: DiffusionDecodeTiling | None = None
                  ) -> Pipeline:
    """A pipeline with the bundle's components on `meta`, every header and LoRA checked; `.load()` loads them.

    checkpoint: the official bundled file (or its ltx2 conversion). model: an LTX-2 preset name, path or
    ModelPreset. upsampler: the x2 spatial upscaler (two-stage pipelines); distilled_lora: the -dev checkpoints'
    stage-2 LoRA (two_stage, hq, keyframes); loras: paths, (path, strength) pairs or {path, strength} dicts, fused
    into the transformer; text_encoder: the local Gemma folder, or LTX-2.5's packed text-encoder file
    (`gemma4-12b-with-proj-ltx-2.5-bf16.safetensors`: Gemma 4, its tokenizer and the text projection the split
    transformer file lacks); pipeline: another official pipeline than the
    preset's. device / dtype: where Gemma and the weights go (auto: cuda + bfloat16, else cpu + float32).
    transformer: the transformer's weights from their own file, e.g. a community GGUF (ComfyUI-GGUF names) or a
    quantized single file; the bundle gives its config and the other components. vae_decoder: LTX-2.5's
    diffusion-VAE file (`ltx-2.5-video-vae-bf16.safetensors`): its diffusion decoder decodes the video (the
    checkpoint's conv VAE still encodes the conditioning images); vae_decoder_tiling: its decode in tiles
    (`DiffusionDecodeTiling()`: ltx-core's default layout; None: untiled). temporal_upsampler / detailing_lora (a
    path or (path, strength)): LTX-2.5 DFR's temporal x2 upscaler (for temporal_rounds) and x2 detailing IC-LoRA
    (stage 2; its reference downscale from the file's metadata, else 2). hdr_lora (a path or (path, strength)): the HDR
    IC-LoRA (its metadata names the curve, `hdr_transform`): the distilled 22B model then runs the official
    HDRICLoraPipeline (`pipelines.hdr_ic_lora`) on the one SDR video of `video_conditioning`, the LoRA fused for
    both stages; the output carries the decoded codes for ltx.ltx2.hdr.write_hdr_outputs.
    """
    preset = model if isinstance(model, ModelPreset) else load_preset(model)
    if not preset.is_ltx2:
        raise ValueError(f"model={preset.name} is an LTX-Video 0.9.x preset; use ltx.ltxv.api (or ltx.load_pipeline)")
    if pipeline is not None:
        try:
            av = dataclasses.replace(preset.av, pipeline=AVPipeline(pipeline))
        except ValueError as e:
            raise ValueError(f"pipeline={pipeline!r}: {e}") from None
        preset = dataclasses.replace(preset, av=av)
    av = preset.av
    device, dtype = resolve_device(device, dtype)
    checkpoint, text_encoder = preset.local_weights(checkpoint, text_encoder)  # the demo's bundled files
    files = _checkpoint_files(checkpoint)
    bundle = ltx2_checkpoint.read(files)
    packed = text_encoder is not None and gemma_pack.is_packed(Path(text_encoder).expanduser())
    no_projection = "text" in bundle.keys and not any(o.startswith("feature_extractor.") for o in bundle.keys["text"])
    if packed and no_projection:
        # LTX-2.5's split transformer file has the connectors; the packed text encoder holds the projection
        bundle = ltx2_checkpoint.read([*ltx2_checkpoint.component_files(files), Path(text_encoder).expanduser()])
    elif no_projection:
        raise CheckpointError(f"checkpoint {bundle.path}: no text projection (text_embedding_projection.*): LTX-2.5's "
                              "split files keep it in the packed text encoder; pass text_encoder=/path/to/"
                              "gemma4-12b-with-proj-ltx-2.5-bf16.safetensors")
    missing = [n for n in COMPONENTS if n not in bundle.keys]
    if missing:
        raise CheckpointError(f"checkpoint {bundle.path}: holds no {', '.join(missing)} (it holds: "
                              f"{', '.join(bundle.components)}); a split checkpoint needs every component's file")
    if text_encoder is not None:  # the Gemma the checkpoint was trained with; its widths size the text side (2.5)
        try:
            bundle.gemma = read_gemma_info(Path(text_encoder).expanduser())
            check_gemma_version(bundle.reader.metadata, bundle.gemma)
        except (OSError, ValueError) as e:
            raise ValueError(f"text_encoder: {e}") from None
    metas = ltx2_checkpoint.check(bundle)
    version = str(bundle.model_version or "2")
    if family(version) != family(av.model_version):
        names = {"2.5": "ltx-2.5-22b", "2.3": "ltx-2.3-22b", "2": "ltx-2-19b"}
        raise ValueError(f"checkpoint {bundle.path.name} is model_version {version!r}; the {preset.name} preset is "
                         f"for LTX-{av.model_version} (pick model={names[family(version)]}-dev or -distilled)")
    arch = metas["transformer"].cfg.version
    if family(version) != "2.5" and arch == "2.5":
        raise ValueError(f"checkpoint {bundle.path.name}: model_version {version!r} but an LTX-{arch} transformer "
                         "(its metadata flags): the file's metadata is inconsistent")
    upsampler_file = None
    if av.pipeline.two_stages:
        if upsampler is None:
            raise ValueError(f"no upsampler given; the {av.pipeline.value} pipeline upsamples x2: pass "
                             f"upsampler=/path/to/{av.spatial_upscaler}")
        upsampler_file = ltx2_checkpoint.read_upsampler(_file(upsampler, "upsampler"))
    lora = None
    if av.pipeline.uses_distilled_lora:
        if distilled_lora is None:
            raise ValueError(f"no distilled_lora given; stage 2 of the {av.pipeline.value} pipeline uses the distilled "
                             f"LoRA: pass distilled_lora=/path/to/{av.distilled_lora}")
        try:
            lora = read_lora(_file(distilled_lora, "distilled_lora"))
            check_lora(metas["transformer"], lora)
        except ValueError as e:  # unreadable, not a LoRA, or not for this transformer
            raise CheckpointError(f"distilled_lora: {e}") from None
    opened = []
    for i, (path, strength) in enumerate(lora_specs(loras)):
        try:
            user_lora = read_lora(_file(path, f"loras[{i}].path"))
            check_lora(metas["transformer"], user_lora)
        except ValueError as e:
            raise CheckpointError(f"loras[{i}]: {e}") from None
        opened.append((user_lora, strength))
    if text_encoder is not None and not (packed or Path(text_encoder).expanduser().is_dir()):
        raise FileNotFoundError(f"text_encoder folder {text_encoder} does not exist")
    transformer_file = None
    if transformer is not None:
        transformer_file = _file(transformer, "transformer")
        check_transformer_file(bundle, transformer_file)
    decoder_file = None
    if vae_decoder is not None:
        decoder_file = _file(vae_decoder, "vae_decoder")
        dcfg = read_decoder_file(decoder_file)
        vcfg = metas["vae"].cfg
        if (dcfg.in_channels, tuple(dcfg.scale)) != (vcfg.latent_channels, tuple(vcfg.scale)):
            raise ValueError(f"vae_decoder {decoder_file.name}: a decoder of {dcfg.in_channels}-channel latents at "
                             f"scale {tuple(dcfg.scale)}, but the checkpoint's VAE makes {vcfg.latent_channels}-"
                             f"channel latents at {tuple(vcfg.scale)}")
    if vae_decoder_tiling is not None:
        if decoder_file is None or not isinstance(vae_decoder_tiling, DiffusionDecodeTiling):
            raise ValueError(f"vae_decoder_tiling={vae_decoder_tiling!r}: a DiffusionDecodeTiling for the diffusion "
                             "decoder of vae_decoder= (the conv VAE decodes untiled in the LTX-2 pipelines)")
        try:
            check_tiling(dcfg, vae_decoder_tiling)
        except ValueError as e:
            raise ValueError(f"vae_decoder_tiling: {e}") from None
    temporal_file = detailing = None
    if (temporal_upsampler is not None or detailing_lora is not None) and av.pipeline is not AVPipeline.dfr:
        raise ValueError(f"temporal_upsampler / detailing_lora are for the dfr pipeline (model=ltx-2.5-22b-dfr), "
                         f"not {av.pipeline.value}")
    if temporal_upsampler is not None:
        try:
            temporal_file = ltx2_checkpoint.read_upsampler(_file(temporal_upsampler, "temporal_upsampler"))
        except CheckpointError as e:
            raise CheckpointError(f"temporal_upsampler: {e}") from None
        if temporal_file.config.kind != "temporal":
            raise ValueError(f"temporal_upsampler {temporal_file.path.name}: a {temporal_file.config.kind} "
                             "(spatial) upsampler; give the temporal x2 one "
                             f"({av.temporal_upscaler or 'ltx-2.5-latent-temporal-upscaler-x2'})")
    if upsampler_file is not None and upsampler_file.config.kind == "temporal":
        raise ValueError(f"upsampler {upsampler_file.path.name}: a temporal upsampler; the stages need the spatial "
                         f"x2 one ({av.spatial_upscaler})")
    if detailing_lora is not None:
        try:
            ((path, strength),) = lora_specs([detailing_lora])
        except ValueError as e:  # its message names loras[0]
            raise ValueError(f"detailing_lora: {str(e).split(': ', 1)[-1]} (give a path or (path, strength))") from None
        try:
            weights = read_lora(_file(path, "detailing_lora"))
            check_lora(metas["transformer"], weights)
        except ValueError as e:
            raise CheckpointError(f"detailing_lora: {e}") from None
        detailing = (weights, strength)
    hdr = None
    if hdr_lora is not None:
        if av.pipeline is not AVPipeline.distilled or family(version) == "2":
            raise ValueError(f"hdr_lora: the HDR IC-LoRA pipeline runs on the distilled 22B model "
                             f"(model=ltx-2.3-22b-distilled or ltx-2.5-22b-distilled), not {preset.name} "
                             f"({av.pipeline.value}, LTX-{version})")
        try:
            ((path, strength),) = lora_specs([hdr_lora])
        except ValueError as e:
            raise ValueError(f"hdr_lora: {str(e).split(': ', 1)[-1]} (give a path or (path, strength))") from None
        try:
            weights = read_lora(_file(path, "hdr_lora"))
            check_lora(metas["transformer"], weights)
            hdr = HDRLoraConfig.from_metadata(weights.metadata)
        except ValueError as e:
            raise CheckpointError(f"hdr_lora: {e}") from None
        if hdr is None:
            raise ValueError(f"hdr_lora {Path(path).name}: not an HDR IC-LoRA (its metadata has no hdr_transform or "
                             "use_hdr_transform); give the HDR IC-LoRA file (ltx-2.3-22b-ic-lora-hdr-*.safetensors), "
                             "or pass other IC-LoRAs as loras=")
        opened.append((weights, strength))
    if av.pipeline is AVPipeline.dfr and not metas["transformer"].cfg.use_keyframes_abs_pos_embedding:
        raise ValueError(f"checkpoint {bundle.path.name}: the dfr pipeline generates keyframe slots, which needs an "
                         "LTX-2.5 transformer (use_keyframes_abs_pos_embedding)")
    return Pipeline(preset, bundle, metas, upsampler_file, lora, opened,
                    None if text_encoder is None else Path(text_encoder).expanduser(), device, dtype,
                    transformer_file=transformer_file, vae_decoder_file=decoder_file,
                    vae_decoder_tiling=vae_decoder_tiling,
                    temporal_upsampler_file=temporal_file, detailing_lora=detailing, hdr_lora=hdr)


def load_pipeline(checkpoint: str | os.PathLike | None = None, *,
                  model: str | os.PathLike | ModelPreset = "ltx-2-19b-distilled", text_encoder=None, upsampler=None,
                  distilled_lora=None, loras: Sequence = (), pipeline: AVPipeline | str | None = None,
                  device: str | torch.device = "auto", dtype: str | torch.dtype | None = None,
                  **options) -> Pipeline:
    """`open_pipeline(...).load()`: see both (`options`: open_pipeline's other keywords)."""
    return open_pipeline(checkpoint, model=model, text_encoder=text_encoder, upsampler=upsampler,
                         distilled_lora=distilled_lora, loras=loras, pipeline=pipeline, device=device,
                         dtype=dtype, **options).load()


