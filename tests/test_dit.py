"""Properties of the native DiT that need no reference: meta build, invariants, STG masks, attention backends."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, dit_inputs, randomize_

from ltx.core.attention import set_attention_backend
from ltx.ltxv.transformer import DiT, STGMode

CFG = TINY["w64"]


def _model(seed=0):
    return randomize_(DiT(CFG), seed).eval()


def test_meta_build_then_init_weights_runs():
    with torch.device("meta"):
        model = DiT(CFG)
    assert all(p.is_meta for p in model.parameters())
    model = model.to_empty(device="cpu").init_weights(torch.Generator().manual_seed(0))
    x, ctx, mask, pos = dit_inputs(CFG, batch=2)
    out = model(x, torch.tensor([0.5, 0.5]), ctx, mask, pos)
    assert out.shape == (2, x.shape[1], CFG.out_channels)
    assert torch.equal(out, torch.zeros_like(out))  # zero-initialized proj_out: the model starts at v = 0


def test_per_token_sigma_equal_everywhere_equals_global_sigma():
    model = _model()
    x, ctx, mask, pos = dit_inputs(CFG, batch=2)
    sigma = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        glob = model(x, sigma, ctx, mask, pos)
        tok = model(x, sigma[:, None].expand(2, x.shape[1]), ctx, mask, pos)
    torch.testing.assert_close(tok, glob, atol=1e-6, rtol=0)


def test_rows_are_independent():
    """Batching does not mix samples (a batched CFG/STG forward relies on it)."""
    model = _model()
    x, ctx, mask, pos = dit_inputs(CFG, batch=3)
    sigma = torch.tensor([0.9, 0.5, 0.1])
    with torch.no_grad():
        batched = model(x, sigma, ctx, mask, pos)
        single = torch.cat([model(x[i : i + 1], sigma[i : i + 1], ctx[i : i + 1], mask[i : i + 1], pos[i : i + 1])
                            for i in range(3)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)


def test_all_ones_skip_mask_is_a_plain_forward():
    model = _model()
    x, ctx, mask, pos = dit_inputs(CFG, batch=2)
    sigma = torch.tensor([0.4, 0.4])
    with torch.no_grad():
        plain = model(x, sigma, ctx, mask, pos)
        for mode in STGMode:
            masked = model(x, sigma, ctx, mask, pos, skip_mask=torch.ones(CFG.num_layers, 2), stg_mode=mode)
            assert torch.equal(masked, plain), mode


def test_transformer_block_skip_everywhere_is_identity_blocks():
    """Skipping every block with the transformer_block strategy leaves only the input and output layers."""
    model = _model()
    x, ctx, mask, pos = dit_inputs(CFG, batch=1)
    sigma = torch.tensor([0.6])
    with torch.no_grad():
        out = model(x, sigma, ctx, mask, pos, skip_mask=torch.zeros(CFG.num_layers, 1),
                    stg_mode=STGMode.transformer_block)
        empty = DiT(type(CFG)(**{**CFG.__dict__, "num_layers": 0}))
        sd = {k: v for k, v in model.state_dict().items() if not k.startswith("transformer_blocks")}
        empty.load_state_dict(sd, strict=True)
        expected = empty(x, sigma, ctx, mask, pos)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_attention_backends():
    model = _model()
    x, ctx, mask, pos = dit_inputs(CFG, batch=2)
    sigma = torch.tensor([0.5, 0.2])
    with torch.no_grad():
        ref = model(x, sigma, ctx, mask, pos)
        assert set_attention_backend(model, "auto") == 2 * CFG.num_layers
        auto = model(x, sigma, ctx, mask, pos)  # CPU fp32: auto resolves to SDPA
    assert torch.equal(auto, ref)
    with pytest.raises(ValueError, match="unknown attention backend 'xformers'; valid"):
        set_attention_backend(model, "xformers")
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="needs the flash-attn package"):
            set_attention_backend(model, "flash")


@pytest.mark.slow
def test_block_compiles_fullgraph():
    model = _model()
    x, ctx, mask, pos = dit_inputs(CFG, batch=1)
    sigma = torch.tensor([0.5])
    with torch.no_grad():
        eager = model(x, sigma, ctx, mask, pos)
        for i, blk in enumerate(model.transformer_blocks):
            model.transformer_blocks[i] = torch.compile(blk, fullgraph=True, backend="aot_eager")
        compiled = model(x, sigma, ctx, mask, pos)
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=0)
