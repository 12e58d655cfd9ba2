"""VAE and latent-upsampler checkpoint conversion: official single file, diffusers folders, the ltx format.

Covers: keys and shapes of every released layout built on `meta` equal the reference classes'; every
diffusers rule fires; an official file with transformer + VAE gives both components; unknown keys and
unsupported configs are errors; official -> ltx -> official and ltx -> diffusers -> ltx are bitwise; our
diffusers output equals diffusers' own converter and loads into `AutoencoderKLLTXVideo`.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file, save_file

from ltx.core.checkpoint import CheckpointError
from ltx.core.keymap import KeyMapError, rename, rules_used
from ltx.ltxv import keys_vae as vt
from ltx.ltxv.checkpoint import (
    load_component,
    read_checkpoint,
    write_diffusers,
    write_ltx,
    write_official,
)
from ltx.ltxv.keys_official import ConfigError, dit_config_to_official
from ltx.ltxv.transformer import DiT, DiTConfig
from ltx.ltxv.upsampler import UPSAMPLER_PRESETS, LatentUpsampler, UpsamplerConfig
from ltx.ltxv.vae import STATISTICS, VAE_PRESETS, VAEConfig, VideoVAE, tiny

VERSIONS = ["0.9.0", "0.9.1", "0.9.5"]


@torch.no_grad()
def random_module(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    for t in list(module.parameters()) + list(module.buffers()):
        t.copy_(torch.randn(t.shape, generator=g))
    return module.eval()


def random_vae(cfg: VAEConfig, seed: int = 0) -> VideoVAE:
    return random_module(VideoVAE(cfg), seed)


def write_official_file(path, tensors: dict, config: dict):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"config": json.dumps(config)})
    return path


def official_vae_file(tmp_path, version: str, *, dit: bool = False, extra_statistics: bool = True, name="ckpt"):
    cfg = replace(tiny(VAE_PRESETS[version]), extra_statistics=extra_statistics)
    tensors = {"vae." + k: v for k, v in random_vae(cfg).state_dict().items()}
    config = {"vae": vt.vae_config_to_official(cfg), "scheduler": {"_class_name": "RectifiedFlowScheduler"}}
    if dit:
        dcfg = DiTConfig(num_layers=1, num_heads=2, head_dim=8, in_channels=cfg.latent_channels,
                         out_channels=cfg.latent_channels, caption_channels=16)  # fmt: skip
        tensors |= {"model.diffusion_model." + k: v for k, v in random_module(DiT(dcfg), 1).state_dict().items()}
        config["transformer"] = dit_config_to_official(dcfg)
    return write_official_file(tmp_path / f"{name}.safetensors", tensors, config), cfg


def tensors_of(path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def assert_bitwise(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------------------------------------ layouts


def test_key_contract():
    with torch.device("meta"):
        keys = set(VideoVAE(VAE_PRESETS["0.9.5"]).state_dict())
    for k in ("encoder.down_blocks.0.res_blocks.0.conv1.conv.weight", "encoder.down_blocks.1.conv.conv.weight",
              "decoder.up_blocks.0.time_embedder.timestep_embedder.linear_1.weight",
              "decoder.up_blocks.1.conv.conv.weight", "decoder.last_scale_shift_table",
              "decoder.timestep_scale_multiplier", "per_channel_statistics.std-of-means",
              "per_channel_statistics.mean-of-stds_over_std-of-means"):  # fmt: skip
        assert k in keys, k
    with torch.device("meta"):
        keys = set(VideoVAE(VAE_PRESETS["0.9.0"]).state_dict())
    assert {"encoder.down_blocks.1.conv.weight", "encoder.down_blocks.2.norm3.norm.weight",
            "encoder.down_blocks.2.conv_shortcut.weight", "decoder.up_blocks.2.conv.conv.weight"} <= keys  # fmt: skip


@pytest.mark.parity
@pytest.mark.parametrize("version", VERSIONS)
def test_meta_build_matches_official_keys_and_shapes(version):
    cvae = pytest.importorskip("ltx_video.models.autoencoders.causal_video_autoencoder")
    cfg = VAE_PRESETS[version]
    with torch.device("meta"):
        ref = cvae.CausalVideoAutoencoder.from_config(vt.vae_config_to_official(cfg))
        ours = VideoVAE(cfg)
    expected = {"vae." + k: tuple(v.shape) for k, v in ref.state_dict().items()}
    expected |= {f"vae.per_channel_statistics.{s}": (128,) for s in STATISTICS}
    mapping = rename(expected, vt.VAE_FROM_OFFICIAL)
    assert {k: expected[v] for k, v in mapping.items()} == {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    params = {"0.9.0": 419_193_649, "0.9.1": 934_976_434, "0.9.5": 1_246_913_522}[version]  # measured, official
    assert sum(p.numel() for p in ours.parameters()) == params


@pytest.mark.parity
@pytest.mark.parametrize("version", VERSIONS)
def test_meta_build_matches_diffusers_keys_and_shapes(version):
    diffusers = pytest.importorskip("diffusers")
    cfg = VAE_PRESETS[version]
    dcfg = vt.vae_config_to_diffusers(cfg)
    with torch.device("meta"):
        ref = diffusers.AutoencoderKLLTXVideo(**{k: v for k, v in dcfg.items() if not k.startswith("_")})
        ours = VideoVAE(vt.vae_config_from_diffusers(dcfg))
    expected = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    rules = vt.vae_diffusers_rules(cfg)
    mapping = rename(expected, rules)
    assert {k: expected[v] for k, v in mapping.items()} == {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert rules_used(expected, rules) == set(range(len(rules))), "dead rules in the diffusers table"


@pytest.mark.parity
@pytest.mark.parametrize("name", sorted(UPSAMPLER_PRESETS))
def test_upsampler_meta_build_matches_references(name):
    ups = pytest.importorskip("ltx_video.models.autoencoders.latent_upsampler")
    diffusers_up = pytest.importorskip("diffusers.pipelines.ltx.modeling_latent_upsampler")
    cfg = UPSAMPLER_PRESETS[name]
    official = vt.upsampler_config_to_official(cfg)
    with torch.device("meta"):
        ref = ups.LatentUpsampler.from_config(official)
        dif = diffusers_up.LTXLatentUpsamplerModel(**{k: v for k, v in official.items() if not k.startswith("_")})
        ours = LatentUpsampler(vt.upsampler_config_from_official(official))
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    for model in (ref, dif):
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert {k: expected[v] for k, v in rename(expected, vt.UPSAMPLER_RULES).items()} == shapes
    assert rules_used(shapes, vt.UPSAMPLER_RULES) == set(range(len(vt.UPSAMPLER_RULES)))
    params = sum(p.numel() for p in ours.parameters())
    assert params == sum(p.numel() for p in ref.parameters())
    assert round(params / 1e6, 2) == (126.25 if cfg.spatial else 130.97)  # reference notes §1.1


def test_diffusers_configs_of_the_releases():
    """diffusers' get_vae_config (scripts/convert_ltx_to_diffusers.py), as listed in the reference notes."""
    d = {v: vt.vae_config_to_diffusers(VAE_PRESETS[v]) for v in VERSIONS}
    assert d["0.9.0"]["block_out_channels"] == [128, 256, 512, 512]
    assert d["0.9.0"]["layers_per_block"] == [4, 3, 3, 3, 4]
    assert d["0.9.0"]["spatio_temporal_scaling"] == [True, True, True, False]
    assert d["0.9.0"]["timestep_conditioning"] is False and d["0.9.0"]["decoder_causal"] is False
    assert d["0.9.1"]["decoder_block_out_channels"] == [256, 512, 1024]
    assert d["0.9.1"]["decoder_layers_per_block"] == [5, 6, 7, 8]
    assert d["0.9.1"]["decoder_inject_noise"] == [True, True, True, False]
    assert d["0.9.1"]["upsample_residual"] == [True] * 3 and d["0.9.1"]["upsample_factor"] == [2, 2, 2]
    assert d["0.9.5"]["block_out_channels"] == [128, 256, 512, 1024, 2048]
    assert d["0.9.5"]["layers_per_block"] == [4, 6, 6, 2, 2]
    assert d["0.9.5"]["down_block_types"] == ["LTXVideo095DownBlock3D"] * 4
    assert d["0.9.5"]["downsample_type"] == ["spatial", "temporal", "spatiotemporal", "spatiotemporal"]
    assert d["0.9.5"]["decoder_layers_per_block"] == [5, 5, 5, 5]
    for v in VERSIONS:
        back = vt.vae_config_from_diffusers(d[v])
        assert replace(back, extra_statistics=True) == VAE_PRESETS[v]


# ------------------------------------------------------------------------------------------------ configs


@pytest.mark.parametrize("version", VERSIONS)
def test_official_config_round_trip(version):
    cfg = VAE_PRESETS[version]
    assert vt.vae_config_from_official(vt.vae_config_to_official(cfg)) == cfg


def test_official_090_shared_block_list_and_shorthand():
    c = {"_class_name": "CausalVideoAutoencoder", "dims": 3, "in_channels": 3, "out_channels": 3,
         "latent_channels": 128, "scaling_factor": 1.0, "norm_layer": "pixel_norm", "patch_size": 4,
         "latent_log_var": "uniform", "use_quant_conv": False, "causal_decoder": False,
         "blocks": [["res_x", 4], ["compress_all", 1], ["res_x_y", 1], ["res_x", 3], ["compress_all", 1],
                    ["res_x_y", 1], ["res_x", 3], ["compress_all", 1], ["res_x", 3], ["res_x", 4]]}  # fmt: skip
    assert vt.vae_config_from_official(c) == VAE_PRESETS["0.9.0"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"norm_layer": "group_norm"}, "pixel_norm"),
        ({"use_quant_conv": True}, "use_quant_conv"),
        ({"latent_log_var": "per_channel"}, "uniform"),
        ({"some_new_knob": 1}, "some_new_knob"),
        ({"encoder_blocks": [["attn_res_x", {"num_layers": 1}]]}, "attn_res_x"),
        ({"decoder_blocks": [["res_x", {"num_layers": 1, "heads": 2}]]}, "heads"),
        ({"_class_name": "VideoAutoencoder"}, "CausalVideoAutoencoder"),
    ],
)
def test_official_config_errors(change, message):
    c = vt.vae_config_to_official(VAE_PRESETS["0.9.5"]) | change
    with pytest.raises(ConfigError, match=message):
        vt.vae_config_from_official(c)


def test_official_config_relying_on_official_defaults_is_refused():
    c = vt.vae_config_to_official(VAE_PRESETS["0.9.5"])
    del c["norm_layer"]  # the official default is group_norm, which no release uses
    with pytest.raises(ConfigError, match="norm_layer"):
        vt.vae_config_from_official(c)


def test_diffusers_refuses_what_it_cannot_express():
    with pytest.raises(ConfigError, match="zeros"):
        vt.vae_config_to_diffusers(replace(VAE_PRESETS["0.9.5"], spatial_padding_mode="reflect"))
    with pytest.raises(ConfigError, match="width-changing conv_in"):
        # a res_x_y in a timestep-conditioned decoder has no scale-shift table officially, one in diffusers
        vt.vae_config_to_diffusers(replace(VAE_PRESETS["0.9.1"], decoder_blocks=VAE_PRESETS["0.9.0"].decoder_blocks))
    bad = vt.vae_config_to_diffusers(VAE_PRESETS["0.9.0"]) | {"new_field": 1}
    with pytest.raises(ConfigError, match="new_field"):
        vt.vae_config_from_diffusers(bad)


def test_upsampler_config_errors():
    good = vt.upsampler_config_to_official(UpsamplerConfig())
    assert vt.upsampler_config_from_official(good) == UpsamplerConfig()
    with pytest.raises(ConfigError, match="dims"):
        vt.upsampler_config_from_official(good | {"dims": 2})
    with pytest.raises(ConfigError, match="spatial or temporal"):
        vt.upsampler_config_from_official(good | {"temporal_upsample": True})
    with pytest.raises(ConfigError, match="foo"):
        vt.upsampler_config_from_official(good | {"foo": 1})


# ------------------------------------------------------------------------------------------------ files


def test_official_file_with_transformer_and_vae(tmp_path):
    path, cfg = official_vae_file(tmp_path, "0.9.5", dit=True)
    ckpt = read_checkpoint(path)
    assert ckpt.format == "official" and sorted(ckpt.components) == ["dit", "vae"]
    assert ckpt.components["vae"].config == cfg
    assert ckpt.extra == {"scheduler": {"_class_name": "RectifiedFlowScheduler"}}
    vae, dit = load_component(ckpt, "vae"), load_component(ckpt, "dit")
    assert isinstance(vae, VideoVAE) and isinstance(dit, DiT)
    source = tensors_of(path)
    for k, v in vae.state_dict().items():
        assert torch.equal(v, source["vae." + k]), k


def test_unknown_keys_are_errors(tmp_path):
    path, cfg = official_vae_file(tmp_path, "0.9.0")
    tensors = tensors_of(path)
    config = {"vae": vt.vae_config_to_official(cfg)}
    stray = write_official_file(tmp_path / "stray.safetensors", tensors | {"text_encoder.w": torch.zeros(1)}, config)
    with pytest.raises(CheckpointError, match="text_encoder.w"):
        read_checkpoint(stray)
    inner = write_official_file(tmp_path / "inner.safetensors", tensors | {"vae.encoder.bogus": torch.zeros(1)}, config)
    with pytest.raises(CheckpointError, match="encoder.bogus"):
        load_component(inner, "vae")
    with pytest.raises(KeyMapError, match="encoder.bogus"):  # and no converter passes it on
        write_diffusers(read_checkpoint(inner), tmp_path / "dif")


@pytest.mark.parametrize("version", VERSIONS)
def test_official_ltx_official_is_bitwise(tmp_path, version):
    path, cfg = official_vae_file(tmp_path, version, dit=True)
    ours = write_ltx(read_checkpoint(path), tmp_path / "ltx.safetensors")
    back = write_official(read_checkpoint(ours), tmp_path / "back.safetensors")
    assert_bitwise(tensors_of(back), tensors_of(path))
    again = read_checkpoint(back)
    assert again.components["vae"].config == cfg and again.extra == read_checkpoint(path).extra


@pytest.mark.parametrize("version", VERSIONS)
def test_ltx_diffusers_ltx_is_bitwise(tmp_path, version):
    path, cfg = official_vae_file(tmp_path, version, extra_statistics=False)
    folder = write_diffusers(read_checkpoint(path), tmp_path / "pipe")
    assert json.loads((folder / "vae" / "config.json").read_text())["_class_name"] == "AutoencoderKLLTXVideo"
    ckpt = read_checkpoint(folder)
    assert ckpt.format == "diffusers" and ckpt.components["vae"].config == cfg
    back = write_official(ckpt, tmp_path / "back.safetensors")
    assert_bitwise(tensors_of(back), tensors_of(path))


def test_diffusers_drops_only_the_unused_statistics(tmp_path):
    path, cfg = official_vae_file(tmp_path, "0.9.1")
    folder = write_diffusers(read_checkpoint(path), tmp_path / "pipe")
    back = tensors_of(write_official(read_checkpoint(folder), tmp_path / "back.safetensors"))
    source = tensors_of(path)
    dropped = {f"vae.per_channel_statistics.{s}" for s in ("channel", "mean-of-stds", "mean-of-stds_over_std-of-means")}
    assert set(source) - set(back) == dropped
    assert_bitwise(back, {k: v for k, v in source.items() if k not in dropped})


def test_official_file_without_unused_statistics(tmp_path):
    path, cfg = official_vae_file(tmp_path, "0.9.5", extra_statistics=False)
    ckpt = read_checkpoint(path)
    assert ckpt.components["vae"].config.extra_statistics is False
    assert set(load_component(ckpt, "vae").per_channel_statistics.state_dict()) == {"mean-of-means", "std-of-means"}


@pytest.mark.parity
@pytest.mark.parametrize("version", VERSIONS)
def test_diffusers_output_equals_diffusers_own_converter(tmp_path, version):
    diffusers = pytest.importorskip("diffusers")
    from diffusers.loaders.single_file_utils import convert_ltx_vae_checkpoint_to_diffusers

    path, cfg = official_vae_file(tmp_path, version)
    folder = write_diffusers(read_checkpoint(path), tmp_path / "pipe")
    ours = tensors_of(folder / "vae" / "diffusion_pytorch_model.safetensors")
    source = tensors_of(path)
    conv_out = source["vae.encoder.conv_out.conv.weight"]
    if version == "0.9.5":  # diffusers picks its 0.9.5 table by the full-size width (conv_out in == 2048)
        source["vae.encoder.conv_out.conv.weight"] = torch.empty(1, 2048)
    expected = convert_ltx_vae_checkpoint_to_diffusers(source)
    expected["encoder.conv_out.conv.weight"] = conv_out
    assert_bitwise(ours, expected)
    model = diffusers.AutoencoderKLLTXVideo.from_pretrained(folder / "vae")  # diffusers reads our folder
    assert {k for k in model.state_dict()} == set(ours)


def test_upsampler_standalone_file(tmp_path):
    cfg = UpsamplerConfig(in_channels=16, mid_channels=32, num_blocks_per_stage=1, spatial=False, temporal=True)
    tensors = random_module(LatentUpsampler(cfg)).state_dict()
    path = write_official_file(tmp_path / "up.safetensors", tensors, vt.upsampler_config_to_official(cfg))
    ckpt = read_checkpoint(path)
    assert ckpt.format == "official" and list(ckpt.components) == ["upsampler"] and ckpt.extra == {}
    assert ckpt.components["upsampler"].config == cfg
    ours = write_ltx(ckpt, tmp_path / "ltx.safetensors")
    assert_bitwise(tensors_of(write_official(read_checkpoint(ours), tmp_path / "back.safetensors")), tensors_of(path))
    folder = write_diffusers(read_checkpoint(ours), tmp_path / "pipe")
    assert (folder / "latent_upsampler" / "config.json").is_file()
    ckpt = read_checkpoint(folder)
    assert ckpt.components["upsampler"].config == cfg
    assert_bitwise(tensors_of(write_official(ckpt, tmp_path / "back2.safetensors")), tensors_of(path))
    assert isinstance(load_component(folder / "latent_upsampler", "upsampler"), LatentUpsampler)
    bad = write_official_file(tmp_path / "bad.safetensors", tensors | {"extra.w": torch.zeros(1)},
                              vt.upsampler_config_to_official(cfg))  # fmt: skip
    with pytest.raises(CheckpointError, match="extra.w"):
        read_checkpoint(bad)


def test_upsampler_is_written_alone(tmp_path):
    vae_path, _ = official_vae_file(tmp_path, "0.9.0")
    up_cfg = UpsamplerConfig(in_channels=16, mid_channels=32, num_blocks_per_stage=1)
    up_path = write_official_file(tmp_path / "up.safetensors", random_module(LatentUpsampler(up_cfg)).state_dict(),
                                  vt.upsampler_config_to_official(up_cfg))  # fmt: skip
    ckpt = read_checkpoint(vae_path)
    ckpt.components |= read_checkpoint(up_path).components
    both = write_ltx(ckpt, tmp_path / "both.safetensors")  # the ltx format holds any set of components
    assert sorted(read_checkpoint(both).components) == ["upsampler", "vae"]
    with pytest.raises(CheckpointError, match="file of its own"):
        write_official(read_checkpoint(both), tmp_path / "x.safetensors")
