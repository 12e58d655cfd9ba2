"""The fine-tuning trainer (train/finetune.py) end to end on the bundled demo model and a small cache of real
mp4 files: it learns, it resumes exactly after a kill, it refuses bad input before writing anything, it
stops on a non-finite loss with the last good state saved, its outputs load elsewhere, and 2 gloo processes
(DDP, FSDP2) compute the same global-batch losses as 1 (also across a resume on another topology)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_losses, torchrun
from omegaconf import OmegaConf

pytest.importorskip("hydra")
pytest.importorskip("av")

from train import finetune  # noqa: E402

PROMPTS = ["a red circle moves to the left", "a green square moves up", "a blue triangle stays still",
           "a yellow circle moves down", "a white square moves to the right", "a purple triangle moves up"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """12 real mp4 clips (ShapesWorld renders with their captions) in two buckets, preprocessed once."""
    from ltx.core.media import write_mp4
    from ltx.data.shapes import ShapesWorld
    from train import preprocess

    root = tmp_path_factory.mktemp("videos")
    rows = []
    for i, (w, data) in enumerate([(64, ShapesWorld(split="train", num_samples=8, seed=5)),
                                   (96, ShapesWorld(split="train", num_samples=4, seed=6, width=96))]):
        for k in range(len(data)):
            s = data[k]
            name = f"clip_{i}_{k}.mp4"
            write_mp4(root / name, (s.video + 1) / 2, 8)
            rows.append({"media_path": name, "caption": s.caption})
        del w
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path_factory.mktemp("cache") / "cache"
    cfg = preprocess.PreprocessConfig(data=str(root / "manifest.jsonl"), out=str(out), text_tokens=96,
                                      buckets=["17x64x64", "17x64x96"])
    preprocess.run(cfg)
    return out


def _preset():
    from ltx.presets import ModelPreset

    raw = OmegaConf.load(REPO / "configs/model/ltx-demo.yaml")
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelPreset), raw))


def _cfg(cache: Path, run_dir: Path, **kw) -> finetune.FinetuneConfig:
    base = dict(model=_preset(), data=str(cache), run_dir=str(run_dir), steps=6, batch_size=4, lr=1e-3,
                log_every=1, checkpoint_every=2, wandb=False, threads=1, first_frame_p=0.5, caption_dropout=0.2,
                # validation (3 captions of the data by default) is tested on its own, not in every run
                validation=finetune.ValidationSettings(from_data=0))
    base.update(kw)
    return finetune.FinetuneConfig(**base)


_losses = run_losses


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("field,value,words", [
    ("lr", 0.0, "lr=0.0 is invalid"), ("lr", -1.0, "lr=-1.0"), ("lr", float("nan"), "lr=nan"),
    ("steps", 0, "steps=0"), ("steps", -5, "steps=-5"), ("batch_size", 0, "batch_size=0"),
    ("log_every", 0, "log_every=0"), ("first_frame_p", 1.5, "first_frame_p=1.5"), ("mode", "qlora", "mode='qlora'"),
    ("grad_clip", float("inf"), "grad_clip=inf"), ("ema", 1.0, "ema=1.0"), ("threads", -1, "threads=-1"),
    ("device", "tpu", "device='tpu'"), ("validation", {"prompts": ["a"], "steps": 0}, "validation.steps=0"),
    ("offload", "model", "offload='model'"), ("offload_prefetch", -1, "offload_prefetch=-1"),
])
def test_nonsensical_hyper_parameters_fail_with_the_field_name(cache, tmp_path, field, value, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        if field == "validation":
            value = finetune.ValidationSettings(**value)
        _cfg(cache, tmp_path / "run", **{field: value})
    assert not (tmp_path / "run").exists()


def test_offload_of_a_full_finetune_is_refused_in_one_line(cache, tmp_path):
    with pytest.raises(ValueError, match="needs mode=lora") as e:
        _cfg(cache, tmp_path / "run", mode="full", offload="blocks")
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_offload_blocks_trains_the_same_adapters_bit_for_bit(cache, tmp_path, capsys):
    """offload=blocks (the frozen blocks stream from CPU memory; on the CPU a copy is a clone, so the hooks run):
    the same losses and the same adapter file as without, bit for bit."""
    from ltx.ltxv.lora import load_lora_file

    plain, streamed = tmp_path / "plain", tmp_path / "streamed"
    finetune.train(_cfg(cache, plain, steps=3))
    finetune.train(_cfg(cache, streamed, steps=3, offload="blocks", activation_checkpointing=True))
    assert "transformer blocks stream from CPU memory" in capsys.readouterr().out
    assert _losses(plain) == _losses(streamed)
    a, b = (load_lora_file(d / "lora.safetensors").tensors for d in (plain, streamed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_paths_and_splits_fail_before_anything_is_written(cache, tmp_path):
    run = tmp_path / "run"
    for kw, words in [(dict(data=str(tmp_path / "nope")), "is not a folder"),
                      (dict(checkpoint=str(tmp_path / "none.safetensors")), "does not exist"),
                      (dict(batch_size=4, micro_batch=3), "micro_batch=3 does not divide")]:
        with pytest.raises((ValueError, FileNotFoundError), match=words):
            finetune.Trainer(_cfg(cache, run, **kw))
        assert not run.exists()


def test_cli_prints_one_line_for_bad_input(cache, tmp_path):
    r = subprocess.run([sys.executable, "-m", "train.finetune", f"data={cache}", f"run_dir={tmp_path / 'r'}", "lr=-1"],
                       cwd=REPO, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "offline"})
    assert r.returncode != 0 and "lr=-1.0 is invalid" in r.stderr and "Traceback" not in r.stderr, r.stderr


# ------------------------------------------------------------------------------------------------ training


@pytest.mark.slow
def test_lora_run_learns_resumes_exactly_and_its_file_loads_in_generate(cache, tmp_path):
    full = tmp_path / "full"
    report = finetune.train(_cfg(cache, full))
    part = tmp_path / "part"
    finetune.train(_cfg(cache, part, stop_after=3))  # "killed" after the step-3 checkpoint... (saved at 2 and 3)
    finetune.train(_cfg(cache, part))
    a, b = _losses(full), _losses(part)
    assert sorted(a) == list(range(1, 7)) and sorted(b) == list(range(1, 7))  # no duplicate rows after the resume
    assert a == b  # bit for bit: the same next losses
    assert report["trainable_parameters"] < 200_000
    from ltx.ltxv.lora import load_lora_file

    la, lb = load_lora_file(full / "lora.safetensors"), load_lora_file(part / "lora.safetensors")
    assert la.tensors.keys() == lb.tensors.keys() and all(torch.equal(la.tensors[k], lb.tensors[k]) for k in la.tensors)
    assert (full / "loss.png").stat().st_size > 1000
    rows = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    assert any(k.startswith("loss_sigma_") for k in rows[0])

    import infer.generate as gen

    model = OmegaConf.load(REPO / "configs/model/ltx-demo.yaml")
    out = gen.run(gen.to_config(OmegaConf.merge(
        {"model": model},
        {"prompts": [PROMPTS[0]], "output_dir": str(tmp_path / "gen"), "steps": 2,
         "loras": [{"path": str(full / "lora.safetensors"), "strength": 1.0}]})))
    assert out and out[0].is_file()


@pytest.mark.slow
def test_resume_with_another_config_is_refused_naming_the_fields(cache, tmp_path):
    run = tmp_path / "run"
    finetune.train(_cfg(cache, run, steps=2))
    before = (run / "config.json").read_text()
    with pytest.raises(finetune.TrainingError, match=r"lora.rank: 16 -> 8.*batch_size: 4 -> 2"):
        finetune.train(_cfg(cache, run, steps=4, batch_size=2, lora=finetune.LoRASettings(rank=8)))
    assert (run / "config.json").read_text() == before


@pytest.mark.slow
def test_non_finite_loss_stops_with_the_last_good_state(cache, tmp_path, monkeypatch):
    real = finetune.flow_matching_objective
    calls = {"n": 0}

    def poisoned(model, mb):
        calls["n"] += 1
        loss = real(model, mb)
        return loss * float("nan") if calls["n"] > 3 else loss  # steps 1-3 fine (1 micro-batch each), step 4 nan

    monkeypatch.setitem(finetune.OBJECTIVES, "flow_matching", poisoned)
    run = tmp_path / "run"
    with pytest.raises(finetune.TrainingError, match="step 4: loss nan"):
        finetune.train(_cfg(cache, run, steps=6, checkpoint_every=100))
    from train.dist_checkpoint import resolve

    assert resolve(run / "checkpoints").name == "step_00000003"
    monkeypatch.setitem(finetune.OBJECTIVES, "flow_matching", real)
    finetune.train(_cfg(cache, run, steps=6, checkpoint_every=100))  # resumes from the good state
    assert sorted(_losses(run)) == list(range(1, 7))


@pytest.mark.slow
def test_full_finetune_writes_a_checkpoint_generate_and_the_converter_read(cache, tmp_path):
    run = tmp_path / "run"
    finetune.train(_cfg(cache, run, mode="full", steps=2, lr=1e-4))
    from ltx.ltxv.checkpoint import load_component, read_checkpoint

    ckpt = read_checkpoint(run / "model.safetensors")
    assert set(ckpt.components) == {"dit", "vae"}
    dit = load_component(ckpt, "dit")
    base = load_component(REPO / "demo/ltx-demo.safetensors", "dit")
    changed = [k for k, v in dit.state_dict().items() if not torch.equal(v, base.state_dict()[k])]
    assert len(changed) > 10
    sys.path.insert(0, str(REPO / "tools"))
    import convert_weights

    assert convert_weights.main([str(run / "model.safetensors"), str(tmp_path / "official.safetensors"),
                                 "--to", "official"]) == 0


# ------------------------------------------------------------------------------------------------ processes


def _torchrun(n: int, cache: Path, run_dir: Path, *args: str) -> None:
    torchrun(n, "train.finetune", f"data={cache}", f"run_dir={run_dir}", "steps=4", "batch_size=4", "lr=1e-3",
             "log_every=1", "checkpoint_every=2", "wandb=false", "threads=1", "first_frame_p=0.5",
             "caption_dropout=0.2", "validation.from_data=0", *args)


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_match_one_at_the_same_global_batch(cache, tmp_path, parallel):
    one, two = tmp_path / "one", tmp_path / "two"
    _torchrun(1, cache, one)
    _torchrun(2, cache, two, f"parallel={parallel}")
    a, b = _losses(one), _losses(two)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for k in a:
        assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-7), (k, a, b)


@pytest.mark.slow
def test_resume_on_another_topology(cache, tmp_path):
    """Saved by 2 FSDP processes at step 2, resumed by 1 process: the same losses as 1 process throughout."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    _torchrun(1, cache, ref)
    _torchrun(2, cache, run, "parallel=fsdp", "stop_after=2")
    _torchrun(1, cache, run)
    a, b = _losses(ref), _losses(run)
    assert sorted(b) == [1, 2, 3, 4]
    for k in a:
        assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-7), (k, a, b)


# ------------------------------------------------------------------------------------------------ Slurm


def test_slurm_launcher_config_composes_and_slurm_tasks_become_torchrun_processes(monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="finetune_schema", node=finetune.FinetuneConfig)
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
        c = compose(config_name="finetune", overrides=["hydra/launcher=slurm", "hydra.launcher.nodes=2", "data=x"],
                    return_hydra_config=True)
    assert c.hydra.launcher._target_.endswith("SlurmLauncher") and c.hydra.launcher.nodes == 2
    assert c.hydra.launcher.tasks_per_node == c.hydra.launcher.gpus_per_node  # one process per GPU
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(k, "")  # recorded, so the test leaves none of them behind
        monkeypatch.delenv(k)
    slurm = {"SLURM_NTASKS": "4", "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "gpu[7-8]",
             "SLURM_JOB_ID": "42", "SLURM_NODEID": "1", "SLURM_JOB_NUM_NODES": "2", "SLURM_NNODES": "2",
             "SLURM_STEP_NODELIST": "gpu[7-8]", "SUBMITIT_EXECUTOR": "slurm"}
    for k, v in slurm.items():
        monkeypatch.setenv(k, v)
    finetune.slurm_environment()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("3", "4", "1")
    assert os.environ["MASTER_ADDR"] == "gpu7"


@pytest.mark.slow
def test_wandb_run_id_survives_a_resume(cache, tmp_path):
    pytest.importorskip("wandb")
    run = tmp_path / "run"
    finetune.train(_cfg(cache, run, steps=2, stop_after=1, wandb=True))
    first = torch.load(run / "checkpoints/step_00000001/extra.pt", weights_only=False)["extra"]["wandb_id"]
    finetune.train(_cfg(cache, run, steps=2, wandb=True))
    second = torch.load(run / "checkpoints/step_00000002/extra.pt", weights_only=False)["extra"]["wandb_id"]
    assert first and first == second
    assert any(p.name.endswith(first) for p in (run / "wandb").glob("offline-run-*"))


@pytest.mark.slow
def test_validation_samples_with_the_generate_sampler_including_image_to_video(cache, tmp_path):
    from PIL import Image

    from ltx.data.shapes import ShapesWorld

    first = ((ShapesWorld(num_samples=1, seed=9)[0].video[:, 0] + 1) / 2 * 255).round().byte().permute(1, 2, 0)
    Image.fromarray(first.numpy()).save(tmp_path / "first.png")
    run = tmp_path / "run"
    v = finetune.ValidationSettings(prompts=PROMPTS[:2], images=[str(tmp_path / "first.png")] * 2, steps=2,
                                    every=1)
    finetune.train(_cfg(cache, run, steps=2, validation=v))
    for step in (1, 2):
        out = run / f"samples/step_{step:06d}"
        assert sorted(p.suffix for p in out.iterdir()) == [".mp4", ".mp4", ".png", ".png", ".txt"]
        assert (run / f"samples/step_{step:06d}.png").stat().st_size > 500
    import av

    with av.open(str(next(out.glob("00_*.mp4")))) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 17 and frames[0].shape == (64, 64, 3)
    with pytest.raises(ValueError, match="one image per validation prompt"):
        _cfg(cache, run, validation=finetune.ValidationSettings(prompts=PROMPTS[:2], images=["a.png"]))
