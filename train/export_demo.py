"""Assemble the bundled demo model from training runs into one ltx-format file.

    python -m train.export_demo --vae-run runs/demo_vae_decoder                          # the VAE, for train_dit
    python -m train.export_demo --vae-run runs/demo_vae_decoder --dit-run runs/demo_dit  # after train_dit

Writes `demo/ltx-demo.safetensors` (components "vae" and, once trained, "dit"; configs in the metadata,
plus the demo's sampling defaults under `official_extra`) atomically. When the DiT run trained the text
encoder jointly (`text_lr > 0`), its moving average (RUN/text_encoder) replaces demo/text_encoder; otherwise
that folder is the one the run read, made by `python -m train.make_text_encoder demo/text_encoder`.
The VAE must encode into the latent space the DiT run trained on (RUN/latent_space.json): the VAE run it
was trained on, or a decoder fine-tuning of it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ltx.core.checkpoint import atomic_dir
from ltx.ltxv.checkpoint import checkpoint_from_modules, write_ltx
from ltx.ltxv.transformer import DiT, DiTConfig
from ltx.ltxv.vae import VAEConfig, VideoVAE
from train.train_vae import latent_space_id

REPO = Path(__file__).resolve().parents[1]
# The demo was trained with the causal VAE's 8x time / 8x space latents and this scheduler; the pipeline
# reads it like an official checkpoint's `config.scheduler`.
DEMO_SCHEDULER = {"sampler": "LinearQuadratic", "shifting": None}


def _config(cls, yaml: Path):
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), OmegaConf.load(yaml)))


def check_latent_space(vae: VideoVAE, dit_run: Path) -> None:
    """Refuse a VAE whose latent space (encoder + statistics) is not the one the DiT run trained on; a VAE
    whose decoder alone was fine-tuned (configs/train_vae_decoder.yaml) passes."""
    record = dit_run / "latent_space.json"
    if not record.is_file():
        print(f"[export_demo] warning: {record} is missing (a run older than the check); cannot verify that "
              "the DiT was trained on this VAE's latents")
        return
    trained, space = json.loads(record.read_text())["latent_space"], latent_space_id(vae)
    if trained != space:
        raise ValueError(f"{dit_run} was trained on latent space {trained}, but this VAE encodes into "
                         f"{space} (another encoder or latent statistics): export the VAE run the "
                         f"DiT was trained on, or one that fine-tuned only its decoder (train_encoder=false)")


def export(vae_run: Path, dit_run: Path | None, out: Path, text_out: Path | None = None) -> Path:
    vae_cfg = _config(VAEConfig, REPO / "configs/demo/vae.yaml")
    vae = VideoVAE(vae_cfg)
    vae.load_state_dict(torch.load(vae_run / "vae_final.pt", map_location="cpu"), strict=True)
    modules = {"vae": vae}
    if dit_run is not None:
        check_latent_space(vae, dit_run)
        dit = DiT(_config(DiTConfig, REPO / "configs/demo/dit.yaml"))
        dit.load_state_dict(torch.load(dit_run / "dit_ema.pt", map_location="cpu"), strict=True)
        modules = {"dit": dit, "vae": vae}
    ckpt = checkpoint_from_modules(modules, extra={"scheduler": DEMO_SCHEDULER})
    path = write_ltx(ckpt, out, overwrite=True)
    if dit_run is not None and (dit_run / "text_encoder").is_dir() and text_out is not None:
        with atomic_dir(text_out) as tmp:
            shutil.copytree(dit_run / "text_encoder", tmp, dirs_exist_ok=True)
        print(f"text encoder: {dit_run / 'text_encoder'} -> {text_out}")
    return path


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vae-run", type=Path, required=True)
    p.add_argument("--dit-run", type=Path)
    p.add_argument("--out", type=Path, default=REPO / "demo/ltx-demo.safetensors")
    p.add_argument("--text-out", type=Path, default=REPO / "demo/text_encoder",
                   help="where a jointly trained text encoder of the DiT run goes")
    a = p.parse_args()
    path = export(a.vae_run, a.dit_run, a.out, a.text_out)
    print(json.dumps({"wrote": str(path), "MiB": round(path.stat().st_size / 2**20, 2)}))
