"""The ShapesWorld-AV evaluator (ltx.data.shapes_av_eval, tools/eval_av.py): ground truth scores 100% with sync
correlation ~1 at lag 0, in memory and through mp4 + AAC files; noise and mismatched clips score at chance or
below; the pan and lag conventions are checked against constructed signals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import load_tool

from ltx.data.shapes import SceneParams, ShapeParams, render
from ltx.data.shapes_av import FPS, SAMPLE_RATE, ShapesAVSample, ShapesWorldAV, soundtrack, write_clip
from ltx.data.shapes_av_eval import (
    MEASURES,
    AVConfig,
    analyze_audio,
    audio_pan,
    chance_levels,
    evaluate_av,
    evaluate_folder,
    sync,
)
from ltx.data.shapes_eval import noise_video

pytestmark = pytest.mark.usefixtures("one_thread")


def _items(samples, rate=SAMPLE_RATE):
    return [(f"c{i}", s.video, s.audio, rate, s.caption, FPS) for i, s in enumerate(samples)]


def _mixed(n: int, seed: int, rate: int = SAMPLE_RATE) -> list[ShapesAVSample]:
    worlds = [ShapesWorldAV(split=split, num_samples=n, seed=seed, sample_rate=rate) for split in ("train", "heldout")]
    return [w[i] for i in range(n // 2) for w in worlds]


def _all_ok(report) -> None:
    summary = report.summary()["all"]
    for m in MEASURES:
        assert summary[m]["n"] > 0 and summary[m]["acc"] == 1.0, (m, summary[m])
    syncs = [r.sync for r in report.items if r.sync is not None]
    assert all(s.lag == 0 and s.r0 > 0.99 for s in syncs)


@pytest.mark.parametrize("rate", [16000, 24000])
def test_ground_truth_scores_100_percent(rate):
    report = evaluate_av(_items(_mixed(24, seed=21, rate=rate), rate))
    _all_ok(report)
    assert report.summary()["all"]["sync_r0"]["mean"] > 0.99


def test_ground_truth_through_mp4_aac_and_wav_files(tmp_path):
    world = ShapesWorldAV(num_samples=40, seed=8, p_two_shapes=0.6)
    horizontal = [i for i in range(40) if world.params(i).shapes[0].motion in ("left", "right")][:4]
    picked = horizontal + [i for i in range(40) if i not in horizontal][:3]
    prompts = {}
    for i in picked:
        sample = world[i]
        write_clip(tmp_path / f"clip{i}", sample)
        prompts[f"clip{i}.mp4"] = sample.caption
    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    for source in ("mp4", "wav"):
        report = evaluate_folder(tmp_path, audio=source)
        assert len(report.items) == len(picked)
        _all_ok(report)


def test_noise_has_no_voice_and_video_noise_scores_at_chance():
    samples = _mixed(24, seed=22)
    g = torch.Generator().manual_seed(0)
    items = [(f"n{i}", noise_video(17, 64, 64, smooth=True, generator=g), 0.1 * torch.randn(2, 34000, generator=g),
              SAMPLE_RATE, s.caption, FPS) for i, s in enumerate(samples)]
    report = evaluate_av(items)
    assert all(r.audio.voices == () for r in report.items)  # white noise is never 20 dB above its own floor
    summary = report.summary()["all"]
    for m in ("pitch", "timbre", "voices", "pan", "av_color", "sync"):
        assert summary[m]["acc"] == 0.0
    assert summary["color"]["acc"] <= 0.35 and summary["motion"]["acc"] <= 0.4  # chance 1/6, 1/5 (n = 24)


def test_mismatched_clips_score_near_chance():
    """Every prompt scored against another clip's video and a third clip's sound: proper scenes, wrong ones."""
    samples = _mixed(60, seed=23)
    m = len(samples)
    report = evaluate_av([(f"x{i}", samples[(i + 1) % m].video, samples[(i + 2) % m].audio, SAMPLE_RATE, s.caption,
                           FPS) for i, s in enumerate(samples)])
    summary, chance = report.summary()["all"], chance_levels()
    for measure in ("color", "pitch", "timbre", "av_color"):  # n = 60: chance + 0.2 is > 4 standard errors
        assert summary[measure]["acc"] < chance[measure] + 0.2, (measure, summary[measure])
    assert summary["sync_r0"]["mean"] < 0.5


def _static_voice(x: float, color="green", kind="circle", n_frames=17) -> torch.Tensor:
    shape = ShapeParams(color, kind, "static", 0.2, (x, 0.5), (x, 0.5))
    return soundtrack(SceneParams((shape,), "black"), n_frames)


@pytest.mark.parametrize("x", [0.2, 0.5, 0.8])
def test_pan_of_a_static_voice_is_its_x(x):
    pan = audio_pan(_static_voice(x), SAMPLE_RATE, 392.0, 17, FPS)
    assert np.allclose(pan, x, atol=2e-3)


def test_sync_lag_sign_and_identifiability():
    world = ShapesWorldAV(num_samples=30, seed=3)
    i = next(i for i in range(30) if world.params(i).shapes[0].motion == "left")
    s = world[i]
    step = SAMPLE_RATE // FPS
    for lag in (-2, 1, 2):  # lag > 0: the sound is late; the first (last) frame's sound holds over the gap
        k = abs(lag) * step
        late = torch.cat([s.audio[:, :k], s.audio[:, :-k]], 1) if lag > 0 else torch.cat([s.audio[:, k:],
                                                                                          s.audio[:, -k:]], 1)
        report = evaluate_av([("x", s.video, late, SAMPLE_RATE, s.caption, FPS)])
        assert report.items[0].sync.lag == lag
    ramp = np.linspace(0.2, 0.6, 17)
    result = sync(ramp, ramp)
    assert result.r0 == pytest.approx(1.0) and result.lag == 0 and result.error0 == 0.0
    shifted = np.concatenate([ramp[:1], ramp[:-1]])  # one frame late, the start held
    result = sync(ramp, shifted)
    assert result.r0 > 0.99 and result.lag == 1 and result.error_best == 0.0  # Pearson alone cannot tell
    assert result.error0 == pytest.approx(0.025 * math.sqrt(16 / 17))
    assert sync(ramp, ramp[::-1].copy()).r0 == pytest.approx(-1.0)
    assert sync(ramp, np.full(17, 0.5)).r0 is None  # a constant track has no correlation


def test_every_two_voice_combination_is_read_back():
    """The notes are chosen for this: in each of the 270 ordered two-voice scenes (colour and kind of a louder and a
    quieter static shape) the evaluator finds both voices, the louder as dominant, each with its own timbre."""
    import itertools

    from ltx.data.shapes_av import NOTES, TIMBRES

    wrong = []
    for c1, c2 in itertools.permutations(NOTES, 2):
        for k1, k2 in itertools.product(TIMBRES, TIMBRES):
            scene = SceneParams((ShapeParams(c1, k1, "static", 0.17, (0.3, 0.5), (0.3, 0.5)),
                                 ShapeParams(c2, k2, "static", 0.10, (0.7, 0.5), (0.7, 0.5))), "black")
            voices = analyze_audio(soundtrack(scene, 17), SAMPLE_RATE).voices
            if [(v.color, v.timbre) for v in voices] != [(c1, TIMBRES[k1]), (c2, TIMBRES[k2])]:
                wrong.append((c1, k1, c2, k2, [(v.color, v.timbre) for v in voices]))
    assert not wrong, wrong


def test_timbre_survives_shared_partials():
    """Red (300 Hz) and yellow (400 Hz) share 1200 Hz (4 x 300 = 3 x 400) and 2400 Hz: each voice keeps its timbre
    although the other puts energy on some of its partials."""
    for kind_a, kind_b in (("square", "triangle"), ("circle", "square"), ("triangle", "square")):
        scene = SceneParams((ShapeParams("red", kind_a, "static", 0.16, (0.3, 0.5), (0.3, 0.5)),
                             ShapeParams("yellow", kind_b, "static", 0.12, (0.7, 0.5), (0.7, 0.5))), "black")
        analysis = analyze_audio(soundtrack(scene, 17), SAMPLE_RATE)
        timbres = {"circle": "sine", "square": "square", "triangle": "sawtooth"}
        assert [(v.color, v.timbre) for v in analysis.voices] == [("red", timbres[kind_a]),
                                                                  ("yellow", timbres[kind_b])]
    scene = SceneParams((ShapeParams("blue", "circle", "static", 0.16, (0.3, 0.5), (0.3, 0.5)),
                         ShapeParams("white", "circle", "static", 0.12, (0.7, 0.5), (0.7, 0.5))), "black")
    voices = analyze_audio(soundtrack(scene, 17), SAMPLE_RATE).voices  # sines: no partial is shared
    assert voices[0].level_db - voices[1].level_db == pytest.approx(20 * math.log10(0.16 / 0.12), abs=0.05)
    assert voices[0].level_db == pytest.approx(10 * math.log10((1.25 * 0.16) ** 2 / 2), abs=0.1)  # mean square


def test_mono_audio_scores_pitch_but_not_pan_or_sync():
    world = ShapesWorldAV(num_samples=30, seed=3)
    i = next(i for i in range(30) if world.params(i).shapes[0].motion == "right")
    s = world[i]
    report = evaluate_av([("m", s.video, s.audio.mean(0, keepdim=True), SAMPLE_RATE, s.caption, FPS)])
    scores = report.items[0].scores()
    assert scores["pitch"] and scores["timbre"] and not scores["pan"] and not scores["sync"]


def test_audio_only_and_video_only_items():
    s = ShapesWorldAV(num_samples=1, seed=5)[0]
    audio_only = evaluate_av([("a", None, s.audio, SAMPLE_RATE, s.caption, FPS)]).items[0].scores()
    video_only = evaluate_av([("v", s.video, None, None, s.caption, FPS)]).items[0].scores()
    assert audio_only["pitch"] and audio_only["color"] is None and audio_only["sync"] is None
    assert video_only["color"] and video_only["pitch"] is None
    report = evaluate_av([("bad", s.video, s.audio, SAMPLE_RATE, "a cat", FPS)])
    assert not report.items and "bad" in report.skipped
    with pytest.raises(ValueError, match="sample_rate must be an int >= 4000"):
        evaluate_av([("r", None, s.audio, 16000.0, s.caption, FPS)])
    with pytest.raises(ValueError, match=r"expected audio of shape \(C, N\)"):
        analyze_audio(s.audio[0], SAMPLE_RATE)


def test_cli_scores_a_folder_and_writes_json(tmp_path, capsys):
    tool = load_tool("eval_av")
    sample = ShapesWorldAV(num_samples=1, seed=12)[0]
    write_clip(tmp_path / "a", sample, wav=False)
    (tmp_path / "a.json").write_text(json.dumps({"prompt": sample.caption}))
    assert tool.main([str(tmp_path), "--json", str(tmp_path / "r.json"), "--items"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    (summary,) = report.values()
    assert summary["summary"]["all"]["pitch"] == {"acc": 1.0, "n": 1}
    assert "pitch->colour" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        tool.main([str(tmp_path / "a.mp4"), "--audio", "wav"])  # no a.wav: one line, exit 2
    assert e.value.code == 2


def test_sync_follows_the_shape_the_video_shows():
    """v2a scoring with a broken video: without any shape there is no sync; with only the second shape, sync is
    judged on that shape and its own voice (in sync here), while colour and motion fail."""
    world = ShapesWorldAV(num_samples=40, seed=3)
    one = world[next(i for i in range(40) if len(world.params(i).shapes) == 1
                     and world.params(i).shapes[0].motion == "left")]
    nothing = ShapeParams("white", "circle", "static", 0.0, (0.5, 0.5), (0.5, 0.5))  # size 0: background only
    empty = render(SceneParams((nothing,), one.params.background))
    scores = evaluate_av([("e", empty, one.audio, SAMPLE_RATE, one.caption, FPS)]).items[0].scores()
    assert scores["pitch"] and scores["pan"] and not scores["color"] and not scores["sync"]

    two = world[next(i for i in range(40) if len(world.params(i).shapes) == 2
                     and world.params(i).shapes[0].motion == "left" and world.params(i).shapes[1].motion == "right")]
    second_only = render(SceneParams(two.params.shapes[1:], two.params.background))
    item = evaluate_av([("s", second_only, two.audio, SAMPLE_RATE, two.caption, FPS)]).items[0]
    scores = item.scores()
    assert scores["pitch"] and not scores["color"] and not scores["motion"] and scores["sync"]
    assert item.sync.r0 > 0.99 and item.audio_motion == "left" and scores["pan"]  # pan: the dominant voice's


def test_config_defaults_are_the_documented_thresholds():
    cfg = AVConfig()
    assert (cfg.snr_db, cfg.max_lag, cfg.sync_threshold, cfg.sync_max_lag) == (20.0, 3, 0.8, 1)
