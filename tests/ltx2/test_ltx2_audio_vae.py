"""ltx.ltx2.audio_vae against ltx-core 1.0.0 (AudioEncoder / AudioDecoder / AudioPatchifier / AudioLatentShape).

Weights: the reference modules are built by ltx-core's own configurators from the metadata, randomised (no
zero-inits left), written out in the official file layout (`audio_vae.{encoder,decoder,per_channel_statistics}.*`,
checked against ltx-core's SDOps) and loaded strictly into ours.
"""

from __future__ import annotations

import copy

import pytest
import torch
from ltx_core.components.patchifiers import AudioPatchifier
from ltx_core.model.audio_vae.model_configurator import (
    AUDIO_VAE_DECODER_COMFY_KEYS_FILTER,
    AUDIO_VAE_ENCODER_COMFY_KEYS_FILTER,
    AudioDecoderConfigurator,
    AudioEncoderConfigurator,
)
from ltx_core.model.common.normalization import NormType, build_normalization_layer
from ltx_core.types import AudioLatentShape, VideoPixelShape

from ltx.ltx2.audio_vae import (
    AudioVAE,
    AudioVAEConfig,
    audio_positions,
    latent_frames,
    latent_frames_for_mel,
    latent_frames_for_video,
    mel_frames_for_latents,
    patchify,
    pixel_norm,
    unpatchify,
)

# Verbatim `config["audio_vae"]` of the released files (digest §3.2; the 19B header has `embed_dim`, the 2.3
# dump does not). The ddconfig is the same in both.
_DDCONFIG = {
    "double_z": True, "mel_bins": 64, "z_channels": 8, "resolution": 256, "downsample_time": False, "in_channels": 2,
    "out_ch": 2, "ch": 128, "ch_mult": [1, 2, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0,
    "mid_block_add_attention": False, "norm_type": "pixel", "causality_axis": "height",
}  # fmt: skip
_PREPROCESSING = {
    "audio": {"sampling_rate": 16000, "max_wav_value": 32768.0, "duration": 5.12, "stereo": True, "causal_padding": 3},
    "stft": {"filter_length": 1024, "hop_length": 160, "win_length": 1024, "causal": True},
    "mel": {"n_mel_channels": 64, "mel_fmin": 0, "mel_fmax": 8000},
}
META_19B = {"preprocessing": _PREPROCESSING,
            "model": {"params": {"sampling_rate": 16000, "embed_dim": 8, "ddconfig": _DDCONFIG}}}  # fmt: skip
META_23 = {"model": {"params": {"ddconfig": _DDCONFIG, "sampling_rate": 16000}}, "preprocessing": _PREPROCESSING}


def _small_meta() -> dict:
    """ch 32 with z 2: the reference sizes its statistics by `ch`, so ch must equal z * mel_bins / 4."""
    meta = copy.deepcopy(META_23)
    meta["model"]["params"]["ddconfig"].update(ch=32, z_channels=2)
    return meta


def _reference(meta: dict) -> tuple[torch.nn.Module, torch.nn.Module]:
    full = {"audio_vae": meta}
    return AudioEncoderConfigurator.from_config(full), AudioDecoderConfigurator.from_config(full)


def _file_layout(enc: torch.nn.Module, dec: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The reference modules' weights under the official file keys (one shared copy of the statistics)."""
    sd: dict[str, torch.Tensor] = {}
    for prefix, module in (("audio_vae.encoder.", enc), ("audio_vae.decoder.", dec)):
        for k, v in module.state_dict().items():
            if k.startswith("per_channel_statistics."):
                sd["audio_vae." + k] = v
            else:
                sd[prefix + k] = v
    # ltx-core's SDOps map exactly these file keys back onto its modules
    for ops, module in ((AUDIO_VAE_ENCODER_COMFY_KEYS_FILTER, enc), (AUDIO_VAE_DECODER_COMFY_KEYS_FILTER, dec)):
        mapped = {ops.apply_to_key(k) for k in sd} - {None}
        assert mapped == set(module.state_dict())
    return sd


def _randomise(enc: torch.nn.Module, dec: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in (enc, dec):
            for name, p in module.named_parameters():
                fan_in = p[0].numel() if p.ndim > 1 else 1
                std = 0.05 if name.endswith("bias") else 1.5 / fan_in**0.5
                p.copy_(torch.randn(p.shape, generator=g) * std)
        stats_std = 0.5 + torch.rand(enc.per_channel_statistics.get_buffer("std-of-means").shape, generator=g)
        stats_mean = torch.randn(stats_std.shape, generator=g) * 0.2
        for module in (enc, dec):
            module.per_channel_statistics.get_buffer("std-of-means").copy_(stats_std)
            module.per_channel_statistics.get_buffer("mean-of-means").copy_(stats_mean)


def _pair(meta: dict) -> tuple[AudioVAE, torch.nn.Module, torch.nn.Module]:
    enc, dec = _reference(meta)
    _randomise(enc, dec)
    ours = AudioVAE(AudioVAEConfig.from_metadata(meta))
    sd = {k.removeprefix("audio_vae."): v for k, v in _file_layout(enc, dec).items()}
    ours.load_state_dict(sd, strict=True)
    return ours.eval(), enc.eval(), dec.eval()


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / max(1.0, float(b.abs().max())))


@torch.no_grad()
def test_full_size_encode_decode_parity():
    ours, enc, dec = _pair(META_23)
    mel = torch.randn(1, 2, 101, 64) * 2.0 - 6.0  # log-mel-like
    ref_latent = enc(mel)
    latent = ours.encode(mel)
    assert latent.shape == ref_latent.shape == (1, 8, 26, 16)
    assert _max_rel(latent, ref_latent) <= 1e-5, _max_rel(latent, ref_latent)
    ref_mel = dec(ref_latent)
    out = ours.decode(ref_latent)
    assert out.shape == ref_mel.shape == (1, 2, 101, 64)
    assert _max_rel(out, ref_mel) <= 1e-5, _max_rel(out, ref_mel)


@pytest.fixture(scope="module")
def small_pair() -> tuple[AudioVAE, torch.nn.Module, torch.nn.Module]:
    return _pair(_small_meta())


@pytest.mark.parametrize("t_mel", [1, 2, 5, 37])
@torch.no_grad()
def test_small_config_parity_odd_lengths_batch(small_pair, t_mel):
    ours, enc, dec = small_pair
    mel = torch.randn(2, 2, t_mel, 64) * 2.0 - 6.0
    ref_latent = enc(mel)
    latent = ours.encode(mel)
    assert latent.shape == (2, 2, latent_frames_for_mel(t_mel), 16) == ref_latent.shape
    assert _max_rel(latent, ref_latent) <= 1e-5
    out, ref_mel = ours.decode(latent), dec(latent)
    assert out.shape == ref_mel.shape == (2, 2, mel_frames_for_latents(latent.shape[2]), 64)
    assert _max_rel(out, ref_mel) <= 1e-5
    # causal in time: the first latent frames do not see later mel frames
    if t_mel == 37:
        edited = mel.clone()
        edited[:, :, 20:] += 1.0
        assert torch.equal(ours.encode(edited)[:, :, :5], latent[:, :, :5])


def test_pixel_norm_eps_matches_reference():
    ref = build_normalization_layer(16, normtype=NormType.PIXEL)  # the audio VAE's norm: eps 1e-6
    for scale in (1e-4, 1e-3, 1.0):  # tiny inputs, where eps dominates (video VAE's 1e-8 would fail here)
        x = torch.randn(2, 16, 5, 4) * scale
        torch.testing.assert_close(pixel_norm(x), ref(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("meta", [META_19B, META_23], ids=["19b", "2.3"])
def test_full_size_meta_keys_and_shapes(meta):
    with torch.device("meta"):
        enc, dec = _reference(meta)
        ours = AudioVAE(AudioVAEConfig.from_metadata(meta))
    file_sd = _file_layout(enc, dec)
    ref = {k.removeprefix("audio_vae."): tuple(v.shape) for k, v in file_sd.items()}
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert mine == ref
    assert ref["encoder.conv_in.conv.weight"] == (128, 2, 3, 3)
    assert ref["decoder.conv_out.conv.weight"] == (2, 128, 3, 3)
    assert ref["per_channel_statistics.mean-of-means"] == (128,)
    n_params = sum(p.numel() for p in ours.parameters())
    assert n_params == sum(p.numel() for p in enc.parameters()) + sum(p.numel() for p in dec.parameters())


def test_metadata_round_trip_and_reference_accepts_it():
    cfg = AudioVAEConfig.from_metadata(META_19B)
    assert cfg == AudioVAEConfig() == AudioVAEConfig.from_metadata(META_23)
    back = cfg.to_metadata()
    assert AudioVAEConfig.from_metadata(back) == cfg
    small = AudioVAEConfig.from_metadata(_small_meta())
    assert AudioVAEConfig.from_metadata(small.to_metadata()) == small
    with torch.device("meta"):
        enc, dec = _reference(small.to_metadata())
        ours = AudioVAE(small)
    assert {k.removeprefix("audio_vae."): v.shape for k, v in _file_layout(enc, dec).items()} == {
        k: v.shape for k, v in ours.state_dict().items()
    }
    assert enc.mel_bins == 64 and enc.n_fft == 1024 and enc.mel_hop_length == 160 and enc.sample_rate == 16000


def _bad(path: str, value: object) -> dict:
    meta = copy.deepcopy(META_19B)
    *parents, leaf = path.split(".")
    node = meta
    for p in parents:
        node = node[p]
    node[leaf] = value
    return meta


@pytest.mark.parametrize("path,value,match", [
    ("model.params.ddconfig.attn_resolutions", [16], "attn_resolutions"),
    ("model.params.ddconfig.mid_block_add_attention", True, "mid_block_add_attention"),
    ("model.params.ddconfig.norm_type", "group", "norm_type='group' is not supported"),
    ("model.params.ddconfig.causality_axis", "width", "causality_axis"),
    ("model.params.ddconfig.double_z", False, "double_z"),
    ("model.params.ddconfig.ch_mult", [1, 2], "ch_mult"),
    ("model.params.ddconfig.mel_bins", 80, "n_mel_channels=64 is not supported"),
    ("model.params.ddconfig.flux_capacitor", 1, "keys we do not implement"),
    ("model.params.embed_dim", 16, "embed_dim"),
    ("preprocessing.mel.mel_fmax", 7600, "mel_fmax"),
    ("preprocessing.stft.win_length", 800, "win_length"),
    ("preprocessing.audio.stereo", False, "stereo"),
])  # fmt: skip
def test_bad_metadata_is_refused(path, value, match):
    with pytest.raises(ValueError, match=match):
        AudioVAEConfig.from_metadata(_bad(path, value))


def test_bad_config_values_are_refused():
    with pytest.raises(ValueError, match="multiple of 4"):
        AudioVAEConfig(mel_bins=62)
    with pytest.raises(ValueError, match="double_z"):
        AudioVAEConfig(double_z=False)
    with pytest.raises(ValueError, match="positive"):
        AudioVAEConfig(ch=0)


def test_bad_inputs_are_refused():
    vae = AudioVAE(AudioVAEConfig.from_metadata(_small_meta()))
    with pytest.raises(ValueError, match="as_stereo"):
        vae.encode(torch.zeros(1, 1, 9, 64))
    with pytest.raises(ValueError, match=r"\(B, 2, T_mel, 64\)"):
        vae.encode(torch.zeros(1, 2, 9, 80))
    with pytest.raises(ValueError, match=r"\(B, 2, T_mel, 64\)"):
        vae.encode(torch.zeros(2, 9, 64))
    with pytest.raises(ValueError, match=r"\(B, 2, T_lat, 16\)"):
        vae.decode(torch.zeros(1, 3, 4, 16))
    with pytest.raises(ValueError, match="channels"):
        unpatchify(torch.zeros(1, 4, 100))


def test_patchify_and_positions_match_audio_patchifier():
    ref = AudioPatchifier(patch_size=1)  # the pipelines' patchifier (ltx_pipelines/utils/types.py)
    x = torch.randn(2, 8, 7, 16)
    tokens = patchify(x)
    assert torch.equal(tokens, ref.patchify(x))
    assert torch.equal(unpatchify(tokens), ref.unpatchify(tokens, AudioLatentShape(2, 8, 7, 16)))
    assert torch.equal(unpatchify(tokens), x)
    assert tokens[0, 3, 5 * 16 + 9] == x[0, 5, 3, 9]  # channel order (c, f)
    for frames, shift in ((1, 0), (26, 0), (126, 0), (10, 3)):
        shape = AudioLatentShape(batch=2, channels=8, frames=frames, mel_bins=16)
        expect = AudioPatchifier(patch_size=1, shift=shift).get_patch_grid_bounds(shape)
        got = audio_positions(2, frames, shift=shift)
        assert got.shape == expect.shape == (2, 1, frames, 2) and got.dtype == expect.dtype == torch.float32
        assert torch.equal(got, expect)
    torch.testing.assert_close(audio_positions(1, 3)[0, 0], torch.tensor([[0.0, 0.01], [0.01, 0.05], [0.05, 0.09]]))


def test_latent_frame_counts_match_audio_latent_shape():
    for duration in (5.04, 5.12, 1 / 3, 0.02, 0.06, 0.1, 4.02, 10.0):
        assert latent_frames(duration) == AudioLatentShape.from_duration(batch=1, duration=duration).frames
    for frames, fps in ((121, 24.0), (97, 24.0), (48, 12.0), (1, 25.0), (161, 30.0), (257, 25.0)):
        ref = AudioLatentShape.from_video_pixel_shape(VideoPixelShape(1, frames, 64, 64, fps)).frames
        assert latent_frames_for_video(frames, fps) == ref
    assert latent_frames_for_video(121, 24) == 126
    assert [latent_frames_for_mel(t) for t in (1, 4, 5, 101)] == [1, 1, 2, 26]
    assert [mel_frames_for_latents(t) for t in (1, 2, 26)] == [1, 5, 101]
