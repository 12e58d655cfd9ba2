"""One video over several processes (torch.distributed), applied from outside the model: sequence parallelism
for both transformers, the guidance passes split across ranks, and the tiled VAE decode spread over ranks.

`apply_sequence_parallel(transformer, group, mode)`: the transformer keeps its signature: every rank passes the
same full inputs and gets the same full output. Inside, a forward pre-hook pads each token stream to a multiple
of the group size N and keeps this rank's contiguous slice, a forward hook all-gathers the output slices and drops
the padding, and each attention that mixes tokens has its `attend` replaced (an instance attribute; `.remove()`
deletes it) by a distributed one. Everything else in both families is per token, so it runs on the slice as is:
- 0.9.x DiT: patchify_proj, AdaLN-single (global or per-token sigma; per-token values are embedded per unique
  value then gathered per token), RoPE tables from per-token positions, RMSNorm, the text cross-attention (its
  keys are the replicated prompt: local), the MLP, STG (per row), the LayerNorm head and proj_out.
- LTX-2: the same per stream, plus the 2.3 per-head gates, the A<->V AdaLN (from the step sigma, per row).
Attentions that are distributed (query stream, key stream): 0.9.x attn1 (video, video); LTX-2 attn1 (video, video),
audio_attn1 (audio, audio), audio_to_video_attn (video, audio), video_to_audio_attn (audio, video). The audio stream
is sharded like the video one (padded when shorter than N), so the A<->V attentions see a sharded query stream
and a sharded key stream, which both modes handle the same way as self-attention.

Modes:
- "ulysses" (DeepSpeed-Ulysses): an all-to-all turns (B, T/N, H, Dh) sequence shards into (B, T, H/N, Dh) head
  shards, each rank runs the ordinary attention (its backend: sdpa / flash) over all tokens for its heads, and an
  all-to-all turns the result back. A self-attention sends q, k, v stacked in one all-to-all; a cross-stream one
  sends q in one and k, v stacked in another. Needs H divisible by N (refused in one line otherwise).
- "ring": q stays; the (k, v) blocks travel around the ring (batch_isend_irecv, the next block in flight while
  this one is computed) and the per-block results are merged with their log-sum-exp (online softmax). Any N;
  exact up to fp rounding (the block kernel is written out in fp32, not a fused kernel: slower than Ulysses'
  flash / SDPA).
Padding tokens are dropped from queries and keys before attention (never masked), so they cannot leak into real
tokens. The LTX-2 self-attention mask (B, T, T) is not sharded: every rank holds it whole (it holds all inputs);
Ulysses uses all of it, ring its own query rows and each key block's columns. Forward only (inference).

`apply_cfg_parallel(transformer, group)`: the batch rows of each call (0.9.x: the CFG / STG rows of one forward;
LTX-2: the guidance passes batched with `batch_passes=True`) are divided among the ranks and all-gathered.
`parallel_groups(cfg)` builds the two groups to use both at once (world = cfg x sp).

`apply_tile_parallel(vae, group)` + `tile_parallel_decode(vae, decode)`: a tiled decode runs once with a stub
decoder that records the tiles (and restores the global RNG), the tiles are decoded round-robin across ranks and
broadcast, then the decode runs again replaying them: the result is bitwise the single-process tiled decode.

Usage (torchrun --nproc_per_node N script.py):

    dist = ltx.core.parallel.init_distributed()
    pipe = ltx.load_pipeline(device=dist.device)
    sp = apply_sequence_parallel(pipe.dit)      # LTX-2: pipe.modules["transformer"]
    video = pipe(prompt, seed=0)                # on every rank; every rank gets the video
    sp.remove()
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ltx.core.attention import attention
from ltx.core.parallel import Dist, init_distributed

Mode = Literal["ulysses", "ring"]
MODES = ("ulysses", "ring")

# attention modules (attribute of each block) -> (query stream, key stream) they attend across
_DIT_ROLES = {"attn1": ("video", "video")}
_AV_ROLES = {"attn1": ("video", "video"), "audio_attn1": ("audio", "audio"),
             "audio_to_video_attn": ("video", "audio"), "video_to_audio_attn": ("audio", "video")}


def _family(model: nn.Module) -> str:
    """"av" (LTX-2 AVTransformer) or "dit" (0.9.x DiT), recognised by their modules (the core imports neither)."""
    if not isinstance(getattr(model, "transformer_blocks", None), nn.ModuleList):
        raise ValueError(f"{type(model).__name__} has no transformer_blocks: give the 0.9.x DiT or the LTX-2 "
                         "AVTransformer")
    if hasattr(model, "audio_patchify_proj"):
        return "av"
    if hasattr(model, "patchify_proj"):
        return "dit"
    raise ValueError(f"{type(model).__name__} is neither the 0.9.x DiT nor the LTX-2 AVTransformer")


def _group_info(group) -> tuple[int, int]:
    if not dist.is_initialized():
        raise ValueError("no process group: call ltx.core.parallel.init_distributed() under torchrun first")
    return dist.get_rank(group), dist.get_world_size(group)


def _global_rank(group, rank: int) -> int:
    return rank if group is None else dist.get_global_rank(group, rank)


# ------------------------------------------------------------------------------------------------ token shards


@dataclass(frozen=True)
class Span:
    """How one token stream of `length` real tokens is split over `size` ranks.

    Rank r holds the real tokens [r * base, r * base + valid(r)) at its first local positions, then padding up
    to `per_rank` local tokens (the last ranks pad to `base`; `extra` slots more on every rank carry what the
    DiT's per-token AdaLN needs, see `SequenceParallel._shard_inputs`). Gathered in rank order, the sequence
    has `padded` = size * per_rank slots, of which `real_index` are the real tokens in order."""

    length: int
    size: int
    extra: int = 0

    @property
    def base(self) -> int:
        return -(-self.length // self.size)

    @property
    def per_rank(self) -> int:
        return self.base + self.extra

    @property
    def padded(self) -> int:
        return self.per_rank * self.size

    def valid(self, rank: int) -> int:
        return max(0, min(self.base, self.length - rank * self.base))

    @property
    def is_prefix(self) -> bool:
        """The real tokens are the first `length` gathered slots (only the end is padded)."""
        return self.extra == 0

    def real_index(self, device: torch.device) -> Tensor:
        return torch.cat([torch.arange(r * self.per_rank, r * self.per_rank + self.valid(r), device=device)
                          for r in range(self.size)])


def _shard(x: Tensor, dim: int, span: Span, rank: int) -> Tensor:
    """This rank's real tokens along `dim`, padded to `per_rank` by repeating the stream's last token (finite
    values; padding never reaches a real token: it is dropped before attention and from the outputs)."""
    mine = x.narrow(dim, min(rank * span.base, x.shape[dim]), span.valid(rank))  # may be empty (T < N)
    pad = span.per_rank - mine.shape[dim]
    if pad == 0:
        return mine
    reps = [1] * x.ndim
    reps[dim] = pad
    return torch.cat([mine, x.narrow(dim, x.shape[dim] - 1, 1).repeat(reps)], dim)


def _gather(x: Tensor, dim: int, span: Span, group) -> Tensor:
    """All ranks' real tokens along `dim`, concatenated in rank order."""
    parts = [torch.empty_like(x) for _ in range(span.size)]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat([p.narrow(dim, 0, span.valid(r)) for r, p in enumerate(parts)], dim)


def _per_token(t: Tensor, length: int) -> bool:
    # (B, T, ...) per-token values (sigma / timesteps) vs (B,) or (B, 1) per-row ones
    return t.ndim >= 2 and t.shape[1] == length and length > 1


# ------------------------------------------------------------------------------------------------ Ulysses


def _seq_to_heads(x: Tensor, n: int, group) -> Tensor:
    """(..., T/N, H, Dh) sequence shard -> (..., T, H/N, Dh) head shard (one all-to-all)."""
    *lead, t, h, d = x.shape
    send = x.reshape(*lead, t, n, h // n, d).movedim(-3, 0).contiguous()  # chunk r: the heads rank r will own
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)  # recv[r]: rank r's tokens of my heads
    return recv.movedim(0, -4).reshape(*lead, n * t, h // n, d)


def _heads_to_seq(x: Tensor, n: int, group) -> Tensor:
    """(B, T, H/N, Dh) head shard -> (B, T/N, H, Dh) sequence shard (the inverse all-to-all)."""
    *lead, nt, hn, d = x.shape
    send = x.reshape(*lead, n, nt // n, hn, d).movedim(-4, 0).contiguous()  # chunk r: rank r's tokens
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)  # recv[r]: my tokens of rank r's heads
    return recv.movedim(0, -3).reshape(*lead, nt // n, n * hn, d)


def _real(x: Tensor, span: Span) -> Tensor:
    """The real tokens of a gathered (B, padded, ...) sequence, in order."""
    if span.is_prefix:
        return x[:, : span.length]
    return x.index_select(1, span.real_index(x.device))


def _ulysses(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, qs: Span, kv: Span, same: bool, group,
             backend: str) -> Tensor:
    rank, n = dist.get_rank(group), dist.get_world_size(group)
    if same:  # self-attention: q, k, v in one all-to-all
        q, k, v = _seq_to_heads(torch.stack([q, k, v]), n, group).unbind(0)
    else:
        q = _seq_to_heads(q, n, group)
        k, v = _seq_to_heads(torch.stack([k, v]), n, group).unbind(0)
    # padding is dropped from queries and keys, not masked: the kernel then sees the single-process shapes (less
    # its heads), which keeps the result bitwise (a longer query axis changes the CPU kernel's blocking)
    q, k, v = _real(q, qs), _real(k, kv), _real(v, kv)
    if bias is not None:  # the mask is given unsharded: (B, 1 or H, Tq or 1, Tk)
        if bias.shape[1] > 1:  # a per-head bias: this rank's heads
            h = q.shape[2]
            bias = bias[:, rank * h : (rank + 1) * h]
    out = attention(q, k, v, bias, backend)  # (B, Tq, H/N, Dh)
    if qs.is_prefix:
        out = F.pad(out, (0, 0, 0, 0, 0, qs.padded - qs.length))
    else:
        out = out.new_zeros(out.shape[0], qs.padded, *out.shape[2:]).index_copy_(1, qs.real_index(out.device), out)
    return _heads_to_seq(out, n, group)


# ------------------------------------------------------------------------------------------------ ring


def _block_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """Softmax attention of one key block in fp32: (out (B, Tq, H, Dh), log-sum-exp (B, Tq, H)).

    Queries in chunks so the (B, H, chunk, S) scores stay under ~2^26 elements."""
    B, Tq, H, d = q.shape
    S = k.shape[1]
    kf, vf = k.float(), v.float()
    chunk = max(1, (1 << 26) // max(1, B * H * S))
    outs, lses = [], []
    for i in range(0, Tq, chunk):
        qc = q[:, i : i + chunk].float()
        scores = torch.einsum("bthd,bshd->bhts", qc, kf) * d**-0.5
        if bias is not None:
            b = bias if bias.shape[2] == 1 else bias[:, :, i : i + chunk]
            scores = scores + b.float()
        lse = torch.logsumexp(scores, dim=-1)  # (B, H, chunk)
        outs.append(torch.einsum("bhts,bshd->bthd", torch.exp(scores - lse[..., None]), vf))
        lses.append(lse.transpose(1, 2))
    return torch.cat(outs, 1), torch.cat(lses, 1)


def _ring(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, qs: Span, kv: Span, group) -> Tensor:
    rank, n = dist.get_rank(group), dist.get_world_size(group)
    if bias is not None and bias.shape[2] > 1:  # this rank's query rows of the replicated bias
        bias = bias[:, :, rank * qs.base : rank * qs.base + qs.valid(rank)]
        bias = F.pad(bias, (0, 0, 0, qs.per_rank - bias.shape[2]))  # rows for this rank's padded queries
    block = torch.stack([k, v]).contiguous()  # (2, B, S/N, H, Dh): what travels
    nxt, prv = _global_rank(group, (rank + 1) % n), _global_rank(group, (rank - 1) % n)
    out = lse = None
    for step in range(n):
        pending, incoming = [], None
        if step < n - 1:  # send this block on while computing with it
            incoming = torch.empty_like(block)
            pending = dist.batch_isend_irecv([dist.P2POp(dist.isend, block, nxt, group),
                                              dist.P2POp(dist.irecv, incoming, prv, group)])
        owner = (rank - step) % n
        valid = kv.valid(owner)
        if valid > 0:
            b = None if bias is None else bias[..., owner * kv.base : owner * kv.base + valid]
            o, l = _block_attention(q, block[0][:, :valid], block[1][:, :valid], b)
            if out is None:
                out, lse = o, l
            else:  # online softmax: rescale both partial results to the merged log-sum-exp
                merged = torch.logaddexp(lse, l)
                out = out * torch.exp(lse - merged)[..., None] + o * torch.exp(l - merged)[..., None]
                lse = merged
        for work in pending:
            work.wait()
        if incoming is not None:
            block = incoming
    return out.to(q.dtype)


# ------------------------------------------------------------------------------------------------ the wrapper


class SequenceParallel:
    """Handle of `apply_sequence_parallel`; `.remove()` restores the transformer exactly."""

    def __init__(self, transformer: nn.Module, group, mode: str):
        if mode not in MODES:
            raise ValueError(f"unknown sequence parallel mode {mode!r}; valid: {MODES}")
        if getattr(transformer, "_sequence_parallel", None) is not None:
            raise ValueError("sequence parallelism is already applied to this transformer; .remove() it first")
        self.family = _family(transformer)
        self.transformer, self.group, self.mode = transformer, group, mode
        self.rank, self.size = _group_info(group)
        roles = _AV_ROLES if self.family == "av" else _DIT_ROLES
        self.modules = [(getattr(block, name), role) for block in transformer.transformer_blocks
                        for name, role in roles.items()]
        if mode == "ulysses":
            for module, _ in self.modules:
                if module.heads % self.size:
                    ok = [d for d in range(2, module.heads + 1) if module.heads % d == 0]
                    raise ValueError(f"sequence parallel 'ulysses' splits the {module.heads} attention heads over "
                                     f"{self.size} processes; use {ok} processes or parallel_mode=ring")
        self.spans: dict[str, Span | None] | None = None  # set for the duration of one forward
        self.signature = inspect.signature(transformer.forward)
        for module, role in self.modules:
            module.attend = self._distributed_attend(module, role)
        self.hooks = [transformer.register_forward_pre_hook(self._shard_inputs, with_kwargs=True),
                      transformer.register_forward_hook(self._gather_outputs)]
        transformer._sequence_parallel = self

    def remove(self) -> None:
        for hook in self.hooks:
            hook.remove()
        for module, _ in self.modules:
            module.__dict__.pop("attend", None)
        self.transformer.__dict__.pop("_sequence_parallel", None)
        self.hooks, self.modules = [], []

    # --- attention
    def _distributed_attend(self, module: nn.Module, role: tuple[str, str]) -> Callable:
        local = type(module).attend.__get__(module)

        def attend(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None) -> Tensor:
            spans = self.spans
            qs, kv = (None, None) if spans is None else (spans[role[0]], spans[role[1]])
            if qs is None or kv is None:  # outside a sharded forward (or an empty stream): as before
                return local(q, k, v, bias)
            B, T, inner = q.shape
            h = module.heads
            q4, k4, v4 = (t.reshape(B, t.shape[1], h, inner // h) for t in (q, k, v))
            if bias is not None and bias.shape[-1] != kv.length:
                raise ValueError(f"sequence parallel: an attention bias over {bias.shape[-1]} keys, expected "
                                 f"{kv.length}")
            if self.mode == "ulysses":
                out = _ulysses(q4, k4, v4, bias, qs, kv, role[0] == role[1], self.group, module.attention_backend)
            else:
                out = _ring(q4, k4, v4, bias, qs, kv, self.group)
            return out.reshape(B, T, inner)

        return attend

    # --- inputs / outputs
    def _span(self, length: int, extra: int = 0) -> Span | None:
        return Span(length, self.size, extra) if length > 0 else None

    def _shard_stream(self, s, span: Span | None):
        """A sharded copy of an LTX-2 StreamInput: x, timesteps, positions (the self-attention mask stays whole)."""
        if s is None or span is None:
            return s
        changes = dict(x=_shard(s.x, 1, span, self.rank), positions=_shard(s.positions, 2, span, self.rank))
        if _per_token(s.timesteps, span.length):
            changes["timesteps"] = _shard(s.timesteps, 1, span, self.rank)
        return dataclasses.replace(s, **changes)

    def _shard_inputs(self, module, args, kwargs):
        bound = self.signature.bind(*args, **kwargs)
        a = bound.arguments
        if self.family == "dit":
            length, sigma = a["x"].shape[1], a["sigma"]
            per_token = _per_token(sigma, length)
            # The DiT embeds each distinct per-token sigma once (torch.unique over the whole (B, T) tensor), so a
            # shard missing some value would run the embedding MLP on fewer rows: another GEMM shape (one row is
            # a GEMV), other rounding (~1e-7, grown to ~1e-6 by the blocks). One extra padding slot per distinct
            # value on every rank, holding that value, gives every rank the single-process set: bitwise.
            values = torch.unique(sigma) if per_token else None
            extra = len(values) if values is not None and len(values) > 1 else 0
            span = self._span(length, extra)
            self.spans = {"video": span}
            if span is not None:
                if per_token:
                    local = _shard(sigma.reshape(sigma.shape[0], length), 1, span, self.rank).clone()
                    if extra:
                        local[:, span.base : span.base + extra] = values
                    a["sigma"] = local
                a["x"] = _shard(a["x"], 1, span, self.rank)
                a["positions"] = _shard(a["positions"], 2, span, self.rank)
        else:
            video, audio = a.get("video"), a.get("audio")
            self.spans = {name: None if s is None else self._span(s.x.shape[1])
                          for name, s in (("video", video), ("audio", audio))}
            a["video"] = self._shard_stream(video, self.spans["video"])
            a["audio"] = self._shard_stream(audio, self.spans["audio"])
        return (), dict(a)

    def _gather_outputs(self, module, args, output):
        spans, self.spans = self.spans, None
        if self.family == "dit":
            return output if spans["video"] is None else _gather(output, 1, spans["video"], self.group)
        return tuple(o if o is None or span is None else _gather(o, 1, span, self.group)
                     for o, span in zip(output, (spans["video"], spans["audio"])))


def apply_sequence_parallel(transformer: nn.Module, group=None, mode: Mode = "ulysses") -> SequenceParallel:
    """Shard the token sequence of every forward of `transformer` (0.9.x DiT or LTX-2 AVTransformer) over the
    ranks of `group` (None = all). Same full inputs and outputs on every rank; see the module docstring."""
    return SequenceParallel(transformer, group, mode)


# ------------------------------------------------------------------------------------------------ CFG / passes


def _rows(t, dim: int, index: Tensor):
    return None if t is None else t.index_select(dim, index.to(t.device))


class CfgParallel:
    """Handle of `apply_cfg_parallel`; `.remove()` restores the transformer exactly."""

    def __init__(self, transformer: nn.Module, group):
        self.family = _family(transformer)
        self.transformer, self.group = transformer, group
        self.rank, self.size = _group_info(group)
        self.signature = inspect.signature(transformer.forward)
        self.batch: int | None = None
        self.hooks = [transformer.register_forward_pre_hook(self._split_rows, with_kwargs=True),
                      transformer.register_forward_hook(self._gather_rows)]
        transformer._cfg_parallel = self  # a marker (as _sequence_parallel) for what must not combine with it

    def remove(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks = []
        self.transformer.__dict__.pop("_cfg_parallel", None)

    def _index(self, batch: int) -> Tensor:
        # ceil(B / N) rows per rank; a rank past the end repeats the last row (same shapes for all_gather)
        per = -(-batch // self.size)
        return torch.tensor([min(i, batch - 1) for i in range(self.rank * per, (self.rank + 1) * per)])

    def _split_stream(self, s, index: Tensor):
        if s is None:
            return None
        batch = s.x.shape[0]
        sigma = s.sigma if s.sigma.numel() != batch or batch == 1 else _rows(s.sigma.reshape(-1), 0, index)
        return dataclasses.replace(
            s, x=_rows(s.x, 0, index), timesteps=_rows(s.timesteps, 0, index), sigma=sigma,
            positions=_rows(s.positions, 0, index), context=_rows(s.context, 0, index),
            context_mask=_rows(s.context_mask, 0, index), attention_mask=_rows(s.attention_mask, 0, index))

    def _split_rows(self, module, args, kwargs):
        a = self.signature.bind(*args, **kwargs).arguments
        if self.family == "dit":
            self.batch = a["x"].shape[0]
            index = self._index(self.batch)
            for name in ("x", "context", "context_mask", "positions"):
                a[name] = _rows(a.get(name), 0, index)
            if a["sigma"].ndim >= 1 and a["sigma"].shape[0] == self.batch:
                a["sigma"] = _rows(a["sigma"], 0, index)
            a["skip_mask"] = _rows(a.get("skip_mask"), 1, index)  # (num_layers, B)
        else:
            first = a.get("video") or a.get("audio")
            self.batch = first.x.shape[0]
            index = self._index(self.batch)
            a["video"], a["audio"] = self._split_stream(a.get("video"), index), self._split_stream(a.get("audio"),
                                                                                                     index)
            perturb = a.get("perturb")
            if perturb is not None:  # (num_layers, B) masks
                a["perturb"] = dataclasses.replace(perturb, **{f.name: _rows(getattr(perturb, f.name), 1, index)
                                                               for f in dataclasses.fields(perturb)})
        return (), dict(a)

    def _gather_one(self, x: Tensor) -> Tensor:
        parts = [torch.empty_like(x) for _ in range(self.size)]
        dist.all_gather(parts, x.contiguous(), group=self.group)
        per = x.shape[0]
        return torch.cat([p[: max(0, min(per, self.batch - r * per))] for r, p in enumerate(parts)])

    def _gather_rows(self, module, args, output):
        if isinstance(output, Tensor):
            return self._gather_one(output)
        return tuple(None if o is None else self._gather_one(o) for o in output)


def apply_cfg_parallel(transformer: nn.Module, group=None) -> CfgParallel:
    """Divide the batch rows of every forward (CFG / STG / guidance passes) among the ranks of `group` and
    all-gather the outputs. LTX-2's passes are rows only with `batch_passes=True` (else each call has B rows)."""
    return CfgParallel(transformer, group)


@dataclass
class ParallelGroups:
    """This rank's groups for world = cfg x sp: `sp` shards tokens (consecutive ranks), `cfg` splits rows."""

    sp: object | None
    cfg: object | None
    sp_size: int
    cfg_size: int


def parallel_groups(cfg_size: int = 1) -> ParallelGroups:
    """Split the world into `cfg_size` groups of consecutive ranks for sequence parallelism, and the groups of
    ranks at the same position in each for the guidance rows. Every rank must call it (collective)."""
    rank, world = _group_info(None)
    if cfg_size < 1 or world % cfg_size:
        raise ValueError(f"guidance parallelism over {cfg_size} groups needs a world size divisible by it; world "
                         f"size is {world} (use parallel_cfg=false, or a process count that is a multiple of "
                         f"{max(cfg_size, 1)})")
    sp_size = world // cfg_size
    if cfg_size == 1:
        return ParallelGroups(None, None, sp_size, 1)
    mine_sp = mine_cfg = None
    for c in range(cfg_size):  # new_group is collective: every rank creates every group, in the same order
        g = dist.new_group([c * sp_size + s for s in range(sp_size)])
        if rank // sp_size == c:
            mine_sp = g
    for s in range(sp_size):
        g = dist.new_group([c * sp_size + s for c in range(cfg_size)])
        if rank % sp_size == s:
            mine_cfg = g
    return ParallelGroups(mine_sp, mine_cfg, sp_size, cfg_size)


# ------------------------------------------------------------------------------------------------ VAE tiles


class TileParallel:
    """Marks `vae` for `tile_parallel_decode` (a plain attribute, as `attention_backend`); `.remove()` unmarks."""

    def __init__(self, vae: nn.Module, group):
        if any(getattr(m, "inject_noise", False) for m in vae.decoder.modules()):
            raise ValueError("tile-parallel decode: this VAE's decoder injects noise tile by tile (0.9.1), which "
                             "depends on the order of the tiles; decode on one process (parallel_vae=false)")
        _group_info(group)
        self.vae, self.group = vae, group
        vae.tile_parallel = self

    def remove(self) -> None:
        self.vae.__dict__.pop("tile_parallel", None)


def apply_tile_parallel(vae: nn.Module, group=None) -> TileParallel:
    return TileParallel(vae, group)


def _decoded_shape(vae: nn.Module, z: Tensor) -> tuple[int, ...]:
    # a causal video VAE decoder: (B, C, f, h, w) -> (B, out_channels, tf (f - 1) + 1, sf h, sf w)
    cfg = vae.cfg
    B, _, f, h, w = z.shape
    return (B, cfg.out_channels, cfg.temporal_factor * (f - 1) + 1, cfg.spatial_factor * h, cfg.spatial_factor * w)


def tile_parallel_decode(vae: nn.Module, decode: Callable[[], Tensor]) -> Tensor:
    """`decode()` (a tiled decode that calls `vae.decoder` once per tile), with the tiles spread over the ranks
    when `apply_tile_parallel(vae)` marked the VAE, else just `decode()`. Bitwise the single-process result.

    Three steps: `decode()` with a stub decoder that records each tile's input and returns zeros (the global RNG
    state restored afterwards, so the real run draws the same decode noise); tile i decoded on rank i mod N and
    broadcast to all; `decode()` again with a stub that hands out the decoded tiles in order (each input checked
    against the recorded one). Every rank holds all decoded tiles at once (about the video's size)."""
    marker: TileParallel | None = getattr(vae, "tile_parallel", None)
    if marker is None:
        return decode()
    decoder, group = vae.decoder, marker.group
    rank, n = _group_info(group)
    calls: list[tuple[Tensor, tuple, dict]] = []

    def record(z: Tensor, *args, **kwargs) -> Tensor:
        calls.append((z, args, kwargs))
        return z.new_zeros(_decoded_shape(vae, z))

    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    decoder.forward = record
    try:
        with torch.random.fork_rng(devices=devices):
            decode()
    finally:
        del decoder.forward
    tiles = []
    for i, (z, args, kwargs) in enumerate(calls):
        owner = i % n
        tile = decoder(z, *args, **kwargs).contiguous() if owner == rank else z.new_empty(_decoded_shape(vae, z))
        tiles.append(tile)
    for i, tile in enumerate(tiles):
        dist.broadcast(tile, src=_global_rank(group, i % n), group=group)
    replay = iter(zip(calls, tiles))

    def hand_out(z: Tensor, *args, **kwargs) -> Tensor:
        (recorded, _, _), tile = next(replay, ((None, None, None), None))
        if recorded is None or recorded.shape != z.shape or not torch.equal(recorded, z):
            raise ValueError("tile-parallel decode: the decode asked for other tiles the second time (it must be "
                             "deterministic given the global RNG)")
        return tile

    decoder.forward = hand_out
    try:
        return decode()
    finally:
        del decoder.forward


def parallel_summary(groups: ParallelGroups, mode: str) -> str:
    """One line for logs: how the world is divided."""
    return (f"parallel: {groups.sp_size * groups.cfg_size} processes = {groups.cfg_size} guidance group(s) x "
            f"{groups.sp_size} sequence shard(s) ({mode})")



# ------------------------------------------------------------------------------------------------ one call


@dataclass
class Parallelized:
    """What `parallelize_inference` applied; `.remove()` undoes all of it."""

    groups: ParallelGroups
    handles: list

    def remove(self) -> None:
        for h in reversed(self.handles):
            h.remove()
        self.handles = []


def parallelize_inference(transformer: nn.Module, vae: nn.Module | None = None, *, mode: Mode = "ulysses",
                          cfg: bool = False) -> Parallelized:
    """Everything the apps apply for `parallel=sp` (collective: every rank calls it): sequence parallelism over
    all ranks, or with `cfg` the guidance rows over 2 groups and sequence parallelism inside each (world must be
    even then); the tiled decode of `vae` spread over all ranks (None: decode as before)."""
    groups = parallel_groups(2 if cfg else 1)
    handles = []
    if groups.sp_size > 1:
        handles.append(apply_sequence_parallel(transformer, groups.sp, mode))
    if groups.cfg_size > 1:
        handles.append(apply_cfg_parallel(transformer, groups.cfg))
    if vae is not None:
        handles.append(apply_tile_parallel(vae))
    return Parallelized(groups, handles)


def start_parallel(transformer: nn.Module, vae: nn.Module | None = None, *, mode: Mode = "ulysses",
                   cfg: bool = False) -> Dist:
    """The apps' `parallel=sp`: join the torchrun process group (`init_distributed`) and `parallelize_inference`.
    Returns where this process sits; a single process (no torchrun) gets a note and nothing applied."""
    world = init_distributed()
    if not world.enabled:
        print("note: parallel=sp in a single process does nothing; run under torchrun --nproc_per_node N")
        return world
    done = parallelize_inference(transformer, vae, mode=mode, cfg=cfg)
    if world.is_main:
        print(parallel_summary(done.groups, mode))
    return world
