"""Parity of the VAE and the latent upsamplers with ltx-video==0.1.2 (pip) and diffusers, fp32 on CPU.

Each test builds the official model from a config with tiny channel counts of a real block list (base width
16, 16 latent channels), randomizes every parameter (scale-shift tables, noise scales and the timestep
multiplier included: default init hides ordering bugs), saves it exactly like the official single file
(`vae.*` + `vae.per_channel_statistics.*`, metadata config {"vae": ...}), loads that file into the official
class (`CausalVideoAutoencoder.from_pretrained`) and into ours through `ltx.ltxv.checkpoint`, and compares.
diffusers is built from the same file through diffusers' own `convert_ltx_vae_checkpoint_to_diffusers`.

Measured max abs errors (decoded pixels up to 2.8 / 3.0 / 3.5 for 0.9.0 / 0.9.1 / 0.9.5):
  official  moments 9.8e-7 / 9.8e-7 / 8.8e-7, sampled latents 1.9e-6 / 1.9e-6 / 1.4e-6,
            decode 3.7e-6 / 2.1e-6 / 2.1e-6;
  diffusers moments 1.8e-7 / 1.8e-7 / 1.8e-7, decode 3.5e-6 / 2.1e-6 / 2.7e-6;
  upsamplers 0.0 (both kinds, both references).
The bound is 1e-5 everywhere. Our convs go through PyTorch's dispatch as the references' do (`ltx.ltxv.vae.conv3d`);
the errors are rounding order elsewhere, e.g. PixelNorm multiplies by rsqrt instead of dividing by sqrt and the
timestep modulation is one addcmul. (With the opt-in conv paths, `set_cpu_conv_path("taps")` / `("direct")`, decode
errors reach 5.2e-6 / 9.1e-6 here, on an AVX2-only AMD EPYC.)
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from ltx.ltxv.checkpoint import load_component, read_checkpoint
from ltx.ltxv.vae import DECODE_NOISE_SCALE, DECODE_TIMESTEP, STATISTICS

ltx_video = pytest.importorskip("ltx_video")
diffusers = pytest.importorskip("diffusers")
from diffusers import AutoencoderKLLTXVideo  # noqa: E402
from diffusers.loaders.single_file_utils import convert_ltx_vae_checkpoint_to_diffusers  # noqa: E402
from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel  # noqa: E402
from ltx_video.models.autoencoders.causal_video_autoencoder import CausalVideoAutoencoder  # noqa: E402
from ltx_video.models.autoencoders.latent_upsampler import LatentUpsampler as OfficialUpsampler  # noqa: E402
from ltx_video.models.autoencoders.vae_encode import vae_decode, vae_encode  # noqa: E402

pytestmark = pytest.mark.parity
ATOL = 1e-5
W, C = 16, 16  # base width and latent channels of the tiny models

# The released block lists (official metadata form: 0.9.0 shares one list, later releases use dicts).
BLOCKS_090 = [["res_x", 4], ["compress_all", 1], ["res_x_y", 1], ["res_x", 3], ["compress_all", 1], ["res_x_y", 1],
              ["res_x", 3], ["compress_all", 1], ["res_x", 3], ["res_x", 4]]  # fmt: skip
ENC_091 = [["res_x", {"num_layers": 4}], ["compress_all", {}], ["res_x_y", 1], ["res_x", {"num_layers": 3}],
           ["compress_all", {}], ["res_x_y", 1], ["res_x", {"num_layers": 3}], ["compress_all", {}],
           ["res_x", {"num_layers": 3}], ["res_x", {"num_layers": 4}]]  # fmt: skip
DEC_091 = [["res_x", {"num_layers": 5, "inject_noise": True}], ["compress_all", {"residual": True, "multiplier": 2}],
           ["res_x", {"num_layers": 6, "inject_noise": True}], ["compress_all", {"residual": True, "multiplier": 2}],
           ["res_x", {"num_layers": 7, "inject_noise": True}], ["compress_all", {"residual": True, "multiplier": 2}],
           ["res_x", {"num_layers": 8, "inject_noise": False}]]  # fmt: skip
ENC_095 = [["res_x", {"num_layers": 4}], ["compress_space_res", {"multiplier": 2}], ["res_x", {"num_layers": 6}],
           ["compress_time_res", {"multiplier": 2}], ["res_x", {"num_layers": 6}],
           ["compress_all_res", {"multiplier": 2}], ["res_x", {"num_layers": 2}],
           ["compress_all_res", {"multiplier": 2}], ["res_x", {"num_layers": 2}]]  # fmt: skip
RES5 = ["res_x", {"num_layers": 5, "inject_noise": False}]
DEC_095 = [RES5, ["compress_all", {"residual": True, "multiplier": 2}]] * 3 + [RES5]
BASE = {"_class_name": "CausalVideoAutoencoder", "dims": 3, "in_channels": 3, "out_channels": 3, "latent_channels": C,
        "scaling_factor": 1.0, "norm_layer": "pixel_norm", "patch_size": 4, "latent_log_var": "uniform",
        "use_quant_conv": False, "causal_decoder": False,
        "encoder_base_channels": W, "decoder_base_channels": W}  # fmt: skip
OFFICIAL = {
    "0.9.0": {**BASE, "blocks": BLOCKS_090},
    "0.9.1": {**BASE, "encoder_blocks": ENC_091, "decoder_blocks": DEC_091, "timestep_conditioning": True},
    "0.9.5": {**BASE, "encoder_blocks": ENC_095, "decoder_blocks": DEC_095, "timestep_conditioning": True},
}


def widths(*channels: int) -> tuple[int, ...]:
    return tuple(W // 8 * c for c in channels)  # listed at base width 8


# diffusers' get_vae_config (scripts/convert_ltx_to_diffusers.py) for each release, channels scaled to base width W.
DIFFUSERS = {
    "0.9.0": dict(block_out_channels=widths(8, 16, 32, 32), decoder_block_out_channels=widths(8, 16, 32, 32),
                  layers_per_block=(4, 3, 3, 3, 4), decoder_layers_per_block=(4, 3, 3, 3, 4)),
    "0.9.1": dict(block_out_channels=widths(8, 16, 32, 32), decoder_block_out_channels=widths(16, 32, 64),
                  layers_per_block=(4, 3, 3, 3, 4), decoder_layers_per_block=(5, 6, 7, 8),
                  decoder_spatio_temporal_scaling=(True, True, True), decoder_inject_noise=(True, True, True, False),
                  upsample_residual=(True, True, True), upsample_factor=(2, 2, 2), timestep_conditioning=True),
    "0.9.5": dict(block_out_channels=widths(8, 16, 32, 64, 128), decoder_block_out_channels=widths(16, 32, 64),
                  layers_per_block=(4, 6, 6, 2, 2), decoder_layers_per_block=(5, 5, 5, 5),
                  down_block_types=("LTXVideo095DownBlock3D",) * 4, spatio_temporal_scaling=(True,) * 4,
                  decoder_spatio_temporal_scaling=(True, True, True), decoder_inject_noise=(False,) * 4,
                  downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
                  upsample_residual=(True, True, True), upsample_factor=(2, 2, 2), timestep_conditioning=True),
}  # fmt: skip


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int) -> None:
    """Every parameter random, at scales that keep activations O(1)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        if name.endswith("scale_shift_table"):
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        elif name.endswith("timestep_scale_multiplier"):
            p.fill_(900.0 + 200.0 * torch.rand((), generator=g).item())
        elif "per_channel_scale" in name:
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        elif "norm" in name and name.endswith("weight"):
            p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
        elif p.ndim >= 2:
            p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
        else:
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def official_file(path, version: str, seed: int = 0):
    """An official-format single file with a random tiny VAE of `version`; returns (path, config)."""
    config = OFFICIAL[version]
    ref = CausalVideoAutoencoder.from_config(json.loads(json.dumps(config)))
    randomize_(ref, seed)
    g = torch.Generator().manual_seed(seed + 1)
    stats = {
        "channel": torch.arange(C, dtype=torch.float32),
        "mean-of-means": torch.randn(C, generator=g) * 0.3,
        "mean-of-stds": torch.rand(C, generator=g) + 0.5,
        "mean-of-stds_over_std-of-means": torch.rand(C, generator=g) + 1.0,
        "std-of-means": torch.rand(C, generator=g) + 0.5,
    }
    assert set(stats) == set(STATISTICS)
    tensors = {"vae." + k: v.contiguous() for k, v in ref.state_dict().items()}
    tensors |= {f"vae.per_channel_statistics.{k}": v for k, v in stats.items()}
    file = path / f"ltxv-{version}.safetensors"
    save_file(tensors, str(file), metadata={"config": json.dumps({"vae": config})})
    return file


def load_both(tmp_path, version: str):
    file = official_file(tmp_path, version)
    ref = CausalVideoAutoencoder.from_pretrained(file).eval()  # the official loader reads the same file
    ours = load_component(read_checkpoint(file), "vae")
    return file, ref, ours


def video(frames: int = 17, h: int = 64, w: int = 96, seed: int = 3) -> torch.Tensor:
    return torch.rand(1, 3, frames, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def diffusers_vae(file, version: str) -> AutoencoderKLLTXVideo:
    from safetensors.torch import load_file

    tensors = load_file(str(file))
    conv_out = tensors["vae.encoder.conv_out.conv.weight"]
    if version == "0.9.5":  # diffusers picks its 0.9.5 key table by the *full-size* width (conv_out in == 2048)
        tensors["vae.encoder.conv_out.conv.weight"] = torch.empty(1, 2048)
    sd = convert_ltx_vae_checkpoint_to_diffusers(tensors)
    sd["encoder.conv_out.conv.weight"] = conv_out
    model = AutoencoderKLLTXVideo(latent_channels=C, **DIFFUSERS[version]).eval()
    model.load_state_dict(sd, strict=True)
    return model


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = ATOL) -> None:
    assert actual.shape == expected.shape
    err = (actual - expected).abs().max().item()
    assert err <= atol, f"max abs error {err:.3g} > {atol} (reference max {expected.abs().max().item():.3g})"


@pytest.mark.parametrize("version", ["0.9.0", "0.9.1", "0.9.5"])
@torch.no_grad()
def test_vae_matches_official(tmp_path, version):
    _, ref, ours = load_both(tmp_path, version)
    x = video()
    # encode: moments (posterior mean + log-variance), then normalized latents sampled like vae_encode
    assert_close(ours.encode_moments(x), ref.encode(x).latent_dist.parameters)
    torch.manual_seed(11)
    expected = vae_encode(x, ref, vae_per_channel_normalize=True)
    torch.manual_seed(11)
    assert_close(ours.encode(x, sample=True), expected)
    # decode as the official pipeline does: noise mixed into the normalized latents, then vae_decode
    z = torch.randn(1, C, 3, 2, 3, generator=torch.Generator().manual_seed(5))
    if ours.cfg.timestep_conditioning:
        t = torch.tensor([DECODE_TIMESTEP])
        torch.manual_seed(7)  # the pipeline's randn_like, then (0.9.1) the decoder's noise injection
        s = torch.tensor([DECODE_NOISE_SCALE])[:, None, None, None, None]
        mixed = z * (1 - s) + torch.randn_like(z) * s
        expected = vae_decode(mixed, ref, is_video=True, vae_per_channel_normalize=True, timestep=t)
        torch.manual_seed(7)
        actual = ours.decode(z, t, noise_scale=DECODE_NOISE_SCALE)
    else:
        expected = vae_decode(z, ref, is_video=True, vae_per_channel_normalize=True)
        actual = ours.decode(z)
    assert_close(actual, expected)


@torch.no_grad()
def test_timestep_changes_decode(tmp_path):
    """Guards the test above: the decode timestep and its table must matter, or a bug could hide."""
    _, ref, ours = load_both(tmp_path, "0.9.5")
    z = torch.randn(1, C, 2, 2, 2, generator=torch.Generator().manual_seed(5))
    a, b = ours.decode(z, 0.05), ours.decode(z, 0.5)
    assert (a - b).abs().max() > 1e-2
    expected = vae_decode(z, ref, is_video=True, vae_per_channel_normalize=True, timestep=torch.tensor([0.5]))
    assert_close(b, expected)


@pytest.mark.parametrize("version", ["0.9.0", "0.9.1", "0.9.5"])
@torch.no_grad()
def test_vae_matches_diffusers(tmp_path, version):
    file, _, ours = load_both(tmp_path, version)
    ref = diffusers_vae(file, version)
    x = video()
    assert_close(ours.encode_moments(x), ref.encode(x).latent_dist.parameters)
    z = torch.randn(1, C, 3, 2, 3, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([DECODE_TIMESTEP]) if ours.cfg.timestep_conditioning else None
    torch.manual_seed(7)  # 0.9.1: both inject decoder noise from the global RNG in the same order
    expected = ref.decode(ours.denormalize(z), t).sample
    torch.manual_seed(7)
    assert_close(ours.decode(z, t), expected)


@pytest.mark.parametrize("spatial", [True, False], ids=["spatial", "temporal"])
@torch.no_grad()
def test_upsampler_matches_official_and_diffusers(tmp_path, spatial):
    config = {"_class_name": "LatentUpsampler", "in_channels": C, "mid_channels": 64, "num_blocks_per_stage": 2,
              "dims": 3, "spatial_upsample": spatial, "temporal_upsample": not spatial}  # fmt: skip
    ref = OfficialUpsampler.from_config(config).eval()
    randomize_(ref, 4)
    file = tmp_path / "upsampler.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(file),
              metadata={"config": json.dumps(config)})  # fmt: skip
    ref = OfficialUpsampler.from_pretrained(file).eval()
    ours = load_component(file, "upsampler")
    dif = LTXLatentUpsamplerModel(**{k: v for k, v in config.items() if not k.startswith("_")}).eval()
    dif.load_state_dict(ref.state_dict(), strict=True)
    z = torch.randn(2, C, 3, 4, 5, generator=torch.Generator().manual_seed(6))
    out = ours(z)
    assert out.shape == ((2, C, 3, 8, 10) if spatial else (2, C, 5, 4, 5))
    assert_close(out, ref(z))
    assert_close(out, dif(z))
