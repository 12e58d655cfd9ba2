"""The LTX-2 training objective: training modes, per-sample random draws, the model that trains, the loss.

References: the official LTX-2 trainer (ltx-trainer, `training_strategies/flexible.py` with `trainer.py`
`_training_step`, `timestep_samplers.py`, `configs/*.yaml`), which this reproduces number for number on the same
draws (tests/ltx2/test_ltx2_training.py runs its recipe on ltx-core's modules).

Flow matching on both streams (the convention of ltx.core.losses): a generated stream's tokens are
x = (1 - sigma) x0 + sigma noise and the target is v = noise - x0. Per token:
- generated tokens: noised, per-token timestep sigma, in the loss;
- clean conditioning tokens (`cond`: an image-to-video first frame, an extension prefix / suffix): x = x0,
  timestep 0, out of the loss, while the step sigma stays the stream's sigma;
- IC-LoRA reference tokens: the clean reference clip prepended, timestep 0, out of the loss, cut off the output;
- a clean-condition stream (`Role.generated` False, e.g. the audio of audio-to-video): x = x0, timesteps 0 and
  step sigma 0 everywhere, no loss; an absent stream (None) is not in the forward at all.
Video and audio draw their sigmas independently, each shifted by its own token count: the two streams never
share a timestep (a shared one is the bug `check_sigma_independence` guards against).

Shapes: B batch · T tokens of a stream · C latent channels (128 both) · R reference tokens · S text tokens.

    mode = training_mode("i2v")
    d = [draw(mode, sampler, step_generator(seed, step, j), video_shape=(128, f, h, w), audio_shape=(Ta, 128),
              caption_dropout=0.1) for j in batch]
    video = StreamBatch(x0, torch.stack([x.video_noise for x in d]), sigma, cond, positions, generated=True)
    per_sample, parts = av_loss(model, video, audio, text_features)     # (B,), {"video": (B,), "audio": (B,)}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor, nn

from ltx.core.losses import SigmaSampler, masked_flow_matching_loss
from ltx.ltx2.transformer import StreamInput

STREAMS = ("video", "audio")


# ------------------------------------------------------------------------------------------------ modes


@dataclass(frozen=True)
class Role:
    """What one stream does in a training mode.

    generated: True = noised, predicted and in the loss; False = a clean condition (sigma 0, no loss).
    first_frame_p (video only): per-sample probability that latent frame 0 is clean (image-to-video); never on a
      one-frame latent, where nothing would be left to learn.
    prefix / suffix: latent frames (video) or latent steps (audio) kept clean at the start / end (extension
      forwards / backwards), each with its per-sample probability prefix_p / suffix_p.
    reference: IC-LoRA; the cached reference clip of this stream is prepended (clean, timestep 0, no loss).
    clean_p: per-sample probability that this generated stream is a clean condition of the whole sample instead
      (all tokens clean, no loss), so that one run also learns the other stream's conditional mode (audio-to-video
      from t2av's audio, video-to-audio from its video). Its step sigma is then the other stream's, as the
      pipelines' frozen streams get the step sigma (ltx.ltx2.pipelines: audio-to-video, video-to-audio). Not in
      the official trainer (one mode per run); 0 keeps the draws exactly the official ones.
    """

    generated: bool
    first_frame_p: float = 0.0
    prefix: int = 0
    prefix_p: float = 1.0
    suffix: int = 0
    reference: bool = False
    suffix_p: float = 1.0
    clean_p: float = 0.0

    def __post_init__(self):
        if not isinstance(self.generated, bool) or not isinstance(self.reference, bool):
            raise ValueError(f"generated and reference must be true or false, got {self.generated!r}, "
                             f"{self.reference!r}")
        for name in ("first_frame_p", "prefix_p", "suffix_p", "clean_p"):
            p = getattr(self, name)
            if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got {p!r}")
        for name in ("prefix", "suffix"):
            n = getattr(self, name)
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(f"{name} is a number of latent frames / steps >= 0, got {n!r}")
        if not self.generated and (self.first_frame_p or self.prefix or self.suffix or self.clean_p):
            raise ValueError("a clean-condition stream (generated=false) is clean everywhere: first_frame_p, "
                             "prefix, suffix and clean_p need generated=true")


@dataclass(frozen=True)
class TrainingMode:
    """Which stream is generated, which is a clean condition, which is absent (None)."""

    name: str
    video: Role | None
    audio: Role | None

    def __post_init__(self):
        if not any(r is not None and r.generated for r in (self.video, self.audio)):
            raise ValueError(f"training mode {self.name!r} generates nothing: at least one of video and audio "
                             "needs generated=true")
        if self.audio is not None and self.audio.first_frame_p:
            raise ValueError(f"training mode {self.name!r}: first_frame_p is for video; audio has prefix / suffix")
        clean = [r.clean_p for r in (self.video, self.audio) if r is not None]
        if sum(clean) and not (len(clean) == 2 and all(r.generated for r in (self.video, self.audio))):
            raise ValueError(f"training mode {self.name!r}: clean_p needs both streams generated (t2av-like modes): "
                             "the other stream is then the one generated")
        if sum(clean) > 1:
            raise ValueError(f"training mode {self.name!r}: video and audio clean_p add up to {sum(clean)} > 1")

    def role(self, stream: str) -> Role | None:
        return getattr(self, stream)


def _mode(name: str, video: Role | None, audio: Role | None) -> TrainingMode:
    return TrainingMode(name, video, audio)


_GEN = Role(generated=True)
_CLEAN = Role(generated=False)
# The official configs (ltx-trainer configs/*.yaml, flexible strategy) each mode mirrors. Their t2v_lora.yaml
# generates audio too: that is `t2av` here; `t2v` is video alone.
MODES: dict[str, TrainingMode] = {m.name: m for m in (
    _mode("t2v", _GEN, None),
    _mode("t2av", _GEN, _GEN),  # t2v_lora.yaml
    _mode("i2v", Role(generated=True, first_frame_p=0.5), _GEN),  # i2v_lora.yaml
    _mode("extend", Role(generated=True, prefix=8), _GEN),  # video_extend_lora.yaml
    _mode("video_suffix", Role(generated=True, suffix=8), _GEN),  # video_suffix_lora.yaml
    _mode("a2v", _GEN, _CLEAN),  # a2v_lora.yaml
    _mode("v2a", _CLEAN, _GEN),  # v2a_lora.yaml
    _mode("t2a", None, _GEN),  # t2a_lora.yaml
    _mode("audio_extend", None, Role(generated=True, prefix=8)),  # audio_extend_lora.yaml
    _mode("audio_suffix", None, Role(generated=True, suffix=8)),  # audio_suffix_lora.yaml
    _mode("ic_lora", Role(generated=True, first_frame_p=0.2, reference=True), None),  # v2v_ic_lora.yaml
    _mode("a2a_ic_lora", None, Role(generated=True, reference=True)),  # a2a_ic_lora.yaml
    _mode("av2av_ic_lora", Role(generated=True, reference=True), Role(generated=True, reference=True)),
)}  # fmt: skip

_ROLE_FIELDS = tuple(f.name for f in fields(Role))


def training_mode(name: str, **overrides) -> TrainingMode:
    """MODES[name] with Role fields overridden.

    A bare field goes to the stream where it makes sense: first_frame_p to the video; the others (prefix,
    prefix_p, suffix, suffix_p, reference) to every generated stream of the mode. `video_<field>` /
    `audio_<field>` name the stream (`video_prefix=2`, `audio_generated=False`). E.g.
    training_mode("i2v", first_frame_p=0.3, prefix=2). Unknown names and bad values: one-line ValueError."""
    if name not in MODES:
        raise ValueError(f"unknown training mode {name!r}; valid modes: {', '.join(MODES)}")
    mode = MODES[name]
    changes: dict[str, dict[str, object]] = {s: {} for s in STREAMS}
    for key, value in overrides.items():
        stream, _, field = key.partition("_")
        if stream in STREAMS and field in _ROLE_FIELDS:
            targets = [stream]
        elif key in _ROLE_FIELDS and key != "generated":
            field = key
            targets = ["video"] if key == "first_frame_p" else [
                s for s in STREAMS if mode.role(s) is not None and mode.role(s).generated]
        else:
            valid = [f for f in _ROLE_FIELDS if f != "generated"] + [f"{s}_{f}" for s in STREAMS for f in _ROLE_FIELDS]
            raise ValueError(f"training mode {name}: unknown override {key!r}; valid: {', '.join(valid)}")
        for s in targets:
            if mode.role(s) is None:
                raise ValueError(f"training mode {name} has no {s} stream, so {key}={value!r} has nothing to set")
            changes[s][field] = value
    try:
        roles = {s: replace(mode.role(s), **changes[s]) if changes[s] else mode.role(s) for s in STREAMS}
        return TrainingMode(name, roles["video"], roles["audio"])
    except ValueError as e:
        raise ValueError(f"training mode {name} with {overrides}: {e}") from None


def sigma_sampler(kind: str = "ltx2", **kwargs) -> SigmaSampler:
    """Training sigmas: kind "ltx2" = the official LTX-2 trainer's (`ShiftedLogitNormalTimestepSampler`: the
    stretched shifted logit-normal, std 1, eps 1e-3, 10% uniform; SigmaSampler kind "stretched_logit_normal"),
    drawn from an explicit generator with three draws per sigma; `kwargs` override its fields. Any other kind is
    `SigmaSampler(kind=kind, **kwargs)`."""
    if kind == "ltx2":
        return SigmaSampler(**{"kind": "stretched_logit_normal", "std": 1.0, "uniform_fraction": 0.1, "eps": 1e-3,
                               **kwargs})
    return SigmaSampler(kind=kind, **kwargs)


# ------------------------------------------------------------------------------------------------ draws


@dataclass
class StreamBatch:
    """One stream of one micro-batch, everything on the training device.

    A clean-condition stream (generated False) is clean everywhere whatever `cond` says (the draws give it all
    True) and its `sigma` is not used (0 goes to the model)."""

    x0: Tensor  # (B, T, C) clean patchified latent tokens
    noise: Tensor  # (B, T, C)
    sigma: Tensor  # (B,) this stream's sigma (0 for a clean-condition stream)
    cond: Tensor  # (B, T) bool: clean conditioning tokens (x = x0, timestep 0, no loss)
    positions: Tensor  # (B, A, T, 2) video A = 3 / audio A = 1 bounds (ltx.ltx2.patchify)
    generated: bool
    reference: Tensor | None = None  # (B, R, C) clean tokens prepended (IC-LoRA)
    reference_positions: Tensor | None = None  # (B, A, R, 2)


@dataclass
class Draws:
    """One sample's random draws, all from one generator in a fixed order (see `draw`)."""

    video_sigma: float  # 0.0 when video is absent or a clean condition
    audio_sigma: float
    video_cond: Tensor | None  # (T_v,) bool, None when video is absent; all True for a clean-condition stream
    audio_cond: Tensor | None  # (T_a,) bool
    video_noise: Tensor | None  # (T_v, C_v) float32, None when absent
    audio_noise: Tensor | None  # (T_a, C_a)
    drop_caption: bool
    # which intrinsic conditions came up: video_first_frame, video_prefix, video_suffix, audio_prefix, audio_suffix,
    # video_clean, audio_clean
    applied: frozenset[str] = frozenset()


def _tokens_of(stream: str, role: Role | None, shape: tuple[int, ...] | None) -> tuple[int, int, int]:
    """(latent frames, tokens per frame, channels) of a present stream's shape."""
    if role is None:
        return 0, 0, 0
    n = 4 if stream == "video" else 2
    if shape is None or len(shape) != n or not all(isinstance(d, int) and d > 0 for d in shape):
        want = "latent (C, f, h, w)" if stream == "video" else "tokens (T_a, C_a)"
        raise ValueError(f"{stream}_shape must be the {want} as positive integers, got {shape!r}")
    if stream == "video":
        c, f, h, w = shape
        return f, h * w, c
    t, c = shape
    return t, 1, c


def _cond(stream: str, role: Role, frames: int, per_frame: int, coins: list[float], applied: set[str]) -> Tensor:
    cond = torch.zeros(frames, per_frame, dtype=torch.bool)
    if not role.generated:
        return cond.fill_(True).flatten()
    ff_coin, prefix_coin, suffix_coin = coins
    if stream == "video" and ff_coin < role.first_frame_p and frames > 1:
        cond[0] = True
        applied.add("video_first_frame")
    if role.prefix and prefix_coin < role.prefix_p:
        cond[: role.prefix] = True
        applied.add(f"{stream}_prefix")
    if role.suffix and suffix_coin < role.suffix_p:
        cond[max(frames - role.suffix, 0) :] = True
        applied.add(f"{stream}_suffix")
    return cond.flatten()


def draw(mode: TrainingMode, sampler, generator: torch.Generator, *, video_shape: tuple[int, int, int, int] | None,
         audio_shape: tuple[int, int] | None, caption_dropout: float) -> Draws:
    """One sample's draws. video_shape = latent (C, f, h, w) (f·h·w tokens, the first frame's h·w first);
    audio_shape = tokens (T_a, C_a); the shape of a stream the mode lacks is ignored.

    Fixed order, whatever the mode's probabilities and whatever the coins show, so that a resume or another
    sharding replays the same numbers: video sigma, audio sigma (`sampler.sample(tokens, generator)` each, with
    the stream's own token count, drawn even for an absent or clean stream and then reported 0), six coins
    (video first frame / prefix / suffix, audio first frame / prefix / suffix; the audio first frame coin is
    unused), the caption coin, then the video noise and the audio noise of the present streams. A condition holds
    when its coin < its probability (as the official per-sample Bernoulli). A prefix or suffix longer than the
    clip leaves it all clean: that sample then adds 0 to the loss (as the official trainer). With a `clean_p`, one
    more coin comes last (only then, so that other modes keep the official sequence): below the video's clean_p
    the video is clean, below the sum the audio; the clean stream takes the other's sigma as its step sigma."""
    if not (isinstance(caption_dropout, int | float) and 0.0 <= caption_dropout <= 1.0):
        raise ValueError(f"caption_dropout is a probability in [0, 1], got {caption_dropout!r}")
    vf, vpf, vc = _tokens_of("video", mode.video, video_shape)
    af, _, ac = _tokens_of("audio", mode.audio, audio_shape)
    sigmas = [sampler.sample(max(vf * vpf, 1), generator), sampler.sample(max(af, 1), generator)]
    coins = torch.rand(7, generator=generator).tolist()
    applied: set[str] = set()
    out: dict[str, object] = {}
    for i, (stream, role, frames, per_frame) in enumerate((("video", mode.video, vf, vpf),
                                                           ("audio", mode.audio, af, 1))):
        present = role is not None
        out[f"{stream}_sigma"] = float(sigmas[i]) if present and role.generated else 0.0
        out[f"{stream}_cond"] = _cond(stream, role, frames, per_frame, coins[3 * i : 3 * i + 3], applied) \
            if present else None
    for stream, role, tokens, channels in (("video", mode.video, vf * vpf, vc), ("audio", mode.audio, af, ac)):
        out[f"{stream}_noise"] = torch.randn(tokens, channels, generator=generator) if role is not None else None
    clean_p = [r.clean_p if r is not None else 0.0 for r in (mode.video, mode.audio)]
    if sum(clean_p):
        coin = float(torch.rand((), generator=generator))
        clean = "video" if coin < clean_p[0] else "audio" if coin < sum(clean_p) else None
        if clean is not None:
            other = "audio" if clean == "video" else "video"
            out[f"{clean}_cond"] = torch.ones_like(out[f"{clean}_cond"])
            out[f"{clean}_sigma"] = out[f"{other}_sigma"]
            applied.add(f"{clean}_clean")
    return Draws(**out, drop_caption=coins[6] < caption_dropout, applied=frozenset(applied))


def check_sigma_independence(draws: Sequence[Draws], *, max_correlation: float = 0.5,
                             min_far: float = 0.05) -> tuple[float, float]:
    """Guard against video and audio sharing one timestep: over many draws of a mode that generates both, the
    Pearson correlation of the two sigmas must stay <= max_correlation and the fraction of draws with
    |sigma_v - sigma_a| > 0.2 at least min_far (independent draws: about 0 and 0.4). Returns (correlation,
    fraction); raises ValueError otherwise."""
    if len(draws) < 100:
        raise ValueError(f"check_sigma_independence needs >= 100 draws to say anything, got {len(draws)}")
    v = torch.tensor([d.video_sigma for d in draws], dtype=torch.float64)
    a = torch.tensor([d.audio_sigma for d in draws], dtype=torch.float64)
    if not (v.std() > 0 and a.std() > 0):
        raise ValueError("video or audio sigma is constant over the draws: the mode must generate both streams")
    corr = float(((v - v.mean()) * (a - a.mean())).mean() / (v.std(correction=0) * a.std(correction=0)))
    far = float(((v - a).abs() > 0.2).double().mean())
    if not (math.isfinite(corr) and corr <= max_correlation and far >= min_far):
        raise ValueError(f"video and audio sigmas are not independent: correlation {corr:.3f} (max "
                         f"{max_correlation}), |sigma_v - sigma_a| > 0.2 in {far:.1%} of draws (min {min_far:.0%})")
    return corr, far


# ------------------------------------------------------------------------------------------------ model


def _check(s: StreamBatch, name: str) -> None:
    if s.x0.ndim != 3:
        raise ValueError(f"{name}.x0 must be tokens (B, T, C), got shape {tuple(s.x0.shape)}")
    B, T, _ = s.x0.shape
    want = {"noise": (tuple(s.x0.shape), s.noise), "cond": ((B, T), s.cond), "sigma": ((B,), s.sigma)}
    for field, (shape, t) in want.items():
        if tuple(t.shape) != shape:
            raise ValueError(f"{name}.{field} must have shape {shape} (x0 is {tuple(s.x0.shape)}), got "
                             f"{tuple(t.shape)}")
    if s.cond.dtype != torch.bool:
        raise ValueError(f"{name}.cond must be bool (True = clean conditioning token), got {s.cond.dtype}")
    p = s.positions
    if p.ndim != 4 or p.shape[0] != B or p.shape[2] != T or p.shape[3] != 2:
        raise ValueError(f"{name}.positions must be (B, A, T, 2) = ({B}, A, {T}, 2), got {tuple(p.shape)}")
    if (s.reference is None) != (s.reference_positions is None):
        raise ValueError(f"{name}: reference and reference_positions come together (both or neither)")
    if s.reference is not None:
        r, rp = s.reference, s.reference_positions
        if r.ndim != 3 or r.shape[0] != B or r.shape[2] != s.x0.shape[2]:
            raise ValueError(f"{name}.reference must be (B, R, C) = ({B}, R, {s.x0.shape[2]}), got {tuple(r.shape)}")
        if tuple(rp.shape) != (B, p.shape[1], r.shape[1], 2):
            raise ValueError(f"{name}.reference_positions must be {(B, p.shape[1], r.shape[1], 2)}, got "
                             f"{tuple(rp.shape)}")


def stream_input(s: StreamBatch, context: Tensor, context_mask: Tensor, name: str = "stream") -> StreamInput:
    """The transformer input of one stream: noised tokens (x0 where clean), per-token timesteps (sigma, 0 on
    clean and reference tokens), the step sigma (B,), reference tokens prepended."""
    _check(s, name)
    B, T, _ = s.x0.shape
    sigma = s.sigma
    if s.generated:
        sig = sigma.view(B, 1, 1)
        # where, not a blend: clean tokens are x0 bit for bit; the result in x0's dtype (autocast casts the same)
        x = torch.where(s.cond[..., None], s.x0, (1 - sig) * s.x0 + sig * s.noise).to(s.x0.dtype)
        timesteps = sigma.view(B, 1).expand(B, T).masked_fill(s.cond, 0.0)
    else:
        x, sigma = s.x0, torch.zeros_like(sigma)
        timesteps = torch.zeros(B, T, dtype=sigma.dtype, device=sigma.device)
    positions = s.positions
    if s.reference is not None:
        R = s.reference.shape[1]
        x = torch.cat([s.reference.to(x.dtype), x], dim=1)
        positions = torch.cat([s.reference_positions, positions], dim=2)
        timesteps = torch.cat([timesteps.new_zeros(B, R), timesteps], dim=1)
    return StreamInput(x=x, timesteps=timesteps, sigma=sigma, positions=positions, context=context,
                       context_mask=context_mask)


class AVTrainModel(nn.Module):
    """What trains: the AVTransformer and the text connectors (ltx.ltx2.text.EmbeddingsProcessor, used only
    through `.connect`, so its feature_extractor may be set to None to save memory). LoRA / FSDP / DDP wrap this
    module; inject LoRA into `.transformer` so that adapter names are the checkpoint's
    (`transformer_blocks.0.attn1.to_q`). The official trainer keeps the connectors frozen."""

    def __init__(self, transformer: nn.Module, text: nn.Module):
        super().__init__()
        self.transformer = transformer
        self.text = text

    def stream_inputs(self, video: StreamBatch | None, audio: StreamBatch | None,
                      text_features: tuple[Tensor, Tensor, Tensor]) -> tuple[StreamInput | None, StreamInput | None]:
        """The transformer's two StreamInputs (the connectors run on the cached features here)."""
        if video is None and audio is None:
            raise ValueError("AVTrainModel needs at least one of video and audio")
        video_ctx, audio_ctx, mask = self.text.connect(*text_features)
        return (None if video is None else stream_input(video, video_ctx, mask, "video"),
                None if audio is None else stream_input(audio, audio_ctx, mask, "audio"))

    def forward(self, video: StreamBatch | None, audio: StreamBatch | None,
                text_features: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor | None, Tensor | None]:
        """text_features = (video features (B, S, Dv'), audio features (B, S, Da'), mask (B, S) left-padded), the
        cached feature-extractor output. Returns the velocity predictions (B, T, C) of each present stream's
        target tokens (reference tokens cut off)."""
        pv, pa = self.transformer(*self.stream_inputs(video, audio, text_features))

        def target(pred: Tensor | None, s: StreamBatch | None) -> Tensor | None:
            if pred is None or s is None or s.reference is None:
                return pred
            return pred[:, s.reference.shape[1] :]

        return target(pv, video), target(pa, audio)


def av_loss(model: nn.Module, video: StreamBatch | None, audio: StreamBatch | None,
            text_features: tuple[Tensor, Tensor, Tensor], *, video_weight: float = 1.0, audio_weight: float = 1.0
            ) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-sample loss (B,) = video_weight * MSE(video) + audio_weight * MSE(audio) over the generated streams,
    each the per-sample mean squared error to noise - x0 over its non-cond tokens and channels (the official
    `(mse * mask).mean() / mask.mean()`; a sample with no loss token adds 0). Also returns the unweighted parts,
    {"video": (B,), "audio": (B,)}, with a key only for each generated stream. fp32 arithmetic."""
    pv, pa = model(video, audio, text_features)
    parts = {name: masked_flow_matching_loss(pred, s.x0, s.noise, s.cond)
             for name, s, pred in (("video", video, pv), ("audio", audio, pa)) if s is not None and s.generated}
    if not parts:
        raise ValueError("av_loss: neither stream is generated, so there is nothing to learn")
    weights = {"video": video_weight, "audio": audio_weight}
    loss = sum(weights[name] * part for name, part in parts.items())
    return loss, parts
