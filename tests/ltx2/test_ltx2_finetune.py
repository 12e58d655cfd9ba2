"""`train.finetune model=ltx-2-...`: LTX-2 fine-tuning end to end on a tiny official-layout file and a cache of real
mp4 files with AAC sound: every training mode runs, a LoRA run resumes bitwise after a kill, 2 gloo processes
(DDP, FSDP2) give the losses of 1 (and a run saved by 2 resumes on 1), the results load in the LTX-2 pipeline,
validation writes video with sound, and bad input is refused in one line before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import ltx2_tiny
import pytest
import torch
from conftest import run_losses, torchrun
from test_ltx2_generate import _gemma_folder

from ltx.core.audio_io import write_video_with_audio
from ltx.core.media import write_mp4
from ltx.ltx2.training import MODES
from ltx.presets import load_preset
from train import finetune, preprocess

pytestmark = pytest.mark.usefixtures("one_thread")
pytest.importorskip("av")

CAPTIONS = ["a dog barks at the sea", "waves crash on rocks", "music plays softly", "a red ball"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def _clip(path: Path, seed: int, *, sound: bool = True, silent: bool = False) -> Path:
    """17 frames of a moving bright square at 24 fps, with a 48 kHz stereo tone whose pitch depends on `seed`."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(3, 17, 64, 64, generator=g) * 0.2
    for t in range(17):
        x = (4 * t + 8 * seed) % 48
        frames[seed % 3, t, 16:32, x : x + 16] = 1.0
    if not sound:
        write_mp4(path, frames, 24.0)
        return path
    n = int(48000 * 17 / 24)
    tone = 0.4 * torch.sin(2 * torch.pi * (220 + 110 * seed) * torch.arange(n) / 48000) * (0.0 if silent else 1.0)
    write_video_with_audio(path, frames, 24.0, torch.stack([tone, 0.5 * tone]), 48000)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ltx2ft")
    bundle, _ = ltx2_tiny.official_file(root / "ltx-2-tiny.safetensors", "19b")
    gemma = _gemma_folder(root / "gemma")
    clips = root / "clips"
    clips.mkdir()
    rows = []
    for i, caption in enumerate(CAPTIONS):
        _clip(clips / f"c{i}.mp4", i)
        _clip(clips / f"r{i}.mp4", 10 + i)  # its reference clip (IC-LoRA control), with its own sound
        rows.append({"media_path": f"c{i}.mp4", "caption": caption, "reference_path": f"r{i}.mp4"})
    (clips / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cache = root / "cache"
    preprocess.run(preprocess.PreprocessConfig(data=str(clips / "manifest.jsonl"), out=str(cache),
                                               checkpoint=str(bundle), text_encoder=str(gemma), gemma_tokens=128,
                                               buckets=["17x64x64"]))
    # a second cache whose clips lack sound (one none, one silent)
    quiet = root / "quiet"
    quiet.mkdir()
    _clip(quiet / "a.mp4", 1, sound=False)
    _clip(quiet / "b.mp4", 2, silent=True)
    _clip(quiet / "c.mp4", 3)
    (quiet / "manifest.jsonl").write_text("".join(json.dumps({"media_path": f"{n}.mp4", "caption": c}) + "\n"
                                                  for n, c in zip("abc", CAPTIONS)))
    quiet_cache = root / "quiet_cache"
    preprocess.run(preprocess.PreprocessConfig(data=str(quiet / "manifest.jsonl"), out=str(quiet_cache),
                                               checkpoint=str(bundle), text_encoder=str(gemma), gemma_tokens=128,
                                               buckets=["17x64x64"]))
    return {"ckpt": bundle, "gemma": gemma, "cache": cache, "quiet": quiet_cache}


def _preset():
    preset = load_preset("ltx-2-19b-dev")
    preset.av.video.stg_blocks = [1]  # the tiny transformer has 2 blocks
    preset.av.audio.stg_blocks = [1]
    return preset


def _cfg(files, run_dir: Path, **kw) -> finetune.FinetuneConfig:
    base = dict(model=_preset(), checkpoint=str(files["ckpt"]), text_encoder=str(files["gemma"]),
                data=str(files["cache"]), run_dir=str(run_dir), steps=4, batch_size=2, lr=1e-3, log_every=1,
                checkpoint_every=2, wandb=False, threads=1, caption_dropout=0.25,
                # validation (3 captions of the data by default) is tested on its own, not in every run
                validation=finetune.ValidationSettings(from_data=0))
    av, lora = kw.pop("av", {}), kw.pop("lora", {})
    base.update(kw)
    return finetune.FinetuneConfig(**base, av=finetune.AVSettings(**av), lora=finetune.LoRASettings(**lora))


# ------------------------------------------------------------------------------------------------ modes


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_trains_a_step_and_logs_its_losses(files, tmp_path, mode):
    report = finetune.train(_cfg(files, tmp_path / mode, steps=1, checkpoint_every=1, av={"mode": mode}))
    assert report["steps"] == 1
    row = json.loads((tmp_path / mode / "metrics.jsonl").read_text().splitlines()[0])
    m = MODES[mode]
    assert ("loss_video" in row) == bool(m.video and m.video.generated)
    assert ("loss_audio" in row) == bool(m.audio and m.audio.generated)
    assert all(torch.isfinite(torch.tensor(v)) for k, v in row.items() if k.startswith("loss"))
    from ltx.ltx2.lora import read_lora

    modules = read_lora(tmp_path / mode / "lora.safetensors").modules
    video = any(".attn1." in f".{n}." for n in modules)
    audio = any(".audio_attn1." in f".{n}." for n in modules)
    assert (video, audio) == (m.video is not None, m.audio is not None), modules  # adapters on the streams it runs


# ------------------------------------------------------------------------------------------------ the model


def test_the_model_built_on_meta_and_filled_from_the_file_is_the_loaded_one(files, tmp_path):
    """The trainer builds on meta and fills tensor by tensor (what lets FSDP2 keep only shards): bitwise the
    loader's weights, and adapters drawn as inject_lora draws them on the loaded model."""
    from finetune_ltx2_helpers import loaded_reference

    from train.finetune_ltx2 import AVTrainer

    trainer = AVTrainer(_cfg(files, tmp_path / "run", av={"mode": "t2av"}))
    reference = loaded_reference(files["ckpt"], trainer.cfg, trainer.lora_modules)
    ours = trainer.dit.state_dict()
    assert set(ours) == set(reference)
    assert all(torch.equal(ours[k], reference[k]) for k in reference), [k for k in reference
                                                                       if not torch.equal(ours[k], reference[k])][:5]
    assert not (tmp_path / "run").exists()  # building writes nothing


# ------------------------------------------------------------------------------------------------ LoRA result


def test_lora_resumes_bitwise_and_its_file_loads_in_the_ltx2_pipeline(files, tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    finetune.train(_cfg(files, ref))
    finetune.train(_cfg(files, run, stop_after=2))
    assert sorted(run_losses(run)) == [1, 2]
    finetune.train(_cfg(files, run))
    a, b = run_losses(ref), run_losses(run)
    assert a == b  # bitwise: every draw of step k comes from (seed, k, sample)
    assert run_losses(ref, "loss_audio") == run_losses(run, "loss_audio")

    import ltx

    pipe = ltx.load_pipeline(files["ckpt"], model=_preset(), pipeline="one_stage", text_encoder=files["gemma"],
                             loras=[(run / "lora.safetensors", 1.0)], device="cpu", dtype="float32")
    out = pipe("a red ball", seed=0, height=64, width=64, num_frames=9, num_inference_steps=2)
    assert out.frames.shape == (1, 3, 9, 64, 64) and torch.isfinite(out.waveform).all()


def test_activation_checkpointing_changes_no_number(files, tmp_path):
    plain, checkpointed = tmp_path / "plain", tmp_path / "ckpt"
    finetune.train(_cfg(files, plain, steps=2, av={"mode": "i2v"}))
    finetune.train(_cfg(files, checkpointed, steps=2, av={"mode": "i2v"}, activation_checkpointing=True))
    assert run_losses(plain) == run_losses(checkpointed)


def test_offload_blocks_changes_no_number(files, tmp_path, capsys):
    """offload=blocks: the frozen blocks stream from CPU memory (a clone per copy on the CPU): the same losses and
    adapters, bit for bit."""
    from safetensors.torch import load_file

    plain, streamed = tmp_path / "plain", tmp_path / "streamed"
    finetune.train(_cfg(files, plain, steps=2))
    finetune.train(_cfg(files, streamed, steps=2, offload="blocks"))
    assert "transformer blocks stream from CPU memory" in capsys.readouterr().out
    assert run_losses(plain) == run_losses(streamed)
    assert run_losses(plain, "loss_audio") == run_losses(streamed, "loss_audio")
    a, b = (load_file(d / "lora.safetensors") for d in (plain, streamed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("downscale", [1, 2])
def test_ic_lora_file_carries_the_reference_downscale_factor(files, tmp_path, downscale):
    from safetensors import safe_open

    data = files["cache"]
    if downscale != 1:  # references at half the target's size
        data = tmp_path / "half"
        manifest = files["cache"].parent / "clips" / "manifest.jsonl"
        preprocess.run(preprocess.PreprocessConfig(data=str(manifest), out=str(data), checkpoint=str(files["ckpt"]),
                                                   text_encoder=str(files["gemma"]), gemma_tokens=128,
                                                   buckets=["17x64x64"], reference_downscale=2, audio=False))
    finetune.train(_cfg(files, tmp_path / "ic", data=str(data), steps=1, av={"mode": "ic_lora"},
                        lora={"format": "trainer"}))
    with safe_open(tmp_path / "ic" / "lora.safetensors", "pt") as f:
        assert f.metadata().get("reference_downscale_factor") == str(downscale)
        assert all(k.startswith("diffusion_model.") and ".alpha" not in k for k in f.keys())


def test_full_finetune_writes_an_official_file_the_pipeline_opens(files, tmp_path):
    from ltx.ltx2 import checkpoint as ltx2_checkpoint

    finetune.train(_cfg(files, tmp_path / "full", mode="full", steps=2, av={"connector": "trainable"}))
    out = tmp_path / "full" / "model.safetensors"
    base = ltx2_checkpoint.load(files["ckpt"], ("transformer", "text"))
    tuned = ltx2_checkpoint.load(out, ("transformer", "text"))
    changed = {n for n, p in tuned["transformer"].state_dict().items()
               if not torch.equal(p, base["transformer"].state_dict()[n])}
    assert "transformer_blocks.0.attn1.to_q.weight" in changed
    assert any(not torch.equal(p, base["text"].state_dict()[n]) for n, p in tuned["text"].state_dict().items()
               if "connector" in n)


@pytest.mark.parametrize("base_dtype", ["float32", "bfloat16"])
def test_validation_writes_video_with_sound_and_the_audio_contact_sheet(files, tmp_path, base_dtype):
    """Also over a bfloat16 base (the default on CUDA): the step and the sampler run under bf16 autocast."""
    import av

    v = finetune.ValidationSettings(prompts=["a red ball"], steps=2)
    report = finetune.train(_cfg(files, tmp_path / "val", steps=1, validation=v, av={"base_dtype": base_dtype}))
    assert report["steps"] == 1
    assert torch.isfinite(torch.tensor(run_losses(tmp_path / "val")[1]))
    folder = tmp_path / "val" / "samples" / "step_000001"
    mp4 = next(folder.glob("*.mp4"))
    with av.open(str(mp4)) as c:
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 1
    assert next(folder.glob("*.png")).stat().st_size > 0


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("kw,words", [
    (dict(data="quiet", av={"mode": "t2av"}), "have none"),
    (dict(data="quiet", av={"mode": "ic_lora"}), "needs a reference"),
    (dict(av={"mode": "dance"}), "t2av"),
    (dict(lora={"targets": ["to_nothing"]}), "to_nothing"),
    (dict(av={"connector": "trainable"}), "mode=full"),
    (dict(reference_video=True), "ic_lora"),
    (dict(av={"mode": "v2a", "audio_loss_weight": 0.0}), "nothing would be trained"),
])
def test_bad_input_is_one_line_and_writes_nothing(files, tmp_path, kw, words):
    if kw.get("data") == "quiet":
        kw["data"] = str(files["quiet"])
    run_dir = tmp_path / "run"
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        finetune.train(_cfg(files, run_dir, **kw))
    assert words in str(e.value) and "\n" not in str(e.value)
    assert not run_dir.exists()


def test_a_cache_encoded_by_another_ltx2_file_is_refused(files, tmp_path):
    other, _ = ltx2_tiny.official_file(tmp_path / "other.safetensors", "19b", seed=7)
    with pytest.raises(ValueError, match="encoded by another video VAE") as e:
        finetune.train(_cfg(files, tmp_path / "run", checkpoint=str(other)))
    assert "\n" not in str(e.value) and not (tmp_path / "run").exists()


def test_a_0_9_cache_for_an_ltx2_run_and_the_reverse(files, tmp_path):
    index = json.loads((files["cache"] / "index.json").read_text())
    video_cache = tmp_path / "v"
    video_cache.mkdir()
    (video_cache / "index.json").write_text(json.dumps({**index, "family": "ltxv"}))
    with pytest.raises(ValueError, match="0.9.x cache"):
        finetune.train(_cfg(files, tmp_path / "a", data=str(video_cache)))
    demo = finetune.FinetuneConfig(model=load_preset("ltx-demo"), data=str(files["cache"]), run_dir=str(tmp_path / "b"),
                                   wandb=False)
    with pytest.raises(ValueError, match="LTX-2"):
        finetune.train(demo)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ------------------------------------------------------------------------------------------------ processes


def _torchrun(n: int, files, run_dir: Path, *args: str) -> None:
    torchrun(n, "train.finetune", "model=ltx-2-19b-dev", "model.av.video.stg_blocks=[1]",
             "model.av.audio.stg_blocks=[1]", f"checkpoint={files['ckpt']}", f"data={files['cache']}",
             f"run_dir={run_dir}", "steps=4", "batch_size=2", "lr=1e-3", "log_every=1", "checkpoint_every=2",
             "wandb=false", "threads=1", "caption_dropout=0.25", "validation.from_data=0", *args)


@pytest.mark.slow
@pytest.mark.parametrize("parallel,args", [("ddp", ["av.mode=t2v"]),  # t2v: no audio adapters to synchronise
                                           ("fsdp", ["av.mode=i2v"]),
                                           ("fsdp", ["mode=full", "av.connector=trainable", "lr=1e-4"])])
def test_two_processes_match_one(files, tmp_path, parallel, args):
    one, two = tmp_path / "one", tmp_path / "two"
    _torchrun(1, files, one, *args)
    _torchrun(2, files, two, f"parallel={parallel}", *args)
    a, b = run_losses(one), run_losses(two)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for k in a:
        assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-7), (k, a, b)


@pytest.mark.slow
def test_a_run_saved_by_two_fsdp_processes_resumes_on_one(files, tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    _torchrun(1, files, ref, "av.mode=i2v")
    _torchrun(2, files, run, "parallel=fsdp", "stop_after=2", "av.mode=i2v")
    _torchrun(1, files, run, "av.mode=i2v")
    a, b = run_losses(ref), run_losses(run)
    assert sorted(b) == [1, 2, 3, 4]
    for k in a:
        assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-7), (k, a, b)
