"""Tensor codecs: quantize a float weight (out, in) into a layout's stored tensors, and dequantize them back to fp32.

Every dequantization reproduces its reference's arithmetic exactly (the tests compare bitwise):
- FP8 scaled (Lightricks LTX-2/2.3, ComfyUI): `w.float() * weight_scale` in fp32, as ltx-core's
  `_fuse_delta_with_scaled_fp8`; quantization as ltx-core's `quantize_weight_to_fp8_per_tensor`
  (scale = 448 / amax, q = clamp(w * scale, -448, 448) -> e4m3fn, weight_scale = 1 / scale).
- FP8 cast (LTX-Video 0.9.8 fp8, ltx-core `fp8_cast`): the e4m3fn values as they are.
- NVFP4 (ltx-kernels docs/NVFP4.md and its CUDA kernels): E2M1 codes, two per byte with element 2j in the HIGH
  nibble (the kernel's `hi_first`), an E4M3 scale per 16 values stored in the cuBLAS 128x4 tiled ("swizzled")
  layout of shape (roundup(out, 128), roundup(in / 16, 4)), and an fp32 per-tensor `weight_scale_2` = amax / 2688.
  Value = e2m1 * (weight_scale_2 * e4m3 block scale), both products in fp32, as the dequantize kernel.
- GGUF: ggml's block formats, decoded as `gguf.quants.dequantize` (numpy, fp32) does, step for step, in torch
  for Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, BF16, F16, F32; any other type the gguf package decodes
  goes through it (numpy on the CPU, slow). Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1 are quantized by the gguf package
  (Q8_0 is bit-exact with ggml); Q4_K / Q5_K / Q6_K, which it cannot quantize, by the simple min/max fits below
  (valid blocks that any ggml reader decodes; llama.cpp's iterative scale search gives lower error).
"""

from __future__ import annotations

import gguf
import numpy as np
import torch
from torch import Tensor

from ltx.core.checkpoint import CheckpointError

FP8_MAX = 448.0  # torch.finfo(torch.float8_e4m3fn).max
E2M1_MAX = 6.0
NVFP4_GLOBAL = FP8_MAX * E2M1_MAX  # 2688: weight_scale_2 = amax / 2688
NVFP4_BLOCK = 16
QK_K = 256


class QuantError(CheckpointError):
    """A quantized file or tensor that cannot be read: the message says what was found and what is supported."""


# ----------------------------------------------------------------------------------------------------------- FP8


def fp8_quantize(weight: Tensor) -> tuple[Tensor, Tensor]:
    """(e4m3fn weight, fp32 scalar weight_scale) with ltx-core's per-tensor arithmetic. An all-zero weight gets
    scale 1 (ltx-core would divide by zero and store NaN)."""
    w = weight.detach().to(torch.float32)
    amax = w.abs().amax()
    scale = FP8_MAX / amax if amax > 0 else torch.ones((), dtype=torch.float32, device=w.device)
    q = torch.clamp(w * scale, min=-FP8_MAX, max=FP8_MAX).to(torch.float8_e4m3fn)
    return q, scale.reciprocal()


def fp8_dequantize(weight: Tensor, weight_scale: Tensor | None) -> Tensor:
    w = weight.to(torch.float32)
    return w if weight_scale is None else w * weight_scale.to(torch.float32)


# --------------------------------------------------------------------------------------------------------- NVFP4

# E2M1 code (sign bit 3, exponent 2 bits, mantissa 1 bit) -> value; code 8 is -0.0 (the kernel decodes it so).
E2M1_VALUES = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])


def _round_up(x: int, m: int) -> int:
    return (x + m - 1) // m * m


def nvfp4_scale_shape(out_features: int, in_features: int) -> tuple[int, int]:
    return _round_up(out_features, 128), _round_up(in_features // NVFP4_BLOCK, 4)


def swizzle_scales(scales: Tensor) -> Tensor:
    """(rows, cols) block scales -> the cuBLAS 128x4 tiled layout, zero-padded to (roundup(rows, 128),
    roundup(cols, 4)): element (r, c) lands at tile * 512 + (r % 32) * 16 + ((r % 128) // 32) * 4 + c % 4 with
    tile = (r // 128) * (padded_cols / 4) + c // 4 (ltx-kernels docs/NVFP4.md)."""
    rows, cols = scales.shape
    pr, pc = _round_up(rows, 128), _round_up(cols, 4)
    padded = scales.new_zeros(pr, pc)
    padded[:rows, :cols] = scales
    # (tile_r, q = (r % 128) // 32, r % 32, tile_c, c % 4) -> memory order (tile_r, tile_c, r % 32, q, c % 4)
    return padded.reshape(pr // 128, 4, 32, pc // 4, 4).permute(0, 3, 2, 1, 4).reshape(pr, pc)


def unswizzle_scales(swizzled: Tensor) -> Tensor:
    """Inverse of `swizzle_scales` (padding kept): (padded_rows, padded_cols) in row-major block order."""
    pr, pc = swizzled.shape
    return swizzled.reshape(pr // 128, pc // 4, 32, 4, 4).permute(0, 3, 2, 1, 4).reshape(pr, pc)


def _e2m1_codes(v: Tensor) -> Tensor:
    """Round-to-nearest-even onto E2M1 with saturation at 6 (the kernel's cvt.rn.satfinite): codes 0..15.
    Ties go to the even code: at 0.75, 1.75, 3.5 up, at 0.25, 1.25, 2.5, 5 down."""
    a = v.abs()
    code = torch.zeros_like(a, dtype=torch.uint8)
    for m in (0.25, 1.25, 2.5, 5.0):
        code += (a > m).to(torch.uint8)
    for m in (0.75, 1.75, 3.5):
        code += (a >= m).to(torch.uint8)
    return code | (torch.signbit(v).to(torch.uint8) << 3)


def nvfp4_quantize(weight: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(packed uint8 (out, in/2), swizzled E4M3 block scales, fp32 scalar weight_scale_2), following the layout
    contract of ltx-kernels docs/NVFP4.md on a bf16 copy of the weight (ltx-core converts to bf16 first):
    s_t = amax / 2688; s_b = e4m3(min((block_amax / 6) / s_t, 448)); codes = e2m1(w * (1 / (s_t * s_b)))."""
    out_features, in_features = weight.shape
    if in_features % NVFP4_BLOCK:
        raise QuantError(f"nvfp4 needs in_features divisible by {NVFP4_BLOCK}, got {in_features}")
    w = weight.detach().to(torch.bfloat16).to(torch.float32)
    s_t = (w.abs().nan_to_num().amax() / NVFP4_GLOBAL).reshape(())
    blocks = w.reshape(out_features, in_features // NVFP4_BLOCK, NVFP4_BLOCK)
    block_amax = blocks.abs().amax(-1)
    if s_t > 0:
        s_b = torch.clamp((block_amax / E2M1_MAX) / s_t, max=FP8_MAX).to(torch.float8_e4m3fn)
    else:
        s_b = torch.zeros_like(block_amax).to(torch.float8_e4m3fn)
    total = s_t * s_b.to(torch.float32)
    inv = torch.where(total > 0, 1.0 / total, torch.zeros_like(total))
    codes = _e2m1_codes(blocks * inv[..., None]).reshape(out_features, in_features)
    packed = (codes[:, 0::2] << 4) | codes[:, 1::2]  # element 2j in the high nibble
    scales = swizzle_scales(s_b.view(torch.uint8)).view(torch.float8_e4m3fn)
    return packed, scales, s_t.to(torch.float32)


def nvfp4_dequantize(packed: Tensor, block_scales: Tensor, weight_scale_2: Tensor, out_features: int) -> Tensor:
    """fp32 (out, in) from the stored tensors (block scales as float8_e4m3fn or their uint8 bytes)."""
    in_features = packed.shape[1] * 2
    codes = torch.stack((packed >> 4, packed & 0x0F), dim=-1).reshape(out_features, in_features).long()
    values = E2M1_VALUES.to(packed.device)[codes]
    scales = unswizzle_scales(block_scales.view(torch.uint8))[:out_features, : in_features // NVFP4_BLOCK]
    scale = weight_scale_2.to(torch.float32) * scales.view(torch.float8_e4m3fn).to(torch.float32)
    return (values.reshape(out_features, -1, NVFP4_BLOCK) * scale[..., None]).reshape(out_features, in_features)


# ---------------------------------------------------------------------------------------------------------- GGUF

Q = gguf.GGMLQuantizationType
GGUF_FLOAT = {Q.F32: torch.float32, Q.F16: torch.float16, Q.BF16: torch.bfloat16}
GGUF_QUANTIZERS = {Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q4_K, Q.Q5_K, Q.Q6_K}  # what the writer offers


def gguf_sizes(qtype: int) -> tuple[int, int]:
    """(values per block, bytes per block)."""
    try:
        return gguf.GGML_QUANT_SIZES[Q(qtype)]
    except (ValueError, KeyError):
        raise QuantError(f"GGUF tensor type {qtype} is not known to the gguf package "
                         f"{getattr(gguf, '__version__', '')}".rstrip()) from None


def _f16(b: Tensor) -> Tensor:
    return b.contiguous().view(torch.float16).to(torch.float32)


def _nibbles(qs: Tensor, width: int) -> Tensor:
    """(n, k * width) bytes -> (n, k, 2, width): low nibbles of each width-byte chunk, then the high ones."""
    chunks = qs.reshape(qs.shape[0], -1, 1, width)
    return torch.cat((chunks & 0x0F, chunks >> 4), dim=2)


def _bits(x: Tensor, count: int) -> Tensor:
    """(n, bytes) little-endian words -> (n, count) bits 0..count-1, as int."""
    word = torch.zeros(x.shape[0], 1, dtype=torch.int64, device=x.device)
    for i in range(x.shape[1]):
        word |= x[:, i:i + 1].to(torch.int64) << (8 * i)
    return (word >> torch.arange(count, device=x.device)) & 1


def _k_scale_min(scales: Tensor) -> tuple[Tensor, Tensor]:
    """Q4_K / Q5_K: 12 bytes -> 8 six-bit scales and 8 six-bit mins (int)."""
    s = scales.to(torch.int64).reshape(-1, 3, 4)
    d, m, md = s[:, 0], s[:, 1], s[:, 2]
    sc = torch.cat((d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)), dim=-1)
    mn = torch.cat((m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)), dim=-1)
    return sc, mn


def _dq_q8_0(b: Tensor) -> Tensor:
    return b[:, 2:].contiguous().view(torch.int8).to(torch.float32) * _f16(b[:, :2])


def _dq_q4_0(b: Tensor) -> Tensor:
    q = _nibbles(b[:, 2:], 16).reshape(b.shape[0], -1).to(torch.int8) - 8
    return _f16(b[:, :2]) * q.to(torch.float32)


def _dq_q4_1(b: Tensor) -> Tensor:
    q = _nibbles(b[:, 4:], 16).reshape(b.shape[0], -1).to(torch.float32)
    return _f16(b[:, :2]) * q + _f16(b[:, 2:4])


def _q5_values(qh: Tensor, qs: Tensor) -> Tensor:
    low = _nibbles(qs, 16).reshape(qs.shape[0], -1).to(torch.int64)
    return low | (_bits(qh, 32) << 4)


def _dq_q5_0(b: Tensor) -> Tensor:
    q = (_q5_values(b[:, 2:6], b[:, 6:]) - 16).to(torch.int8)
    return _f16(b[:, :2]) * q.to(torch.float32)


def _dq_q5_1(b: Tensor) -> Tensor:
    q = _q5_values(b[:, 4:8], b[:, 8:]).to(torch.float32)
    return _f16(b[:, :2]) * q + _f16(b[:, 2:4])


def _dq_q4_k(b: Tensor) -> Tensor:
    n = b.shape[0]
    sc, mn = _k_scale_min(b[:, 4:16])
    d = (_f16(b[:, :2]) * sc.to(torch.float32)).reshape(n, -1, 1)
    dm = (_f16(b[:, 2:4]) * mn.to(torch.float32)).reshape(n, -1, 1)
    q = _nibbles(b[:, 16:], 32).reshape(n, -1, 32).to(torch.float32)
    return (d * q - dm).reshape(n, QK_K)


def _dq_q5_k(b: Tensor) -> Tensor:
    n = b.shape[0]
    sc, mn = _k_scale_min(b[:, 4:16])
    d = (_f16(b[:, :2]) * sc.to(torch.float32)).reshape(n, -1, 1)
    dm = (_f16(b[:, 2:4]) * mn.to(torch.float32)).reshape(n, -1, 1)
    qh = b[:, 16:48].to(torch.int64).reshape(n, 1, 32) >> torch.arange(8, device=b.device).reshape(1, 8, 1)
    low = _nibbles(b[:, 48:], 32).reshape(n, -1, 32).to(torch.int64)
    q = (low | ((qh & 1) << 4)).to(torch.float32)
    return (d * q - dm).reshape(n, QK_K)


def _dq_q6_k(b: Tensor) -> Tensor:
    n = b.shape[0]
    ql, qh, scales, d = b[:, :128], b[:, 128:192], b[:, 192:208], b[:, 208:210]
    d = (_f16(d) * scales.contiguous().view(torch.int8).to(torch.float32)).reshape(n, QK_K // 16, 1)
    low = _nibbles(ql, 64).reshape(n, -1, 32).to(torch.int64)
    high = (qh.to(torch.int64).reshape(n, -1, 1, 32) >> torch.tensor([0, 2, 4, 6], device=b.device).reshape(
        1, 1, 4, 1)) & 3
    q = ((low | (high.reshape(n, -1, 32) << 4)) - 32).reshape(n, QK_K // 16, -1).to(torch.float32)
    return (d * q).reshape(n, QK_K)


_DEQUANT = {Q.Q8_0: _dq_q8_0, Q.Q4_0: _dq_q4_0, Q.Q4_1: _dq_q4_1, Q.Q5_0: _dq_q5_0, Q.Q5_1: _dq_q5_1,
            Q.Q4_K: _dq_q4_k, Q.Q5_K: _dq_q5_k, Q.Q6_K: _dq_q6_k}
_numpy_fallback_noted: set[int] = set()


def gguf_dequantize(raw: Tensor, qtype: int, shape: tuple[int, ...]) -> Tensor:
    """fp32 tensor of `shape` from a GGUF tensor's stored data (uint8 bytes, or the float tensor itself)."""
    qtype = Q(qtype)
    if qtype in GGUF_FLOAT:
        return raw.contiguous().view(torch.uint8).view(GGUF_FLOAT[qtype]).to(torch.float32).reshape(shape)
    block, size = gguf_sizes(qtype)
    blocks = raw.contiguous().view(torch.uint8).reshape(-1, size)
    if qtype in _DEQUANT:
        return _DEQUANT[qtype](blocks).reshape(shape)
    if qtype not in _numpy_fallback_noted:
        _numpy_fallback_noted.add(qtype)
        print(f"gguf: {qtype.name} is dequantized by the gguf package (numpy, on the CPU): slow")
    out = gguf.quants.dequantize(blocks.cpu().numpy(), qtype)
    return torch.from_numpy(np.ascontiguousarray(out)).to(raw.device).reshape(shape)


def _pack_k_scales(sc: Tensor, mn: Tensor) -> Tensor:
    """Inverse of `_k_scale_min`: 8 six-bit scales and mins (n, 8) -> 12 bytes (n, 12)."""
    lo_d = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    lo_m = mn[:, :4] | ((mn[:, 4:] >> 4) << 6)
    md = (sc[:, 4:] & 0x0F) | ((mn[:, 4:] & 0x0F) << 4)
    return torch.cat((lo_d, lo_m, md), dim=1).to(torch.uint8)


def _pack_nibbles(q: Tensor, width: int) -> Tensor:
    """Inverse of `_nibbles`: (n, k, 2, width) values 0..15 -> (n, k * width) bytes."""
    return (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(q.shape[0], -1).to(torch.uint8)


def _fit_min_max(x: Tensor, levels: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """K-quant super-block fit, x (n, 8, 32): sub-block scale = range / levels and offset = -min (min <= 0),
    both as 6-bit multiples of the fp16 super scales d, dmin. Returns (d, dmin, sc, mn, q)."""
    lo = x.amin(-1).clamp(max=0)
    hi = x.amax(-1)
    sub_scale, sub_min = (hi - lo) / levels, -lo
    d = (sub_scale.amax(-1) / 63).to(torch.float16).to(torch.float32)
    dmin = (sub_min.amax(-1) / 63).to(torch.float16).to(torch.float32)
    sc = torch.where(d[:, None] > 0, torch.round(sub_scale / d[:, None]), 0).clamp(0, 63)
    mn = torch.where(dmin[:, None] > 0, torch.round(sub_min / dmin[:, None]), 0).clamp(0, 63)
    eff_scale, eff_min = d[:, None] * sc, dmin[:, None] * mn
    q = torch.where(eff_scale[..., None] > 0, torch.round((x + eff_min[..., None]) / eff_scale[..., None]), 0)
    return d, dmin, sc.to(torch.int64), mn.to(torch.int64), q.clamp(0, levels).to(torch.int64)


def _f16_bytes(v: Tensor) -> Tensor:
    return v.to(torch.float16).reshape(-1, 1).view(torch.uint8)


def _q_q4_k(x: Tensor) -> Tensor:
    n = x.shape[0]
    d, dmin, sc, mn, q = _fit_min_max(x.reshape(n, 8, 32), 15)
    qs = _pack_nibbles(q.reshape(n, 4, 2, 32), 32)
    return torch.cat((_f16_bytes(d), _f16_bytes(dmin), _pack_k_scales(sc, mn), qs), dim=1)


def _q_q5_k(x: Tensor) -> Tensor:
    n = x.shape[0]
    d, dmin, sc, mn, q = _fit_min_max(x.reshape(n, 8, 32), 31)
    qs = _pack_nibbles((q & 0x0F).reshape(n, 4, 2, 32), 32)
    qh = (((q >> 4) & 1) << torch.arange(8).reshape(1, 8, 1)).sum(1).to(torch.uint8)  # bit j: sub-block j
    return torch.cat((_f16_bytes(d), _f16_bytes(dmin), _pack_k_scales(sc, mn), qh, qs), dim=1)


def _q_q6_k(x: Tensor) -> Tensor:
    n = x.shape[0]
    groups = x.reshape(n, 16, 16)
    group_scale = groups.abs().amax(-1) / 31  # q in [-31, 31] (the code range is [-32, 31])
    d = (group_scale.amax(-1) / 127).to(torch.float16).to(torch.float32)
    sc = torch.where(d[:, None] > 0, torch.round(group_scale / d[:, None]), 0).clamp(-128, 127)
    eff = (d[:, None] * sc)[..., None]
    q = (torch.where(eff > 0, torch.round(groups / eff), 0).clamp(-32, 31) + 32).to(torch.int64).reshape(n, 256)
    v = q.reshape(n, 2, 4, 32)  # value index h * 128 + k * 32 + i
    low = (v & 0x0F).reshape(n, 2, 2, 2, 32)  # (h, s = k // 2, k % 2, i): byte h * 64 + (k % 2) * 32 + i, nibble s
    ql = (low[:, :, 0] | (low[:, :, 1] << 4)).reshape(n, 128)
    qh = ((v >> 4) << torch.tensor([0, 2, 4, 6]).reshape(1, 1, 4, 1)).sum(2).reshape(n, 64)
    return torch.cat((ql.to(torch.uint8), qh.to(torch.uint8), sc.to(torch.int8).view(torch.uint8), _f16_bytes(d)),
                     dim=1)


_QUANT_K = {Q.Q4_K: _q_q4_k, Q.Q5_K: _q_q5_k, Q.Q6_K: _q_q6_k}


def gguf_quantize(weight: Tensor, qtype: int) -> Tensor:
    """uint8 blocks (numel / block, bytes per block) of a float tensor whose numel is a multiple of the block."""
    qtype = Q(qtype)
    block, _ = gguf_sizes(qtype)
    x = weight.detach().to(torch.float32).cpu().reshape(-1, block)
    if qtype in _QUANT_K:
        return _QUANT_K[qtype](x)
    if qtype not in GGUF_QUANTIZERS:
        raise QuantError(f"writing GGUF {qtype.name} is not supported; choose one of "
                         f"{sorted(t.name for t in GGUF_QUANTIZERS)}")
    return torch.from_numpy(np.ascontiguousarray(gguf.quants.quantize(x.numpy(), qtype)))
