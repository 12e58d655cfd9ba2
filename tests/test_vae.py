"""VAE and latent upsampler invariants (no reference packages needed).

- causal encoding: changing frames after 8t leaves latents 0..t bitwise unchanged;
- latent statistics: encode returns normalized latents, decode undoes it; the decode noise follows the
  official formula; the 0.9.1 noise injection uses the generator;
- tiling: one tile == untiled bitwise; with a spatially and temporally *local* VAE (every conv reduced to its
  current-frame centre tap, so nothing crosses a seam) tiled == untiled within 1e-5 decode / 2e-6 encode
  (measured 4.9e-6 on outputs up to 2.5, and 4.2e-7: the blend weights sum to 1 only up to fp32 rounding),
  which pins tile offsets, frame alignment and blend weights; with a full random VAE the seams differ by
  design (measured mean error 0.16-0.21x the mean signal, max 1.1-1.4 on outputs up to 3.8: random weights
  see far past the overlap);
- conv path: fp32 CPU convs are PyTorch's own (bitwise) unless a faster path is opted into, so the decode's
  accuracy does not depend on the CPU (tests/test_vae_fp64.py measures it);
- bad input: clear ValueErrors naming the nearest valid sizes; version mismatches;
- configs/vae/*.yaml give the presets through OmegaConf structured configs.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

import ltx.ltxv.vae as vae_module
from ltx.ltxv.transformer import DiTConfig
from ltx.ltxv.upsampler import UPSAMPLER_PRESETS, LatentUpsampler, UpsamplerConfig
from ltx.ltxv.vae import (
    DECODE_NOISE_SCALE,
    VAE_PRESETS,
    CausalConv3d,
    VAEConfig,
    VideoVAE,
    check_dit_compatible,
    conv3d,
    set_cpu_conv_path,
    tiny,
)
from ltx.ltxv.vae_tiling import (
    Tiling,
    choose_tiling,
    decode_memory_bytes,
    encode_memory_bytes,
    tile_starts,
    tiled_decode,
    tiled_encode,
    tiled_encode_moments,
)

VERSIONS = ["0.9.0", "0.9.1", "0.9.5"]
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "vae"


@torch.no_grad()
def random_vae(version: str, seed: int = 0, local: bool = False) -> VideoVAE:
    """A tiny VAE of a real block list with random weights; `local` reduces every 3x3x3 conv to one tap."""
    vae = VideoVAE(tiny(VAE_PRESETS[version])).eval()
    g = torch.Generator().manual_seed(seed)
    for name, p in vae.named_parameters():
        if name.endswith("timestep_scale_multiplier"):
            p.fill_(1000.0)
        elif p.ndim >= 2 and "scale_shift_table" not in name:
            p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            if local and p.ndim == 5 and p.shape[-1] == 3:  # keep one tap: the current frame, the centre pixel
                t = 2 if name.startswith("encoder") else 1  # causal convs see frames t-2, t-1, t; others t-1, t, t+1
                keep = p[:, :, t, 1, 1].clone()
                p.zero_()[:, :, t, 1, 1] = keep * 3
        else:
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    for b in vae.per_channel_statistics.buffers():
        b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return vae


def video(frames=17, h=64, w=96, seed=1):
    return torch.rand(1, 3, frames, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def latents(vae: VideoVAE, f=3, h=2, w=3, seed=2):
    return torch.randn(1, vae.cfg.latent_channels, f, h, w, generator=torch.Generator().manual_seed(seed))


def timestep(vae: VideoVAE):
    return 0.05 if vae.cfg.timestep_conditioning else None


# ------------------------------------------------------------------------------------------------ shapes


@pytest.mark.parametrize("version", VERSIONS)
@torch.no_grad()
def test_shapes_and_factors(version):
    vae = random_vae(version)
    assert (vae.cfg.spatial_factor, vae.cfg.temporal_factor) == (32, 8)
    for frames in (1, 9, 17):
        z = vae.encode(video(frames))
        assert z.shape == (1, 16, (frames - 1) // 8 + 1, 2, 3)
        assert vae.decode(z, timestep(vae)).shape == (1, 3, frames, 64, 96)


def test_init_weights_on_meta():
    with torch.device("meta"):
        vae = VideoVAE(tiny(VAE_PRESETS["0.9.1"]))
    vae.to_empty(device="cpu").init_weights()
    assert all(torch.isfinite(p).all() for p in vae.parameters())
    assert vae.decoder.timestep_scale_multiplier.item() == 1000.0
    assert torch.equal(vae.per_channel_statistics.std, torch.ones(16))
    up = LatentUpsampler(UpsamplerConfig(in_channels=16, mid_channels=32, num_blocks_per_stage=1)).init_weights()
    assert up(torch.randn(1, 16, 2, 3, 3)).shape == (1, 16, 2, 6, 6)


@pytest.mark.parametrize("name", sorted(UPSAMPLER_PRESETS))
def test_upsampler_shapes(name):
    cfg = replace(UPSAMPLER_PRESETS[name], in_channels=8, mid_channels=32, num_blocks_per_stage=1)
    up = LatentUpsampler(cfg).init_weights().eval()
    out = up(torch.randn(2, 8, 3, 4, 5))
    assert out.shape == ((2, 8, 3, 8, 10) if cfg.spatial else (2, 8, 5, 4, 5))
    with pytest.raises(ValueError, match="16, F, H, W|8, F, H, W"):
        up(torch.randn(2, 16, 3, 4, 5))


# ------------------------------------------------------------------------------------------------ invariants


@pytest.mark.parametrize("version", VERSIONS)
@torch.no_grad()
def test_causal_encoding(version):
    vae = random_vae(version)
    x = video(25)
    z = vae.encode_moments(x)
    for t in (0, 1, 2):  # latent t sees pixel frames <= 8t
        y = x.clone()
        y[:, :, 8 * t + 1 :] = torch.rand_like(y[:, :, 8 * t + 1 :])
        zy = vae.encode_moments(y)
        assert torch.equal(zy[:, :, : t + 1], z[:, :, : t + 1])
        assert not torch.equal(zy[:, :, t + 1 :], z[:, :, t + 1 :])  # and the later ones do change
    prefix = vae.encode_moments(x[:, :, :9])  # a shorter video: same latents (other conv shapes: rounding only)
    torch.testing.assert_close(prefix, z[:, :, :2], atol=2e-6, rtol=0)


@torch.no_grad()
def test_latent_statistics_and_posterior():
    vae = random_vae("0.9.5")
    x = video()
    moments = vae.encode_moments(x)
    mean, logvar = moments.chunk(2, dim=1)
    assert torch.equal(logvar, logvar[:, :1].expand_as(logvar))  # one shared ("uniform") log-variance
    s = vae.per_channel_statistics
    expected = (mean - s.mean.view(1, -1, 1, 1, 1)) / s.std.view(1, -1, 1, 1, 1)
    torch.testing.assert_close(vae.encode(x), expected, atol=0, rtol=0)
    torch.testing.assert_close(vae.denormalize(vae.normalize(mean)), mean, atol=1e-6, rtol=0)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(3))
    sampled = vae.encode(x, sample=True, generator=g)
    expected = vae.normalize(mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * noise)
    torch.testing.assert_close(sampled, expected, atol=0, rtol=0)


@torch.no_grad()
def test_decode_noise_follows_the_official_formula():
    vae = random_vae("0.9.5")
    z = latents(vae)
    noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(4))
    mixed = z * (1 - DECODE_NOISE_SCALE) + noise * DECODE_NOISE_SCALE
    actual = vae.decode(z, 0.05, noise_scale=DECODE_NOISE_SCALE, generator=torch.Generator().manual_seed(4))
    assert torch.equal(actual, vae.decode(mixed, 0.05))
    assert not torch.equal(actual, vae.decode(z, 0.05))


@torch.no_grad()
def test_noise_injection_uses_the_generator():
    vae = random_vae("0.9.1")
    z = latents(vae)
    a = vae.decode(z, 0.05, generator=torch.Generator().manual_seed(1))
    b = vae.decode(z, 0.05, generator=torch.Generator().manual_seed(1))
    c = vae.decode(z, 0.05, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and (a - c).abs().max() > 1e-3


# ------------------------------------------------------------------------------------------------ conv path


@torch.no_grad()
def test_convs_are_pytorchs_own_unless_a_faster_path_is_opted_into(monkeypatch):
    conv = CausalConv3d(8, 8).conv
    g = torch.Generator().manual_seed(0)
    conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) / 15)
    conv.bias.copy_(torch.randn(conv.bias.shape, generator=g))
    small, large = torch.randn(1, 8, 5, 6, 6, generator=g), torch.randn(2, 8, 5, 24, 24, generator=g)
    for x in (small, large):  # PyTorch picks im2col for the small input, oneDNN for the large one
        assert torch.equal(conv3d(x, conv), conv(x))
    monkeypatch.setattr(vae_module, "_cpu_conv_path", "pytorch")  # restored after the test
    for path, x in (("taps", small), ("direct", small), ("direct", large)):
        set_cpu_conv_path(path)
        torch.testing.assert_close(conv3d(x, conv), conv(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="pytorch, taps, direct"):
        set_cpu_conv_path("fast")


# ------------------------------------------------------------------------------------------------ tiling


def test_tile_starts():
    assert tile_starts(10, 4, 1) == [0, 3, 6]
    assert tile_starts(10, 4, 2) == [0, 2, 4, 6]
    assert tile_starts(3, 8, 2) == [0]


@pytest.mark.parametrize("version", VERSIONS)
@torch.no_grad()
def test_single_tile_is_bitwise(version):
    vae = random_vae(version)
    z = latents(vae, 3, 4, 5)
    tiled = tiled_decode(vae, z, timestep(vae), tiling=Tiling((3, 4, 5)), generator=torch.Generator().manual_seed(0))
    assert torch.equal(tiled, vae.decode(z, timestep(vae), generator=torch.Generator().manual_seed(0)))
    x = video(17, 128, 160)
    assert torch.equal(tiled_encode(vae, x, tiling=Tiling((3, 4, 5))), vae.encode(x))


@pytest.mark.parametrize("version", ["0.9.0", "0.9.5"])
@pytest.mark.parametrize(
    "tiling", [Tiling((2, 3, 3), (1, 1, 1)), Tiling((3, 4, 3), (2, 2, 0)), Tiling((4, 2, 7), (1, 0, 2))], ids=str
)
@torch.no_grad()
def test_tiled_equals_untiled_for_a_local_vae(version, tiling):
    vae = random_vae(version, local=True)
    z = latents(vae, 4, 4, 7)
    full = vae.decode(z, timestep(vae))
    torch.testing.assert_close(tiled_decode(vae, z, timestep(vae), tiling=tiling), full, atol=1e-5, rtol=0)
    x = video(25, 128, 160)
    torch.testing.assert_close(tiled_encode_moments(vae, x, tiling=tiling), vae.encode_moments(x), atol=2e-6, rtol=0)


@pytest.mark.parametrize("tiling, measured", [(Tiling((4, 4, 6)), 0.16), (Tiling((3, 6, 6)), 0.21)], ids=str)
@torch.no_grad()
def test_tiled_decode_of_a_full_vae_is_close(tiling, measured):
    """Seams of a full random VAE: mean error below 0.3x the mean signal (measured 0.16x in space, 0.21x in
    time; a one-pixel misplacement gives 1.4x). Random weights see far past a 2-latent overlap."""
    vae = random_vae("0.9.5")
    z = latents(vae, 4, 6, 6)
    full = vae.decode(z, 0.05)
    err = (tiled_decode(vae, z, 0.05, tiling=tiling) - full).abs()
    assert err.mean() < 0.3 * full.abs().mean()


def test_temporal_tiles_must_overlap():
    vae = random_vae("0.9.0")
    with pytest.raises(ValueError, match="overlap >= 1 in time"):
        tiled_decode(vae, latents(vae, 4, 2, 2), tiling=Tiling((2, 2, 2), (0, 0, 0)))


def test_memory_estimate_and_budget():
    """A 4K video decodes in bounded working memory: one tile's activations fit the budget at any length."""
    cfg = VAE_PRESETS["0.9.5"]
    weights = decode_memory_bytes(cfg, (1, 128, 1, 1, 1))  # ~2.2 GB of fp32 decoder weights (+ a 1x1 latent)
    budget = 4 << 30
    for frames in (16, 32, 64):  # 121 / 249 / 505 frames at 3840x2176 (2160 padded to a multiple of 32)
        z = (1, 128, frames, 68, 120)
        assert decode_memory_bytes(cfg, z) > 30 * budget  # untiled: hundreds of GiB
        tiling = choose_tiling(cfg, z, budget)
        working = decode_memory_bytes(cfg, z, tiling=tiling) - weights - _output_bytes(cfg, z)
        assert budget / 2 < working <= budget, tiling
    x = (1, 3, 121, 2176, 3840)
    tiling = choose_tiling(cfg, (1, 128, 16, 68, 120), budget, "encode")
    assert encode_memory_bytes(cfg, x, tiling=tiling) < encode_memory_bytes(cfg, x) / 10


def _output_bytes(cfg: VAEConfig, shape) -> int:
    B, _, f, h, w = shape
    return 4 * B * 3 * (8 * (f - 1) + 1) * 32 * h * 32 * w


# ------------------------------------------------------------------------------------------------ bad input


def test_bad_video_shapes_name_the_nearest_valid_values():
    vae = random_vae("0.9.5")
    with pytest.raises(ValueError, match=r"10 frames is not 8N\+1; nearest valid: 9 or 17"):
        vae.encode(video(10))
    with pytest.raises(ValueError, match=r"height 100 is not a multiple of 32; nearest valid: 96 or 128"):
        vae.encode(video(9, 100, 64))
    with pytest.raises(ValueError, match=r"width 16 is not a multiple of 32; nearest valid: 32"):
        vae.encode(video(9, 64, 16))
    with pytest.raises(ValueError, match="4 channels"):
        vae.encode(torch.zeros(1, 4, 9, 64, 64))


def test_bad_latents_and_timesteps():
    vae = random_vae("0.9.5")
    with pytest.raises(ValueError, match="latents have 8 channels; this VAE .0.9.5 layout. has 16"):
        vae.decode(torch.zeros(1, 8, 2, 2, 2), 0.05)
    with pytest.raises(ValueError, match="timestep-conditioned"):
        vae.decode(torch.zeros(1, 16, 2, 2, 2))
    old = random_vae("0.9.0")
    with pytest.raises(ValueError, match="takes no decode timestep"):
        old.decode(torch.zeros(1, 16, 2, 2, 2), 0.05)


def test_vae_transformer_version_mismatch():
    new_dit = DiTConfig(causal_temporal_positioning=True)
    check_dit_compatible(VAE_PRESETS["0.9.5"], new_dit)
    check_dit_compatible(VAE_PRESETS["0.9.1"], DiTConfig())
    with pytest.raises(ValueError, match="version mismatch.*0.9.0 layout"):
        check_dit_compatible(VAE_PRESETS["0.9.0"], new_dit)
    with pytest.raises(ValueError, match="version mismatch.*0.9.5 layout"):
        check_dit_compatible(VAE_PRESETS["0.9.5"], DiTConfig())
    with pytest.raises(ValueError, match="64 latent channels"):
        check_dit_compatible(VAE_PRESETS["0.9.5"], DiTConfig(in_channels=64, out_channels=64))


def test_config_validation():
    with pytest.raises(ValueError, match="attn_res_x"):
        VAEConfig(decoder_blocks=[{"name": "attn_res_x", "num_layers": 1}])
    with pytest.raises(ValueError, match="spatial or temporal"):
        UpsamplerConfig(spatial=True, temporal=True)


# ------------------------------------------------------------------------------------------------ configs


@pytest.mark.parametrize(
    "name, preset",
    [("ltxv_vae_090", VAE_PRESETS["0.9.0"]), ("ltxv_vae_091", VAE_PRESETS["0.9.1"]),
     ("ltxv_vae_095", VAE_PRESETS["0.9.5"]),
     ("spatial_upscaler_097", UPSAMPLER_PRESETS["spatial-0.9.7"]),
     ("spatial_upscaler_098", UPSAMPLER_PRESETS["spatial-0.9.8"]),
     ("temporal_upscaler_097", UPSAMPLER_PRESETS["temporal-0.9.7"])],
)  # fmt: skip
def test_hydra_configs(name, preset):
    omegaconf = pytest.importorskip("omegaconf")
    OmegaConf = omegaconf.OmegaConf
    raw = OmegaConf.load(CONFIGS / f"{name}.yaml")
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(type(preset)), raw))
    assert cfg == preset
    with pytest.raises(Exception, match="num_layer"):  # typos fail
        OmegaConf.merge(OmegaConf.structured(type(preset)), raw, OmegaConf.create({"num_layer": 1}))
