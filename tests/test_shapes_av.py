"""ShapesWorld-AV (ltx.data.shapes_av): the soundtrack against closed forms, the files it writes, and the dataset
writer tools/make_av_data.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import load_tool

from ltx.core.audio_io import read_audio
from ltx.data.manifest import read_dataset
from ltx.data.shapes import SceneParams, ShapeParams, ShapesWorld, shape_masks
from ltx.data.shapes_av import (
    FADE_SECONDS,
    GAIN_PER_SIZE,
    HARMONIC_LIMIT,
    NOTES,
    SAMPLE_RATE,
    TIMBRES,
    ShapesWorldAV,
    audio_length,
    note_bands,
    pan_track,
    soundtrack,
    voice,
    write_clip,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _scene(*shapes: ShapeParams) -> SceneParams:
    return SceneParams(tuple(shapes), "black")


def _static(color="red", kind="circle", x=0.5, size=0.2) -> ShapeParams:
    return ShapeParams(color, kind, "static", size, (x, 0.5), (x, 0.5))


def _amplitude(signal: np.ndarray, f: float, rate: int = SAMPLE_RATE) -> float:
    """Amplitude of the sinusoid at f Hz in `signal` (a whole number of its periods fits: exact DFT bin)."""
    n = len(signal)
    t = np.arange(n) / rate
    return 2 * abs(np.dot(signal, np.exp(-2j * np.pi * f * t))) / n


def test_constants_cover_the_palette_and_kinds():
    assert NOTES == {"red": 300.0, "yellow": 400.0, "green": 500.0, "blue": 700.0, "purple": 1100.0, "white": 1300.0}
    assert TIMBRES == {"circle": "sine", "square": "square", "triangle": "sawtooth"}
    notes = sorted(NOTES.values())
    assert all(f % 100 == 0 for f in notes)  # a whole number of periods in 160 samples at 16 kHz (one mel frame)
    assert all(12 * math.log2(b / a) > 2.8 for a, b in zip(notes, notes[1:]))
    assert all(math.gcd(int(a), int(b)) == 100 for a in notes for b in notes if a != b)  # two voices share few partials
    partials = [k * f for f in notes for k in range(2, 40) if k * f < HARMONIC_LIMIT]
    assert min(abs(f - p) / f for f in notes for p in partials) > 0.075


def test_note_bands_tile_and_hold_their_note():
    bands = note_bands()
    edges = sorted(bands.values())
    assert all(a[1] == b[0] for a, b in zip(edges, edges[1:]))  # contiguous, no overlap
    for color, (lo, hi) in bands.items():
        assert lo < NOTES[color] < hi
        for f in np.geomspace(lo * 1.001, hi / 1.001, 25):  # every frequency inside is nearest to its own note
            assert min(NOTES, key=lambda c: abs(math.log(NOTES[c] / f))) == color


@pytest.mark.parametrize("frames,fps,rate,expected", [(17, 8, 16000, 34000), (9, 24, 24000, 9000),
                                                      (17, 7, 16000, 38857), (1, 8, 16000, 2000)])
def test_exact_sample_count(frames, fps, rate, expected):
    params = ShapesWorld(num_samples=1, seed=3).params(0)
    audio = soundtrack(params, frames, fps, rate)
    assert audio_length(frames, fps, rate) == expected
    assert audio.shape == (2, expected) and audio.dtype == torch.float32


def test_rendering_is_bitwise_deterministic():
    a = ShapesWorldAV(num_samples=8, seed=4)
    b = ShapesWorldAV(num_samples=8, seed=4)
    for i in (5, 0, 7):  # access order does not matter
        x, y = a[i], b[i]
        assert torch.equal(x.audio, y.audio) and torch.equal(x.video, y.video) and x.caption == y.caption
    assert not torch.equal(a[0].audio, a[1].audio)
    assert not torch.equal(a[0].audio, ShapesWorldAV(num_samples=8, seed=5)[0].audio)


def test_wraps_shapesworld_unchanged():
    av, plain = ShapesWorldAV(split="heldout", num_samples=4, seed=9), ShapesWorld(split="heldout", num_samples=4,
                                                                                   seed=9)
    for i in range(4):
        x, y = av[i], plain[i]
        assert torch.equal(x.video, y.video) and x.caption == y.caption and x.params == y.params
        assert torch.equal(x.audio, soundtrack(x.params, 17))


@pytest.mark.parametrize("x", [0.2, 0.5, 0.73])
def test_static_pan_is_constant_power(x):
    audio = soundtrack(_scene(_static(x=x)), 17).double()
    left, right = audio[0].square().sum().item(), audio[1].square().sum().item()
    assert right / left == pytest.approx(math.tan(x * math.pi / 2) ** 2, rel=1e-5)  # = sin^2 / cos^2
    mid = slice(1000, -1000)  # away from the fades: L^2 + R^2 is the unpanned voice
    expected = GAIN_PER_SIZE * 0.2 * voice("sine", NOTES["red"], audio.shape[1])
    assert torch.allclose(audio[:, mid].square().sum(0).sqrt(), torch.from_numpy(np.abs(expected[mid])), atol=1e-6)


@pytest.mark.parametrize("color", list(NOTES))
def test_pitch_by_fft(color):
    audio = soundtrack(_scene(_static(color)), 17).double().mean(0).numpy()  # a sine circle at the centre
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    peak = np.argmax(spectrum) * SAMPLE_RATE / len(audio)
    assert peak == pytest.approx(NOTES[color], abs=SAMPLE_RATE / len(audio))  # within one bin (0.47 Hz)


@pytest.mark.parametrize("kind", ["circle", "square", "triangle"])
def test_timbre_partials_and_equal_rms(kind):
    f0 = 250.0  # 16000 samples: every partial is an exact DFT bin
    wave = voice(TIMBRES[kind], f0, SAMPLE_RATE)
    assert np.sqrt(np.mean(wave**2)) == pytest.approx(1 / math.sqrt(2), rel=1e-9)  # a unit sine's RMS, any timbre
    a1 = _amplitude(wave, f0)
    ratios = [_amplitude(wave, k * f0) / a1 for k in (2, 3, 4, 5)]
    expected = {"circle": [0, 0, 0, 0], "square": [0, 1 / 3, 0, 1 / 5], "triangle": [1 / 2, 1 / 3, 1 / 4, 1 / 5]}
    assert ratios == pytest.approx(expected[kind], abs=1e-9)
    top = {"circle": 1, "square": 27, "triangle": 27}[kind]  # the last partial below HARMONIC_LIMIT (27 * 250)
    assert _amplitude(wave, top * f0) > 0.01 * a1 and _amplitude(wave, 28 * f0) < 1e-9
    assert 28 * f0 >= HARMONIC_LIMIT


def test_pan_follows_the_rendered_shape():
    """At the middle of frame i's window the pan is the x centre of the circle the renderer drew in frame i."""
    shape = ShapeParams("blue", "circle", "right", 0.18, (0.25, 0.5), (0.6, 0.5))
    n = audio_length(17)
    pan = pan_track(shape, 17, n)
    mask = shape_masks(_scene(shape), 17, 64, 64)[0]  # (F, H, W) coverage
    xs = (torch.arange(64) + 0.5) / 64
    for i in range(17):
        rendered = ((mask[i].sum(0) * xs).sum() / mask[i].sum()).item()  # the disc's centroid
        assert pan[round((i + 0.5) * SAMPLE_RATE / 8 - 0.5)] == pytest.approx(rendered, abs=2e-3)
    assert pan[0] == pan[999] == pytest.approx(0.25) and pan[-1] == pytest.approx(0.6)  # held outside
    assert np.all(np.diff(pan) >= 0)


def test_fades_and_headroom():
    world = ShapesWorldAV(num_samples=40, seed=1, p_two_shapes=1.0)
    ramp = round(FADE_SECONDS * SAMPLE_RATE)
    for i in range(40):
        audio = world[i].audio
        assert audio[:, 0].abs().max() == 0 and audio[:, -1].abs().max() == 0
        assert audio.abs().max() < 0.6  # no clipping: two voices at most 0.25 + 0.15 peak-gain, saw crest < 1.5
        assert audio[:, :ramp].abs().max() < audio[:, ramp : 4 * ramp].abs().max()


def test_bad_arguments_are_one_line_errors():
    params = ShapesWorld(num_samples=1).params(0)
    with pytest.raises(ValueError, match="frames must be a positive int"):
        soundtrack(params, 0)
    with pytest.raises(ValueError, match="sample_rate must be an int >= 1000"):
        soundtrack(params, 17, sample_rate=16000.0)
    with pytest.raises(ValueError, match="fps must be a positive number"):
        ShapesWorldAV(fps=0)


def test_written_files_play_with_the_expected_streams(tmp_path):
    import av

    sample = ShapesWorldAV(num_samples=1, seed=2)[0]
    mp4, wav = write_clip(tmp_path / "clip", sample)
    assert mp4 == tmp_path / "clip.mp4" and wav == tmp_path / "clip.wav"
    with av.open(str(mp4)) as container:
        (vs,), (aud,) = container.streams.video, container.streams.audio
        assert aud.codec_context.name == "aac" and aud.codec_context.sample_rate == 16000
        assert aud.codec_context.channels == 2
        assert float(aud.duration * aud.time_base) == pytest.approx(17 / 8, abs=1e-3)
        assert (vs.width, vs.height) == (64, 64) and sum(1 for _ in container.decode(vs)) == 17
    audio, rate = read_audio(mp4)
    assert rate == 16000 and audio.shape == (2, 34000)
    assert ((audio - sample.audio).square().mean() / sample.audio.square().mean()).item() < 1e-3  # AAC
    audio, rate = read_audio(wav)
    assert rate == 16000 and audio.shape == (2, 34000)
    assert (audio - sample.audio).abs().max().item() <= 1 / 32768
    mp4_only, none = write_clip(tmp_path / "b", sample, wav=False)
    assert mp4_only.exists() and none is None and not (tmp_path / "b.wav").exists()


# ---------------------------------------------------------------------------------------------- tools/make_av_data.py

def test_make_av_data_writes_a_manifest_and_resumes(tmp_path):
    tool = load_tool("make_av_data")
    out = tmp_path / "data"
    manifest, written = tool.make_av_data(out, num=3, seed=6)
    items, skipped = read_dataset(manifest)
    world = ShapesWorldAV(num_samples=5, seed=6)
    assert written == 3 and not skipped and [i.caption for i in items] == [world[i].caption for i in range(3)]
    audio, rate = read_audio(items[0].media_path)
    assert rate == 16000 and audio.shape == (2, 34000)
    meta = json.loads((out / "av_data.json").read_text())
    assert meta["settings"]["split"] == "train" and len(meta["clips"]) == 3
    first = items[0].media_path.read_bytes()
    stamp = items[0].media_path.stat().st_mtime_ns

    manifest, written = tool.make_av_data(out, num=5, seed=6)  # extends: the first 3 clips are kept
    items, _ = read_dataset(manifest)
    assert written == 2 and len(items) == 5 and items[0].media_path.stat().st_mtime_ns == stamp
    assert [i.caption for i in items] == [world[i].caption for i in range(5)]

    again, _ = tool.make_av_data(tmp_path / "again", num=1, seed=6)  # deterministic bytes on one machine
    assert read_dataset(again)[0][0].media_path.read_bytes() == first

    with pytest.raises(FileExistsError, match="other settings.*seed"):
        tool.make_av_data(out, num=5, seed=7)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a ShapesWorld-AV dataset"):
        tool.make_av_data(tmp_path / "other", num=1)
    with pytest.raises(ValueError, match="unknown split"):
        tool.make_av_data(tmp_path / "x", num=1, split="test")
