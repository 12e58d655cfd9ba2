"""The one attention dispatch (`ltx.core.attention`) reaches every attention module of both families.

- `set_attention_backend` counts exactly the attentions a config implies: 2 per 0.9.x DiT block; 6 per LTX-2 block
  (video self, video text, audio self, audio text, audio->video, video->audio) plus 1 per text-connector block.
- On CPU, "auto" resolves to SDPA: switching "auto" -> "sdpa" leaves outputs bitwise unchanged.
- With CUDA and flash-attn (`-m gpu`): flash vs SDPA on both transformers in bf16.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from conftest import TINY, dit_inputs, randomize_
from torch import nn

from ltx.core.attention import BACKENDS, attention, set_attention_backend
from ltx.ltx2.text import EmbeddingsProcessor, TextConnectorConfig
from ltx.ltx2.transformer import AVTransformer, AVTransformerConfig, StreamInput
from ltx.ltxv.transformer import DiT

DIT_CFG = TINY["w32"]  # 3 layers


def av_config(v23: bool) -> AVTransformerConfig:
    return AVTransformerConfig(
        num_layers=2, num_attention_heads=2, attention_head_dim=8, audio_num_attention_heads=2,
        audio_attention_head_dim=4, in_channels=16, out_channels=16, audio_in_channels=8, audio_out_channels=8,
        cross_attention_dim=16, audio_cross_attention_dim=8, caption_channels=12,
        apply_gated_attention=v23, cross_attention_adaln=v23, caption_proj_before_connector=v23,
    )  # fmt: skip


CONNECTOR_CFG = TextConnectorConfig(text_dim=16, num_hidden_states=3, video_heads=2, video_head_dim=8, video_layers=3,
                                    audio_heads=2, audio_head_dim=8, audio_layers=1, num_registers=4, rope_max_pos=64)


def av_inputs(cfg: AVTransformerConfig, dtype: torch.dtype = torch.float32, device: str = "cpu", seed: int = 0):
    """Both streams, with a padded text mask and a self-attention mask on video (the SDPA fallback path)."""
    g = torch.Generator().manual_seed(seed)
    B, T, Ta, S = 2, 6, 5, 4

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(device, dtype)

    ctx_v, ctx_a = (cfg.inner_dim, cfg.audio_inner_dim) if cfg.caption_proj_before_connector else (12, 12)
    ctx_mask = torch.ones(B, S, dtype=torch.long, device=device)
    ctx_mask[0, :1] = 0
    sigma = torch.tensor([0.7, 0.3], device=device)
    vpos = torch.arange(T, dtype=torch.float32, device=device).view(1, 1, T, 1).expand(B, 3, T, 2).contiguous()
    vpos[..., 1] += 1
    apos = vpos[:, :1, :Ta] * 0.04
    video = StreamInput(x=rnd(B, T, cfg.in_channels), timesteps=sigma[:, None].expand(B, T), sigma=sigma,
                        positions=vpos.to(dtype), context=rnd(B, S, ctx_v), context_mask=ctx_mask,
                        attention_mask=(torch.rand(B, T, T, generator=g) + torch.eye(T)).clamp(max=1).to(device))
    audio = StreamInput(x=rnd(B, Ta, cfg.audio_in_channels), timesteps=sigma[:, None].expand(B, Ta), sigma=sigma,
                        positions=apos, context=rnd(B, S, ctx_a), context_mask=ctx_mask)
    return video, audio


def connector_inputs(dtype: torch.dtype = torch.float32, device: str = "cpu"):
    g = torch.Generator().manual_seed(2)
    c = CONNECTOR_CFG
    hidden = torch.randn(2, 8, c.text_dim, c.num_hidden_states, generator=g).to(device, dtype)
    mask = torch.ones(2, 8, dtype=torch.long, device=device)
    mask[1, :3] = 0  # left padding
    return hidden, mask


def test_backend_names_are_documented():
    assert BACKENDS == ("sdpa", "flash", "auto")
    with pytest.raises(ValueError, match="unknown attention backend 'xformers'; valid"):
        set_attention_backend(nn.Linear(2, 2), "xformers")


def test_every_dit_attention_is_reached():
    model = DiT(DIT_CFG)
    assert set_attention_backend(model, "sdpa") == 2 * DIT_CFG.num_layers  # attn1 (self) + attn2 (text)


@pytest.mark.parametrize("v23", [False, True], ids=["19b", "2.3"])
def test_every_ltx2_attention_is_reached(v23: bool):
    cfg = av_config(v23)
    transformer = AVTransformer(cfg)
    assert set_attention_backend(transformer, "auto") == 6 * cfg.num_layers
    assert all(block.attn1.attention_backend == "auto" for block in transformer.transformer_blocks)
    connectors = EmbeddingsProcessor(CONNECTOR_CFG)
    assert set_attention_backend(connectors, "auto") == CONNECTOR_CFG.video_layers + CONNECTOR_CFG.audio_layers
    both = nn.ModuleDict({"transformer": transformer, "connectors": connectors})
    expected = 6 * cfg.num_layers + CONNECTOR_CFG.video_layers + CONNECTOR_CFG.audio_layers
    assert set_attention_backend(both, "sdpa") == expected


def test_auto_then_sdpa_is_bitwise_on_cpu_for_the_dit():
    model = randomize_(DiT(DIT_CFG), 0).eval()
    x, ctx, mask, pos = dit_inputs(DIT_CFG, batch=2)
    sigma = torch.tensor([0.5, 0.2])
    with torch.no_grad():
        set_attention_backend(model, "auto")
        auto = model(x, sigma, ctx, mask, pos)
        set_attention_backend(model, "sdpa")
        sdpa = model(x, sigma, ctx, mask, pos)
    assert torch.equal(auto, sdpa)


@pytest.mark.parametrize("v23", [False, True], ids=["19b", "2.3"])
def test_auto_then_sdpa_is_bitwise_on_cpu_for_ltx2(v23: bool):
    cfg = av_config(v23)
    transformer = randomize_(AVTransformer(cfg), 1).eval()
    connectors = randomize_(EmbeddingsProcessor(CONNECTOR_CFG), 2).eval()
    video, audio = av_inputs(cfg)
    hidden, mask = connector_inputs()
    outputs = {}
    with torch.no_grad():
        for backend in ("auto", "sdpa"):
            set_attention_backend(transformer, backend)
            set_attention_backend(connectors, backend)
            outputs[backend] = (*transformer(video, audio), *connectors(hidden, mask)[:2])
    for auto, sdpa in zip(outputs["auto"], outputs["sdpa"], strict=True):
        assert torch.equal(auto, sdpa)


def test_a_bias_reaches_sdpa_unchanged():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 5, 3, 4, generator=g) for _ in range(3))  # (B, T, H, Dh)
    bias = torch.randn(2, 1, 5, 5, generator=g)
    direct = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=bias
    ).transpose(1, 2)
    for backend in BACKENDS[::2]:  # sdpa, auto (no flash on a CPU tensor)
        assert torch.equal(attention(q, k, v, bias, backend), direct)
    keep = bias > 0  # a bool mask (True = attend) is passed as is, not cast to 0 / 1 additive values
    keep[..., 0] = True
    direct_bool = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=keep
    ).transpose(1, 2)
    assert torch.equal(attention(q, k, v, keep), direct_bool)


def test_flash_refuses_cpu_tensors_without_a_bias():
    q = torch.randn(1, 3, 2, 4)
    with pytest.raises(ValueError, match="needs CUDA fp16/bf16 tensors"):
        attention(q, q, q, None, "flash")
    bias = torch.zeros(1, 1, 3, 3)
    assert torch.equal(attention(q, q, q, bias, "flash"), attention(q, q, q, bias, "sdpa"))  # a bias: SDPA


_FLASH = torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


@pytest.mark.gpu
@pytest.mark.skipif(not _FLASH, reason="needs CUDA and flash-attn")
def test_flash_matches_sdpa_in_bf16_on_both_transformers():
    device, dtype = "cuda", torch.bfloat16
    dit = randomize_(DiT(DIT_CFG), 0).eval().to(device, dtype)
    x, ctx, mask, pos = (t.to(device) for t in dit_inputs(DIT_CFG, batch=2, dtype=dtype))
    sigma = torch.tensor([0.5, 0.2], device=device)
    cfg = av_config(True)
    av = randomize_(AVTransformer(cfg), 1).eval().to(device, dtype)
    video, audio = av_inputs(cfg, dtype, device)
    connectors = randomize_(EmbeddingsProcessor(CONNECTOR_CFG), 2).eval().to(device, dtype)
    hidden, text_mask = connector_inputs(dtype, device)
    outputs = {}
    with torch.no_grad():
        for backend in ("sdpa", "flash"):
            for model in (dit, av, connectors):
                set_attention_backend(model, backend)
            outputs[backend] = (dit(x, sigma, ctx, mask, pos), *av(video, audio), *connectors(hidden, text_mask)[:2])
    for name, flash, sdpa in zip(("dit", "video", "audio", "video text", "audio text"), outputs["flash"],
                                 outputs["sdpa"], strict=True):
        scale = sdpa.float().abs().max().item()
        error = (flash.float() - sdpa.float()).abs().max().item()
        assert error <= 2e-2 * scale + 1e-2, f"{name}: flash differs from SDPA by {error} (output scale {scale})"
