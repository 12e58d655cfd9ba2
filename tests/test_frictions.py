"""A newcomer's frictions (issue 27): validation samples without writing prompts, a legible loss plot, one
definition of s_per_step, the distill app's own log name, a kill before the first checkpoint, one vocabulary /
truncation warning per generate run, `generate student=RUN`, and Ctrl-C during a conversion that always wins or
is reported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO

pytest.importorskip("hydra")
pytest.importorskip("av")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """6 ShapesWorld clips (mp4) with their captions, preprocessed once."""
    from ltx.core.media import write_mp4
    from ltx.data.shapes import ShapesWorld
    from train import preprocess

    root = tmp_path_factory.mktemp("clips")
    data = ShapesWorld(split="train", num_samples=6, seed=3)
    rows = []
    for k in range(len(data)):
        write_mp4(root / f"c{k}.mp4", (data[k].video + 1) / 2, 8)
        rows.append({"media_path": f"c{k}.mp4", "caption": data[k].caption})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path_factory.mktemp("cache") / "cache"
    preprocess.run(preprocess.PreprocessConfig(data=str(root / "manifest.jsonl"), out=str(out), text_tokens=96))
    return out


def _finetune(cache: Path, run_dir: Path, **kw):
    from ltx.presets import load_preset
    from train import finetune

    base = dict(model=load_preset("ltx-demo"), data=str(cache), run_dir=str(run_dir), steps=2, batch_size=2,
                lr=1e-3, log_every=1, checkpoint_every=100, wandb=False, threads=1,
                # validation (3 captions of the data by default) is tested on its own, not in every run
                validation=finetune.ValidationSettings(from_data=0))
    return finetune.FinetuneConfig(**(base | kw))


def _steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------------ validation


def test_validation_samples_captions_of_the_data_by_default(cache, tmp_path, capsys):
    from ltx.data.latent_cache import LatentCache
    from train import finetune

    v = finetune.ValidationSettings(from_data=2, steps=2)  # no prompts written
    run = tmp_path / "run"
    finetune.train(_finetune(cache, run, validation=v))
    captions = [it["caption"] for it in LatentCache(cache).items]
    prompts = (run / "samples/step_000002/prompts.txt").read_text().splitlines()
    assert len(prompts) == 2 and len(set(prompts)) == 2 and set(prompts) <= set(captions)
    assert prompts[0] == captions[0] and prompts[1] == captions[3]  # spread over the data: items 0 and 6 // 2
    assert len(list((run / "samples/step_000002").glob("*.mp4"))) == 2
    assert "[finetune] validation: 2 captions of data=" in capsys.readouterr().out
    from PIL import Image

    sheet = Image.open(run / "samples/step_000002.png").convert("L")  # 64 x 64 frames, shown at x2
    row = 14 + 6 + 64 * 2 + 4  # one text line above each row of frames
    assert sheet.size == ((5 * 64 + 4 * 2) * 2, 2 * row)
    for top in (0, row):  # each prompt's text is there
        assert min(sheet.crop((0, top, sheet.width, top + 18)).getdata()) < 100
    with pytest.raises(ValueError, match="validation.from_data=-1 is invalid"):
        finetune.Trainer(_finetune(cache, tmp_path / "bad", validation=finetune.ValidationSettings(from_data=-1)))
    finetune.train(_finetune(cache, tmp_path / "none", validation=finetune.ValidationSettings(from_data=0)))
    assert not (tmp_path / "none/samples").exists()


def test_loss_plot_legend_does_not_cover_the_curves(tmp_path):
    from train.runner import Run

    run = Run(tmp_path)
    run.history = [{"step": s, "loss": 1 / s, **{f"loss_sigma_{i}": (i + 1) / s for i in range(4)}}
                   for s in range(1, 200)]
    fig = run.figure(("loss", *(f"loss_sigma_{i}" for i in range(4))))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    legend, axes = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
    assert legend.x0 >= axes.x1  # beside the plot, not on it
    assert len(ax.get_legend().get_texts()) == 5  # one entry per curve (raw and smoothed share it)
    assert run.plot(("loss",)).is_file()


# ------------------------------------------------------------------------------------------------ timing


def test_s_per_step_is_one_wall_clock_definition(tmp_path):
    """Every row's s_per_step is the wall time since the previous row per step, checkpoints included; the
    session's mean (the summary) is the same quantity over the session."""
    from train.harness import TrainLoop
    from train.runner import Run

    class SlowCheckpoint:
        def save(self):
            time.sleep(0.2)

        def load(self):
            return False

    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def forward_backward(step):
        time.sleep(0.02)
        loss = model(torch.ones(1, 2)).pow(2).sum()
        loss.backward()
        return {"loss": float(loss.detach())}

    run = Run(tmp_path, is_main=True)
    run.start({}, project="x", use_wandb=False)
    loop = TrainLoop(run, forward_backward, optimizer=opt, lr_lambda=lambda s: 1.0, params=list(model.parameters()),
                     checkpoint=SlowCheckpoint(), steps=6, log_every=2, checkpoint_every=2)
    t0 = time.perf_counter()
    loop.fit()
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6]
    paces = [r["s_per_step"] for r in rows]
    assert 0.02 <= paces[0] < 0.1  # two steps, no checkpoint yet
    assert paces[1] >= (0.2 + 2 * 0.02) / 2 * 0.95 and paces[2] >= 0.11  # the step-2 / step-4 checkpoints
    logged = sum(p * 2 for p in paces)
    assert abs(loop.session_s_per_step * 6 - (logged + 0.2)) < 0.1  # + the final checkpoint, after the last row
    assert loop.session_s_per_step * 6 <= wall


def test_distill_logs_under_its_own_name():
    from train.distill import DistillTrainer
    from train.finetune import Trainer

    assert Trainer.log_name == "finetune" and DistillTrainer.log_name == "distill"


# ------------------------------------------------------------------------------------------------ resume


def test_kill_before_the_first_checkpoint_leaves_each_step_once(cache, tmp_path, monkeypatch):
    from train import finetune
    from train.runner import Run

    real_log = Run.log

    def log_then_die(self, metrics):
        real_log(self, metrics)
        if self.step == 2:  # logged steps 1 and 2, no checkpoint yet (checkpoint_every=100)
            raise KeyboardInterrupt

    run = tmp_path / "run"
    none = finetune.ValidationSettings(from_data=0)
    monkeypatch.setattr(Run, "log", log_then_die)
    with pytest.raises(KeyboardInterrupt):
        finetune.train(_finetune(cache, run, steps=3, validation=none))
    assert _steps(run) == [1, 2] and not (run / "checkpoints").exists()
    monkeypatch.setattr(Run, "log", real_log)
    finetune.train(_finetune(cache, run, steps=3, validation=none))
    assert _steps(run) == [1, 2, 3]


# ------------------------------------------------------------------------------------------------ generate


def test_vocabulary_and_truncation_warnings_once_per_run(capsys):
    import infer.generate as gen
    from ltx.ltxv.text import PromptView, truncation_summary

    prompts = [f"a red circle moves to the left near tree number {i}" for i in range(24)] + ["a blue square moves up"]
    gen.warn_vocabulary("shapes", prompts)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    warnings = [line for line in lines if line.startswith("warning")]
    assert len(warnings) == 1 and len(lines) == 1, lines
    assert "24 of 25 prompts" in warnings[0] and "near, tree, number" in warnings[0]
    views = [PromptView(f"p{i}", "cut", 300, True) for i in range(24)] + [PromptView("short", "short", 5, False)]
    line = truncation_summary(views, 256)
    assert line.startswith("24 of 25 prompts exceed the text encoder's limit of 256 tokens") and "'p0'" in line
    assert truncation_summary(views[-1:], 256) is None


@pytest.fixture(scope="module")
def student_run(cache, tmp_path_factory) -> Path:
    from ltx.presets import load_preset
    from train import distill
    from train.finetune import ValidationSettings

    run = tmp_path_factory.mktemp("student") / "run"
    torch.set_num_threads(1)
    cfg = distill.DistillConfig(model=load_preset("ltx-demo"), data=str(cache), run_dir=str(run), steps=1,
                                batch_size=2, log_every=1, checkpoint_every=1, wandb=False, threads=1,
                                student=distill.StudentSettings(steps=3, timesteps=[1.0, 0.7, 0.35]),
                                validation=ValidationSettings(from_data=0))
    distill.train(cfg)
    return run


def test_generate_runs_a_student_from_its_run_folder(student_run, tmp_path, capsys):
    import yaml

    import infer.generate as gen
    from ltx.presets import load_preset

    def run(**kw):
        cfg = gen.GenerateConfig(model=load_preset("ltx-demo"), prompts=["a red circle moves up"], device="cpu",
                                 output_dir=str(tmp_path / "out"), **kw)
        (path,) = gen.run(cfg)
        return yaml.safe_load(path.with_suffix(".yaml").read_text())

    for kw in ({"student": str(student_run)}, {"loras": [gen.LoraSpec(path=str(student_run / "lora.safetensors"))]}):
        record = run(**kw)
        assert [round(s, 4) for s in record["sigmas"][0]] == [1.0, 0.7, 0.35, 0.0]
        first = record["config"]["model"]["sampling"]["first_pass"]
        assert first["guidance_scale"] == [1.0] and first["stg_scale"] == [0.0]
        assert [x["path"] for x in record["config"]["loras"]] == [str(student_run / "lora.safetensors")]
        assert "note: sampling the distilled student of" in capsys.readouterr().out
    record = run(student=str(student_run), steps=2)  # the command line wins
    assert len(record["sigmas"][0]) == 3
    with pytest.raises(gen.InputError, match="no student.json there"):
        run(student=str(tmp_path))


# ------------------------------------------------------------------------------------------------ Ctrl-C

_CONVERT = """
import os, signal, sys, time, atexit
sys.path.insert(0, {repo!r})
point = {point!r}
marker = {marker!r}
def interrupt():
    open(marker, "w").close()
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.2)  # delivered here
import ltx.core.checkpoint as ck
real_get, real_replace, calls = ck.SafetensorsReader.get, os.replace, []
def get(self, key):
    calls.append(key)
    if point == "writing" and len(calls) == 3:
        interrupt()
    if point == "swallowed" and len(calls) == 3:  # a destructor or a catch-all swallows the KeyboardInterrupt
        try:
            interrupt()
        except BaseException:
            pass
    return real_get(self, key)
def replace(a, b):
    real_replace(a, b)
    if point == "renamed" and str(b).endswith("out.safetensors"):
        interrupt()
ck.SafetensorsReader.get, os.replace = get, replace
if point == "exit":  # during the interpreter's shutdown, after the conversion reported success
    atexit.register(interrupt)
sys.argv = ["convert_weights.py", {src!r}, {dst!r}, "--to", "official"]
import runpy
runpy.run_path({script!r}, run_name="__main__")
"""


def test_ctrl_c_during_a_conversion_always_wins_or_is_reported(tmp_path):
    src = REPO / "demo/ltx-demo.safetensors"
    procs = {}
    for point in ("writing", "renamed", "swallowed", "exit"):
        folder = tmp_path / point
        folder.mkdir()
        code = _CONVERT.format(repo=str(REPO), point=point, marker=str(folder / "sent"), src=str(src),
                               dst=str(folder / "out.safetensors"), script=str(REPO / "tools/convert_weights.py"))
        # Ctrl-C as a terminal delivers it: a launcher that ignores SIGINT (a background job of a non-interactive
        # shell, nohup) would pass SIG_IGN on, and Python then keeps ignoring it
        procs[point] = subprocess.Popen([sys.executable, "-c", code], text=True, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for point, p in procs.items():
        out, err = p.communicate(timeout=300)
        folder = tmp_path / point
        dst = folder / "out.safetensors"
        sent = (folder / "sent").exists()
        leftovers = [q.name for q in folder.iterdir() if q.name not in ("sent", "out.safetensors")]
        assert leftovers == [], (point, leftovers)
        if not sent:  # the process ended before the signal was sent: nothing to report
            assert point == "exit" and p.returncode == 0 and dst.is_file(), (point, p.returncode, err)
            continue
        assert p.returncode == 130, (point, p.returncode, err)  # the interrupt wins ...
        assert "Traceback" not in err and "Exception ignored" not in err, (point, err)
        if point == "writing":
            assert f"interrupted; {dst} was not written (no temporary file left)" in err and not dst.exists()
        else:  # ... and says that the output is complete when it is
            assert f"interrupted after {dst} was completely written" in err and dst.is_file(), (point, err)
