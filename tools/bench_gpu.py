#!/usr/bin/env python
"""One GPU benchmark for both families: ours against the reference implementations on the same card, in one run.

    python tools/bench_gpu.py --out bench_gpu.json            # full: ~8 min on one H100 (time-boxed: --budget-s 450)
    python tools/bench_gpu.py --quick --out bench_gpu.json    # ~4 min (6,144 and 24,576 tokens, 3 reps, budget 210 s)
    python tools/bench_gpu.py --dry-run --out /tmp/b.json     # CPU, every case at tiny sizes, fp32 (~40 s of CPU)
    python tools/bench_gpu.py --cases dit,attention           # a selection (names below)

It prints one markdown table (ms, TFLOP/s, MFU, ratios against the references measured in the same run, peak
memory, max |ours - reference|) and writes the same rows, the card, the versions and the protocol as JSON (`--out`),
rewritten after every case, so the README's numbers come from that file.

Cases (random weights at the released sizes; time estimates for an H100 SXM are *guesses* from the FLOP counts at
an assumed ~40% MFU plus building and compiling: this script has not yet run on a GPU in this project):
- gemm (~3 s): one bf16 8192^3 matmul, the card's practical ceiling beside its datasheet peak.
- attention (~10 s): attention alone, 32 heads x head_dim 128 (13B) and 64 (2B), 6,144 / 12,288 / 24,576 tokens,
  through `ltx.core.attention.attention`: SDPA as PyTorch dispatches it, SDPA forced to its cuDNN / flash /
  memory-efficient kernel, and the flash-attn package when installed; TFLOP/s and the ratio to FlashAttention-3's
  published throughput at head_dim 128 (`FA3_HDIM128`, H100 / H200 only).
- dit (~210 s, the largest): the 0.9.x 2B and 13B transformer forward at 6,144 / 12,288 / 24,576 tokens, batch 1,
  bf16, 128 text tokens (half padding): ours with SDPA, with flash-attn (when installed), with torch.compile
  (per block, `ltx.core.parallel.apply_compile`; the first call's compile time in the note), the official
  `ltx_video` 0.1.2 `Transformer3DModel` and diffusers' `LTXVideoTransformer3DModel`, all sharing ONE set of
  weight tensors (ours is built and filled, the references are built on `meta` and take the same tensors with
  `load_state_dict(assign=True)`, diffusers through our key table `DIT_FROM_DIFFUSERS`). Ratios: time ours / time
  reference (< 1 = ours faster).
- ltx2_block (~40 s): the LTX-2 19B and 2.3 22B transformer at full width, built with L = 4 blocks and with 1 block
  (`tools/bench_ltx2.build_transformer`: ours and ltx-core 1.0.0 from the same random weights); ms per block =
  (t(L) - t(1)) / (L - 1), the embeddings / head left out; the whole 48-block forward = t(1) + 47 x per block.
  6,144 / 12,288 / 24,576 video tokens + 126 audio tokens, 1,024 text tokens.
- vae (~30 s): video VAE decode of a 768x512x121 latent (1, 128, 16, 16, 24): 0.9.5-0.9.8 layout (ours, official,
  diffusers) and the LTX-2 19B / 2.3 layouts (ours, ltx-core; `tools/bench_ltx2.build_video_vae`), bf16.
- e2e_ltxv (~40 s): 0.9.8 13B distilled multi-scale 1216x704x121 (`ltx.ltxv.pipelines.generate`): 7 steps at
  800x448, x2 latent upsampler, 3 steps at 1600x896 (22,400 tokens), VAE decode, resize; transformer (48 blocks),
  VAE and upsampler at their real sizes with random weights; random text states (T5 excluded).
- e2e_ltx2 (~70 s): LTX-2 19B distilled two-stage 1536x1024x121 (`ltx.ltx2.pipelines.distilled`): 8 steps at
  768x512, x2 upsampler, 3 steps at 1536x1024 (24,576 video tokens), video + audio decode and vocoder; random
  text states (Gemma excluded). All 48 blocks when the card has >= 75 GiB, else `--e2e-blocks` (default 16) with
  the transformer time scaled by 48 / blocks (the row says so).
- step_cache (~20 s): `ltx.core.step_cache` (TeaCache-style and first-block) on the 2B (28 blocks, 6,144 tokens,
  20 Euler steps) and an LTX-2 19B-width transformer (8 blocks, 6,144 + 126 tokens, 20 steps): time and forwards
  against the uncached run of the same loop, max |cached - uncached| of the final latents. Random weights: how
  many steps get skipped depends on the weights, so the quality cost is measured on the demo models
  (tools/eval_cache.py), not here.
- sp (multi-GPU only): `ltx.core.sequence_parallel.apply_sequence_parallel` (Ulysses) on N GPUs (torchrun, started
  by this script) against one GPU: the 2B and the 19B-width LTX-2 transformer (8 blocks) at 24,576 tokens. One GPU:
  a "skipped: 1 GPU" row. The dry run runs it on 2 CPU processes (gloo).

Protocol: inputs built once; `--warmup` untimed calls (default 2; where a first call checks the output against the
reference, it is one of them; compile: that first call is timed apart as compile time); `--reps` timed calls (default
5; attention 10), each between CUDA events (CPU: perf_counter); the median is reported (min, p90 and every time in
the JSON); e2e: one warm-up run, then 2 runs (quick: 1), the median run's per-stage split; peak memory =
torch.cuda.max_memory_allocated() over the timed calls, weights and inputs included (the DiT implementations share
their weights, so their peaks compare). Every case gets a share of `--budget-s` (unused
time passes on); a measurement that would start past its case's deadline is skipped with a note, so the run
ends in time and the JSON always holds what finished.

FLOPs (2 x multiply-adds; attention = QK^T and PV, 4 N^2 d per layer): the DiT by `dit_forward_flops`
(performance.md §3.2: L [(28 N + 4 S) d^2 + 4 N^2 d + 4 N S d] + patchify, caption projection, head and the
timestep MLP), LTX-2 by `ltx2_forward_flops` (`tools/bench_ltx2.av_flops` + 2.3's gate logits), VAEs and the
upsampler by torch.utils.flop_counter on `meta` (exact for convolutions). tests/test_bench_gpu.py checks both
formulas against FlopCounterMode. MFU = achieved FLOP/s over the card's dense bf16 datasheet peak
(`PEAK_BF16_TFLOPS`); an unknown card leaves MFU blank.

References on the GPU machine: diffusers, ltx-video and ltx-core are pure-Python wheels (pip download them here and
install with --no-deps there, see the README); a missing one gives "skipped: <package> not installed" rows.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tools.bench_dit import dit_flops  # noqa: E402
from tools.bench_ltx2 import av_flops, randomize_  # noqa: E402

CASES = ("gemm", "attention", "dit", "ltx2_block", "vae", "e2e_ltxv", "e2e_ltx2", "step_cache", "sp")
# Share of the time budget per case (rolled over when a case finishes early).
SHARES = {"gemm": 1, "attention": 3, "dit": 45, "ltx2_block": 9, "vae": 7, "e2e_ltxv": 10, "e2e_ltx2": 14,
          "step_cache": 5, "sp": 6}

# Dense bf16 tensor-core peaks, TFLOP/s (no sparsity), matched against torch.cuda.get_device_name() in order
# (first match wins, so the more specific names come first). Sources: NVIDIA datasheets (H100 / H200: "H100
# Tensor Core GPU" and "H200 Tensor Core GPU" datasheets, sparse figure / 2; A100 datasheet; L40S / L40 / L4
# datasheets), Ada whitepaper (GeForce RTX 4090: 165.2 with fp32 accumulate, which is what bf16 matmuls use).
PEAK_BF16_TFLOPS = (
    ("H100 NVL", 835.5), ("H100 PCIe", 756.5), ("H100", 989.4),  # "NVIDIA H100 80GB HBM3" is the SXM part
    ("H200 NVL", 835.5), ("H200", 989.4),
    ("H800 PCIe", 756.5), ("H800", 989.4),
    ("A100", 312.0), ("A800", 312.0),
    ("L40S", 362.05), ("L40", 181.05), ("L4", 121.0),
    ("RTX 4090", 165.2),
)
# FlashAttention-3 forward, bf16/fp16, head_dim 128, non-causal, on H100 80GB SXM5 (Shah et al., "FlashAttention-3",
# arXiv 2407.08608, figure "Attention forward speed, head dim 128"): TFLOP/s at sequence length 2k / 4k / 8k / 16k.
# The ceiling for N tokens is the figure's value at the largest length <= N. Applied on H100 and H200 (same SMs and
# clocks; the H200 has faster memory, which attention at these lengths does not need).
FA3_HDIM128 = {2048: 625.0, 4096: 638.0, 8192: 646.0, 16384: 648.0}
FA3_SOURCE = "FlashAttention-3 paper (arXiv 2407.08608), fig. 'Attention forward speed, head dim 128 (H100 80GB SXM5)'"

FLOP_FORMULAS = {  # FLOP = 2 x multiply-add; attention = QK^T + PV
    "dit": "L [(28 N + 4 S) d^2 + 4 N^2 d + 4 N S d] + 4 N C d + 2 S (C_text d + d^2) + 2 (256 d + 7 d^2) "
           "(N video tokens, S text tokens, d width, L blocks, C latent channels; dit_forward_flops)",
    "ltx2": "tools/bench_ltx2.av_flops (both streams' blocks, the A<->V attentions, per-token AdaLN, patchify, head) "
            "+ 2.3's gate logits (ltx2_forward_flops)",
    "attention": "4 B H N^2 Dh (non-causal)",
    "vae_upsampler": "torch.utils.flop_counter.FlopCounterMode on meta tensors",
    "mfu": "achieved FLOP/s / datasheet dense bf16 peak (PEAK_BF16_TFLOPS)",
}
DIT_TOKENS = {"full": ((16, 16, 24), (16, 24, 32), (16, 32, 48)), "quick": ((16, 16, 24), (16, 32, 48)),
              "dry": ((2, 4, 6),)}  # latent grids F x H x W: 6,144 / 12,288 / 24,576 tokens; the dry run: 48


# ------------------------------------------------------------------------------------------------ FLOPs


def dit_forward_flops(cfg, tokens: int, text: int, batch: int = 1) -> float:
    """FLOPs of one 0.9.x DiT forward with one sigma per row: `tools/bench_dit.dit_flops` (blocks: self-attention
    q/k/v/out 8 N d^2, scores + weighted sum 4 N^2 d; cross-attention q/out 4 N d^2, k/v 4 S d^2, 4 N S d; MLP
    16 N d^2; patchify 2 N C d, head 2 N d C, caption projection 2 S (C_text d + d^2)) plus AdaLN-single's timestep
    MLP, 2 (256 d + d^2 + 6 d^2) per row."""
    d = cfg.dim
    one = dit_flops(cfg.num_layers, d, tokens, text, caption=cfg.caption_channels, channels=cfg.in_channels)
    return batch * (one + 2 * (256 * d + 7 * d * d))


def ltx2_forward_flops(cfg, video_tokens: int, audio_tokens: int, text_tokens: int) -> float:
    """FLOPs of one batch-1 LTX-2 `AVTransformer` forward: `tools/bench_ltx2.av_flops` (both streams' blocks, the
    A<->V attentions, per-token AdaLN, patchify, caption projection, head) plus, for 2.3, the per-head gate logits it
    leaves out: a (width -> heads) projection of each attention's query input, 2 H (3 T D + 3 Ta Da) per block (video
    and audio self- and text attention, audio->video on video queries, video->audio on audio queries). Still left
    out: the per-sample AdaLNs of each call (< 0.1% at full width)."""
    flops = av_flops(cfg, video_tokens, audio_tokens, text_tokens)
    if cfg.apply_gated_attention:
        heads = cfg.num_attention_heads
        flops += cfg.num_layers * 2 * heads * 3 * (video_tokens * cfg.inner_dim + audio_tokens * cfg.audio_inner_dim)
    return flops


def attention_flops(batch: int, heads: int, tokens: int, head_dim: int) -> float:
    """QK^T and PV of non-causal self-attention: 4 B H N^2 Dh (the FlashAttention papers' convention)."""
    return 4.0 * batch * heads * tokens * tokens * head_dim


def meta_flops(build: Callable[[], nn.Module], call: Callable[[nn.Module], object]) -> float:
    """FLOPs of `call(module)` counted by torch.utils.flop_counter with the module and its inputs on `meta` (no memory,
    no time; convolutions and matmuls exact). `call` makes its inputs on the current (meta) device."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"), torch.inference_mode(), FlopCounterMode(display=False) as counter:
        call(build())
    return float(counter.get_total_flops())


# ------------------------------------------------------------------------------------------------ the card


def bf16_peak(name: str) -> tuple[float | None, str]:
    """(datasheet dense bf16 TFLOP/s or None, the matched entry or why not) for a torch device name."""
    for key, peak in PEAK_BF16_TFLOPS:
        if key.lower() in name.lower():
            return peak, key
    return None, f"no datasheet peak for {name!r} in PEAK_BF16_TFLOPS: MFU left blank"


def fa3_ceiling(tokens: int, head_dim: int, device_name: str) -> float | None:
    if head_dim != 128 or not any(k in device_name for k in ("H100", "H200")):
        return None
    lengths = [n for n in FA3_HDIM128 if n <= tokens]
    return FA3_HDIM128[max(lengths)] if lengths else None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict:
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "ltx_commit": commit, "diffusers": _version("diffusers"), "ltx-video": _version("ltx-video"),
            "ltx-core": _version("ltx-core"), "flash-attn": _version("flash-attn"), "triton": _version("triton")}


def device_info(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"type": "cpu", "name": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                "peak_bf16_tflops": None, "peak_note": "CPU dry run: no MFU"}
    p = torch.cuda.get_device_properties(device)
    peak, note = bf16_peak(p.name)
    return {"type": "cuda", "name": p.name, "count": torch.cuda.device_count(), "capability": f"{p.major}.{p.minor}",
            "sms": p.multi_processor_count, "memory_gib": round(p.total_memory / 2**30, 1),
            "peak_bf16_tflops": peak, "peak_note": note if peak is None else f"datasheet ({note})"}


# ------------------------------------------------------------------------------------------------ run state


@dataclass
class Ctx:
    """What every case needs: device and dtype, sizes of this mode, the protocol, the rows and the clock."""

    args: argparse.Namespace
    device: torch.device
    dtype: torch.dtype
    mode: str  # "full" | "quick" | "dry"
    warmup: int
    reps: int
    peak: float | None  # dense bf16 FLOP/s of the card
    deadline: float = math.inf  # of the running case (time.monotonic())
    rows: list[dict] = field(default_factory=list)

    @property
    def dry(self) -> bool:
        return self.mode == "dry"

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def add(self, case: str, model: str, size: str, impl: str, *, status: str = "ok", note: str = "",
            timing: dict | None = None, flops: float | None = None, ratios: dict | None = None,
            diff: float | None = None, **extra) -> dict:
        """One table row. `timing` from `time_call`; `flops` per timed call; ratios {label: value}."""
        row = {"case": case, "model": model, "size": size, "impl": impl, "status": status, "note": note,
               "ms": None, "ms_min": None, "ms_p90": None, "n": None, "tflop": None, "tflops": None, "mfu": None,
               "ratios": ratios or {}, "peak_gib": None, "max_abs_diff": diff, **extra}
        if timing:
            row.update({k: timing.get(k) for k in ("ms", "ms_min", "ms_p90", "n", "peak_gib", "times_ms")})
            if flops:
                row["tflop"] = flops / 1e12
                row["tflops"] = flops / (timing["ms"] / 1e3) / 1e12
                if self.peak:
                    row["mfu"] = flops / (timing["ms"] / 1e3) / self.peak
        self.rows.append(row)
        return row

    def skip(self, case: str, model: str, size: str, impl: str, why: str) -> None:
        self.add(case, model, size, impl, status="skipped", note=why)

    def fail(self, case: str, model: str, size: str, impl: str, e: BaseException) -> None:
        traceback.print_exc(file=sys.stderr)
        first = (str(e).strip().splitlines() or [""])[0][:160]
        self.add(case, model, size, impl, status="failed", note=f"{type(e).__name__}: {first}")
        free_memory()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def time_call(ctx: Ctx, fn: Callable[[], object], *, warmup: int | None = None, reps: int | None = None) -> dict:
    """Median / min / p90 milliseconds of `reps` calls after `warmup` untimed ones; CUDA events on a GPU (each call
    between two events, then synchronize), perf_counter on the CPU. Peak memory over the timed calls (GPU)."""
    warmup = ctx.warmup if warmup is None else warmup
    reps = ctx.reps if reps is None else reps
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        sync(ctx.device)
        if ctx.cuda:
            torch.cuda.reset_peak_memory_stats(ctx.device)
        times = []
        for _ in range(reps):
            if ctx.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append(1e3 * (time.perf_counter() - t0))
    times.sort()
    peak = torch.cuda.max_memory_allocated(ctx.device) / 2**30 if ctx.cuda else None
    return {"ms": statistics.median(times), "ms_min": times[0], "ms_p90": times[min(len(times) - 1,
            math.ceil(0.9 * len(times)) - 1)], "n": reps, "peak_gib": peak, "times_ms": times}


def max_diff(a, b) -> float:
    if isinstance(a, tuple | list):
        return max(max_diff(x, y) for x, y in zip(a, b))
    if a.shape != b.shape:
        raise RuntimeError(f"outputs differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    return (a.float() - b.float()).abs().max().item()


def random_module(build: Callable[[], nn.Module], ctx: Ctx, seed: int) -> nn.Module:
    """`build()` on meta, cast, allocated on the device, every parameter random (`bench_ltx2.randomize_`: N(0, 1 /
    fan_in) matrices, norms ~1, AdaLN tables N(0, 0.1^2)), buffers zero but the latent statistics (random). For
    modules whose buffers are computed at build (vocoder, upsampler kernels) use `random_direct`."""
    with torch.device("meta"):
        module = build()
    module = module.to(ctx.dtype).to_empty(device=ctx.device)
    with torch.no_grad():
        for b in module.buffers():
            b.zero_()
    randomize_(module, seed)
    return module.eval()


def random_direct(build: Callable[[], nn.Module], ctx: Ctx, seed: int) -> nn.Module:
    """Built on the device in fp32 (buffers computed at build kept), cast, parameters random (small modules)."""
    with torch.device(ctx.device):
        module = build()
    randomize_(module, seed)
    return module.to(ctx.dtype).eval()


def randn(ctx: Ctx, *shape: int, seed: int = 0, scale: float = 1.0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g)).to(ctx.device, ctx.dtype)


def missing(*modules: str) -> str | None:
    """Why a reference cannot run here (its package is not installed), or None."""
    for m in modules:
        if importlib.util.find_spec(m) is None:
            return f"{m} not installed"
    return None


def quiet_references() -> None:
    """The references log config warnings on every build; keep the table readable."""
    import logging

    for name in ("diffusers", "ltx_video", "ltx_core"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if importlib.util.find_spec("diffusers") is not None:
        from diffusers.utils import logging as dlog

        dlog.set_verbosity_error()


def ltx_core_ready() -> str | None:
    """ltx-core imports torchaudio at module level; the tests' import stub stands in where torchaudio is absent."""
    why = missing("ltx_core")
    if why:
        return why
    if importlib.util.find_spec("torchaudio") is None:
        sys.path.insert(0, str(REPO / "tests/ltx2/stubs"))
    import ltx_core.loader  # noqa: F401  (first: ltx_core.quantization alone has a circular import)

    return None


# ------------------------------------------------------------------------------------------------ configs


def dit_configs(ctx: Ctx) -> dict:
    """The two 0.9.x widths: the released presets, or tiny ones in the dry run (2 blocks, same head layouts)."""
    from ltx.ltxv.transformer import DiTConfig
    from ltx.presets import load_preset

    if ctx.dry:
        return {"0.9.x 2B": DiTConfig(num_layers=2, num_heads=4, head_dim=16, caption_channels=64,
                                      causal_temporal_positioning=True),
                "0.9.x 13B": DiTConfig(num_layers=2, num_heads=4, head_dim=32, caption_channels=64,
                                       causal_temporal_positioning=True)}
    return {"0.9.x 2B": load_preset("ltxv-2b-0.9.8-distilled").dit,
            "0.9.x 13B": load_preset("ltxv-13b-0.9.8-distilled").dit}


def dit_inputs(ctx: Ctx, cfg, grid: tuple[int, int, int], text: int, batch: int = 1):
    """(x, sigma, context, mask, positions) of one forward: random latents and text states, half the text padding."""
    from ltx.ltxv.patchify import token_positions

    F, H, W = grid
    x = randn(ctx, batch, F * H * W, cfg.in_channels, seed=1)
    context = randn(ctx, batch, text, cfg.caption_channels, seed=2)
    mask = torch.ones(batch, text, device=ctx.device)
    mask[:, text // 2:] = 0
    pos = token_positions(F, H, W, fps=25.0, causal=cfg.causal_temporal_positioning, batch=batch, device=ctx.device)
    sigma = torch.full((batch, 1), 0.7, device=ctx.device)
    return x, sigma, context, mask, pos


def new_dit(cfg, ctx: Ctx, weights: dict | None = None, seed: int = 0):
    """Our DiT with random weights, or (weights given) built on meta and sharing those tensors."""
    from ltx.ltxv.transformer import DiT

    if weights is None:
        return random_module(lambda: DiT(cfg), ctx, seed)
    with torch.device("meta"):
        model = DiT(cfg)
    model.load_state_dict(weights, assign=True, strict=True)
    return model.eval()


def official_dit(cfg, weights: dict):
    from ltx_video.models.transformers.transformer3d import Transformer3DModel

    from ltx.ltxv.keys_official import dit_config_to_official

    with torch.device("meta"):
        model = Transformer3DModel.from_config(dit_config_to_official(cfg))
    model.load_state_dict(weights, assign=True, strict=True)  # our names are the official ones
    return model.eval()


def diffusers_dit(cfg, weights: dict):
    from diffusers import LTXVideoTransformer3DModel

    from ltx.core.keymap import rename
    from ltx.ltxv.keys_diffusers import DIT_FROM_DIFFUSERS, dit_config_to_diffusers

    config = {k: v for k, v in dit_config_to_diffusers(cfg).items() if not k.startswith("_")}
    with torch.device("meta"):
        model = LTXVideoTransformer3DModel(**config)
    ours_of = rename(model.state_dict().keys(), DIT_FROM_DIFFUSERS)  # {our name: diffusers name}
    model.load_state_dict({theirs: weights[ours] for ours, theirs in ours_of.items()}, assign=True, strict=True)
    return model.eval()


def ltx2_spec(ctx: Ctx, variant: str, layers: int, grid, audio_tokens: int, text_tokens: int) -> dict:
    """A `tools/bench_ltx2.build_transformer` spec: full width on a GPU, that tool's tiny width in the dry run."""
    return dict(variant=variant, layers=layers, full_width=not ctx.dry, grid=tuple(grid), audio_tokens=audio_tokens,
                text_tokens=text_tokens, guided=False)


def ltx2_sizes(ctx: Ctx) -> tuple[int, int]:
    """(audio tokens, text tokens): 126 (5.04 s) and 1,024 on a GPU; small in the dry run."""
    return (10, 16) if ctx.dry else (126, 1024)


def grid_tokens(grid) -> int:
    return grid[0] * grid[1] * grid[2]


# ------------------------------------------------------------------------------------------------ cases


def case_gemm(ctx: Ctx) -> None:
    n = 256 if ctx.dry else 8192
    a, b = randn(ctx, n, n, seed=1), randn(ctx, n, n, seed=2)
    timing = time_call(ctx, lambda: a @ b, warmup=ctx.warmup if ctx.dry else 3, reps=ctx.reps if ctx.dry else 10)
    row = ctx.add("gemm", "-", f"{n}x{n}x{n}", f"matmul {str(ctx.dtype).removeprefix('torch.')}", timing=timing,
                  flops=2.0 * n**3, note="the card's practical bf16 ceiling (MFU is against the datasheet)")
    if row["mfu"] is not None:
        row["ratios"] = {"of datasheet peak": row["mfu"]}


def case_attention(ctx: Ctx) -> None:
    from torch.nn.attention import SDPBackend

    from ltx.core.attention import flash_available

    heads = 4 if ctx.dry else 32
    kernels: dict[str, object] = {"sdpa": None}
    if ctx.cuda:
        kernels.update({"sdpa[cudnn]": SDPBackend.CUDNN_ATTENTION, "sdpa[flash]": SDPBackend.FLASH_ATTENTION,
                        "sdpa[efficient]": SDPBackend.EFFICIENT_ATTENTION})
    if flash_available():
        kernels["flash-attn"] = "flash"
    for head_dim in (128, 64):
        for grid in DIT_TOKENS["dry" if ctx.dry else "full"]:
            size = f"{grid_tokens(grid)} tokens, {heads}x{head_dim}"
            if ctx.time_left() <= 0:
                ctx.skip("attention", f"head_dim {head_dim}", size, "all", "time budget (--budget-s)")
                continue
            if "flash-attn" not in kernels:
                ctx.skip("attention", f"head_dim {head_dim}", size, "flash-attn",
                         "flash-attn not installed" if ctx.cuda else "flash-attn: CUDA only")
            _attention_size(ctx, grid_tokens(grid), heads, head_dim, kernels, size)
            free_memory()


def _attention_size(ctx: Ctx, n: int, heads: int, head_dim: int, kernels: dict, size: str) -> None:
    """Each kernel on one (tokens, head_dim) shape: TFLOP/s, FA3 ratio, max |diff| to the first (PyTorch's choice)."""
    from torch.nn.attention import sdpa_kernel

    from ltx.core.attention import attention

    q, k, v = (randn(ctx, 1, n, heads, head_dim, seed=s) for s in (1, 2, 3))
    flops = attention_flops(1, heads, n, head_dim)
    ceiling = fa3_ceiling(n, head_dim, torch.cuda.get_device_name(ctx.device) if ctx.cuda else "cpu")
    base = None
    for impl, kernel in kernels.items():
        def fn(kernel=kernel):
            if kernel in (None, "flash"):
                return attention(q, k, v, None, kernel or "sdpa")
            with sdpa_kernel([kernel]):
                return attention(q, k, v, None, "sdpa")

        try:
            with torch.inference_mode():
                out = fn()
            base = out if base is None else base
            timing = time_call(ctx, fn, warmup=max(0, ctx.warmup - 1), reps=ctx.reps if ctx.dry else max(ctx.reps, 10))
            row = ctx.add("attention", f"head_dim {head_dim}", size, impl, timing=timing, flops=flops,
                          diff=max_diff(out, base))
            if ceiling:
                row["ratios"] = {"of FA3": row["tflops"] / ceiling}
                row["note"] = f"FA3 ceiling {ceiling:.0f} TFLOP/s"
        except Exception as e:  # a kernel may not support this card / shape
            ctx.fail("attention", f"head_dim {head_dim}", size, impl, e)


def case_dit(ctx: Ctx) -> None:
    quiet_references()
    text = 8 if ctx.dry else 128
    for model_name, cfg in dit_configs(ctx).items():
        if ctx.time_left() <= 0:
            ctx.skip("dit", model_name, "all sizes", "all", "time budget (--budget-s)")
            continue
        ours = new_dit(cfg, ctx)
        weights = ours.state_dict()  # the one set of tensors every implementation uses
        for grid in DIT_TOKENS[ctx.mode]:
            _dit_size(ctx, model_name, cfg, ours, weights, grid, text)
            free_memory()
        del ours, weights
        free_memory()


def _dit_size(ctx: Ctx, model_name: str, cfg, ours: nn.Module, weights: dict, grid, text: int) -> None:
    """Every implementation at one token count; ratios ours / reference once all are timed."""
    from ltx.core.attention import flash_available, set_attention_backend
    from ltx.core.parallel import apply_compile

    n = grid_tokens(grid)
    size = f"{n} tokens"
    flops = dit_forward_flops(cfg, n, text)
    inputs = dit_inputs(ctx, cfg, grid, text)
    x, sigma, context, mask, pos = inputs

    def ours_call(m):
        return m(*inputs)

    def official_call(m):
        return m(x, pos, encoder_hidden_states=context, timestep=sigma, encoder_attention_mask=mask,
                 return_dict=False)[0]

    def diffusers_call(m):  # diffusers scales sigma to the 0..1000 timestep outside the model
        return m(hidden_states=x, encoder_hidden_states=context, timestep=cfg.timestep_scale * sigma,
                 encoder_attention_mask=mask, video_coords=pos, return_dict=False)[0]

    def compiled():
        return apply_compile(new_dit(cfg, ctx, weights), **({"backend": "eager"} if ctx.dry else {}))

    impls = {"ours[sdpa]": (lambda: ours, ours_call),
             "official": (lambda: official_dit(cfg, weights), official_call),
             "diffusers": (lambda: diffusers_dit(cfg, weights), diffusers_call),
             "ours[flash]": (lambda: ours, ours_call),
             "ours[compile]": (compiled, ours_call)}
    why_not = {"official": missing("ltx_video"), "diffusers": missing("diffusers"),
               "ours[flash]": None if flash_available() else
               ("flash-attn not installed" if ctx.cuda else "flash-attn: CUDA only"),
               "ours[compile]": "dry run: compiled for the 2B only" if ctx.dry and model_name != "0.9.x 2B" else None}
    first_out, times, est_s = None, {}, 0.0
    for impl, (make, call) in impls.items():
        if why_not.get(impl):
            ctx.skip("dit", model_name, size, impl, why_not[impl])
            continue
        if ctx.time_left() < (ctx.warmup + ctx.reps + 1) * est_s:
            ctx.skip("dit", model_name, size, impl, "time budget (--budget-s)")
            continue
        try:
            model = make()
            set_attention_backend(model, "flash" if impl == "ours[flash]" else "sdpa")
            with torch.inference_mode():
                t0 = time.perf_counter()
                out = call(model)
                sync(ctx.device)
                first_s = time.perf_counter() - t0
            note = "" if impl != "ours[compile]" else f"first call (compile) {first_s:.1f} s" + (
                "; dry run: dynamo capture only (backend eager)" if ctx.dry else "")
            first_out = out if first_out is None else first_out
            timing = time_call(ctx, lambda m=model, c=call: c(m), warmup=max(0, ctx.warmup - 1))  # 1st call above
            est_s = est_s or timing["ms"] / 1e3
            times[impl] = timing["ms"]
            ctx.add("dit", model_name, size, impl, timing=timing, flops=flops, diff=max_diff(out, first_out),
                    note=note)
        except Exception as e:
            ctx.fail("dit", model_name, size, impl, e)
        finally:
            set_attention_backend(ours, "sdpa")
            if impl == "ours[compile]":
                torch._dynamo.reset()
    for row in ctx.rows:  # ours against the references, now that all are timed
        if (row["case"], row["model"], row["size"]) == ("dit", model_name, size) and row["status"] == "ok" \
                and row["impl"].startswith("ours"):
            row["ratios"] = {ref: row["ms"] / times[ref] for ref in ("official", "diffusers") if ref in times}


def case_ltx2_block(ctx: Ctx) -> None:
    why = ltx_core_ready()
    audio, text = ltx2_sizes(ctx)
    for variant, model_name in (("19b", "LTX-2 19B"), ("2.3", "LTX-2.3 22B")):
        for grid in DIT_TOKENS[ctx.mode]:
            size = f"{grid_tokens(grid)}+{audio} tokens"
            if why:  # ltx-core missing: ours alone
                ctx.skip("ltx2_block", model_name, size, "ltx-core per block", why)
            if ctx.time_left() <= 0:
                ctx.skip("ltx2_block", model_name, size, "all", "time budget (--budget-s)")
                continue
            try:
                _ltx2_block_size(ctx, variant, model_name, grid, size, with_reference=why is None)
            except Exception as e:
                ctx.fail("ltx2_block", model_name, size, "ours / ltx-core", e)
            free_memory()


def _ltx2_block_size(ctx: Ctx, variant: str, model_name: str, grid, size: str, with_reference: bool) -> None:
    """One call with L blocks and one with 1 block, for ours and ltx-core: per block = (t(L) - t(1)) / (L - 1)."""
    from tools.bench_ltx2 import build_transformer, transformer_config

    audio, text = ltx2_sizes(ctx)
    blocks = 2 if ctx.dry else 4
    timings, diff = {}, None
    for layers in (blocks, 1):
        spec = ltx2_spec(ctx, variant, layers, grid, audio, text)
        if with_reference:
            with torch.inference_mode():
                ours_fn, ref_fn, compare = build_transformer(spec, ctx.device, ctx.dtype)
                if layers == blocks:
                    diff = compare(ours_fn(), ref_fn())
            timings[("ltx-core", layers)] = time_call(ctx, ref_fn)
            del ref_fn
        else:
            ours_fn = ours_only_transformer(ctx, spec)[1]
        timings[("ours", layers)] = time_call(ctx, ours_fn)
        del ours_fn
        free_memory()
    cfg = transformer_config(ltx2_spec(ctx, variant, blocks, grid, audio, text))
    n = grid_tokens(grid)
    flops = (ltx2_forward_flops(cfg, n, audio, text)
             - ltx2_forward_flops(replace(cfg, num_layers=1), n, audio, text)) / (blocks - 1)
    per_block = {impl: (timings[(impl, blocks)]["ms"] - timings[(impl, 1)]["ms"]) / (blocks - 1)
                 for impl in ("ours", "ltx-core") if (impl, 1) in timings}
    for impl, ms in per_block.items():
        t_many = timings[(impl, blocks)]
        full = timings[(impl, 1)]["ms"] + 47 * ms
        ratios = {"ltx-core": ms / per_block["ltx-core"]} if impl == "ours" and "ltx-core" in per_block else {}
        ctx.add("ltx2_block", model_name, size, f"{impl} per block",
                timing={"ms": ms, "n": t_many["n"], "peak_gib": t_many["peak_gib"]}, flops=flops, ratios=ratios,
                diff=diff if impl != "ours" else None,
                note=f"48-block forward ~{full:.0f} ms (t(1) + 47 x per block)" + ("; dry run: tiny width" if ctx.dry
                                                                                   else ""),
                calls_ms={f"{layers} blocks": timings[(impl, layers)]["ms"] for layers in (blocks, 1)})


def ours_only_transformer(ctx: Ctx, spec: dict) -> tuple[nn.Module, Callable[[], object]]:
    """Our AVTransformer of a `bench_ltx2` spec with random weights and one unguided pass's inputs (latents, text
    states random; positions as the pipelines build them), for where ltx-core is absent and for the SP case."""
    from ltx.ltx2 import patchify
    from ltx.ltx2.transformer import AVTransformer, StreamInput
    from tools.bench_ltx2 import transformer_config

    cfg = transformer_config(spec)
    model = random_module(lambda: AVTransformer(cfg), ctx, seed=1)
    (F, H, W), Ta, S = spec["grid"], spec["audio_tokens"], spec["text_tokens"]
    width_v = cfg.inner_dim if cfg.caption_proj_before_connector else cfg.caption_channels
    width_a = cfg.audio_inner_dim if cfg.caption_proj_before_connector else cfg.caption_channels
    sigma = torch.full((1,), 0.7, device=ctx.device)
    vi = StreamInput(x=randn(ctx, 1, F * H * W, cfg.in_channels, seed=1), timesteps=sigma.expand(1, F * H * W),
                     sigma=sigma, positions=patchify.video_positions(F, H, W, 24.0, ctx.dtype, device=ctx.device),
                     context=randn(ctx, 1, S, width_v, seed=2))
    ai = StreamInput(x=randn(ctx, 1, Ta, cfg.audio_in_channels, seed=3), timesteps=sigma.expand(1, Ta), sigma=sigma,
                     positions=patchify.audio_positions(Ta, device=ctx.device),
                     context=randn(ctx, 1, S, width_a, seed=4))
    return model, lambda: model(vi, ai)


def case_vae(ctx: Ctx) -> None:
    quiet_references()
    grid = (2, 2, 3) if ctx.dry else (16, 16, 24)
    size = f"latent {grid[0]}x{grid[1]}x{grid[2]} -> {8 * (grid[0] - 1) + 1}x{32 * grid[1]}x{32 * grid[2]}"
    _vae_ltxv(ctx, grid, size)
    free_memory()
    why = ltx_core_ready()
    for variant, model_name in (("19b", "LTX-2 19B VAE"), ("2.3", "LTX-2.3 VAE")):
        if ctx.time_left() <= 0:
            ctx.skip("vae", model_name, size, "all", "time budget (--budget-s)")
        elif why:
            ctx.skip("vae", model_name, size, "ours / ltx-core", why)
        else:
            _vae_ltx2(ctx, variant, model_name, grid, size)
        free_memory()


def _vae_ltx2(ctx: Ctx, variant: str, model_name: str, grid, size: str) -> None:
    """LTX-2 video VAE decode: ours vs ltx-core's VideoDecoder (`tools/bench_ltx2.build_video_vae`, same weights)."""
    from tools.bench_ltx2 import build_video_vae

    base = 8 if ctx.dry else 128  # 128: the released decoder width
    try:
        with torch.inference_mode():
            ours_fn, ref_fn, compare = build_video_vae({"variant": variant, "base_channels": base, "grid": grid},
                                                       ctx.device, ctx.dtype)
            diff = compare(ours_fn(), ref_fn())
        flops = meta_flops(lambda: _ltx2_vae_module(variant, base), lambda vae: vae.decode(torch.randn(1, 128, *grid)))
        t_ours = time_call(ctx, ours_fn, reps=min(ctx.reps, 3))
        t_ref = time_call(ctx, ref_fn, reps=min(ctx.reps, 3))
        ctx.add("vae", model_name, size, "ours", timing=t_ours, flops=flops,
                ratios={"ltx-core": t_ours["ms"] / t_ref["ms"]})
        ctx.add("vae", model_name, size, "ltx-core", timing=t_ref, flops=flops, diff=diff)
    except Exception as e:
        ctx.fail("vae", model_name, size, "ours / ltx-core", e)


def _ltx2_vae_module(variant: str, base_channels: int) -> nn.Module:
    from ltx.ltx2.vae import VIDEO_VAE_PRESETS, VideoVAE

    preset = VIDEO_VAE_PRESETS["ltx-2-19b" if variant == "19b" else "ltx-2.3-22b"]
    vae = VideoVAE(replace(preset, decoder_base_channels=base_channels))
    del vae.encoder  # decode only
    return vae


def _ltxv_vae_config(ctx: Ctx):
    from ltx.ltxv.vae import VAE_PRESETS, tiny

    return tiny(VAE_PRESETS["0.9.5"], 8) if ctx.dry else VAE_PRESETS["0.9.5"]


def _vae_ltxv(ctx: Ctx, grid, size: str) -> None:
    """0.9.5+ decode: ours, official (its own loader, a copy of our weights), diffusers (our weights, our key table)."""
    from ltx.ltxv.vae import VideoVAE

    cfg = _ltxv_vae_config(ctx)
    model_name = "0.9.x VAE"
    try:
        ours = random_module(lambda: VideoVAE(cfg), ctx, seed=2)
        weights = ours.state_dict()
        z = randn(ctx, 1, cfg.latent_channels, *grid, seed=1)
        t = torch.full((1,), 0.05, device=ctx.device)
        flops = meta_flops(lambda: VideoVAE(cfg), lambda vae: vae.decode(torch.randn(1, cfg.latent_channels, *grid),
                                                                         torch.full((1,), 0.05)))
        with torch.inference_mode():
            base = ours.decode(z, t)
        t_ours = time_call(ctx, lambda: ours.decode(z, t), reps=min(ctx.reps, 3))
        row = ctx.add("vae", model_name, size, "ours", timing=t_ours, flops=flops)
    except Exception as e:
        ctx.fail("vae", model_name, size, "ours", e)
        return
    for impl, package in (("official", "ltx_video"), ("diffusers", "diffusers")):
        if missing(package):
            ctx.skip("vae", model_name, size, impl, missing(package))
            continue
        if ctx.time_left() <= 0:
            ctx.skip("vae", model_name, size, impl, "time budget (--budget-s)")
            continue
        try:
            fn = _official_vae_decode(cfg, weights, z, t, ctx) if impl == "official" else \
                _diffusers_vae_decode(cfg, weights, z, t)
            with torch.inference_mode():
                diff = max_diff(fn(), base)
            timing = time_call(ctx, fn, reps=min(ctx.reps, 3))
            row["ratios"][impl] = t_ours["ms"] / timing["ms"]
            ctx.add("vae", model_name, size, impl, timing=timing, flops=flops, diff=diff)
            del fn
        except Exception as e:
            ctx.fail("vae", model_name, size, impl, e)
        free_memory()


def _official_vae_decode(cfg, weights: dict, z: Tensor, t: Tensor, ctx: Ctx) -> Callable[[], Tensor]:
    from ltx_video.models.autoencoders.causal_video_autoencoder import CausalVideoAutoencoder
    from ltx_video.models.autoencoders.vae_encode import vae_decode

    from ltx.ltxv.keys_vae import vae_config_to_official

    with torch.device("meta"):
        vae = CausalVideoAutoencoder.from_config(vae_config_to_official(cfg))
    vae = vae.to_empty(device=ctx.device).to(ctx.dtype)
    vae.load_state_dict(weights)  # the official loader (it also registers the latent statistics)
    vae.eval()
    return lambda: vae_decode(z, vae, is_video=True, vae_per_channel_normalize=True, timestep=t)


def _diffusers_vae_decode(cfg, weights: dict, z: Tensor, t: Tensor) -> Callable[[], Tensor]:
    from diffusers import AutoencoderKLLTXVideo

    from ltx.core.keymap import rename
    from ltx.ltxv.keys_vae import vae_config_to_diffusers, vae_diffusers_rules

    config = {k: v for k, v in vae_config_to_diffusers(cfg).items() if not k.startswith("_")}
    with torch.device("meta"):
        vae = AutoencoderKLLTXVideo(**config)
    ours_of = rename(vae.state_dict().keys(), vae_diffusers_rules(cfg))
    vae.load_state_dict({theirs: weights[ours] for ours, theirs in ours_of.items()}, assign=True, strict=True)
    vae.eval()
    mean, std = vae.latents_mean.view(1, -1, 1, 1, 1), vae.latents_std.view(1, -1, 1, 1, 1)
    return lambda: vae.decode(z * std + mean, t, return_dict=False)[0]  # diffusers decodes un-normalized latents


class StepClock:
    """Timestamps of a pipeline's steps (a progress callback), synchronized, to split a run into its stages."""

    def __init__(self, device: torch.device):
        self.device, self.marks = device, []

    def start(self) -> None:
        sync(self.device)
        self.marks, self.t0 = [], time.perf_counter()

    def step(self, stage: int) -> None:
        sync(self.device)
        self.marks.append((stage, time.perf_counter()))

    def split(self, end: float) -> dict:
        """Seconds per stage: stage k = from the end of stage k-1 (or the start) to its last step; the rest (decode)
        from the last step to `end`."""
        out, last = {}, self.t0
        for stage in sorted({s for s, _ in self.marks}):
            t = max(t for s, t in self.marks if s == stage)
            out[f"stage {stage}"] = t - last
            last = t
        out["decode"] = end - last
        return out


def _e2e(ctx: Ctx, case: str, model: str, size: str, run: Callable[[StepClock], None], flops: float, note: str,
         video_seconds: float, scale_stages: float = 1.0) -> None:
    """Time whole pipeline runs (a warm-up run, then 2 runs; quick: 1; dry: 1 without warm-up), with the per-stage
    split of the median run. `scale_stages`: the factor the transformer stages are scaled by (reduced blocks)."""
    clock = StepClock(ctx.device)
    runs = []
    warm, reps = (0, 1) if ctx.dry else (1, 2 if ctx.mode == "full" else 1)
    with torch.inference_mode():
        for i in range(warm + reps):
            if ctx.cuda:
                torch.cuda.reset_peak_memory_stats(ctx.device)
            clock.start()
            run(clock)
            sync(ctx.device)
            stages = clock.split(time.perf_counter())
            if scale_stages != 1.0:
                stages = {k: v * scale_stages if k.startswith("stage") else v for k, v in stages.items()}
            if i >= warm:
                runs.append(stages)
            elif ctx.time_left() <= 0:  # no time left after the warm-up: report it, labelled
                note += "; time budget: the warm-up run only"
                runs.append(stages)
                break
    totals = sorted(sum(r.values()) for r in runs)
    median = runs[[sum(r.values()) for r in runs].index(statistics.median_low(totals))]
    ms = 1e3 * sum(median.values())
    peak = torch.cuda.max_memory_allocated(ctx.device) / 2**30 if ctx.cuda else None
    timing = {"ms": ms, "ms_min": 1e3 * totals[0], "ms_p90": 1e3 * totals[-1], "n": len(runs), "peak_gib": peak}
    split = ", ".join(f"{k} {v:.2f} s" for k, v in median.items())
    ctx.add(case, model, size, "ours", timing=timing, flops=flops, note=f"{split}; {note}",
            ratios={"real time": video_seconds / (ms / 1e3)}, stages_s=median)


def case_e2e_ltxv(ctx: Ctx) -> None:
    """0.9.8 13B distilled multi-scale (preset ltxv-13b-0.9.8-distilled) at 1216x704x121."""
    from ltx.ltxv.guidance import TextConditioning
    from ltx.ltxv.pipelines import SchedulerSpec, generate, latent_grid, pass_sigmas, pass_sizes, passes
    from ltx.ltxv.transformer import DiT
    from ltx.ltxv.upsampler import LatentUpsampler, UpsamplerConfig
    from ltx.ltxv.vae import VideoVAE
    from ltx.presets import load_preset

    preset = load_preset("ltxv-13b-0.9.8-distilled")
    if ctx.dry:
        height, width, frames = 128, 192, 9
        dit_cfg = replace(dit_configs(ctx)["0.9.x 13B"], in_channels=16, out_channels=16)
        vae_cfg, up_cfg = _ltxv_vae_config(ctx), UpsamplerConfig(in_channels=16, mid_channels=32,
                                                                  num_blocks_per_stage=1)
    else:
        height, width, frames = 704, 1216, 121
        dit_cfg, vae_cfg, up_cfg = preset.dit, _ltxv_vae_config(ctx), UpsamplerConfig()
    sampling, sched = preset.sampling, SchedulerSpec()
    if ctx.dry:  # the preset names STG block 42 (dead: STG is off); the tiny transformer has 2 blocks
        sampling = replace(sampling, first_pass=replace(sampling.first_pass, skip_block_list=[[0]]),
                           second_pass=replace(sampling.second_pass, skip_block_list=[[0]]))
    fps, text = preset.generation.fps, (8 if ctx.dry else preset.generation.text_tokens)
    size = f"{width}x{height}x{frames}"
    dit = random_module(lambda: DiT(dit_cfg), ctx, seed=0)
    vae = random_module(lambda: VideoVAE(vae_cfg), ctx, seed=2)
    del vae.encoder  # text-to-video decodes only
    upsampler = random_direct(lambda: LatentUpsampler(up_cfg), ctx, seed=3)
    context = TextConditioning(randn(ctx, 1, text, dit_cfg.caption_channels, seed=4),
                               torch.ones(1, text, device=ctx.device))

    flops, steps = 0.0, []
    for p, (h, w) in zip(passes(sampling), pass_sizes(sampling, height, width, 32)):
        n = grid_tokens(latent_grid(h, w, frames))
        k = len(pass_sigmas(p, n, sched)) - 1
        flops += k * dit_forward_flops(dit_cfg, n, text)
        steps.append(f"{k} steps at {w}x{h} ({n} tokens)")
    h2, w2 = pass_sizes(sampling, height, width, 32)[-1]
    grid2, grid1 = latent_grid(h2, w2, frames), latent_grid(*pass_sizes(sampling, height, width, 32)[0], frames)
    flops += meta_flops(lambda: VideoVAE(vae_cfg), lambda m: m.decode(torch.randn(1, vae_cfg.latent_channels, *grid2),
                                                                    torch.full((1,), 0.05)))
    flops += meta_flops(lambda: LatentUpsampler(up_cfg), lambda m: m(torch.randn(1, up_cfg.in_channels, *grid1)))
    def run(clock: StepClock) -> None:
        passes_seen = {"n": 0, "last": -1}

        def progress(i: int) -> None:  # called after every step; the index restarts with the second pass
            if i <= passes_seen["last"]:
                passes_seen["n"] += 1
            passes_seen["last"] = i
            clock.step(passes_seen["n"] + 1)

        generate(dit, vae, context, sampling, sched, height=height, width=width, num_frames=frames, fps=fps,
                 generator=torch.Generator(ctx.device).manual_seed(0), upsampler=upsampler, progress=progress)

    note = ("; ".join(steps) + "; all 48 blocks, VAE (decoder) and upsampler at real size, random weights; "
            "text states random (T5 excluded)") if not ctx.dry else "dry run: tiny modules"
    _e2e(ctx, "e2e_ltxv", "0.9.8 13B distilled", size, run, flops, note, video_seconds=frames / fps)


def case_e2e_ltx2(ctx: Ctx) -> None:
    """LTX-2 19B distilled two-stage (preset ltx-2-19b-distilled) at its default 1536x1024x121."""
    from ltx.ltx2 import patchify
    from ltx.ltx2.audio_vae import AudioVAE, AudioVAEConfig
    from ltx.ltx2.pipelines import AVModels, AVRequest, Prompt, distilled
    from ltx.ltx2.transformer import AVTransformer, AVTransformerConfig
    from ltx.ltx2.upsampler import UPSAMPLER_PRESETS, LatentUpsampler2
    from ltx.ltx2.vocoder import VOCODER_METADATA, VocoderConfig, build_vocoder
    from ltx.presets import load_preset
    from tools.bench_ltx2 import transformer_config

    preset = load_preset("ltx-2-19b-distilled")
    av, gen = preset.av, preset.generation
    total_blocks = 48
    if ctx.dry:
        height, width, frames, text = 128, 128, 9, 16
        blocks = 2
        t_cfg = transformer_config(ltx2_spec(ctx, "19b", blocks, (1, 1, 1), 1, 1))
        total_blocks = blocks
        vae_base, up_cfg = 8, replace(UPSAMPLER_PRESETS["spatial-x2"], mid_channels=32, num_blocks_per_stage=1)
        vocoder_meta = {**VOCODER_METADATA["19B"], "upsample_initial_channel": 32}
    else:
        height, width, frames, text = gen.height, gen.width, gen.num_frames, gen.text_tokens
        fits = torch.cuda.get_device_properties(ctx.device).total_memory >= 75 * 2**30
        blocks = total_blocks if fits else ctx.args.e2e_blocks
        t_cfg = replace(AVTransformerConfig.ltx2_19b(), num_layers=blocks)
        vae_base, up_cfg, vocoder_meta = 128, UPSAMPLER_PRESETS["spatial-x2"], VOCODER_METADATA["19B"]
    size = f"{width}x{height}x{frames}"
    transformer = random_module(lambda: AVTransformer(t_cfg), ctx, seed=1)
    vae = random_module(lambda: _ltx2_vae_module("19b", vae_base), ctx, seed=2)
    models = AVModels(transformer=transformer, vae=vae,
                      audio_vae=random_direct(lambda: AudioVAE(AudioVAEConfig()), ctx, seed=3),
                      vocoder=random_direct(lambda: build_vocoder(VocoderConfig.from_metadata(vocoder_meta)), ctx,
                                            seed=4),
                      upsampler=random_direct(lambda: LatentUpsampler2(up_cfg), ctx, seed=5))
    prompt = Prompt(video=randn(ctx, 1, text, t_cfg.caption_channels, seed=6),
                    audio=randn(ctx, 1, text, t_cfg.caption_channels, seed=7))
    sigmas, sigmas2 = torch.tensor(av.sigmas), torch.tensor(av.stage_2_sigmas)
    fps = gen.fps
    audio_tokens = patchify.audio_latent_frames_for_video(frames, fps)
    flops, steps = 0.0, []
    for k, (h, w) in ((len(sigmas) - 1, (height // 2, width // 2)), (len(sigmas2) - 1, (height, width))):
        n = grid_tokens(patchify.video_latent_shape(frames, h, w))
        flops += k * ltx2_forward_flops(replace(t_cfg, num_layers=total_blocks), n, audio_tokens, text)
        steps.append(f"{k} steps at {w}x{h} ({n}+{audio_tokens} tokens)")
    flops += meta_flops(lambda: _ltx2_vae_module("19b", vae_base),
                        lambda m: m.decode(torch.randn(1, 128, *patchify.video_latent_shape(frames, height, width))))

    def run(clock: StepClock) -> None:
        request = AVRequest(height=height, width=width, num_frames=frames, fps=fps, sigmas=sigmas,
                            stage_2_sigmas=sigmas2, generator=torch.Generator(ctx.device).manual_seed(0),
                            dtype=ctx.dtype, on_step=lambda stage, i, v, a: clock.step(stage))
        distilled(models, prompt, request)

    scale = total_blocks / blocks
    note = "; ".join(steps) + ("" if ctx.dry else f"; {blocks} of 48 blocks built" + (
        f", transformer stages scaled x{scale:.0f}" if scale != 1 else "") + "; VAE decoder, audio VAE, vocoder, "
        "upsampler at real size, random weights; text states random (Gemma excluded)")
    _e2e(ctx, "e2e_ltx2", "LTX-2 19B distilled", size, run, flops, note, video_seconds=frames / fps,
         scale_stages=scale)


def case_step_cache(ctx: Ctx) -> None:
    if missing("ltx.core.step_cache"):
        ctx.skip("step_cache", "-", "-", "all", "module missing (ltx.core.step_cache)")
        return
    from ltx.core.step_cache import CachePolicy

    # the configs/cache defaults (teacache 0.05, first_block 0.1) and one more aggressive TeaCache point
    policies = [CachePolicy("none"), CachePolicy("teacache", threshold=0.05), CachePolicy("teacache", threshold=0.1),
                CachePolicy("first_block", threshold=0.1)]
    steps = 4 if ctx.dry else 20
    for family, setup in (("0.9.x 2B", _cache_setup_dit),
                          ("LTX-2 19B " + ("tiny width" if ctx.dry else "width, 8 blocks"), _cache_setup_av)):
        if ctx.time_left() <= 0:
            ctx.skip("step_cache", family, "-", "all", "time budget (--budget-s)")
            continue
        try:
            model, sample, sigmas, size = setup(ctx, steps)
            _step_cache_runs(ctx, family, size, model, sample, sigmas, policies, steps)
        except Exception as e:
            ctx.fail("step_cache", family, "-", "all", e)
        free_memory()


def _step_cache_runs(ctx: Ctx, family: str, size: str, model: nn.Module, sample: Callable[[], object],
                     sigmas: Tensor, policies: list, steps: int) -> None:
    """The same sampling loop under each policy (the first: nothing skipped, the baseline)."""
    from ltx.core.step_cache import cached

    base_out, base_ms = None, None
    for policy in policies:
        name = "uncached" if policy.kind == "none" else f"{policy.kind} {policy.threshold:g}"
        result = []

        def run(policy=policy, result=result):
            with cached(model, policy, [sigmas]) as cache:
                result[:] = [sample(), cache.stats]

        timing = time_call(ctx, run, warmup=1, reps=min(ctx.reps, 3))
        out, stats = result
        base_out = out if base_out is None else base_out
        base_ms = base_ms or timing["ms"]
        ratios = {"speedup": base_ms / timing["ms"], "forwards run": stats["computed"] / stats["forwards"]}
        ctx.add("step_cache", family, size, name, timing=timing, ratios=ratios, diff=max_diff(out, base_out),
                note=f"{stats['computed']} of {stats['forwards']} forwards computed, {steps} steps", cache_stats=stats)


def _cache_setup_dit(ctx: Ctx, steps: int):
    from ltx.ltxv.guidance import TextConditioning
    from ltx.ltxv.pipelines import SchedulerSpec, denoise_pass, pass_sigmas
    from ltx.presets import PassConfig

    cfg = dit_configs(ctx)["0.9.x 2B"]
    dit = new_dit(cfg, ctx)
    h, w, frames = (64, 96, 9) if ctx.dry else (512, 768, 121)
    text = 8 if ctx.dry else 128
    p = PassConfig(num_inference_steps=steps)
    tokens = (frames // 8 + 1) * (h // 32) * (w // 32)
    sigmas = pass_sigmas(p, tokens, SchedulerSpec())
    context = TextConditioning(randn(ctx, 1, text, cfg.caption_channels, seed=4),
                               torch.ones(1, text, device=ctx.device))

    def sample():
        return denoise_pass(dit, None, context, p, SchedulerSpec(), height=h, width=w, num_frames=frames, fps=25.0,
                            generator=torch.Generator(ctx.device).manual_seed(0))

    return dit, sample, sigmas, f"{w}x{h}x{frames} ({tokens} tokens)"


def _cache_setup_av(ctx: Ctx, steps: int):
    from ltx.ltx2.conditioning import conditioned_states
    from ltx.ltx2.pipelines import Prompt, sample
    from ltx.ltx2.sched import ltx2_sigmas
    from ltx.ltx2.transformer import AVTransformer
    from tools.bench_ltx2 import transformer_config

    cfg = transformer_config(ltx2_spec(ctx, "19b", 2 if ctx.dry else 8, (1, 1, 1), 1, 1))
    model = random_module(lambda: AVTransformer(cfg), ctx, seed=1)
    h, w, frames = (64, 96, 9) if ctx.dry else (512, 768, 121)
    text = ltx2_sizes(ctx)[1]
    sigmas = ltx2_sigmas(steps)
    prompt = Prompt(video=randn(ctx, 1, text, cfg.caption_channels, seed=6),
                    audio=randn(ctx, 1, text, cfg.caption_channels, seed=7))

    def run():
        v, a = conditioned_states(frames, h, w, 24.0, [], batch=1, dtype=ctx.dtype, device=ctx.device,
                                  generator=torch.Generator(ctx.device).manual_seed(0))
        v, a = sample(model, v, a, sigmas, prompt)
        return v.x, a.x

    tokens = (frames // 8 + 1) * (h // 32) * (w // 32)
    return model, run, sigmas, f"{w}x{h}x{frames} ({tokens} video tokens)"


def case_sp(ctx: Ctx) -> None:
    if missing("ltx.core.sequence_parallel"):
        ctx.skip("sp", "-", "-", "all", "module missing (ltx.core.sequence_parallel)")
        return
    if ctx.cuda and torch.cuda.device_count() < 2:
        ctx.skip("sp", "-", "-", "ulysses", "1 GPU")
        return
    counts = [2] if not ctx.cuda else sorted({2, torch.cuda.device_count()})
    for n in counts:  # one torchrun per process count; each rank runs both families
        if ctx.time_left() <= 0:
            ctx.skip("sp", "-", "-", f"ulysses x{n}", "time budget (--budget-s)")
            continue
        spec = {"mode": ctx.mode, "warmup": ctx.warmup, "reps": ctx.reps}
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", str(Path(__file__).resolve()), "--sp-worker", json.dumps(spec)]
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=max(120, ctx.time_left() + 60))
            results = [json.loads(line.removeprefix("SPRESULT ")) for line in r.stdout.splitlines()
                       if line.startswith("SPRESULT ")]
            if r.returncode != 0 or len(results) != 2:
                raise RuntimeError(f"torchrun exited {r.returncode}: {r.stderr.strip().splitlines()[-1:]}")
        except Exception as e:
            ctx.fail("sp", "-", "-", f"ulysses x{n}", e)
            continue
        for res in results:
            single, para = res["single"], res["sp"]
            speedup = single["ms"] / para["ms"]
            ctx.add("sp", res["model"], res["size"], "1 process", timing=single, flops=res["flops"])
            ctx.add("sp", res["model"], res["size"], f"ulysses x{n}", timing=para, flops=res["flops"],
                    diff=res["diff"], ratios={"speedup": speedup, "efficiency": speedup / n},
                    note="CPU gloo (dry run)" if not ctx.cuda else "")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sp_worker(spec: dict) -> None:
    """One torchrun rank: the same random model and inputs on every rank (seeded), one forward timed on its own, then
    under Ulysses sequence parallelism; rank 0 prints one SPRESULT line per family."""
    from ltx.core.parallel import init_distributed
    from tools.bench_ltx2 import transformer_config

    dist = init_distributed()
    dry = spec["mode"] == "dry"
    ctx = Ctx(argparse.Namespace(), dist.device, torch.float32 if dry else torch.bfloat16, spec["mode"],
              spec["warmup"], spec["reps"], None)
    grid = DIT_TOKENS["dry" if dry else "full"][-1]
    n = grid_tokens(grid)
    _sp_dit(dist, ctx, grid)
    free_memory()
    audio, text = ltx2_sizes(ctx)
    spec2 = ltx2_spec(ctx, "19b", 2 if dry else 8, grid, audio, text)
    model, fn = ours_only_transformer(ctx, spec2)
    _sp_family(dist, ctx, "LTX-2 19B " + ("tiny width" if dry else "width, 8 blocks"), f"{n}+{audio} tokens", model, fn,
               ltx2_forward_flops(transformer_config(spec2), n, audio, text))
    dist.destroy()


def _sp_dit(dist, ctx: Ctx, grid) -> None:
    cfg = dit_configs(ctx)["0.9.x 2B"]
    text = 8 if ctx.dry else 128
    n = grid_tokens(grid)
    dit = new_dit(cfg, ctx)
    inputs = dit_inputs(ctx, cfg, grid, text)
    _sp_family(dist, ctx, "0.9.x 2B", f"{n} tokens", dit, lambda: dit(*inputs), dit_forward_flops(cfg, n, text))


def _sp_family(dist, ctx: Ctx, name: str, size: str, model: nn.Module, fn: Callable[[], object], flops: float) -> None:
    from ltx.core.sequence_parallel import apply_sequence_parallel

    with torch.inference_mode():
        single_out = fn()
    single = time_call(ctx, fn)
    handle = apply_sequence_parallel(model, mode="ulysses")
    try:
        with torch.inference_mode():
            sp_out = fn()
        dist.barrier()
        para = time_call(ctx, fn)
    finally:
        handle.remove()
    if dist.is_main:
        print("SPRESULT " + json.dumps({"single": single, "sp": para, "diff": max_diff(sp_out, single_out),
                                        "flops": flops, "size": size, "model": name}), flush=True)


CASE_FUNCS = {"gemm": case_gemm, "attention": case_attention, "dit": case_dit, "ltx2_block": case_ltx2_block,
              "vae": case_vae, "e2e_ltxv": case_e2e_ltxv, "e2e_ltx2": case_e2e_ltx2, "step_cache": case_step_cache,
              "sp": case_sp}


# ------------------------------------------------------------------------------------------------ output


def _num(v: float | None, digits: int = 3) -> str:
    if v is None:
        return ""
    if v == 0:
        return "0"
    return f"{v:.{max(0, digits - 1 - int(math.floor(math.log10(abs(v)))))}f}" if abs(v) < 10 ** digits else f"{v:.0f}"


def table(rows: list[dict]) -> str:
    """The markdown table of all rows (the README's format)."""
    head = "| case | model | size | impl | ms | TFLOP | TFLOP/s | MFU | ratios | peak GiB | max abs diff | note |"
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        ratios = ", ".join(f"{v:.2f}x {k}" if k not in ("of FA3", "of datasheet peak", "forwards run", "efficiency")
                           else f"{v:.0%} {k}" for k, v in r["ratios"].items())
        note = r["note"] if r["status"] == "ok" else f"{r['status']}: {r['note']}"
        mfu = "" if r["mfu"] is None else f"{r['mfu']:.1%}"
        diff = "" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.1e}"
        peak = "" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
        lines.append(f"| {r['case']} | {r['model']} | {r['size']} | {r['impl']} | {_num(r['ms'])} | "
                     f"{_num(r['tflop'])} | {_num(r['tflops'])} | {mfu} | {ratios} | {peak} | {diff} | {note} |")
    return "\n".join(lines)


def write_report(path: Path | None, report: dict) -> None:
    if path is None:
        return
    from ltx.core.checkpoint import write_json

    write_json(path, report, overwrite=True)


# ------------------------------------------------------------------------------------------------ main


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        print(f"error: {message} (--help lists the options)", file=sys.stderr)
        raise SystemExit(2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = _Parser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, fp32, every case at tiny sizes (a smoke run)")
    ap.add_argument("--quick", action="store_true", help="fewer sizes and repeats, budget 210 s")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma list of {', '.join(CASES)} (default all)")
    ap.add_argument("--out", type=Path, help="write the JSON report here (rewritten after every case)")
    ap.add_argument("--warmup", type=int, help="untimed calls before timing (default 2, quick / dry 1)")
    ap.add_argument("--reps", type=int, help="timed calls, median reported (default 5, quick / dry 3)")
    ap.add_argument("--budget-s", type=float, help="wall-clock budget shared by the cases (default 450, quick 210)")
    ap.add_argument("--e2e-blocks", type=int, default=16,
                    help="LTX-2 e2e transformer blocks on cards under 75 GiB (time scaled to 48)")
    ap.add_argument("--sp-worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.sp_worker:
        return args
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    bad = [c for c in args.cases if c not in CASES]
    if bad or not args.cases:
        ap.error(f"--cases {','.join(args.cases) or repr('')}: give a comma list of {', '.join(CASES)}")
    if args.dry_run and args.quick:
        ap.error("--dry-run and --quick do not go together (the dry run is already the smallest)")
    for name, low in (("warmup", 0), ("reps", 1), ("e2e_blocks", 1)):
        v = getattr(args, name)
        if v is not None and v < low:
            ap.error(f"--{name.replace('_', '-')} {v}: give an integer >= {low}")
    if args.budget_s is not None and not args.budget_s > 0:
        ap.error(f"--budget-s {args.budget_s}: give a number of seconds > 0")
    if not args.dry_run and not torch.cuda.is_available():
        ap.error("no CUDA device: this benchmark needs a GPU (or --dry-run for the CPU smoke run)")
    return args


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    if args.sp_worker:
        return sp_worker(json.loads(args.sp_worker))
    mode = "dry" if args.dry_run else "quick" if args.quick else "full"
    device = torch.device("cpu") if args.dry_run else torch.device("cuda", torch.cuda.current_device())
    dtype = torch.float32 if args.dry_run else torch.bfloat16
    warmup = args.warmup if args.warmup is not None else {"full": 2, "quick": 1, "dry": 0}[mode]
    reps = args.reps if args.reps is not None else {"full": 5, "quick": 3, "dry": 1}[mode]
    budget = args.budget_s or {"full": 450.0, "quick": 210.0, "dry": 600.0}[mode]
    info = device_info(device)
    peak = info["peak_bf16_tflops"] * 1e12 if info["peak_bf16_tflops"] else None
    ctx = Ctx(args, device, dtype, mode, warmup, reps, peak)
    torch.manual_seed(0)
    started, t_start = datetime.now(timezone.utc), time.monotonic()
    end = t_start + budget
    report = {"schema": "ltx.bench_gpu/1", "mode": mode, "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
              "started": started.isoformat(timespec="seconds"), "device": info, "versions": versions(),
              "protocol": {"warmup": warmup, "reps": reps, "statistic": "median",
                           "timer": "cuda events" if device.type == "cuda" else "perf_counter",
                           "dtype": str(dtype).removeprefix("torch."), "budget_s": budget,
                           "memory": "torch.cuda.max_memory_allocated over the timed calls (weights included)"},
              "constants": {"fa3_hdim128_tflops": FA3_HDIM128, "fa3_source": FA3_SOURCE,
                            "peak_bf16_tflops": dict(PEAK_BF16_TFLOPS)},
              "flops": FLOP_FORMULAS,
              "cases": {}, "rows": ctx.rows}
    shares = dict(SHARES)
    if device.type == "cuda" and torch.cuda.device_count() < 2:
        shares["sp"] = 0  # one GPU: the sp case only reports that it is skipped
    for i, case in enumerate(args.cases):
        now = time.monotonic()
        remaining = sum(shares[c] for c in args.cases[i:]) or 1
        ctx.deadline = now + shares[case] / remaining * max(0.0, end - now)
        print(f"[{now - t_start:6.1f} s] {case} (until +{ctx.deadline - t_start:.0f} s)", file=sys.stderr, flush=True)
        t0, before = time.monotonic(), len(ctx.rows)
        status = "ok"
        try:
            CASE_FUNCS[case](ctx)
        except Exception as e:  # a case that fails as a whole (building a model, a missing package)
            ctx.fail(case, "-", "-", "all", e)
            status = "failed"
        free_memory()
        rows = ctx.rows[before:]
        if status == "ok" and rows and all(r["status"] != "ok" for r in rows):
            status = "failed" if any(r["status"] == "failed" for r in rows) else "skipped"
        report["cases"][case] = {"status": status, "seconds": round(time.monotonic() - t0, 1)}
        report["wall_s"] = round(time.monotonic() - t_start, 1)
        write_report(args.out, report)
    text = table(ctx.rows)
    head = (f"{info['name']} ({info['type']}), torch {torch.__version__}"
            + (f", CUDA {torch.version.cuda}" if device.type == "cuda" else "") + f", {report['protocol']['dtype']}; "
            f"median of {reps} after {warmup} warm-up; MFU vs {info['peak_note']}; ratios: time ours / time reference "
            "(< 1 = ours faster) unless labelled")
    if mode == "dry":
        head = "CPU DRY RUN (tiny sizes, fp32): checks that every case runs; the numbers are not measurements. " + head
    print(f"\n{head}\n\n{text}\n")
    report["wall_s"] = round(time.monotonic() - t_start, 1)
    write_report(args.out, report)
    if args.out:
        print(f"wrote {args.out}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
