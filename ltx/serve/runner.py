"""The resident model and one job on it; the request checker that shares its pipeline's validation.

    runner = Runner(settings)
    runner.load()                                   # once: the weights stay resident
    paths = runner.run(job, on_step, should_stop)   # {"video": ".../<id>/video.mp4", "contact_sheet": ..., ...}

`run` applies the job's LoRAs as adapters for this job only (removed afterwards: the transformer is exactly the
base model again; LoRA files are read once and cached), calls the family's Python API with the request's
arguments (`schema.call_arguments`), reports each denoising step with `on_step(step, total)` and asks
`should_stop()` after each: True stops the job at that step (a private exception from the progress callback,
surfacing as `Cancelled`), before anything is written. The files go to <output_dir>/<job id>/ atomically (a
temporary folder renamed into place): video.mp4 (LTX-2: with its AAC soundtrack), contact_sheet.png,
config.yaml, and for LTX-2 audio.wav.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch
import yaml

import ltx.api
from ltx.core.audio_io import aac_sample_rates, write_audio_contact_sheet, write_video_with_audio, write_wav
from ltx.core.checkpoint import atomic_dir
from ltx.core.lora import apply_lora_weights, check_lora, remove_lora
from ltx.core.media import write_contact_sheet, write_mp4
from ltx.ltx2.audio import resample
from ltx.serve.schema import (
    Checked,
    LoraLibrary,
    RequestError,
    call_arguments,
    check_fields,
    field_of,
    lora_reader,
    transformer_of,
)
from ltx.serve.settings import ServeSettings
from ltx.serve.store import Job

log = logging.getLogger("ltx.serve")


class Cancelled(Exception):
    """The job stopped at a denoising step because `should_stop()` said so; nothing was written."""


class _StopAtStep(Exception):
    """Raised from the pipeline's progress callback to leave the sampling loop (private to `Runner.run`)."""


def open_model(settings: ServeSettings):
    """The settings' pipeline with its modules on `meta` (headers read, nothing loaded): `.check(...)` works."""
    return ltx.api.open_pipeline(settings.checkpoint, model=settings.model, upsampler=settings.upsampler,
                                 text_encoder=settings.text_encoder, distilled_lora=settings.distilled_lora,
                                 device=settings.device, dtype=settings.dtype)


def upload_dir(settings: ServeSettings, job_id: str) -> Path:
    """Where a job's uploaded files are kept (its conditioning images, its soundtrack)."""
    return settings.outputs / "uploads" / job_id


def size_label(request: dict) -> str:
    """"HxWxF" of a checked request: the size label of the duration histogram."""
    return f"{request['height']}x{request['width']}x{request['num_frames']}"


class RequestChecker:
    """Checks a request as the pipeline would, before any weights are used: the field checks of `schema`, the
    limits, the LoRA names and shapes, then the opened pipeline's own `check(...)`."""

    def __init__(self, settings: ServeSettings, pipe=None):
        self.settings = settings
        self.pipe = pipe if pipe is not None else open_model(settings)
        self.preset = ltx.api.preset_of(settings.model)
        self.is_ltx2 = self.preset.is_ltx2
        self.loras = LoraLibrary(settings.lora_dir, lora_reader(self.is_ltx2), settings.lora_cache)
        self._lock = threading.Lock()  # one check at a time on the shared meta pipeline

    def defaults(self) -> dict:
        """The preset's request defaults (GET /v1/info)."""
        g = self.preset.generation
        if self.is_ltx2:
            av = self.preset.av
            steps, guidance, audio = av.num_inference_steps, av.video.cfg_scale, av.audio.cfg_scale
        else:
            first = self.preset.sampling.first_pass
            steps, guidance, audio = first.num_inference_steps, first.guidance_scale[0], None
        return {"height": g.height, "width": g.width, "num_frames": g.num_frames, "frame_rate": g.fps,
                "steps": steps, "guidance_scale": guidance, "negative_prompt": g.negative_prompt,
                **({"audio_guidance_scale": audio} if self.is_ltx2 else {})}

    def check(self, payload: object, uploads: dict[str, Path] | None = None,
              upload_folder: Path | None = None) -> Checked:
        """The request as stored with the job (sizes resolved, a seed drawn) and its step count; RequestError
        (the field and what is valid) otherwise. `uploads`: {form field: the file as received}."""
        uploads = uploads or {}
        request = check_fields(payload, is_ltx2=self.is_ltx2, limits=self.settings.limits, uploads=uploads)
        g = self.preset.generation
        for name, default in (("height", g.height), ("width", g.width), ("num_frames", g.num_frames),
                              ("frame_rate", g.fps)):
            request.setdefault(name, default)
        limit = self.settings.limits.max_pixels_frames
        volume = request["height"] * request["width"] * request["num_frames"]
        if volume > limit:
            raise RequestError("num_frames", f"height x width x num_frames = {request['height']} x {request['width']} "
                                             f"x {request['num_frames']} = {volume} is over the server's limit {limit}"
                                             " (limits.max_pixels_frames): ask for a smaller or shorter video")
        model = transformer_of(self.pipe)
        for i, spec in enumerate(request["loras"]):
            weights = self.loras.weights(f"loras[{i}].name", spec["name"])
            try:
                check_lora(model, weights)
            except ValueError as e:
                raise RequestError(f"loras[{i}].name", f"{spec['name']} does not fit this model: {e}") from None
        folder = upload_folder or Path(".")
        prompt, negative, kwargs = call_arguments(request, is_ltx2=self.is_ltx2, defaults=g, upload_dir=folder)
        try:
            with self._lock:
                if self.is_ltx2:
                    checked = self.pipe.check(negative_prompt=negative, **kwargs)
                    total = checked.num_evaluations
                else:
                    checked = self.pipe.check(has_negative=True, **kwargs)
                    total = sum(len(s) - 1 for s in checked.sigmas) * checked.num_segments
        except ValueError as e:
            message, field = str(e), field_of(str(e))
            for name, path in uploads.items():  # the client's names, never the server's paths
                if str(path) in message:
                    message = message.replace(str(path), f"upload {name!r}")
                    field = _upload_field(request, path.name) or field
            raise RequestError(field, message) from None
        if total > self.settings.limits.max_steps and "steps" not in request:
            raise RequestError("steps", f"the model's default is {total} steps, over the server's limit "
                                        f"{self.settings.limits.max_steps} (limits.max_steps): give steps")
        return Checked(request, total)


def _upload_field(request: dict, stored: str) -> str | None:
    """The request field that names the stored upload `stored` ("images[1]", "audio")."""
    for i, image in enumerate(request.get("images", [])):
        if image["file"] == stored:
            return f"images[{i}]"
    return "audio" if request.get("audio", {}).get("file") == stored else None


class Runner:
    """The resident pipeline of `settings.model` and the job it runs (one at a time: `run` holds a lock)."""

    def __init__(self, settings: ServeSettings, pipe=None):
        """`pipe`: the settings' pipeline already loaded (tests share one between servers); None = load it."""
        self.settings = settings
        self.preset = ltx.api.preset_of(settings.model)
        self.is_ltx2 = self.preset.is_ltx2
        self.pipe = pipe
        self.load_seconds: float | None = None if pipe is None else 0.0
        self.loras = LoraLibrary(settings.lora_dir, lora_reader(self.is_ltx2), settings.lora_cache)
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self.pipe is not None

    def load(self) -> float:
        """Load the weights (once); returns the seconds it took."""
        if self.pipe is None:
            start = time.perf_counter()
            pipe = open_model(self.settings)
            if self.is_ltx2:  # Gemma is loaded per job and freed (ltx.ltx2.api)
                pipe = pipe.load()
            else:  # T5 stays resident too: load it now, not in the first job
                pipe = pipe.load(self.settings.device, self.settings.dtype)
                pipe.prompt_views(["warm up"])
            self.pipe = pipe  # `loaded` (and /readyz) only now
            self.load_seconds = time.perf_counter() - start
            log.info("model %s loaded on %s in %.2f s", self.settings.model, self.pipe.device, self.load_seconds)
        return self.load_seconds

    @contextmanager
    def _job_loras(self, specs: list[dict]):
        """The request's LoRAs as adapters on the transformer for this job; removed after it, whatever happens
        (the base weights are never changed: the adapters are computed beside them)."""
        model = transformer_of(self.pipe)
        try:
            for i, spec in enumerate(specs):
                weights = self.loras.weights(f"loras[{i}].name", spec["name"])
                apply_lora_weights(model, weights, f"job{i}", spec["strength"], dtype=torch.float32)
            yield
        finally:
            if specs:
                remove_lora(model)

    def run(self, job: Job, on_step: Callable[[int, int], None], should_stop: Callable[[], bool]) -> dict[str, str]:
        """Generate `job` and write its files; returns {kind: path}. Raises Cancelled when `should_stop()` said
        so (at a step, or before writing); any other error propagates with nothing written."""
        self.load()
        request = job.request
        prompt, negative, kwargs = call_arguments(request, is_ltx2=self.is_ltx2, defaults=self.preset.generation,
                                                  upload_dir=upload_dir(self.settings, job.id))
        total = job.total_steps or 0
        done = 0

        def progress(*_):
            nonlocal done
            done += 1
            on_step(done, max(total, done))
            if should_stop():
                raise _StopAtStep

        with self._lock, self._job_loras(request["loras"]):
            try:
                out = self.pipe(prompt, negative, seed=request["seed"], progress=progress, **kwargs)
            except _StopAtStep:
                raise Cancelled(f"stopped at step {done} of {total}") from None
        if should_stop():
            raise Cancelled("stopped before writing")
        return self._write(job, out)

    def _write(self, job: Job, out) -> dict[str, str]:
        r = job.request
        final = self.settings.outputs / job.id
        frames = out.frames[0].float().cpu()  # (3, F, H, W) in [0, 1]
        record = {"job": job.id, "model": self.settings.model, "family": "ltx2" if self.is_ltx2 else "ltxv",
                  "attempt": job.attempts, "request": r,
                  "device": str(self.pipe.device), "dtype": str(self.pipe.dtype).removeprefix("torch.")}
        names = {"video": "video.mp4", "contact_sheet": "contact_sheet.png", "config": "config.yaml"}
        with atomic_dir(final) as folder:
            if self.is_ltx2:
                names["audio"] = "audio.wav"
                audio, rate = out.waveform[0].float().cpu(), out.sample_rate
                if rate not in aac_sample_rates():  # a soundtrack at a rate AAC does not take
                    audio, rate = resample(audio, rate, 48000), 48000
                video_u8 = (frames.permute(1, 2, 3, 0) * 255).round().to(torch.uint8)  # (F, H, W, 3)
                write_video_with_audio(folder / names["video"], video_u8, r["frame_rate"], audio, rate)
                write_wav(folder / names["audio"], audio, rate)
                write_audio_contact_sheet(folder / names["contact_sheet"], video_u8, r["frame_rate"], audio, rate,
                                          count=self.settings.contact_sheet_frames, caption=r["prompt"])
                record["sample_rate"] = rate
            else:
                write_mp4(folder / names["video"], frames, r["frame_rate"])
                write_contact_sheet(folder / names["contact_sheet"], frames, self.settings.contact_sheet_frames,
                                    r["prompt"])
                record["sigmas"] = [[round(float(v), 6) for v in s] for s in out.sigmas]
            (folder / names["config"]).write_text(yaml.safe_dump(record, sort_keys=False))
        return {kind: str(final / name) for kind, name in names.items()}
