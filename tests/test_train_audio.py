"""The LTX-2 demo's audio training apps (train/train_audio_vae.py, train/train_vocoder.py): a few steps write every
output, a run resumed from its checkpoint continues exactly as the uninterrupted run (same losses, same final
weights, bit for bit), the final weights load strictly into the models their config.json describes (the official
metadata form), the latent statistics normalise the tokens, the audio measures agree with closed forms, and bad
config values are refused in one line naming the field."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch
from conftest import REPO
from omegaconf import OmegaConf

from ltx.data.shapes import SceneParams, ShapeParams
from ltx.data.shapes_av import NOTES, ShapesWorldAV, soundtrack
from ltx.ltx2.audio import waveform_to_mel
from ltx.ltx2.audio_vae import AudioVAE, AudioVAEConfig, patchify
from ltx.ltx2.vocoder import VocoderConfig, build_vocoder
from train import train_audio_vae, train_vocoder


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def _audio_vae_cfg(path, steps=2, **kw):
    yaml = OmegaConf.load(REPO / "configs/demo/ltx2_audio_vae.yaml")
    vae = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(AudioVAEConfig), yaml, {"ch": 4}))  # demo grid
    base = dict(run_dir=str(path), audio_vae=vae, steps=steps, batch_size=2, crop_frames=17, num_clips=16,
                eval_clips=2, stats_clips=4, sample_clips=1, log_every=1, checkpoint_every=2, wandb=False, threads=1)
    return train_audio_vae.TrainAudioVAEConfig(**(base | kw))


def _vocoder_metadata(**kw):
    md = OmegaConf.to_container(OmegaConf.load(REPO / "configs/demo/ltx2_vocoder.yaml"))
    small = {"upsample_initial_channel": 16, "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3, 5]]}
    return md | small | kw


def _vocoder_cfg(path, steps=2, **kw):
    base = dict(run_dir=str(path), vocoder=_vocoder_metadata(), steps=steps, batch_size=2, crop_frames=10,
                stft_sizes=[64, 256], num_clips=16, eval_clips=2, sample_clips=1, log_every=1, checkpoint_every=2,
                wandb=False, threads=1)
    return train_vocoder.TrainVocoderConfig(**(base | kw))


def _losses(run_dir):
    return {r["step"]: r["loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}


def _resumes_exactly(app, make_cfg, tmp_path, final):
    full, part = tmp_path / "full", tmp_path / "part"
    app.train(make_cfg(full, steps=4))
    assert app.train(make_cfg(part, steps=4, stop_after=2)) == {"steps": 2, "stopped_at": 2}  # "killed" at step 2
    assert not (part / final).exists() and (part / "checkpoint.pt").is_file()
    app.train(make_cfg(part, steps=4))  # resumed
    a, b = _losses(full), _losses(part)
    assert set(a) == {1, 2, 3, 4} and all(math.isfinite(v) for v in a.values())
    assert a == b
    wa, wb = torch.load(full / final), torch.load(part / final)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    for name in ("loss.png", "report.json", "config.json", "samples/step_000004.png"):
        assert (part / name).stat().st_size > 100, name
    return part, wa


def test_audio_vae_training_resumes_exactly_and_writes_a_loadable_model(tmp_path):
    run, sd = _resumes_exactly(train_audio_vae, _audio_vae_cfg, tmp_path, "audio_vae_final.pt")
    config = json.loads((run / "config.json").read_text())
    cfg = AudioVAEConfig.from_metadata(config["audio_vae"])  # the official metadata sub-dict
    assert cfg == _audio_vae_cfg(run, 4).audio_vae and cfg.token_channels == 128
    vae = AudioVAE(cfg)
    vae.load_state_dict(sd, strict=True)
    report = json.loads((run / "report.json").read_text())
    for split in ("train", "heldout"):
        assert set(report[f"reconstruction_{split}"]) == {"mel_l1", "mel_mse", "pitch_match", "balance_error"}
    # the stored statistics normalise the tokens of the clips they were measured on: mean 0, std 1 per channel
    data = ShapesWorldAV(split="train", num_samples=16, seed=0)
    frames = _audio_vae_cfg(run, 4).clip_mel_frames
    mel = torch.stack([train_audio_vae.clip_mel(data, i, frames) for i in range(4)])
    with torch.no_grad():
        tokens = patchify(vae.encode(mel)).flatten(0, 1)  # (4 T_lat, 128)
    assert tokens.mean(0).abs().max() < 1e-4 and (tokens.std(0) - 1).abs().max() < 1e-4


def test_audio_vae_decoder_fine_tuning_keeps_the_latent_space(tmp_path):
    """train_encoder=false from the bundled demo file: the encoder and the latent statistics (the transformer's
    latent space) stay bitwise, the decoder moves, and the result loads strictly into the demo's AudioVAE."""
    from ltx.ltx2 import checkpoint as ltx2_checkpoint

    demo = REPO / "demo/ltx2-demo.safetensors"
    start = ltx2_checkpoint.load(demo, ("audio_vae",), dtype=torch.float32)["audio_vae"].state_dict()
    yaml = OmegaConf.load(REPO / "configs/demo/ltx2_audio_vae.yaml")
    demo_cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(AudioVAEConfig), yaml))
    run = tmp_path / "dec"
    report = train_audio_vae.train(_audio_vae_cfg(run, steps=2, audio_vae=demo_cfg, init_from=str(demo),
                                                  train_encoder=False, latent_noise=0.05, lr=1e-3))
    assert report["latent_statistics"] == f"kept from {demo}"
    sd = torch.load(run / "audio_vae_final.pt")
    assert sd.keys() == start.keys()
    frozen = [k for k in sd if not k.startswith("decoder.")]
    assert frozen and all(torch.equal(sd[k], start[k]) for k in frozen)
    assert any("per_channel_statistics" in k for k in frozen)
    assert any(not torch.equal(sd[k], start[k]) for k in sd if k.startswith("decoder.") and "weight" in k)
    AudioVAE(demo_cfg).load_state_dict(sd, strict=True)


def test_audio_vae_decoder_fine_tuning_refuses_in_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"^train_encoder=false fine-tunes the decoder .* set init_from"):
        _audio_vae_cfg(tmp_path / "r", train_encoder=False)
    with pytest.raises(FileNotFoundError, match=r"^init_from=.*none.pt does not exist; pass a run's "
                                                r"audio_vae_final.pt"):
        train_audio_vae.train(_audio_vae_cfg(tmp_path / "r", init_from=str(tmp_path / "none.pt"),
                                             train_encoder=False))
    other = tmp_path / "other.pt"
    torch.save({"encoder.conv_in.conv.weight": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match=r"^init_from=.*other.pt does not fit this audio_vae config \(lacks "):
        train_audio_vae.train(_audio_vae_cfg(tmp_path / "r", init_from=str(other)))
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("per_channel", [False, True], ids=["joint", "per_channel"])
def test_vocoder_training_resumes_exactly_and_writes_a_loadable_model(tmp_path, per_channel):
    def make_cfg(path, **kw):  # per_channel: halves down to the last stage (32 channels over 4 stages)
        return _vocoder_cfg(path, per_channel=per_channel, vocoder=_vocoder_metadata(upsample_initial_channel=32),
                            **kw) if per_channel else _vocoder_cfg(path, **kw)

    run, sd = _resumes_exactly(train_vocoder, make_cfg, tmp_path, "vocoder_final.pt")
    config = json.loads((run / "config.json").read_text())
    cfg = VocoderConfig.from_metadata(config["vocoder"])  # the official metadata config["vocoder"]
    assert cfg.bwe is None and cfg.sample_rate == 16000 and cfg.hop == 160
    voc = build_vocoder(cfg)
    voc.load_state_dict(sd, strict=True)
    assert voc(torch.zeros(1, 2, 3, 64)).shape == (1, 2, 480)
    report = json.loads((run / "report.json").read_text())
    assert report["vocoded_heldout"]["pitch_accuracy_of_truth"] == 100.0  # the measure reads the truth right
    assert 0 <= report["vocoded_heldout"]["evaluator_pitch_accuracy"] <= 100
    assert (run / "samples/heldout_0_vocoder.wav").is_file()


def test_audio_measures_agree_with_closed_forms():
    """A blue circle held at x = 0.25: its note is blue, its fundamental 1100 Hz, its stereo balance
    (E_R - E_L) / (E_R + E_L) = sin^2 - cos^2 of (0.25 pi / 2) = -cos(0.25 pi) in every frame; the
    log-spectral distance of a clip to itself is 0; a second, quieter voice leaves the dominant note alone."""
    blue = ShapeParams(color="blue", kind="circle", motion="static", size=0.2, start=(0.25, 0.5), end=(0.25, 0.5))
    red = ShapeParams(color="red", kind="triangle", motion="static", size=0.1, start=(0.7, 0.5), end=(0.7, 0.5))
    wave = soundtrack(SceneParams((blue,), "black"), 17)
    assert train_vocoder.dominant_note(wave) == "blue"
    assert train_vocoder.dominant_note(soundtrack(SceneParams((blue, red), "black"), 17)) == "blue"
    assert abs(1200 * math.log2(train_vocoder.fundamental(wave, NOTES["blue"]) / NOTES["blue"])) < 2  # cents
    b = train_vocoder.balance(wave, 2000)[1:-1]  # (frames without the fades)
    assert torch.allclose(b, torch.full_like(b, -math.cos(0.25 * math.pi)), atol=1e-5)
    assert train_vocoder.log_spectral_distance(wave, wave) == 0.0
    mel = torch.log(torch.full((1, 2, 5, 64), 1e-5))
    mel[0, 0, :, 10], mel[0, 1, :, 10] = math.log(1.0), math.log(3.0)  # right channel 3x the left's magnitude
    assert torch.allclose(train_audio_vae.balance(mel), torch.tensor(0.8), atol=1e-4)  # (9 - 1) / (9 + 1)
    assert train_audio_vae.peak_bins(mel).item() == 10
    clips = torch.cat([waveform_to_mel(soundtrack(SceneParams((s,), "black"), 17)[None], 16000) for s in (blue, red)])
    assert train_audio_vae.peak_notes(clips) == ["blue", "red"]


def test_channel_gains_are_the_scaled_waveforms_mel_and_the_pan_loss_reads_the_balance():
    """`channel_gains`: the shifted log-mel is the log-mel of the scaled waveform (gains <= 1: the floor stays the
    floor); `stereo_loss` of a clip against itself is 0, and against its channels swapped is the mean |2 b|."""
    audio = ShapesWorldAV(num_samples=4, seed=3)[1].audio
    mel = waveform_to_mel(audio[None], 16000)
    g = torch.Generator().manual_seed(0)
    shifted, scaled = train_vocoder.channel_gains(mel, audio[None], 12.0, g)
    assert not torch.equal(scaled, audio[None])
    # float32 STFT rounding, largest on the quietest bins (measured up to 1.3e-3 over 5 seeds); a wrong gain or
    # sign would be off by |ln g| of up to 1.4 on every loud bin
    assert torch.allclose(waveform_to_mel(scaled, 16000), shifted, atol=2e-3)
    static = soundtrack(SceneParams((ShapeParams("green", "circle", "static", 0.2, (0.2, 0.5), (0.2, 0.5)),),
                                    "black"), 17)[None]
    assert train_vocoder.stereo_loss(static, static).item() == 0.0
    b = -math.cos(0.2 * math.pi)  # (R^2 - L^2) / (R^2 + L^2) at p = 0.2
    assert train_vocoder.stereo_loss(static.flip(1), static).item() == pytest.approx(2 * abs(b), rel=1e-5)


def test_level_loss_is_the_log_energy_ratio():
    """`level_loss` of a clip against itself is 0; against its left channel scaled by g it is |ln g^2| / 2 (one
    of two channels off by ln g^2 in every sounding window)."""
    audio = ShapesWorldAV(num_samples=4, seed=3)[1].audio[None]
    assert train_vocoder.level_loss(audio, audio).item() == 0.0
    quieter = audio * torch.tensor([0.5, 1.0])[None, :, None]
    assert train_vocoder.level_loss(quieter, audio).item() == pytest.approx(abs(math.log(0.25)) / 2, rel=1e-5)


def test_waveform_loss_is_the_relative_squared_error_and_notes_are_phase_locked_to_mel_frames():
    """`waveform_loss`: 0 for the truth, 1 for silence or twice the truth. It is well-posed because every
    ShapesWorld-AV note (a multiple of 100 Hz, from phase 0) repeats each 160-sample mel frame: a static voice's
    frames are equal away from the fades."""
    audio = ShapesWorldAV(num_samples=4, seed=3)[1].audio[None]
    assert train_vocoder.waveform_loss(audio, audio).item() == 0.0
    assert train_vocoder.waveform_loss(torch.zeros_like(audio), audio).item() == 1.0
    assert train_vocoder.waveform_loss(2 * audio, audio).item() == pytest.approx(1.0, rel=1e-6)
    shape = ShapeParams("purple", "square", "static", 0.2, (0.3, 0.5), (0.3, 0.5))
    frames = soundtrack(SceneParams((shape,), "black"), 17)[:, 8000:24000].unflatten(-1, (100, 160))  # (2, 100, 160)
    assert (frames - frames[:, :1]).abs().max() < 1e-5 * frames.abs().max()


def test_signal_propagating_init_makes_the_output_depend_on_the_input():
    """With PyTorch's default init the demo vocoder's output is mostly its biases (measured: the part that varies
    from clip to clip has 12-18% of the output's RMS over seeds 0-2; 18% at seed 0); `init_signal_propagation`
    gives an output at the soundtracks' RMS whose clip-to-clip part is most of it (57-64%)."""
    meta = OmegaConf.to_container(OmegaConf.load(REPO / "configs/demo/ltx2_vocoder.yaml"))
    data = ShapesWorldAV(num_samples=16, seed=0)
    mel = torch.stack([train_vocoder.clip(data, i)[1][:, :50] for i in range(8, 16)])  # not the init's clips

    def varying_share(voc) -> float:
        with torch.no_grad():
            out = voc(mel)
        return ((out - out.mean(0)).std() / out.std()).item()

    torch.manual_seed(0)
    default = build_vocoder(VocoderConfig.from_metadata(meta))
    torch.manual_seed(0)
    voc = build_vocoder(VocoderConfig.from_metadata(meta))
    stats = train_vocoder.init_signal_propagation(voc, data, 8)
    assert varying_share(default) < 0.2
    assert varying_share(voc) > 0.5
    calibration = torch.stack([train_vocoder.clip(data, i)[1][:, :50] for i in range(8)])
    with torch.no_grad():
        assert voc(calibration).std().item() == pytest.approx(stats["rms"], rel=1e-3)  # the level it was set to


def test_per_channel_vocoder_is_the_mono_generator_on_each_channel():
    """`stereo_from_mono` writes a mono generator into the stereo layout (the demo's file): the stereo vocoder on a
    stereo mel equals the mono one on each channel (the zero blocks add exact zeros; measured 0.0, and the
    bound leaves room for a summation order that differs), loads strictly into `build_vocoder`, and its left
    output does not move when only the right mel changes."""
    meta = OmegaConf.to_container(OmegaConf.load(REPO / "configs/demo/ltx2_vocoder.yaml"))
    cfg = VocoderConfig.from_metadata(meta)
    torch.manual_seed(0)
    per_channel = train_vocoder.PerChannel(train_vocoder.mono_generator(cfg))
    data = ShapesWorldAV(num_samples=8, seed=0)
    train_vocoder.init_signal_propagation(per_channel, data, 4)
    mel = torch.stack([train_vocoder.clip(data, i)[1][:, :30] for i in range(4, 8)])
    stereo = train_vocoder.stereo_from_mono(per_channel.mono, cfg)
    build_vocoder(cfg).load_state_dict(stereo.state_dict(), strict=True)
    with torch.no_grad():
        ours, theirs = stereo(mel), per_channel(mel)
        assert (ours - theirs).abs().max() <= 1e-6
        louder_right = mel.clone()
        louder_right[:, 1] += 1.0
        moved = stereo(louder_right)
    assert torch.equal(moved[:, 0], ours[:, 0])  # the left half never reads the right mel
    assert (moved[:, 1] - ours[:, 1]).abs().max() > 1e-3


def test_per_channel_needs_halves_down_to_the_last_stage(tmp_path):
    with pytest.raises(ValueError, match=r"^per_channel=true needs vocoder.upsample_initial_channel a multiple of 32"):
        _vocoder_cfg(tmp_path, per_channel=True, vocoder={**OmegaConf.to_container(OmegaConf.load(
            REPO / "configs/demo/ltx2_vocoder.yaml")), "upsample_initial_channel": 48})


def test_training_configs_compose():
    """The documented commands' configs resolve to valid schemas with the demo models."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
        vae = compose(config_name="train_audio_vae")
        voc = compose(config_name="train_vocoder")
    vae = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(train_audio_vae.TrainAudioVAEConfig), vae))
    voc = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(train_vocoder.TrainVocoderConfig), voc))
    assert vae.audio_vae.token_channels == 128 and vae.clip_mel_frames == 209
    assert voc.model_config.hop == 160 and voc.model_config.sample_rate == 16000
    assert AudioVAEConfig.from_metadata(vae.audio_vae.to_metadata()) == vae.audio_vae


NAN, INF = math.nan, math.inf
_COMMON = {"steps": [0, -1, NAN], "batch_size": [0], "lr": [0.0, NAN, INF], "threads": [0], "seed": [-1],
           "stop_after": [0], "frames": [16, 0], "crop_frames": [0, 300], "eval_clips": [0], "warmup": [-1],
           "run_dir": [""]}


_AUDIO_VAE = _COMMON | {"kl_weight": [-1.0, NAN], "stereo_weight": [-1.0, INF], "stereo_warmup": [-1, 0.5],
                        "crop_frames": [0, 16, 213], "latent_noise": [-0.1, NAN], "train_encoder": ["no", 0],
                        "init_from": [""]}
_VOCODER = _COMMON | {"mel_weight": [-1.0, INF], "range_db": [0.0, -3.0, NAN], "stereo_weight": [-1.0, NAN],
                      "level_weight": [-1.0, NAN], "residual_scale": [-0.1, 1.5, NAN], "wave_weight": [-1.0, INF],
                      "per_channel": [1, "yes"],
                      "channel_gain_db": [-1.0, 41.0, INF],
                      "stft_sizes": [[], [8], [512.0], [100_000]]}


@pytest.mark.parametrize("field, value", [(f, v) for f, vs in _AUDIO_VAE.items() for v in vs], ids=str)
def test_audio_vae_config_field_refused(field, value, tmp_path):
    with pytest.raises(ValueError, match=rf"^{field}=.* is invalid: ") as e:
        _audio_vae_cfg(tmp_path, **{field: value})
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("field, value", [(f, v) for f, vs in _VOCODER.items() for v in vs], ids=str)
def test_vocoder_config_field_refused(field, value, tmp_path):
    with pytest.raises(ValueError, match=rf"^{field}=.* is invalid: ") as e:
        _vocoder_cfg(tmp_path, **{field: value})
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("change, message", [
    ({"mel_bins": 80}, r"^audio_vae.mel_bins=80 is invalid: the LTX-2 mel features are"),
    ({"hop_length": 256}, r"^audio_vae.hop_length=256 is invalid"),
    ({"ch_mult": (1, 2)}, r"ch_mult=\[1, 2\] is not supported"),
])
def test_audio_vae_model_refused(change, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        _audio_vae_cfg(tmp_path, audio_vae=AudioVAEConfig(**{"ch": 4} | change))


@pytest.mark.parametrize("change, message", [
    ({"upsample_rates": [6, 5, 2, 2, 2], "upsample_kernel_sizes": [16, 15, 8, 4, 4], "upsample_initial_channel": 32},
     r"multiply to 160 samples per mel frame"),
    ({"output_sampling_rate": 24000}, r"output_sampling_rate be 16000"),
    ({"resblock": "AMP1"}, r"resblock='AMP1' is not supported"),
    ({"upsampling": 2}, r"unknown key\(s\) \['upsampling'\]"),
])
def test_vocoder_model_refused(change, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        _vocoder_cfg(tmp_path, vocoder=_vocoder_metadata(**change))
    with pytest.raises(ValueError, match="configs/demo/ltx2_vocoder.yaml"):
        _vocoder_cfg(tmp_path, vocoder={})


@pytest.mark.parametrize("app, override, message", [
    (train_audio_vae, "crop_frames=64", "error: crop_frames=64 is invalid: must be 4*N + 1"),
    (train_vocoder, "vocoder.upsample_initial_channel=60", "error: vocoder: upsample_initial_channel=60 must be"),
    (train_vocoder, "stft_size=[512]", "error: stft_size=[512]: Key 'stft_size' not in 'TrainVocoderConfig'"),
], ids=["vae-crop", "vocoder-width", "typo"])
def test_command_line_refuses_in_one_line(app, override, message, tmp_path, monkeypatch):
    """The Hydra entry point (in-process: the same main() as `python -m train.APP`) ends in one line."""
    monkeypatch.setattr(sys, "argv", [app.__name__, override, f"run_dir={tmp_path / 'run'}"])
    with pytest.raises(SystemExit) as e:
        app.main()
    assert str(e.value.code).startswith(message) and "\n" not in str(e.value.code), e.value.code
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option", ["vae", "audio_vae"])
@pytest.mark.parametrize("content, message", [(None, "does not exist"), (b"", "not a safetensors file"),
                                              (b"garbage", "not a safetensors file")],
                         ids=["missing", "empty", "garbage"])
def test_export_refuses_a_bad_bundled_component_file_naming_the_option(option, content, message, tmp_path):
    """A bundled file given for --vae / --audio-vae that is missing, empty or not a safetensors file: one line
    naming the option; nothing is written."""
    from train import export_ltx2_demo

    bad = tmp_path / "bad.safetensors"
    if content is not None:
        bad.write_bytes(content)
    demo = REPO / "demo/ltx2-demo.safetensors"
    files = {"vae": demo, "audio_vae": demo} | {option: bad}
    out = tmp_path / "out.safetensors"
    flag = "--" + option.replace("_", "-")
    with pytest.raises((ValueError, FileNotFoundError), match=rf"^{flag}: .*{message}") as e:
        export_ltx2_demo.export(out, vae=files["vae"], audio_vae=files["audio_vae"], vocoder=None,
                                text_encoder=REPO / "demo/ltx2/text_encoder", source=demo)
    assert "\n" not in str(e.value) and not out.exists()
