"""Fine-tune LTX-2 / LTX-2.3 (video + sound): the LTX-2 side of `train.finetune`, picked by an LTX-2 `model=` preset.

    python -m train.preprocess data=clips/ out=cache/clips checkpoint=ltx-2-19b-dev.safetensors text_encoder=gemma/
    python -m train.finetune model=ltx-2-19b-dev checkpoint=ltx-2-19b-dev.safetensors data=cache/clips av.mode=t2av

Everything but the step is the 0.9.x trainer's (train/finetune.py `Trainer`): the shared loop, the deterministic
bucket sampler, exact resume on any number of processes, DDP / FSDP2, EMA, the run folder. What differs:
- the model that trains is `ltx.ltx2.training.AVTrainModel`: the audio+video transformer plus the text connectors,
  fed with the cached Gemma features (the cache holds the feature extractor's output; Gemma never loads here,
  except once for the validation prompts);
- the objective is `ltx.ltx2.training.av_loss` under a training mode (`av.mode`, `ltx.ltx2.training.MODES`): which
  stream is generated, which is a clean condition, which tokens are clean (first frame, prefix, suffix), whether the
  IC-LoRA reference is prepended. Every sample draws its video sigma and its audio sigma independently;
- the frozen base sits in bfloat16 under LoRA on CUDA (`av.base_dtype`; its forward then runs under bf16 autocast),
  the adapters in float32;
- validation samples with the parity-tested one-stage LTX-2 sampler and writes mp4 with AAC sound, the audio
  contact sheet (frames, waveform, spectrogram) and a grid;
- the result is a LoRA in the official trainer's layout (`lora.format=trainer`) or ComfyUI's (`comfy`, with alpha),
  IC-LoRAs with `reference_downscale_factor`; a full fine-tune writes an official single file.
"""

from __future__ import annotations

import dataclasses
import re
from contextlib import nullcontext
from functools import cached_property
from pathlib import Path

import torch
from torch import Tensor, nn

from ltx.core.audio_io import write_audio_contact_sheet, write_video_with_audio
from ltx.core.checkpoint import atomic_file
from ltx.core.lora import LoRAConfig, freeze_base, fresh_adapter, inject_lora, lora_parameters, lora_targets
from ltx.core.losses import SigmaSampler, sigma_bucket_means, sigma_bucket_sums
from ltx.core.media import slug
from ltx.core.parallel import init_distributed, materialize, parallelize
from ltx.data.latent_cache import BucketBatchSampler, LatentCache, read_index, shard
from ltx.ltx2 import checkpoint as ltx2_checkpoint
from ltx.ltx2 import patchify
from ltx.ltx2.api import family
from ltx.ltx2.lora import save_lora
from ltx.ltx2.pipelines import AVModels, AVRequest, Prompt, check_size, one_stage
from ltx.ltx2.sched import GuiderParams, ltx2_sigmas
from ltx.ltx2.text import GemmaTextEncoder
from ltx.ltx2.training import (
    AVTrainModel,
    StreamBatch,
    TrainingMode,
    av_loss,
    draw,
    sigma_sampler,
    training_mode,
)
from train.finetune_core import (
    EMA,
    FinetuneConfig,
    Trainer,
    _plain,
    batch_split,
    check_offload,
    check_resume,
    model_device,
    offload_blocks,
    slurm_environment,
)
from train.harness import step_generator
from train.runner import Run, check_run_dir
from train.train_vae import latent_space_id

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


# ------------------------------------------------------------------------------------------------ checks


def resolve_paths(cfg: FinetuneConfig) -> FinetuneConfig:
    """The preset's local weights where the config names none (LTX-2 presets have none but the bundled demo)."""
    from ltx.presets import config_root

    g = cfg.model.generation

    def local(path: str | None) -> str | None:
        return None if path is None else str(path if Path(path).is_absolute() else config_root() / path)

    ckpt = cfg.checkpoint if cfg.checkpoint is not None else local(g.checkpoint_path)
    if ckpt is None:
        raise ValueError(f"checkpoint=... is needed: pass the {cfg.model.name} file ({cfg.model.checkpoint})")
    text = cfg.text_encoder if cfg.text_encoder is not None else local(g.text_encoder_path)
    return dataclasses.replace(cfg, checkpoint=ckpt, text_encoder=text)


def mode_of(cfg: FinetuneConfig) -> TrainingMode:
    """`av.mode` with the config's overrides (first_frame_p > 0 turns on image-to-video in any video mode)."""
    overrides = {}
    if cfg.first_frame_p:
        overrides["first_frame_p"] = cfg.first_frame_p
    if cfg.av.prefix is not None:  # the clean span of the mode's extension stream(s), prefix or suffix
        base = training_mode(cfg.av.mode)
        spans = [f"{s}_{side}" for s in ("video", "audio") for side in ("prefix", "suffix")
                 if base.role(s) is not None and getattr(base.role(s), side)]
        if not spans:
            raise ValueError(f"av.prefix={cfg.av.prefix} sets the clean span of an extension mode (extend, "
                             f"video_suffix, audio_extend, audio_suffix); av.mode={cfg.av.mode} has none")
        overrides |= dict.fromkeys(spans, cfg.av.prefix)
    for stream in ("video", "audio"):  # a t2av run that also learns audio-to-video / video-to-audio
        if p := getattr(cfg.av, f"{stream}_clean_p"):
            overrides[f"{stream}_clean_p"] = p
    mode = training_mode(cfg.av.mode, **overrides)
    weights = {"video": cfg.av.video_loss_weight, "audio": cfg.av.audio_loss_weight}
    learned = [s for s in ("video", "audio") if mode.role(s) is not None and mode.role(s).generated]
    if not any(weights[s] > 0 for s in learned):
        raise ValueError(f"av.mode={cfg.av.mode} learns {' and '.join(learned)}, but "
                         f"{' and '.join(f'av.{s}_loss_weight' for s in learned)} = 0: nothing would be trained; give "
                         "the generated stream a weight > 0")
    if cfg.reference_video and not (mode.video and mode.video.reference):
        raise ValueError(f"reference_video=true trains an IC-LoRA: pick av.mode=ic_lora (or av2av_ic_lora) instead of "
                         f"av.mode={cfg.av.mode}")
    return mode


def check_inputs(cfg: FinetuneConfig, mode: TrainingMode, world: int):
    """Everything checked before a file is written: the bundle against the preset, the cache against the model
    and the mode. Returns (bundle, cache)."""
    if not Path(cfg.checkpoint).exists():
        raise FileNotFoundError(f"checkpoint={cfg.checkpoint} does not exist")
    if cfg.vae_checkpoint is not None:
        raise ValueError("vae_checkpoint is for LTX-Video 0.9.x; an LTX-2 file holds its VAEs (checkpoint=...)")
    bundle = ltx2_checkpoint.read(cfg.checkpoint, ("transformer", "text", "vae", "audio_vae", "vocoder"))
    ltx2_checkpoint.check(bundle)
    version = str(bundle.model_version or "2")
    if family(version) != family(cfg.model.av.model_version):
        raise ValueError(f"checkpoint={cfg.checkpoint} is model_version {version!r}; model={cfg.model.name} is for "
                         f"LTX-{cfg.model.av.model_version}: pick the matching preset")
    if not Path(cfg.data).is_dir():
        raise FileNotFoundError(f"data={cfg.data} is not a folder; make it with python -m train.preprocess")
    if read_index(cfg.data).get("family", "ltxv") != "ltx2":
        raise ValueError(f"data={cfg.data} is an LTX-Video 0.9.x cache; model={cfg.model.name} trains on a cache made "
                         f"with an LTX-2 checkpoint (python -m train.preprocess checkpoint=<LTX-2 file> ...)")
    cache = LatentCache(cfg.data)  # refuses an unfinished or empty cache in one line
    if mode.audio is not None and cache.audio_items < len(cache):
        missing = len(cache) - cache.audio_items
        raise ValueError(f"av.mode={mode.name} uses sound but {missing} of the {len(cache)} clips in data={cfg.data} "
                         "have none (index.json lists them with audio_missing): drop them from the manifest, give "
                         "them an audio_path, or train av.mode=t2v")
    with_ref, factors = cache.references
    if mode.audio is not None and mode.audio.reference:
        without = sum(it.get("reference_audio_shape") is None for it in cache.items)
        if without:
            raise ValueError(f"av.mode={mode.name} needs the sound of each sample's reference clip but {without} of "
                             f"the {len(cache)} clips in data={cfg.data} have none (a reference_path whose clip has an "
                             "audio track, preprocessed with audio=true)")
    needs_ref = bool(mode.video and mode.video.reference)
    if needs_ref and with_ref < len(cache):
        raise ValueError(f"av.mode={mode.name} needs a reference clip per sample but {len(cache) - with_ref} of the "
                         f"{len(cache)} clips in data={cfg.data} have none: give every manifest row a reference_path "
                         "and preprocess again")
    if needs_ref and len(factors) > 1:
        raise ValueError(f"data={cfg.data} mixes reference downscale factors {sorted(factors)}; preprocess with one "
                         "reference_downscale")
    if cfg.av.connector == "trainable" and cfg.mode == "lora":
        raise ValueError("av.connector=trainable needs mode=full: a LoRA file holds transformer adapters only, so "
                         "trained connectors would be lost (keep av.connector=frozen with LoRA)")
    batch_split(cfg, world)
    v = cfg.validation
    if v.prompts or v.from_data:
        F_, H, W = cache.buckets_list[0]
        try:
            check_size(v.height or H, v.width or W, v.num_frames or F_, two_stage=False,
                       scale=ltx2_checkpoint.build(bundle, "vae").cfg.scale)
        except ValueError as e:
            raise ValueError(f"validation size: {e}") from None
    return bundle, cache


# ------------------------------------------------------------------------------------------------ the trainer


class AVTrainer(Trainer):
    """One LTX-2 fine-tuning run (per process); the loop, checkpoints and outputs are the base class's."""

    def __init__(self, cfg: FinetuneConfig):  # noqa: PLR0915 - one linear setup, in the base class's order
        slurm_environment()
        cfg = resolve_paths(cfg)
        self.cfg = cfg
        self.dist = init_distributed()
        check_offload(cfg, self.dist)
        self.resolved = _plain(cfg)
        self.run_dir = Path(cfg.run_dir)
        check_run_dir(self.run_dir)
        self.mode = mode_of(cfg)
        self.bundle, self.cache = check_inputs(cfg, self.mode, self.dist.world_size)
        self.per_rank, self.micro = batch_split(cfg, self.dist.world_size)
        check_resume(cfg, self.resolved, self.run_dir)
        self.run = Run(self.run_dir, is_main=self.dist.is_main)
        self._check_latent_spaces()
        uses_ref = bool(self.mode.video and self.mode.video.reference)
        self.reference_downscale = max(self.cache.references[1], default=1) if uses_ref else None
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = self._device()
        self.fps = float(self.cache.index["fps"])
        self.video_scale = ltx2_checkpoint.build(self.bundle, "vae").cfg.scale  # pixels per latent voxel
        auto = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.base_dtype = auto if cfg.av.base_dtype == "auto" else DTYPES[cfg.av.base_dtype]
        self.validation_text = self._encode_validation_prompts()  # Gemma loads and is freed here
        self.sampler = BucketBatchSampler(self.cache, cfg.batch_size, cfg.seed)
        sigma = dataclasses.asdict(cfg.sigma)
        # sigma.kind=stretched_logit_normal: the official trainer's sampler, with its eps (1e-3) for the reflection
        self.sigmas = sigma_sampler("ltx2", std=sigma["std"], uniform_fraction=sigma["uniform_fraction"]) \
            if sigma["kind"] == "stretched_logit_normal" else SigmaSampler(**sigma)
        self.dit, params = self.build_model()  # on meta
        self.trainable = {n: p for n, p in self.dit.named_parameters() if p.requires_grad}
        self.n_trainable = sum(p.numel() for p in params)
        fsdp = self.dist.enabled and cfg.parallel == "fsdp"
        how = dict(activation_checkpointing=cfg.activation_checkpointing, compile=cfg.compile, param_dtype=None,
                   attr="transformer.transformer_blocks")
        if fsdp:  # sharded on meta, then each process reads only its shards: the model is never whole in memory
            self.model = parallelize(self.dit, self.dist, mode="fsdp", **how)
        materialize(self.dit, model_device(cfg, self.device), self._initial_tensor)  # CPU memory for offload=blocks
        self._initial_adapters = {}
        self.offload = offload_blocks(cfg, self.dit, self.device, self.dist, attr="transformer.transformer_blocks")
        if not fsdp:
            self.model = parallelize(self.dit, self.dist, mode=cfg.parallel if self.dist.enabled else "none", **how)
        trained = {n: p for n, p in self.dit.named_parameters() if p.requires_grad}
        self.params = list(trained.values())
        self.opt = self.make_optimizer(self.params)
        self.ema = EMA.of(cfg.ema, trained) if cfg.ema else None
        self._positions: dict = {}

    # -------------------------------------------------------------------------------------------- setup
    def build_model(self) -> tuple[nn.Module, list[nn.Parameter]]:
        """transformer + connectors on `meta` (`materialize` fills them from the file, `_initial_tensor`); LoRA:
        the base in `av.base_dtype` and frozen, float32 adapters; full: everything in float32, the connectors
        trained only with av.connector=trainable. Returns the model and what trains."""
        cfg = self.cfg
        lora = cfg.mode == "lora"
        metas = ltx2_checkpoint.check(self.bundle, ("transformer", "text"))
        text = metas["text"]
        text.feature_extractor = None  # the cache holds its output; training never needs it
        model = AVTrainModel(metas["transformer"], text).to(self.base_dtype if lora else torch.float32)
        self._initial_adapters: dict[str, Tensor] = {}
        if lora:
            names = self.lora_modules(model.transformer)
            modules = dict(model.transformer.named_modules())
            g = torch.Generator().manual_seed(cfg.seed)  # the draws inject_lora would make, in module order
            for n in names:
                a, b = fresh_adapter(cfg.lora.rank, modules[n].in_features, modules[n].out_features, g)
                self._initial_adapters |= {f"transformer.{n}.lora_A.default.weight": a,
                                           f"transformer.{n}.lora_B.default.weight": b}
            adapter = LoRAConfig(rank=cfg.lora.rank, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout,
                                 targets=tuple(f"re:{re.escape(n)}" for n in names))
            inject_lora(model.transformer, adapter, dtype=torch.float32)
            freeze_base(model)
            params = list(lora_parameters(model))
        else:
            model.requires_grad_(True)
            if cfg.av.connector == "frozen":
                model.text.requires_grad_(False)
            params = [p for p in model.parameters() if p.requires_grad]
        model.train()
        return model, params

    def _initial_tensor(self, name: str) -> Tensor:
        """The starting value of a model tensor: a fresh adapter's, or the checkpoint's (read one at a time)."""
        name = name.replace("._orig_mod", "")  # compiled blocks
        if name in self._initial_adapters:
            return self._initial_adapters[name]
        component, _, key = name.partition(".")
        return self.bundle.reader.get(self.bundle.keys[component][key])

    def lora_modules(self, transformer: nn.Module) -> tuple[str, ...]:
        """`lora.targets` resolved to the names of the Linears of the streams the mode runs: a mode without
        audio (t2v, ic_lora) puts no adapter on the audio stream or the audio<->video attention (it would never
        train, and DDP refuses parameters without gradients), and one without video none on the video stream."""
        absent = set()
        if self.mode.audio is None:
            absent |= {"audio_attn1", "audio_attn2", "audio_ff", "audio_to_video_attn", "video_to_audio_attn"}
        if self.mode.video is None:
            absent |= {"attn1", "attn2", "ff", "audio_to_video_attn", "video_to_audio_attn"}
        names = lora_targets(transformer, self.cfg.lora.targets)  # one line for a pattern that selects nothing
        kept = [n for n in names if not (n.startswith("transformer_blocks.") and n.split(".")[2] in absent)]
        if not kept:
            raise ValueError(f"lora.targets={list(self.cfg.lora.targets)} select only modules of a stream that "
                             f"av.mode={self.mode.name} does not run; target e.g. "
                             f"{'attn1.to_q' if self.mode.video else 'audio_attn1.to_q'}")
        return tuple(kept)

    def _encode_validation_prompts(self):
        """(prompt features, negative features), each (video (P, S, Dv'), audio (P, S, Da'), mask (P, S)): the
        Gemma features of `validation.prompts` and of the preset's negative prompt (Gemma loads once, on the main
        process, and is freed), or without prompts the cached features of `validation.from_data` captions of the
        data with the cached empty caption as the negative (no Gemma needed); None for no validation."""
        v = self.cfg.validation
        self.validation_prompts_used = prompts = self.validation_prompts()
        if not prompts:
            return None
        if not v.prompts:
            if self.dist.is_main:
                print(f"[{self.log_name}] validation: {len(prompts)} captions of data={self.cfg.data} (set "
                      "validation.prompts, or validation.from_data=0 for none), negative prompt \"\": "
                      + "; ".join(map(repr, prompts)))
            rows = [self.cache[i] for i in self.data_caption_items(len(prompts))]
            positive = tuple(torch.stack([r[k] for r in rows]) for k in ("video_context", "audio_context", "mask"))
            negative = tuple(t[None].expand(len(rows), *t.shape) for t in self.cache.null_text())
            return positive, negative
        if self.cfg.text_encoder is None or not Path(self.cfg.text_encoder).is_dir():
            raise FileNotFoundError(f"validation prompts need the Gemma folder; text_encoder={self.cfg.text_encoder} "
                                    "does not exist")
        if v.images or v.controls:
            raise ValueError("validation.images / validation.controls are for LTX-Video 0.9.x runs; LTX-2 validation "
                             "samples text-to-video with sound")
        encoded = None
        if self.dist.is_main:
            text = ltx2_checkpoint.load(self.bundle, ("text",), dtype=torch.float32)["text"]
            gemma = GemmaTextEncoder.from_folder(self.cfg.text_encoder, dtype=torch.float32,
                                                 max_length=self.cache.index["text_encoder"]["max_tokens"])
            negative = self.cfg.model.generation.negative_prompt or ""
            with torch.no_grad():
                encoded = []
                for texts in (list(v.prompts), [negative] * len(v.prompts)):
                    hidden, mask = gemma.encode(texts)
                    encoded.append((*text.features(hidden, mask), mask))
            del gemma, text
        return self.dist.broadcast_object(encoded) if self.dist.enabled else encoded

    # -------------------------------------------------------------------------------------------- one step
    def _video_positions(self, shape: tuple[int, ...], rows: int, downscale: int | None = None) -> Tensor:
        key = ("video", tuple(shape), downscale)
        if key not in self._positions:
            _, f, h, w = shape
            pos = (patchify.video_positions(f, h, w, self.fps, scale=self.video_scale) if downscale is None else
                   patchify.reference_positions(f, h, w, self.fps, downscale, scale=self.video_scale))
            self._positions[key] = pos.to(self.device)
        return self._positions[key].expand(rows, -1, -1, -1)

    def _audio_positions(self, frames: int, rows: int) -> Tensor:
        key = ("audio", frames)
        if key not in self._positions:
            self._positions[key] = patchify.audio_positions(frames).to(self.device)
        return self._positions[key].expand(rows, -1, -1, -1)

    def micro_batches(self, step: int):
        """This process's micro-batches of step `step`: (global sample indices, video, audio, text features)."""
        items = self.sampler.batch(step)
        mine = shard(list(range(len(items))), self.dist.rank, self.dist.world_size)
        null = self.cache.null_text()  # (video_context, audio_context, mask) of ""
        mode, dev = self.mode, self.device
        for start in range(0, len(mine), self.micro):
            js = mine[start : start + self.micro]
            rows = [self.cache[items[j]] for j in js]
            vshape = tuple(rows[0]["latents"].shape)
            video = [patchify.patchify_video(r["latents"][None])[0] for r in rows] if mode.video else None
            audio = [patchify.patchify_audio(r["audio"][None])[0] for r in rows] if mode.audio else None
            drawn = [draw(mode, self.sigmas, step_generator(self.cfg.seed, step, j),
                          video_shape=vshape if mode.video else None,
                          audio_shape=tuple(audio[0].shape) if mode.audio else None,
                          caption_dropout=self.cfg.caption_dropout) for j in js]
            text = [null if d.drop_caption else
                    (r["video_context"], r["audio_context"], r["mask"]) for r, d in zip(rows, drawn)]
            features = tuple(torch.stack([t[k] for t in text]).to(dev) for k in range(3))
            v = a = None
            if mode.video:
                ref = ref_pos = None
                if mode.video.reference:
                    refs = [r["reference"] for r in rows]
                    ref = torch.stack([patchify.patchify_video(x[None])[0] for x in refs]).to(dev)
                    ref_pos = self._video_positions(tuple(refs[0].shape), len(js), rows[0]["reference_downscale"])
                v = _stream("video", video, drawn, self._video_positions(vshape, len(js)), mode.video.generated, dev)
                v.reference, v.reference_positions = ref, ref_pos
            if mode.audio:
                a = _stream("audio", audio, drawn, self._audio_positions(audio[0].shape[0], len(js)),
                            mode.audio.generated, dev)
                if mode.audio.reference:  # the reference clip's sound, on its own time axis from 0 (official)
                    refs = [patchify.patchify_audio(r["reference_audio"][None])[0] for r in rows]
                    a.reference = torch.stack(refs).to(dev)
                    a.reference_positions = self._audio_positions(refs[0].shape[0], len(js))
            yield js, v, a, features

    def forward_backward(self, step: int) -> dict[str, float]:
        """Gradients of step `step`'s global-batch mean loss; returns the loss, its video / audio parts and its
        means per sigma bucket (of the generated video's sigma, else the audio's)."""
        cfg = self.cfg
        n_micro = self.per_rank // self.micro
        sums = torch.zeros(3, dtype=torch.float64)  # loss, video part, audio part
        buckets = torch.zeros(2, 4)
        autocast = self.autocast()
        for k, (_, v, a, text) in enumerate(self.micro_batches(step)):
            sync = k == n_micro - 1
            no_sync = self.model.no_sync() if hasattr(self.model, "no_sync") and not sync else nullcontext()
            if hasattr(self.model, "set_requires_gradient_sync"):  # FSDP2
                self.model.set_requires_gradient_sync(sync)
            with no_sync:
                with autocast:
                    per_sample, parts = av_loss(self.model, v, a, text, video_weight=cfg.av.video_loss_weight,
                                                audio_weight=cfg.av.audio_loss_weight)
                (per_sample.sum() / self.per_rank).backward()
            sums[0] += per_sample.detach().double().sum().cpu()
            for i, name in ((1, "video"), (2, "audio")):
                if name in parts:
                    sums[i] += parts[name].detach().double().sum().cpu()
            sigma = v.sigma if v is not None and v.generated else a.sigma
            buckets += sigma_bucket_sums(sigma.detach().cpu(), per_sample.detach().float().cpu())
        local = torch.cat([sums.float(), buckets.flatten()])
        totals = self.dist.all_reduce_mean(local) * self.dist.world_size if self.dist.enabled else local
        out = {"loss": float(totals[0]) / cfg.batch_size}
        if self.mode.video and self.mode.video.generated:
            out["loss_video"] = float(totals[1]) / cfg.batch_size
        if self.mode.audio and self.mode.audio.generated:
            out["loss_audio"] = float(totals[2]) / cfg.batch_size
        return out | sigma_bucket_means(totals[3:].reshape(2, 4))

    @cached_property
    def loop(self):
        loop = super().loop
        loop.advice = (f"lower lr (now {self.cfg.lr}), precision=float32, av.base_dtype=float32 or grad_clip; a cache "
                       f"item with non-finite latents is named by python -m train.preprocess on a rerun")
        return loop

    # -------------------------------------------------------------------------------------------- outputs
    lora_writer = staticmethod(save_lora)  # ltx.ltx2.lora.save_lora: official names, alpha baked into B
    lora_prefix = "transformer."  # adapters live in AVTrainModel.transformer; files name the transformer's modules

    def trained_what(self) -> str:
        return f"av.mode={self.cfg.av.mode}; " + super().trained_what()

    def write_model(self, weights: dict[str, Tensor], path: Path) -> None:
        """The official single file with the trained transformer (and connectors) in place of the base's."""
        overrides: dict[str, dict[str, Tensor]] = {}
        for n, t in weights.items():
            component, _, key = n.partition(".")
            overrides.setdefault(component, {})[key] = t
        ltx2_checkpoint.write(self.bundle, path, layout="official", overrides=overrides, overwrite=True)

    def _check_latent_spaces(self) -> None:
        """The cache's latents must come from this checkpoint's VAEs (train.train_vae.latent_space_id of the float32
        encoders, as train.preprocess records them); the VAEs stay loaded for validation."""
        self._decoders = None
        vaes = ltx2_checkpoint.load(self.bundle, ("vae", "audio_vae"), dtype=torch.float32)
        index = self.cache.index
        for name, what, recorded in (("vae", "video VAE", index["vae"]["latent_space"]),
                                     ("audio_vae", "audio VAE", (index.get("audio") or {}).get("latent_space"))):
            if recorded is not None and recorded != latent_space_id(vaes[name]):
                raise ValueError(f"data={self.cfg.data} was encoded by another {what} (latent space "
                                 f"{recorded}) than checkpoint={self.cfg.checkpoint}'s ({latent_space_id(vaes[name])});"
                                 " preprocess again with this checkpoint")
        self._vaes = vaes

    def _decoding_models(self) -> dict[str, nn.Module]:
        if self._decoders is None:
            vocoder = ltx2_checkpoint.load(self.bundle, ("vocoder",), device=self.device, dtype=torch.float32)
            self._decoders = {name: m.to(self.device) for name, m in self._vaes.items()} | vocoder
        return self._decoders

    @torch.no_grad()
    def autocast(self):
        """bf16 autocast for `precision=bfloat16`, and always over a bf16 base (its weights meet fp32 inputs)."""
        bf16 = self.cfg.precision == "bfloat16" or (self.cfg.mode == "lora" and self.base_dtype == torch.bfloat16)
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16)

    def validate(self) -> Path | None:
        """Sample the validation prompts with the one-stage LTX-2 sampler (the preset's guidance, `validation.steps`
        steps), with the model as it trains; every process takes part (FSDP)."""
        if self.validation_text is None:
            return None
        cfg, v = self.cfg, self.cfg.validation
        prompts = self.validation_prompts_used
        F_, H, W = self.cache.buckets_list[0]
        height, width, frames = v.height or H, v.width or W, v.num_frames or F_
        av = cfg.model.av
        scale = v.guidance_scale
        video_g = _guider(av.video, scale)
        audio_g = _guider(av.audio, None)
        steps = v.steps or 30  # the official trainer's validation default
        decoders = self._decoding_models()
        model = self.dit
        if self.ema:
            self.ema.swap()
        model.eval()
        # FSDP2: the sampler calls model.transformer and model.text directly, not the root's forward, so the root's
        # own parameters (connectors, patchify / AdaLN / output layers) are gathered here; the blocks gather themselves
        sharded = hasattr(model, "unshard")
        if sharded:
            model.unshard()
        videos, waves, rate = [], [], 0
        try:
            positive, negative = self.validation_text
            for i in range(len(prompts)):
                with self.autocast():
                    ctx_v, ctx_a, _ = model.text.connect(*(t[i : i + 1].to(self.device) for t in positive))
                    neg_v, neg_a, _ = model.text.connect(*(t[i : i + 1].to(self.device) for t in negative))
                models = AVModels(model.transformer, decoders["vae"], decoders["audio_vae"], decoders["vocoder"])
                request = AVRequest(height=height, width=width, num_frames=frames, fps=self.fps,
                                    sigmas=ltx2_sigmas(steps).to(self.device), video_guidance=video_g,
                                    audio_guidance=audio_g, generator=torch.Generator(self.device).manual_seed(v.seed),
                                    dtype=torch.float32)
                with self.autocast():
                    result = one_stage(models, Prompt(ctx_v, ctx_a), Prompt(neg_v, neg_a), request)
                videos.append(((result.video[0].float().clamp(-1, 1) + 1) / 2).cpu())
                waves.append(result.audio[0].float().clamp(-1, 1).cpu())
                rate = result.sample_rate
        finally:
            if sharded:
                model.reshard()
            model.train()
            if self.ema:
                self.ema.swap()
        if not self.dist.is_main:
            return None
        out = self.run_dir / "samples" / f"step_{self.run.step:06d}"
        out.mkdir(parents=True, exist_ok=True)
        for i, (prompt, video, wave) in enumerate(zip(prompts, videos, waves)):
            stem = f"{i:02d}_{slug(prompt)}"
            write_video_with_audio(out / f"{stem}.mp4", video, self.fps, wave, rate)
            write_audio_contact_sheet(out / f"{stem}.png", video, self.fps, wave, rate, caption=prompt)
        grid = self.labelled_grid(out.with_suffix(".png"), videos, prompts)
        with atomic_file(out / "prompts.txt", "w") as f:
            f.write("\n".join(prompts) + "\n")
        self.run.image("samples", grid)
        return grid


def _stream(name: str, tokens: list[Tensor], drawn: list, positions: Tensor, generated: bool,
            device: torch.device) -> StreamBatch:
    """One stream of a micro-batch from its samples' clean tokens (T, C) and draws (ltx.ltx2.training.Draws)."""
    return StreamBatch(x0=torch.stack(tokens).to(device),
                       noise=torch.stack([getattr(d, f"{name}_noise") for d in drawn]).to(device),
                       sigma=torch.tensor([getattr(d, f"{name}_sigma") for d in drawn], device=device),
                       cond=torch.stack([getattr(d, f"{name}_cond") for d in drawn]).to(device),
                       positions=positions, generated=generated)


def _guider(g, cfg_scale: float | None) -> GuiderParams:
    """A preset's AVGuidance as sampler parameters (`cfg_scale` replaces its CFG scale when given)."""
    return GuiderParams(cfg=g.cfg_scale if cfg_scale is None else cfg_scale, stg=g.stg_scale,
                        stg_blocks=tuple(g.stg_blocks), rescale=g.rescale_scale, modality=g.modality_scale)
