"""What a server is configured with: one dataclass, filled by the Hydra app (infer/serve.py) or by hand (tests).

Plain values only (no OmegaConf here): `ServeSettings(model="ltx-demo", device="cpu", output_dir="/tmp/s")`.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Limits:
    """Per-request limits (a request over one is refused: 422 naming the field, 413 for the body size)."""

    max_pixels_frames: int = 704 * 1216 * 121  # height * width * num_frames of one video
    max_steps: int = 100  # denoising steps
    max_upload_bytes: int = 32 * 2**20  # the whole request body (JSON or multipart with its uploads)
    max_prompt_chars: int = 4000  # prompt and negative prompt, each
    max_loras: int = 4  # LoRAs one request may name
    max_images: int = 4  # conditioning images uploaded with a request
    max_queued: int = 1000  # queued jobs in all; more -> 429 (back-pressure)


@dataclass
class RaySettings:
    """`backend="ray"` (ltx/serve/ray_backend.py): generation replicas on a Ray cluster sharing the job store."""

    address: str | None = None  # None: start (or join) a local Ray; "auto" / "ray://host:10001": a cluster
    replicas: int = 1  # generation replicas (min = max = replicas unless the bounds below are set)
    min_replicas: int | None = None  # autoscaling bounds (None: replicas)
    max_replicas: int | None = None  # autoscaling bounds (None: replicas)
    num_gpus: float = 0.0  # per replica (1 on a GPU node)
    num_cpus: float = 1.0  # per replica


@dataclass
class ServeSettings:
    model: str = "ltx-demo"  # a preset name (configs/model/<name>.yaml) or a preset .yaml path
    checkpoint: str | None = None  # None: the preset's bundled weights (the demos)
    text_encoder: str | None = None  # None: the preset's bundled one (the demos)
    upsampler: str | None = None  # multi-scale / two-stage presets
    distilled_lora: str | None = None  # LTX-2 -dev two-stage presets
    device: str = "auto"  # auto = cuda if available, else cpu
    dtype: str | None = None  # None: bfloat16 on CUDA, float32 on CPU
    output_dir: str = "outputs/serve"  # <output_dir>/<job id>/ holds each job's files
    db_path: str | None = None  # the SQLite job store; None: <output_dir>/jobs.sqlite
    lora_dir: str | None = None  # the allow-listed LoRA folder: requests name files in it (no paths)
    api_keys: dict[str, str] = field(default_factory=dict)  # {owner name: bearer key}; empty = an open server
    limits: Limits = field(default_factory=Limits)
    lease_s: float = 30.0  # a running job's lease; the worker renews it every lease_s / 3
    max_attempts: int = 3  # runs of a job whose worker died (lease expired) before it is marked error
    lora_cache: int = 4  # LoRA files kept in memory (least recently used dropped)
    contact_sheet_frames: int = 8  # frames on each job's contact sheet
    host: str = "127.0.0.1"  # 0.0.0.0: every interface (set api_keys then)
    port: int = 8000  # 0: a free port (printed)
    backend: str = "embedded"  # "embedded" (a worker thread in this process) or "ray"
    ray: RaySettings = field(default_factory=RaySettings)

    def __post_init__(self):
        if self.backend not in ("embedded", "ray"):
            raise ValueError(f"backend must be 'embedded' or 'ray', got {self.backend!r}")
        if not self.lease_s > 0:
            raise ValueError(f"lease_s must be > 0 seconds, got {self.lease_s}")
        if not (isinstance(self.max_attempts, int) and self.max_attempts >= 1):
            raise ValueError(f"max_attempts must be an integer >= 1, got {self.max_attempts!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535] (0 = a free port), got {self.port}")
        keys = list(self.api_keys.values())
        if any(not isinstance(k, str) or len(k) < 8 for k in keys):
            raise ValueError("api_keys: every key must be a string of at least 8 characters")
        if len(set(keys)) != len(keys):
            raise ValueError("api_keys: two owners share a key; give each its own")

    @property
    def database(self) -> Path:
        return Path(self.db_path).expanduser() if self.db_path else Path(self.output_dir).expanduser() / "jobs.sqlite"

    @property
    def outputs(self) -> Path:
        return Path(self.output_dir).expanduser()


def key_owner(settings: ServeSettings, key: str) -> str | None:
    """The owner name of a bearer key, or None for an unknown one (compared in constant time)."""
    digest = hashlib.sha256(key.encode()).digest()
    found = None
    for owner, known in settings.api_keys.items():
        if hmac.compare_digest(digest, hashlib.sha256(known.encode()).digest()):
            found = owner
    return found
