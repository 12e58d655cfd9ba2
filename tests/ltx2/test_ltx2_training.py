"""The LTX-2 training objective (ltx/ltx2/training.py) against the official trainer's recipe.

- loss parity, every mode: `av_loss` on our modules (loaded from a tiny official file) == the official recipe run
  on the ltx-core modules the file was written from (`official_loss` below: ltx-trainer's flexible strategy and
  `_training_step`, written out by hand; positions from ltx-core's patchifiers), same draws, fp32;
- LoRA gradients: our adapters vs peft's (the official trainer's LoRA) on the ltx-core model, same A / B;
- the sigma sampler "ltx2" vs the official `ShiftedLogitNormalTimestepSampler` formula and its closed form;
- video and audio sigmas independent (and the guard catches a shared one); draws in a fixed order;
- audio learns on a tiny model (LoRA, t2av) and does not without its loss term;
- mode semantics (v2a, a2v, i2v, IC-LoRA references) and one-line errors.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import ltx2_tiny
import pytest
import torch
from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier, get_pixel_coords
from ltx_core.model.transformer.modality import Modality
from ltx_core.text_encoders.gemma.embeddings_processor import convert_to_additive_mask
from ltx_core.types import AudioLatentShape, SpatioTemporalScaleFactors, VideoLatentShape

from ltx.core.lora import LoRAConfig, freeze_base, inject_lora, lora_modules, lora_parameters
from ltx.core.losses import SigmaSampler
from ltx.ltx2 import checkpoint as ck
from ltx.ltx2 import patchify
from ltx.ltx2.training import (
    MODES,
    AVTrainModel,
    Draws,
    StreamBatch,
    av_loss,
    check_sigma_independence,
    draw,
    sigma_sampler,
    training_mode,
)

pytestmark = pytest.mark.usefixtures("one_thread")

B, FPS = 2, 24.0
V_SHAPE = (128, 10, 2, 2)  # latent (C, f, h, w): 40 tokens, room for the official 8-frame prefix
V_REF_SHAPE = (128, 10, 1, 1)  # an IC-LoRA reference at half the resolution: downscale factor 2
A_FRAMES, A_REF_FRAMES = 12, 7  # audio latent steps (8 channels x 16 mel bins = 128 features)
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """style -> (our modules loaded from a tiny official file, the ltx-core modules it was written from)."""
    root, cache = tmp_path_factory.mktemp("ltx2_training"), {}

    def get(style: str):
        if style not in cache:
            path, ref = ltx2_tiny.official_file(root / f"tiny-{style}.safetensors", style)
            cache[style] = (ck.load(path, ["transformer", "text"]), ref)
        return cache[style]

    return get


# ------------------------------------------------------------------------------------------------ fixtures


def _latents(seed: int = 0) -> dict[str, torch.Tensor]:
    """Unpatchified latents as the cache stores them: video (B, C, f, h, w), audio (B, 8, T, 16), references."""
    g = torch.Generator().manual_seed(seed)
    return {"video": torch.randn(B, *V_SHAPE, generator=g), "video_ref": torch.randn(B, *V_REF_SHAPE, generator=g),
            "audio": torch.randn(B, 8, A_FRAMES, 16, generator=g),
            "audio_ref": torch.randn(B, 8, A_REF_FRAMES, 16, generator=g)}


def _text_features(ours_text, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the training cache holds: the feature extractor's output on (random) Gemma states, left padded."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, 128, ltx2_tiny.TEXT_DIM, ltx2_tiny.NUM_HIDDEN_STATES, generator=g)
    mask = torch.ones(B, 128, dtype=torch.long)
    mask[0, :100], mask[1, :30] = 0, 0
    with torch.no_grad():
        video, audio = ours_text.features(hidden, mask)
    return video, audio, mask


def _conditions(mode) -> list[str]:
    return [f"{s}_{c}" for s in ("video", "audio") if (r := mode.role(s)) is not None and r.generated
            for c, on in (("first_frame", r.first_frame_p), ("prefix", r.prefix), ("suffix", r.suffix)) if on]


def _draws(mode, sampler=None) -> list[Draws]:
    """B samples' draws from seeded generators: sample 0 with every condition of the mode on, sample 1 with none
    where a probability below 1 allows it (the first seeds that do)."""
    sampler = sampler or sigma_sampler("ltx2")
    out = []
    for j, want in enumerate((set(_conditions(mode)), set())):
        for seed in range(100 * j, 100 * j + 100):
            d = draw(mode, sampler, torch.Generator().manual_seed(seed), video_shape=V_SHAPE,
                     audio_shape=(A_FRAMES, 128), caption_dropout=0.0)
            if d.applied == want:
                break
        out.append(d)
    return out


def _streams(mode, draws: list[Draws], lat: dict) -> tuple[StreamBatch | None, StreamBatch | None]:
    """Our StreamBatches, built as a trainer does with ltx.ltx2.patchify."""
    _, f, h, w = V_SHAPE
    out = {}
    for s, role in (("video", mode.video), ("audio", mode.audio)):
        if role is None:
            out[s] = None
            continue
        ref = ref_pos = None
        if s == "video":
            x0, pos = patchify.patchify_video(lat["video"]), patchify.video_positions(f, h, w, FPS, batch=B)
            if role.reference:
                _, rf, rh, rw = V_REF_SHAPE
                ref = patchify.patchify_video(lat["video_ref"])
                ref_pos = patchify.reference_positions(rf, rh, rw, FPS, h // rh, batch=B)
        else:
            x0, pos = patchify.patchify_audio(lat["audio"]), patchify.audio_positions(A_FRAMES, batch=B)
            if role.reference:
                ref, ref_pos = patchify.patchify_audio(lat["audio_ref"]), patchify.audio_positions(A_REF_FRAMES,
                                                                                                   batch=B)
        out[s] = StreamBatch(
            x0=x0, noise=torch.stack([getattr(d, f"{s}_noise") for d in draws]),
            sigma=torch.tensor([getattr(d, f"{s}_sigma") for d in draws]),
            cond=torch.stack([getattr(d, f"{s}_cond") for d in draws]), positions=pos, generated=role.generated,
            reference=ref, reference_positions=ref_pos)
    return out["video"], out["audio"]


# ------------------------------------------------------------------------------------------------ the official recipe


def _official_video_positions(f: int, h: int, w: int) -> torch.Tensor:
    bounds = VideoLatentPatchifier(patch_size=1).get_patch_grid_bounds(
        output_shape=VideoLatentShape(frames=f, height=h, width=w, batch=B, channels=128), device="cpu")
    pos = get_pixel_coords(latent_coords=bounds, scale_factors=SpatioTemporalScaleFactors.default(),
                           causal_fix=True).float()
    pos[:, 0, ...] = pos[:, 0, ...] / FPS
    return pos


def _official_audio_positions(frames: int) -> torch.Tensor:
    return AudioPatchifier(patch_size=1).get_patch_grid_bounds(
        output_shape=AudioLatentShape(frames=frames, mel_bins=16, batch=B, channels=8), device="cpu")


def official_loss(ref: dict, mode, draws: list[Draws], lat: dict, features) -> tuple[torch.Tensor, dict, dict]:
    """The official trainer's step on ltx-core modules: `_training_step` (connectors on the cached features),
    the flexible strategy's `_process_modality` (noise, intrinsic conditions as float masks in config order,
    the reference prepended), LTXModel, `_compute_modality_loss`. The per-sample coin outcomes come from `draws`
    (the official draws them from the global RNG); everything else is computed here from the official rules.
    Returns the per-sample loss (B,), its parts and the transformer's raw outputs (reference tokens included)."""
    video_feats, audio_feats, mask = features
    # one row at a time: ltx-core 1.0.0's register replacement handles a batch of one only
    rows = [ref["text"].create_embeddings(video_feats[i : i + 1], audio_feats[i : i + 1],
                                          convert_to_additive_mask(mask[i : i + 1], video_feats.dtype))
            for i in range(mask.shape[0])]
    video_ctx, audio_ctx, context_mask = (torch.cat(t) for t in zip(*rows))
    contexts = {"video": video_ctx, "audio": audio_ctx}
    modalities, targets, loss_masks = {}, {}, {}
    for s in ("video", "audio"):
        role = mode.role(s)
        if role is None:
            continue
        if s == "video":
            latents = VideoLatentPatchifier(patch_size=1).patchify(lat["video"])
            _, _, f, h, w = lat["video"].shape
            positions = _official_video_positions(f, h, w)
        else:
            latents = AudioPatchifier(patch_size=1).patchify(lat["audio"])
            h = w = 1
            positions = _official_audio_positions(latents.shape[1])
        n, T, _ = latents.shape
        if role.generated:
            sigmas = torch.tensor([getattr(d, f"{s}_sigma") for d in draws])
            noise = torch.stack([getattr(d, f"{s}_noise") for d in draws])
            s3 = sigmas.view(-1, 1, 1)
            noisy = (1 - s3) * latents + s3 * noise
            targets[s] = noise - latents
            timesteps = sigmas.view(-1, 1).expand(n, T).clone()
            loss_mask = torch.ones(n, T, dtype=torch.bool)
            for cond, frames, from_end in (("first_frame", 1 if role.first_frame_p else 0, False),
                                           ("prefix", role.prefix, False), ("suffix", role.suffix, True)):
                if not frames:
                    continue
                apply = torch.tensor([f"{s}_{cond}" in d.applied for d in draws])
                m = torch.zeros(n, T)
                if from_end:
                    m[:, -frames * h * w :] = 1.0
                else:
                    m[:, : frames * h * w] = 1.0
                m = m * apply.view(-1, 1).float()
                noisy = m.unsqueeze(-1) * latents + (1 - m.unsqueeze(-1)) * noisy
                timesteps = (1 - m) * timesteps
                loss_mask = loss_mask & (m == 0)
            loss_masks[s] = loss_mask
        else:
            noisy, timesteps, sigmas = latents, torch.zeros(n, T), torch.zeros(n)
        if role.reference:
            if s == "video":
                ref_latents = VideoLatentPatchifier(patch_size=1).patchify(lat["video_ref"])
                _, _, rf, rh, rw = lat["video_ref"].shape
                ref_positions = _official_video_positions(rf, rh, rw)
                scale = h // rh  # the official `_infer_scale_factor`
                ref_positions[:, 1, ...] *= scale
                ref_positions[:, 2, ...] *= scale
            else:
                ref_latents = AudioPatchifier(patch_size=1).patchify(lat["audio_ref"])
                ref_positions = _official_audio_positions(ref_latents.shape[1])
            R = ref_latents.shape[1]
            noisy = torch.cat([ref_latents, noisy], dim=1)
            positions = torch.cat([ref_positions, positions], dim=2)
            timesteps = torch.cat([torch.zeros(n, R), timesteps], dim=1)
            if s in loss_masks:
                loss_masks[s] = torch.cat([torch.zeros(n, R, dtype=torch.bool), loss_masks[s]], dim=1)
        modalities[s] = Modality(enabled=True, latent=noisy, sigma=sigmas, timesteps=timesteps, positions=positions,
                                 context=contexts[s], context_mask=context_mask)
    preds = dict(zip(("video", "audio"), ref["transformer"](video=modalities.get("video"),
                                                           audio=modalities.get("audio"), perturbations=None)))
    parts = {}
    for s, target in targets.items():
        T = target.shape[1]
        pred, keep = preds[s][:, -T:, :], loss_masks[s][:, -T:].unsqueeze(-1).float()
        parts[s] = ((pred - target).pow(2) * keep).mean(dim=[-2, -1]) / keep.mean(dim=[-2, -1]).clamp(min=1e-8)
    return sum(parts.values()), parts, preds


# ------------------------------------------------------------------------------------------------ parity



@pytest.mark.parametrize("style", ["19b", "2.3"])
@pytest.mark.parametrize("name", list(MODES))
def test_loss_matches_the_official_recipe(tiny, style, name):
    """Per-sample loss and its parts, fp32: max |ours - official| <= 1e-5 relative (float32 rounding of sums over
    <= 40 x 128 squared errors is ~1e-7 relative; the two sides sum in different orders); the velocities of every
    present stream within 1e-5 absolute (outputs ~2)."""
    ours, ref = tiny(style)
    mode = MODES[name]
    draws = _draws(mode)
    assert draws[0].applied == set(_conditions(mode))  # the conditions are exercised
    lat, feats = _latents(), _text_features(ours["text"])
    model = AVTrainModel(ours["transformer"], ours["text"])
    streams = _streams(mode, draws, lat)
    with torch.no_grad():
        loss, parts = av_loss(model, *streams, feats)
        want, want_parts, want_preds = official_loss(ref, mode, draws, lat, feats)
        preds = dict(zip(("video", "audio"), model(*streams, feats)))
    for s, p in preds.items():  # the velocities themselves (scale ~2), reference tokens cut off ours
        assert (p is None) == (want_preds[s] is None)
        if p is not None:
            assert (p - want_preds[s][:, -p.shape[1] :]).abs().max() <= 1e-5
    assert parts.keys() == want_parts.keys() == {s for s in ("video", "audio")
                                                 if mode.role(s) is not None and mode.role(s).generated}
    abs_diff = max((a - b).abs().max().item() for a, b in [(loss, want)] + [(parts[k], want_parts[k]) for k in parts])
    rel_diff = max(((a - b).abs() / b.abs()).max().item() for a, b in [(loss, want)]
                   + [(parts[k], want_parts[k]) for k in parts])
    print(f"{style} {name}: loss {want.tolist()} max abs {abs_diff:.2e} rel {rel_diff:.2e}")
    assert loss.shape == (B,) and torch.all(want > 0.1)
    assert rel_diff <= 1e-5, (abs_diff, rel_diff)


def test_the_parity_check_can_fail(tiny):
    """What the comparison above would catch, far above its tolerance: one sigma for both streams (the loss moves
    ~1e-3 relative, 100x the tolerance) and IC-LoRA reference positions without the downscale factor (the video
    velocities move ~1e-2, 1000x the tolerance)."""
    ours, ref = tiny("19b")
    model, lat, feats = AVTrainModel(ours["transformer"], ours["text"]), _latents(), _text_features(ours["text"])
    draws = _draws(MODES["t2av"])
    video, audio = _streams(MODES["t2av"], draws, lat)
    with torch.no_grad():
        want = official_loss(ref, MODES["t2av"], draws, lat, feats)[0]
        shared = av_loss(model, video, dataclasses.replace(audio, sigma=video.sigma), feats)[0]
    assert ((shared - want).abs() / want).max() > 1e-4
    draws = _draws(MODES["ic_lora"])
    video, _ = _streams(MODES["ic_lora"], draws, lat)
    _, _, rf, rh, rw = lat["video_ref"].shape
    unscaled = dataclasses.replace(video, reference_positions=patchify.reference_positions(rf, rh, rw, FPS, batch=B))
    with torch.no_grad():
        want = official_loss(ref, MODES["ic_lora"], draws, lat, feats)[2]["video"][:, -video.x0.shape[1] :]
        got = model(unscaled, None, feats)[0]
    assert (got - want).abs().max() > 1e-3


@pytest.mark.parametrize("style,name", [("19b", "t2av"), ("2.3", "t2av"), ("19b", "av2av_ic_lora"),
                                        ("2.3", "i2v")])
def test_lora_gradients_match_peft_on_the_reference(tiny, style, name):
    """LoRA on our transformer (ltx.core.lora) and peft's LoRA (the official trainer's) on ltx-core's, with the
    same A / B (random, B nonzero so that every factor gets a gradient): the losses and every adapter gradient
    agree to 1e-4 of the largest gradient (fp32; the backward sums over the batch and tokens in other orders)."""
    from peft import LoraConfig, get_peft_model

    ours, ref = tiny(style)
    mode = MODES[name]
    draws, lat, feats = _draws(mode), _latents(), _text_features(ours["text"])
    model = AVTrainModel(copy.deepcopy(ours["transformer"]), ours["text"])
    names = inject_lora(model.transformer, LoRAConfig(rank=2, targets=LORA_TARGETS))
    freeze_base(model)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in lora_parameters(model):
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    ref_t = copy.deepcopy(ref["transformer"])
    get_peft_model(ref_t, LoraConfig(r=2, lora_alpha=2, target_modules=list(LORA_TARGETS), lora_dropout=0.0))
    peft_layers = {n: m for n, m in ref_t.named_modules() if hasattr(m, "lora_A") and "default" in m.lora_A}
    assert sorted(peft_layers) == sorted(names)  # the same modules, by the official names
    with torch.no_grad():
        for n, m in lora_modules(model.transformer):
            peft_layers[n].lora_A["default"].weight.copy_(m.lora_A["default"].weight)
            peft_layers[n].lora_B["default"].weight.copy_(m.lora_B["default"].weight)

    loss, _ = av_loss(model, *_streams(mode, draws, lat), feats)
    loss.mean().backward()
    want = official_loss({"transformer": ref_t, "text": ref["text"]}, mode, draws, lat, feats)[0]
    want.mean().backward()
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=0)
    ours_g = {f"{n}.{k}": getattr(m, f"lora_{k}")["default"].weight.grad for n, m in lora_modules(model.transformer)
              for k in "AB"}
    ref_g = {f"{n}.{k}": getattr(m, f"lora_{k}")["default"].weight.grad for n, m in peft_layers.items() for k in "AB"}
    scale = max(g.abs().max().item() for g in ref_g.values())
    worst = max((ours_g[k] - ref_g[k]).abs().max().item() for k in ref_g)
    print(f"{style} {name}: {len(ref_g)} adapter tensors, max |grad| {scale:.3e}, max diff {worst:.2e}")
    assert all(ours_g[k].abs().max() > 0 for k in ours_g) and worst <= 1e-4 * scale


# ------------------------------------------------------------------------------------------------ sigma sampler


def official_sigmas(n: int, tokens: int, g: torch.Generator, std=1.0, eps=1e-3, uniform_prob=0.1) -> torch.Tensor:
    """The official `ShiftedLogitNormalTimestepSampler.sample` formula (float32, batched), written out."""
    mu = 0.95 + (2.05 - 0.95) / (4096 - 1024) * (tokens - 1024)
    logitnormal = torch.sigmoid(torch.randn(n, generator=g) * std + mu)
    hi, lo = torch.sigmoid(torch.tensor(mu + 3.0902 * std)), torch.sigmoid(torch.tensor(mu - 2.5758 * std))
    raw = (logitnormal - lo) / (hi - lo)
    stretched = torch.where(raw >= eps, raw, 2 * eps - raw).clamp(0, 1)
    uniform = (1 - eps) * torch.rand(n, generator=g) + eps
    return torch.where(torch.rand(n, generator=g) > uniform_prob, stretched, uniform)


def _ks(samples: torch.Tensor, cdf, grid: torch.Tensor) -> float:
    """sup over `grid` of |empirical CDF - cdf| (a lower bound of the Kolmogorov-Smirnov distance, so the DKW
    bound applies to it as it is)."""
    empirical = torch.searchsorted(samples.double().sort().values, grid, right=True) / len(samples)
    return (empirical - torch.tensor([cdf(x) for x in grid.tolist()], dtype=torch.float64)).abs().max().item()


@pytest.mark.parametrize("tokens", [60, 1024, 4096, 12_288])
def test_ltx2_sampler_matches_the_official_distribution(tokens):
    """Three-way: the official formula (100k draws) and ours (20k draws) each within the Kolmogorov-Smirnov bound
    sqrt(ln(2 / 1e-6) / 2n) (DKW, false alarm 1e-6: 0.0085 / 0.019) of our closed-form CDF; the quantiles of the
    two agree to 0.03; a sampler without the stretch is rejected by the same bound."""
    ours = sigma_sampler("ltx2")
    g = torch.Generator().manual_seed(tokens)
    theirs = official_sigmas(100_000, tokens, g)
    mine = torch.tensor([ours.sample(tokens, g) for _ in range(20_000)])
    grid = torch.linspace(0.0, 0.9999, 2001, dtype=torch.float64)
    cdf = lambda s: ours.cdf(s, tokens)  # noqa: E731
    bound = lambda n: math.sqrt(math.log(2 / 1e-6) / (2 * n))  # noqa: E731
    ks_theirs, ks_mine = _ks(theirs, cdf, grid), _ks(mine, cdf, grid)
    print(f"tokens {tokens}: KS official {ks_theirs:.4f} (bound {bound(len(theirs)):.4f}), ours {ks_mine:.4f} "
          f"(bound {bound(len(mine)):.4f})")
    assert ks_theirs < bound(len(theirs)) and ks_mine < bound(len(mine))
    q = torch.tensor([0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99])
    assert (theirs.quantile(q) - mine.quantile(q)).abs().max() < 0.03
    assert mine.min() >= 1e-3 and mine.max() <= 1.0  # reflected at eps, clipped at 1
    unstretched = SigmaSampler(kind="shifted_logit_normal", max_mu=10.0, uniform_fraction=0.1)
    ks_wrong = _ks(theirs, lambda s: unstretched.cdf(min(max(s, 1e-4), 1 - 1e-4), tokens), grid)
    assert ks_wrong > 3 * bound(len(theirs)), ks_wrong


def test_ltx2_sampler_draw_count_does_not_depend_on_the_outcome():
    """Three draws per sigma whatever the branch (uniform or stretched) and the token count, so a stream of
    per-sample draws stays aligned; the other kinds are SigmaSampler's, unchanged."""
    states = []
    for fraction, tokens in ((0.0, 60), (1.0, 60), (0.1, 12_288)):
        g = torch.Generator().manual_seed(3)
        sigma_sampler("ltx2", uniform_fraction=fraction).sample(tokens, g)
        states.append(g.get_state())
    assert all(torch.equal(s, states[0]) for s in states)
    assert sigma_sampler("uniform") == SigmaSampler(kind="uniform")
    with pytest.raises(ValueError, match="lognormal"):
        sigma_sampler("lognormal")


# ------------------------------------------------------------------------------------------------ draws


class _SharedSigma:
    """The bug: one sigma for both streams (the audio call returns the video's)."""

    def __init__(self, sampler):
        self.sampler, self.last = sampler, None

    def sample(self, tokens, generator):
        s = self.sampler.sample(tokens, generator)
        if self.last is None:
            self.last = s
            return s
        s, self.last = self.last, None
        return s


def test_video_and_audio_sigmas_are_independent_and_the_guard_catches_a_shared_one():
    mode, sampler = MODES["t2av"], sigma_sampler("ltx2")

    def draws(s):
        return [draw(mode, s, torch.Generator().manual_seed(i), video_shape=(128, 2, 2, 2), audio_shape=(3, 128),
                     caption_dropout=0.0) for i in range(1000)]

    corr, far = check_sigma_independence(draws(sampler))
    print(f"independent: correlation {corr:.3f}, P(|s_v - s_a| > 0.2) = {far:.2f}")
    assert abs(corr) < 0.1 and far > 0.3
    shared = draws(_SharedSigma(sampler))
    assert all(d.video_sigma == d.audio_sigma for d in shared)
    with pytest.raises(ValueError, match="not independent"):
        check_sigma_independence(shared)


def test_each_stream_is_shifted_by_its_own_token_count():
    calls = []

    class Spy:
        def sample(self, tokens, generator):
            calls.append(tokens)
            return torch.rand(1, generator=generator).item()

    draw(MODES["t2av"], Spy(), torch.Generator(), video_shape=(128, 3, 4, 5), audio_shape=(7, 128),
         caption_dropout=0.0)
    assert calls == [60, 7]


def test_draws_are_in_a_fixed_order_whatever_the_coins():
    """Any probabilities: the generator advances by the same amount and the noise is the same; conditions follow
    their coins."""
    states, noises = [], []
    for p, caption in ((0.0, 0.0), (1.0, 1.0), (0.5, 0.3)):
        mode = training_mode("i2v", first_frame_p=p, video_prefix=2, video_prefix_p=p)
        g = torch.Generator().manual_seed(11)
        d = draw(mode, sigma_sampler("ltx2"), g, video_shape=V_SHAPE, audio_shape=(A_FRAMES, 128),
                 caption_dropout=caption)
        states.append(g.get_state())
        noises.append((d.video_noise, d.audio_noise, d.video_sigma, d.audio_sigma))
        if p == 1.0:
            assert d.drop_caption and d.applied == {"video_first_frame", "video_prefix"}
            assert d.video_cond.view(10, 4)[:2].all() and not d.video_cond.view(10, 4)[2:].any()
        if p == 0.0:
            assert not d.drop_caption and not d.applied and not d.video_cond.any()
    assert all(torch.equal(s, states[0]) for s in states)
    assert all(all(torch.equal(torch.as_tensor(a), torch.as_tensor(b)) for a, b in zip(n, noises[0]))
               for n in noises)


def test_suffix_and_first_frame_masks():
    d = draw(training_mode("video_suffix", video_suffix=3), sigma_sampler("ltx2"), torch.Generator(),
             video_shape=(128, 5, 2, 3), audio_shape=(4, 128), caption_dropout=0.0)
    assert d.video_cond.view(5, 6).all(1).tolist() == [False, False, True, True, True]
    assert d.video_cond.view(5, 6).any(1).tolist() == [False, False, True, True, True]
    one_frame = draw(training_mode("i2v", first_frame_p=1.0), sigma_sampler("ltx2"), torch.Generator(),
                     video_shape=(128, 1, 2, 2), audio_shape=(4, 128), caption_dropout=0.0)
    assert not one_frame.video_cond.any() and not one_frame.applied  # an image keeps its one frame to learn
    clean = draw(MODES["v2a"], sigma_sampler("ltx2"), torch.Generator(), video_shape=(128, 2, 2, 2),
                 audio_shape=(4, 128), caption_dropout=0.0)
    assert clean.video_sigma == 0.0 and clean.video_cond.all() and clean.audio_sigma > 0


# ------------------------------------------------------------------------------------------------ learning


def test_audio_learns_in_t2av(tiny):
    """Tiny 19B-style model, LoRA (rank 8 on attention, MLP and the output heads), 3 fixed synthetic clips whose
    latents have structure (a per-channel offset + a rank-4 part + a little noise, as real latents do), 40 AdamW
    steps in t2av: the audio part of a fixed evaluation loss falls to under 0.7x (measured 0.51x); trained on the
    video part alone (audio_weight 0), the same audio loss stays within 5% (measured 0.995x) while video falls."""
    ours, _ = tiny("19b")
    n, (C, f, h, w), g = 3, (128, 3, 2, 2), torch.Generator().manual_seed(0)

    def structured(tokens: int) -> torch.Tensor:
        offset, basis = 1.5 * torch.randn(C, generator=g), torch.randn(C, 4, generator=g)
        return offset + 0.7 * torch.randn(n, tokens, 4, generator=g) @ basis.T + 0.3 * torch.randn(n, tokens, C,
                                                                                                      generator=g)

    video_x0, audio_x0 = structured(f * h * w), structured(5)
    hidden = torch.randn(n, 128, ltx2_tiny.TEXT_DIM, ltx2_tiny.NUM_HIDDEN_STATES, generator=g)
    mask = torch.ones(n, 128, dtype=torch.long)
    mask[:, :100] = 0
    with torch.no_grad():
        feats = (*ours["text"].features(hidden, mask), mask)
    mode, sampler = MODES["t2av"], sigma_sampler("ltx2")
    vpos, apos = patchify.video_positions(f, h, w, FPS, batch=n), patchify.audio_positions(5, batch=n)

    def batch(seeds):
        d = [draw(mode, sampler, torch.Generator().manual_seed(s), video_shape=(C, f, h, w), audio_shape=(5, C),
                  caption_dropout=0.0) for s in seeds]
        return tuple(StreamBatch(x0, torch.stack([getattr(x, f"{s}_noise") for x in d]),
                                 torch.tensor([getattr(x, f"{s}_sigma") for x in d]),
                                 torch.stack([getattr(x, f"{s}_cond") for x in d]), pos, True)
                     for s, x0, pos in (("video", video_x0, vpos), ("audio", audio_x0, apos)))

    evaluation = [batch([10_000 + n * k + j for j in range(n)]) for k in range(8)]

    def evaluate(model) -> dict[str, float]:
        with torch.no_grad():
            parts = [av_loss(model, v, a, feats)[1] for v, a in evaluation]
        return {s: torch.cat([p[s] for p in parts]).mean().item() for s in ("video", "audio")}

    ratios = {}
    for audio_weight in (1.0, 0.0):
        model = AVTrainModel(copy.deepcopy(ours["transformer"]), ours["text"])
        inject_lora(model.transformer, LoRAConfig(rank=8, targets=LORA_TARGETS + ("re:(audio_)?proj_out",)),
                    generator=torch.Generator().manual_seed(0))
        freeze_base(model)
        opt = torch.optim.AdamW(lora_parameters(model), lr=1e-2, weight_decay=0.0)
        before = evaluate(model)
        for step in range(40):
            loss, _ = av_loss(model, *batch([100 * step + j for j in range(n)]), feats, audio_weight=audio_weight)
            opt.zero_grad()
            loss.mean().backward()
            opt.step()
        after = evaluate(model)
        ratios[audio_weight] = {s: after[s] / before[s] for s in before}
    print(f"after / before, audio in the loss: {ratios[1.0]}; audio weight 0: {ratios[0.0]}")
    assert ratios[1.0]["audio"] < 0.7 and ratios[1.0]["video"] < 0.7
    assert abs(ratios[0.0]["audio"] - 1) < 0.05 and ratios[0.0]["video"] < 0.7


# ------------------------------------------------------------------------------------------------ semantics


def _pred_model(video_pred, audio_pred):
    return lambda video, audio, text: (video_pred, audio_pred)


@pytest.mark.parametrize("name,clean", [("v2a", "video"), ("a2v", "audio")])
def test_a_clean_condition_stream_is_clean_with_timestep_0_and_no_loss(tiny, name, clean):
    ours, _ = tiny("19b")
    mode = MODES[name]
    draws, lat, feats = _draws(mode), _latents(), _text_features(ours["text"])
    video, audio = _streams(mode, draws, lat)
    streams = {"video": video, "audio": audio}
    model = AVTrainModel(ours["transformer"], ours["text"])
    inputs = dict(zip(("video", "audio"), model.stream_inputs(video, audio, feats)))
    c, gen = inputs[clean], inputs["audio" if clean == "video" else "video"]
    assert torch.equal(c.x, streams[clean].x0) and not c.timesteps.any() and not c.sigma.any()
    assert gen.timesteps.min() > 0 and torch.equal(gen.sigma, streams["audio" if clean == "video" else "video"].sigma)
    with torch.no_grad():
        loss, parts = av_loss(model, video, audio, feats)
    assert set(parts) == {"audio" if clean == "video" else "video"} and torch.equal(loss, next(iter(parts.values())))


def test_i2v_first_frame_is_clean_and_out_of_the_loss(tiny):
    ours, _ = tiny("19b")
    mode = MODES["i2v"]
    draws, lat, feats = _draws(mode), _latents(), _text_features(ours["text"])
    video, audio = _streams(mode, draws, lat)
    first = V_SHAPE[2] * V_SHAPE[3]
    assert video.cond[0, :first].all() and not video.cond[0, first:].any() and not video.cond[1].any()
    v, _ = AVTrainModel(ours["transformer"], ours["text"]).stream_inputs(video, audio, feats)
    assert torch.equal(v.x[0, :first], video.x0[0, :first]) and not v.timesteps[0, :first].any()
    assert torch.all(v.timesteps[0, first:] == video.sigma[0]) and torch.all(v.timesteps[1] == video.sigma[1])
    s = video.sigma[0]
    torch.testing.assert_close(v.x[0, first:], (1 - s) * video.x0[0, first:] + s * video.noise[0, first:])
    # the loss does not see predictions on clean tokens, and sees every other one
    pred_v, pred_a = torch.zeros_like(video.x0), torch.zeros_like(audio.x0)
    base, parts = av_loss(_pred_model(pred_v, pred_a), video, audio, feats)
    changed = pred_v.clone()
    changed[0, :first] = 100.0
    assert torch.equal(av_loss(_pred_model(changed, pred_a), video, audio, feats)[0], base)
    changed[0, first] = 100.0
    assert av_loss(_pred_model(changed, pred_a), video, audio, feats)[0][0] > base[0]
    # per sample: mean over the loss tokens only
    err = (video.noise - video.x0).square().mean(-1)
    torch.testing.assert_close(parts["video"], torch.stack([err[0, first:].mean(), err[1].mean()]))


def test_ic_lora_reference_is_prepended_clean_and_cut_off(tiny):
    ours, _ = tiny("19b")
    mode = MODES["ic_lora"]
    draws, lat, feats = _draws(mode), _latents(), _text_features(ours["text"])
    video, audio = _streams(mode, draws, lat)
    assert audio is None
    model = AVTrainModel(ours["transformer"], ours["text"])
    v, a = model.stream_inputs(video, audio, feats)
    R = video.reference.shape[1]
    assert a is None and v.x.shape[1] == R + video.x0.shape[1]
    assert torch.equal(v.x[:, :R], video.reference) and not v.timesteps[:, :R].any()
    assert torch.equal(v.positions[:, :, :R], video.reference_positions)
    assert torch.equal(v.positions[:, :, R:], video.positions)
    with torch.no_grad():
        pv, pa = model(video, audio, feats)
    assert pa is None and pv.shape == video.x0.shape


def test_bad_modes_and_inputs_are_one_line_errors(tiny):
    cases = [
        (lambda: training_mode("t2x"), "valid modes: t2v, t2av"),
        (lambda: training_mode("t2a", first_frame_p=0.5), "has no video stream"),
        (lambda: training_mode("i2v", first_frame_p=1.5), "first_frame_p is a probability"),
        (lambda: training_mode("t2av", prefx=1), "unknown override 'prefx'"),
        (lambda: training_mode("t2av", prefix=-1), "prefix is a number"),
        (lambda: training_mode("v2a", video_prefix=2), "clean-condition stream"),
        (lambda: training_mode("a2v", video_generated=False), "generates nothing"),
        (lambda: training_mode("t2av", audio_first_frame_p=0.5), "first_frame_p is for video"),
        (lambda: draw(MODES["t2av"], sigma_sampler(), torch.Generator(), video_shape=(128, 2, 2),
                      audio_shape=(3, 128), caption_dropout=0.0), r"video_shape must be the latent \(C, f, h, w\)"),
        (lambda: draw(MODES["t2a"], sigma_sampler(), torch.Generator(), video_shape=None, audio_shape=(3, 128),
                      caption_dropout=2.0), "caption_dropout"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match) as e:
            call()
        assert "\n" not in str(e.value), str(e.value)
    mode = training_mode("i2v", first_frame_p=0.3, prefix=2)
    assert mode.video.first_frame_p == 0.3 and mode.video.prefix == 2 and mode.audio.prefix == 2
    assert training_mode("extend", video_prefix=4).audio == MODES["extend"].audio
    ours, _ = tiny("19b")
    video, audio = _streams(MODES["t2av"], _draws(MODES["t2av"]), _latents())
    model = AVTrainModel(ours["transformer"], ours["text"])
    feats = _text_features(ours["text"])
    for bad, match in ((dataclasses.replace(video, cond=video.cond[:, :-1]), r"video.cond must have shape \(2, 40\)"),
                       (dataclasses.replace(video, cond=video.cond.float()), "must be bool"),
                       (dataclasses.replace(video, reference=video.x0), "come together")):
        with pytest.raises(ValueError, match=match):
            model(bad, audio, feats)
    with pytest.raises(ValueError, match="at least one"):
        model(None, None, feats)
