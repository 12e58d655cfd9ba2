"""A generation request over HTTP: its JSON fields, their checks, and the mapping onto the family's Python API.

The JSON fields (every one optional but `prompt`; null = the preset's default):

    prompt, negative_prompt            strings
    height, width, num_frames          integers (sizes the model takes: the pipeline's own check says which)
    frame_rate                         frames per second
    steps                              denoising steps (<= limits.max_steps)
    guidance_scale, stg_scale          CFG (>= 1, 1 = off) and STG (>= 0, 0 = off) of the video
    seed                               integer in [0, 2**63 - 1]; null = a random one (recorded with the job)
    loras                              [{"name": file in the server's lora_dir, "strength": number}]
    images                             [{"file": an uploaded file's form field, "frame": int, "strength": 0..1}]
    LTX-2 models only: audio_guidance_scale (>= 1), modality_scale (>= 1),
                       audio {"file": an uploaded file's form field, "start": seconds}: audio-to-video

After these checks of types and ranges, the request goes through the opened pipeline's own `check(...)` (sizes,
steps, guidance, images, the soundtrack: the same function `generate` and `ltx.load_pipeline` use) before any
weights are touched; its ValueError becomes a RequestError naming the request field. `call_arguments` is the
one mapping from a checked request to the family API's arguments, used both to check and to run.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from ltx.core.requests import MAX_SEED, check_prompts
from ltx.ltx2 import lora as ltx2_lora
from ltx.ltxv import lora as ltxv_lora
from ltx.serve.settings import Limits

COMMON_FIELDS = ("prompt", "negative_prompt", "height", "width", "num_frames", "frame_rate", "steps",
                 "guidance_scale", "stg_scale", "seed", "loras", "images")
LTX2_FIELDS = ("audio_guidance_scale", "modality_scale", "audio")
LORA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class RequestError(ValueError):
    """A bad request: `field` (dotted, e.g. "loras[0].name") and one line saying what is valid; HTTP `status`."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status = field, message, status

    def body(self) -> dict:
        """FastAPI's validation-error shape (detail: [{loc, msg, type}]) plus `error`, the one line."""
        parts = [] if self.field == "body" else [p for p in re.split(r"[.\[\]]+", self.field) if p]
        loc = ["body", *parts]
        loc = [int(p) if p.isdigit() else p for p in loc]
        return {"detail": [{"loc": loc, "msg": self.message, "type": "value_error"}], "error": str(self)}


# ------------------------------------------------------------------------------------------------ value checks


def _integer(field: str, value: object, lo: int, hi: int, valid: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise RequestError(field, f"must be {valid}, got {value!r}")
    return value


def _number(field: str, value: object, lo: float, hi: float, valid: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not (
            lo <= value <= hi):
        raise RequestError(field, f"must be {valid}, got {value!r}")
    return float(value)


def _string(field: str, value: object, limit: int) -> str:
    if not isinstance(value, str):
        raise RequestError(field, f"must be a string, got {value!r}")
    if len(value) > limit:
        raise RequestError(field, f"is {len(value)} characters; the limit is {limit} (limits.max_prompt_chars)")
    return value


def _object(field: str, value: object, keys: tuple[str, ...], required: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        raise RequestError(field, f"must be an object with {', '.join(keys)}, got {value!r}")
    unknown = sorted(set(value) - set(keys))
    if unknown:
        raise RequestError(field, f"unknown key(s) {unknown}; valid: {', '.join(keys)}")
    for k in required:
        if k not in value:
            raise RequestError(f"{field}.{k}", "is required")
    return value


def _list(field: str, value: object, limit: int, limit_name: str) -> list:
    if not isinstance(value, list):
        raise RequestError(field, f"must be a list, got {value!r}")
    if len(value) > limit:
        raise RequestError(field, f"holds {len(value)} entries; the limit is {limit} (limits.{limit_name})")
    return value


# ------------------------------------------------------------------------------------------------ LoRAs


class LoraLibrary:
    """The allow-listed LoRA folder: a request names a file in it (`name`, with or without .safetensors); no
    request string is ever joined to a path (the name must be one of the folder's listed files). Read files are
    kept (least recently used dropped past `capacity`), keyed by name, size and mtime (a replaced file is re-read)."""

    def __init__(self, folder: str | os.PathLike | None, read, capacity: int = 4):
        self.folder = None if folder is None else Path(folder).expanduser()
        self.read, self.capacity = read, capacity
        self._cache: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        if self.folder is None or not self.folder.is_dir():
            return []
        return sorted(p.name for p in self.folder.iterdir() if p.suffix == ".safetensors" and p.is_file())

    def resolve(self, field: str, name: object) -> Path:
        if not isinstance(name, str):
            raise RequestError(field, f"must be a LoRA file name (a string), got {name!r}")
        if "/" in name or "\\" in name or ".." in name or not LORA_NAME.fullmatch(name):
            raise RequestError(field, f"{name!r} is not a LoRA name: give a file name from the server's LoRA folder "
                                      "(letters, digits, '.', '_', '-'; no paths)")
        listed = self.names()
        file = next((n for n in (name, f"{name}.safetensors") if n in listed), None)
        if file is None:
            shown = ", ".join(listed[:20]) or "none (the server has no lora_dir)"
            raise RequestError(field, f"unknown LoRA {name!r}; available: {shown}")
        return self.folder / file

    def weights(self, field: str, name: str):
        """The LoRAWeights of an allow-listed file (RequestError when it is not a LoRA file)."""
        path = self.resolve(field, name)
        stat = path.stat()
        key = (path.name, stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        try:
            weights = self.read(path)
        except ValueError as e:
            raise RequestError(field, f"{path.name} is not a readable LoRA: {e}") from None
        with self._lock:
            self._cache[key] = weights
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return weights


def lora_reader(is_ltx2: bool):
    """The family's LoRA file reader (its alpha and naming policy)."""
    return ltx2_lora.read_lora if is_ltx2 else ltxv_lora.read_lora


def transformer_of(pipe):
    """The pipeline's transformer: on `meta` for an opened pipeline, the loaded one after `load()`."""
    if hasattr(pipe, "dit"):
        return pipe.dit
    return pipe.modules["transformer"] if pipe.loaded else pipe.metas["transformer"]


# ------------------------------------------------------------------------------------------------ requests


@dataclass
class Checked:
    """A checked request: the JSON stored with the job (defaults resolved, seed drawn) and its step count."""

    request: dict
    total_steps: int


def check_fields(payload: object, *, is_ltx2: bool, limits: Limits, uploads: dict[str, Path]) -> dict:
    """Types and ranges of every field (before the pipeline's check); returns the request without nulls and with
    a seed. `uploads`: {form field: file} of a multipart request."""
    if not isinstance(payload, dict):
        raise RequestError("body", f"must be a JSON object of request fields, got {type(payload).__name__}")
    valid = COMMON_FIELDS + LTX2_FIELDS
    for name in payload:
        if name not in valid:
            raise RequestError(name, f"unknown field; valid: {', '.join(valid)}")
        if name in LTX2_FIELDS and not is_ltx2 and payload[name] is not None:
            raise RequestError(name, "only the LTX-2 models take it; this server runs an LTX-Video 0.9.x model")
    if "prompt" not in payload or payload["prompt"] is None:
        raise RequestError("prompt", "is required: a text describing the video")
    out: dict = {}
    out["prompt"] = _string("prompt", payload["prompt"], limits.max_prompt_chars)
    try:
        check_prompts(out["prompt"])
    except ValueError:
        raise RequestError("prompt", "is empty: write a text describing the video") from None
    given = {k: v for k, v in payload.items() if v is not None}
    if "negative_prompt" in given:
        out["negative_prompt"] = _string("negative_prompt", given["negative_prompt"], limits.max_prompt_chars)
    for name in ("height", "width", "num_frames"):
        if name in given:
            out[name] = _integer(name, given[name], 1, 1 << 16, "a positive integer")
    if "frame_rate" in given:
        out["frame_rate"] = _number("frame_rate", given["frame_rate"], 1e-3, 1000, "a number of frames per second "
                                    "in (0, 1000]")
    if "steps" in given:
        out["steps"] = _integer("steps", given["steps"], 1, limits.max_steps,
                                f"an integer in [1, {limits.max_steps}] (limits.max_steps)")
    if "guidance_scale" in given:
        out["guidance_scale"] = _number("guidance_scale", given["guidance_scale"], 1, 100,
                                        "a CFG scale in [1, 100] (1 = off)")
    if "stg_scale" in given:
        out["stg_scale"] = _number("stg_scale", given["stg_scale"], 0, 100, "an STG scale in [0, 100] (0 = off)")
    for name in ("audio_guidance_scale", "modality_scale"):
        if name in given:
            out[name] = _number(name, given[name], 1, 100, "a scale in [1, 100] (1 = off)")
    out["seed"] = _integer("seed", given["seed"], 0, MAX_SEED, "an integer in [0, 2**63 - 1]") if "seed" in given \
        else secrets.randbelow(2**31)
    loras = []
    for i, spec in enumerate(_list("loras", given.get("loras", []), limits.max_loras, "max_loras")):
        spec = _object(f"loras[{i}]", spec, ("name", "strength"), ("name",))
        strength = _number(f"loras[{i}].strength", spec.get("strength", 1.0), -10, 10, "a number in [-10, 10]")
        loras.append({"name": spec["name"], "strength": strength})  # the name is checked against the folder later
    out["loras"] = loras
    images = []
    for i, spec in enumerate(_list("images", given.get("images", []), limits.max_images, "max_images")):
        spec = _object(f"images[{i}]", spec, ("file", "frame", "strength"), ("file",))
        images.append({"file": _upload(f"images[{i}].file", spec["file"], uploads),
                       "frame": _integer(f"images[{i}].frame", spec.get("frame", 0), 0, 1 << 16,
                                         "a pixel frame index >= 0"),
                       "strength": _number(f"images[{i}].strength", spec.get("strength", 1.0), 0, 1, "in [0, 1]")})
    out["images"] = images
    if "audio" in given:
        spec = _object("audio", given["audio"], ("file", "start"), ("file",))
        out["audio"] = {"file": _upload("audio.file", spec["file"], uploads),
                        "start": _number("audio.start", spec.get("start", 0.0), 0, 1e6, "a start time in seconds "
                                         ">= 0")}
    return out


def _upload(field: str, name: object, uploads: dict[str, Path]) -> str:
    """The stored file name of the upload a request field names (its multipart form field)."""
    if not isinstance(name, str):
        raise RequestError(field, f"must name an uploaded file (its multipart form field), got {name!r}")
    if name not in uploads:
        shown = ", ".join(sorted(uploads)) or "none: send the request as multipart/form-data with the files"
        raise RequestError(field, f"no uploaded file {name!r}; uploaded: {shown}")
    return uploads[name].name


def call_arguments(request: dict, *, is_ltx2: bool, defaults, upload_dir: Path) -> tuple[str, str | None, dict]:
    """(prompt, negative prompt or None, the family's keyword arguments for `check` / `__call__`) of a request
    checked by `check_fields`. `defaults`: the preset's GenerationDefaults (sizes and frame rate when not given)."""
    r = request
    sizes = {"height": r.get("height", defaults.height), "width": r.get("width", defaults.width),
             "num_frames": r.get("num_frames", defaults.num_frames),
             "frame_rate": r.get("frame_rate", defaults.fps)}
    images = r.get("images", [])
    if not is_ltx2:
        kwargs = {**sizes, "num_inference_steps": r.get("steps"), "guidance_scale": r.get("guidance_scale"),
                  "stg_scale": r.get("stg_scale")}
        if images:
            kwargs |= {"conditioning_media_paths": [str(upload_dir / im["file"]) for im in images],
                       "conditioning_start_frames": [im["frame"] for im in images],
                       "conditioning_strengths": [im["strength"] for im in images]}
        return r["prompt"], r.get("negative_prompt"), {k: v for k, v in kwargs.items() if v is not None}
    video = {k: v for k, v in (("cfg_scale", r.get("guidance_scale")), ("stg_scale", r.get("stg_scale")),
                               ("modality_scale", r.get("modality_scale"))) if v is not None}
    audio = {k: v for k, v in (("cfg_scale", r.get("audio_guidance_scale")),
                               ("modality_scale", r.get("modality_scale"))) if v is not None}
    if "audio" in r:  # audio-to-video: the soundtrack is kept, its guider is off
        audio = {}
    kwargs = {**sizes, "num_inference_steps": r.get("steps"), "video_guider_params": video or None,
              "audio_guider_params": audio or None,
              "images": [(str(upload_dir / im["file"]), im["frame"], im["strength"]) for im in images]}
    if "audio" in r:
        kwargs |= {"audio_path": str(upload_dir / r["audio"]["file"]), "audio_start_time": r["audio"]["start"]}
    return r["prompt"], r.get("negative_prompt"), {k: v for k, v in kwargs.items() if v is not None}


# the API's argument names (first match in an error message) -> the request field they come from
_ARGUMENTS = [
    (r"num_inference_steps|timesteps|sigmas", "steps"),
    (r"cfg_scale|guidance_scale|video_guider_params", "guidance_scale"),
    (r"audio_guider_params", "audio_guidance_scale"),
    (r"stg_scale|stg_blocks|skip_block_list", "stg_scale"),
    (r"modality_scale", "modality_scale"),
    (r"(?:conditioning_start_frames|conditioning_strengths|images)\[(\d+)\]", "images"),
    (r"conditioning media|conditioning item", "images"),
    (r"audio_path|audio_start_time|audio ", "audio"),
    (r"negative", "negative_prompt"),
    (r"height|width|num_frames|frame_rate|frames", None),  # the name itself
    (r"prompt", "prompt"),
]


def field_of(message: str) -> str:
    """The request field an API ValueError is about: the earliest argument name in the message."""
    best = None
    for pattern, field in _ARGUMENTS:
        m = re.search(rf"\b(?:{pattern})", message)
        if m and (best is None or m.start() < best[0]):
            name = field or m.group(0)
            if field == "images" and m.groups() and m.group(1) is not None:
                name = f"images[{m.group(1)}]"
            best = (m.start(), "num_frames" if name == "frames" else name)
    return best[1] if best else "request"
