"""LoRA on a quantized base: merging into scaled fp8 equals ltx-core 1.0.0's `apply_loras` (dequantize, add the bf16
delta, requantize per tensor) bitwise; unmerged adapters equal the merged weight within fp8 rounding (bound below);
LoRA training with the base quantized and frozen and the adapters in fp32 runs through the trainers' injection
(ltx.core.lora.inject_lora) and leaves the stored base tensors untouched."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY
from ltx_core.loader.fuse_loras import apply_loras
from ltx_core.loader.primitives import LoraStateDictWithStrength, StateDict

from ltx.core.lora import (
    LoRAConfig,
    apply_lora_weights,
    freeze_base,
    fuse_loras,
    inject_lora,
    lora_parameters,
    merge_lora,
    remove_lora,
)
from ltx.core.lora_formats import LoRAWeights
from ltx.core.quant import QuantizedLinear, QuantizedLoRALinear, quantize_model
from ltx.ltxv.transformer import DiT

pytestmark = pytest.mark.usefixtures("one_thread")
TARGETS = ["transformer_blocks.1.attn1.to_q", "transformer_blocks.1.ff.net.2"]


def quantized_dit(seed: int = 0) -> DiT:
    torch.manual_seed(seed)
    dit = DiT(TINY["w64"]).eval()
    with torch.no_grad():
        for p in dit.parameters():
            p.normal_(0, 0.1)
    quantize_model(dit, "fp8-scaled")
    return dit


def lora(dit: DiT, rank: int = 4, seed: int = 1) -> LoRAWeights:
    g = torch.Generator().manual_seed(seed)
    tensors, ranks = {}, {}
    for name in TARGETS:
        m = dit.get_submodule(name)
        tensors[f"{name}.lora_A.weight"] = torch.randn(rank, m.in_features, generator=g) * 0.1
        tensors[f"{name}.lora_B.weight"] = torch.randn(m.out_features, rank, generator=g) * 0.1
        ranks[name] = rank
    return LoRAWeights(tensors, ranks, {n: float(rank) for n in ranks})  # alpha = rank: factor = strength


def test_merge_into_fp8_is_ltx_core_apply_loras_bitwise():
    dit = quantized_dit()
    weights, strength = lora(dit), 0.8
    before = {n: (dit.get_submodule(n).weight.clone(), dit.get_submodule(n).weight_scale.clone()) for n in TARGETS}
    assert fuse_loras(dit, [(weights, strength)]) == 2
    for name in TARGETS:
        w, s = before[name]
        model_sd = StateDict({f"{name}.weight": w.t(), f"{name}.weight_scale": s}, torch.device("cpu"), 0, set())
        lsd = StateDict({k: v for k, v in weights.tensors.items() if k.startswith(name + ".")}, torch.device("cpu"),
                        0, set())
        ref = apply_loras(model_sd, [LoraStateDictWithStrength(lsd, strength)]).sd  # 1.0.0 keeps (in, out)
        m = dit.get_submodule(name)
        assert torch.equal(m.weight.view(torch.uint8), ref[f"{name}.weight"].t().contiguous().view(torch.uint8))
        assert torch.equal(m.weight_scale, ref[f"{name}.weight_scale"])
    # the adapter route merges with the same arithmetic: one adapter merged = that LoRA fused, bit for bit
    other = quantized_dit()
    apply_lora_weights(other, weights, "a", strength, dtype=torch.float32)
    merge_lora(other)
    remove_lora(other)
    for name in TARGETS:
        m, o = dit.get_submodule(name), other.get_submodule(name)
        assert type(o) is QuantizedLinear and torch.equal(m.weight.view(torch.uint8), o.weight.view(torch.uint8))


def test_unmerged_equals_merged_within_fp8_rounding():
    """Bound per output i: sum_j |x_j| (2^-4 |V_ij| + 2^-10 s' + 2^-9 |D_ij|) + 1e-5, where V = dequantized W + D
    is the exact merged weight, s' its new scale and D the LoRA delta. Requantizing V rounds each entry to e4m3
    (3 mantissa bits, round to nearest): at most half an ulp, 2^-4 |V| for normal values and 2^-10 s' in the
    subnormal range (the smallest step is 2^-9 s'); ltx-core rounds D to bf16 before adding (half an ulp: 2^-9 |D|);
    the 1e-5 covers fp32 summation order (unmerged computes x W^T + s B (A x), merged x V^T)."""
    dit = quantized_dit()
    weights, strength = lora(dit), 0.7
    x = torch.randn(3, 64)
    for name in TARGETS:
        m = dit.get_submodule(name)
        x = torch.randn(3, m.in_features)
        base = m.dequantized_weight()
        a, b = weights.tensors[f"{name}.lora_A.weight"], weights.tensors[f"{name}.lora_B.weight"]
        delta = strength * b @ a
        wrapped = QuantizedLoRALinear(m)
        wrapped.add_adapter("u", 4, 4.0, tensors=(a, b))
        wrapped.lora_strength["u"] = strength
        with torch.no_grad():
            unmerged = wrapped(x)
            wrapped.merge("u")
            merged = wrapped(x)
        v = base + delta
        bound = x.abs() @ (2**-4 * v.abs() + 2**-10 * wrapped.weight_scale + 2**-9 * delta.abs()).t() + 1e-5
        err = (unmerged - merged).abs()
        assert (err <= bound).all() and err.max() > 0  # fp8 rounding is there, and within the bound


def test_lora_training_on_a_frozen_quantized_base():
    dit = quantized_dit()
    stored = {k: v.clone() for k, v in dit.state_dict().items()}
    names = inject_lora(dit, LoRAConfig(rank=4, targets=("to_q", "to_v", "ff.net.2")), dtype=torch.float32,
                        generator=torch.Generator().manual_seed(0))
    assert any(isinstance(dit.get_submodule(n), QuantizedLoRALinear) for n in names)
    freeze_base(dit)
    params = lora_parameters(dit)
    assert all(p.dtype == torch.float32 and p.requires_grad for p in params)
    for p in params[1::2]:  # B starts at zero: give the step something to move
        torch.nn.init.normal_(p, std=0.01)
    opt = torch.optim.AdamW(params, lr=1e-2)
    t = 2 * 3 * 4
    f, h, w = torch.meshgrid(torch.arange(2.0), torch.arange(3.0) * 32, torch.arange(4.0) * 32, indexing="ij")
    inputs = dict(x=torch.randn(1, t, 16), sigma=torch.tensor([0.5]), context=torch.randn(1, 5, 48),
                  context_mask=torch.ones(1, 5), positions=torch.stack([f / 8, h, w]).reshape(1, 3, t))
    before = [p.detach().clone() for p in params]
    loss = (dit(**inputs) - torch.randn(1, t, 16)).pow(2).mean()
    loss.backward()
    opt.step()
    assert all(p.grad is None for n, p in dit.named_parameters() if ".lora_" not in n)
    assert any(not torch.equal(p, q) for p, q in zip(params, before))
    sd = dit.state_dict()
    for k, v in stored.items():  # the quantized base (fp8 weights, scales) is exactly as loaded
        assert torch.equal(sd[k].reshape(-1).view(torch.uint8), v.reshape(-1).view(torch.uint8)), k
    remove_lora(dit)
    assert all(type(dit.get_submodule(n)) is QuantizedLinear for n in names if "blocks.1." in n)
    assert set(dit.state_dict()) == set(stored)
