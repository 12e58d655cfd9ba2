"""`ltx.plan_memory`: the memory plan of a run of any preset (both families), and the settings that fit a budget.

    import ltx
    plan = ltx.plan_memory(model="ltx-2-19b-distilled", height=512, width=768, num_frames=121, budget="24GB")
    print(plan)                 # the table: per stage weights / activations / total GB, the chosen settings
    plan.settings               # Settings(weights, offload, vae_tiling, checkpointing, text_encoder_device)

The engine (tracing on `meta`, budgets, the choice) is `ltx.core.memory_plan`; this module builds each family's
modules on `meta` (the architecture from the preset, or from the bundled file's headers for the demos) and lists
the stages of its pipeline: text encoder, each denoising pass (tokens and guidance rows of the preset), the latent
upsampler, the VAE decode (and LTX-2's audio decode). `mode="lora"`: one LoRA training step (rank 32 on to_q /
to_k / to_v / to_out.0, fp32 adapters with AdamW) on the transformer at the given size; its activations come from
ltx.ltx2.memory's closed form (measured constants), not from a trace.

Text encoders are counted as weights only: T5-XXL's encoder (4.76e9 parameters, PixArt-alpha's text_encoder) for
0.9.x, Gemma 3 12B (12.19e9, gemma-3-12b-it) for LTX-2; the demos' from their bundled folders. LTX-2's Gemma is
loaded for the prompt and freed, so with offload "none" it shares the card with the bundle only for that stage.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from ltx.core.lora import LoRAConfig, inject_lora
from ltx.core.memory_plan import (
    COMPUTE_BYTES,
    GB,
    WEIGHT_FORMATS,
    Plan,
    Settings,
    Stage,
    choose,
    inference_candidates,
    lora_candidates,
    parse_budget,
    traced_peak,
)
from ltx.presets import ModelPreset, PipelineType, load_preset

T5_XXL_PARAMS = 4_762_310_656
GEMMA3_12B_PARAMS = 12_187_325_040
MODES = ("inference", "lora")
LORA_RANK = 32
META = torch.device("meta")


def _on_meta(build):
    """A builder of `build()` on `meta` (never materialized: a 13B / 22B model costs no memory)."""
    def built():
        with torch.device(META):
            return build()

    return built


def _count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def _folder_params(folder: Path) -> int:
    """Parameters in the safetensors files of a (bundled) text encoder folder."""
    total = 0
    for f in sorted(Path(folder).rglob("*.safetensors")):
        with safe_open(f, "pt") as st:
            total += sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys())
    return total


@dataclasses.dataclass
class Transformer:
    """A transformer on `meta` and how its weights split: blocks' Linear weights (quantizable), the rest."""

    module: nn.Module
    layers: int
    block_params: int  # all parameters of one block
    block_linear: int  # of which 2-D Linear weights (the quantized ones)
    largest_linear: int

    @classmethod
    def of(cls, module: nn.Module) -> Transformer:
        blocks = module.transformer_blocks
        linears = [m.weight.numel() for m in blocks[0].modules() if isinstance(m, nn.Linear)]
        return cls(module, len(blocks), _count(blocks[0]), sum(linears), max(linears))

    def weight_bytes(self, fmt: str, compute: int, offload: str, prefetch: int) -> float:
        """Bytes on the device while it runs: everything, or (blocks) the rest + 1 + prefetch blocks."""
        per_block = self.block_linear * WEIGHT_FORMATS[fmt] + (self.block_params - self.block_linear) * compute
        rest = (_count(self.module) - self.layers * self.block_params) * compute
        resident = self.layers if offload != "blocks" else min(self.layers, 1 + prefetch)
        dequant = self.largest_linear * compute if fmt not in ("bf16", "fp32") else 0  # one Linear dequantized
        return rest + resident * per_block + dequant

    def total_bytes(self, fmt: str, compute: int) -> float:
        return self.weight_bytes(fmt, compute, "none", 0)


def _lora_activations(video_tokens: int, audio_tokens: int, layers: int, width: int, audio_width: int,
                      compute: int, checkpointing: bool) -> float:
    """Activation bytes of one LoRA step: ltx.ltx2.memory's closed form with its measured per-token constants
    (19B widths), scaled by width for another model (the 0.9.x DiT: video stream only). Not traced: on `meta`
    backward runs on the autograd engine's device thread, outside the tracing modes."""
    from ltx.ltx2 import memory

    a = memory.ACTIVATIONS["bf16" if compute == 2 else "fp32"]
    ref = 4096  # the constants' video width (19B)
    scale = width / ref
    tokens = video_tokens + audio_tokens
    if not checkpointing:
        return tokens * scale * (layers * a.per_block + a.fixed)
    kept = compute * (video_tokens * width + audio_tokens * audio_width)
    return layers * kept + tokens * scale * a.recompute


def _adapter_bytes(model_builder) -> int:
    """fp32 adapters + their gradients + AdamW's two moments: 16 bytes per adapter parameter."""
    model = model_builder()
    before = _count(model)
    inject_lora(model, LoRAConfig(rank=LORA_RANK), dtype=torch.float32)
    return 16 * (_count(model) - before)


# ------------------------------------------------------------------------------------------- LTX-Video 0.9.x


def _ltxv_parts(preset: ModelPreset):
    from ltx.ltxv.checkpoint import read_checkpoint
    from ltx.ltxv.transformer import DiT
    from ltx.ltxv.upsampler import UPSAMPLER_PRESETS, LatentUpsampler
    from ltx.ltxv.vae import VAE_PRESETS, VideoVAE

    g = preset.generation
    vae_cfg = VAE_PRESETS[preset.vae]
    text_params = T5_XXL_PARAMS
    if g.checkpoint_path is not None:  # a bundled model (the demo): its own VAE and text encoder
        ckpt, text = preset.local_weights(None, None)
        vae_cfg = read_checkpoint(ckpt).components["vae"].config
        text_params = _folder_params(text) if text is not None else 0
    with torch.device(META):
        vae = VideoVAE(vae_cfg)
        up = LatentUpsampler(UPSAMPLER_PRESETS["spatial-0.9.7"]) if preset.sampling.second_pass else None
    return _on_meta(lambda: DiT(preset.dit)), vae, up, text_params


def _ltxv_stages(preset: ModelPreset, height: int, width: int, num_frames: int, batch: int, dtype: torch.dtype):
    """(name, tokens label, rows, latent (f, h, w), kind) per denoising pass, and the decode's latent shape."""
    from ltx.ltxv.pipelines import multiscale_sizes

    s, cfg_vae = preset.sampling, None
    del cfg_vae
    passes = [s.first_pass] + ([s.second_pass] if s.second_pass is not None else [])
    sizes = [(height, width)]
    if s.pipeline_type is PipelineType.multi_scale:
        h1, w1 = multiscale_sizes(height, width, s.downscale_factor)
        sizes = [(h1, w1), (2 * h1, 2 * w1)]  # the upsampler doubles the first pass's latents
    out = []
    for k, (p, (h, w)) in enumerate(zip(passes, sizes)):
        rows = batch * (1 + (max(p.guidance_scale) > 1) + (max(p.stg_scale) > 0))
        out.append((f"denoise pass {k + 1}", rows, (h, w)))
    return out


def _plan_ltxv(preset, height, width, num_frames, batch, mode, compute, budget, reserve, fixed) -> Plan:
    from ltx.ltxv.vae_tiling import tiled_decode

    build_dit, vae, up, text_params = _ltxv_parts(preset)
    dtype = torch.bfloat16 if compute == 2 else torch.float32
    dit = Transformer.of(build_dit())
    cfg = dit.module.cfg
    st, ss = vae.cfg.temporal_factor, vae.cfg.spatial_factor
    f = (num_frames - 1) // st + 1
    S = preset.generation.text_tokens
    size = f"{width}x{height}x{num_frames}, batch {batch}"
    cache: dict = {}

    def forward_peak(rows, h, w):
        key = (rows, h, w)
        if key not in cache:
            T = f * (h // ss) * (w // ss)
            model = dit.module.to(dtype)

            def run():
                x = torch.empty(rows, T, cfg.in_channels, dtype=dtype, device=META)
                ctx = torch.empty(rows, S, cfg.caption_channels, dtype=dtype, device=META)
                return model(x, torch.empty(rows, device=META), ctx, torch.empty(rows, S, device=META),
                             torch.empty(rows, 3, T, device=META))

            cache[key] = traced_peak(run)
        return cache[key], f * (h // ss) * (w // ss)

    if mode == "lora":
        adapters = _adapter_bytes(build_dit)

        T = f * (height // ss) * (width // ss)

        def evaluate_lora(st_: Settings):
            peak = batch * _lora_activations(T, 0, dit.layers, cfg.dim, 0, compute, st_.checkpointing)
            w = dit.weight_bytes(st_.weights, compute, st_.offload, st_.prefetch) + adapters
            return [Stage("LoRA step (forward + backward)", w, peak, f"{T} x {batch}")], [
                "adapters: fp32 weights, gradients and AdamW moments (16 bytes per parameter) in the weights column",
                "activations: ltx.ltx2.memory's measured LTX-2 constants scaled by width (not measured for 0.9.x)"]

        return choose(evaluate_lora, lora_candidates(), model=preset.name, mode=mode, size=size, budget=budget,
                      reserve=reserve, fixed=fixed)

    vae_bytes, up_bytes, text_bytes = _count(vae) * compute, _count(up) * compute, text_params * compute
    latent = (batch, vae.cfg.latent_channels, f, height // ss, width // ss)

    def decode_peak(tiled: bool) -> int:
        key = ("decode", tiled)
        if key not in cache:
            model = vae.to(dtype)

            def run():
                z = torch.empty(latent, dtype=dtype, device=META)
                t = torch.full((batch,), 0.05, device=META) if vae.cfg.timestep_conditioning else None
                return tiled_decode(model, z, t) if tiled else model.decode(z, t)

            cache[key] = traced_peak(run)
        return cache[key]

    def upsample_peak(h, w) -> int:
        if ("up", h, w) not in cache:
            model = up.to(dtype)
            cache[("up", h, w)] = traced_peak(lambda: model(torch.empty(
                batch, vae.cfg.latent_channels, f, h // ss, w // ss, dtype=dtype, device=META)))
        return cache[("up", h, w)]

    passes = _ltxv_stages(preset, height, width, num_frames, batch, dtype)

    def evaluate(s: Settings):
        tr = dit.weight_bytes(s.weights, compute, s.offload, s.prefetch)
        everything = dit.total_bytes(s.weights, compute) + vae_bytes + up_bytes
        text_on = text_bytes if s.text_encoder_device == "device" else 0
        kept = everything + text_on if s.offload == "none" else 0  # T5 stays once loaded (its cache)
        stages = [Stage("text encoder (T5)", text_on if s.offload != "none" else kept, 0, f"{S} text tokens")]
        for k, (name, rows, (h, w)) in enumerate(passes):
            peak, T = forward_peak(rows, h, w)
            stages.append(Stage(name, kept or tr, peak, f"{T} x {rows} rows"))
            if k == 0 and len(passes) > 1:
                stages.append(Stage("latent upsampler", kept or up_bytes, upsample_peak(h, w), ""))
        stages.append(Stage("VAE decode" + (" (tiled)" if s.vae_tiling else ""), kept or vae_bytes,
                            decode_peak(s.vae_tiling), f"latent {tuple(latent[2:])}"))
        return stages, []

    return choose(evaluate, inference_candidates(), model=preset.name, mode=mode, size=size, budget=budget,
                  reserve=reserve, fixed=fixed)


# ------------------------------------------------------------------------------------------- LTX-2 / 2.3


def _ltx2_parts(preset: ModelPreset):
    import ltx.ltx2.checkpoint as ltx2_checkpoint
    from ltx.ltx2.audio_vae import AudioVAE, AudioVAEConfig
    from ltx.ltx2.text import EmbeddingsProcessor, TextConnectorConfig
    from ltx.ltx2.transformer import AVTransformer, AVTransformerConfig
    from ltx.ltx2.upsampler import LatentUpsampler2, LatentUpsamplerConfig
    from ltx.ltx2.vae import VideoVAE, VideoVAEConfig
    from ltx.ltx2.vocoder import VocoderConfig, build_vocoder

    notes = []
    if preset.generation.checkpoint_path is not None:  # the demo: every component from the file's headers
        ckpt, text = preset.local_weights(None, None)
        metas = ltx2_checkpoint.check(ltx2_checkpoint.read(ckpt, ("transformer", "text", "vae", "audio_vae",
                                                                    "vocoder")))
        cfg = metas["transformer"].cfg
        return _on_meta(lambda: AVTransformer(cfg)), metas, _folder_params(text) if text else 0, notes
    from ltx.ltx2.api import family

    line = family(preset.av.model_version)  # "2", "2.3" or "2.5" (2.5: 2.3's widths, its own flags)
    v23 = line in ("2.3", "2.5")
    cfg = {"2": AVTransformerConfig.ltx2_19b, "2.3": AVTransformerConfig.ltx2_3_22b,
           "2.5": AVTransformerConfig.ltx2_5_22b}[line]()
    with torch.device(META):
        metas = {"text": EmbeddingsProcessor(TextConnectorConfig.ltx2_3() if v23 else TextConnectorConfig.ltx2_19b()),
                 "vae": VideoVAE(VideoVAEConfig()), "audio_vae": AudioVAE(AudioVAEConfig()),
                 "vocoder": build_vocoder(VocoderConfig())}
        if preset.av.pipeline.two_stages:
            metas["upsampler"] = LatentUpsampler2(LatentUpsamplerConfig())
    if v23:
        notes.append(f"{line}: the VAE, audio VAE and vocoder are counted with the 19B layouts (small next to the "
                     "transformer)")
    if line == "2.5":
        notes.append("2.5: the Gemma 4 text encoder is counted at Gemma 3 12B's size, the diffusion decoder and the "
                     "duration head are not counted (no released 2.5 metadata was read here)")
    return _on_meta(lambda: AVTransformer(cfg)), metas, GEMMA3_12B_PARAMS, notes


def _plan_ltx2(preset, height, width, num_frames, batch, mode, compute, budget, reserve, fixed) -> Plan:
    from ltx.ltx2.patchify import audio_latent_frames_for_video, video_latent_shape
    from ltx.ltx2.transformer import StreamInput
    from ltx.ltx2.vae import DecodeTiling

    build, metas, text_params, notes = _ltx2_parts(preset)
    dtype = torch.bfloat16 if compute == 2 else torch.float32
    tr = Transformer.of(build())
    cfg = tr.module.cfg
    av, fps = preset.av, preset.generation.fps
    S = preset.generation.text_tokens
    Ta = audio_latent_frames_for_video(num_frames, fps)
    scale = metas["vae"].cfg.scale
    size = f"{width}x{height}x{num_frames} at {fps:g} fps, batch {batch}"
    ctx_v = cfg.inner_dim if cfg.caption_proj_before_connector else cfg.caption_channels
    ctx_a = cfg.audio_inner_dim if cfg.caption_proj_before_connector else cfg.caption_channels
    guided = [g for g in (av.video, av.audio)]
    rows = batch * (1 + any(g.cfg_scale > 1 for g in guided) + any(g.stg_scale > 0 for g in guided)
                    + any(g.modality_scale != 1 for g in guided))
    cache: dict = {}

    def forward_peak(r, h, w):
        f, hl, wl = video_latent_shape(num_frames, h, w, scale)
        T = f * hl * wl
        key = (r, h, w)
        if key not in cache:
            model = tr.module.to(dtype)

            def run():
                def stream(tokens, channels, axes, ctx):
                    return StreamInput(x=torch.empty(r, tokens, channels, dtype=dtype, device=META),
                                       timesteps=torch.empty(r, 1, device=META), sigma=torch.empty(r, device=META),
                                       positions=torch.empty(r, axes, tokens, 2, device=META),
                                       context=torch.empty(r, S, ctx, dtype=dtype, device=META))

                return model(stream(T, cfg.in_channels, 3, ctx_v), stream(Ta, cfg.audio_in_channels, 1, ctx_a))

            cache[key] = traced_peak(run)
        return cache[key], T

    if mode == "lora":
        adapters = _adapter_bytes(build)
        notes.append("training on cached text features: the connectors and Gemma are not in the step")

        fv, hv, wv = video_latent_shape(num_frames, height, width, scale)
        T = fv * hv * wv
        notes.append("activations: ltx.ltx2.memory's closed form and measured constants (bf16: derived, see there)")

        def evaluate_lora(s: Settings):
            peak = batch * _lora_activations(T, Ta, tr.layers, cfg.inner_dim, cfg.audio_inner_dim, compute,
                                             s.checkpointing)
            w = tr.weight_bytes(s.weights, compute, s.offload, s.prefetch) + adapters
            return [Stage("LoRA step (forward + backward)", w, peak, f"{T} video + {Ta} audio x {batch}")], list(notes)

        return choose(evaluate_lora, lora_candidates(), model=preset.name, mode=mode, size=size, budget=budget,
                      reserve=reserve, fixed=fixed)

    sizes = [(height // 2, width // 2), (height, width)] if av.pipeline.two_stages else [(height, width)]
    stage_rows = [rows, batch] if av.pipeline.two_stages else [rows]  # stage 2 samples without guidance
    f, hl, wl = video_latent_shape(num_frames, height, width, scale)
    vae, up = metas["vae"], metas.get("upsampler")
    bytes_of = {k: _count(m) * compute for k, m in metas.items() if k != "transformer"}
    text_bytes = text_params * compute

    def peak_of(key, run):
        if key not in cache:
            cache[key] = traced_peak(run)
        return cache[key]

    def decode_peak(tiled: bool) -> int:
        model = vae.to(dtype)
        z = (batch, vae.cfg.latent_channels, f, hl, wl)
        return peak_of(("decode", tiled), lambda: model.tiled_decode(torch.empty(z, dtype=dtype, device=META),
                                                                      DecodeTiling()) if tiled else
                       model.decode(torch.empty(z, dtype=dtype, device=META)))

    def upsample_peak(h: int, w: int) -> int:
        model, shape = up.to(dtype), (batch, vae.cfg.latent_channels, *video_latent_shape(num_frames, h, w, scale))
        return peak_of("up", lambda: model(torch.empty(shape, dtype=dtype, device=META)))

    def audio_peak() -> int:
        a, voc = metas["audio_vae"].to(dtype), metas["vocoder"].to(dtype)
        za = (batch, a.cfg.z_channels, Ta, a.cfg.latent_mel_bins)
        return peak_of("audio", lambda: voc(a.decode(torch.empty(za, dtype=dtype, device=META))))

    def evaluate(s: Settings):
        t_bytes = tr.weight_bytes(s.weights, compute, s.offload, s.prefetch)
        everything = tr.total_bytes(s.weights, compute) + sum(bytes_of.values())
        text_on = text_bytes if s.text_encoder_device == "device" else 0
        none = s.offload == "none"
        gemma = "Gemma 4" if preset.av.model_version.startswith("2.5") else "Gemma 3"
        stages = [Stage(f"text encoder ({gemma})", text_on + (everything if none else 0), 0, f"{S} text tokens"),
                  Stage("text connectors", everything if none else bytes_of["text"], 0, "")]
        for k, ((h, w), r) in enumerate(zip(sizes, stage_rows)):
            peak, T = forward_peak(r, h, w)
            stages.append(Stage(f"denoise stage {k + 1}", everything if none else t_bytes, peak,
                                f"{T} video + {Ta} audio x {r} rows"))
            if k == 0 and len(sizes) > 1:
                stages.append(Stage("latent upsampler", everything if none else bytes_of["upsampler"],
                                    upsample_peak(h, w), ""))
        stages.append(Stage("VAE decode" + (" (tiled)" if s.vae_tiling else ""), everything if none else
                            bytes_of["vae"], decode_peak(s.vae_tiling), f"latent {(f, hl, wl)}"))
        stages.append(Stage("audio decode + vocoder", everything if none else bytes_of["audio_vae"]
                            + bytes_of["vocoder"], audio_peak(), f"{Ta} audio latents"))
        return stages, list(notes)

    # the LTX-2 pipelines decode untiled (generate has no VAE tiling for them): the planner does not offer it
    untiled = [c for c in inference_candidates() if not c.vae_tiling]
    return choose(evaluate, untiled, model=preset.name, mode=mode, size=size, budget=budget,
                  reserve=reserve, fixed=fixed)


# ------------------------------------------------------------------------------------------- entry point


def plan_memory(model: str | ModelPreset = "ltx-demo", *, height: int | None = None, width: int | None = None,
                num_frames: int | None = None, batch: int = 1, mode: str = "inference", budget: str | float = "24GB",
                dtype: str = "bf16", reserve: str | float = "2GB", weights: str | None = None,
                offload: str | None = None, vae_tiling: bool | None = None,
                checkpointing: bool | None = None) -> Plan:
    """The plan for `model` (a preset name or ModelPreset) at height x width x num_frames (default: the
    preset's) that fits `budget`: the first of the candidate settings (`ltx.core.memory_plan`) whose peak +
    `reserve` fits, with the table of its stages; `weights` / `offload` / `vae_tiling` / `checkpointing` pin a
    setting. dtype: the compute dtype ("bf16" on a GPU, "fp32" on a CPU)."""
    preset = model if isinstance(model, ModelPreset) else load_preset(model)
    g = preset.generation
    height, width = height or g.height, width or g.width
    num_frames = num_frames or g.num_frames
    for name, v in (("height", height), ("width", width), ("num_frames", num_frames), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}={v!r} is not supported (supported: a positive integer)")
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not supported (supported: {', '.join(MODES)})")
    if dtype not in COMPUTE_BYTES:
        raise ValueError(f"dtype={dtype!r} is not supported (supported: {', '.join(COMPUTE_BYTES)})")
    if weights is not None and weights not in WEIGHT_FORMATS:
        raise ValueError(f"weights={weights!r} is not supported (supported: {', '.join(WEIGHT_FORMATS)})")
    if offload is not None and offload not in ("none", "model", "blocks"):
        raise ValueError(f"offload={offload!r} is not supported (supported: none, model, blocks)")
    fixed = {"weights": weights, "offload": offload, "vae_tiling": vae_tiling, "checkpointing": checkpointing}
    args = (preset, height, width, num_frames, batch, mode, COMPUTE_BYTES[dtype], parse_budget(budget),
            parse_budget(reserve) if reserve not in (0, "0") else 0, fixed)
    return _plan_ltx2(*args) if preset.is_ltx2 else _plan_ltxv(*args)


__all__ = ["GB", "Plan", "Settings", "Stage", "plan_memory"]
