"""ltx.core.quant codecs against their references, bitwise: ltx-core 1.0.0's FP8 per-tensor quantization, the gguf
package's dequantization (files written by gguf's own GGUFWriter, read back by its GGUFReader), and an NVFP4
reference written here from ltx-kernels' docs/NVFP4.md (loops over the documented offsets, independent of the
vectorised code); detection of each layout and one-line errors for unknown and corrupt ones."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import torch
from ltx_core.quantization.fp8_scaled_mm import quantize_weight_to_fp8_per_tensor
from safetensors.torch import save_file

from ltx.core.checkpoint import CheckpointError, TensorInfo
from ltx.core.quant import QuantError, detect, read_gguf, write_gguf
from ltx.core.quant import formats as fm

Q = gguf.GGMLQuantizationType
ALL_DECODED = [Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K]
FP16_FIELDS = {Q.Q8_0: [0], Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q2_K: [80, 82],
               Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208]}  # byte offsets of fp16 scales


def random_blocks(qtype, n: int, seed: int) -> np.ndarray:
    """Random valid blocks: random bytes with the fp16 scale fields set to finite values."""
    rng = np.random.default_rng(seed)
    _, size = gguf.GGML_QUANT_SIZES[qtype]
    b = rng.integers(0, 256, (n, size), dtype=np.uint8)
    for off in FP16_FIELDS[qtype]:
        b[:, off:off + 2] = rng.uniform(-0.05, 0.05, n).astype(np.float16).view(np.uint8).reshape(n, 2)
    return b


def test_fp8_quantization_is_ltx_core_bitwise():
    w = torch.randn(48, 80) * 0.03
    q, scale = fm.fp8_quantize(w)
    ref_q, ref_scale = quantize_weight_to_fp8_per_tensor(w)  # 1.0.0 returns the (in, out) transpose
    assert torch.equal(q.view(torch.uint8), ref_q.t().contiguous().view(torch.uint8))
    assert torch.equal(scale, ref_scale)
    assert torch.equal(fm.fp8_dequantize(q, scale), ref_q.t().to(torch.float32) * ref_scale)  # ltx-core's formula


def test_gguf_files_from_gguf_writer_decode_bitwise(tmp_path):
    path = tmp_path / "blocks.gguf"
    writer = gguf.GGUFWriter(path, arch="ltxv")
    blocks = {}
    for i, qt in enumerate(ALL_DECODED):
        block, size = gguf.GGML_QUANT_SIZES[qt]
        blocks[qt] = random_blocks(qt, 12, i).reshape(4, 3 * size)  # (out 4, in 3 blocks)
        writer.add_tensor(f"transformer_blocks.0.t{qt.name}.weight", blocks[qt], raw_dtype=qt)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    f = read_gguf(path)
    for qt, raw in blocks.items():
        key = f"transformer_blocks.0.t{qt.name}.weight"
        block, _ = gguf.GGML_QUANT_SIZES[qt]
        ours = fm.gguf_dequantize(f.get(key), f.infos[key].qtype, (4, 3 * block))
        ref = torch.from_numpy(gguf.quants.dequantize(raw, qt))
        assert ours.view(torch.int32).equal(ref.view(torch.int32)), qt.name
    assert detect(path).layout == "gguf"


@pytest.mark.parametrize("qtype, bound", [(Q.Q8_0, 0.01), (Q.Q4_0, 0.12), (Q.Q5_0, 0.06), (Q.Q4_K, 0.11),
                                          (Q.Q5_K, 0.06), (Q.Q6_K, 0.03)])
def test_our_gguf_writer_round_trips_through_gguf_reader(tmp_path, qtype, bound):
    """write_gguf -> gguf.GGUFReader: the same block bytes our quantizer made; decoded as gguf decodes them; the
    quantization error bounded (relative Frobenius error of a normal weight; Q8_0 is ggml's own quantizer)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(40, 512, generator=g)
    infos = {"transformer_blocks.0.ff.net.2.weight": TensorInfo(torch.float32, (40, 512)),
             "transformer_blocks.0.ff.net.2.bias": TensorInfo(torch.float32, (40,)),
             "transformer_blocks.0.scale_shift_table": TensorInfo(torch.float32, (6, 512))}
    tensors = {"transformer_blocks.0.ff.net.2.weight": w, "transformer_blocks.0.ff.net.2.bias": torch.randn(40),
               "transformer_blocks.0.scale_shift_table": torch.randn(6, 512)}
    path = write_gguf(tmp_path / "w.gguf", infos, tensors.__getitem__, ["transformer_blocks.0.ff.net.2"], qtype,
                      strings={"ltx.family": "ltxv"})
    reader = gguf.GGUFReader(path)
    t = {x.name: x for x in reader.tensors}
    ours = fm.gguf_quantize(w, qtype)
    assert t["transformer_blocks.0.ff.net.2.weight"].tensor_type == qtype
    assert np.array_equal(np.asarray(t["transformer_blocks.0.ff.net.2.weight"].data).reshape(-1), ours.numpy().ravel())
    assert t["transformer_blocks.0.scale_shift_table"].tensor_type == Q.F32  # ComfyUI-GGUF's high-precision rule
    decoded = fm.gguf_dequantize(ours, qtype, (40, 512))
    assert torch.equal(decoded, torch.from_numpy(gguf.quants.dequantize(ours.numpy(), qtype)).reshape(40, 512))
    assert ((decoded - w).norm() / w.norm()) < bound
    if qtype == Q.Q8_0:  # the gguf package's quantizer is ggml's, bit for bit
        assert np.array_equal(ours.numpy().ravel(), gguf.quants.quantize(w.numpy(), qtype).ravel())


def _swizzle_reference(scales: torch.Tensor) -> torch.Tensor:
    """docs/NVFP4.md, literally: offset = tile*512 + (row%32)*16 + ((row%128)/32)*4 + col%4."""
    rows, cols = scales.shape
    pr, pc = -(-rows // 128) * 128, -(-cols // 4) * 4
    out = torch.zeros(pr * pc, dtype=scales.dtype)
    for r in range(rows):
        for c in range(cols):
            tile = (r // 128) * (pc // 4) + c // 4
            out[tile * 512 + (r % 32) * 16 + ((r % 128) // 32) * 4 + c % 4] = scales[r, c]
    return out.reshape(pr, pc)


def _nvfp4_reference(packed, scales, scale_2, out_features):
    """Per element: e2m1(code) * (scale_2 * e4m3(block scale)); element 2j in the high nibble of byte j."""
    table = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
    in_features = packed.shape[1] * 2
    cols = in_features // 16
    pc = scales.shape[1]
    flat = scales.reshape(-1)
    out = torch.empty(out_features, in_features)
    for r in range(out_features):
        for j in range(in_features):
            byte = int(packed[r, j // 2])
            code = byte >> 4 if j % 2 == 0 else byte & 15
            v = torch.tensor(-table[code - 8] if code >= 8 else table[code], dtype=torch.float32)
            c = j // 16
            off = ((r // 128) * (pc // 4) + c // 4) * 512 + (r % 32) * 16 + ((r % 128) // 32) * 4 + c % 4
            s = scale_2 * flat[off:off + 1].view(torch.float8_e4m3fn).to(torch.float32)[0]
            out[r, j] = v * s
    assert cols == in_features // 16
    return out


def test_nvfp4_hand_made_layout_decodes_bitwise():
    g = torch.Generator().manual_seed(3)
    out_f, in_f = 130, 32  # two row tiles, one (padded) column tile
    packed = torch.randint(0, 256, (out_f, in_f // 2), generator=g, dtype=torch.uint8)
    block = torch.rand(out_f, in_f // 16, generator=g).mul(3).add(0.01).to(torch.float8_e4m3fn).view(torch.uint8)
    scales = _swizzle_reference(block)
    assert torch.equal(fm.swizzle_scales(block), scales)
    scale_2 = torch.tensor(0.0123, dtype=torch.float32)
    ours = fm.nvfp4_dequantize(packed, scales.view(torch.float8_e4m3fn), scale_2, out_f)
    assert ours.view(torch.int32).equal(_nvfp4_reference(packed, scales, scale_2, out_f).view(torch.int32))
    one = fm.nvfp4_dequantize(torch.tensor([[0x2A] * 8]), fm.swizzle_scales(torch.full((1, 1), 0x38,
                              dtype=torch.uint8)), torch.tensor(1.0), 1)  # 0x38 = e4m3 1.0
    assert one[0, :2].tolist() == [1.0, -1.0]  # high nibble 2 (+1.0) first, low nibble 0xA (-1.0) second


def test_nvfp4_quantize_follows_the_contract():
    w = torch.randn(64, 96)
    packed, scales, s_t = fm.nvfp4_quantize(w)
    assert packed.shape == (64, 48) and scales.shape == (128, 8) and scales.dtype == torch.float8_e4m3fn
    assert s_t == w.bfloat16().float().abs().amax() / 2688  # of the bf16 copy, as ltx-core converts first
    back = fm.nvfp4_dequantize(packed, scales, s_t, 64)
    block_scale = fm.unswizzle_scales(scales.view(torch.uint8))[:64, :6].view(torch.float8_e4m3fn).float()
    # each value of the bf16 copy it quantizes is within half an E2M1 gap (<= 1 at the top of the range) times
    # its block's scale, or saturates at 6 with a block scale rounded at most 1/16 low (<= 0.375)
    step = (s_t * block_scale).repeat_interleave(16, dim=1)
    assert ((back - w.bfloat16().float()).abs() <= step * 1.0 + 1e-7).all()
    assert ((back - w).norm() / w.norm()) < 0.12


def _write(path, tensors, metadata=None):
    save_file(tensors, str(path), metadata=metadata)
    return path


def test_detection_of_each_layout_and_one_line_errors(tmp_path):
    w8, s = fm.fp8_quantize(torch.randn(16, 16))
    one = torch.ones(())
    base = {"m.transformer_blocks.1.attn1.to_q.bias": torch.zeros(16)}
    q = "m.transformer_blocks.1.attn1.to_q"
    scaled = {**base, f"{q}.weight": w8, f"{q}.weight_scale": s, f"{q}.input_scale": one}
    assert detect(_write(tmp_path / "a.safetensors", scaled)).layout == "fp8-scaled"
    legacy = {**base, "m.scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn),
              "m.transformer_blocks.1.attn1.to_q.weight": w8, "m.transformer_blocks.1.attn1.to_q.scale_weight": s}
    assert detect(_write(tmp_path / "b.safetensors", legacy)).layout == "fp8-comfy"
    meta = {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": {
        "m.transformer_blocks.1.attn1.to_q": {"format": "float8_e4m3fn"}}})}
    assert detect(_write(tmp_path / "c.safetensors", scaled, meta)).layout == "fp8-comfy"
    cast = {**base, "m.transformer_blocks.1.attn1.to_q.weight": w8}
    assert detect(_write(tmp_path / "d.safetensors", cast)).layout == "fp8-cast"
    p, sc, s2 = fm.nvfp4_quantize(torch.randn(16, 32))
    nv = {"l.weight": p, "l.weight_scale": sc, "l.weight_scale_2": s2, "l.input_scale": one}
    assert detect(_write(tmp_path / "e.safetensors", nv)).layout == "nvfp4"
    assert detect(_write(tmp_path / "f.safetensors", {"l.weight": torch.randn(4, 4)})).layout == "none"
    unknown = {"l.weight": w8, "l.weight_scale": torch.ones(16, 1)}  # per-channel FP8: not a layout read here
    with pytest.raises(QuantError, match=r"unknown quantized layout: an F8 weight with a float32 scale of shape "
                                         r"\(16, 1\).*supported: fp8-scaled") as e:
        detect(_write(tmp_path / "g.safetensors", unknown))
    assert "\n" not in str(e.value)
    with pytest.raises(QuantError, match="unknown quantized layout: a int8 Linear weight"):
        detect(_write(tmp_path / "h.safetensors", {"l.weight": torch.zeros(4, 4, dtype=torch.int8)}))
    bad_meta = {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": {"x": {"format": "fp8"}}})}
    with pytest.raises(QuantError, match="unknown quantized layout: _quantization_metadata formats"):
        detect(_write(tmp_path / "i.safetensors", scaled, bad_meta))
    corrupt = tmp_path / "j.safetensors"
    corrupt.write_bytes((tmp_path / "a.safetensors").read_bytes()[:-40])  # truncated download
    with pytest.raises(CheckpointError, match="truncated"):
        detect(corrupt)
    (tmp_path / "k.gguf").write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 20)
    with pytest.raises(QuantError, match="not a readable GGUF file"):
        detect(tmp_path / "k.gguf")
