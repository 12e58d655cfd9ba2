"""ltx.ltx2.vocoder against ltx-core 1.0.0's Vocoder / VocoderWithBWE (random weights, fp32, CPU).

Full-size released configs (19B HiFi-GAN, 2.3 BigVGAN-v2 + BWE) for parity and key layout; narrowed channels
with the released rates and kernels for output lengths at 101 frames.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from ltx_core.model.audio_vae.model_configurator import VocoderConfigurator
from ltx_core.model.audio_vae.vocoder import MelSTFT, UpSample1d

from ltx.ltx2.vocoder import (
    VOCODER_METADATA,
    VOCODER_PRESETS,
    CausalLogMel,
    Vocoder,
    VocoderConfig,
    VocoderWithBWE,
    build_vocoder,
    hann_sinc_upsample,
)

# verbatim `config["vocoder"]` of ltx-2-19b-dev.safetensors and ltx-2.3-22b-*.safetensors (digest §0 sources)
META_19B = {
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "stereo": True,
    "upsample_rates": [6, 5, 2, 2, 2],
    "resblock_kernel_sizes": [3, 7, 11],
    "upsample_kernel_sizes": [16, 15, 8, 4, 4],
    "resblock": "1",
    "upsample_initial_channel": 1024,
}
META_23 = {
    "vocoder": {
        "upsample_initial_channel": 1536, "resblock": "AMP1", "upsample_rates": [5, 2, 2, 2, 2, 2],
        "resblock_kernel_sizes": [3, 7, 11], "upsample_kernel_sizes": [11, 4, 4, 4, 4, 4],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "stereo": True, "use_tanh_at_final": False,
        "activation": "snakebeta", "use_bias_at_final": False,
    },
    "bwe": {
        "upsample_initial_channel": 512, "resblock": "AMP1", "upsample_rates": [6, 5, 2, 2, 2],
        "resblock_kernel_sizes": [3, 7, 11], "upsample_kernel_sizes": [12, 11, 4, 4, 4],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "stereo": True, "use_tanh_at_final": False,
        "activation": "snakebeta", "use_bias_at_final": False, "apply_final_activation": False,
        "input_sampling_rate": 16000, "output_sampling_rate": 48000, "hop_length": 80, "n_fft": 512,
        "win_size": 512, "num_mels": 64,
    },
}  # fmt: skip
META = {"19B": META_19B, "2.3": META_23}
N_TENSORS = {"19B": 194, "2.3": 1227}
SAMPLE_RATE = {"19B": 24000, "2.3": 48000}
WEIGHT_GAIN = {"19B": 1.0, "2.3": 0.7}  # keeps the random full-size outputs in (-1, 1) mostly unclipped


def reference(meta: dict) -> torch.nn.Module:
    return VocoderConfigurator.from_config({"vocoder": meta}).eval()


def narrow(meta: dict) -> dict:
    """The released rates / kernels at 64 (main) and 32 (BWE) initial channels."""
    m = copy.deepcopy(meta)
    if "bwe" in m:
        m["vocoder"]["upsample_initial_channel"], m["bwe"]["upsample_initial_channel"] = 64, 32
    else:
        m["upsample_initial_channel"] = 64
    return m


def randomize(model: torch.nn.Module, gain: float, seed: int = 0) -> None:
    """Every state-dict entry random (not the default init): conv weights N(0, gain^2 / fan_in), biases
    N(0, 0.05^2), log-scale snake parameters N(0, 0.2^2), stored kaiser filters perturbed, random STFT basis,
    non-negative random mel filterbank."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            noise = torch.randn(t.shape, generator=g)
            if key.endswith((".alpha", ".beta")):
                t.copy_(0.2 * noise)
            elif key.endswith(".filter"):
                t.add_(0.02 * noise)
            elif key.endswith("mel_basis"):
                t.copy_(0.1 * torch.rand(t.shape, generator=g))
            elif key.endswith("_basis"):
                t.copy_(0.05 * noise)
            elif key.endswith(".bias"):
                t.copy_(0.05 * noise)
            else:
                fan_in = t.shape[0] * t.shape[2] // 2 if ".ups." in f".{key}" else t[0].numel()
                t.copy_(gain / math.sqrt(fan_in) * noise)


def paired(meta: dict, gain: float) -> tuple[torch.nn.Module, torch.nn.Module]:
    ref = reference(meta)
    randomize(ref, gain)
    with torch.device("meta"):  # the official loading path: build on meta, then assign the file's tensors
        ours = build_vocoder(VocoderConfig.from_metadata(meta)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True, assign=True)
    return ref, ours


def log_mel(T: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 2, T, 64, generator=torch.Generator().manual_seed(seed)) - 3.0  # (B, 2, T, 64)


# ------------------------------------------------------------------------------------------------ config


def test_presets_are_the_verbatim_metadata():
    assert VOCODER_METADATA == META
    for name, meta in META.items():
        cfg = VOCODER_PRESETS[name]
        assert cfg == VocoderConfig.from_metadata(meta)
        assert cfg.sample_rate == SAMPLE_RATE[name]
        assert (cfg.bwe is not None) == (name == "2.3")
    assert VOCODER_PRESETS["19B"].hop == 240 and VOCODER_PRESETS["2.3"].hop == 480


@pytest.mark.parametrize("name", ["19B", "2.3"])
def test_config_round_trip(name):
    for meta in (META[name], narrow(META[name])):
        cfg = VocoderConfig.from_metadata(meta)
        assert VocoderConfig.from_metadata(cfg.to_metadata()) == cfg
    # (that the reference configurator accepts `to_metadata()`: test_full_size_keys_and_shapes)


def _bad(name: str, path: tuple[str, ...], value: object) -> dict:
    m = copy.deepcopy(META[name])
    d = m
    for k in path[:-1]:
        d = d[k]
    if value is KeyError:
        del d[path[-1]]
    else:
        d[path[-1]] = value
    return m


@pytest.mark.parametrize(
    "name, path, value, message",
    [
        ("19B", ("resblock",), "2", "vocoder.resblock='2' is not supported (supported: '1')"),
        ("19B", ("resblock",), "AMP1", "supported: '1'"),
        ("19B", ("stereo",), False, "vocoder.stereo=False is not supported"),
        ("19B", ("stereo",), KeyError, "vocoder.stereo='<absent>'"),
        ("19B", ("activation",), "snake", "only read for resblock 'AMP1'"),
        ("19B", ("foo",), 1, "unknown key(s) ['foo']"),
        ("19B", ("apply_final_activation",), False, "apply_final_activation=False is not supported here"),
        ("19B", ("upsample_rates",), [6, 5, 2, 2], "of equal length"),
        ("19B", ("upsample_kernel_sizes",), [16, 15, 8, 4, 3], "kernel - rate even"),
        ("19B", ("resblock_kernel_sizes",), [3, 7, 10], "must be odd"),
        ("19B", ("resblock_dilation_sizes",), [[1, 3], [1, 3], [1, 3]], "three dilations"),
        ("19B", ("upsample_initial_channel",), 1000, "multiple of 2^5"),
        ("2.3", ("vocoder", "resblock"), "1", "vocoder.vocoder.resblock='1' is not supported (supported: 'AMP1')"),
        ("2.3", ("vocoder", "activation"), "snake", "vocoder.vocoder.activation='snake' is not supported"),
        ("2.3", ("bwe", "activation"), KeyError, "vocoder.bwe.activation='<absent>'"),
        ("2.3", ("bwe", "stereo"), False, "vocoder.bwe.stereo=False"),
        ("2.3", ("bwe", "win_size"), 1024, "win_size=1024 is not supported (supported: n_fft=512)"),
        ("2.3", ("bwe", "num_mels"), 80, "bwe.num_mels=80 is not supported (supported: 64)"),
        ("2.3", ("bwe", "n_fft"), KeyError, "missing ['n_fft']"),
        ("2.3", ("bwe", "hop_length"), 160, "must multiply to hop_length x output/input rate = 160 x 3 = 480"),
        ("2.3", ("bwe", "output_sampling_rate"), 44100, "whole multiple of input_sampling_rate 16000"),
        ("2.3", ("bwe", "apply_final_activation"), True, "apply_final_activation=True is not supported here"),
        ("2.3", ("vocoder", "output_sampling_rate"), 24000, "output_sampling_rate=24000 is not supported here"),
        ("2.3", ("extra",), {}, "unknown key(s) ['extra']"),
    ],
)
def test_refuses_unsupported_metadata(name, path, value, message):
    with pytest.raises(ValueError) as e:
        VocoderConfig.from_metadata(_bad(name, path, value))
    assert message in str(e.value)


def test_refuses_mixed_families():
    cfg = VOCODER_PRESETS["2.3"]
    with pytest.raises(ValueError, match="without BWE must use resblock '1'"):
        VocoderConfig(vocoder=cfg.vocoder)
    with pytest.raises(ValueError, match="with BWE must use resblock 'AMP1'"):
        VocoderConfig(vocoder=VOCODER_PRESETS["19B"].vocoder, bwe=cfg.bwe)
    with pytest.raises(ValueError, match="needs a config with `bwe`"):
        VocoderWithBWE(VOCODER_PRESETS["19B"])


# ------------------------------------------------------------------------------------------------ layout


@pytest.mark.parametrize("name", ["19B", "2.3"])
def test_full_size_keys_and_shapes(name):
    cfg = VocoderConfig.from_metadata(META[name])
    with torch.device("meta"):
        ref, ours = reference(META[name]), build_vocoder(cfg)
        ref_round_trip = reference(cfg.to_metadata())  # the reference accepts our metadata, same layout
    a = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    b = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert a == b and len(b) == N_TENSORS[name]
    assert {k: tuple(v.shape) for k, v in ref_round_trip.state_dict().items()} == a
    if name == "2.3":
        assert {k.split(".")[0] for k in b} == {"vocoder", "bwe_generator", "mel_stft"}
        assert b["mel_stft.stft_fn.forward_basis"] == (514, 1, 512) and b["mel_stft.mel_basis"] == (64, 257)
    else:
        assert b["conv_pre.weight"] == (1024, 128, 7) and b["conv_post.weight"] == (2, 32, 7)
    # the non-persistent buffers (the BWE resampler filter): same names, real (CPU) values equal to the reference
    extra_ref = {k: v for k, v in ref.named_buffers() if k not in a}
    extra_ours = {k: v for k, v in ours.named_buffers() if k not in b}
    assert extra_ref.keys() == extra_ours.keys() == ({"resampler.filter"} if name == "2.3" else set())
    for k, v in extra_ours.items():
        assert v.device.type == "cpu" and torch.equal(v, extra_ref[k])
    assert isinstance(ours, VocoderWithBWE if name == "2.3" else Vocoder) and ours.sample_rate == SAMPLE_RATE[name]


def test_init_buffers_equal_reference():
    """Freshly built (no loading): the kaiser filters computed at init and the Hann-sinc skip filter."""
    ref = reference(narrow(META_23))
    ours = build_vocoder(VocoderConfig.from_metadata(narrow(META_23)))
    a, b = dict(ref.named_buffers()), dict(ours.named_buffers())
    assert a.keys() == b.keys()
    filters = [k for k in a if k.endswith(".filter")]
    assert len(filters) == 2 * (1 + 6 * 3 * 6 + 1 + 6 * 3 * 5) + 1  # 2 per activation, + resampler
    for k in filters:
        assert torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------------------------------------ numerics


@pytest.mark.parametrize("name", ["19B", "2.3"])
def test_full_size_parity(name):
    ref, ours = paired(META[name], WEIGHT_GAIN[name])
    mel = log_mel(20)
    with torch.no_grad():
        want, got = ref(mel), ours(mel)
    assert got.shape == want.shape == (1, 2, 20 * VOCODER_PRESETS[name].hop)
    err = (got - want).abs().max().item()
    print(f"{name} full size, 20 frames: max |diff| = {err:.2e}, output std {want.std():.3f}")
    assert err <= 1e-5
    assert want.std() > 0.1 and (want.abs() > 0.99).float().mean() < 0.05  # not a constant or clipped signal


@pytest.mark.parametrize("name, n_samples", [("19B", 24240), ("2.3", 48480)])
def test_output_lengths(name, n_samples):
    ref, ours = paired(narrow(META[name]), WEIGHT_GAIN[name])
    for T in (1, 7, 101):
        mel = log_mel(T, seed=T)
        with torch.no_grad():
            want, got = ref(mel), ours(mel)
        assert got.shape == want.shape == (1, 2, T * VOCODER_PRESETS[name].hop)
        assert (got - want).abs().max().item() <= 1e-5
    assert got.shape[-1] == n_samples


def test_bwe_parts_match_reference():
    """The causal log-mel and the x3 Hann-sinc skip on their own (localises a failure of the full model)."""
    ref_mel = MelSTFT(filter_length=512, hop_length=80, win_length=512, n_mel_channels=64)
    ours_mel = CausalLogMel(512, 80, 64)
    randomize(ref_mel, 1.0)
    ours_mel.load_state_dict(ref_mel.state_dict(), strict=True)
    y = 0.3 * torch.randn(4, 800)
    assert (ours_mel(y) - ref_mel.mel_spectrogram(y)[0]).abs().max().item() <= 1e-5
    ref_up = UpSample1d(ratio=3, persistent=False, window_type="hann")
    ours_up = hann_sinc_upsample(3)
    assert ours_up.state_dict() == {} and torch.equal(ours_up.filter, ref_up.filter)
    x = torch.randn(2, 2, 160)
    assert torch.equal(ours_up(x), ref_up(x))


@pytest.mark.parametrize(
    "shape, message",
    [
        ((1, 2, 20, 80), "80 mel bins"),
        ((1, 1, 20, 64), "1 channels"),
        ((1, 20, 64), "mono"),
        ((1, 2, 64, 20), "transpose"),
        ((1, 2, 0, 64), "T >= 1"),
    ],
)
def test_bad_input(shape, message):
    model = build_vocoder(VocoderConfig.from_metadata(narrow(META_19B)))
    with pytest.raises(ValueError, match="mel must be") as e:
        model(torch.zeros(shape))
    assert message in str(e.value)
