"""Step caching: skip a sampler step's transformer blocks when their result would barely change, reusing the
residual (blocks' output minus their input) of the last step that ran them. Applied from outside the model, for
the 0.9.x `DiT` (one stream) and the LTX-2 `AVTransformer` (video and audio streams); the model files know
nothing of it.

    from ltx.core.step_cache import CachePolicy
    out = pipe(prompt, seed=0, cache=CachePolicy("teacache", threshold=0.1))   # both families' pipelines
    out.cache_stats                                  # {"forwards": 40, "computed": 23, "skipped": 17, ...}

    cache = apply_step_cache(transformer, policy)    # your own sampling loop
    cache.reset(schedules=[sigmas])                  # each video: the sigma schedule(s) it will be sampled over
    ...; cache.stats; cache.remove()                 # remove: the module exactly as before

Kinds (`CachePolicy.kind`):
- "teacache" (Liu et al., "Timestep Embedding Tells: It's Time to Cache for Video Diffusion Model", CVPR 2025):
  before any block runs, the relative L1 change `mean|m - m_prev| / mean|m_prev|` of the first block's
  *modulated input* `m = rms_norm(x) * (1 + scale) + shift` (the self-attention input, AdaLN from the step's
  timestep embedding) since the previous step is added up; while the sum stays under `threshold` every block is
  skipped and the output is `x + R`, R = (last block's output - first block's input) of the last computed step;
  otherwise all blocks run and the sum restarts at 0. Why this indicator: it is what block 0 actually sees
  (timestep and latent together), costs one norm, and is available before any block runs; the latent input
  alone misses the timestep, the timestep embedding alone misses the latent. TeaCache additionally rescales the
  change with a polynomial fitted per model on its output changes; none is fitted for these models, so the
  plain accumulated change is used and the thresholds are on that scale (not comparable with TeaCache's).
- "first_block" (First-Block Cache, ParaAttention / diffusers `FirstBlockCacheConfig`): block 0 always runs;
  when its residual changed by less than `threshold` (relative L1 against the last *computed* step's block-0
  residual) the other blocks are skipped and their cached residual (last block's output - block 1's input) is
  added to block 0's output.
- "none": nothing is skipped; forwards are only counted.

Never skipped: the first `keep_first` and the last `keep_last` steps of each schedule (defaults 1 and 1, as
TeaCache's LTX-Video code). Step 0 has nothing cached and the largest change of all; the last steps turn the
prediction into the output directly (an x0 sampler's last prediction *is* the result, a velocity sampler's last
velocity moves the latent all the way to sigma 0), so a stale residual there lands in the video unsmoothed.

Steps and passes. A step is a sigma the sampler evaluates the model at (the largest per-token sigma of a 0.9.x
forward, the step sigma of an LTX-2 forward; res_2s's midpoint is a step of its own). Guidance runs several
forwards (passes) per step: 0.9.x batches its CFG / STG rows into one forward (one pass, the rows cached together),
LTX-2 runs conditional, unconditional, STG-perturbed and modality-isolated passes one after another. A pass is
identified by (its position among the step's forwards, its signature: token shapes, context shapes, perturbation
masks, enabled streams); each pass has its own cached residuals, so a conditional residual never reaches an
unconditional pass. The first pass of a step decides for the whole step (guidance combines passes of the same
step, so they all skip or all compute); a later pass without a usable cache of its own computes. A sigma higher
than the previous one starts a new run (a new video, a new stage or pass of a multi-scale / two-stage pipeline,
a chained segment): every cached state is dropped and the next schedule of `reset(schedules=...)` applies
(cyclically, so chained segments reuse the pass schedules).

LTX-2 per modality (`per_modality=True`): video and audio decide separately. When one stream runs its blocks and
the other is skipped, the skipped one is passed to each block as a disabled stream (the model's own
`StreamInput.enabled` = False: left untouched, still the context of the A<->V cross-attention) holding
`x_now + (x_i - x_in)` of its last computed step: its hidden state at block i's input as it was then, moved by
how much its input moved since. The exact context would be its state after block i's self- and text-attention
of this step, which skipping does not compute. That needs each stream's per-block states of the last computed
step: num_layers x tokens x width per pass (LTX-2 19B video at 6k tokens in bf16: ~2.4 GB a pass);
`per_modality=False` keeps only the final residuals and makes one decision for both streams (skip only when both
indicators are under the threshold).

Threshold 0 never skips (a change is never negative), and the computed path calls the blocks exactly as the
uncached model does, so the output is bitwise the uncached one. Decisions are made on the host from the
indicators, so the skipped count is as deterministic as the model. For inference: the cached tensors are
detached. Not yet for sequence parallelism: each rank would decide on its own shard of tokens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

KINDS = ("none", "teacache", "first_block")
_SIGMA_TOL = 1e-5  # two forwards at sigmas closer than this belong to the same step


@dataclass
class CachePolicy:
    """What to skip. `threshold` is a relative L1 change (0 = never skip; larger skips more)."""

    kind: str = "none"  # "none" | "teacache" | "first_block"
    threshold: float = 0.0
    keep_first: int = 1  # never skip the first steps of each schedule
    keep_last: int = 1  # ... nor the last ones
    per_modality: bool = True  # LTX-2: video and audio decide separately (see the module docstring)
    max_consecutive: int = 0  # at most this many steps in a row skipped per stream (0 = no limit)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"cache.kind={self.kind!r} is not supported (supported: {', '.join(KINDS)})")
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
            raise ValueError(f"cache.threshold must be a finite number >= 0 (0 = never skip), got {t!r}")
        self.threshold = float(t)
        for name in ("keep_first", "keep_last", "max_consecutive"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"cache.{name} must be an integer >= 0, got {v!r}")
        if self.kind == "teacache" and self.keep_first < 1:
            raise ValueError("cache.keep_first must be >= 1 for teacache (step 0 has nothing to compare with)")
        if not isinstance(self.per_modality, bool):
            raise ValueError(f"cache.per_modality must be true or false, got {self.per_modality!r}")

    @property
    def skips(self) -> bool:
        """Whether this policy can skip anything at all."""
        return self.kind != "none" and self.threshold > 0


# ------------------------------------------------------------------------------------------ the two families


def _modulated(x: Tensor, mods: Tensor, table: Tensor, eps: float) -> Tensor:
    """The self-attention input of a block: rms_norm(x) (1 + scale) + shift, (shift, scale) = rows 0, 1 of the
    block's table + the AdaLN values `mods` (B, 1 or T, rows * D). Both families use this layout; the tests check
    it against what block 0's self-attention receives."""
    B, T, D = x.shape
    ada = table[:2] + mods.reshape(B, mods.shape[1], -1, D)[:, :, :2]  # (B, 1 or T, 2, D)
    return F.rms_norm(x, (D,), eps=eps) * (1 + ada[:, :, 1]) + ada[:, :, 0]


class _DiTFamily:
    """ltx.ltxv DiT: forward(x, sigma, context, context_mask, positions, *, skip_mask, stg_mode); blocks
    (h, mods, context, context_bias, rope, skip, stg_mode) -> h. One stream, "video"."""

    streams = ("video",)

    @staticmethod
    def step_sigma(a: dict) -> float:
        return float(a["sigma"].detach().max())

    @staticmethod
    def present(a: dict) -> tuple[str, ...]:
        return ("video",)

    @staticmethod
    def signature(a: dict) -> tuple:
        skip = a.get("skip_mask")
        return (tuple(a["x"].shape), tuple(a["context"].shape), _fingerprint(skip), str(a.get("stg_mode")))

    @staticmethod
    def hidden(b: dict) -> dict[str, Tensor]:
        return {"video": b["x"]}

    @staticmethod
    def modulated(block: nn.Module, b: dict, name: str) -> Tensor:
        return _modulated(b["x"], b["t"], block.scale_shift_table, block.eps)

    @staticmethod
    def outputs(out: Tensor) -> dict[str, Tensor]:
        return {"video": out}

    @staticmethod
    def pack(b: dict, new: dict[str, Tensor]) -> Tensor:
        return new["video"]

    @staticmethod
    def disable(b: dict, name: str, x: Tensor) -> None:
        raise AssertionError("one stream: never partly skipped")


class _AVFamily:
    """ltx.ltx2 AVTransformer: forward(video, audio, perturb) with StreamInput-like records (x, sigma, context,
    enabled); blocks (v, a, keep) -> (video x, audio x) with _Stream-like records (x, mods, enabled)."""

    streams = ("video", "audio")
    _arg = {"video": "v", "audio": "a"}
    _table = {"video": "scale_shift_table", "audio": "audio_scale_shift_table"}

    @staticmethod
    def step_sigma(a: dict) -> float:
        return max(float(s.sigma.detach().max()) for s in (a["video"], a["audio"]) if s is not None)

    @staticmethod
    def present(a: dict) -> tuple[str, ...]:
        return tuple(n for n in ("video", "audio") if a[n] is not None and a[n].enabled and a[n].x.numel() > 0)

    @staticmethod
    def signature(a: dict) -> tuple:
        def one(s):
            return None if s is None else (tuple(s.x.shape), tuple(s.context.shape), bool(s.enabled))

        p = a.get("perturb")
        return one(a["video"]), one(a["audio"]), None if p is None else _fingerprint(torch.stack(p.masks()))

    @classmethod
    def hidden(cls, b: dict) -> dict[str, Tensor]:
        out = {}
        for name, arg in cls._arg.items():
            s = b[arg]
            if s is not None and s.enabled and s.x.numel() > 0:
                out[name] = s.x
        return out

    @classmethod
    def modulated(cls, block: nn.Module, b: dict, name: str) -> Tensor:
        s = b[cls._arg[name]]
        return _modulated(s.x, s.mods, getattr(block, cls._table[name]), block.eps)

    @staticmethod
    def outputs(out: tuple) -> dict[str, Tensor]:
        return {name: x for name, x in zip(("video", "audio"), out) if x is not None}

    @classmethod
    def pack(cls, b: dict, new: dict[str, Tensor]) -> tuple:
        return tuple(new.get(name, None if b[arg] is None else b[arg].x) for name, arg in cls._arg.items())

    @classmethod
    def disable(cls, b: dict, name: str, x: Tensor) -> None:
        b[cls._arg[name]] = dataclasses.replace(b[cls._arg[name]], x=x, enabled=False)


def _family(transformer: nn.Module):
    params = set(_model_signature(transformer).parameters)
    if {"x", "sigma", "context"} <= params:
        return _DiTFamily
    if {"video", "audio"} <= params:
        return _AVFamily
    raise ValueError(f"apply_step_cache supports the ltx.ltxv DiT and the ltx.ltx2 AVTransformer, not "
                     f"{type(transformer).__name__} (forward parameters {sorted(params)})")


def _model_signature(module: nn.Module) -> inspect.Signature:
    """The signature of the model's own forward (not of a wrapper with *args, **kwargs on the instance, such as
    activation checkpointing's or a counting hook's; a compiled module's original module)."""
    module = getattr(module, "_orig_mod", module)
    return inspect.signature(type(module).forward.__get__(module))


def _caller(function: Callable, signature: inspect.Signature) -> Callable:
    """`function` (of `signature`, or any wrapper of it) called with its arguments by name, passed on as the model
    passes them (positional where the signature has them so)."""
    def call(**arguments):
        bound = inspect.BoundArguments(signature, arguments)
        return function(*bound.args, **bound.kwargs)

    return call


def _fingerprint(t: Tensor | None) -> tuple | None:
    """A hashable summary of a small mask (STG / perturbation rows): its shape and values."""
    if t is None:
        return None
    t = t.detach().to("cpu", torch.float32)
    return tuple(t.shape), tuple(t.flatten().tolist())


def _relative_l1(new: Tensor, old: Tensor) -> float:
    """mean |new - old| / mean |old|, in float32 on the host (inf when old is all zeros)."""
    num = (new.float() - old.float()).abs().mean()
    den = old.float().abs().mean()
    den = float(den)
    return float(num) / den if den > 0 else math.inf


# ------------------------------------------------------------------------------------------------ the state


@dataclass
class _StreamCache:
    """One stream of one pass: what the last computed step left."""

    residual: Tensor | None = None  # output of the last block - input of the first cached block
    offsets: list[Tensor] | None = None  # per cached block: its input - the first cached block's input
    previous: Tensor | None = None  # teacache: last modulated input; first_block: last computed block-0 residual
    accumulated: float = 0.0  # teacache: summed relative change since the last computed step
    consecutive: int = 0  # steps skipped in a row


@dataclass
class _Forward:
    """One transformer forward in progress."""

    state: dict[str, _StreamCache]  # this pass's caches, per stream
    streams: tuple[str, ...]  # the streams this forward computes
    deciding: bool  # the first pass of its step
    protected: bool  # a kept first / last step
    skip: dict[str, bool] = field(default_factory=dict)  # per stream, decided at block 0
    start: dict[str, Tensor] = field(default_factory=dict)  # per stream: input of the first cached block
    next_block: int = 0


class StepCache:
    """The handle `apply_step_cache` returns: `.stats`, `.reset(schedules)`, `.remove()`."""

    def __init__(self, transformer: nn.Module, policy: CachePolicy):
        if not isinstance(policy, CachePolicy):
            raise TypeError(f"policy must be a CachePolicy, got {type(policy).__name__}")
        self.family = _family(transformer)
        blocks = getattr(transformer, "transformer_blocks", None)
        if not isinstance(blocks, nn.ModuleList):
            raise ValueError(f"{type(transformer).__name__} has no transformer_blocks ModuleList to cache")
        if any(getattr(b.forward, "step_cache", None) is not None for b in blocks):
            raise ValueError("this transformer already has a step cache; .remove() it first")
        split = [name for name in ("_sequence_parallel", "_cfg_parallel") if getattr(transformer, name, None)]
        if policy.kind != "none" and split:  # each rank would decide on its own tokens / rows and the ranks diverge
            raise ValueError(f"step caching (cache={policy.kind}) does not combine with parallel=sp yet: each process "
                             "would decide on its own share of the tokens; use cache=none or parallel=none")
        self.transformer, self.policy = transformer, policy
        self.blocks = blocks
        self.first_cached = 1 if policy.kind == "first_block" else 0  # blocks before it always run
        self._signature = _model_signature(transformer)
        self._saved: list[tuple[nn.Module, object]] = []  # (block, its instance `forward` before us or None)
        self._hooks = []
        self.schedules: list[Tensor] = []
        self.reset()
        if policy.kind != "none":
            for i, block in enumerate(blocks):
                self._saved.append((block, block.__dict__.get("forward")))
                block.forward = self._wrap(i, block, block.forward)
        self._hooks.append(transformer.register_forward_pre_hook(self._begin, with_kwargs=True))
        self._hooks.append(transformer.register_forward_hook(self._end, always_call=True))

    # --- public
    def reset(self, schedules: Sequence[Tensor | Sequence[float]] | Tensor | None = None) -> None:
        """A new video: drop every cached state and zero the stats. `schedules`: the sigma schedule of each run
        (sampling loop) the video goes through, in order (one for a one-pass pipeline; runs beyond the list reuse
        it cyclically); None keeps the previous ones."""
        if schedules is not None:
            if isinstance(schedules, Tensor) or (len(schedules) and isinstance(schedules[0], int | float)):
                schedules = [schedules]
            self.schedules = [torch.as_tensor(s, dtype=torch.float64).detach().cpu().flatten() for s in schedules]
            for s in self.schedules:
                if s.numel() < 2:
                    raise ValueError(f"a sigma schedule needs at least 2 values (N steps: N + 1), got {s.tolist()}")
        self._drop_state()
        streams = {n: {"computed": 0, "skipped": 0, "blocks_run": 0, "blocks_total": 0} for n in self.family.streams}
        self._stats = {"forwards": 0, "computed": 0, "skipped": 0, "partial": 0, "steps": 0, **streams}

    def _drop_state(self) -> None:
        self._passes: dict[tuple, dict[str, _StreamCache]] = {}  # (pass index, signature) -> per-stream caches
        self._sigma: float | None = None
        self._run = -1
        self._pass_index = 0
        self._step_skip: dict[str, bool] = {}
        self._forward: _Forward | None = None

    @property
    def stats(self) -> dict:
        """forwards; computed / skipped / partial: forwards with all / none / some streams' blocks run (partial:
        LTX-2 per modality); steps: distinct sampler steps seen; per stream: computed, skipped, blocks_run,
        blocks_total (a first_block skip still runs block 0)."""
        out = {k: dict(v) if isinstance(v, dict) else v for k, v in self._stats.items()}
        if len(self.family.streams) == 1:  # one stream: its counts are the forwards'
            del out["partial"]
            out.update({k: v for k, v in out.pop("video").items() if k.startswith("blocks")})
        return out

    def remove(self) -> None:
        """Undo everything: the blocks' `forward` as before (same objects, same state_dict keys), no hooks, no
        cached tensors. `.stats` stays readable."""
        for block, before in self._saved:
            if before is None:
                block.__dict__.pop("forward", None)
            else:
                block.forward = before
        self._saved.clear()
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        self._drop_state()

    # --- a forward's beginning and end
    def _begin(self, module, args, kwargs) -> None:
        a = self._signature.bind(*args, **kwargs).arguments
        sigma = self.family.step_sigma(a)
        new_step = self._sigma is None or abs(sigma - self._sigma) > _SIGMA_TOL
        if self._sigma is None or sigma > self._sigma + _SIGMA_TOL:  # a new run: nothing carries over
            self._run += 1
            self._passes.clear()
        if new_step:
            self._pass_index, self._step_skip = 0, {}
            self._stats["steps"] += 1
        else:
            self._pass_index += 1
        self._sigma = sigma
        state = self._passes.setdefault((self._pass_index, self.family.signature(a)), {})
        protected = self._protected(sigma) if self.policy.skips else True
        self._forward = _Forward(state, self.family.present(a), deciding=self._pass_index == 0, protected=protected)
        self._stats["forwards"] += 1

    def _end(self, module, args, kwargs_or_output, output=None) -> None:
        f, self._forward = self._forward, None
        if f is None:
            return
        streams = {n: f.skip.get(n, False) for n in f.streams}
        n = len(self.blocks)
        for name, skipped in streams.items():
            s = self._stats[name]
            s["skipped" if skipped else "computed"] += 1
            s["blocks_total"] += n
            s["blocks_run"] += self.first_cached if skipped else n
        values = set(streams.values()) or {False}
        self._stats["skipped" if values == {True} else "computed" if values == {False} else "partial"] += 1

    def _protected(self, sigma: float) -> bool:
        """Whether the step at `sigma` is one of the first keep_first / last keep_last of its run's schedule."""
        if not self.schedules:
            raise ValueError("the step cache needs the sigma schedule to keep the last steps: call "
                             "cache.reset(schedules=[sigmas, ...]) before sampling (pipe(..., cache=...) does)")
        sched = self.schedules[self._run % len(self.schedules)]
        steps = sched.numel() - 1
        index = int((sched[:-1] >= sigma - _SIGMA_TOL).sum()) - 1  # the step whose interval holds sigma
        index = min(max(index, 0), steps - 1)
        return index < self.policy.keep_first or index >= steps - self.policy.keep_last

    # --- the blocks
    def _wrap(self, i: int, block: nn.Module, original: Callable) -> Callable:
        signature = _model_signature(block)
        call = _caller(original, signature)

        def forward(*args, **kwargs):
            f = self._forward
            if f is None:  # called outside a transformer forward
                return original(*args, **kwargs)
            if i != f.next_block:
                raise RuntimeError(f"step cache: block {i} ran out of order (expected block {f.next_block})")
            f.next_block += 1
            b = signature.bind(*args, **kwargs).arguments
            return self._block(i, block, call, b, f)

        forward.step_cache = self
        return forward

    def _block(self, i: int, block: nn.Module, original: Callable, b: dict, f: _Forward):
        """Block i of the forward `f`; `original(**arguments)` runs the block, `b` holds its arguments by name."""
        fam, last = self.family, len(self.blocks) - 1
        hidden = fam.hidden(b)
        for name in hidden:
            f.state.setdefault(name, _StreamCache())
        if i == 0 and self.policy.kind == "teacache":
            self._decide(f, hidden, {n: fam.modulated(block, b, n) for n in hidden} if f.deciding else {})
        if i < self.first_cached:  # first_block: block 0 always runs; its residual decides
            out = original(**b)
            if i == self.first_cached - 1:
                new = fam.outputs(out)
                self._decide(f, hidden, {n: new[n] - hidden[n] for n in hidden} if f.deciding else {})
            return out
        if i == self.first_cached:
            f.start = dict(hidden)
        skipped = [n for n in hidden if f.skip.get(n)]
        if len(skipped) == len(hidden):  # nothing runs: identity, and the cached residual at the end
            new = {n: f.start[n] + f.state[n].residual if i == last else x for n, x in hidden.items()}
            return fam.pack(b, new)
        call = dict(b)
        for n in skipped:  # a stream that keeps its state but is the other's context (see the module docstring)
            fam.disable(call, n, f.start[n] + f.state[n].offsets[i - self.first_cached])
        out = fam.outputs(original(**call))
        record = self.policy.per_modality and len(fam.streams) > 1
        for n, x in hidden.items():
            cache = f.state[n]
            if n in skipped:
                out[n] = f.start[n] + cache.residual if i == last else x
                continue
            if record:
                if i == self.first_cached:
                    cache.offsets = []
                cache.offsets.append((x - f.start[n]).detach())
            if i == last:
                cache.residual = (out[n] - f.start[n]).detach()
        return fam.pack(b, out)

    def _decide(self, f: _Forward, names: Sequence[str], indicator: dict[str, Tensor]) -> None:
        """Skip or compute, per stream, for this forward (and, on a step's first pass, for the whole step)."""
        p = self.policy
        if not f.deciding:  # a later pass follows the step's decision where it has a cache of its own
            f.skip = {n: self._step_skip.get(n, False) and self._usable(f, n) for n in names}
            return
        wants = {}
        for n, m in indicator.items():
            c = f.state[n]
            change = math.inf if c.previous is None or c.previous.shape != m.shape else _relative_l1(m, c.previous)
            if p.kind == "teacache":
                c.previous = m.detach()
                c.accumulated += change
                change = c.accumulated
            limit = p.max_consecutive == 0 or c.consecutive < p.max_consecutive
            wants[n] = not f.protected and change < p.threshold and limit and self._usable(f, n)
        if not p.per_modality:  # one decision for all streams
            wants = dict.fromkeys(wants, all(wants.values()))
        for n, skip in wants.items():
            c = f.state[n]
            c.consecutive = c.consecutive + 1 if skip else 0
            if not skip:
                c.accumulated = 0.0
                if p.kind == "first_block":
                    c.previous = indicator[n].detach()
        f.skip = self._step_skip = wants

    def _usable(self, f: _Forward, name: str) -> bool:
        c = f.state.get(name)
        if c is None or c.residual is None:
            return False
        # a partial skip needs the per-block offsets of the skipped stream
        return not (self.policy.per_modality and len(self.family.streams) > 1) or c.offsets is not None


def apply_step_cache(transformer: nn.Module, policy: CachePolicy) -> StepCache:
    """Cache `transformer`'s blocks (its `transformer_blocks`) as `policy` says; returns the handle. Each block's
    `forward` is replaced on the instance (no wrapper module: parameter names and state_dict keys unchanged) and
    the transformer gets a forward pre-hook and hook; `.remove()` undoes both. Before sampling a video call
    `.reset(schedules=[...])` (a positive threshold needs them to keep the last steps)."""
    return StepCache(transformer, policy)


@contextlib.contextmanager
def cached(transformer: nn.Module, policy: CachePolicy | None,
           schedules: Sequence[Tensor | Sequence[float]]) -> Iterator[StepCache | None]:
    """`apply_step_cache` + `reset(schedules)` for the duration of a `with` block, removed after it (also on
    errors); yields None (and changes nothing) for policy None."""
    if policy is None:
        yield None
        return
    cache = apply_step_cache(transformer, policy)
    try:
        cache.reset(schedules)
        yield cache
    finally:
        cache.remove()  # its stats stay readable
