"""Distillation objectives as functions: a student learns from a frozen teacher (and, for DMD2, a critic).

Conventions as in ltx/core/sampling.py: tokens x (B, T, C); sigma s in [0, 1]; x_s = (1 - s) x0 + s noise; the
transformer predicts the velocity v = noise - x0, so its denoised estimate is x0_hat = x_s - s v and one
Euler step from s to s' is x + (s' - s) v. A "velocity function" is any callable (x, sigma (B,)) -> v; the
helpers below build them from a DiT and its text conditioning, with or without guidance.

Each loss returns per-sample values (B,), as the fine-tuning objectives do (train/finetune.py), so the
trainer sums, logs per sigma bucket and splits batches the same way.

- Output-level knowledge distillation (Luhman & Luhman 2021, "Knowledge distillation in iterative generative
  models", eq. 3 in velocity form): ||v_student(x_s) - v_teacher(x_s)||^2.
- Guidance distillation (Meng et al. 2023, "On distillation of guided diffusion models", stage one, eq. 6):
  the teacher target is the guided velocity the sampler computes (CFG, CFG-star, STG and its rescale, one
  batched call: `ltx.ltxv.guidance.guided_velocity`), so the student needs one unguided pass per step.
  `GuidanceEmbedding` optionally makes the scale an input (Meng et al.'s w-conditioning).
- Feature-level distillation (BK-SDM, Kim et al. 2023, eq. 3): MSE between hidden states of chosen student
  and teacher blocks (`layer_map` student block -> teacher block), through learned linear projections when the
  widths differ (e.g. 13B teacher, 2B student; FitNets, Romero et al. 2015).
- Step distillation (Salimans & Ho 2022, "Progressive distillation", Alg. 2, in velocity / Euler form): one
  student Euler step s_a -> s_c matches the teacher's Euler steps s_a -> s_b -> ... -> s_c (two in the paper);
  the target velocity is (x_c - x_a) / (s_c - s_a).
- Distribution matching (DMD, Yin et al. 2024 eq. 7; DMD2, Yin et al. 2024b): the student's sample x0 is
  re-noised to x_t and moved along x0_fake(x_t) - x0_real(x_t), where the real denoiser is the frozen teacher
  *with* guidance and the fake one a critic trained (`critic_loss`) on the student's own samples; the step is
  normalized by mean |x0 - x0_real| (DMD eq. 8). The student's inputs come from backward simulation on a
  fixed few-point sigma grid (DMD2 sec. 4.5): its own sampler run from noise to a grid point, the state
  inference will see. The GAN-free regulariser is DMD's regression loss (eq. 9): for fixed noises, the
  student's few-step sample regresses the teacher's many-step sample of the same noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ltx.ltxv.guidance import GuidanceStep, TextConditioning, guided_velocity
from ltx.ltxv.transformer import DiT, STGMode

VelocityFn = Callable[[Tensor, Tensor], Tensor]  # (x (B, T, C), sigma (B,)) -> v (B, T, C)


def per_sample_mse(a: Tensor, b: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error per sample (B,), over tokens and channels (only tokens where mask (B, T) is True)."""
    err = (a.float() - b.float()).pow(2).mean(-1)  # (B, T)
    if mask is None:
        return err.mean(-1)
    m = mask.to(err.dtype)
    return (err * m).sum(-1) / m.sum(-1).clamp(min=1)


# ------------------------------------------------------------------------------------------------ velocity fns


def velocity_fn(model: nn.Module, text: TextConditioning, positions: Tensor, step: GuidanceStep | None = None,
                stg_mode: STGMode = STGMode.attention_values) -> VelocityFn:
    """(x, sigma (B,) or per token (B, T)) -> velocity of `model`: unguided (the prompt only) when `step` is
    None or off, else the guided velocity exactly as the sampler computes it (one batched call of B x {1, 2, 3}
    rows)."""
    step = step or GuidanceStep()

    def v(x: Tensor, sigma: Tensor) -> Tensor:
        if not (step.use_cfg or step.use_stg):
            return model(x, sigma, text.context, text.mask, positions)
        sig_tok = sigma[:, None].expand(x.shape[0], x.shape[1]) if sigma.ndim == 1 else sigma
        return guided_velocity(model, x, sig_tok, positions, text, step, stg_mode)[0]

    return v


def denoised(v: VelocityFn, x: Tensor, sigma: Tensor) -> Tensor:
    """x0_hat = x_s - s v(x_s, s)."""
    return x - sigma.view(-1, 1, 1) * v(x, sigma)


def euler(v: VelocityFn, x: Tensor, sigmas: Sequence[float] | Tensor) -> Tensor:
    """Euler steps along `sigmas` (descending; one sigma per row: the same list for every sample)."""
    s = torch.as_tensor(sigmas, dtype=torch.float32, device=x.device)
    for a, b in zip(s[:-1], s[1:]):
        x = x + (b - a) * v(x, a.expand(x.shape[0]))
    return x


# ------------------------------------------------------------------------------------------------ losses


def output_kd_loss(v_student: Tensor, v_teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """Output-level KD (module docstring): per-sample MSE to the teacher's (possibly guided) velocity."""
    return per_sample_mse(v_student, v_teacher.detach(), mask)


def step_distillation_target(teacher: VelocityFn, x_a: Tensor, *sigmas: Tensor) -> Tensor:
    """The velocity whose single Euler step sigmas[0] -> sigmas[-1] lands where the teacher's Euler steps along
    all of `sigmas` land (Salimans & Ho 2022, Alg. 2 in velocity form: two teacher steps s_a -> s_b -> s_c; any
    number here). sigmas: two or more per-sample (B,) tensors, descending."""
    if len(sigmas) < 2:
        raise ValueError(f"step distillation needs at least two sigmas (start and end), got {len(sigmas)}")
    x = x_a
    with torch.no_grad():
        for a, b in zip(sigmas[:-1], sigmas[1:]):
            x = x + (b - a).view(-1, 1, 1) * teacher(x, a)
    return (x - x_a) / (sigmas[-1] - sigmas[0]).view(-1, 1, 1)


def step_distillation_loss(student: VelocityFn, teacher: VelocityFn, x_a: Tensor, *sigmas: Tensor) -> Tensor:
    """Per-sample MSE of the student's velocity at (x_a, sigmas[0]) to `step_distillation_target`."""
    return per_sample_mse(student(x_a, sigmas[0]), step_distillation_target(teacher, x_a, *sigmas))


def substeps(s_a: Tensor, s_c: Tensor, n: int) -> list[Tensor]:
    """n + 1 evenly spaced per-sample sigmas from s_a to s_c (B,) each: the teacher's n steps over a student's one."""
    return [s_a + (s_c - s_a) * i / n for i in range(n)] + [s_c]


def feature_kd_loss(student_features: Sequence[Tensor], teacher_features: Sequence[Tensor],
                    projections: nn.ModuleList | None = None) -> Tensor:
    """Feature-level KD (module docstring): mean over mapped layer pairs of the per-sample MSE between the
    (projected) student features and the teacher features, each (B, T, D_s) / (B, T, D_t)."""
    if len(student_features) != len(teacher_features) or not student_features:
        raise ValueError(f"feature KD needs matched, non-empty feature lists, got {len(student_features)} student "
                         f"and {len(teacher_features)} teacher features")
    total = 0.0
    for i, (s, t) in enumerate(zip(student_features, teacher_features)):
        if projections is not None:
            s = projections[i](s)
        if s.shape != t.shape:
            raise ValueError(f"feature pair {i}: student {tuple(s.shape)} vs teacher {tuple(t.shape)}; give "
                             f"projections when the widths differ")
        total = total + per_sample_mse(s, t.detach())
    return total / len(student_features)


def feature_projections(student_dim: int, teacher_dim: int, n: int) -> nn.ModuleList:
    """Learned linear maps student width -> teacher width, one per mapped layer (identity-free when equal)."""
    if student_dim == teacher_dim:
        return nn.ModuleList(nn.Identity() for _ in range(n))
    return nn.ModuleList(nn.Linear(student_dim, teacher_dim) for _ in range(n))


@contextmanager
def block_features(model: DiT, blocks: Sequence[int]):
    """Record the outputs (B, T, D) of transformer blocks `blocks` during forwards inside the context; yields
    the list, filled in `blocks` order after each forward (cleared at each new forward of block blocks[0])."""
    n = len(model.transformer_blocks)
    bad = [b for b in blocks if not 0 <= b < n]
    if bad:
        raise ValueError(f"feature blocks {bad} do not exist: the model has blocks 0..{n - 1}")
    store: dict[int, Tensor] = {}
    out: list[Tensor] = []
    handles = []

    def hook(i: int):
        def record(module, args, output):
            store[i] = output
            if i == blocks[-1]:
                out[:] = [store[b] for b in blocks]
        return record

    for b in dict.fromkeys(blocks):
        handles.append(model.transformer_blocks[b].register_forward_hook(hook(b)))
    try:
        yield out
    finally:
        for h in handles:
            h.remove()


def dmd_loss(x0: Tensor, real: VelocityFn, fake: VelocityFn, sigma: Tensor, noise: Tensor, *,
             normalize: bool = True) -> Tensor:
    """Distribution matching (DMD eq. 7-8, module docstring). x0 (B, T, C): the student's sample, with grad;
    real / fake: velocity functions of the guided teacher and the critic; sigma (B,), noise like x0.

    The gradient of the returned per-sample loss w.r.t. x0 is (x0_fake(x_t) - x0_real(x_t)) / (w N), with
    w = mean |x0 - x0_real| per sample (1 when normalize=False) and N = T * C (the loss is a mean): gradient
    descent moves the student's sample from where the critic's denoiser points towards where the teacher's
    does."""
    s = sigma.view(-1, 1, 1)
    with torch.no_grad():
        x_t = (1 - s) * x0.detach() + s * noise
        x0_real = x_t - s * real(x_t, sigma)
        x0_fake = x_t - s * fake(x_t, sigma)
        grad = x0_fake - x0_real
        if normalize:
            w = (x0.detach() - x0_real).abs().mean(dim=(1, 2), keepdim=True).clamp(min=1e-6)
            grad = grad / w
        target = (x0.detach() - grad).float()
    return 0.5 * per_sample_mse(x0, target)


def critic_loss(critic: VelocityFn, x0: Tensor, sigma: Tensor, noise: Tensor) -> Tensor:
    """The fake score's denoising (flow-matching) loss on the student's samples x0 (detached), per sample."""
    x0 = x0.detach()
    s = sigma.view(-1, 1, 1)
    return per_sample_mse(critic((1 - s) * x0 + s * noise, sigma), noise - x0)


def regression_loss(x0_student: Tensor, x0_teacher: Tensor) -> Tensor:
    """DMD's regression regulariser (eq. 9) in latent space: the student's few-step sample of a fixed noise
    against the teacher's many-step sample of the same noise."""
    return per_sample_mse(x0_student, x0_teacher.detach())


def simulate(student: VelocityFn, noise: Tensor, grid: Sequence[float], k: Tensor) -> Tensor:
    """Batched backward simulation: row b ends at the student's state of grid point k[b] (Euler steps of the
    student from noise at grid[0] = 1), without gradients; rows are only stepped while j < k[b]."""
    g = torch.as_tensor(list(grid), dtype=torch.float32, device=noise.device)
    k = torch.as_tensor(k, device=noise.device).reshape(-1)
    if bool((k < 0).any()) or bool((k >= len(g)).any()):
        raise ValueError(f"grid indices {k.tolist()} outside the {len(g)}-point grid")
    x = noise
    with torch.no_grad():
        for j in range(int(k.max()) if k.numel() else 0):
            step = x + (g[j + 1] - g[j]) * student(x, g[j].expand(x.shape[0]))
            x = torch.where((j < k).view(-1, 1, 1), step, x)
    return x


def few_step_sample(student: VelocityFn, noise: Tensor, grid: Sequence[float]) -> Tensor:
    """The student's sample of `noise` on its grid (descending, grid[0] = 1, without the final 0): Euler steps
    without gradients down to grid[-1], then the denoised estimate there with gradients (only the last step
    is back-propagated through, as DMD's regression loss trains it)."""
    with torch.no_grad():
        x = euler(student, noise, grid)
    return denoised(student, x, torch.full((x.shape[0],), float(grid[-1]), device=x.device))


# ------------------------------------------------------------------------------------------------ w as input


class GuidanceEmbedding(nn.Module):
    """The guidance scale as an input (Meng et al. 2023): a sinusoidal embedding of w through a zero-initialized
    MLP, added to the transformer's timestep embedding before AdaLN (so a fresh one changes nothing). Applied
    from outside: `add_guidance_embedding(dit)` wraps `dit.adaln_single`; set the scale of the next forwards
    with `guidance_scale(dit, w)` (w: float or (B,)). Global (per-sample) sigma only."""

    def __init__(self, adaln: nn.Module, dim: int, freq_dim: int = 256):
        super().__init__()
        self.adaln, self.freq_dim = adaln, freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)
        self.w: Tensor | None = None

    def forward(self, t: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        embedded = self.adaln.emb.timestep_embedder(t, dtype)  # (N, D)
        if self.w is not None:
            w = self.w.to(t.device).float().reshape(-1)
            if w.numel() not in (1, embedded.shape[0]):
                raise ValueError(f"{w.numel()} guidance scales for {embedded.shape[0]} timestep rows: a per-sample "
                                 f"scale needs one (global) sigma per sample")
            w = w.expand(embedded.shape[0])
            half = self.freq_dim // 2
            freqs = torch.exp(-torch.log(torch.tensor(10_000.0)) * torch.arange(half, device=t.device) / half)
            arg = (w * 1000.0)[:, None] * freqs[None]
            embedded = embedded + self.mlp(torch.cat([arg.cos(), arg.sin()], -1).to(embedded.dtype))
        return self.adaln.linear(F.silu(embedded)), embedded


def add_guidance_embedding(dit: DiT) -> GuidanceEmbedding:
    if isinstance(dit.adaln_single, GuidanceEmbedding):
        return dit.adaln_single
    module = GuidanceEmbedding(dit.adaln_single, dit.cfg.dim).to(next(dit.parameters()).device)
    dit.adaln_single = module
    return module


@contextmanager
def guidance_scale(dit: DiT, w: float | Tensor):
    module = dit.adaln_single
    if not isinstance(module, GuidanceEmbedding):
        raise ValueError("this transformer takes no guidance scale input; call add_guidance_embedding(dit) first")
    module.w = torch.as_tensor(w, dtype=torch.float32)
    try:
        yield
    finally:
        module.w = None
