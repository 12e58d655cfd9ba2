"""Train the LTX-2 demo's audio VAE on ShapesWorld-AV soundtracks from scratch (CPU-sized), with exact resume.

    python -m train.train_audio_vae                         # configs/train_audio_vae.yaml
    python -m train.train_audio_vae steps=200 run_dir=runs/audio_vae_smoke

The model is the native LTX-2 audio VAE (`ltx.ltx2.audio_vae.AudioVAE`) with the small trunk of
configs/demo/ltx2_audio_vae.yaml and the released mel settings and latent grid (16 kHz, hop 160, 64 mel bins,
stereo; 8 latent channels per 4 mel frames x 4 mel bins, 128-wide tokens). Its input is what inference and
preprocessing feed it: the clip's soundtrack (`ltx.data.shapes_av`) through `ltx.ltx2.audio.waveform_to_mel`,
cut to the 4 T - 3 mel frames that the clip's T = round(25 F / fps) latents read (`fit_mel`, as
train/preprocess_ltx2.py). Training crops are `crop_frames` mel frames of those, starting on the latent grid
(a multiple of 4 frames); the VAE is convolutional and causal in time, so it runs on full clips afterwards.
The loss is L1 + MSE of the log-mel reconstructed from a posterior sample, plus a small KL term, plus a stereo
term: a voice's pan is a small difference between the channels' log-mels (log(L / R), about +-0.5, the same on
all its partials) on the few loud bins, which the plain reconstruction loss leaves for last: without it the VAE
decodes L = R (measured, 400 steps: stereo balance error 0.39 of a possible 0-2, the truth's pans ignored).
`stereo_weight` x the mean absolute (`stereo_loss=l1`, the bundled demo's) or squared error of left - right on
the bins within 40 dB of their frame's loudest (`stereo_error`) teaches it, at a price in the rest of the
spectrum at this size (measured on 32 held-out clips after 600 steps: weight 0 (400 steps): pitch 84%, balance
error 0.39; weight 30, squared: 62%, 0.10; weight 30 on the absolute error: 34%, 0.09). `stereo_warmup` ramps
its weight up from 0 over that many steps: at full weight from step 0 one squared-error run stalled at its
initial loss for 600 steps (another seed of the same setting did not). Two data-dependent biases start the
model centred on the mean log-mel (`init_biases`).

At the end the per-channel latent statistics (`per_channel_statistics`: mean-of-means and std-of-means of the
posterior means over the patchified 128-wide tokens of `stats_clips` full clips) are measured and stored in the
VAE, as the official checkpoints carry them, and the reconstruction of full train and held-out clips
(posterior mean, through `encode` / `decode` as inference uses them) is scored in report.json: log-mel L1 and
MSE, the share of clips whose loudest mel bin (the dominant voice's fundamental) names the truth's note, and the
stereo balance error (how far the reconstruction's left/right energy split is from the truth's, 0-2 scale).
Every `sample_every` steps (and at the end) RUN/samples/step_NNNNNN.png shows held-out log-mels (left channel
over right, low frequencies at the bottom), each beside its reconstruction.

Decoder fine-tuning: `init_from` a trained audio VAE (a run's audio_vae_final.pt or an LTX-2 file such as
demo/ltx2-demo.safetensors) with `train_encoder=false`: the encoder and the latent statistics stay frozen (the
transformer's latent space is kept), the KL term is dropped, and `latent_noise` jitters the latents by that many
latent standard deviations. Measured on the bundled demo (1000 steps, lr 3e-4, stereo_weight 100, latent_noise
0.05, 6.4 min): the evaluator's round trip did not move (|x - p| 0.058 -> 0.059 W, pan 74 -> 77%, pitch 91 -> 90%;
96 clips), so the pan's imprecision is in the latents, not the decoder; the bundled file keeps its audio VAE.

Outputs for the exporter: RUN/audio_vae_final.pt (a state dict that loads strictly into AudioVAE(config)) and
RUN/config.json, whose "audio_vae" entry is the official metadata sub-dict (`AudioVAEConfig.to_metadata`; the
other entries are this run's training settings).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.core.config_store import ConfigStore
from torch import Tensor

from infer.app import hydra_app
from ltx.core.losses import gaussian_kl
from ltx.core.viz import save_video_grid
from ltx.data.shapes_av import FPS, NOTES, ShapesWorldAV, soundtrack
from ltx.ltx2 import audio as mel_settings
from ltx.ltx2.audio import LOG_FLOOR, hz_to_mel, mel_to_hz, waveform_to_mel
from ltx.ltx2.audio_vae import (
    LATENT_TIME_FACTOR,
    AudioVAE,
    AudioVAEConfig,
    mel_frames_for_latents,
    patchify,
    pixel_norm,
)
from ltx.ltx2.patchify import audio_latent_frames_for_video
from train.harness import TrainingError, TrainLoop, step_generator
from train.preprocess_ltx2 import fit_mel
from train.runner import Run, RunCheckpoint, RunError, check_int, check_multiple, check_number, peak_rss_mib
from train.train_vae import load_initial

LOG_MEL_RANGE = (math.log(LOG_FLOOR), 1.5)  # the pictures' grey scale: digital silence .. a little above 0 dB
LOUD_RANGE_DB = 40.0  # the stereo loss's bins: within this of their frame's loudest


@dataclass(kw_only=True)
class TrainAudioVAEConfig:
    run_dir: str = "runs/demo_audio_vae"
    audio_vae: AudioVAEConfig = field(default_factory=AudioVAEConfig)  # filled from configs/demo/ltx2_audio_vae.yaml
    seed: int = 0
    steps: int = 600
    batch_size: int = 8
    lr: float = 3e-3
    weight_decay: float = 0.0
    kl_weight: float = 1e-4
    stereo_weight: float = 30.0  # weight of the error of (left - right) log-mel on the loud bins (the pan)
    stereo_warmup: int = 0  # the stereo weight rises linearly from 0 over these first steps
    stereo_loss: str = "l1"  # l1 | squared: how the pan error is counted (`stereo_error`)
    init_from: str | None = None  # start from a trained audio VAE: a run's audio_vae_final.pt or an LTX-2 file
    train_encoder: bool = True  # False: decoder fine-tuning; the encoder and latent statistics stay frozen
    latent_noise: float = 0.0  # decoder fine-tuning: jitter of the normalised latents (the transformer's are not exact)
    warmup: int = 30
    crop_frames: int = 65  # mel frames per training crop (4N + 1: whole latents); a clip has 4 T - 3 (209)
    frames: int = 17  # video frames per clip, at 8 fps: the soundtrack's length (2.125 s)
    num_clips: int = 4096  # distinct training clips (synthesised on the fly, deterministic per index)
    eval_clips: int = 32  # train and held-out clips scored at the end
    stats_clips: int = 128  # clips used to measure the per-channel latent statistics
    sample_every: int = 200  # write RUN/samples/step_NNNNNN.png: held-out log-mels over their reconstructions
    sample_clips: int = 4
    stop_after: int | None = None  # end this session at that step (resumable), e.g. to time-box a run
    log_every: int = 10
    checkpoint_every: int = 100
    threads: int = 2
    wandb: bool = True

    def __post_init__(self):
        """Every field checked where the config is made (Hydra's to_object, or in code), before anything runs."""
        if not isinstance(self.run_dir, str) or not self.run_dir:
            raise ValueError(f"run_dir={self.run_dir!r} is invalid: give a folder for the run's outputs")
        for name in ("steps", "batch_size", "num_clips", "eval_clips", "stats_clips", "sample_every", "sample_clips",
                     "log_every", "checkpoint_every", "threads"):
            check_int(name, getattr(self, name))
        check_int("seed", self.seed, 0)
        check_int("warmup", self.warmup, 0)
        check_int("stop_after", self.stop_after, optional=True)
        check_number("lr", self.lr, 0.0, lo_open=True)
        check_number("weight_decay", self.weight_decay, 0.0)
        check_number("kl_weight", self.kl_weight, 0.0)
        check_number("stereo_weight", self.stereo_weight, 0.0)
        check_number("latent_noise", self.latent_noise, 0.0)
        if self.init_from is not None and (not isinstance(self.init_from, str) or not self.init_from):
            raise ValueError(f"init_from={self.init_from!r} is invalid: give an audio_vae_final.pt or an LTX-2 "
                             "checkpoint with an audio VAE (or null)")
        if not isinstance(self.train_encoder, bool):
            raise ValueError(f"train_encoder={self.train_encoder!r} is invalid: true or false")
        if not self.train_encoder and not self.init_from:
            raise ValueError("train_encoder=false fine-tunes the decoder of a trained audio VAE: set init_from to "
                             "its audio_vae_final.pt or a checkpoint (e.g. init_from=demo/ltx2-demo.safetensors)")
        check_int("stereo_warmup", self.stereo_warmup, 0)
        if self.stereo_loss not in ("l1", "squared"):
            raise ValueError(f"stereo_loss={self.stereo_loss!r} is invalid: choose l1 or squared")
        check_multiple("frames", self.frames, 8, plus=1, what=" (ShapesWorld clips)")
        check_multiple("crop_frames", self.crop_frames, LATENT_TIME_FACTOR, plus=1,
                       what=f" (whole latents of {LATENT_TIME_FACTOR} mel frames)")
        if self.crop_frames > self.clip_mel_frames:
            raise ValueError(f"crop_frames={self.crop_frames} is invalid: must be <= {self.clip_mel_frames}, the mel "
                             f"frames of a {self.frames}-frame clip")
        check_mel_settings(self.audio_vae)

    @property
    def clip_mel_frames(self) -> int:
        """Mel frames of a clip as the audio VAE sees it: 4 T - 3 for its T = round(25 F / fps) latents (209)."""
        return mel_frames_for_latents(audio_latent_frames_for_video(self.frames, FPS))


def check_mel_settings(cfg: AudioVAEConfig) -> None:
    """The demo keeps the released mel features and stereo layout (the vocoder and the LTX-2 transformer's
    audio tokens assume them); only the trunk (ch, ch_mult, num_res_blocks) and z_channels are free."""
    want = {"sample_rate": mel_settings.SAMPLE_RATE, "n_fft": mel_settings.N_FFT, "hop_length": mel_settings.HOP_LENGTH,
            "mel_bins": mel_settings.N_MELS, "in_channels": 2, "out_ch": 2}
    for name, value in want.items():
        if getattr(cfg, name) != value:
            raise ValueError(f"audio_vae.{name}={getattr(cfg, name)!r} is invalid: the LTX-2 mel features are "
                             f"{', '.join(f'{k}={v}' for k, v in want.items())} (ltx.ltx2.audio)")


# ------------------------------------------------------------------------------------------------ the model
# Training needs the posterior's log-variance, which AudioVAE.encode drops: these two functions are the
# methods the lead moves onto AudioEncoder / AudioVAE (see the report).


def encode_moments(vae: AudioVAE, mel: Tensor) -> Tensor:
    """Raw posterior moments [mean; logvar] (B, 2 z, T_lat, M / 4) of a log-mel (B, 2, T_mel, M): the encoder
    up to `conv_out`, before `AudioEncoder.forward` keeps the means (no statistics applied)."""
    enc = vae.encoder
    h = enc.conv_in(mel)  # (B, ch, T_mel, M)
    for level in enc.down:
        for block in level.block:
            h = block(h)
        if hasattr(level, "downsample"):
            h = level.downsample(h)  # (B, w, (T - 1) // 2 + 1, M / 2)
    h = enc.mid(h)  # (B, 4 ch, T_lat, M / 4)
    return enc.conv_out(F.silu(pixel_norm(h)))  # (B, 2 z, T_lat, M / 4)


def decode_raw(vae: AudioVAE, z: Tensor) -> Tensor:
    """A raw (un-normalised) latent (B, z, T_lat, F) -> log-mel (B, 2, 4 T_lat - 3, M): `AudioVAE.decode`
    without the statistics."""
    mel = vae.decoder(z)  # (B, 2, 4 T_lat - 3, 4 F)
    return mel[:, :, : mel_frames_for_latents(z.shape[2]), : vae.cfg.mel_bins]


# ------------------------------------------------------------------------------------------------ data


@torch.no_grad()
def init_biases(vae: AudioVAE, data: ShapesWorldAV, n: int, mel_frames: int) -> float:
    """Centre both ends on the mean log-mel m of the first `n` clips (about -9: most bins are silent): the
    encoder's first conv gets the bias that makes it see mel - m, the decoder's last conv starts at m. Training
    then starts on the spectra's shape instead of spending its first thousand steps on the offset. Returns m."""
    mean = torch.stack([clip_mel(data, i, mel_frames) for i in range(min(n, len(data)))]).mean().item()
    conv_in = vae.encoder.conv_in.conv
    conv_in.bias.copy_(-mean * conv_in.weight.sum((1, 2, 3)))
    vae.decoder.conv_out.conv.bias.fill_(mean)
    return mean


def clip_mel(data: ShapesWorldAV, index: int, mel_frames: int) -> Tensor:
    """The audio VAE's input for clip `index`: its soundtrack -> log-mel (2, mel_frames, 64), as preprocessing
    computes it (waveform_to_mel, then the first `mel_frames` frames)."""
    audio = soundtrack(data.params(index), data.frames, data.fps, data.sample_rate)  # (2, N), no video rendered
    return fit_mel(waveform_to_mel(audio[None], data.sample_rate), mel_frames)[0]


def batch(cfg: TrainAudioVAEConfig, data: ShapesWorldAV, step: int) -> Tensor:
    """The training batch of `step` (deterministic in seed and step): log-mel crops (B, 2, crop_frames, 64)
    starting on the latent grid."""
    g = step_generator(cfg.seed, step)
    idx = torch.randint(len(data), (cfg.batch_size,), generator=g)
    starts = (cfg.clip_mel_frames - cfg.crop_frames) // LATENT_TIME_FACTOR + 1
    crops = []
    for i in idx.tolist():
        t0 = LATENT_TIME_FACTOR * int(torch.randint(starts, (1,), generator=g))
        crops.append(clip_mel(data, i, cfg.clip_mel_frames)[:, t0 : t0 + cfg.crop_frames])
    return torch.stack(crops)


# ------------------------------------------------------------------------------------------------ losses and measures


def loud_bins(mel: Tensor) -> Tensor:
    """(B, 2, T, M) log-mel -> (B, T, M) float mask of the bins within LOUD_RANGE_DB of their frame's loudest
    (either channel): the partials that carry a voice's pitch, timbre and pan."""
    peak = mel.amax(1)  # (B, T, M): the louder channel
    return (peak > peak.amax(-1, keepdim=True) - LOUD_RANGE_DB / 20 * math.log(10)).float()


def stereo_error(err: Tensor, mel: Tensor, kind: str = "l1") -> Tensor:
    """The mean |err_left - err_right| ("l1", the bundled demo's) or its square ("squared": its pull fades as the
    pan is learned, leaving the model to the rest of the spectrum) over the loud bins of `mel`: the error of the
    log ratio of the channels, where a voice's pan lives (the same L - R on all its partials)."""
    loud = loud_bins(mel)
    d = err[:, 0] - err[:, 1]
    return ((d.abs() if kind == "l1" else d.square()) * loud).sum() / loud.sum().clamp_min(1.0)



def peak_bins(mel: Tensor) -> Tensor:
    """(B, 2, T, M) log-mel -> (B,) the mel bin with the most energy over the clip, both channels summed (the
    dominant voice's fundamental: every timbre's strongest partial is its first)."""
    return mel.float().mul(2).exp().sum((1, 2)).argmax(-1)


def peak_notes(mel: Tensor) -> list[str]:
    """(B, 2, T, M) log-mel -> the colour whose note is nearest (in log frequency) to the centre of each clip's
    loudest mel bin (notes are >= 3 bins apart, so a peak one bin off still names its note)."""
    edges = mel_to_hz(torch.linspace(0.0, hz_to_mel(mel_settings.SAMPLE_RATE / 2), mel.shape[-1] + 2))
    centres = edges[1:-1][peak_bins(mel)]  # (B,) Hz
    notes = torch.tensor(list(NOTES.values()))
    return [list(NOTES)[int((notes / c).log().abs().argmin())] for c in centres]


def balance(mel: Tensor) -> Tensor:
    """(B, 2, T, M) log-mel -> (B, T) stereo balance (E_R - E_L) / (E_R + E_L) per mel frame, in [-1, 1]."""
    energy = mel.float().mul(2).exp().sum(-1)  # (B, 2, T)
    return (energy[:, 1] - energy[:, 0]) / (energy[:, 1] + energy[:, 0]).clamp_min(1e-12)


@torch.no_grad()
def reconstruction_scores(vae: torch.nn.Module, data: ShapesWorldAV, n: int, mel_frames: int) -> dict[str, float]:
    """Reconstructions (`vae(mel)`: encode to normalised posterior means, decode) of the first `n` full clips:
    log-mel L1 and MSE (means over every value), % of clips whose loudest mel bin names the truth's note
    (`peak_notes`), and the mean absolute stereo-balance error (0: the same left/right split in every frame)."""
    l1 = mse = hits = bal = 0.0
    for start in range(0, n, 8):
        mel = torch.stack([clip_mel(data, i, mel_frames) for i in range(start, min(n, start + 8))])
        recon = vae(mel)
        l1 += (recon - mel).abs().mean((1, 2, 3)).sum().item()
        mse += (recon - mel).square().mean((1, 2, 3)).sum().item()
        hits += sum(a == b for a, b in zip(peak_notes(recon), peak_notes(mel)))
        bal += (balance(recon) - balance(mel)).abs().mean(1).sum().item()
    return {"mel_l1": l1 / n, "mel_mse": mse / n, "pitch_match": 100 * hits / n, "balance_error": bal / n}


@torch.no_grad()
def measure_statistics(vae: AudioVAE, data: ShapesWorldAV, n: int, mel_frames: int) -> dict[str, float]:
    """Set `per_channel_statistics` from the posterior means of `n` full clips, over their patchified tokens
    (channel c * F + f, as AudioVAE.encode normalises them): mean-of-means and std-of-means."""
    tokens = []
    for start in range(0, n, 8):
        mel = torch.stack([clip_mel(data, i, mel_frames) for i in range(start, min(n, start + 8))])
        mean = encode_moments(vae, mel).chunk(2, dim=1)[0]  # (b, z, T_lat, F) raw posterior means
        tokens.append(patchify(mean).flatten(0, 1))  # (b T_lat, z F)
    t = torch.cat(tokens)  # (n T_lat, D)
    stats = vae.per_channel_statistics
    stats.get_buffer("mean-of-means").copy_(t.mean(0))
    stats.get_buffer("std-of-means").copy_(t.std(0).clamp_min(1e-4))
    return {"latent_mean_abs": t.mean(0).abs().mean().item(), "latent_std_mean": t.std(0).mean().item()}


def mel_picture(mel: Tensor) -> Tensor:
    """(2, T, M) log-mel -> (3, 2 M + 2, T) in [-1, 1]: the left channel above the right, low frequencies at
    the bottom, grey from digital silence (black) to 1.5 (white)."""
    lo, hi = LOG_MEL_RANGE
    grey = ((mel.float() - lo) / (hi - lo) * 2 - 1).clamp(-1, 1).flip(-1).transpose(1, 2)  # (2, M, T), high on top
    picture = torch.cat([grey[0], torch.ones(2, grey.shape[2]), grey[1]])  # (2 M + 2, T)
    return picture.expand(3, -1, -1)


@torch.no_grad()
def reconstruction_rows(vae: AudioVAE, data: ShapesWorldAV, n: int, mel_frames: int) -> list[Tensor]:
    """One row per clip for `save_video_grid`, as a two-frame "video" (3, 2, 2 M + 2, T): the first `n` clips'
    log-mels, each beside its reconstruction."""
    mel = torch.stack([clip_mel(data, i, mel_frames) for i in range(min(n, len(data)))])
    return [torch.stack([mel_picture(m), mel_picture(r)], dim=1) for m, r in zip(mel, vae(mel))]


# ------------------------------------------------------------------------------------------------ the run


def train(cfg: TrainAudioVAEConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    data = ShapesWorldAV(split="train", num_samples=cfg.num_clips, frames=cfg.frames, seed=cfg.seed)
    heldout = ShapesWorldAV(split="heldout", num_samples=max(cfg.eval_clips, cfg.sample_clips), frames=cfg.frames,
                            seed=cfg.seed + 7)
    vae = AudioVAE(cfg.audio_vae)  # PyTorch's default initialisation, seeded above
    if cfg.init_from:
        load_initial(vae, cfg.init_from, ltx2=True, component="audio_vae")
    else:
        init_biases(vae, data, 16, cfg.clip_mel_frames)  # (a resumed run loads its own)
    vae.encoder.requires_grad_(cfg.train_encoder)
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    run = Run(Path(cfg.run_dir))
    run.open()  # the folder is writable and its checkpoint readable; nothing written yet

    def forward_backward(step: int) -> dict[str, float]:
        mel = batch(cfg, data, step)  # (B, 2, crop, 64)
        with torch.set_grad_enabled(cfg.train_encoder):
            mean, logvar = encode_moments(vae, mel).chunk(2, dim=1)
        logvar = logvar.clamp(-30, 20)
        g = step_generator(cfg.seed + 1, step)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=g)
        if cfg.latent_noise:  # in the normalised space the transformer samples: std-of-means per token channel
            b, c, t, f = z.shape
            std = vae.per_channel_statistics.get_buffer("std-of-means").reshape(1, c, 1, f)  # token channel c F + f
            z = z + cfg.latent_noise * std * torch.randn(z.shape, generator=g)
        err = decode_raw(vae, z) - mel
        rec = (err.abs() + err.square()).mean()
        stereo = stereo_error(err, mel, cfg.stereo_loss)
        kl = gaussian_kl(mean, logvar)
        stereo_weight = cfg.stereo_weight * min(1.0, (step + 1) / max(1, cfg.stereo_warmup))
        loss = rec + stereo_weight * stereo + (cfg.kl_weight * kl if cfg.train_encoder else 0.0)
        loss.backward()
        return {"loss": loss.item(), "recon": rec.item(), "stereo": stereo.item(), "kl": kl.item()}

    def sample(step: int) -> None:
        if step % cfg.sample_every == 0 or step == cfg.steps:
            path = save_video_grid(Path(cfg.run_dir) / f"samples/step_{step:06d}.png",
                                   reconstruction_rows(vae, heldout, cfg.sample_clips, cfg.clip_mel_frames),
                                   frames=2, scale=1)
            run.image("reconstructions", path)

    def lr_lambda(step: int) -> float:  # warm-up, then linear decay to 10% at `steps`
        return min(1.0, (step + 1) / max(1, cfg.warmup)) * (0.1 + 0.9 * (1 - step / cfg.steps))

    loop = TrainLoop(run, forward_backward, optimizer=opt, lr_lambda=lr_lambda, params=params,
                     checkpoint=RunCheckpoint(run, {"audio_vae": vae}, {"opt": opt}), steps=cfg.steps,
                     log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every, stop_after=cfg.stop_after,
                     after_step=sample)
    loop.resume()
    record = asdict(cfg) | {"audio_vae": cfg.audio_vae.to_metadata()}  # the official metadata sub-dict
    run.start(record, project="ltx-demo-audio-vae", use_wandb=cfg.wandb)  # after the checkpoint is validated
    t0 = time.time()
    loop.fit()
    run.plot(("loss", "recon", "stereo"), title="demo audio VAE training")
    if run.step < cfg.steps:  # a time-boxed session: no final model yet
        run.finish()
        return {"steps": run.step, "stopped_at": run.step}
    vae.eval()
    report = {
        "steps": run.step,
        "train_seconds_this_session": round(time.time() - t0, 1),
        "s_per_step_this_session": loop.session_s_per_step,
        "peak_rss_mib": peak_rss_mib(),
        "parameters": sum(p.numel() for p in params),
        **(measure_statistics(vae, data, cfg.stats_clips, cfg.clip_mel_frames) if cfg.train_encoder else
           {"latent_statistics": f"kept from {cfg.init_from}"}),  # the transformer's latent space stays
    }
    for split, clips in (("train", data), ("heldout", heldout)):
        report[f"reconstruction_{split}"] = reconstruction_scores(vae, clips, cfg.eval_clips, cfg.clip_mel_frames)
    torch.save(vae.state_dict(), Path(cfg.run_dir) / "audio_vae_final.pt")
    (Path(cfg.run_dir) / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    run.finish()
    return report


def _register_schema() -> None:
    """configs/train_audio_vae.yaml composes on `train_audio_vae_schema` (typos and bad types fail, also in
    compose())."""
    ConfigStore.instance().store(name="train_audio_vae_schema", node=TrainAudioVAEConfig)


_register_schema()


def main() -> None:
    """The Hydra entry point (configs/train_audio_vae.yaml): bad input ends in one line `error: ...`
    (LTX_DEBUG=1 shows the traceback)."""
    hydra_app(TrainAudioVAEConfig, "train_audio_vae", train, (RunError, TrainingError, OSError))


if __name__ == "__main__":
    main()
