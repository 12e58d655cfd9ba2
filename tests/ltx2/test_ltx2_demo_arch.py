"""The LTX-2 code paths the demo model needs beyond the released layouts, on small random modules:

- a video VAE with another latent geometry (8x space / 8x time, 32 channels: configs/demo/ltx2_vae.yaml): the
  pipelines read its latent width and pixels per voxel, and sampling gives the requested size;
- video-to-audio (the given clip's latent stays bit for bit, only the audio moves) and audio-to-video;
- `write_modules`: built components -> an official single file -> the same modules (bitwise), also through the
  converter's official -> ltx2 -> official round trip;
- `AVTransformer.init_weights` (adaLN-Zero: a fresh model predicts zero velocity);
- `Role.clean_p` draws (t2av runs that also learn a2v / v2a).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ltx.core.losses import SigmaSampler
from ltx.ltx2 import checkpoint as ltx2_checkpoint
from ltx.ltx2 import pipelines
from ltx.ltx2.audio_vae import AudioVAE, AudioVAEConfig
from ltx.ltx2.pipelines import AVModels, AVRequest, Prompt
from ltx.ltx2.sched import GuiderParams, ltx2_sigmas
from ltx.ltx2.text import EmbeddingsProcessor, TextConnectorConfig
from ltx.ltx2.training import draw, training_mode
from ltx.ltx2.transformer import AVTransformer, AVTransformerConfig, StreamInput
from ltx.ltx2.vae import VideoVAE, VideoVAEConfig
from ltx.ltx2.vocoder import GeneratorConfig, VocoderConfig, build_vocoder

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[2]
TEXT = 32  # text width = connector width (feature extractor v1)


def _modules(seed: int = 0) -> dict[str, torch.nn.Module]:
    torch.manual_seed(seed)
    vae_cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(VideoVAEConfig),
                                                  OmegaConf.load(REPO / "configs/demo/ltx2_vae.yaml")))
    vae = VideoVAE(vae_cfg).init_weights(torch.Generator().manual_seed(seed)).eval()
    with torch.no_grad():  # statistics that are not the identity, so normalisation is exercised
        vae.per_channel_statistics.get_buffer("mean-of-means").normal_(0, 0.1)
        vae.per_channel_statistics.get_buffer("std-of-means").uniform_(0.5, 1.5)
    t = AVTransformerConfig(num_layers=2, num_attention_heads=2, attention_head_dim=16, audio_num_attention_heads=2,
                            audio_attention_head_dim=8, cross_attention_dim=32, audio_cross_attention_dim=16,
                            in_channels=32, out_channels=32, caption_channels=TEXT)
    transformer = AVTransformer(t).init_weights(torch.Generator().manual_seed(seed))
    with torch.no_grad():  # leave adaLN-Zero so that the outputs depend on the inputs
        for p in transformer.parameters():
            p.add_(0.02 * torch.randn(p.shape))
    text = EmbeddingsProcessor(TextConnectorConfig(text_dim=TEXT, num_hidden_states=3, video_heads=2,
                                                   video_head_dim=16, audio_heads=2, audio_head_dim=16,
                                                   video_layers=1, audio_layers=1, num_registers=16))
    audio_vae = AudioVAE(AudioVAEConfig(ch=16, ch_mult=(1, 2, 4), num_res_blocks=1))
    vocoder = build_vocoder(VocoderConfig(vocoder=GeneratorConfig(
        upsample_initial_channel=32, upsample_rates=(5, 4, 4, 2), upsample_kernel_sizes=(11, 8, 8, 4),
        resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1, 3, 5),), output_sampling_rate=16000)))
    with torch.no_grad():
        for name, b in audio_vae.per_channel_statistics.named_buffers():
            b.copy_(torch.rand(b.shape) + 0.5 if name == "std-of-means" else 0.1 * torch.randn(b.shape))
    return {"transformer": transformer.eval(), "text": text.eval(), "vae": vae, "audio_vae": audio_vae.eval(),
            "vocoder": vocoder.eval()}


@pytest.fixture(scope="module")
def modules():
    return _modules()


def _prompt(m, seed: int) -> Prompt:
    g = torch.Generator().manual_seed(seed)
    hidden = tuple(torch.randn(1, 16, TEXT, generator=g) for _ in range(3))
    mask = (torch.arange(16) >= 10).long()[None]
    v, a, _ = m["text"](hidden, mask)
    return Prompt(v, a)


def _request(**kw) -> AVRequest:
    base = dict(height=64, width=64, num_frames=17, fps=8.0, sigmas=ltx2_sigmas(3),
                generator=torch.Generator().manual_seed(0))
    return AVRequest(**(base | kw))


def test_vae_geometry_drives_the_pipeline(modules):
    m = modules
    assert m["vae"].cfg.scale == (8, 8, 8)
    models = AVModels(m["transformer"], m["vae"], m["audio_vae"], m["vocoder"])
    g = GuiderParams(cfg=2.0)
    with torch.no_grad():
        out = pipelines.one_stage(models, _prompt(m, 1), _prompt(m, 2), _request(video_guidance=g, audio_guidance=g))
    assert tuple(out.video_latent.shape) == (1, 32, 3, 8, 8)
    assert tuple(out.video.shape) == (1, 3, 17, 64, 64)
    assert tuple(out.audio_latent.shape) == (1, 8, 53, 16)  # round(17 / 8 * 25)
    assert out.sample_rate == 16000 and out.audio.shape[:2] == (1, 2)
    with pytest.raises(ValueError, match="multiple of 8"):
        pipelines.one_stage(models, _prompt(m, 1), None, _request(height=60))


def test_video_to_audio_keeps_the_video(modules):
    m = modules
    models = AVModels(m["transformer"], m["vae"], m["audio_vae"], m["vocoder"])
    clip = torch.rand(1, 3, 17, 64, 64) * 2 - 1
    with torch.no_grad():
        given = m["vae"].encode(clip)
        out = pipelines.one_stage(models, _prompt(m, 1), _prompt(m, 2),
                                  _request(video=given, audio_guidance=GuiderParams(cfg=2.0)))
        other = pipelines.one_stage(models, _prompt(m, 1), _prompt(m, 2),
                                    _request(video=m["vae"].encode(-clip), audio_guidance=GuiderParams(cfg=2.0)))
    assert torch.equal(out.video_latent, given)  # frozen bit for bit
    assert (out.audio_latent - other.audio_latent).abs().max() > 1e-3  # the sound depends on the given video
    with pytest.raises(ValueError, match="no video guidance"):
        pipelines.one_stage(models, _prompt(m, 1), _prompt(m, 2), _request(video=given,
                                                                          video_guidance=GuiderParams(cfg=2.0)))
    with pytest.raises(ValueError, match="need"):
        pipelines.one_stage(models, _prompt(m, 1), None, _request(video=given[:, :, :2]))


def test_audio_to_video_keeps_the_audio(modules):
    m = modules
    models = AVModels(m["transformer"], m["vae"], m["audio_vae"], m["vocoder"])
    soundtrack = torch.randn(1, 8, 53, 16)
    with torch.no_grad():
        out = pipelines.one_stage(models, _prompt(m, 1), None, _request(soundtrack=soundtrack))
    assert torch.equal(out.audio_latent, soundtrack)


def test_write_modules_round_trips(modules, tmp_path):
    path = ltx2_checkpoint.write_modules(tmp_path / "demo.safetensors", modules)
    back = ltx2_checkpoint.load(path)  # strict: every key of the file, nothing missing
    for name, module in modules.items():
        a, b = module.state_dict(), back[name].state_dict()
        assert a.keys() == b.keys(), name
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert back["vae"].cfg.scale == (8, 8, 8) and back["text"].config.num_hidden_states == 3
    ckpt = ltx2_checkpoint.read(path)
    ours = ltx2_checkpoint.write(ckpt, tmp_path / "demo_ltx2.safetensors")
    again = ltx2_checkpoint.write(ltx2_checkpoint.read(ours), tmp_path / "again.safetensors", layout="official")
    first, second = ltx2_checkpoint.read(path).reader, ltx2_checkpoint.read(again).reader
    assert sorted(first.infos) == sorted(second.infos)
    assert all(torch.equal(first.get(k), second.get(k)) for k in first.infos)
    assert first.metadata["config"] == second.metadata["config"]


def test_fresh_transformer_predicts_zero():
    t = AVTransformerConfig(num_layers=1, num_attention_heads=2, attention_head_dim=8, audio_num_attention_heads=2,
                            audio_attention_head_dim=4, cross_attention_dim=16, audio_cross_attention_dim=8,
                            in_channels=8, out_channels=8, audio_in_channels=8, audio_out_channels=8,
                            caption_channels=8)
    model = AVTransformer(t).init_weights(torch.Generator().manual_seed(0))
    pos_v = torch.rand(1, 3, 6, 2)
    pos_a = torch.rand(1, 1, 4, 2)
    v = StreamInput(x=torch.randn(1, 6, 8), timesteps=torch.full((1, 6), 0.5), sigma=torch.tensor([0.5]),
                    positions=pos_v, context=torch.randn(1, 5, 8))
    a = StreamInput(x=torch.randn(1, 4, 8), timesteps=torch.full((1, 4), 0.5), sigma=torch.tensor([0.5]),
                    positions=pos_a, context=torch.randn(1, 5, 8))
    pv, pa = model(v, a)
    assert torch.count_nonzero(pv) == 0 and torch.count_nonzero(pa) == 0
    again = AVTransformer(t).init_weights(torch.Generator().manual_seed(0))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters()))  # seeded


def _draws(mode, n: int):
    sampler = SigmaSampler(kind="uniform")
    return [draw(mode, sampler, torch.Generator().manual_seed(i), video_shape=(4, 3, 2, 2), audio_shape=(5, 4),
                 caption_dropout=0.0) for i in range(n)]


def test_clean_p_draws():
    plain, zero = _draws(training_mode("t2av"), 50), _draws(training_mode("t2av", video_clean_p=0.0), 50)
    for a, b in zip(plain, zero):  # clean_p 0: the official draw sequence, unchanged
        assert a.video_sigma == b.video_sigma and torch.equal(a.video_noise, b.video_noise)
    mixed = _draws(training_mode("t2av", video_clean_p=0.25, audio_clean_p=0.25), 400)
    video = [d for d in mixed if "video_clean" in d.applied]
    audio = [d for d in mixed if "audio_clean" in d.applied]
    assert not any("video_clean" in d.applied and "audio_clean" in d.applied for d in mixed)
    assert 70 <= len(video) <= 130 and 70 <= len(audio) <= 130  # 100 expected each (binomial sd ~8.7)
    for d in video:  # the clean stream: every token clean, the other stream's sigma as its step sigma
        assert d.video_cond.all() and not d.audio_cond.any() and d.video_sigma == d.audio_sigma
    for d in audio:
        assert d.audio_cond.all() and not d.video_cond.any() and d.audio_sigma == d.video_sigma
    with pytest.raises(ValueError, match="both streams generated"):
        training_mode("t2v", video_clean_p=0.5)
    with pytest.raises(ValueError, match="add up to"):
        training_mode("t2av", video_clean_p=0.6, audio_clean_p=0.6)
