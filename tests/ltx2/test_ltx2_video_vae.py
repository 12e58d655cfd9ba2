"""LTX-2 video VAE (ltx/ltx2/vae.py) against ltx-core 1.0.0's VideoEncoder / VideoDecoder.

Tiny random-weight parity for the 19B and 2.3 block lists (fp32, CPU), full-size key/shape equality on the
meta device, metadata round trips and the error messages.
"""

from __future__ import annotations

import copy

import pytest
import torch
from ltx_core.model.video_vae import (
    SpatialTilingConfig,
    TemporalTilingConfig,
    TilingConfig,
    VideoDecoderConfigurator,
    VideoEncoderConfigurator,
)

from ltx.ltx2.vae import VIDEO_VAE_PRESETS, DecodeTiling, VideoVAE, VideoVAEConfig

# Verbatim `config["vae"]` values of the released files (digest §3.1), in the official dict form.
META_19B = {
    "dims": 3,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 128,
    "encoder_blocks": [["res_x", {"num_layers": 4}], ["compress_space_res", {"multiplier": 2}],
                       ["res_x", {"num_layers": 6}], ["compress_time_res", {"multiplier": 2}],
                       ["res_x", {"num_layers": 6}], ["compress_all_res", {"multiplier": 2}],
                       ["res_x", {"num_layers": 2}], ["compress_all_res", {"multiplier": 2}],
                       ["res_x", {"num_layers": 2}]],
    "decoder_blocks": [["res_x", {"num_layers": 5, "inject_noise": False}],
                       ["compress_all", {"residual": True, "multiplier": 2}],
                       ["res_x", {"num_layers": 5, "inject_noise": False}],
                       ["compress_all", {"residual": True, "multiplier": 2}],
                       ["res_x", {"num_layers": 5, "inject_noise": False}],
                       ["compress_all", {"residual": True, "multiplier": 2}],
                       ["res_x", {"num_layers": 5, "inject_noise": False}]],
    "patch_size": 4,
    "norm_layer": "pixel_norm",
    "latent_log_var": "uniform",
    "causal_decoder": False,
    "timestep_conditioning": False,
}  # fmt: skip
META_23 = {
    **META_19B,
    "encoder_blocks": [["res_x", {"num_layers": 4}], ["compress_space_res", {"multiplier": 2}],
                       ["res_x", {"num_layers": 6}], ["compress_time_res", {"multiplier": 2}],
                       ["res_x", {"num_layers": 4}], ["compress_all_res", {"multiplier": 2}],
                       ["res_x", {"num_layers": 2}], ["compress_all_res", {"multiplier": 1}],
                       ["res_x", {"num_layers": 2}]],
    "decoder_blocks": [["res_x", {"num_layers": 4}], ["compress_space", {"multiplier": 2}],
                       ["res_x", {"num_layers": 6}], ["compress_time", {"multiplier": 2}],
                       ["res_x", {"num_layers": 4}], ["compress_all", {"multiplier": 1}],
                       ["res_x", {"num_layers": 2}], ["compress_all", {"multiplier": 2}],
                       ["res_x", {"num_layers": 2}]],
    "decoder_base_channels": 128,
    "spatial_padding_mode": "zeros",
}  # fmt: skip
METAS = {"19b": META_19B, "2.3": META_23}


def tiny_meta(meta: dict) -> dict:
    """The same block list with 1 layer per res_x, latent channels 8 and decoder base channels 4."""
    d = copy.deepcopy(meta)
    for key in ("encoder_blocks", "decoder_blocks"):
        for name, params in d[key]:
            if name == "res_x":
                params["num_layers"] = 1
    d["latent_channels"] = 8
    d["decoder_base_channels"] = 4
    return d


def randomize(module: torch.nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


def build_pair(meta: dict, device: str = "cpu"):
    """(ours, reference encoder, reference decoder), ours loaded strictly from a file-like vae.* state dict."""
    gen = torch.Generator().manual_seed(1)
    with torch.device(device):
        ref_enc = VideoEncoderConfigurator.from_config({"vae": meta})
        ref_dec = VideoDecoderConfigurator.from_config({"vae": meta})
        ours = VideoVAE(VideoVAEConfig.from_metadata(meta))
    if device == "meta":
        return ours, ref_enc, ref_dec
    randomize(ref_enc, gen)
    randomize(ref_dec, gen)
    c = meta["latent_channels"]
    stats = {"mean-of-means": torch.randn(c, generator=gen) * 0.5, "std-of-means": torch.rand(c, generator=gen) + 0.5}
    for ref in (ref_enc, ref_dec):
        for k, v in stats.items():
            ref.per_channel_statistics.get_buffer(k).copy_(v)
    file_sd = {f"vae.encoder.{k}": v for k, v in ref_enc.state_dict().items() if "per_channel" not in k}
    file_sd |= {f"vae.decoder.{k}": v for k, v in ref_dec.state_dict().items() if "per_channel" not in k}
    file_sd |= {f"vae.per_channel_statistics.{k}": v for k, v in stats.items()}
    file_sd |= {"vae.per_channel_statistics.channel": torch.arange(c).float(),
                "vae.per_channel_statistics.mean-of-stds": torch.rand(c, generator=gen)}  # fmt: skip
    ours.load_state_dict({k.removeprefix("vae."): v for k, v in file_sd.items()}, strict=True)
    return ours, ref_enc, ref_dec


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp(min=1.0)).item()


@pytest.mark.parametrize("variant", ["19b", "2.3"])
def test_tiny_parity(variant):
    meta = tiny_meta(METAS[variant])
    ours, ref_enc, ref_dec = build_pair(meta)
    x = torch.rand(1, 3, 17, 64, 96, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        z_ref, z = ref_enc(x), ours.encode(x)
        assert z.shape == (1, 8, 3, 2, 3)
        assert rel_diff(z, z_ref) <= 1e-5, rel_diff(z, z_ref)
        y_ref, y = ref_dec(z_ref), ours.decode(z_ref)
        assert y.shape == (1, 3, 17, 64, 96)
        assert rel_diff(y, y_ref) <= 1e-5, rel_diff(y, y_ref)
        # a single frame (image) goes through the temporal downsamplers too
        x1 = x[:, :, :1]
        assert rel_diff(ours.encode(x1), ref_enc(x1)) <= 1e-5


@pytest.mark.parametrize("variant", ["19b", "2.3"])
def test_full_size_keys_and_shapes(variant):
    meta = METAS[variant]
    ours, ref_enc, ref_dec = build_pair(meta, device="meta")
    want = {f"encoder.{k}": v.shape for k, v in ref_enc.state_dict().items() if "per_channel" not in k}
    want |= {f"decoder.{k}": v.shape for k, v in ref_dec.state_dict().items() if "per_channel" not in k}
    want |= {f"per_channel_statistics.{k}": torch.Size([128])
             for k in ("channel", "mean-of-means", "mean-of-stds", "std-of-means")}  # fmt: skip
    got = {k: v.shape for k, v in ours.state_dict().items()}
    assert got == want
    preset = VIDEO_VAE_PRESETS["ltx-2-19b" if variant == "19b" else "ltx-2.3-22b"]
    assert VideoVAEConfig.from_metadata(meta) == preset


@pytest.mark.parametrize("variant", ["19b", "2.3"])
def test_metadata_round_trip(variant):
    cfg = VideoVAEConfig.from_metadata(METAS[variant])
    assert VideoVAEConfig.from_metadata(cfg.to_metadata()) == cfg
    # the reference configurator reads our metadata into the same architecture
    with torch.device("meta"):
        a = VideoDecoderConfigurator.from_config({"vae": cfg.to_metadata()})
        b = VideoDecoderConfigurator.from_config({"vae": METAS[variant]})
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    assert a.conv_in.conv.padding_mode == b.conv_in.conv.padding_mode


def test_padding_modes():
    assert VIDEO_VAE_PRESETS["ltx-2-19b"].encoder_spatial_padding_mode == "zeros"
    assert VIDEO_VAE_PRESETS["ltx-2-19b"].decoder_spatial_padding_mode == "reflect"
    assert VIDEO_VAE_PRESETS["ltx-2.3-22b"].decoder_spatial_padding_mode == "zeros"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"timestep_conditioning": True}, "vae.timestep_conditioning=True"),
        ({"timestep_conditioning": None}, "absent"),
        ({"norm_layer": "group_norm"}, "vae.norm_layer='group_norm' is not supported"),
        ({"latent_log_var": "per_channel"}, "vae.latent_log_var='per_channel'"),
        ({"causal_decoder": True}, "vae.causal_decoder=True"),
        ({"dims": 2}, "vae.dims=2"),
        ({"spatial_padding_mode": "mirror"}, "'mirror' is not supported"),
        ({"encoder_blocks": [["attn_res_x", {"num_layers": 1}]]}, "block 'attn_res_x' is not supported"),
        ({"decoder_blocks": [["res_x", {"num_layers": 1, "inject_noise": True}]]}, "inject_noise=True"),
        ({"decoder_blocks": [["compress_time", {"multiplier": 2, "residual": True}]]}, "['residual']"),
    ],
)
def test_bad_metadata(change, message):
    meta = {**META_19B, **change}
    if change.get("timestep_conditioning", 0) is None:
        del meta["timestep_conditioning"]
    with pytest.raises(ValueError, match=None) as err:
        VideoVAEConfig.from_metadata(meta)
    assert message in str(err.value)


def test_bad_shapes():
    vae = VideoVAE(VideoVAEConfig.from_metadata(tiny_meta(META_23)))
    with pytest.raises(ValueError, match=r"16 frames is not 8k\+1; nearest valid: 9 or 17"):
        vae.encode(torch.zeros(1, 3, 16, 64, 64))
    with pytest.raises(ValueError, match="height 60 is not a multiple of 32; nearest valid: 32 or 64"):
        vae.encode(torch.zeros(1, 3, 9, 60, 64))
    with pytest.raises(ValueError, match="4 channels; the VAE takes 3"):
        vae.encode(torch.zeros(1, 4, 9, 64, 64))
    with pytest.raises(ValueError, match="have 128 channels; this VAE has 8"):
        vae.decode(torch.zeros(1, 128, 2, 2, 2))
    with pytest.raises(ValueError, match="must be"):
        vae.decode(torch.zeros(1, 8, 2, 2))


@pytest.mark.parametrize("variant", ["19b", "2.3"])
def test_tiled_decode_parity(variant):
    ours, _, ref_dec = build_pair(tiny_meta(METAS[variant]))
    z = torch.randn(1, 8, 3, 4, 3, generator=torch.Generator().manual_seed(3))  # 2 x 3 x 2 tiles
    ref_tiling = TilingConfig(SpatialTilingConfig(64, 32), TemporalTilingConfig(16, 8))
    with torch.no_grad():
        want = torch.cat(list(ref_dec.tiled_decode(z, ref_tiling)), dim=2)
        got = ours.tiled_decode(
            z,
            DecodeTiling(spatial_tile_px=64, spatial_overlap_px=32, temporal_tile_frames=16, temporal_overlap_frames=8),
        )
        assert got.shape == want.shape == (1, 3, 17, 128, 96)
        assert rel_diff(got, want) <= 1e-5, rel_diff(got, want)
        # untiled on a grid that fits in one tile
        one = ours.tiled_decode(z[:, :, :2, :2, :2], DecodeTiling())
        assert torch.equal(one, ours.decode(z[:, :, :2, :2, :2]))


def test_bad_tiling():
    with pytest.raises(ValueError, match="spatial tiling 48"):
        DecodeTiling(spatial_tile_px=48)
    with pytest.raises(ValueError, match="temporal tiling 16 with overlap 16"):
        DecodeTiling(temporal_tile_frames=16, temporal_overlap_frames=16)
