"""The diffusion decoder's optional NATTEN backend (ltx.ltx2.diffusion_decoder: `natten_attention`, `use_natten`)
against the plain-torch `neighborhood_attention`, in float32.

Without CUDA natten 0.21.7 builds without libnatten and runs its "flex-fna" backend (torch flex_attention,
uncompiled: dense masked scores); that is what runs here. Install it (about 6 s, a pure-Python wheel) with
    .venv/bin/pip install --no-deps --no-build-isolation natten==0.21.7
(with build isolation pip first fetches a CUDA torch into the build environment: about a minute here).
Measured on this CPU, float32, max abs diff natten vs torch: <= 4.8e-7 on the grids below (|out| <= 3.7);
through the tiny decoder 1.9e-6 on the context (|context| <= 8.1), 1.8e-7 on one denoiser call, 2.4e-7 on a
2-step decode (|pixels| <= 0.83).
The error paths (no natten, float64, a grid smaller than the kernel) run without natten too.
"""

from __future__ import annotations

import sys

import pytest
import torch

from ltx.ltx2.diffusion_decoder import (
    DiffusionDecoder,
    NeighborhoodAttention,
    decode,
    natten_attention,
    neighborhood_attention,
    use_natten,
)

INSTALL = "natten not installed: .venv/bin/pip install --no-deps --no-build-isolation natten==0.21.7"
# natten's CPU path calls flex_attention without torch.compile; torch warns so on every call
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

# the diffusion decoder test's tiny layout: a kernel of 1 on an axis, kernels narrower than some grids, so
# windows shift at the borders
from test_ltx2_diffusion_decoder import CFG  # noqa: E402


@pytest.fixture(scope="module")
def natten():
    return pytest.importorskip("natten", reason=INSTALL)


def _qkv(batch: int, grid: tuple[int, int, int], heads: int = 3, head_dim: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, *grid, heads, head_dim, generator=g) for _ in range(3))
    return q * head_dim**-0.5, k, v  # q comes scaled, as in the decoder


@pytest.mark.parametrize("batch, grid, kernel", [
    (2, (3, 3, 3), (3, 3, 3)),    # kernel == grid (natten's self-attention path)
    (1, (7, 5, 5), (7, 5, 5)),    # kernel == grid, odd sizes
    (2, (5, 6, 7), (3, 3, 5)),    # windows clamped at every border
    (1, (5, 5, 9), (3, 5, 3)),    # one axis kernel == grid, the others clamp
    (1, (2, 13, 6), (2, 3, 3)),   # even kernel (window i - k // 2 .. i + (k - 1) // 2)
    (1, (6, 8, 8), (4, 4, 4)),    # even kernels everywhere
    (2, (5, 4, 6), (3, 1, 3)),    # kernel 1 folded into the batch (natten takes kernels >= 2): na2d
    (1, (4, 9, 11), (1, 5, 7)),   # kernel 1 in time: na2d
    (1, (3, 4, 9), (1, 1, 4)),    # two kernels of 1: na1d
    (1, (3, 4, 5), (1, 1, 1)),    # all 1: v
])
def test_natten_matches_torch(natten, batch, grid, kernel):
    q, k, v = _qkv(batch, grid)
    out = natten_attention(q, k, v, kernel)
    ref = neighborhood_attention(q, k, v, kernel)
    assert out.shape == ref.shape == v.shape and out.is_contiguous()
    assert (out - ref).abs().max() <= 2e-6  # measured <= 4.8e-7 (rounding: flex attention vs masked SDPA)


def test_decoder_with_natten_matches_torch(natten):
    decoder = DiffusionDecoder(CFG).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in decoder.parameters():  # unit-ish weights, adaLN non-zero (its init is zeros)
            p.copy_(torch.randn(p.shape, generator=g) / (p.shape[1] ** 0.5 if p.ndim == 2 else 5))
    z = torch.randn(2, 8, 3, 2, 3, generator=g)
    x = torch.randn(2, 3, 17, 8, 12, generator=g)

    def run():
        with torch.no_grad():
            context = decoder.context(z)
            return context, decoder(x, context, torch.tensor([0.7, 0.25])), decode(decoder, z, steps=2, seed=4)

    off = run()
    assert use_natten(decoder) == sum(CFG.stage_depths) == 6
    assert {m.na_backend for m in decoder.modules() if isinstance(m, NeighborhoodAttention)} == {"natten"}
    on = run()
    assert use_natten(decoder, enabled=False) == 6
    again = run()
    for a, b, c in zip(off, on, again):
        assert a.shape == b.shape and b.abs().max() > 0.5
        assert (a - b).abs().max() <= 1e-5  # measured 1.9e-6 (context), 1.8e-7, 2.4e-7
        assert torch.equal(a, c)  # switched back: the torch path again, bitwise


def test_natten_errors(monkeypatch):
    """One-line errors: a grid smaller than the kernel and float64 before natten is touched, then no natten."""
    q, k, v = _qkv(1, (3, 4, 5))
    with pytest.raises(ValueError, match="at least its kernel"):
        natten_attention(q, k, v, (3, 5, 3))
    with pytest.raises(ValueError, match="float32 / float16 / bfloat16.*use_natten"):
        natten_attention(q.double(), k.double(), v.double(), (3, 3, 3))
    monkeypatch.setitem(sys.modules, "natten", None)  # import natten now raises ImportError
    with pytest.raises(ImportError, match="natten package is not installed.*pip install"):
        natten_attention(q, k, v, (3, 3, 3))
    monkeypatch.setattr("ltx.ltx2.diffusion_decoder.natten_available", lambda: False)
    decoder = DiffusionDecoder(CFG)
    with pytest.raises(ImportError, match="use_natten: the natten package is not installed"):
        use_natten(decoder)
    assert use_natten(decoder, enabled=False) == 6  # switching off needs no natten
