"""`python -m train.preprocess` with an LTX-2 checkpoint (train/preprocess_ltx2.py) and the LTX-2 side of the
latent cache (ltx.data.latent_cache): tiny official bundled files ("19b" and "2.3", tests/ltx2/ltx2_tiny.py), a
tiny Gemma 3 folder and small mp4s with AAC sound. Every cached tensor is checked against the reference
ltx-core modules the file was written from, applied to inputs this file computes itself."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO
from safetensors.torch import load_file

pytest.importorskip("av")
pytest.importorskip("transformers")
pytest.importorskip("ltx_core")
sys.path.insert(0, str(REPO / "tests" / "ltx2"))

import ltx2_tiny  # noqa: E402

import train.preprocess as pre  # noqa: E402
import train.preprocess_ltx2 as pre2  # noqa: E402
from ltx.core.audio_io import read_audio, write_video_with_audio, write_wav  # noqa: E402
from ltx.core.media import read_video, write_mp4  # noqa: E402
from ltx.data.buckets import Bucket, fit_to_bucket  # noqa: E402
from ltx.data.latent_cache import BucketBatchSampler, LatentCache  # noqa: E402
from ltx.ltx2.audio import as_stereo, waveform_to_mel  # noqa: E402
from ltx.ltx2.patchify import audio_latent_frames_for_video  # noqa: E402
from ltx.ltx2.text import GemmaTextEncoder  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
FPS, BUCKET, TOKENS = 24, (9, 64, 64), 128
WORDS = "a dog barks at the sea waves crash on rocks music plays softly red ball voice says hello still".split()


def gemma_folder(folder: Path) -> Path:
    """A Gemma 3 text model as wide as the tiny checkpoints' feature extractor (8) with 48 layers."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "<bos>", "<unk>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(folder)  # fmt: skip
    cfg = Gemma3TextConfig(vocab_size=len(vocab), hidden_size=ltx2_tiny.TEXT_DIM, intermediate_size=16,
                           num_hidden_layers=ltx2_tiny.NUM_HIDDEN_STATES - 1, num_attention_heads=2,
                           num_key_value_heads=1, head_dim=4, sliding_window=64, max_position_embeddings=512)
    torch.manual_seed(3)
    Gemma3ForCausalLM(cfg).save_pretrained(folder)
    return folder


def tone(seconds: float, rate: int, channels: int, freq: float, amplitude: float = 0.5) -> torch.Tensor:
    t = torch.arange(round(seconds * rate)) / rate
    waves = [amplitude * torch.sin(2 * math.pi * freq * (c + 1) * t) for c in range(channels)]
    return torch.stack(waves)  # (C, N)


def frames(count: int, seed: int, height: int = 64, width: int = 64) -> torch.Tensor:
    return torch.rand(3, count, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """Clips: stereo 16 kHz with a reference clip, mono 44.1 kHz at 30 fps (resampled to 24), a silent track, no
    track, a separate stereo 22.05 kHz WAV (audio_path), a PNG; and a missing one."""
    from PIL import Image

    d = tmp_path_factory.mktemp("ltx2data")
    write_video_with_audio(d / "stereo.mp4", frames(10, 0), FPS, tone(10 / FPS, 16000, 2, 440), 16000)
    write_mp4(d / "stereo_ref.mp4", frames(10, 1), FPS)
    write_video_with_audio(d / "mono.mp4", frames(12, 2), 30, tone(12 / 30, 44100, 1, 330), 44100)
    write_video_with_audio(d / "silent.mp4", frames(10, 3), FPS, torch.zeros(2, 16000), 16000)
    write_mp4(d / "mute.mp4", frames(10, 4), FPS)
    write_mp4(d / "dub.mp4", frames(10, 5), FPS)
    write_wav(d / "voice.wav", tone(1.0, 22050, 2, 220, 0.3), 22050)
    Image.fromarray((frames(1, 6)[:, 0].permute(1, 2, 0) * 255).to(torch.uint8).numpy()).save(d / "still.png")
    rows = [{"media_path": "stereo.mp4", "caption": "a dog barks", "reference_path": "stereo_ref.mp4"},
            {"media_path": "mono.mp4", "caption": "music plays softly"},
            {"media_path": "silent.mp4", "caption": "the sea"},
            {"media_path": "mute.mp4", "caption": "a red ball"},
            {"media_path": "dub.mp4", "caption": "a voice says hello", "audio_path": "voice.wav"},
            {"media_path": "still.png", "caption": "a still"},
            {"media_path": "dub.mp4", "caption": "waves crash", "audio_path": "gone.wav"}]  # fmt: skip
    (d / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ckpt, models = ltx2_tiny.official_file(d / "ltx-2-tiny.safetensors", "19b")
    return {"dir": d, "manifest": d / "manifest.jsonl", "ckpt": ckpt, "models": models,
            "gemma": gemma_folder(d / "gemma")}  # fmt: skip


def config(data: dict, out: Path, /, **kw) -> pre.PreprocessConfig:
    base = dict(data=str(data["manifest"]), out=str(out), checkpoint=str(data["ckpt"]), text_encoder=str(data["gemma"]),
                gemma_tokens=TOKENS, buckets=["9x64x64", "1x64x64"], index_every=2)  # fmt: skip
    return pre.PreprocessConfig(**(base | kw))


@pytest.fixture(scope="module")
def cache(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ltx2cache") / "c"
    threads = torch.get_num_threads()  # one thread, as the tests that re-encode (the module's one_thread fixture
    torch.set_num_threads(1)  # does not reach a module fixture): the VAE's last bits depend on the thread count
    try:
        pre.run(config(data, out))
    finally:
        torch.set_num_threads(threads)
    return out


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


class Spy:
    """Counts the clips preprocess_ltx2 decodes."""

    def __init__(self, monkeypatch):
        self.calls, real = 0, pre2.load_clip

        def load_clip(*a, **k):
            self.calls += 1
            return real(*a, **k)

        monkeypatch.setattr(pre2, "load_clip", load_clip)


def by_name(cache: LatentCache) -> dict[str, int]:
    return {Path(it["media_path"]).name + ("+wav" if it["audio_path"] else ""): i for i, it in enumerate(cache.items)}


# ---------------------------------------------------------------------------------------------- expectations


def expected_audio(models: dict, path: Path, frames: int, fps: float) -> torch.Tensor:
    """The reference audio encoder on the log-mel of [0, frames / fps) s of `path`'s sound, cut to the 4 T - 3 mel
    frames that T = round(25 frames / fps) latents read."""
    waveform, rate = read_audio(path)
    n = round(frames / fps * rate)
    waveform = torch.nn.functional.pad(waveform[:, :n], (0, max(0, n - waveform.shape[1])))
    mel = waveform_to_mel(as_stereo(waveform[None]), rate)
    T = audio_latent_frames_for_video(frames, fps)
    with torch.no_grad():
        return models["audio_encoder"](mel[:, :, : 4 * T - 3])[0]


def expected_video(models: dict, path: Path, indices: list[int]) -> torch.Tensor:
    video, _ = read_video(path)
    with torch.no_grad():
        return models["vae_encoder"](fit_to_bucket(video[:, indices], Bucket(*BUCKET))[None] * 2 - 1)[0]


def expected_text(models: dict, gemma: Path, caption: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(video features, audio features, mask) of the reference feature extractor on Gemma's hidden states."""
    encoder = GemmaTextEncoder.from_folder(gemma, dtype=torch.float32, max_length=TOKENS)
    hidden, mask = encoder.encode([caption])
    with torch.no_grad():
        video, audio = models["text"].feature_extractor(hidden, mask)
    return video[0], (video if audio is None else audio)[0], mask[0]


# ---------------------------------------------------------------------------------------------- tests


def test_cache_holds_what_the_reference_modules_give(cache, data, capsys):
    index = json.loads((cache / "index.json").read_text())
    assert index["complete"] and index["family"] == "ltx2" and index["fps"] == FPS
    assert index["text_encoder"] | {"path": None} == {"path": None, "max_tokens": TOKENS, "feature_extractor": "v1"}
    T = audio_latent_frames_for_video(9, FPS)
    assert T == 9 and index["audio"]["latent_shape_per_bucket"] == {"9x64x64": [8, T, 16]}
    assert index["audio"]["sample_rate"] == 16000 and index["vae"]["scale"] == [8, 32, 32]
    assert [(Path(s["path"]).name, s["reason"]) for s in index["skipped"]] == [
        ("dub.mp4", f"audio file {data['dir'] / 'gone.wav'} not found")]

    data_set = LatentCache(cache)
    assert data_set.family == "ltx2" and len(data_set) == 6 and data_set.audio_items == 3
    names = by_name(data_set)
    missing = {n: data_set.items[i]["audio_missing"] for n, i in names.items()}
    assert missing == {"stereo.mp4": None, "mono.mp4": None, "silent.mp4": "silent", "mute.mp4": "no audio track",
                       "dub.mp4+wav": None, "still.png": "image"}  # fmt: skip
    assert data_set.buckets == {BUCKET: [0, 1, 2, 3, 4], (1, 64, 64): [5]}
    models, d = data["models"], data["dir"]

    # audio: the clip's own track (stereo 16 kHz; mono 44.1 kHz at 30 fps), or the separate WAV
    for name, source in (("stereo.mp4", "stereo.mp4"), ("mono.mp4", "mono.mp4"), ("dub.mp4+wav", "voice.wav")):
        item = data_set[names[name]]
        assert item["audio"].shape == (8, T, 16) and item["audio"].dtype == torch.float32
        torch.testing.assert_close(item["audio"], expected_audio(models, d / source, 9, FPS), rtol=0, atol=1e-5)
    for name in ("silent.mp4", "mute.mp4", "still.png"):
        assert data_set[names[name]]["audio"] is None
    assert data_set.items[names["mono.mp4"]]["source_fps"] == 30

    # video: nearest-frame resampling to 24 fps (30 fps: frame i shows source frame floor(1.25 i + 0.5))
    mono = data_set[names["mono.mp4"]]
    assert mono["fps"] == FPS and mono["latents"].shape == (128, 2, 2, 2)
    torch.testing.assert_close(mono["latents"], expected_video(models, d / "mono.mp4", [0, 1, 3, 4, 5, 6, 8, 9, 10]),
                               rtol=0, atol=1e-5)  # fmt: skip
    stereo = data_set[names["stereo.mp4"]]
    torch.testing.assert_close(stereo["latents"], expected_video(models, d / "stereo.mp4", list(range(9))), rtol=0,
                               atol=1e-5)  # fmt: skip
    torch.testing.assert_close(stereo["reference"], expected_video(models, d / "stereo_ref.mp4", list(range(9))),
                               rtol=0, atol=1e-5)  # fmt: skip
    assert stereo["reference_downscale"] == 1

    # text: the feature extractor's output on Gemma's hidden states, real tokens only, left padded back
    video, audio, mask = expected_text(models, data["gemma"], "music plays softly")
    assert mono["video_context"].shape == (TOKENS, ltx2_tiny.TEXT_DIM) and torch.equal(mono["mask"], mask)
    assert mono["mask"].dtype == torch.int64 and mono["mask"].sum() == 4  # <bos> + 3 words
    torch.testing.assert_close(mono["video_context"], video, rtol=0, atol=1e-5)
    assert mono["audio_context"] is mono["video_context"]  # V1: one set of features
    assert (mono["video_context"][: TOKENS - 4] == 0).all()
    stored = load_file(str(cache / "text" / f"{data_set.items[names['mono.mp4']]['id']}.safetensors"))
    assert set(stored) == {"video"} and stored["video"].shape == (4, ltx2_tiny.TEXT_DIM)
    null_video, null_audio, null_mask = data_set.null_text()
    video, _, mask = expected_text(models, data["gemma"], "")
    assert torch.equal(null_mask, mask) and null_mask.sum() == 1
    torch.testing.assert_close(null_video, video, rtol=0, atol=1e-5)

    # the bucket sampler groups by bucket: one video (and audio) length per batch
    sampler = BucketBatchSampler(data_set, global_batch=2, seed=0)
    for step in range(6):
        assert len({data_set.items[i]["bucket"][0] for i in sampler.batch(step)}) == 1

    pre.run(config(data, cache))  # a rerun prints the table of items without sound
    out = capsys.readouterr().out
    assert "audio: 3 of 6 items have sound" in out
    *table, last = out.splitlines()[-5:]
    rows = {line.split()[0]: line.split(maxsplit=1)[1] for line in table}
    assert rows == {"without": "audio  why", "silent.mp4": "silent", "mute.mp4": "no audio track", "still.png": "image"}
    assert last.startswith("[preprocess] the cache is in ")


def test_resume_recomputes_nothing_written(cache, data, tmp_path, monkeypatch):
    out = tmp_path / "c"
    shutil.copytree(cache, out)
    before = snapshot(out)
    items = json.loads((out / "index.json").read_text())["items"]
    ids = {Path(it["media_path"]).name: it["id"] for it in items if not it["audio_path"]}
    stereo, mono = ids["stereo.mp4"], ids["mono.mp4"]
    (out / f"audio/{mono}.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 cache files are missing, e\.g\. .*audio/"):
        LatentCache(out)  # the dataset refuses a cache that lost a file
    # a kill: index.json gone, one clip's latents and another's audio and caption never written
    for rel in ("index.json", f"latents/{stereo}.safetensors", f"text/{mono}.safetensors"):
        (out / rel).unlink()
    spy = Spy(monkeypatch)
    pre.run(config(data, out))
    assert spy.calls == 2  # the stereo clip (no latents) and the mono one (no audio): nothing else decoded
    after = snapshot(out)
    assert after.keys() == before.keys()
    redone = {"index.json", f"latents/{stereo}.safetensors", f"audio/{mono}.safetensors", f"text/{mono}.safetensors",
              f"latents/{mono}.safetensors", f"audio/{stereo}.safetensors", f"reference/{stereo}.safetensors"}
    assert {k for k in after if after[k] != before[k]} == redone
    a, b = LatentCache(out), LatentCache(cache)
    assert a.items == b.items
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert all(torch.equal(x[k], y[k]) for k in ("latents", "video_context", "mask"))
        assert (x["audio"] is None) == (y["audio"] is None) and (x["audio"] is None or torch.equal(x["audio"],
                                                                                                   y["audio"]))


def test_families_do_not_mix(cache, data, tmp_path):
    """LTX-2 preprocessing into a 0.9.x cache is refused in one line, and the reverse; nothing is written."""
    demo = dict(checkpoint=str(REPO / "demo/ltx-demo.safetensors"), text_encoder=str(REPO / "demo/text_encoder"),
                text_tokens=16, buckets=["9x64x64"])  # fmt: skip
    small = tmp_path / "one.jsonl"
    small.write_text(json.dumps({"media_path": str(data["dir"] / "mute.mp4"), "caption": "a red ball"}) + "\n")
    ltxv = tmp_path / "ltxv"
    pre.run(config(data, ltxv, data=str(small), **demo))
    assert LatentCache(ltxv).family == "ltxv"

    before = snapshot(ltxv)
    with pytest.raises(ValueError, match=r"holds a cache made differently: model family LTX-Video 0\.9\.x vs LTX-2\. "
                                         r"Use another out folder"):  # fmt: skip
        pre.run(config(data, ltxv, data=str(small)))
    assert snapshot(ltxv) == before
    before = snapshot(cache)
    with pytest.raises(ValueError, match=r"model family LTX-2 vs LTX-Video 0\.9\.x\. Use another out folder"):
        pre.run(config(data, cache, data=str(small), **demo))
    assert snapshot(cache) == before


def test_ltx2_3_caches_separate_audio_text_features(data, tmp_path):
    ckpt, models = ltx2_tiny.official_file(tmp_path / "ltx-2.3-tiny.safetensors", "2.3")
    small = tmp_path / "one.jsonl"
    small.write_text(json.dumps({"media_path": str(data["dir"] / "mono.mp4"), "caption": "music plays softly"}) + "\n")
    out = tmp_path / "c"
    index = pre.run(config(data, out, data=str(small), checkpoint=str(ckpt), audio=False))
    assert index["text_encoder"]["feature_extractor"] == "v2" and index["audio"] is None
    assert not (out / "audio").exists()
    item = LatentCache(out)[0]
    video, audio, mask = expected_text(models, data["gemma"], "music plays softly")
    assert item["audio"] is None and torch.equal(item["mask"], mask)
    assert item["video_context"].shape == (TOKENS, 16) and item["audio_context"].shape == (TOKENS, 8)
    real = mask.bool()  # V2's projections have a bias, so the reference's padding rows are not zero: ours are
    for ours, reference in ((item["video_context"], video), (item["audio_context"], audio)):
        torch.testing.assert_close(ours[real], reference[real], rtol=0, atol=1e-5)
        assert (ours[~real] == 0).all()
    with pytest.raises(ValueError, match=r"made differently: audio None vs \{'sample_rate': 16000"):
        pre.run(config(data, out, data=str(small), checkpoint=str(ckpt)))


def test_a_caption_longer_than_gemma_tokens_is_reported_once_and_the_last_line_names_the_cache(data, tmp_path,
                                                                                            capsys):
    long = " ".join(["a dog barks at the sea"] * 40)  # about 200 tokens of the tiny vocabulary
    manifest = tmp_path / "long.jsonl"
    manifest.write_text(json.dumps({"media_path": str(data["dir"] / "stereo.mp4"), "caption": long}) + "\n")
    out = tmp_path / "c"
    pre.run(config(data, out, data=str(manifest), audio=False))
    lines = capsys.readouterr().out.splitlines()
    assert sum("longer than gemma_tokens" in line for line in lines) == 1
    assert lines[-1].startswith(f"[preprocess] the cache is in {out.resolve()}")


@pytest.mark.parametrize("kw, message", [
    (dict(text_encoder=str(REPO / "demo/text_encoder")), r"has no config\.json.*local Gemma-3 folder"),
    (dict(gemma_tokens=100), r"gemma_tokens=100 must be a multiple of the text connectors' 128 registers"),
    (dict(fps=0.0), r"fps=0\.0 is invalid"),
    (dict(buckets=["9x64x48"]), r"bucket 9x64x48: width 48 is not a positive multiple of 32 \(nearest: 32 or 64\)"),
    (dict(silence_peak=2.0), r"silence_peak=2\.0 must be in \[0, 1\)"),
])  # fmt: skip
def test_bad_config_fails_before_writing(data, tmp_path, kw, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        pre.run(config(data, tmp_path / "out", **kw))
    assert not (tmp_path / "out").exists()
