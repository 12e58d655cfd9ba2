"""DFR's spatial epilogue (`dfr.render(spatial_epilogue=True)`, ltx/ltx2/dfr.py section 9) against the epilogue
diffusers 0.42.1 documents for its LTX-2 pipelines ("A third spatial stage"): after the chain of test_ltx2_dfr.py
(`LTX2DFRPipeline` at half size, the x2 upsampler, `LTX2DFRPipeline` with the detailing reference, one
`LTX2DFRTemporalRefinePipeline` round), the x2 spatial upsampler on the refined canvas, `rebuild_epilogue_keyframes`
on the carried keyframes (VAE decode, 8-bit, PIL Lanczos x2, VAE encode), `epilogue_tiles` cut on the round's
seams, and one more `LTX2DFRPipeline` call at twice the size (no slots, the keyframes pinned at strength 1, audio
frozen, `video_tiles`, the refined canvas as reference). Both sides: the same tiny random 2.5 transformer, tiny
upsamplers, a tiny video VAE (ours and diffusers' `AutoencoderKLLTX2Video` on the same weights), images and one
generator threaded through every pass. Compared: every transformer call's input latents (each epilogue step, tile
by tile), the rebuilt keyframes, the final latents and the decoded frames. Plus invariants: one tile covering the
grid is the untiled pass bitwise, the Lanczos stretch keeps a flat image flat, and one-line refusals."""

from __future__ import annotations

import types

import ltx2_tiny
import pytest
import torch
from diffusers.pipelines.ltx2 import dfr_layout as ref
from test_ltx2_dfr import _stubbed, diffusers_dfr_pipeline, pass_model, tiny_models, tiny_upsamplers
from test_ltx2_video_vae import METAS, tiny_meta

from ltx.ltx2 import dfr

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = 1e-5


def tiny_vaes(channels: int, seed: int):
    """Our tiny random 2.3-layout video VAE with `channels` latent channels (encoder kept at that width) and
    diffusers' `AutoencoderKLLTX2Video` on the same weights and statistics."""
    from diffusers import AutoencoderKLLTX2Video

    from ltx.ltx2 import diffusers_components as dc
    from ltx.ltx2.vae import VideoVAE, VideoVAEConfig

    meta = tiny_meta(METAS["2.3"])
    meta["latent_channels"] = channels
    for name, params in meta["encoder_blocks"]:
        if name.startswith("compress"):
            params["multiplier"] = 1
    ours = ltx2_tiny.randomize(VideoVAE(VideoVAEConfig.from_metadata(meta)), seed=seed)
    config, sd = dc.video_vae_to_diffusers(ours.cfg, ours.state_dict())
    theirs = AutoencoderKLLTX2Video(**config)
    theirs.load_state_dict(sd, strict=True)
    return ours, theirs.eval()


def test_epilogue_matches_diffusers_composed_call():
    """41 frames -> the 49-frame canvas (keyframes 24, 48), one temporal round (97 frames at 48 fps, 2 tiles, carry
    24, 48, 72, 96), then the epilogue over 13 x 16 x 16 latent cells in 2 x 2 x 2 tiles (frames cut at the round's
    seam 6, height and width overlapping by 12), 3 steps; images at frames 0 and 17 (34 in the epilogue)."""
    from diffusers import LTXEulerAncestralRFScheduler
    from diffusers.pipelines.ltx2.pipeline_ltx2_dfr_temporal_refine import LTX2DFRTemporalRefinePipeline
    from diffusers.pipelines.ltx2.utils import STAGE_2_DISTILLED_SIGMA_VALUES, trim_canvas

    from ltx.ltx2.upsampler import upsample_latent

    cfg, ours, theirs = tiny_models(seed=9)
    g = torch.Generator().manual_seed(31)
    B, C, H, W, S, fps, seed, requested, rounds = 1, cfg.in_channels, 8, 8, 5, 24.0, 777, 41, 1
    audio_ch, mel = 5, cfg.audio_in_channels // 5
    spatial, temporal = tiny_upsamplers(C, seed=3)
    our_vae, their_vae = tiny_vaes(C, seed=4)
    mean, std = their_vae.latents_mean, their_vae.latents_std
    context = torch.randn(B, S, cfg.inner_dim, generator=g)
    audio_context = torch.randn(B, S, cfg.audio_inner_dim, generator=g)
    context_mask = torch.ones(B, S, dtype=torch.long)
    images = {h: [(0, torch.randn(1, C, 1, h, h, generator=g), 1.0), (17, torch.randn(1, C, 1, h, h, generator=g),
                                                                       0.8)] for h in (H // 2, H, 2 * H)}

    def norm(x):
        return (x - mean.view(1, -1, 1, 1, 1)) / std.view(1, -1, 1, 1, 1)

    def denorm(x):
        return x * std.view(1, -1, 1, 1, 1) + mean.view(1, -1, 1, 1, 1)

    our_calls, their_calls = [], []

    stage_model = pass_model(ours, context, audio_context, context_mask, our_calls)

    def refine_model(xt, token_sigma, sigma, kft, pos, window):
        return stage_model(xt, token_sigma, sigma, kft, pos, window, torch.zeros(B))[0]

    theirs.register_forward_pre_hook(lambda _, args, kwargs: their_calls.append(kwargs["hidden_states"].clone()),
                                     with_kwargs=True)

    def with_vae(pipe, frame_scale=1):
        pipe.vae = their_vae
        # the images, already encoded at the pass' size (the second positional argument is the height); the
        # epilogue call gets them at 2**rounds times their frame, where `render` places them
        pipe.encode_conditions = lambda *args, **kwargs: [
            (p * (2**rounds if args[1] // 32 == 2 * H else 1), lat, s, 1) for p, lat, s in images[args[1] // 32]]
        return pipe

    passes, rebuilt_ours, got_keys = [], [], None

    def rebuild(keys):
        nonlocal got_keys
        got_keys = keys
        rebuilt_ours.append(dfr.rebuild_keyframes(keys, our_vae.decode, our_vae.encode))
        return rebuilt_ours[-1]

    with torch.no_grad():
        got = dfr.render(stage_model, stage_model, refine_model, num_frames=requested, latent_size=(H, W),
                         channels=C, audio_frames=round(49 / fps * 25), audio_channels=cfg.audio_in_channels, fps=fps,
                         spatial_upsample=lambda x: upsample_latent(spatial, x, mean, std),
                         temporal_upsample=lambda x: upsample_latent(temporal, x, mean, std), rounds=rounds,
                         seed=seed, generator=torch.Generator().manual_seed(seed), detailing=True,
                         conditions_half=[dfr.FrameCondition(*c) for c in images[H // 2]],
                         conditions=[dfr.FrameCondition(*c) for c in images[H]], on_pass=passes.append,
                         spatial_epilogue=True, rebuild=rebuild,
                         conditions_double=[dfr.FrameCondition(*c) for c in images[2 * H]])
        n_ours_before = len(our_calls) - 8 * len(STAGE_2_DISTILLED_SIGMA_VALUES)

        common = dict(prompt_embeds=context, prompt_attention_mask=context_mask, output_type="latent",
                      return_dict=False, generator=torch.Generator().manual_seed(seed), conditions=[])
        one = with_vae(diffusers_dfr_pipeline(theirs, context, audio_context, C, audio_ch, mel))
        v1, a1, k1, p1 = one(height=32 * H // 2, width=32 * W // 2, num_frames=requested, frame_rate=fps, **common)
        up = denorm(upsample_latent(spatial, norm(v1), mean, std))
        up_slots = denorm(upsample_latent(spatial, norm(k1), mean, std))
        v2, _, k2, p2 = one(height=32 * H, width=32 * W, num_frames=requested, frame_rate=fps, latents=up,
                            keyframes_latents=up_slots, audio_latents=a1, reference_latents=v1,
                            reference_downscale_factor=2, sigmas=list(STAGE_2_DISTILLED_SIGMA_VALUES), **common)

        class Temporal:
            dtype = torch.float32

            def __call__(self, x):  # raw in, raw out (diffusers denormalizes around it)
                return temporal(x)

        refine = with_vae(_stubbed(LTX2DFRTemporalRefinePipeline, LTXEulerAncestralRFScheduler(eta=0.5), theirs,
                                   context, audio_context, C, audio_ch, mel, temporal_latent_upsampler=Temporal()))
        v3, _, k3, p3 = refine(latents=v2, keyframes_latents=k2, keyframe_positions=p2, audio_latents=a1,
                               height=32 * H, width=32 * W, num_frames=49, frame_rate=fps, source_seconds=49 / fps,
                               condition_num_frames=requested, round_index=1, **common)
        n_theirs_before = len(their_calls)
        # the epilogue as diffusers' LTX-2 docs compose it
        refined_frames = (v3.shape[2] - 1) * 8 + 1
        up3 = denorm(upsample_latent(spatial, norm(v3), mean, std))
        rebuilt = one.rebuild_epilogue_keyframes(k3, decode_timestep=0.0, decode_noise_scale=0.0, seed=0,
                                                 device=torch.device("cpu"), dtype=torch.float32)
        tiles = ref.epilogue_tiles(latent_shape=((refined_frames - 1) // 8 + 1, 2 * H, 2 * W), frame_tiles=2**rounds,
                                   frame_seams=[ref.pixel_to_latent_index(2 * p, 8) for p in p2])
        # the pass itself on the same rebuilt keyframes (ours, denormalized): the rebuild's 8-bit codes are a
        # discontinuity (below, and test_rebuild_matches_diffusers for the rebuild on shared inputs)
        v4, _, k4, p4 = one(height=64 * H, width=64 * W, num_frames=refined_frames, frame_rate=2 * fps, latents=up3,
                            audio_latents=a1, generate_slots=False, guidance_keyframe_latents=denorm(rebuilt_ours[0]),
                            guidance_keyframe_positions=p3, reference_latents=v3,
                            sigmas=list(STAGE_2_DISTILLED_SIGMA_VALUES), freeze_audio=True, video_tiles=tiles,
                            **common)
        final = norm(trim_canvas(v4, got.num_frames, 8))
        # the frames as both pipelines return them: clamped to [-1, 1]
        frames_ours = our_vae.decode(got.latent).clamp(-1, 1)
        frames_theirs = their_vae.decode(denorm(final), None, return_dict=False)[0].clamp(-1, 1)
        same_latent = (our_vae.decode(got.latent) - their_vae.decode(denorm(got.latent), None,
                                                                     return_dict=False)[0]).abs().max().item()
        # diffusers' own rebuild of its own carry: the carry differs by the chain's rounding (<= 1e-6), which the
        # decode takes to ~6e-6 in the pixels; the 8-bit codes then differ only where a pixel sits on a half code
        codes = [[((dec.clamp(-1, 1) + 1) * 127.5) for dec in (
            our_vae.decode(got_keys[:, :, k:k + 1]),
            their_vae.decode(denorm(norm(k3[:, :, k:k + 1])), None, return_dict=False)[0])]
            for k in range(k3.shape[2])]

    assert passes == ["stage 1", "stage 2", "round 1", "epilogue"]
    assert (got.num_frames, got.fps, refined_frames, p3, p4) == (81, 48.0, 97, [24, 48, 72, 96], [24, 48, 72, 96])
    assert len(tiles) == 8 and got.latent.shape == (B, C, 11, 2 * H, 2 * W) and v4.shape[2] == 13
    assert len(our_calls) == len(their_calls) and n_ours_before == n_theirs_before
    epilogue = [(a - b).abs().max().item() for a, b in zip(our_calls[n_ours_before:], their_calls[n_theirs_before:])]
    assert len(epilogue) == 8 * 3  # every step, tile by tile
    diffs = {"chain inputs": max((a - b).abs().max().item() for a, b in zip(our_calls[:n_ours_before],
                                                                             their_calls[:n_theirs_before])),
             "epilogue step inputs": max(epilogue),
             "carried keyframes": (got_keys - norm(k3)).abs().max().item(),
             "final latents": (got.latent - final).abs().max().item()}
    frames_diff = (frames_ours - frames_theirs).abs().max().item()
    flips = [(a.round() != b.round()) for a, b in codes]
    rebuilt_diff = (rebuilt_ours[0] - norm(rebuilt)).abs().max().item()
    print("epilogue vs diffusers, max |diff|:", {k: f"{v:.2e}" for k, v in diffs.items()},
          f"| decoded frames: {frames_diff:.2e}",
          f"| diffusers' own rebuild: {rebuilt_diff:.2e}, 8-bit codes differing: {[int(f.sum()) for f in flips]} of "
          f"{flips[0].numel()} a plane | the decoders on one latent: {same_latent:.2e}")
    assert all(v <= TOL for v in diffs.values())
    # the frames: the decoders agree bitwise on one latent, so their gap is the final latents' (<= 7.2e-7) through
    # the tiny random decoder, whose outputs reach +-2.9 (a gain of ~17: 1.2e-5 measured)
    assert same_latent == 0.0 and frames_diff <= 20 * diffs["final latents"] + 1e-7
    for (a, b), f in zip(codes, flips):  # a differing code: a pixel on a half code (within 2e-3) on both sides
        assert (a - b).abs().max() <= 2e-3 and f.float().mean() <= 1e-3
        assert ((a[f] - a[f].floor() - 0.5).abs() <= 2e-3).all() and ((b[f] - b[f].floor() - 0.5).abs() <= 2e-3).all()
    assert rebuilt_diff <= 1e-2 if any(f.any() for f in flips) else rebuilt_diff <= TOL
    # it did something: the epilogue moved the upsampled canvas, and its frame-0 image holds the first latent frame
    assert (got.latent - norm(up3)[:, :, :11]).abs().max() > 0.1
    torch.testing.assert_close(got.latent[:, :, :1], images[2 * H][0][1], rtol=0, atol=1e-6)


def test_rebuild_matches_diffusers():
    """`rebuild_keyframes` against diffusers' `LTX2DFRPipeline.rebuild_epilogue_keyframes` with one VAE stand-in on
    both sides (identity statistics, so both decode the same tensors): each plane decoded alone, quantized to 8
    bits, PIL Lanczos x2, encoded; two batch rows, three planes. Bitwise."""
    import torch.nn.functional as F
    from diffusers.pipelines.ltx2.pipeline_ltx2_dfr import LTX2DFRPipeline

    g = torch.Generator().manual_seed(8)
    B, C, K, H, W = 2, 6, 3, 2, 3
    pattern = 1.6 * torch.randn(1, 3, 1, 32 * H, 32 * W, generator=g)
    mix = torch.randn(3, C, generator=g)
    seen = []

    def decode(z):  # (B, C, 1, H, W) -> (B, 3, 1, 32H, 32W), values past [-1, 1] included
        seen.append(z.shape[2])
        up = torch.einsum("bchw,dc->bdhw", z[:, :, 0], mix)[:, :, None].repeat_interleave(32, 3).repeat_interleave(
            32, 4)
        return up + pattern

    def encode(px):  # (B, 3, 1, 64H, 64W) -> (B, C, 1, 2H, 2W)
        pooled = F.avg_pool3d(px, (1, 32, 32))
        return torch.cat([pooled, pooled.square()], 1)

    stub = _stubbed(LTX2DFRPipeline, None, None, None, None, C, 1, 4)
    stub.vae = types.SimpleNamespace(
        latents_mean=torch.zeros(C), latents_std=torch.ones(C), dtype=torch.float32,
        config=types.SimpleNamespace(scaling_factor=1.0, timestep_conditioning=False),
        decode=lambda z, t, return_dict=False: (decode(z),),
        encode=lambda px: types.SimpleNamespace(latents=encode(px)))
    keys = torch.randn(B, C, K, H, W, generator=g)
    with torch.no_grad():
        ours = dfr.rebuild_keyframes(keys, decode, encode)
        theirs = stub.rebuild_epilogue_keyframes(keys, decode_timestep=0.0, decode_noise_scale=0.0, seed=0,
                                                 device=torch.device("cpu"), dtype=torch.float32)
    assert ours.shape == (B, C, K, 2 * H, 2 * W) and seen == [1] * (2 * K)  # one plane at a time, both sides
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours[0], ours[1])  # the rows stay apart


def test_one_tile_is_the_untiled_pass():
    """A single window over the whole grid (weight 1) keeps every token in order at its own positions: the tiled
    pass is the untiled one bitwise. The real epilogue layout on the same inputs differs (the tiles see less)."""

    cfg, ours, _ = tiny_models(seed=3)
    g = torch.Generator().manual_seed(5)
    B, C, F, H, W, S = 1, cfg.in_channels, 4, 6, 6, 5
    context = torch.randn(B, S, cfg.inner_dim, generator=g)
    audio_context = torch.randn(B, S, cfg.audio_inner_dim, generator=g)
    context_mask = torch.ones(B, S, dtype=torch.long)

    model = pass_model(ours, context, audio_context, context_mask)

    video = torch.randn(B, C, F, H, W, generator=g)
    audio = torch.randn(B, 8, cfg.audio_in_channels, generator=g)
    pinned = [dfr.FrameCondition(0, torch.randn(1, C, 1, H, W, generator=g)),
              dfr.FrameCondition(16, torch.randn(B, C, 1, H, W, generator=g))]
    whole = [dfr.EpilogueTile(slice(0, F), slice(0, H), slice(0, W), torch.ones(F, H, W))]

    def run(tiles):
        with torch.no_grad():
            return dfr.keyframe_pass(model, video, None, (), audio, dfr.STAGE_2_SIGMAS, fps=24.0,
                                     generator=torch.Generator().manual_seed(1), freeze_audio=True,
                                     reference=video[:, :, :, ::2, ::2], conditions=pinned, tiles=tiles)

    untiled, one = run(None), run(whole)
    assert one.slots is None and torch.equal(one.latent, untiled.latent) and torch.equal(one.audio, untiled.audio)
    tiled = run(dfr.epilogue_tiles((F, H, W), 2, [2]))
    assert (tiled.latent - untiled.latent).abs().max() > 1e-3


def test_lanczos_and_layout():
    """A flat image stays flat through the 8-bit Lanczos stretch (its kernel sums to one); the default frame tiles
    are 2**rounds cut on the last round's seams (the refine tiles' anchors, not its new slots)."""
    flat = torch.full((2, 3, 5, 7), 0.25)
    big = dfr.lanczos_x2(flat)
    assert big.shape == (2, 3, 10, 14) and torch.equal(big, torch.full_like(big, 159.0) / 127.5 - 1)  # code 159
    tiles = dfr.epilogue_layout(41, 1, (8, 8))
    assert [(t.frames.start, t.frames.stop) for t in tiles[::4]] == [(0, 7), (0, 13)]
    assert tiles[4].weight[:7].eq(0).all() and tiles[4].weight[7:].gt(0).all()  # the run-up weighs 0
    assert len(dfr.epilogue_layout(41, 0, (8, 8))) == 4 and len(dfr.epilogue_layout(41, 2, (8, 8))) == 16


def test_bad_epilogue_inputs_refused_in_one_line():
    with pytest.raises(ValueError, match="epilogue frame tiles must be a positive integer, got 0"):
        dfr.epilogue_layout(41, 1, (8, 8), 0)
    with pytest.raises(ValueError, match="the spatial epilogue needs `rebuild`"):
        dfr.render(None, None, None, num_frames=17, latent_size=(4, 4), channels=4, audio_frames=4,
                   audio_channels=4, fps=24.0, spatial_upsample=lambda x: x, seed=0, generator=torch.Generator(),
                   spatial_epilogue=True)
    with pytest.raises(ValueError, match="a tiled keyframe pass holds the audio clean: pass freeze_audio=True"):
        dfr.keyframe_pass(None, torch.zeros(1, 4, 2, 2, 2), None, (), torch.zeros(1, 3, 4), [0.5], fps=24.0,
                          generator=None, tiles=dfr.epilogue_tiles((2, 2, 2), 1, []))

