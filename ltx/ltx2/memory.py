"""Memory plan for training LTX-2 19B / LTX-2.3 22B: what one GPU holds during a LoRA or full fine-tuning step.

    plan("19b", "lora", video_tokens=6144, audio_tokens=126, text_tokens=1024, base_dtype="bf16",
         checkpointing=True, optimizer="adamw")        # {"base": GB, ..., "total": GB}
    fits_table()                                        # which settings fit 24 / 32 / 48 / 80 GB at 768x512x121
    markdown(fits_table())                              # the README table

Items (GB = 1e9 bytes; a card's "24 GB" is taken at face value, so the verdicts err on the safe side):
- base: the frozen transformer (LoRA) or the trained one (full), by dtype: bf16 2 B, fp32 4 B per parameter. An
  fp8 base (1 B) is listed as a future line item: it needs a quantized base, which this codebase does not have.
- text connectors: the two Embeddings1DConnectors, run every step on cached features (the feature extractor
  and Gemma stay out of training), frozen, in the base dtype.
- adapters / gradients / optimizer: LoRA adapters are fp32 (4 B), their gradients fp32 (4 B); AdamW keeps two
  fp32 moments (8 B), 8-bit AdamW (bitsandbytes) two 8-bit moments (2 B; its block statistics are ignored). Full
  fine-tuning trains the base in its own dtype (gradients and moments likewise).
- activations: what the autograd graph holds at its peak, per token. Without checkpointing every block keeps its
  activations: tokens * (layers * per_block + fixed). With checkpointing per block only each block's input (the
  residual streams, D wide per video token, Da per audio token) stays, and one block at a time is recomputed in
  backward: layers * kept + tokens * recompute. `per_block`, `fixed` and `recompute` are MEASURED
  (tools/bench_finetune.py --ltx2 --fit, see `ACTIVATIONS`: peak minus what was resident before the first step
  minus the adapter state, per (video + audio) token); `kept` is the closed form. Linear in tokens: the attention
  kernels keep no T x T matrix. Text tokens are in the constants at the measured text length only.
- FSDP over `gpus` > 1: base, adapters, gradients and optimizer are sharded (/ gpus); each GPU also holds two
  gathered blocks at a time (the one computing and the prefetched one); activations are per GPU (batch 1 each).

Not counted: the CUDA context and allocator fragmentation (`reserve_gb`, default 2 GB, is added before a verdict)
and validation sampling (which the official trainer runs with the optimizer state offloaded).
"""

from __future__ import annotations

from dataclasses import dataclass

from ltx.ltx2.patchify import audio_latent_frames_for_video, video_latent_shape
from ltx.ltx2.text import TextConnectorConfig
from ltx.ltx2.transformer import AVTransformerConfig

GB = 1e9
MODELS = ("19b", "22b")
MODES = ("lora", "full")
BASE_DTYPES = {"bf16": 2, "fp32": 4, "fp8": 1}  # bytes per parameter
OPTIMIZERS = {"adamw": 8, "adamw8bit": 2}  # bytes of optimizer state per trainable fp32 parameter (two moments)
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # the official t2v LoRA config
NOT_IMPLEMENTED = {"fp8": "an fp8 base needs a quantized base (not implemented)"}
CLIP = (121, 512, 768, 24.0)  # frames, height, width, fps of the README's clip


def _config(model: str) -> tuple[AVTransformerConfig, TextConnectorConfig]:
    if model == "19b":
        return AVTransformerConfig.ltx2_19b(), TextConnectorConfig.ltx2_19b()
    if model == "22b":
        return AVTransformerConfig.ltx2_3_22b(), TextConnectorConfig.ltx2_3()
    raise ValueError(f"model={model!r} is not supported (supported: {', '.join(MODELS)})")


# ------------------------------------------------------------------------------------------- parameter counts


def _linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def _attention(query: int, context: int, heads: int, head_dim: int, gated: bool) -> int:
    inner = heads * head_dim
    # to_q, to_k, to_v, to_out.0, q_norm and k_norm weights, 2.3's per-head gate logits
    return (_linear(query, inner) + 2 * _linear(context, inner) + _linear(inner, query) + 2 * inner
            + (_linear(query, heads) if gated else 0))


def _feed_forward(dim: int) -> int:
    return _linear(dim, 4 * dim) + _linear(4 * dim, dim)


def _adaln(dim: int, rows: int) -> int:
    return _linear(256, dim) + _linear(dim, dim) + _linear(dim, rows * dim)  # timestep MLP, then the rows


def block_parameters(cfg: AVTransformerConfig) -> int:
    """Parameters of one AVBlock (closed form)."""
    D, Da, H, Ha = cfg.inner_dim, cfg.audio_inner_dim, cfg.num_attention_heads, cfg.audio_num_attention_heads
    dh, dha, g, rows = cfg.attention_head_dim, cfg.audio_attention_head_dim, cfg.apply_gated_attention, cfg.adaln_rows
    video = 2 * _attention(D, D, H, dh, g) + _feed_forward(D) + rows * D
    audio = 2 * _attention(Da, Da, Ha, dha, g) + _feed_forward(Da) + rows * Da
    cross = _attention(D, Da, Ha, dha, g) + _attention(Da, D, Ha, dha, g) + 5 * (D + Da)
    prompt = 2 * (D + Da) if cfg.cross_attention_adaln else 0
    return video + audio + cross + prompt


def transformer_parameters(cfg: AVTransformerConfig) -> int:
    """Parameters of the whole AVTransformer (closed form; equals `sum(p.numel())` of the module)."""
    D, Da, rows = cfg.inner_dim, cfg.audio_inner_dim, cfg.adaln_rows
    outside = _linear(cfg.in_channels, D) + _linear(cfg.audio_in_channels, Da)
    if not cfg.caption_proj_before_connector:  # 19B: caption projections in the transformer
        outside += _linear(cfg.caption_channels, D) + _linear(D, D)
        outside += _linear(cfg.caption_channels, Da) + _linear(Da, Da)
    outside += _adaln(D, rows) + _adaln(Da, rows) + _adaln(D, 4) + _adaln(Da, 4) + _adaln(D, 1) + _adaln(Da, 1)
    if cfg.cross_attention_adaln:
        outside += _adaln(D, 2) + _adaln(Da, 2)
    outside += 2 * D + _linear(D, cfg.out_channels) + 2 * Da + _linear(Da, cfg.audio_out_channels)  # heads
    return outside + cfg.num_layers * block_parameters(cfg)


def connector_parameters(text: TextConnectorConfig) -> int:
    """Parameters of the two text connectors (EmbeddingsProcessor without its feature extractor)."""
    total = 0
    for heads, head_dim, layers in ((text.video_heads, text.video_head_dim, text.video_layers),
                                    (text.audio_heads, text.audio_head_dim, text.audio_layers)):
        dim = heads * head_dim
        block = _attention(dim, dim, heads, head_dim, text.gated_attention) + _feed_forward(dim)
        total += layers * block + text.num_registers * dim
    return total


def lora_parameters(cfg: AVTransformerConfig, rank: int, targets: tuple[str, ...] = LORA_TARGETS) -> int:
    """Adapter parameters of a rank-`rank` LoRA on `targets` (to_q / to_k / to_v / to_out.0 of the six attentions
    of every block): rank * (in + out) per adapted Linear."""
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    unknown = set(targets) - set(LORA_TARGETS)
    if unknown:
        raise ValueError(f"LoRA targets {sorted(unknown)} are not modelled (supported: {', '.join(LORA_TARGETS)})")
    D, Da = cfg.inner_dim, cfg.audio_inner_dim
    # (query width, context width, inner width) of attn1, attn2, audio_attn1, audio_attn2, a2v, v2a
    attentions = ((D, D, D), (D, D, D), (Da, Da, Da), (Da, Da, Da), (D, Da, Da), (Da, D, Da))
    shapes = {"to_q": lambda q, c, i: (q, i), "to_k": lambda q, c, i: (c, i), "to_v": lambda q, c, i: (c, i),
              "to_out.0": lambda q, c, i: (i, q)}
    per_block = sum(rank * sum(shapes[t](*a)) for a in attentions for t in targets)
    return cfg.num_layers * per_block


# ------------------------------------------------------------------------------------------- activations


@dataclass(frozen=True)
class Activations:
    """Measured activation bytes per (video + audio) token. Without checkpointing: `per_block` for each block,
    `fixed` once per step (the AdaLN modulations, text contexts and heads every block shares). With
    checkpointing: `recompute` once per step (the peak while one block is recomputed and back-propagated, with
    the shared tensors), plus each block's kept input (closed form, `activation_bytes`). `source` says where the
    numbers came from."""

    per_block: float
    fixed: float
    recompute: float
    source: str


# OURS (ltx.ltx2.training.AVTrainModel + av_loss, LoRA rank 32) on the 19B layout at its real widths, one sample
# of 384 video + 126 audio tokens and 256 text tokens, CPU (peak RSS, fresh process per run):
# `python tools/bench_finetune.py --ltx2 --fit --steps 1` on 2 cores of an AMD EPYC, torch 2.13.
# per_block / fixed: slope / intercept of the no-checkpointing runs at 1 and 2 blocks (564 / 1042 MiB);
# recompute: the checkpointing run at 2 blocks (912 MiB) less its 2 kept block inputs, per token.
_FP32_SOURCE = ("tools/bench_finetune.py --ltx2 --fit (CPU, fp32, 19B widths, 384 video + 126 audio + 256 text "
                "tokens, 1 and 2 blocks; peak RSS)")
ACTIVATIONS: dict[str, Activations] = {
    "fp32": Activations(per_block=982_534, fixed=178_770, recompute=1_846_600, source=_FP32_SOURCE),
    # NOT measured: bf16 autocast on a CPU without bf16 matmul units ran > 25 min per step at this size. Half the
    # fp32 values (every activation 2 bytes instead of 4) until `--ltx2 --fit --device cuda` measures them; autocast
    # keeps some tensors (norm statistics, the loss) in fp32, so the truth is a little higher.
    "bf16": Activations(per_block=982_534 / 2, fixed=178_770 / 2, recompute=1_846_600 / 2,
                        source="DERIVED, not measured: half of the fp32 constants of tools/bench_finetune.py --ltx2 "
                               "--fit (CPU); to be replaced by a --device cuda measurement"),
}


def kept_bytes(cfg: AVTransformerConfig, video_tokens: int, audio_tokens: int, compute: str) -> int:
    """What activation checkpointing keeps per block: its input, the two residual streams (B, T, D) + (B, Ta, Da)
    in the compute dtype."""
    width = 2 if compute == "bf16" else 4
    return width * (video_tokens * cfg.inner_dim + audio_tokens * cfg.audio_inner_dim)


def activation_bytes(cfg: AVTransformerConfig, video_tokens: int, audio_tokens: int, compute: str,
                     checkpointing: bool) -> float:
    """Bytes the autograd graph holds at its peak (see the module docstring) for one sample."""
    a = ACTIVATIONS[compute]
    tokens = video_tokens + audio_tokens
    if not checkpointing:
        return tokens * (cfg.num_layers * a.per_block + a.fixed)
    return cfg.num_layers * kept_bytes(cfg, video_tokens, audio_tokens, compute) + tokens * a.recompute


# ------------------------------------------------------------------------------------------- the plan


def _check(name: str, value: object, valid) -> None:
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not supported (supported: {', '.join(map(str, valid))})")


def plan(model: str = "19b", mode: str = "lora", *, video_tokens: int, audio_tokens: int = 0, text_tokens: int = 1024,
         base_dtype: str = "bf16", checkpointing: bool = True, optimizer: str = "adamw", rank: int = 32,
         gpus: int = 1) -> dict[str, float | str]:
    """GB per item for one training step at batch 1 per GPU, and "total". A setting this codebase cannot run
    yet (an fp8 base) carries a "not_implemented" note. `text_tokens` only checks its range: the measured
    activation constants include the text cross-attention at the measured length."""
    cfg, text = _config(model)
    _check("mode", mode, MODES)
    _check("base_dtype", base_dtype, BASE_DTYPES)
    _check("optimizer", optimizer, OPTIMIZERS)
    for name, v, low in (("video_tokens", video_tokens, 1), ("audio_tokens", audio_tokens, 0),
                         ("text_tokens", text_tokens, 1), ("rank", rank, 1), ("gpus", gpus, 1)):
        if not isinstance(v, int) or v < low:
            raise ValueError(f"{name}={v!r} is not supported (supported: an integer >= {low})")
    if mode == "full" and base_dtype == "fp8":
        raise ValueError("base_dtype='fp8' is not supported for full fine-tuning (supported: bf16, fp32)")
    base_bytes = BASE_DTYPES[base_dtype]
    n_base = transformer_parameters(cfg)
    if mode == "lora":
        n_train, train_bytes, state_bytes = lora_parameters(cfg, rank), 4, OPTIMIZERS[optimizer]
        base = n_base * base_bytes
        adapters = n_train * train_bytes
    else:  # the transformer itself trains, in its dtype; 8-bit moments whatever the dtype
        n_train, train_bytes = n_base, base_bytes
        state_bytes = 2 * base_bytes if optimizer == "adamw" else OPTIMIZERS[optimizer]
        base, adapters = n_base * base_bytes, 0
    compute = "fp32" if base_dtype == "fp32" else "bf16"  # a bf16 or fp8 base computes under bf16 autocast
    out: dict[str, float | str] = {
        "base": base / gpus / GB,
        "text connectors": connector_parameters(text) * (2 if base_dtype == "fp8" else base_bytes) / gpus / GB,
        "adapters": adapters / gpus / GB,
        "gradients": n_train * train_bytes / gpus / GB,
        "optimizer": n_train * state_bytes / gpus / GB,
        "fsdp gathered blocks": 2 * block_parameters(cfg) * base_bytes / GB if gpus > 1 else 0.0,
        "activations": activation_bytes(cfg, video_tokens, audio_tokens, compute, checkpointing) / GB,
    }
    out["total"] = sum(v for v in out.values() if isinstance(v, float))
    if base_dtype in NOT_IMPLEMENTED:
        out["not_implemented"] = NOT_IMPLEMENTED[base_dtype]
    return out


def clip_tokens(frames: int = CLIP[0], height: int = CLIP[1], width: int = CLIP[2], fps: float = CLIP[3]
                ) -> tuple[int, int]:
    """(video tokens, audio tokens) of a clip: the latent grid's size and its soundtrack's latent frames."""
    f, h, w = video_latent_shape(frames, height, width)
    return f * h * w, audio_latent_frames_for_video(frames, fps)


@dataclass(frozen=True)
class Setting:
    mode: str
    base_dtype: str
    checkpointing: bool
    optimizer: str
    gpus: int = 1

    def label(self, rank: int = 32) -> str:
        parts = [f"LoRA r{rank}" if self.mode == "lora" else "full", f"{self.base_dtype} base",
                 "checkpointing" if self.checkpointing else "no checkpointing",
                 "8-bit AdamW" if self.optimizer == "adamw8bit" else "AdamW"]
        if self.gpus > 1:
            parts.append(f"FSDP x {self.gpus} (per GPU)")
        return ", ".join(parts)


SETTINGS = (
    Setting("lora", "fp32", False, "adamw"),
    Setting("lora", "bf16", False, "adamw"),
    Setting("lora", "bf16", True, "adamw"),
    Setting("lora", "bf16", True, "adamw8bit"),
    Setting("lora", "fp8", True, "adamw8bit"),
    Setting("lora", "bf16", True, "adamw", gpus=2),
    Setting("lora", "bf16", True, "adamw", gpus=4),
    Setting("full", "fp32", True, "adamw"),
    Setting("full", "fp32", True, "adamw", gpus=8),
    Setting("full", "bf16", True, "adamw8bit", gpus=4),
)
CARDS = (24, 32, 48, 80)


def fits_table(model: str = "19b", *, video_tokens: int | None = None, audio_tokens: int | None = None,
               text_tokens: int = 1024, rank: int = 32, settings: tuple[Setting, ...] = SETTINGS,
               cards: tuple[int, ...] = CARDS, reserve_gb: float = 2.0) -> list[dict]:
    """One row per setting: its plan and, per card size, whether total + reserve_gb fits. Default tokens: the
    768x512x121 clip with its sound (6,144 video + 126 audio)."""
    if video_tokens is None or audio_tokens is None:
        v, a = clip_tokens()
        video_tokens = v if video_tokens is None else video_tokens
        audio_tokens = a if audio_tokens is None else audio_tokens
    rows = []
    for s in settings:
        p = plan(model, s.mode, video_tokens=video_tokens, audio_tokens=audio_tokens, text_tokens=text_tokens,
                 base_dtype=s.base_dtype, checkpointing=s.checkpointing, optimizer=s.optimizer, rank=rank,
                 gpus=s.gpus)
        rows.append({"setting": s, "label": s.label(rank), "plan": p,
                     "fits": {c: p["total"] + reserve_gb <= c for c in cards}})
    return rows


def markdown(rows: list[dict]) -> str:
    """The fits table as markdown: GB per main item, total, and a yes / no per card."""
    cards = list(rows[0]["fits"]) if rows else []
    head = ["setting", "base", "text connectors", "adapters + grads + optimizer (+ FSDP blocks)", "activations",
            "total GB",
            *[f"{c} GB" for c in cards]]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        p = r["plan"]
        state = p["adapters"] + p["gradients"] + p["optimizer"] + p["fsdp gathered blocks"]
        mark = " *" if "not_implemented" in p else ""
        lines.append("| " + " | ".join([
            r["label"] + mark, f"{p['base']:.1f}", f"{p['text connectors']:.1f}", f"{state:.1f}",
            f"{p['activations']:.1f}", f"{p['total']:.1f}", *("yes" if r["fits"][c] else "no" for c in cards),
        ]) + " |")
    if any("not_implemented" in r["plan"] for r in rows):
        lines.append("\n\\* " + NOT_IMPLEMENTED["fp8"] + ".")
    return "\n".join(lines)

