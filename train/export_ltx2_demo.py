"""Assemble the LTX-2 demo model from its training runs into one official single-file LTX-2 checkpoint.

    python -m train.export_ltx2_demo --fresh-vocoder --out runs/ltx2_demo_init.safetensors   # the start
    python -m train.export_ltx2_demo --from runs/demo_ltx2_av/model.safetensors  # the trained one: demo/

Components: the video VAE (`--vae`, a train_vae_ltx2 run's vae_final.pt, configs/demo/ltx2_vae.yaml, or a bundled
.safetensors whose VAE to take, e.g. demo/ltx2-demo.safetensors itself), the audio VAE (`--audio-vae`, a
train_audio_vae run or, likewise, a bundled .safetensors), the vocoder (`--vocoder`, a train_vocoder run), and
the transformer with the text connectors: seeded fresh ones (`ltx.ltx2.transformer.AVTransformer.init_weights`, sized by
configs/demo/ltx2_transformer.yaml and ltx2_text.yaml, the text width and hidden-state count read from the
Gemma folder `--text-encoder`), or the trained ones of a bundled file (`--from`, what `train.finetune
model=ltx2-demo mode=full` writes). A VAE given with `--from` must encode into the latent space of the file's
VAE (a decoder fine-tuning of it passes: `train_vae_ltx2 --config-name train_vae_ltx2_decoder`).
Written atomically by `ltx.ltx2.checkpoint.write_modules`: the layout and metadata of the released files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ltx.ltx2 import checkpoint as ltx2_checkpoint
from ltx.ltx2.audio_vae import AudioVAE, AudioVAEConfig
from ltx.ltx2.text import EmbeddingsProcessor, TextConnectorConfig
from ltx.ltx2.transformer import AVTransformer, AVTransformerConfig
from ltx.ltx2.vae import VideoVAE, VideoVAEConfig
from ltx.ltx2.vocoder import VocoderConfig, build_vocoder
from train.train_vae import latent_space_id

REPO = Path(__file__).resolve().parents[1]


def _config(cls, yaml: Path, **extra):
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), OmegaConf.load(yaml), extra))


def _state(path: Path, what: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"{what}: {path} does not exist; train it first (README, \"The LTX-2 demo model\")")
    return torch.load(path, map_location="cpu", weights_only=True)


def _vae_state(path: Path) -> dict[str, torch.Tensor]:
    """The video VAE's weights: a train_vae_ltx2 run's vae_final.pt, or the VAE of a bundled single file (the demo's
    own: a soundtrack-only change keeps the video and so the video VAE)."""
    if path.suffix != ".safetensors":
        return _state(path, "--vae")
    return _bundled(path, "vae", "--vae").state_dict()


def _bundled(path: Path, component: str, what: str) -> torch.nn.Module:
    """One component of a bundled single file, every failure one line naming the option."""
    if not path.is_file():
        raise FileNotFoundError(f"{what}: {path} does not exist")
    try:
        return ltx2_checkpoint.load(path, (component,), dtype=torch.float32)[component]
    except (ValueError, OSError) as e:
        raise ValueError(f"{what}: {e}") from None


def _audio_vae(path: Path) -> AudioVAE:
    """The audio VAE: a train_audio_vae run folder (config.json + audio_vae_final.pt), or the audio VAE of a
    bundled single file (a vocoder-only change keeps it)."""
    if path.suffix == ".safetensors":
        return _bundled(path, "audio_vae", "--audio-vae")
    a_vae = AudioVAE(AudioVAEConfig.from_metadata(_run_config(path, "--audio-vae", "audio_vae")))
    a_vae.load_state_dict(_state(path / "audio_vae_final.pt", "--audio-vae"), strict=True)
    return a_vae


def _run_config(run: Path, what: str, key: str) -> dict:
    """The component's metadata config from a training run's config.json (its `key` section)."""
    path = run / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{what}: {path} does not exist; pass the run folder of a finished training")
    config = json.loads(path.read_text())
    if not isinstance(config, dict) or not isinstance(config.get(key), dict):
        raise ValueError(f"{what}: {path} has no {key!r} section; pass the run folder of train.train_{key}")
    return config[key]


def text_sizes(text_encoder: Path) -> tuple[int, int]:
    """(width, hidden-state count) of a Gemma folder: hidden_size and num_hidden_layers + 1."""
    cfg = json.loads((text_encoder / "config.json").read_text())
    cfg = cfg.get("text_config", cfg)
    return int(cfg["hidden_size"]), int(cfg["num_hidden_layers"]) + 1


def fresh_transformer(text_encoder: Path, seed: int) -> tuple[AVTransformer, EmbeddingsProcessor]:
    width, states = text_sizes(text_encoder)
    t_cfg = _config(AVTransformerConfig, REPO / "configs/demo/ltx2_transformer.yaml", caption_channels=width)
    c = OmegaConf.load(REPO / "configs/demo/ltx2_text.yaml")
    c_cfg = _config(TextConnectorConfig, REPO / "configs/demo/ltx2_text.yaml", text_dim=width,
                    num_hidden_states=states, video_heads=width // c.video_head_dim,
                    audio_heads=width // c.audio_head_dim)
    g = torch.Generator().manual_seed(seed)
    transformer = AVTransformer(t_cfg).init_weights(g)
    torch.manual_seed(seed)  # the connectors' registers and linears: PyTorch's default init, seeded
    return transformer, EmbeddingsProcessor(c_cfg)


def export(out: Path, *, vae: Path, audio_vae: Path, vocoder: Path | None, text_encoder: Path,
           source: Path | None = None, seed: int = 0, overwrite: bool = True) -> Path:
    video_vae = VideoVAE(_config(VideoVAEConfig, REPO / "configs/demo/ltx2_vae.yaml"))
    video_vae.load_state_dict(_vae_state(vae), strict=True)
    a_vae = _audio_vae(audio_vae)
    if vocoder is None:  # untrained, seeded: preprocessing and training never decode sound (validation aside)
        torch.manual_seed(seed)
        meta = OmegaConf.to_container(OmegaConf.load(REPO / "configs/demo/ltx2_vocoder.yaml"))
        voc = build_vocoder(VocoderConfig.from_metadata(meta))
    else:
        voc = build_vocoder(VocoderConfig.from_metadata(_run_config(vocoder, "--vocoder", "vocoder")))
        voc.load_state_dict(_state(vocoder / "vocoder_final.pt", "--vocoder"), strict=True)
    if source is None:
        transformer, text = fresh_transformer(text_encoder, seed)
    else:
        trained = ltx2_checkpoint.load(source, ("transformer", "text", "vae", "audio_vae"), dtype=torch.float32)
        for name, mine in (("vae", video_vae), ("audio_vae", a_vae)):
            if latent_space_id(trained[name]) != latent_space_id(mine):
                raise ValueError(f"--from {source} was trained in another {name} latent space than the one given; "
                                 "export the VAE it was trained with (or a decoder fine-tuning of it)")
        transformer, text = trained["transformer"], trained["text"]
    modules = {"transformer": transformer, "text": text, "vae": video_vae, "audio_vae": a_vae, "vocoder": voc}
    return ltx2_checkpoint.write_modules(out, modules, model_version="2.0.0", overwrite=overwrite)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vae", type=Path, default=REPO / "runs/demo_ltx2_vae_decoder/vae_final.pt")
    p.add_argument("--audio-vae", type=Path, default=REPO / "runs/demo_audio_vae")
    p.add_argument("--vocoder", type=Path, default=REPO / "runs/demo_vocoder")
    p.add_argument("--fresh-vocoder", action="store_true",
                   help="an untrained vocoder (the starting file: training decodes no sound but its validation)")
    p.add_argument("--text-encoder", type=Path, default=REPO / "demo/ltx2/text_encoder")
    p.add_argument("--from", dest="source", type=Path, help="a bundled file whose transformer + connectors to take")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO / "demo/ltx2-demo.safetensors")
    a = p.parse_args()
    try:
        path = export(a.out, vae=a.vae, audio_vae=a.audio_vae, vocoder=None if a.fresh_vocoder else a.vocoder,
                      text_encoder=a.text_encoder,
                      source=a.source, seed=a.seed)
    except (ValueError, OSError) as e:
        raise SystemExit(f"error: {e}") from None
    print(json.dumps({"wrote": str(path), "MiB": round(path.stat().st_size / 2**20, 2)}))


if __name__ == "__main__":
    main()
