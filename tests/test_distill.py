"""Distillation: the losses (ltx/ltxv/distill.py) against closed forms and invariants, and the app (train/distill.py)
end to end on the demo model: it lowers its loss, resumes exactly, and its student runs in `generate`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ltx.ltxv import distill as distill_lib
from ltx.ltxv.guidance import GuidanceStep, TextConditioning
from ltx.ltxv.patchify import token_positions
from ltx.ltxv.transformer import DiT, DiTConfig, STGMode

CFG = DiTConfig(num_layers=3, num_heads=2, head_dim=8, in_channels=4, out_channels=4, caption_channels=8)


def tiny(seed: int = 0) -> tuple[DiT, TextConditioning, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    dit = DiT(CFG).init_weights(g)
    with torch.no_grad():  # init_weights zeroes the output head and gates: give every path a signal
        for p in dit.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    B, T = 2, 2 * 3 * 3
    text = TextConditioning(torch.randn(B, 5, 8, generator=g), torch.ones(B, 5), torch.randn(B, 5, 8, generator=g),
                            torch.ones(B, 5))
    pos = token_positions(2, 3, 3, fps=8.0, causal=True).expand(B, -1, -1)
    return dit.eval(), text, pos, torch.randn(B, T, 4, generator=g)


def test_losses_vanish_when_the_student_is_the_teacher():
    dit, text, pos, x = tiny()
    v = distill_lib.velocity_fn(dit, text, pos)
    sigma = torch.tensor([0.7, 0.3])
    with torch.no_grad():
        assert torch.equal(distill_lib.output_kd_loss(v(x, sigma), v(x, sigma)), torch.zeros(2))
        with distill_lib.block_features(dit, [0, 2]) as f1:
            v(x, sigma)
        feats = [t.clone() for t in f1]
        assert torch.equal(distill_lib.feature_kd_loss(feats, feats), torch.zeros(2))
    const = lambda x, s: torch.ones_like(x)  # noqa: E731 - straight paths: one Euler step == two
    s = [torch.full((2,), a) for a in (0.9, 0.6, 0.2)]
    assert torch.allclose(distill_lib.step_distillation_loss(const, const, x, *s), torch.zeros(2))
    x0 = x.clone().requires_grad_(True)
    distill_lib.dmd_loss(x0, v, v, sigma, torch.randn_like(x)).sum().backward()  # real == fake: nothing to move
    assert torch.equal(x0.grad, torch.zeros_like(x))


def test_gradient_signs_on_a_toy_case():
    """A student off the teacher by delta is pulled back (output KD, step distillation), and DMD moves a
    sample towards the real distribution's mean."""
    x = torch.randn(1, 6, 4)
    teacher = lambda x, s: 0.5 * x  # noqa: E731
    for delta in (0.3, -0.3):
        d = torch.tensor(delta, requires_grad=True)
        distill_lib.output_kd_loss(teacher(x, None) + d, teacher(x, None)).sum().backward()
        assert d.grad * delta > 0  # descent reduces |delta|
        d = torch.tensor(delta, requires_grad=True)
        s = [torch.full((1,), a) for a in (0.8, 0.5, 0.2)]
        distill_lib.step_distillation_loss(lambda x, s, d=d: teacher(x, s) + d, teacher, x, *s).sum().backward()
        assert d.grad * delta > 0
    mu_r, mu_f = 2.0, -1.0
    x0 = torch.zeros(1, 6, 4, requires_grad=True)
    sigma = torch.tensor([0.5])
    real, fake = gaussian_velocity(mu_r), gaussian_velocity(mu_f)
    distill_lib.dmd_loss(x0, real, fake, sigma, torch.randn(1, 6, 4)).sum().backward()
    assert bool((x0.grad < 0).all())  # descent increases x0 towards mu_r = 2 (away from the critic's mu_f = -1)


def gaussian_velocity(mu: float):
    """Exact velocity of x_t = (1 - t) x0 + t n for x0 ~ N(mu, I): v = (x_t - E[x0 | x_t]) / t."""
    def v(x, t):
        t = t.view(-1, 1, 1)
        var = (1 - t) ** 2 + t**2
        denoised = mu + (1 - t) / var * (x - (1 - t) * mu)
        return (x - denoised) / t
    return v


def test_dmd_gradient_is_the_score_difference_on_gaussians():
    """For real N(mu_r, I) and fake N(mu_f, I) data, the DMD gradient on the sample is D_fake(x_t) - D_real(x_t)
    = t^2 / (1 - t) (score_fake(x_t) - score_real(x_t)) with score(x) = -(x - (1 - t) mu) / ((1 - t)^2 + t^2)."""
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(3, 5, 4, generator=g).requires_grad_(True)
    noise = torch.randn(3, 5, 4, generator=g)
    t = torch.tensor([0.2, 0.5, 0.8])
    mu_r, mu_f = 1.5, -0.5
    real, fake = gaussian_velocity(mu_r), gaussian_velocity(mu_f)
    distill_lib.dmd_loss(x0, real, fake, t, noise, normalize=False).sum().backward()
    tt = t.view(-1, 1, 1)
    x_t = (1 - tt) * x0.detach() + tt * noise
    var = (1 - tt) ** 2 + tt**2

    def score(mu):
        return -(x_t - (1 - tt) * mu) / var

    expected = tt**2 / (1 - tt) * (score(mu_f) - score(mu_r))
    torch.testing.assert_close(x0.grad * (5 * 4), expected, rtol=1e-5, atol=1e-6)  # the loss is a mean over T * C


@pytest.mark.parametrize("cfg_star", [False, True])
def test_guided_target_is_the_samplers_cfg_stg_combination(cfg_star):
    """The guidance-distillation target equals three separate forwards combined by the documented formula."""
    dit, text, pos, x = tiny(1)
    step = GuidanceStep(cfg=3.0, stg=1.5, rescale=0.7, stg_blocks=(1,), cfg_star=cfg_star)
    sigma = torch.tensor([0.8, 0.4])
    with torch.no_grad():
        got = distill_lib.velocity_fn(dit, text, pos, step)(x, sigma)
        c = dit(x, sigma, text.context, text.mask, pos)
        u = dit(x, sigma, text.neg_context, text.neg_mask, pos)
        skip = torch.ones(CFG.num_layers, 2)
        skip[1] = 0
        p = dit(x, sigma, text.context, text.mask, pos, skip_mask=skip, stg_mode=STGMode.attention_values)
    if cfg_star:
        a = (c * u).sum((1, 2), keepdim=True) / ((u * u).sum((1, 2), keepdim=True) + 1e-8)
        u = a * u
    v = u + 3.0 * (c - u) + 1.5 * (c - p)
    factor = c.flatten(1).std(1) / v.flatten(1).std(1)
    v = v * (0.7 * factor + 0.3).view(-1, 1, 1)
    torch.testing.assert_close(got, v, rtol=1e-5, atol=1e-6)


def test_backward_simulation_and_guidance_embedding():
    dit, text, pos, x = tiny(2)
    v = distill_lib.velocity_fn(dit, text, pos)
    grid = [1.0, 0.7, 0.3]
    k = torch.tensor([2, 0])
    out = distill_lib.simulate(v, x, grid, k)
    with torch.no_grad():
        row0 = distill_lib.euler(lambda y, s: v(torch.cat([y, y]), s.expand(2))[:1], x[:1], grid)
    torch.testing.assert_close(out[:1], row0)
    assert torch.equal(out[1], x[1])  # k = 0: the noise itself
    with torch.no_grad():
        before = dit(x, torch.tensor([0.5, 0.5]), text.context, text.mask, pos)
        emb = distill_lib.add_guidance_embedding(dit)
        with distill_lib.guidance_scale(dit, 3.0):
            assert torch.equal(dit(x, torch.tensor([0.5, 0.5]), text.context, text.mask, pos), before)  # zero init
        emb.mlp[-1].weight.normal_()
        with distill_lib.guidance_scale(dit, torch.tensor([1.0, 4.0])):
            a = dit(x, torch.tensor([0.5, 0.5]), text.context, text.mask, pos)
        with distill_lib.guidance_scale(dit, torch.tensor([4.0, 4.0])):
            b = dit(x, torch.tensor([0.5, 0.5]), text.context, text.mask, pos)
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1])
    with pytest.raises(ValueError, match="add_guidance_embedding"):
        with distill_lib.guidance_scale(DiT(CFG), 2.0):
            pass


# ------------------------------------------------------------------------------------------------ the app

pytest.importorskip("hydra")
pytest.importorskip("av")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    from ltx.core.media import write_mp4
    from ltx.data.shapes import ShapesWorld
    from train import preprocess

    root = tmp_path_factory.mktemp("clips")
    data = ShapesWorld(split="train", num_samples=8, seed=11)
    rows = []
    for k in range(len(data)):
        write_mp4(root / f"c{k}.mp4", (data[k].video + 1) / 2, 8)
        rows.append({"media_path": f"c{k}.mp4", "caption": data[k].caption})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path_factory.mktemp("cache") / "cache"
    preprocess.run(preprocess.PreprocessConfig(data=str(root / "manifest.jsonl"), out=str(out), text_tokens=96))
    return out


def config(cache: Path, run_dir: Path, **kw):
    from ltx.presets import load_preset
    from train import distill
    from train.finetune import ValidationSettings

    base = dict(model=load_preset("ltx-demo"), data=str(cache), run_dir=str(run_dir), steps=4, batch_size=4,
                lr=1e-3, log_every=1, checkpoint_every=2, wandb=False, threads=1,
                student=distill.StudentSettings(steps=3, timesteps=[1.0, 0.7, 0.35]),
                # validation (3 captions of the data by default) is tested on its own, not in every run
                validation=ValidationSettings(from_data=0))
    base.update(kw)
    return distill.DistillConfig(**base)


def losses(run_dir: Path, key: str = "loss") -> dict[int, float]:
    from conftest import run_losses

    return run_losses(run_dir, key)


@pytest.mark.parametrize("field, value, words", [
    ("method", "magic", "method='magic' is invalid: must be one of kd, guidance, step, dmd"),
    ("teacher", {"guidance_scale": float("nan")}, "teacher.guidance_scale=nan"),
    ("student", {"steps": 3, "timesteps": [1.0, 0.5]}, "student.timesteps=[1.0, 0.5] is invalid: must be 3"),
    ("critic", {"updates": 0}, "critic.updates=0"),
    ("dmd_sigma", [0.5, 0.2], "dmd_sigma=[0.5, 0.2]"),
    ("feature_weight", 1.0, "feature_weight=1.0 is invalid: needs method kd or guidance and feature_layers"),
])  # fmt: skip
def test_bad_distill_settings_name_the_field(cache, tmp_path, field, value, words):
    from train import distill

    kinds = {"teacher": distill.TeacherSettings, "student": distill.StudentSettings, "critic": distill.CriticSettings}
    if field in kinds:
        with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
            config(cache, tmp_path / "r", **{field: kinds[field](**value)})
    else:
        with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
            config(cache, tmp_path / "r", **{field: value})
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("method", ["guidance", "step"])
def test_distillation_lowers_its_loss(cache, tmp_path, one_thread, method):
    """The objective on fixed micro-batches (fixed noise, sigma, captions) falls after 30 training steps."""
    from train import distill
    from train.finetune import SigmaSettings

    trainer = distill.DistillTrainer(config(cache, tmp_path / method, method=method, steps=30, checkpoint_every=30,
                                            sigma=SigmaSettings(kind="uniform")))
    held = [mb for step in (100, 101) for _, mb in trainer.micro_batches(step)]  # batches training never draws

    def loss() -> float:
        with torch.no_grad():
            return sum(float(trainer.objective(trainer.dit, mb).mean()) for mb in held) / len(held)

    before = loss()
    trainer.fit()
    after = loss()
    assert after < 0.8 * before, (before, after)


@pytest.mark.slow
def test_dmd_resumes_exactly_and_its_student_runs_in_generate(cache, tmp_path, one_thread):
    from train import distill

    kw = dict(method="dmd", critic=distill.CriticSettings(rank=4, updates=2), lr=2e-4)
    full, part = tmp_path / "full", tmp_path / "part"
    distill.train(config(cache, full, **kw))
    distill.train(config(cache, part, stop_after=2, **kw))
    distill.train(config(cache, part, **kw))
    a, b = losses(full), losses(part)
    assert sorted(a) == [1, 2, 3, 4] and a == b  # bit for bit after the resume, critic and optimizer included
    assert losses(full, "critic_loss") == losses(part, "critic_loss")
    student = json.loads((full / "student.json").read_text())
    assert student["timesteps"] == [1.0, 0.7, 0.35] and student["guidance_scale"] == 1.0
    from ltx.ltxv.lora import load_lora_file

    lora = load_lora_file(full / "lora.safetensors")
    assert lora.tensors and not any("critic" in k for k in lora.tensors)  # the critic is not exported

    import infer.generate as gen
    from ltx.presets import load_preset

    paths = gen.run(gen.GenerateConfig(model=load_preset("ltx-demo"), prompts=["a red circle moves up"],
                                       loras=[gen.LoraSpec(path=str(full / "lora.safetensors"))],
                                       timesteps=student["timesteps"], guidance_scale=1.0, device="cpu",
                                       output_dir=str(tmp_path / "out")))
    import yaml

    record = yaml.safe_load(paths[0].with_suffix(".yaml").read_text())
    assert [round(s, 4) for s in record["sigmas"][0]] == [1.0, 0.7, 0.35, 0.0]


def test_full_student_exports_a_checkpoint_that_allows_its_grid(cache, tmp_path, one_thread):
    from ltx.ltxv.checkpoint import read_checkpoint
    from train import distill

    distill.train(config(cache, tmp_path / "f", method="kd", mode="full", steps=2))
    ckpt = read_checkpoint(tmp_path / "f" / "model.safetensors")
    assert ckpt.extra["allowed_inference_steps"] == [1.0, 0.7, 0.35]  # generate checks timesteps against it
    assert {"dit", "vae"} <= set(ckpt.components)


@pytest.mark.parametrize("preset", ["distill_guidance", "distill_step8", "distill_step4", "distill_dmd4"])
def test_experiment_presets_compose_into_valid_configs(preset):
    from conftest import REPO
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore

    from train import distill

    ConfigStore.instance().store(name="distill_schema", node=distill.DistillConfig)
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
        cfg = distill.to_config(compose("distill", overrides=[f"+experiment={preset}"]))
    assert cfg.data == "cache/distill_base" and cfg.run_dir == f"runs/{preset}"
    assert distill.student_grid(cfg)[0] == 1.0 and len(distill.student_grid(cfg)) == cfg.student.steps


def test_cli_prints_one_line_for_bad_input(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    r = subprocess.run([sys.executable, "-m", "train.distill", f"data={tmp_path}", "method=magic"], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 1 and "error: method='magic' is invalid" in r.stderr and "Traceback" not in r.stderr


def _torchrun(n: int, cache: Path, run_dir: Path, *args: str) -> None:
    from conftest import torchrun

    torchrun(n, "train.distill", f"data={cache}", f"run_dir={run_dir}", "method=guidance", "steps=3", "batch_size=4",
             "log_every=1", "checkpoint_every=3", "wandb=false", "threads=1", "validation.from_data=0", *args)


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_guidance_distillation_on_two_processes_matches_one(cache, tmp_path, parallel):
    """The teacher (the LoRA student's own base, adapters off) runs inside DDP / FSDP2 as in one process."""
    one, two = tmp_path / "one", tmp_path / "two"
    _torchrun(1, cache, one)
    _torchrun(2, cache, two, f"parallel={parallel}")
    a, b = losses(one), losses(two)
    assert sorted(a) == sorted(b) == [1, 2, 3]
    for k in a:
        assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-7), (k, a, b)


def test_bad_teacher_and_feature_layers_fail_before_anything_is_written(cache, tmp_path):
    from ltx.core.checkpoint import CheckpointError
    from train import distill

    run = tmp_path / "r"
    with pytest.raises(CheckpointError, match="teacher.checkpoint=.*none.safetensors"):
        distill.DistillTrainer(config(cache, run, method="kd", teacher=distill.TeacherSettings(
            checkpoint=str(tmp_path / "none.safetensors"))))
    with pytest.raises(ValueError, match=r"feature_layers=\[\[0, 99\]\] is invalid: teacher blocks \[99\] do not"):
        distill.DistillTrainer(config(cache, run, method="kd", feature_weight=1.0, feature_layers=[[0, 99]]))
    assert not run.exists()
