"""Distill few-step, guidance-free students from a teacher: the fine-tuning trainer with distillation objectives.

    python -m train.preprocess data=my_videos/ out=cache/my_videos           # once: latents + text states
    python -m train.distill data=cache/my_videos method=guidance              # configs/distill.yaml
    python -m train.distill +experiment=distill_dmd4                          # a preset (configs/experiment/)

This is `train.finetune.Trainer` (data, LoRA or full students, logging, validation, atomic checkpoints, exact
and topology-free resume, torchrun / FSDP2) with another objective and, for DMD2, a critic. The losses are
functions in `ltx.ltxv.distill` (each cites its paper); the methods:

- `kd`: output-level knowledge distillation, the student matches the unguided teacher velocity at noised data
  (with `feature_weight` > 0, plus feature-level KD on `feature_layers`). For a cross-size student
  (teacher.checkpoint another model), the usual first stage.
- `guidance`: the student matches the teacher's guided velocity (CFG / STG / rescale, exactly what the sampler
  computes), so sampling needs one pass per step instead of two or three.
- `step`: trajectory distillation. The student's sigma grid has `student.steps` steps; for a student step
  s_a -> s_c the guided teacher takes `teacher_substeps` Euler steps over the same interval and the student's
  single step must land where the teacher lands (progressive distillation, Salimans & Ho 2022, with
  several teacher steps per student step). With `backward_simulation: true` the starting state x_a is the
  student's own (its sampler run from noise), else noised data.
- `dmd`: DMD2 distribution matching, data-free (only the cached captions are used): the student's few-step
  sample (backward simulation on its grid) is re-noised and moved along (critic - teacher) denoised
  estimates; the critic (a LoRA adapter on the teacher's weights, starting as the teacher) learns the
  student's distribution with `critic.updates` updates per student update. Optional regression regulariser
  (`regression_weight`): the student's few-step samples of fixed noises regress the teacher's full-step,
  guided samples of the same noises (computed once, cached in run_dir).

Memory plan. A LoRA student (`mode: lora`, the way Lightricks ships distilled LTX-2) shares the teacher's
weights: the teacher is the student's base with its adapters off, and the DMD critic is a second adapter on
the same base. One copy of the weights in all: 2B fp32 ~ 8 GB (bf16 ~ 4 GB), 13B bf16 ~ 26 GB, plus the
adapters, their optimizer state and activations. A full student keeps a separate frozen teacher copy (2x the
weights; 13B: 52 GB bf16 before optimizer state, so FSDP2 across GPUs for the student), with the critic
again an adapter on the teacher copy. DMD runs in one process in this version (the critic adapter and the
student share modules that DDP / FSDP2 would wrap once); the other methods run under torchrun like
fine-tuning.

Outputs as fine-tuning (metrics.jsonl, loss.png, checkpoints/, samples/), and the student: lora.safetensors
(or model.safetensors for a full student, with the grid as its `allowed_inference_steps`), plus
student.json holding the sigma list. `generate` runs it with that list and no guidance, read from student.json
(`student=RUN`, or a LoRA given in `loras` with its student.json beside it):

    python -m infer.generate student=RUN 'prompts=["..."]'
"""

from __future__ import annotations

import dataclasses
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor, nn

from ltx.core.checkpoint import CheckpointError, atomic_file
from ltx.core.sigmas import linear_quadratic
from ltx.ltxv.checkpoint import load_component, read_checkpoint
from ltx.ltxv.distill import (
    VelocityFn,
    block_features,
    critic_loss,
    denoised,
    dmd_loss,
    euler,
    feature_kd_loss,
    feature_projections,
    few_step_sample,
    output_kd_loss,
    regression_loss,
    simulate,
    step_distillation_loss,
    substeps,
    velocity_fn,
)
from ltx.ltxv.guidance import GuidanceStep, TextConditioning
from ltx.ltxv.lora import LoRAConfig, inject_lora, lora_modules, lora_parameters, set_strength
from train.finetune_core import FROZEN_FIELDS, FinetuneConfig, MicroBatch, Trainer, main_for, run_trainer
from train.finetune_core import to_config as finetune_to_config
from train.harness import grad_norm, step_generator
from train.runner import atomic_torch_save, check_choice, check_int, check_number, invalid

METHODS = ("kd", "guidance", "step", "dmd")


@dataclass(kw_only=True)
class TeacherSettings:
    checkpoint: str | None = None  # None: the student's base checkpoint (a LoRA student then shares its weights)
    steps: int = 20  # the teacher's own step count (regression targets, the evaluation's reference)
    guidance_scale: float = 3.0  # CFG inside the guided target (the demo preset's)
    stg_scale: float = 0.0  # STG inside the guided target (0 = off)
    rescaling_scale: float = 1.0  # STG rescale (1 = off)
    stg_blocks: list[int] = field(default_factory=list)  # the transformer blocks STG perturbs
    cfg_star: bool = False  # CFG-star rescaling of the unconditional prediction

    def step(self) -> GuidanceStep:
        return GuidanceStep(cfg=self.guidance_scale, stg=self.stg_scale, rescale=self.rescaling_scale,
                            stg_blocks=tuple(self.stg_blocks), cfg_star=self.cfg_star)


@dataclass(kw_only=True)
class StudentSettings:
    steps: int = 4  # the student's step count
    timesteps: list[float] | None = None  # its sigma grid (descending, first 1.0); None: linear-quadratic(steps)
    teacher_substeps: int = 0  # method step: teacher Euler steps per student step; 0 = round(teacher.steps / steps)
    backward_simulation: bool = True  # method step: start from the student's own states, not noised data


@dataclass(kw_only=True)
class CriticSettings:
    rank: int = 32  # the critic adapter's LoRA rank
    alpha: float | None = None  # None: = rank
    targets: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj",
                                                          "ff.net.2"])  # the modules the critic adapter wraps
    lr: float = 1e-4  # the critic's learning rate
    betas: list[float] = field(default_factory=lambda: [0.0, 0.999])  # the critic's AdamW betas (DMD2: beta1 0)
    updates: int = 5  # critic updates per student update (DMD2: 5)


@dataclass(kw_only=True)
class DistillConfig(FinetuneConfig):
    method: str = "guidance"  # kd | guidance | step | dmd
    teacher: TeacherSettings = field(default_factory=TeacherSettings)
    student: StudentSettings = field(default_factory=StudentSettings)
    critic: CriticSettings = field(default_factory=CriticSettings)
    dmd_sigma: list[float] = field(default_factory=lambda: [0.02, 0.98])  # DMD re-noising range (uniform)
    regression_weight: float = 0.0  # DMD: weight of the regression regulariser (0 = off)
    regression_pairs: int = 64  # fixed noises whose teacher samples the regulariser uses
    feature_weight: float = 0.0  # kd / guidance: weight of feature-level KD (0 = off)
    feature_layers: list[list[int]] = field(default_factory=list)  # [[student block, teacher block], ...]
    wandb_project: str = "ltx-distill"

    FROZEN: ClassVar[tuple[str, ...]] = FROZEN_FIELDS + ("method", "teacher", "student", "critic", "dmd_sigma",
                                                         "regression_weight", "regression_pairs", "feature_weight",
                                                         "feature_layers")

    def __post_init__(self):
        super().__post_init__()
        if self.reference_video:
            raise invalid("reference_video", True, "distillation takes no references; train IC-LoRAs with "
                          "train.finetune")
        if self.offload != "none":
            raise invalid("offload", self.offload, "is not wired into distillation (the teacher would stay whole on "
                          "the device); use offload=none, or train.finetune for LoRA with streamed blocks")
        check_choice("method", self.method, METHODS)
        t, s, c = self.teacher, self.student, self.critic
        for name, v in (("teacher.steps", t.steps), ("student.steps", s.steps), ("critic.rank", c.rank),
                        ("critic.updates", c.updates), ("regression_pairs", self.regression_pairs)):
            check_int(name, v)
        if isinstance(s.teacher_substeps, bool) or not isinstance(s.teacher_substeps, int) or s.teacher_substeps < 0:
            raise invalid("student.teacher_substeps", s.teacher_substeps, "must be an integer >= 0 (0 = automatic)")
        check_number("teacher.guidance_scale", t.guidance_scale, 1.0)
        check_number("teacher.stg_scale", t.stg_scale, 0.0)
        check_number("teacher.rescaling_scale", t.rescaling_scale, 0.0, 1.0)
        check_number("critic.lr", c.lr, 0.0, lo_open=True)
        check_number("regression_weight", self.regression_weight, 0.0)
        check_number("feature_weight", self.feature_weight, 0.0)
        if c.alpha is not None:
            check_number("critic.alpha", c.alpha, 0.0, lo_open=True)
        if len(c.betas) != 2 or not all(isinstance(b, int | float) and 0 <= b < 1 for b in c.betas):
            raise invalid("critic.betas", c.betas, "must be two numbers in [0, 1)")
        if len(self.dmd_sigma) != 2 or not 0 < self.dmd_sigma[0] < self.dmd_sigma[1] < 1:
            raise invalid("dmd_sigma", self.dmd_sigma, "must be [low, high] with 0 < low < high < 1")
        if s.timesteps is not None:
            g = s.timesteps
            if len(g) != s.steps or not all(0 < x <= 1 for x in g) or any(a <= b for a, b in zip(g, g[1:])):
                raise invalid("student.timesteps", g, f"must be {s.steps} (student.steps) strictly descending sigmas "
                              f"in (0, 1], starting at 1.0 for sampling from noise")
        if self.feature_weight > 0:
            if self.method not in ("kd", "guidance") or not self.feature_layers:
                raise invalid("feature_weight", self.feature_weight, "needs method kd or guidance and feature_layers "
                              "[[student block, teacher block], ...]")
            if not all(isinstance(p, list) and len(p) == 2 for p in self.feature_layers):
                raise invalid("feature_layers", self.feature_layers, "must be [[student block, teacher block], ...]")
        if self.first_frame_p > 0 and self.method in ("dmd", "step"):
            raise invalid("first_frame_p", self.first_frame_p, f"method {self.method} is text-to-video only here "
                          "(use 0)")
        if self.method == "dmd" and self.micro_batch not in (None, self.batch_size):
            raise invalid("micro_batch", self.micro_batch, "method dmd takes the whole batch at once (leave it null)")


def student_grid(cfg: DistillConfig) -> list[float]:
    """The student's sigmas without the final 0: the explicit list, or linear-quadratic(steps)."""
    if cfg.student.timesteps is not None:
        return [float(x) for x in cfg.student.timesteps]
    return [round(float(x), 6) for x in linear_quadratic(cfg.student.steps)[:-1]]


@contextmanager
def adapter_strengths(models: list[nn.Module], **strengths: float):
    """Run the block with these adapter strengths (e.g. default=0, critic=1: the critic) on the LoRA layers of
    `models` that have them, and put the previous strengths back after it."""
    layers = {id(m): m for model in models for _, m in lora_modules(model)}.values()
    before = [dict(m.lora_strength) for m in layers]
    for m in layers:
        m.lora_strength.update({n: float(s) for n, s in strengths.items() if n in m.lora_strength})
    try:
        yield
    finally:
        for m, kept in zip(layers, before):
            m.lora_strength.update(kept)


def no_grad(v: VelocityFn) -> VelocityFn:
    def without_grad(x: Tensor, sigma: Tensor) -> Tensor:
        with torch.no_grad():
            return v(x, sigma)
    return without_grad


class DistillTrainer(Trainer):
    """The fine-tuning trainer with a teacher (frozen), a distillation objective and, for DMD, a critic.

    Adapters at rest: the student's (`default`) on, the critic's off; the teacher and the critic are called
    inside `adapter_strengths` (a LoRA student's teacher is its own base, the critic an adapter on the
    teacher)."""

    cfg: DistillConfig
    log_name = "distill"

    def __init__(self, cfg: DistillConfig):
        super().__init__(cfg)
        cfg = self.cfg
        if cfg.method == "dmd" and self.dist.world_size > 1:
            raise ValueError("method=dmd runs in one process in this version (see the module docstring); use "
                             "torchrun only for kd / guidance / step")
        self.grid = student_grid(cfg)
        self.teacher = self._make_teacher()
        self.teacher_step = cfg.teacher.step()
        null_ctx, null_mask = self.cache.null_text()  # the negative prompt of the guided teacher: ""
        self.null = (null_ctx.to(self.device, torch.float32), null_mask.to(self.device))
        self.projections = None
        if cfg.feature_weight > 0:  # checked before anything is written (fit() makes the run folder)
            for side, blocks, n in (("student", [p[0] for p in cfg.feature_layers], self.dit.cfg.num_layers),
                                    ("teacher", [p[1] for p in cfg.feature_layers], self.teacher.cfg.num_layers)):
                bad = [b for b in blocks if not 0 <= b < n]
                if bad:
                    raise ValueError(f"feature_layers={cfg.feature_layers} is invalid: {side} blocks {bad} do not "
                                     f"exist (the {side} has blocks 0..{n - 1})")
            self.projections = feature_projections(self.dit.cfg.dim, self.teacher.cfg.dim,
                                                   len(cfg.feature_layers)).to(self.device)
            self._add_params(list(self.projections.parameters()), cfg.lr, tuple(cfg.betas))
        self.critic_params: list[nn.Parameter] = []
        if cfg.method == "dmd":
            self._add_critic()
        self._regression = None

    # -------------------------------------------------------------------------------------------- setup
    def make_objective(self):
        return self.distill_objective

    def _make_teacher(self) -> nn.Module:
        """The student's own base (adapters off) for a LoRA student of the same checkpoint, else a frozen copy."""
        cfg = self.cfg
        if cfg.mode == "lora" and cfg.teacher.checkpoint is None:
            return self.dit
        src = self.ckpt
        if cfg.teacher.checkpoint:
            try:
                src = read_checkpoint(cfg.teacher.checkpoint)
            except CheckpointError as e:
                raise CheckpointError(f"teacher.checkpoint={cfg.teacher.checkpoint}: {e}") from None
            if "dit" not in src.components:
                raise CheckpointError(f"teacher.checkpoint={cfg.teacher.checkpoint} holds no transformer (it has "
                                      f"{sorted(src.components)})")
        return load_component(src, "dit", dtype=torch.float32, device=self.device).eval().requires_grad_(False)

    def _add_params(self, params: list[nn.Parameter], lr: float, betas: tuple) -> None:
        """Another parameter group in the one optimizer (AdamW skips parameters without gradients, so each
        group only moves on the updates that give it gradients); the LR schedule covers it too."""
        self.opt.add_param_group({"params": params, "lr": lr, "betas": betas, "weight_decay": 0.0})

    def _add_critic(self) -> None:
        c = self.cfg.critic
        inject_lora(self.teacher, LoRAConfig(rank=c.rank, alpha=c.alpha, targets=tuple(c.targets)), name="critic",
                    generator=torch.Generator().manual_seed(self.cfg.seed + 1))
        set_strength(self.teacher, "critic", 0.0)  # at rest: off (on only inside `critic_fn`)
        self.teacher.to(self.device)
        self.critic_params = lora_parameters(self.teacher, "critic")
        for p in self.critic_params:
            p.requires_grad_(True)
        self._add_params(self.critic_params, c.lr, tuple(c.betas))

    def text(self, mb: MicroBatch) -> TextConditioning:
        B = mb.context.shape[0]
        n_ctx, n_mask = self.null
        return TextConditioning(mb.context, mb.context_mask, n_ctx.expand(B, -1, -1), n_mask.expand(B, -1))

    def teacher_fn(self, mb: MicroBatch, guided: bool = True) -> VelocityFn:
        """The frozen teacher (guided as the sampler, or prompt only), without gradients: student and critic off."""
        inner = velocity_fn(self.teacher, self.text(mb), mb.positions, self.teacher_step if guided else None)

        def v(x: Tensor, sigma: Tensor) -> Tensor:
            with adapter_strengths([self.dit, self.teacher], default=0.0, critic=0.0), torch.no_grad():
                return inner(x, sigma)

        return v

    def critic_fn(self, mb: MicroBatch) -> VelocityFn:
        """The critic (the teacher with the critic adapter on, the student's off), with gradients."""
        inner = velocity_fn(self.teacher, self.text(mb), mb.positions)

        def v(x: Tensor, sigma: Tensor) -> Tensor:
            with adapter_strengths([self.dit, self.teacher], default=0.0, critic=1.0):
                return inner(x, sigma)

        return v

    def student_fn(self, model: nn.Module, mb: MicroBatch) -> VelocityFn:
        return lambda x, sigma: model(x, sigma, mb.context, mb.context_mask, mb.positions)

    # -------------------------------------------------------------------------------------------- objectives
    def distill_objective(self, model: nn.Module, mb: MicroBatch) -> Tensor:
        """Per-sample loss (B,) of one micro-batch for kd / guidance / step (DMD has its own step). Tokens of
        a first-frame-conditioned sample (first_frame_p) are clean at sigma 0 for both models and get no loss."""
        cfg = self.cfg
        student = self.student_fn(model, mb)
        if cfg.method == "step":
            return self._step_loss(student, mb)
        s = mb.sigma[:, None, None]
        cond = mb.cond_mask
        x = torch.where(cond[..., None], mb.x0, (1 - s) * mb.x0 + s * mb.noise)
        sigma = torch.where(cond, 0.0, mb.sigma[:, None]) if cond.any() else mb.sigma
        target = self.teacher_fn(mb, guided=cfg.method == "guidance")
        keep = ~cond
        if cfg.feature_weight == 0:
            return output_kd_loss(student(x, sigma), target(x, sigma), keep)
        pairs = cfg.feature_layers
        with block_features(self.dit, [p[0] for p in pairs]) as student_features:
            v_s = student(x, sigma)
        v_t = target(x, sigma)
        with block_features(self.teacher, [p[1] for p in pairs]) as teacher_features:  # prompt-only features
            self.teacher_fn(mb, guided=False)(x, sigma)
        return output_kd_loss(v_s, v_t, keep) + cfg.feature_weight * feature_kd_loss(
            student_features, teacher_features, self.projections)

    def _step_loss(self, student: VelocityFn, mb: MicroBatch) -> Tensor:
        """`step_distillation_loss` of one student step s_a -> s_c per sample (its interval picked by its drawn
        sigma, uniform over the grid's intervals) against the guided teacher's `teacher_substeps` Euler steps."""
        cfg = self.cfg
        n = len(self.grid)
        grid = torch.tensor(self.grid + [0.0], device=mb.x0.device)
        k = (mb.sigma * n).long().clamp(0, n - 1)
        s_a, s_c = grid[k], grid[k + 1]
        if cfg.student.backward_simulation:
            x_a = simulate(self.student_fn(self.dit, mb), mb.noise, self.grid, k)
        else:
            x_a = (1 - s_a.view(-1, 1, 1)) * mb.x0 + s_a.view(-1, 1, 1) * mb.noise
        sub = cfg.student.teacher_substeps or max(1, round(cfg.teacher.steps / n))
        return step_distillation_loss(student, self.teacher_fn(mb, guided=True), x_a, *substeps(s_a, s_c, sub))

    # -------------------------------------------------------------------------------------------- DMD
    def forward_backward(self, step: int) -> dict[str, float]:
        if self.cfg.method != "dmd":
            return super().forward_backward(step)
        return self._dmd_forward_backward(step)

    def _dmd_batch(self, step: int, update: int):
        """The step's captions and positions (one micro-batch: DMD runs in one process) with the noises, the
        re-noising sigmas and the grid points drawn per (step, update, sample), so a resume redraws them."""
        (_, mb), = list(self.micro_batches(step))
        B, T, C = mb.x0.shape
        gens = [step_generator(self.cfg.seed, step, 1000 * (update + 1) + j) for j in range(B)]
        noise = torch.stack([torch.randn(T, C, generator=g) for g in gens]).to(self.device)
        renoise = torch.stack([torch.randn(T, C, generator=g) for g in gens]).to(self.device)
        lo, hi = self.cfg.dmd_sigma
        sigma = torch.tensor([lo + (hi - lo) * float(torch.rand(1, generator=g)) for g in gens], device=self.device)
        k = torch.tensor([int(torch.randint(len(self.grid), (1,), generator=g)) for g in gens], device=self.device)
        return mb, noise, renoise, sigma, k

    def _student_x0(self, mb: MicroBatch, noise: Tensor, k: Tensor) -> Tensor:
        """The student's denoised estimate from its own state at grid point k (per sample)."""
        x = simulate(self.student_fn(self.dit, mb), noise, self.grid, k)
        return denoised(self.student_fn(self.model, mb), x, torch.tensor(self.grid, device=x.device)[k])

    def _dmd_forward_backward(self, step: int) -> dict[str, float]:
        """`critic.updates` critic updates on fresh student samples (each its own optimizer step: the student
        does not move), then the student's DMD (+ regression) gradients for the loop's optimizer step."""
        cfg = self.cfg
        critic_losses = []
        for update in range(cfg.critic.updates):
            mb, noise, renoise, sigma, k = self._dmd_batch(step, update)
            with torch.no_grad():
                x0 = self._student_x0(mb, noise, k)
            self.opt.zero_grad(set_to_none=True)
            loss_c = critic_loss(self.critic_fn(mb), x0, sigma, renoise).mean()
            loss_c.backward()
            grad_norm(self.critic_params, cfg.grad_clip)
            self.opt.step()
            critic_losses.append(float(loss_c.detach()))
        mb, noise, renoise, sigma, k = self._dmd_batch(step, cfg.critic.updates)
        self.opt.zero_grad(set_to_none=True)
        x0 = self._student_x0(mb, noise, k)
        loss = dmd_loss(x0, self.teacher_fn(mb, guided=True), no_grad(self.critic_fn(mb)), sigma, renoise).mean()
        reg = torch.zeros(())
        if cfg.regression_weight > 0:
            reg = self._regression_loss(step)
            loss = loss + cfg.regression_weight * reg
        loss.backward()
        for p in self.critic_params:  # the critic only moves on its own updates
            p.grad = None
        return {"loss": float(loss.detach()), "critic_loss": sum(critic_losses) / len(critic_losses),
                "regression": float(reg.detach())}

    def _regression_loss(self, step: int) -> Tensor:
        """The student's few-step samples of 4 of the fixed noises vs the teacher's samples of them."""
        noise, x0_teacher, ctx, mask = self._regression_pairs()
        g = torch.Generator().manual_seed(self.cfg.seed * 7919 + step)
        idx = torch.randint(noise.shape[0], (min(4, noise.shape[0]),), generator=g)
        student = self.student_fn(self.model, self._text_batch(ctx[idx], mask[idx]))
        return regression_loss(few_step_sample(student, noise[idx], self.grid), x0_teacher[idx]).mean()

    def _text_batch(self, ctx: Tensor, mask: Tensor) -> MicroBatch:
        B = ctx.shape[0]
        bucket = tuple(self.cache.buckets_list[0])
        _, f, h, w = self.cache.latent_shape(bucket)
        T = f * h * w
        zeros = torch.zeros(B, T, self.dit.cfg.in_channels, device=self.device)
        return MicroBatch(x0=zeros, noise=zeros, sigma=torch.zeros(B, device=self.device),
                          cond_mask=torch.zeros(B, T, dtype=torch.bool, device=self.device), context=ctx,
                          context_mask=mask, positions=self.positions(bucket, B))

    def _regression_pairs(self):
        """(noise, teacher sample, context, mask) for `regression_pairs` fixed noises and cached captions:
        the guided teacher at its full step count; computed once and kept in run_dir/regression_pairs.pt."""
        if self._regression is not None:
            return self._regression
        path = self.run_dir / "regression_pairs.pt"
        if path.is_file():
            self._regression = torch.load(path, map_location=self.device)
            return self._regression
        n = self.cfg.regression_pairs
        rows = [self.cache[i % len(self.cache)] for i in range(n)]
        ctx = torch.stack([r["context"] for r in rows]).to(self.device, torch.float32)
        mask = torch.stack([r["mask"] for r in rows]).to(self.device)
        mb = self._text_batch(ctx, mask)
        noise = torch.randn(n, mb.x0.shape[1], self.dit.cfg.in_channels,
                            generator=torch.Generator().manual_seed(self.cfg.seed + 99)).to(self.device)
        x0 = euler(self.teacher_fn(mb, guided=True), noise, linear_quadratic(self.cfg.teacher.steps).tolist())
        self._regression = (noise, x0, ctx, mask)
        atomic_torch_save(tuple(t.cpu() for t in self._regression), path)
        return self._regression

    # -------------------------------------------------------------------------------------------- outputs
    def validate(self) -> Path | None:
        """Validation samples at the student's grid without guidance (what it will be run with)."""
        cfg = self.cfg
        saved = cfg.model
        first = dataclasses.replace(saved.sampling.first_pass, num_inference_steps=None, timesteps=list(self.grid),
                                    guidance_scale=[1.0], stg_scale=[0.0], rescaling_scale=[1.0],
                                    skip_block_list=[[]], guidance_timesteps=None)
        sampling = dataclasses.replace(saved.sampling, first_pass=first)
        v = dataclasses.replace(cfg.validation, steps=None, guidance_scale=None)
        self.cfg = dataclasses.replace(cfg, validation=v, model=dataclasses.replace(saved, sampling=sampling))
        try:
            return super().validate()
        finally:
            self.cfg = cfg

    def export(self, final: bool) -> Path | None:
        extra = self.ckpt.extra  # a full student's checkpoint allows its grid, as the official distilled files
        self.ckpt.extra = {**extra, "allowed_inference_steps": list(self.grid)}
        try:
            path = super().export(final)
        finally:
            self.ckpt.extra = extra
        if path is not None and final:
            with atomic_file(self.run_dir / "student.json", "w") as f:
                f.write(json.dumps({"timesteps": self.grid, "guidance_scale": 1.0, "method": self.cfg.method,
                                    "result": path.name, "teacher_steps": self.cfg.teacher.steps}, indent=2) + "\n")
        return path

    def state_model(self) -> tuple[nn.Module, bool]:
        """The student, and the trainable parts outside it (a separate teacher's critic adapter, feature
        projections); only trainable parameters (frozen weights come from the checkpoints)."""
        parts = {"student": self.dit}
        if self.teacher is not self.dit and self.critic_params:
            parts["teacher"] = self.teacher
        if self.projections is not None:
            parts["projections"] = self.projections
        return nn.ModuleDict(parts), True

    def weights_for_export(self, ema: bool) -> dict[str, Tensor]:
        return {n: t for n, t in super().weights_for_export(ema).items() if ".critic." not in n}


def train(cfg: DistillConfig) -> dict:
    return run_trainer(DistillTrainer, cfg)


def to_config(raw) -> DistillConfig:
    return finetune_to_config(raw, DistillConfig)


def _main() -> None:
    main_for(DistillConfig, "distill", train)


if __name__ == "__main__":
    _main()
