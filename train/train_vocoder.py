"""Train the LTX-2 demo's vocoder on ShapesWorld-AV soundtracks from scratch (CPU-sized), with exact resume.

    python -m train.train_vocoder                           # configs/train_vocoder.yaml
    python -m train.train_vocoder steps=200 run_dir=runs/vocoder_smoke

The model is the native LTX-2 vocoder (`ltx.ltx2.vocoder.Vocoder`, the 19B HiFi-GAN kind "1", no bandwidth
extension) with the small layout of configs/demo/ltx2_vocoder.yaml, written as the official metadata
`config["vocoder"]`: upsampling x160, so the audio VAE's 100 mel frames/s become 16 kHz stereo. It is trained
through its inference path, `Vocoder.forward`: a stereo log-mel (B, 2, T, 64) -> waveform (B, 2, 160 T), the
two channels' mels stacked into its 128 input channels, as ltx.ltx2.pipelines.decode calls it on the audio
VAE's output.

Data: random crops of `crop_frames` mel frames (0.5 s) of ShapesWorld-AV soundtracks. The mel is the full
clip's `ltx.ltx2.audio.waveform_to_mel` (what the audio VAE encodes and learns to decode), cropped afterwards,
so every frame keeps its full-clip context; frame k (centred on sample 160 k) is paired with the waveform
samples [160 k, 160 (k + 1)), the alignment of a whole clip (T frames -> 160 T samples from sample 0).
Crops lie within the 4 T - 3 = 209 frames that the audio VAE decodes for a clip. Each crop's channels are scaled
by independent random gains (`channel_gain_db`, `channel_gains`), so that the two channels' levels are not tied
to one position.

The model (`per_channel`, the demo's): one mono generator of half the width (`mono_generator`) is trained on both
channels, each channel of a crop a batch item (`PerChannel`), and written into the stereo layout block-diagonally
(`stereo_from_mono`): each output channel hears only its own mel, which is what the pan is. Trained jointly
(`per_channel=false`), the stereo generator played every clip mono: after 4000 steps, lowering both channels' mel
by 6 dB or the left one alone by 12 dB gave the same output on both channels (to three decimals): it followed
the sum of the two channels' log-mels and not their difference.

Initialisation (`init_signal_propagation`): with PyTorch's default init the output is the biases' alone (it
shrinks a signal 12-40x per stage), and for ~1000 steps it hardly depended on the input; He-normal weights (the
transposed convs' fan-in C_in k / u), zero biases, small residual branches, a standardised input and an output at
the soundtracks' RMS make it depend on the input from the first step.

The loss has no discriminator (CPU budget):
- `wave_weight` x the waveform's relative squared error (`waveform_loss`). Well-posed here: every note lies on
  the 100 Hz grid and starts at phase 0, so it is at phase 0 on each 160-sample frame boundary, where crops
  start, and the waveform is a function of the mel. It took the round trip's pitch from 79% to 87% and found both
  voices of two-shape clips in 90% instead of 26% (README). With the default init it silenced the output instead;
- a multi-resolution STFT loss (spectral convergence + L1 of log magnitudes, Hann windows of `stft_sizes`
  samples, hop a quarter) and `mel_weight` x the L1 distance between the log-mels of the output and the target;
  both log distances count bins further than `range_db` below the target's loudest as equal (with the full 1e-5
  floor the cheapest way down is a silent output);
- `stereo_weight` x the error of the stereo balance per 20 ms (`stereo_loss`) and `level_weight` x each
  channel's log energy error per 20 ms (`level_loss`): without the latter the output went quiet in the first
  steps (RMS 0.17 -> 0.007 in 25 steps) while the spectral losses fell.

Pitch limit: the vocoder is shift-equivariant (one mel frame later = 160 samples later), so a static voice, whose
mel is the same in every frame, comes out periodic in 160 samples: only multiples of 100 Hz. A 500 Hz note is
learned within 100 steps; 523.25 Hz (the first demo's blue) came out at 500 Hz whatever the training (measured).
That is why ShapesWorld-AV's NOTES are on the 100 Hz grid.

At the end report.json scores full train and held-out clips vocoded from their mels (209 frames -> 33440
samples, against the first 33440 samples of the soundtrack): log-spectral distance (dB, 1024-sample frames,
bins within 80 dB of the clip's loudest), the L1 distance of the log-mels (the LTX-2 mel), the share of clips
whose dominant note is the dominant shape's colour's, by the energy in each note's band
(`ltx.data.shapes_av.note_bands`: the frequencies nearest to that note), for the output and, as a check of the
measure, for the truth, and by the evaluator (`ltx.data.shapes_av_eval.analyze_audio`: a fundamental within 0.75
semitones), the median error of the output's fundamental in cents, and the stereo balance error per video frame
(mean |b_out - b_true| with b = (E_R - E_L) / (E_R + E_L), 0-2 scale).
Every `sample_every` steps (and at the end) RUN/samples/step_NNNNNN.png shows held-out clips: for each, the
audio contact sheet of the truth above that of the vocoder's output; the final outputs are also written as
RUN/samples/heldout_K_{truth,vocoder}.wav.

Outputs for the exporter: RUN/vocoder_final.pt (a state dict that loads strictly into the `build_vocoder` of
the config) and RUN/config.json, whose "vocoder" entry is the official metadata `config["vocoder"]`
(`VocoderConfig.to_metadata`; the other entries are this run's training settings).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from hydra.core.config_store import ConfigStore
from torch import Tensor

from infer.app import hydra_app
from ltx.core.audio_io import audio_contact_sheet, write_wav
from ltx.core.checkpoint import atomic_file
from ltx.data.shapes_av import FPS, NOTES, SAMPLE_RATE, ShapesWorldAV, note_bands, soundtrack
from ltx.data.shapes_av_eval import analyze_audio
from ltx.ltx2 import audio as mel_settings
from ltx.ltx2.audio import LOG_FLOOR, waveform_to_mel
from ltx.ltx2.audio_vae import mel_frames_for_latents
from ltx.ltx2.patchify import audio_latent_frames_for_video
from ltx.ltx2.vocoder import LEAKY_SLOPE, Vocoder, VocoderConfig, build_vocoder
from train.harness import TrainingError, TrainLoop, step_generator
from train.runner import Run, RunCheckpoint, RunError, check_int, check_multiple, check_number, peak_rss_mib

STEREO_WINDOW = 320  # samples (20 ms) per stereo-balance window of the pan loss
LSD_RANGE_DB = 80.0  # log-spectral distance: bins more than this below the clip's loudest count at that floor


@dataclass(kw_only=True)
class TrainVocoderConfig:
    run_dir: str = "runs/demo_vocoder"
    # the official metadata config["vocoder"] (kind "1", no "bwe"); filled from configs/demo/ltx2_vocoder.yaml
    vocoder: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    steps: int = 1000
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup: int = 30
    crop_frames: int = 50  # mel frames per training crop (100 per second)
    stft_sizes: list[int] = field(default_factory=lambda: [128, 256, 512])  # STFT loss windows (samples), hop n/4
    mel_weight: float = 1.0  # weight of the log-mel L1 beside the STFT loss
    stereo_weight: float = 2.0  # weight of the pan's error: the stereo balance per 20 ms (`stereo_loss`)
    level_weight: float = 1.0  # weight of each channel's log energy error per 20 ms (`level_loss`)
    wave_weight: float = 5.0  # weight of the waveform's relative squared error (`waveform_loss`)
    # train one mono generator of half the width on both channels, written block-diagonally into the stereo layout
    # (`stereo_from_mono`): each output channel then hears only its own mel
    per_channel: bool = False
    residual_scale: float = 0.1  # the resblocks' second convs at init (`init_signal_propagation`)
    channel_gain_db: float = 12.0  # each training channel scaled by a random gain in [-this, 0] dB (`channel_gains`)
    range_db: float = 60.0  # the log losses' dynamic range: bins further below the target's loudest count as equal
    frames: int = 17  # video frames per clip, at 8 fps: the soundtrack's length (2.125 s)
    num_clips: int = 4096  # distinct training clips (synthesised on the fly, deterministic per index)
    eval_clips: int = 32  # train and held-out clips scored at the end
    sample_every: int = 200  # write RUN/samples/step_NNNNNN.png: held-out clips' truth and vocoder output
    sample_clips: int = 3
    stop_after: int | None = None  # end this session at that step (resumable), e.g. to time-box a run
    log_every: int = 10
    checkpoint_every: int = 100
    threads: int = 2
    wandb: bool = True

    def __post_init__(self):
        """Every field checked where the config is made (Hydra's to_object, or in code), before anything runs."""
        if not isinstance(self.run_dir, str) or not self.run_dir:
            raise ValueError(f"run_dir={self.run_dir!r} is invalid: give a folder for the run's outputs")
        for name in ("steps", "batch_size", "crop_frames", "num_clips", "eval_clips", "sample_every", "sample_clips",
                     "log_every", "checkpoint_every", "threads"):
            check_int(name, getattr(self, name))
        check_int("seed", self.seed, 0)
        check_int("warmup", self.warmup, 0)
        check_int("stop_after", self.stop_after, optional=True)
        check_number("lr", self.lr, 0.0, lo_open=True)
        check_number("weight_decay", self.weight_decay, 0.0)
        check_number("mel_weight", self.mel_weight, 0.0)
        check_number("stereo_weight", self.stereo_weight, 0.0)
        check_number("level_weight", self.level_weight, 0.0)
        check_number("wave_weight", self.wave_weight, 0.0)
        check_number("residual_scale", self.residual_scale, 0.0, 1.0)
        check_number("channel_gain_db", self.channel_gain_db, 0.0, 40.0)
        check_number("range_db", self.range_db, 0.0, lo_open=True)
        check_multiple("frames", self.frames, 8, plus=1, what=" (ShapesWorld clips)")
        if self.crop_frames > self.clip_mel_frames:
            raise ValueError(f"crop_frames={self.crop_frames} is invalid: must be <= {self.clip_mel_frames}, the mel "
                             f"frames of a {self.frames}-frame clip")
        crop = self.crop_frames * mel_settings.HOP_LENGTH
        if (not isinstance(self.stft_sizes, list) or not self.stft_sizes
                or any(isinstance(n, bool) or not isinstance(n, int) or not 16 <= n <= crop for n in self.stft_sizes)):
            raise ValueError(f"stft_sizes={self.stft_sizes!r} is invalid: give a non-empty list of window sizes in "
                             f"samples, each an integer in [16, {crop}] (the crop's length)")
        if not isinstance(self.per_channel, bool):
            raise ValueError(f"per_channel={self.per_channel!r} is invalid: give true or false")
        cfg = self.model_config  # parses and checks `vocoder`
        blocks = 2 ** (len(cfg.vocoder.upsample_rates) + 1)
        if self.per_channel and cfg.vocoder.upsample_initial_channel % blocks:
            raise ValueError(f"per_channel=true needs vocoder.upsample_initial_channel a multiple of {blocks} (two "
                             f"equal halves down to the last stage), got {cfg.vocoder.upsample_initial_channel}")

    @property
    def model_config(self) -> VocoderConfig:
        """`vocoder` parsed: the 19B HiFi-GAN kind alone, 160 samples per mel frame at 16 kHz."""
        if not isinstance(self.vocoder, dict) or not self.vocoder:
            raise ValueError(f"vocoder={self.vocoder!r} is invalid: give the official metadata config['vocoder'] "
                             "(configs/demo/ltx2_vocoder.yaml)")
        cfg = VocoderConfig.from_metadata(self.vocoder)
        if cfg.bwe is not None:
            raise ValueError("vocoder.bwe is invalid here: the demo trains the LTX-2 (19B) HiFi-GAN kind alone "
                             "(resblock '1', no bandwidth extension)")
        if cfg.sample_rate != SAMPLE_RATE or cfg.hop != mel_settings.HOP_LENGTH:
            raise ValueError(f"vocoder.upsample_rates={list(cfg.vocoder.upsample_rates)} with output_sampling_rate="
                             f"{cfg.sample_rate} is invalid: the rates must multiply to {mel_settings.HOP_LENGTH} "
                             f"samples per mel frame and output_sampling_rate be {SAMPLE_RATE} (the audio VAE's mel: "
                             f"{SAMPLE_RATE} Hz, hop {mel_settings.HOP_LENGTH})")
        return cfg

    @property
    def clip_mel_frames(self) -> int:
        """Mel frames the audio VAE decodes for a clip: 4 T - 3 for T = round(25 F / fps) latents (209)."""
        return mel_frames_for_latents(audio_latent_frames_for_video(self.frames, FPS))


# ------------------------------------------------------------------------------------------------ data


def clip(data: ShapesWorldAV, index: int) -> tuple[Tensor, Tensor]:
    """Clip `index`'s soundtrack (2, N) and its log-mel (2, N // 160 + 1, 64) (`waveform_to_mel`)."""
    audio = soundtrack(data.params(index), data.frames, data.fps, data.sample_rate)  # no video rendered
    return audio, waveform_to_mel(audio[None], data.sample_rate)[0]


def batch(cfg: TrainVocoderConfig, data: ShapesWorldAV, step: int) -> tuple[Tensor, Tensor]:
    """The training batch of `step` (deterministic in seed and step): mel crops (B, 2, crop_frames, 64) and
    their waveforms (B, 2, 160 crop_frames), each channel scaled by its own gain (`channel_gains`)."""
    g = step_generator(cfg.seed, step)
    idx = torch.randint(len(data), (cfg.batch_size,), generator=g)
    hop = mel_settings.HOP_LENGTH
    mels, waves = [], []
    for i in idx.tolist():
        audio, mel = clip(data, i)
        k = int(torch.randint(cfg.clip_mel_frames - cfg.crop_frames + 1, (1,), generator=g))
        mels.append(mel[:, k : k + cfg.crop_frames])
        waves.append(audio[:, hop * k : hop * (k + cfg.crop_frames)])
    return channel_gains(torch.stack(mels), torch.stack(waves), cfg.channel_gain_db, g)


def channel_gains(mel: Tensor, wave: Tensor, max_db: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Scale each item's left and right channel by independent gains drawn uniformly in [-max_db, 0] dB: the
    waveform times g and its log-mel plus ln g, floored at the mel's log floor, which is exactly the log-mel of
    the scaled waveform for g <= 1. ShapesWorld's pans tie the two channels' levels to one position; random
    levels are meant to show the vocoder that each output channel's loudness follows its own mel. Measured: they
    did not make it learn the pan (balance error 0.34-0.39 after 4000 steps, as without them)."""
    if max_db == 0:
        return mel, wave
    db = -max_db * torch.rand(mel.shape[0], 2, generator=generator)  # (B, 2)
    gain = 10 ** (db / 20)
    return (mel + gain.log()[..., None, None]).clamp_min(math.log(LOG_FLOOR)), wave * gain[..., None]


@torch.no_grad()
def init_signal_propagation(voc: Vocoder | PerChannel, data: ShapesWorldAV, n: int, residual_scale: float = 0.1
                            ) -> dict[str, float]:
    """Initialise `voc` so that its output depends on its input from the first step (applied from outside the
    model). PyTorch's default init shrinks a signal's variance about 12-40x per HiFi-GAN stage (1/3 per conv,
    1/2 per leaky ReLU, 1/u more in a stride-u transposed conv), so after four stages the output is its biases
    alone: measured, two clips with opposite pans got the same stereo balance for ~1000 steps. Here:
    - every conv's weights are He-normal for the leaky ReLU, the fan-in of a stride-u transposed conv being
      C_in k / u (the taps that reach one output sample); every bias is 0;
    - each residual branch's second conv is scaled by `residual_scale`, so the resblocks start near identity;
    - the first conv reads the log-mel standardised by the mean m and std s of the first `n` clips' mels;
    - the last conv is scaled so that the output's RMS is the soundtracks' (measured on those clips' first
      0.5 s).
    Returns m, s and the RMS."""
    gain = math.sqrt(2 / (1 + LEAKY_SLOPE**2))
    core = voc.mono if isinstance(voc, PerChannel) else voc  # the weights; `voc` runs the stereo mel
    for module in core.modules():
        if isinstance(module, torch.nn.ConvTranspose1d):
            c_in, _, k = module.weight.shape
            module.weight.normal_(0.0, gain / math.sqrt(c_in * k / module.stride[0]))
        elif isinstance(module, torch.nn.Conv1d):
            _, c_in, k = module.weight.shape
            module.weight.normal_(0.0, gain / math.sqrt(c_in * k))
        else:
            continue
        if module.bias is not None:
            module.bias.zero_()
    for block in core.resblocks:
        for conv in block.convs2:
            conv.weight.mul_(residual_scale)
    clips = [clip(data, i) for i in range(min(n, len(data)))]
    mel = torch.stack([m for _, m in clips])
    mean, std = mel.mean().item(), mel.std().item()
    pre = core.conv_pre
    pre.weight.normal_(0.0, 1 / (std * math.sqrt(pre.weight.shape[1] * pre.weight.shape[2])))
    pre.bias.copy_(-mean * pre.weight.sum((1, 2)))
    frames = 50
    rms = torch.stack([a[:, : frames * mel_settings.HOP_LENGTH] for a, _ in clips]).std().item()
    for _ in range(20):  # the final tanh bends the level: rescale until it is within 0.1%
        ratio = rms / voc(mel[:, :, :frames]).std().item()
        core.conv_post.weight.mul_(ratio)
        if abs(ratio - 1) < 1e-3:
            break
    return {"mel_mean": mean, "mel_std": std, "rms": rms}


class PerChannel(torch.nn.Module):
    """A mono generator (`Vocoder(..., channels=1)`) run on each channel of a stereo mel: (B, 2, T, 64) ->
    (B, 2, hop T), the channels as batch items. `stereo_from_mono` writes it as one stereo `Vocoder`."""

    def __init__(self, mono: Vocoder):
        super().__init__()
        self.mono = mono

    def forward(self, mel: Tensor) -> Tensor:
        B = mel.shape[0]
        return self.mono(mel.flatten(0, 1)[:, None]).view(B, 2, -1)


def mono_generator(cfg: VocoderConfig) -> Vocoder:
    """The mono generator whose two copies make `cfg`'s stereo vocoder: half its channels at every stage."""
    half = replace(cfg.vocoder, upsample_initial_channel=cfg.vocoder.upsample_initial_channel // 2)
    return Vocoder(half, channels=1)


@torch.no_grad()
def stereo_from_mono(mono: Vocoder, cfg: VocoderConfig) -> Vocoder:
    """`cfg`'s stereo vocoder (the official layout) computing `mono` on each channel: every weight block-diagonal
    (the left half of each layer's channels reads only the left half of the previous layer's, and conv_pre's left
    half only the left mel bins), every bias repeated. Exact up to float summation order (tested)."""
    stereo = build_vocoder(cfg)
    mine = dict(mono.named_parameters())
    for name, full in stereo.named_parameters():
        part = mine[name]
        if part.ndim == 1:
            full.copy_(torch.cat([part, part]))
            continue
        a, b = part.shape[:2]
        if full.shape[:2] != (2 * a, 2 * b) or full.shape[2:] != part.shape[2:]:
            raise ValueError(f"{name}: a mono {tuple(part.shape)} does not make a stereo {tuple(full.shape)}")
        full.zero_()
        full[:a, :b] = part
        full[a:, b:] = part
    return stereo


# ------------------------------------------------------------------------------------------------ losses


def stft_magnitude(x: Tensor, n_fft: int) -> Tensor:
    """(B, C, L) -> |STFT| (B C, n_fft / 2 + 1, frames): Hann window of n_fft, hop n_fft / 4, floored at 1e-7
    in power (so the gradient stays finite at silence)."""
    spec = torch.stft(x.flatten(0, 1), n_fft, n_fft // 4, window=torch.hann_window(n_fft, device=x.device),
                      return_complex=True)
    return torch.view_as_real(spec).square().sum(-1).clamp_min(1e-7).sqrt()


def floored_log(y: Tensor, x: Tensor, range_db: float, dims: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """log y and log x (magnitudes, one item per index of the other dims), both floored `range_db` below the
    loudest of x over `dims`."""
    floor = x.amax(dims, keepdim=True) * 10 ** (-range_db / 20)
    return y.maximum(floor).log(), x.maximum(floor).log()


def spectral_loss(y: Tensor, x: Tensor, sizes: list[int], range_db: float) -> tuple[Tensor, Tensor]:
    """Multi-resolution STFT loss of output y against target x, (B, 2, L) each: (spectral convergence
    ||Y - X|| / ||X||, mean |log Y - log X| with both floored `range_db` below the loudest bin of the target
    channel), each averaged over the window sizes."""
    sc = logmag = 0.0
    for n in sizes:
        Y, X = stft_magnitude(y, n), stft_magnitude(x, n)
        sc = sc + (Y - X).norm() / X.norm().clamp_min(1e-8)
        log_y, log_x = floored_log(Y, X, range_db, (1, 2))
        logmag = logmag + (log_y - log_x).abs().mean()
    return sc / len(sizes), logmag / len(sizes)


def mel_loss(y: Tensor, x: Tensor, range_db: float) -> Tensor:
    """Mean |log-mel(y) - log-mel(x)| (`waveform_to_mel`, the LTX-2 mel), both floored `range_db` below the
    loudest bin of the target item."""
    log_y, log_x = waveform_to_mel(y, SAMPLE_RATE), waveform_to_mel(x, SAMPLE_RATE)  # (B, 2, T, 64)
    floor = log_x.amax((1, 2, 3), keepdim=True) - range_db / 20 * math.log(10)
    return (log_y.maximum(floor) - log_x.maximum(floor)).abs().mean()


def window_energy(wave: Tensor, window: int) -> Tensor:
    """(..., N) -> (..., N // window): the energy of each whole window of `window` samples."""
    n = wave.shape[-1] // window
    return wave[..., : n * window].square().unflatten(-1, (n, window)).sum(-1)


def balance(wave: Tensor, window: int) -> Tensor:
    """(..., 2, N) -> (..., N // window) stereo balance (E_R - E_L) / (E_R + E_L) per window of `window`
    samples (in the input's dtype)."""
    e = window_energy(wave, window)
    return (e[..., 1, :] - e[..., 0, :]) / (e[..., 1, :] + e[..., 0, :]).clamp_min(1e-12)


def waveform_loss(y: Tensor, x: Tensor) -> Tensor:
    """||y - x||^2 / ||x||^2 over the batch: well-posed on ShapesWorld-AV, whose notes lie on the 100 Hz grid and
    start at phase 0, so every note is at phase 0 at each 160-sample mel frame boundary, where crops start: the
    waveform is a function of the mel. It carries each channel's level and so the pan. 1 for a silent output."""
    return (y.float() - x.float()).square().sum() / x.float().square().sum().clamp_min(1e-12)


def sounding(x: Tensor, window: int) -> Tensor:
    """(B, 2, L) -> (B, L // window) 1.0 where the target sounds: both channels' energy above 1e-6 of the item's
    loudest window."""
    total = window_energy(x, window).sum(1)  # (B, n)
    return (total > 1e-6 * total.amax(-1, keepdim=True)).float()


def stereo_loss(y: Tensor, x: Tensor, window: int = STEREO_WINDOW) -> Tensor:
    """Mean |balance(y) - balance(x)| per `window` samples, (B, 2, L) each, over the windows where the target
    sounds. On the waveform's energy, so its gradient moves each channel's level whatever the spectrum is."""
    mask = sounding(x, window)
    err = (balance(y.float(), window) - balance(x.float(), window)).abs()
    return (err * mask).sum() / mask.sum().clamp_min(1.0)


def level_loss(y: Tensor, x: Tensor, window: int = STEREO_WINDOW) -> Tensor:
    """Mean |ln E_y - ln E_x| of each channel's energy per `window` samples, (B, 2, L) each, over the windows
    where the target sounds (energies floored at 1e-6 of the item's loudest window). Without it the spectral
    losses' cheapest way down is a quiet output (measured: RMS 0.17 -> 0.007 in 25 steps, spectral convergence
    ~1.0 after), from which the partials must then be grown."""
    ey, ex = window_energy(y.float(), window), window_energy(x.float(), window)  # (B, 2, n)
    floor = 1e-6 * ex.amax((1, 2), keepdim=True)
    err = (ey.maximum(floor).log() - ex.maximum(floor).log()).abs().mean(1)  # (B, n)
    mask = sounding(x, window)
    return (err * mask).sum() / mask.sum().clamp_min(1.0)


# ------------------------------------------------------------------------------------------------ measures


def note_energies(wave: Tensor, sample_rate: int = SAMPLE_RATE) -> tuple[Tensor, Tensor]:
    """(2, N) -> (energy of each NOTES band (6,), the power spectrum (F,) of the Hann-windowed clip with both
    channels' powers summed (the pan's gains are constant-power, so a voice's sum does not depend on it))."""
    w = wave.double() * torch.hann_window(wave.shape[-1], periodic=False, dtype=torch.float64)
    power = torch.fft.rfft(w).abs().square().sum(0)  # (F,)
    freqs = torch.fft.rfftfreq(wave.shape[-1], 1 / sample_rate, dtype=torch.float64)
    bands = torch.stack([power[(freqs >= lo) & (freqs < hi)].sum() for lo, hi in note_bands().values()])
    return bands, power


def dominant_note(wave: Tensor, sample_rate: int = SAMPLE_RATE) -> str:
    """The colour whose note band holds the most energy (the dominant voice: the louder one, and every timbre's
    strongest partial is its fundamental; its upper partials have at most 1/4 of that energy)."""
    return list(NOTES)[int(note_energies(wave, sample_rate)[0].argmax())]


def fundamental(wave: Tensor, f0: float, sample_rate: int = SAMPLE_RATE) -> float:
    """The frequency (Hz) of the strongest spectral peak in the band of the note f0, refined by a parabola
    through the log power of the peak bin and its neighbours."""
    _, power = note_energies(wave, sample_rate)
    df = sample_rate / wave.shape[-1]
    band = {NOTES[c]: edges for c, edges in note_bands().items()}[f0]
    lo, hi = math.ceil(band[0] / df), math.floor(band[1] / df)
    k = lo + int(power[lo : hi + 1].argmax())
    a, b, c = (power[k - 1 : k + 2].clamp_min(1e-30).log()).tolist()
    shift = 0.5 * (a - c) / (a - 2 * b + c) if a - 2 * b + c < 0 else 0.0
    return (k + shift) * df


def log_spectral_distance(y: Tensor, x: Tensor, n_fft: int = 1024) -> float:
    """Log-spectral distance (dB) of output y against truth x, both (2, N): per channel and frame
    sqrt(mean_f (10 log10 P_y - 10 log10 P_x)^2), powers floored LSD_RANGE_DB below the truth's loudest bin;
    averaged over channels and frames."""
    P = stft_magnitude(torch.stack([y, x]), n_fft).square()  # (2 * 2, F, frames)
    floor = P[2:].max() * 10 ** (-LSD_RANGE_DB / 10)
    db = 10 * P.clamp_min(floor).log10()
    return (db[:2] - db[2:]).square().mean(1).sqrt().mean().item()




@torch.no_grad()
def vocoder_scores(voc: Vocoder, data: ShapesWorldAV, n: int, mel_frames: int) -> dict[str, float]:
    """Full clips vocoded from their first `mel_frames` mel frames, scored against their soundtracks (file
    docstring)."""
    window = round(data.sample_rate / data.fps)  # samples per video frame
    lsd, mel_l1, bal, cents, hits, truth_hits, evaluator_hits = [], [], [], [], 0, 0, 0
    for start in range(0, n, 8):
        items = [(clip(data, i), data.params(i)) for i in range(start, min(n, start + 8))]
        mel = torch.stack([m[:, :mel_frames] for (_, m), _ in items])
        out = voc(mel).float()  # (b, 2, 160 mel_frames)
        for y, ((audio, _), params) in zip(out, items):
            x = audio[:, : y.shape[-1]]
            colour = params.shapes[0].color
            lsd.append(log_spectral_distance(y, x))
            mel_l1.append((waveform_to_mel(y[None], data.sample_rate) - waveform_to_mel(x[None], data.sample_rate))
                          .abs().mean().item())
            bal.append((balance(y.double(), window) - balance(x.double(), window)).abs().mean().item())
            hits += dominant_note(y) == colour
            truth_hits += dominant_note(x) == colour
            voice = analyze_audio(y, data.sample_rate).dominant
            evaluator_hits += voice is not None and voice.color == colour
            f0 = NOTES[colour]
            cents.append(abs(1200 * math.log2(fundamental(y, f0) / fundamental(x, f0))))
    return {"log_spectral_distance_db": sum(lsd) / n, "mel_l1": sum(mel_l1) / n, "pitch_accuracy": 100 * hits / n,
            "pitch_accuracy_of_truth": 100 * truth_hits / n, "evaluator_pitch_accuracy": 100 * evaluator_hits / n,
            "f0_error_cents_median": statistics.median(cents),
            "balance_error": sum(bal) / n}


@torch.no_grad()
def sample_sheet(path: Path, voc: Vocoder, data: ShapesWorldAV, n: int, mel_frames: int,
                 wav_dir: Path | None = None) -> Path:
    """For the first `n` clips of `data`: the audio contact sheet of the truth above the vocoder's (one PNG);
    with `wav_dir`, both soundtracks also as WAVs there (heldout_K_truth.wav, heldout_K_vocoder.wav)."""
    from PIL import Image

    sheets = []
    for i in range(min(n, len(data))):
        sample = data[i]
        mel = waveform_to_mel(sample.audio[None], data.sample_rate)[:, :, :mel_frames]
        y = voc(mel)[0].float()
        x = sample.audio[:, : y.shape[-1]]
        frames = (sample.video + 1) / 2  # (3, F, H, W) in [0, 1]
        for what, wave in (("truth", x), ("vocoder", y)):
            sheets.append(audio_contact_sheet(frames, data.fps, wave, data.sample_rate, count=6, tile_width=96,
                                              caption=f"{what}: {sample.caption}"))
            if wav_dir is not None:
                write_wav(wav_dir / f"heldout_{i}_{what}.wav", wave, data.sample_rate)
    canvas = Image.new("RGB", (max(s.width for s in sheets), sum(s.height + 6 for s in sheets)), "white")
    y = 0
    for s in sheets:
        canvas.paste(s, (0, y))
        y += s.height + 6
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, "wb") as f:
        canvas.save(f, format="PNG")
    return path


# ------------------------------------------------------------------------------------------------ the run


def train(cfg: TrainVocoderConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model_cfg = cfg.model_config
    data = ShapesWorldAV(split="train", num_samples=cfg.num_clips, frames=cfg.frames, seed=cfg.seed)
    heldout = ShapesWorldAV(split="heldout", num_samples=max(cfg.eval_clips, cfg.sample_clips), frames=cfg.frames,
                            seed=cfg.seed + 7)
    voc = PerChannel(mono_generator(model_cfg)) if cfg.per_channel else build_vocoder(model_cfg)
    init_signal_propagation(voc, data, 16, cfg.residual_scale)  # seeded above (a resumed run loads its own)
    params = list(voc.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.8, 0.99))
    run = Run(Path(cfg.run_dir))
    run.open()  # the folder is writable and its checkpoint readable; nothing written yet

    def forward_backward(step: int) -> dict[str, float]:
        mel, wave = batch(cfg, data, step)  # (B, 2, crop, 64), (B, 2, 160 crop)
        out = voc(mel)  # the inference path: (B, 2, 160 crop)
        sc, logmag = spectral_loss(out, wave, cfg.stft_sizes, cfg.range_db)
        mel_l1, stereo, level = mel_loss(out, wave, cfg.range_db), stereo_loss(out, wave), level_loss(out, wave)
        waveform = waveform_loss(out, wave)
        loss = (sc + logmag + cfg.mel_weight * mel_l1 + cfg.stereo_weight * stereo + cfg.level_weight * level
                + cfg.wave_weight * waveform)
        loss.backward()
        return {"loss": loss.item(), "spectral_convergence": sc.item(), "log_magnitude": logmag.item(),
                "mel_l1": mel_l1.item(), "stereo": stereo.item(), "level": level.item(), "waveform": waveform.item()}

    def sample(step: int) -> None:
        if step % cfg.sample_every == 0 or step == cfg.steps:
            samples = Path(cfg.run_dir) / "samples"
            path = sample_sheet(samples / f"step_{step:06d}.png", voc, heldout, cfg.sample_clips, cfg.clip_mel_frames,
                                wav_dir=samples if step == cfg.steps else None)  # the final model's WAVs
            run.image("vocoded", path)

    def lr_lambda(step: int) -> float:  # warm-up, then linear decay to 10% at `steps`
        return min(1.0, (step + 1) / max(1, cfg.warmup)) * (0.1 + 0.9 * (1 - step / cfg.steps))

    loop = TrainLoop(run, forward_backward, optimizer=opt, lr_lambda=lr_lambda, params=params,
                     checkpoint=RunCheckpoint(run, {"vocoder": voc}, {"opt": opt}), steps=cfg.steps,
                     log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every, stop_after=cfg.stop_after,
                     after_step=sample)
    loop.resume()
    record = asdict(cfg) | {"vocoder": model_cfg.to_metadata()}  # the official metadata config["vocoder"]
    run.start(record, project="ltx-demo-vocoder", use_wandb=cfg.wandb)  # after the checkpoint is validated
    t0 = time.time()
    loop.fit()
    run.plot(("loss", "spectral_convergence", "log_magnitude", "mel_l1", "stereo", "level", "waveform"),
             title="demo vocoder training")
    if run.step < cfg.steps:  # a time-boxed session: no final model yet
        run.finish()
        return {"steps": run.step, "stopped_at": run.step}
    voc.eval()
    if cfg.per_channel:  # what is scored and written: the stereo vocoder in the official layout
        voc = stereo_from_mono(voc.mono, model_cfg).eval()
    report = {
        "steps": run.step,
        "train_seconds_this_session": round(time.time() - t0, 1),
        "s_per_step_this_session": loop.session_s_per_step,
        "peak_rss_mib": peak_rss_mib(),
        "parameters": sum(p.numel() for p in params),
    }
    for split, clips in (("train", data), ("heldout", heldout)):
        report[f"vocoded_{split}"] = vocoder_scores(voc, clips, cfg.eval_clips, cfg.clip_mel_frames)
    torch.save(voc.state_dict(), Path(cfg.run_dir) / "vocoder_final.pt")
    (Path(cfg.run_dir) / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    run.finish()
    return report


def _register_schema() -> None:
    """configs/train_vocoder.yaml composes on `train_vocoder_schema` (typos and bad types fail, also in
    compose())."""
    ConfigStore.instance().store(name="train_vocoder_schema", node=TrainVocoderConfig)


_register_schema()


def main() -> None:
    """The Hydra entry point (configs/train_vocoder.yaml): bad input ends in one line `error: ...`
    (LTX_DEBUG=1 shows the traceback)."""
    hydra_app(TrainVocoderConfig, "train_vocoder", train, (RunError, TrainingError, OSError))


if __name__ == "__main__":
    main()
