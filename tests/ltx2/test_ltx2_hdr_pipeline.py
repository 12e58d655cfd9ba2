"""The HDR IC-LoRA pipeline (`ltx.ltx2.pipelines.hdr_ic_lora`, the official `HDRICLoraPipeline`) on tiny random
LTX-2.3 weights (tests/ltx2/ltx2_tiny.py), against diffusers 0.42.1's `LTX2HDRPipeline` on the same weights, and
its stage-2 tiling against the official ltx-core `tiling.py` run from the local mirror (tests/ltx2/official_mirror.py).

diffusers' pipeline is one stage; its docstring runs the official two stages as two calls with the x2 upsampler
between them, which is what the test does: stage 1 at half size (the 8 distilled sigmas), our upsampler on its
final latent (the upsampler's parity is test_ltx2_upsampler.py's), stage 2 at full size with latents= and the
first two stage-2 distilled sigmas. Compared: every step's latents (generated and reference tokens) of both stages,
the decoded pixels, and the HDR frames. What differs, and what the test does about it:
- Audio. The official pipeline is video only (no audio tokens, no A<->V attention); diffusers' transformer needs
  audio inputs, so it runs the audio stream on a noise latent that stays as drawn. Our tiny transformer's
  audio->video attention output projections are zeroed on both sides, so audio cannot reach the video there and
  the two video streams must agree; the audio noise diffusers draws after the video noise changes nothing here.
- Noise. Both draw the stage's noise over the packed (B, tokens + reference tokens, C) sequence from one generator
  (the same seed, the same draw); stage 2 uses the official per-tile seed (seed + tile index, tile 0 untiled).
- Stage 2's latent enters diffusers de-normalized (its `latents=` normalizes again): a float32 round trip through
  the VAE statistics, (x std + mean - mean) / std, which moves it by ~1e-7 before the first step.
- The LogC3 expansion. diffusers does not clamp the expanded light at 0 (README); its frames are compared clamped.
  The expansion multiplies a code difference by up to ~500 near code 1, so the frames are compared where the
  pipelines' own outputs are (the decoded codes, <= 1e-5), and diffusers' expansion of *its* codes against ours of
  the same codes (0.0).
- The reference clip is given at the stage-1 reference size: neither side upscales a smaller reference (both pad
  it), so no resize differs in rounding (diffusers normalizes before resizing, the official after)."""

from __future__ import annotations

import dataclasses
import types

import ltx2_tiny
import numpy as np
import pytest
import torch
from official_mirror import load_official
from test_ltx2_25 import files  # noqa: F401  (the module fixture: tiny 2.5 split files, Gemma 4, media)

from ltx.ltx2 import checkpoint as ckpt_io
from ltx.ltx2 import diffusers_components as dc
from ltx.ltx2 import pipelines
from ltx.ltx2.diffusers_layout import diffusers_transformer_config, transformer_to_diffusers
from ltx.ltx2.hdr import Transfer, decode_hdr
from ltx.ltx2.patchify import unpatchify_video
from ltx.ltx2.pipelines import AVModels, AVRequest, Prompt
from ltx.ltx2.sched import DISTILLED_SIGMAS

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = 1e-5
H, W, NF, FPS, SEED = 128, 128, 9, 24.0, 7
STAGE_2 = torch.tensor(pipelines.HDR_STAGE_2_SIGMAS)
STAGE_1 = torch.tensor(DISTILLED_SIGMAS)


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


def _strict(module, state_dict):
    module.load_state_dict(state_dict, strict=True)
    return module.eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Our modules (the tiny 2.3 bundle, the a2v attention's output zeroed; a tiny x2 upsampler), and diffusers'
    LTX2HDRPipeline on the same weights."""
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2 import vocoder as diffusers_vocoder
    from diffusers.pipelines.ltx2.pipeline_ltx2_hdr_lora import LTX2HDRPipeline
    from test_ltx2_pipeline import _upsampler

    base, _ = ltx2_tiny.official_file(tmp_path_factory.mktemp("hdr") / "tiny-2.3.safetensors", "2.3")
    m = ckpt_io.load(base)
    with torch.no_grad():
        for block in m["transformer"].transformer_blocks:
            block.audio_to_video_attn.to_out[0].weight.zero_()
            block.audio_to_video_attn.to_out[0].bias.zero_()
    _, m["upsampler"] = _upsampler()
    transformer = _strict(LTX2VideoTransformer3DModel(**diffusers_transformer_config(m["transformer"].cfg)),
                          transformer_to_diffusers(m["transformer"].state_dict()))
    config, sd = dc.video_vae_to_diffusers(m["vae"].cfg, m["vae"].state_dict())
    vae = _strict(AutoencoderKLLTX2Video(**config), sd)
    config, sd = dc.audio_vae_to_diffusers(m["audio_vae"].cfg, m["audio_vae"].state_dict())
    audio_vae = _strict(AutoencoderKLLTX2Audio(**config), sd)
    name, config, sd = dc.vocoder_to_diffusers(m["vocoder"].cfg, m["vocoder"].state_dict())
    vocoder = _strict(getattr(diffusers_vocoder, name)(**config), sd)
    ref = LTX2HDRPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, audio_vae=audio_vae,
                          text_encoder=None, tokenizer=None, connectors=None, transformer=transformer,
                          vocoder=vocoder)
    ref.set_progress_bar_config(disable=True)
    return m, ref


def _contexts(m) -> Prompt:
    g = torch.Generator().manual_seed(1)
    cfg = m["transformer"].cfg
    return Prompt(torch.randn(1, 16, cfg.cross_attention_dim, generator=g),
                  torch.randn(1, 16, cfg.audio_cross_attention_dim, generator=g))


def _reference(downscale: int) -> torch.Tensor:
    """An SDR clip (F, h, w, 3) in 0..255 at the stage-1 reference size."""
    g = torch.Generator().manual_seed(2)
    return (torch.rand(NF, H // 2 // downscale, W // 2 // downscale, 3, generator=g) * 255).round()


def _ours(m, positive, reference, downscale, tiling=None, steps=None):
    models = AVModels(m["transformer"], m["vae"], m["audio_vae"], m["vocoder"], m["upsampler"])
    request = AVRequest(height=H, width=W, num_frames=NF, fps=FPS, sigmas=STAGE_1, stage_2_sigmas=STAGE_2,
                        generator=torch.Generator().manual_seed(SEED),
                        on_step=None if steps is None else (lambda s, i, v, a: steps.append((s, v.x.clone()))))
    with torch.no_grad():
        return pipelines.hdr_ic_lora(models, positive, request, reference, reference_downscale=downscale,
                                     tiling=tiling)


def _diffusers(ref, m, positive, reference, downscale):
    """diffusers' two calls: (per-step packed latents of each stage, decoded pixels, HDR frames)."""
    from diffusers.pipelines.ltx2.pipeline_ltx2_hdr_lora import LTX2HDRReferenceCondition

    from ltx.ltx2.upsampler import upsample_latent

    frames = (reference / 255.0).numpy().astype(np.float32)  # (F, h, w, 3) in [0, 1]
    steps = {1: [], 2: []}
    decoded = []
    decode = ref.vae.decode

    def spy(*args, **kwargs):
        out = decode(*args, **kwargs)
        decoded.append(out[0])
        return out

    def call(stage, **kwargs):
        return ref(reference_conditions=[LTX2HDRReferenceCondition(frames=frames, strength=1.0)],
                   reference_downscale_factor=downscale, connector_video_embeds=positive.video,
                   connector_audio_embeds=positive.audio, num_frames=NF, frame_rate=FPS, return_dict=False,
                   callback_on_step_end=lambda pipe, i, t, kw: steps[stage].append(kw["latents"].clone()) or {},
                   callback_on_step_end_tensor_inputs=["latents"], **kwargs)[0]

    ref.vae.decode = spy
    try:
        with torch.no_grad():
            call(1, height=H // 2, width=W // 2, sigmas=[float(s) for s in DISTILLED_SIGMAS[:-1]],
                 generator=torch.Generator().manual_seed(SEED), output_type="latent")
            n = (NF - 1) // 8 + 1
            latent = unpatchify_video(steps[1][-1][:, :n * 2 * 2], n, 2, 2)  # the generated tokens
            stats = m["vae"].per_channel_statistics
            up = upsample_latent(m["upsampler"], latent, stats.mean, stats.std)
            mean = ref.vae.latents_mean.view(1, -1, 1, 1, 1)
            std = ref.vae.latents_std.view(1, -1, 1, 1, 1)
            up = up * std / ref.vae.config.scaling_factor + mean
            hdr = call(2, height=H, width=W, latents=up, sigmas=[float(s) for s in STAGE_2[:-1]],
                       noise_scale=float(STAGE_2[0]), generator=torch.Generator().manual_seed(SEED),
                       output_type="pt")
    finally:
        ref.vae.decode = decode
    return steps, decoded[-1], hdr


@pytest.mark.parametrize("downscale", [1, 2])
def test_hdr_ic_lora_matches_diffusers_step_by_step(tiny, downscale, capsys):
    """Untiled, both stages: every step's latents, the decoded codes, the HDR frames (see the module docstring)."""
    m, ref = tiny
    positive, reference = _contexts(m), _reference(downscale)
    steps = []
    out = _ours(m, positive, reference, downscale, steps=steps)
    ref_steps, ref_pixels, ref_hdr = _diffusers(ref, m, positive, reference, downscale)
    ours = {s: [x for t, x in steps if t == s] for s in (1, 2)}
    assert [len(ours[1]), len(ours[2])] == [len(ref_steps[1]), len(ref_steps[2])] == [8, 2]
    gaps = {s: [maxdiff(a, b) for a, b in zip(ours[s], ref_steps[s])] for s in (1, 2)}
    pixels = maxdiff(out.video, ref_pixels.float())
    frames = maxdiff(out.linear, ref_hdr.clamp(min=0))
    n = (NF - 1) // 8 + 1
    with torch.no_grad():  # our decoder on diffusers' final latent: how much of `pixels` is the decoder's own
        own = maxdiff(m["vae"].decode(unpatchify_video(ref_steps[2][-1][:, :n * 4 * 4], n, 4, 4)), ref_pixels)
    with capsys.disabled():
        print(f"\nHDR IC-LoRA vs diffusers, downscale {downscale}: stage 1 {max(gaps[1]):.2e}, stage 2 "
              f"{max(gaps[2]):.2e}, decoded {pixels:.2e} (the decoders alone {own:.2e}), HDR frames {frames:.2e}")
    assert max(gaps[1]) <= TOL and max(gaps[2]) <= TOL and pixels <= TOL and own <= TOL
    # diffusers' LogC3 expansion of its own codes, clamped at 0, is ours of the same codes
    assert maxdiff(decode_hdr(ref_pixels, Transfer.LOGC3), ref_hdr.clamp(min=0)) == 0.0
    assert out.linear.shape == (1, NF, H, W, 3) and out.linear.min() >= 0
    assert out.linear.max() > 1.0  # HDR: light above diffuse white comes out


def test_one_tile_is_the_untiled_run_and_tiles_differ(tiny):
    """Stage 2 over one tile per axis (the blend buffer, slices and weights in play) == the untiled pass, bitwise;
    the official 2 x 2 x 2 layout (clamped to the 2 x 4 x 4 latent: 2 x 2 x 2 tiles) gives a different, finite
    result."""
    m, _ = tiny
    positive, reference = _contexts(m), _reference(1)
    untiled = _ours(m, positive, reference, 1)
    one = _ours(m, positive, reference, 1, tiling=((1, 0), (1, 0), (1, 0)))
    assert torch.equal(one.video_latent, untiled.video_latent) and torch.equal(one.linear, untiled.linear)
    tiled = _ours(m, positive, reference, 1, tiling=pipelines.HDR_STAGE_2_TILING)
    assert torch.isfinite(tiled.linear).all() and not torch.equal(tiled.video_latent, untiled.video_latent)


def _official_tiling():
    core = types.ModuleType("ltx_core")
    core.__path__ = []
    typ = types.ModuleType("ltx_core.types")
    typ.SpatioTemporalScaleFactors = typ.VideoPixelShape = object
    mods = load_official({"ltx_core.tiling": "packages/ltx-core/src/ltx_core/tiling.py"},
                         {"ltx_core": core, "ltx_core.types": typ})
    return mods["ltx_core.tiling"]


def _official_clamp(count: int, overlap: int, size: int) -> tuple[int, int]:
    """hdr_ic_lora._clamp_dim_tiling's rule (that module imports the whole pipeline stack, so it is restated)."""
    if count <= 1:
        return count, overlap
    if size < count:
        return 1, 0
    return count, min(overlap, size - count)


@pytest.mark.parametrize("shape", [(2, 4, 4), (16, 32, 48), (5, 7, 3), (31, 17, 20), (1, 2, 40)])
def test_latent_tiles_match_the_official_tiler(shape):
    """Our tiles (order, slices, blend weights) against ltx-core's create_tiles over split_by_count (non-causal
    time, identity mapping) with the pipeline's clamp, bitwise; the weights sum to 1 over the grid."""
    tiling = _official_tiling()
    layout = [(2, 8), (2, 6), (2, 6)] if shape != (31, 17, 20) else [(3, 8), (2, 6), (4, 2)]
    splitters = []
    for size, (count, overlap) in zip(shape, layout):
        count, overlap = _official_clamp(count, overlap, size)
        splitters.append(tiling.split_by_count(count, overlap) if count > 1 else tiling.DEFAULT_SPLIT_OPERATION)
    ref = tiling.create_tiles(torch.Size(shape), splitters, [tiling.identity_mapping_operation] * 3)
    ours = pipelines.latent_tiles(shape, layout)
    assert len(ours) == len(ref)
    total = torch.zeros(shape)
    for a, b in zip(ours, ref):
        assert (a.frames, a.rows, a.columns) == b.in_coords == b.out_coords
        assert torch.equal(a.weight, b.blend_mask.expand(a.weight.shape))
        total[a.frames, a.rows, a.columns] += a.weight
    assert (total - 1).abs().max() <= 1e-6


def test_bad_inputs_are_refused_in_one_line(tiny):
    m, _ = tiny
    positive = _contexts(m)
    models = AVModels(m["transformer"], m["vae"], m["audio_vae"], m["vocoder"], m["upsampler"])
    request = AVRequest(height=H, width=W, num_frames=NF, fps=FPS, sigmas=STAGE_1, stage_2_sigmas=STAGE_2)
    with pytest.raises(ValueError, match=r"the reference must be an SDR clip \(F, H, W, 3\) of at least 9 frames"):
        pipelines.hdr_ic_lora(models, positive, request, _reference(1)[:5])
    with pytest.raises(ValueError, match="reference downscale 3: the stage-1 size 64x64 must be divisible by it"):
        pipelines.hdr_ic_lora(models, positive, request, _reference(1), reference_downscale=3)
    with pytest.raises(ValueError, match="spatial upsampler"):
        pipelines.hdr_ic_lora(dataclasses.replace(models, upsampler=None), positive, request, _reference(1))
    with pytest.raises(ValueError, match="samples Euler in both stages"):
        pipelines.hdr_ic_lora(models, positive, dataclasses.replace(request, ancestral_generator=torch.Generator()),
                              _reference(1))


# ---------------------------------------------------------------------------------------------------- generate


@pytest.fixture(scope="module")
def hdr_lora(files, tmp_path_factory):  # noqa: F811
    """A tiny HDR IC-LoRA: LoRA weights for the tiny transformer with the official HDR metadata."""
    from test_ltx2_generate import _lora_file

    return _lora_file(tmp_path_factory.mktemp("hdrlora") / "hdr.safetensors", 4, {"hdr_transform": "logc3"})


def test_generate_writes_exr_frames_and_the_hlg_master(files, hdr_lora, tmp_path):  # noqa: F811
    """model=ltx-2.5-22b-distilled hdr_lora=... control=[sdr clip]: the sRGB preview mp4, half-float EXR frames of
    the light (linear Rec.709, what the pipeline returns) and the BT.2020 / HLG master; progress ticks: 8 + 2 a
    tile."""
    import av
    from test_ltx2_25 import _preset

    import infer.generate as app
    import ltx
    from ltx.ltx2.hdr import read_exr_frames, read_exr_header

    cfg = app.GenerateConfig(model=_preset(), checkpoint=str(files["folder"]), text_encoder=str(files["gemma4"]),
                             upsampler_checkpoint=str(files["up"]), hdr_lora=str(hdr_lora),
                             control=[app.ControlSpec(path=str(files["control"]))], prompts=["red ball"], height=64,
                             width=64, num_frames=9, fps=24.0, seed=3, device="cpu", output_dir=str(tmp_path / "a"))
    (path,) = app.run(cfg)
    folder = path.with_name(path.stem + "_hdr_exr")
    exr = read_exr_frames(folder)
    assert exr.shape == (9, 64, 64, 3) and read_exr_header(folder / "frame_00000.exr")["colorSpace"] == "sRGB"
    pipe = ltx.load_pipeline(files["folder"], model=_preset(), text_encoder=files["gemma4"], upsampler=files["up"],
                             hdr_lora=hdr_lora, device="cpu", dtype="float32")
    ticks = []
    out = pipe("red ball", seed=3, height=64, width=64, num_frames=9, frame_rate=24.0,
               video_conditioning=[files["control"]], progress=lambda: ticks.append(1))
    linear = decode_hdr(out.hdr_video, Transfer.LOGC3)[0]
    assert out.hdr_transfer is Transfer.LOGC3 and linear.max() > 1.0
    assert len(ticks) == 8 + 2 * 8  # the 2 x 2 x 2 stage-2 latent: 2 x 2 x 2 tiles of one cell
    # the EXR frames are that light as half floats (relative error <= 2^-11)
    assert ((exr - linear).abs() / linear.abs().clamp(min=2 ** -14)).max() <= 2 ** -11
    with av.open(str(path.with_name(path.stem + "_hdr.mp4"))) as c:
        frame = next(c.decode(video=0))
        assert frame.format.name == "yuv420p10le" and frame.color_trc == 18  # ARIB STD-B67 (HLG)


def test_generate_refuses_bad_hdr_inputs_in_one_line(files, hdr_lora, tmp_path):  # noqa: F811
    from test_ltx2_25 import _preset

    import infer.generate as app
    from infer.output import InputError

    base = dict(checkpoint=str(files["folder"]), text_encoder=str(files["gemma4"]),
                upsampler_checkpoint=str(files["up"]), prompts=["red ball"], height=64, width=64, num_frames=9,
                fps=24.0, seed=3, device="cpu", output_dir=str(tmp_path / "a"))
    control = [app.ControlSpec(path=str(files["control"]))]
    with pytest.raises(InputError, match=r"^the HDR IC-LoRA pipeline needs one SDR reference video in "
                                         r"video_conditioning \(generate: control=\[\{path: sdr.mp4\}\]\), got 0$"):
        app.run(app.GenerateConfig(model=_preset(), hdr_lora=str(hdr_lora), **base))
    with pytest.raises(InputError, match=r"^hdr_lora ic.safetensors: not an HDR IC-LoRA \(its metadata has no "
                                         r"hdr_transform or use_hdr_transform\); give the HDR IC-LoRA file"):
        app.run(app.GenerateConfig(model=_preset(), hdr_lora=str(files["ic_lora"]), control=control, **base))
    with pytest.raises(InputError, match=r"^hdr_lora: the HDR IC-LoRA pipeline runs on the distilled 22B model "
                                         r"\(model=ltx-2.3-22b-distilled or ltx-2.5-22b-distilled\), not "
                                         r"ltx-2.5-22b-dev"):
        app.run(app.GenerateConfig(model=_preset("ltx-2.5-22b-dev"), hdr_lora=str(hdr_lora), control=control,
                                   distilled_lora=str(files["lora"]), **base))
    with pytest.raises(InputError, match=r"^hdr_lora .*nope.safetensors does not exist; the HDR IC-LoRA file"):
        app.run(app.GenerateConfig(model=_preset(), hdr_lora=str(tmp_path / "nope.safetensors"), control=control,
                                   **base))


# ------------------------------------------------------------------------------------ size alignment, high quality


def _run(m, positive, reference, height, width, num_frames, *, high_quality=False,
         tiling=pipelines.HDR_STAGE_2_TILING, models=None, dtype=torch.float32):
    models = models or AVModels(m["transformer"], m["vae"], m["audio_vae"], m["vocoder"], m["upsampler"])
    request = AVRequest(height=height, width=width, num_frames=num_frames, fps=FPS, sigmas=STAGE_1,
                        stage_2_sigmas=STAGE_2, generator=torch.Generator().manual_seed(SEED), dtype=dtype)
    with torch.no_grad():
        return pipelines.hdr_ic_lora(models, positive.__class__(positive.video.to(dtype), positive.audio.to(dtype)),
                                     request, reference, tiling=tiling, high_quality=high_quality)


def _official_resize():
    from official_mirror import load_official

    stubs = {n: types.ModuleType(n) for n in ("ltx_pipelines", "ltx_pipelines.utils", "ltx_pipelines.utils.media_io")}
    name = "ltx_pipelines.utils.media_io.resize"
    return load_official({name: "packages/ltx-pipelines/src/ltx_pipelines/utils/media_io/resize.py"}, stubs)[name]


def test_generation_size_is_the_official_align_resolution():
    """hdr_generation_size against the official align_resolution(width, height, REFLECT_PAD, divisor=64) (the
    pipeline's ALIGNMENT_DIVISOR; its crop-back size is the request itself) on every size 1..300 and a few large
    ones; a size that is not a positive integer is one line."""
    resize = _official_resize()
    sizes = [*range(1, 301), 511, 512, 513, 704, 720, 1080, 1088, 2160, 3840, 4096]
    for h in sizes:
        gen_w, gen_h, crop_w, crop_h = resize.align_resolution(h + 17, h, resize.ResizeMode.REFLECT_PAD, divisor=64)
        assert pipelines.hdr_generation_size(h, h + 17) == (gen_h, gen_w) and (crop_h, crop_w) == (h, h + 17)
        assert gen_h >= pipelines.HDR_ALIGNMENT  # the official MIN_RESOLUTION check can only fail below 1
    for bad in (0, -64, 1.5, True, None):
        with pytest.raises(ValueError, match=r"^height must be a positive integer, got "):
            pipelines.hdr_generation_size(bad, 64)
    with pytest.raises(ValueError, match=r"^width must be a positive integer, got 0$"):
        pipelines.hdr_generation_size(64, 0)


def test_unaligned_size_is_the_aligned_run_cropped(tiny):
    """40 x 56 runs at 64 x 64 and crops the top-left 40 x 56: the frames (codes and light) equal the 64 x 64 run's
    top-left corner bitwise, the latent is that run's; 1 x 1 (-> 64 x 64) too."""
    m, _ = tiny
    positive = _contexts(m)
    reference = _reference(2)[:, :24, :]  # (9, 24, 32, 3): fitted (reflect pad) to each stage's size
    full = _run(m, positive, reference, 64, 64, NF)
    for h, w in ((40, 56), (1, 1)):
        out = _run(m, positive, reference, h, w, NF)
        assert out.video.shape == (1, 3, NF, h, w) and out.linear.shape == (1, NF, h, w, 3)
        assert torch.equal(out.video, full.video[..., :h, :w]) and torch.equal(out.linear, full.linear[:, :, :h, :w])
        assert torch.equal(out.video_latent, full.video_latent)


def test_doubled_reference_closed_form():
    """hdr_doubled_reference: frame i of the 2 N - 1 is loaded frame i // 2 (the official repeat_interleave(2) cut to
    the generated count, from (gen + 1) // 2 = N loaded frames); the counts are 8k + 1 when N is."""
    x = torch.arange(5 * 2 * 3, dtype=torch.float32).reshape(5, 2, 3)
    out = pipelines.hdr_doubled_reference(x, True)
    assert out.shape == (9, 2, 3) and all(torch.equal(out[i], x[i // 2]) for i in range(9))
    assert pipelines.hdr_doubled_reference(x, False) is x
    y = x.permute(1, 0, 2)[None]  # (1, 2, 5, 3): the frames on dim 2
    assert torch.equal(pipelines.hdr_doubled_reference(y, True, dim=2), out.permute(1, 0, 2)[None])
    for n in (1, 9, 17, 121, 161):
        gen = pipelines.hdr_generation_frames(n, True)
        assert gen == 2 * n - 1 and (gen - 1) % 8 == 0 and (gen + 1) // 2 == n
        assert len(range(gen)[::2]) == n and pipelines.hdr_generation_frames(n, False) == n


def test_high_quality_is_the_doubled_run_every_other_frame(tiny):
    """high_quality on 9 frames == the plain pipeline on 17 frames whose reference is the 9 frames each twice (cut
    to 17), every other decoded frame (codes and light bitwise); the latent is that run's (3 latent frames); an
    unaligned size crops as well."""
    m, _ = tiny
    positive = _contexts(m)
    reference = _reference(2)  # (9, 32, 32, 3)
    hq = _run(m, positive, reference, 64, 64, NF, high_quality=True)
    doubled = _run(m, positive, pipelines.hdr_doubled_reference(reference, True), 64, 64, 2 * NF - 1)
    assert hq.video.shape == (1, 3, NF, 64, 64) and hq.linear.shape == (1, NF, 64, 64, 3)
    assert hq.video_latent.shape[2] == 3
    assert torch.equal(hq.video, doubled.video[:, :, ::2]) and torch.equal(hq.linear, doubled.linear[:, ::2])
    assert torch.equal(hq.video_latent, doubled.video_latent)
    plain = _run(m, positive, reference, 64, 64, NF)
    assert not torch.equal(plain.video, hq.video)
    cropped = _run(m, positive, reference, 48, 40, NF, high_quality=True)
    assert torch.equal(cropped.linear, hq.linear[:, :, :48, :40])


def test_high_quality_bad_inputs_are_one_line(tiny):
    m, _ = tiny
    positive = _contexts(m)
    with pytest.raises(ValueError, match=r"^high_quality must be True or False, got 'yes'$"):
        _run(m, positive, _reference(1), 64, 64, NF, high_quality="yes")
    with pytest.raises(ValueError, match=r"^num_frames=10 must be 8k \+ 1; nearest valid: 9 or 17$"):
        _run(m, positive, _reference(1), 64, 64, 10, high_quality=True)
    with pytest.raises(ValueError, match=r"^the reference must be an SDR clip \(F, H, W, 3\) of at least 9 frames"):
        _run(m, positive, _reference(1)[:5], 64, 64, NF, high_quality=True)


def test_bfloat16_run_decodes_in_float32(tiny):
    """A bfloat16 run decodes in float32 (the official _decode_video): the decoder sees float32 weights and a float32
    latent, the frames equal a float32 copy of the VAE decoding the run's latent, bitwise, and the VAE is back in
    bfloat16 afterwards (bfloat16 -> float32 -> bfloat16 is exact: its weights are unchanged)."""
    import copy

    m, _ = tiny
    bf = {k: copy.deepcopy(m[k]).to(torch.bfloat16) for k in ("transformer", "vae", "upsampler")}
    before = {k: v.clone() for k, v in bf["vae"].state_dict().items()}
    seen = []
    hook = bf["vae"].decoder.register_forward_pre_hook(
        lambda mod, args: seen.append((args[0].dtype, next(mod.parameters()).dtype)))
    models = AVModels(bf["transformer"], bf["vae"], m["audio_vae"], m["vocoder"], bf["upsampler"])
    out = _run(m, _contexts(m), _reference(2), 64, 64, NF, models=models, dtype=torch.bfloat16)
    hook.remove()
    assert seen == [(torch.float32, torch.float32)] and out.video_latent.dtype == torch.bfloat16
    assert all(v.dtype == torch.bfloat16 for v in bf["vae"].state_dict().values())
    assert all(torch.equal(before[k], v) for k, v in bf["vae"].state_dict().items())
    with torch.no_grad():
        want = copy.deepcopy(bf["vae"]).float().decode(out.video_latent.float())
    assert out.video.dtype == torch.float32 and torch.equal(out.video, want)


def test_generate_high_quality_at_an_unaligned_size(files, hdr_lora, tmp_path):  # noqa: F811
    """hdr_high_quality=true at 48 x 64 (generated at 64 x 64, 17 frames): 9 EXR frames of 48 x 64, the sRGB preview
    and the HLG master at that size; the API's frames / codes / light agree on the shape and the progress ticks are
    8 + 2 a tile of the 3 x 2 x 2 latent (2 x 2 x 2 tiles); the API's bad requests are one line each."""
    import av
    from test_ltx2_25 import _preset

    import infer.generate as app
    import ltx
    from ltx.ltx2.hdr import read_exr_frames

    cfg = app.GenerateConfig(model=_preset(), checkpoint=str(files["folder"]), text_encoder=str(files["gemma4"]),
                             upsampler_checkpoint=str(files["up"]), hdr_lora=str(hdr_lora), hdr_high_quality=True,
                             control=[app.ControlSpec(path=str(files["control"]))], prompts=["red ball"], height=48,
                             width=64, num_frames=9, fps=24.0, seed=3, device="cpu", output_dir=str(tmp_path / "a"))
    (path,) = app.run(cfg)
    assert read_exr_frames(path.with_name(path.stem + "_hdr_exr")).shape == (9, 48, 64, 3)
    for mp4 in (path, path.with_name(path.stem + "_hdr.mp4")):
        with av.open(str(mp4)) as c:
            s = c.streams.video[0]
            assert (s.frames or sum(1 for _ in c.decode(video=0)), s.codec_context.height,
                    s.codec_context.width) == (9, 48, 64)
    pipe = ltx.load_pipeline(files["folder"], model=_preset(), text_encoder=files["gemma4"], upsampler=files["up"],
                             hdr_lora=hdr_lora, device="cpu", dtype="float32")
    ticks = []
    out = pipe("red ball", seed=3, height=48, width=64, num_frames=9, frame_rate=24.0, hdr_high_quality=True,
               video_conditioning=[files["control"]], progress=lambda: ticks.append(1))
    assert out.frames.shape == (1, 3, 9, 48, 64) and out.hdr_video.shape == (1, 3, 9, 48, 64)
    assert out.video_latent.shape[2:] == (3, 2, 2) and len(ticks) == 8 + 2 * 8
    control = [files["control"]]
    with pytest.raises(ValueError, match=r"^hdr_high_quality must be True or False, got 1$"):
        pipe.check(height=64, width=64, num_frames=9, video_conditioning=control, hdr_high_quality=1)
    with pytest.raises(ValueError, match=r"^height must be a positive integer, got 0$"):
        pipe.check(height=0, width=64, num_frames=9, video_conditioning=control)
    with pytest.raises(ValueError, match=r"^num_frames=12 must be 8k \+ 1; nearest valid: 9 or 17$"):
        pipe.check(height=64, width=64, num_frames=12, video_conditioning=control, hdr_high_quality=True)
    plain = ltx.load_pipeline(files["folder"], model=_preset(), text_encoder=files["gemma4"], upsampler=files["up"],
                              device="cpu", dtype="float32")
    with pytest.raises(ValueError, match=r"^hdr_high_quality is a mode of the HDR IC-LoRA pipeline: give hdr_lora="):
        plain.check(height=64, width=64, num_frames=9, hdr_high_quality=True)
    with pytest.raises(ValueError, match=r"^height=48 must be a positive multiple of 64"):  # no hdr_lora: as before
        plain.check(height=48, width=64, num_frames=9)
