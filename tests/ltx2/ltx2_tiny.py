"""Tiny LTX-2 models built with the REFERENCE code (ltx-core 1.0.0), random weights, saved as official bundled
files: the inputs of the checkpoint, pipeline and generate tests.

`official_file(path, style)` writes `model.diffusion_model.*`, `text_embedding_projection.*`, `vae.*`,
`audio_vae.*`, `vocoder.*` tensors and the metadata `config` / `model_version`, the layout of
ltx-2-19b-dev.safetensors (style "19b") or ltx-2.3-22b-dev.safetensors ("2.3"), from the reference modules'
own state dicts. `reference_models(style)` returns those modules for the parity checks.

Sizes: transformer 2 heads x 8 (video) / 2 x 4 (audio), 2 layers; text width 8, 49 hidden states, 128
registers (the reference connector always builds 128); video VAE with 128 latent channels but 1 layer per
block and narrow decoder; audio VAE ch 128 with ch_mult [1, 1, 1]; narrow vocoders at the released rates.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

TEXT_DIM = 8
NUM_HIDDEN_STATES = 49

_TRANSFORMER_COMMON = {
    "activation_fn": "gelu-approximate", "attention_bias": True, "attention_type": "default", "dropout": 0.0,
    "av_cross_ada_norm": True, "causal_temporal_positioning": True, "cross_attention_norm": True,
    "double_self_attention": False, "frequencies_precision": "float64", "in_channels": 128, "out_channels": 128,
    "audio_in_channels": 128, "audio_out_channels": 128, "norm_elementwise_affine": False, "norm_eps": 1e-6,
    "num_embeds_ada_norm": 1000, "num_vector_embeds": None, "only_cross_attention": False,
    "positional_embedding_max_pos": [20, 2048, 2048], "audio_positional_embedding_max_pos": [20],
    "positional_embedding_theta": 10000.0, "positional_embedding_type": "rope", "qk_norm": "rms_norm",
    "rope_type": "split", "share_ff": False, "standardization_norm": "rms_norm", "timestep_scale_multiplier": 1000,
    "av_ca_timestep_scale_multiplier": 1000.0, "upcast_attention": False, "use_audio_video_cross_attention": True,
    "use_embeddings_connector": True, "use_linear_projection": False, "use_middle_indices_grid": True,
    "num_attention_heads": 2, "attention_head_dim": 8, "audio_num_attention_heads": 2,
    "audio_attention_head_dim": 4, "num_layers": 2, "cross_attention_dim": 16, "audio_cross_attention_dim": 8,
    "caption_channels": TEXT_DIM, "connector_norm_output": True, "connector_num_learnable_registers": 128,
    "connector_positional_embedding_max_pos": [4096],
}  # fmt: skip
TRANSFORMER = {
    "19b": {**_TRANSFORMER_COMMON, "connector_num_attention_heads": 2, "connector_attention_head_dim": 4,
            "connector_num_layers": 1},
    "2.3": {**_TRANSFORMER_COMMON, "apply_gated_attention": True, "cross_attention_adaln": True,
            "caption_proj_before_connector": True, "caption_proj_input_norm": False,
            "caption_projection_first_linear": False, "caption_projection_second_linear": False,
            "text_encoder_norm_type": "per_token_rms", "connector_apply_gated_attention": True,
            "connector_num_attention_heads": 2, "connector_attention_head_dim": 8, "connector_num_layers": 2,
            "audio_connector_num_attention_heads": 2, "audio_connector_attention_head_dim": 4},
}  # fmt: skip


def _vae(style: str) -> dict:
    from test_ltx2_video_vae import METAS, tiny_meta

    d = tiny_meta(METAS["19b" if style == "19b" else "2.3"])
    d["latent_channels"] = 128  # the pipelines' fixed latent width (also the encoder's first width)
    for name, params in d["encoder_blocks"]:
        if name.startswith("compress"):
            params["multiplier"] = 1  # keep the encoder at 128 channels (the released one doubles to 2048)
    return d


def _audio_vae() -> dict:
    from test_ltx2_audio_vae import META_23

    d = copy.deepcopy(META_23)
    d["model"]["params"]["ddconfig"].update(ch=128, ch_mult=[1, 1, 1], num_res_blocks=1)
    return d


def _vocoder(style: str) -> dict:
    from test_ltx2_vocoder import META_19B, META_23

    if style == "19b":
        return {**copy.deepcopy(META_19B), "upsample_initial_channel": 32}
    d = copy.deepcopy(META_23)
    d["vocoder"]["upsample_initial_channel"] = 64
    d["bwe"]["upsample_initial_channel"] = 32
    return d


def config(style: str) -> dict:
    """The metadata `config` of a tiny bundled file of `style` ("19b" or "2.3")."""
    if style not in TRANSFORMER:
        raise ValueError(style)
    return {"transformer": copy.deepcopy(TRANSFORMER[style]), "vae": _vae(style), "audio_vae": _audio_vae(),
            "vocoder": _vocoder(style)}


def randomize(module: torch.nn.Module, seed: int, std: float = 0.1) -> torch.nn.Module:
    """Random weights everywhere (norm weights around 1, registers ~N(0, 1), kernels and filters kept)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict(keep_vars=True).items():
            if not t.is_floating_point():
                continue
            leaf = name.rsplit(".", 1)[-1]
            if "filter" in name or "kernel" in name:
                continue  # fixed DSP tables (computed at init)
            if "norm" in name and leaf == "weight":
                t.copy_(1 + std * torch.randn(t.shape, generator=gen))
            elif "learnable_registers" in name:
                t.copy_(torch.randn(t.shape, generator=gen))
            elif leaf == "std-of-means":
                t.copy_(0.5 + torch.rand(t.shape, generator=gen))
            elif leaf in ("alpha", "beta"):  # snake parameters (log scale)
                t.copy_(0.1 * torch.randn(t.shape, generator=gen))
            elif t.ndim >= 2 and leaf == "weight":
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=gen) * min(std, 1.5 / fan_in**0.5))
            else:
                t.copy_(std * torch.randn(t.shape, generator=gen))
    return module.float().eval()


def reference_models(style: str, seed: int = 0) -> dict[str, torch.nn.Module]:
    """Reference modules with random weights: transformer, text (processor), vae_encoder, vae_decoder,
    audio_encoder, audio_decoder, vocoder. Encoder and decoder share their latent statistics, as in the file."""
    from ltx_core.model.audio_vae.model_configurator import (
        AudioDecoderConfigurator,
        AudioEncoderConfigurator,
        VocoderConfigurator,
    )
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator
    from ltx_core.model.video_vae.model_configurator import VideoDecoderConfigurator, VideoEncoderConfigurator
    from ltx_core.text_encoders.gemma.embeddings_connector import (
        AudioEmbeddings1DConnectorConfigurator,
        Embeddings1DConnectorConfigurator,
    )
    from ltx_core.text_encoders.gemma.embeddings_processor import EmbeddingsProcessor
    from ltx_core.text_encoders.gemma.feature_extractor import FeatureExtractorV1, FeatureExtractorV2

    cfg = config(style)
    t = cfg["transformer"]
    transformer = LTXModelConfigurator.from_config(cfg)
    transformer = transformer.to_empty(device="cpu")  # the 19B caption projections are built on meta
    flat = TEXT_DIM * NUM_HIDDEN_STATES
    if style == "19b":
        fe = FeatureExtractorV1(aggregate_embed=torch.nn.Linear(flat, TEXT_DIM, bias=False), is_av=True)
    else:
        vdim = t["num_attention_heads"] * t["attention_head_dim"]
        adim = t["audio_num_attention_heads"] * t["audio_attention_head_dim"]
        fe = FeatureExtractorV2(video_aggregate_embed=torch.nn.Linear(flat, vdim), embedding_dim=TEXT_DIM,
                                audio_aggregate_embed=torch.nn.Linear(flat, adim))
    text = EmbeddingsProcessor(video_connector=Embeddings1DConnectorConfigurator.from_config(cfg),
                               audio_connector=AudioEmbeddings1DConnectorConfigurator.from_config(cfg),
                               feature_extractor=fe)
    models = {
        "transformer": transformer,
        "text": text,
        "vae_encoder": VideoEncoderConfigurator.from_config(cfg),
        "vae_decoder": VideoDecoderConfigurator.from_config(cfg),
        "audio_encoder": AudioEncoderConfigurator.from_config(cfg),
        "audio_decoder": AudioDecoderConfigurator.from_config(cfg),
        "vocoder": VocoderConfigurator.from_config(cfg),
    }
    for i, m in enumerate(models.values()):
        randomize(m, seed + i)
    with torch.no_grad():  # one set of statistics per VAE, as the file stores them
        for enc, dec in (("vae_encoder", "vae_decoder"), ("audio_encoder", "audio_decoder")):
            for name, b in models[enc].per_channel_statistics.named_buffers():
                models[dec].per_channel_statistics.get_buffer(name).copy_(b)
    return models


def official_state_dict(models: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """The bundled file's tensors, named as ltx-core's SDOps read them."""
    sd: dict[str, torch.Tensor] = {}

    def put(prefix: str, module: torch.nn.Module, skip: str | None = None) -> None:
        for k, v in module.state_dict().items():
            if skip is None or not k.startswith(skip):
                sd[prefix + k] = v.detach().clone().contiguous()

    put("model.diffusion_model.", models["transformer"])
    text = models["text"].state_dict()
    for k, v in text.items():
        for ours, theirs in (("feature_extractor.", "text_embedding_projection."),
                             ("video_connector.", "model.diffusion_model.video_embeddings_connector."),
                             ("audio_connector.", "model.diffusion_model.audio_embeddings_connector.")):
            if k.startswith(ours):
                sd[theirs + k[len(ours):]] = v.detach().clone().contiguous()
    put("vae.encoder.", models["vae_encoder"], skip="per_channel_statistics.")
    put("vae.decoder.", models["vae_decoder"], skip="per_channel_statistics.")
    put("vae.per_channel_statistics.", models["vae_encoder"].per_channel_statistics)
    n = sd["vae.per_channel_statistics.mean-of-means"].numel()  # the released files carry two more vectors
    sd["vae.per_channel_statistics.channel"] = torch.arange(n, dtype=torch.float32)
    sd["vae.per_channel_statistics.mean-of-stds"] = torch.rand(n, generator=torch.Generator().manual_seed(5))
    put("audio_vae.encoder.", models["audio_encoder"], skip="per_channel_statistics.")
    put("audio_vae.decoder.", models["audio_decoder"], skip="per_channel_statistics.")
    put("audio_vae.per_channel_statistics.", models["audio_encoder"].per_channel_statistics)
    persistent = set(models["vocoder"].state_dict().keys())
    for k, v in models["vocoder"].state_dict().items():
        if k in persistent:
            sd["vocoder." + k] = v.detach().clone().contiguous()
    return sd


def official_file(path: str | Path, style: str = "19b", seed: int = 0) -> tuple[Path, dict[str, torch.nn.Module]]:
    """Write a tiny official bundled file; returns its path and the reference modules it holds."""
    models = reference_models(style, seed)
    path = Path(path)
    version = "2.0.0" if style == "19b" else "2.3.0"
    save_file(official_state_dict(models), str(path), metadata={"config": json.dumps(config(style)),
                                                                  "model_version": version})
    return path, models
