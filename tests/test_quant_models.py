"""Quantized checkpoints of both families through the normal loaders: a tiny transformer loaded from a quantized file
(Lightricks fp8 made by ltx-core 1.0.0's own quantizer, GGUF made by the gguf package's writer and quantizer as
ComfyUI-GGUF does, and each of our writers' layouts) gives the output of the reference's dequantize-then-run model
(fp32, <= 1e-5); our writers round-trip (write -> read -> the same quantized tensors, bitwise); the weights stay
quantized in memory and on `.to(dtype)`; a bad layout is one line; the 0.9.x demo generates from an fp8 file."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from conftest import TINY
from ltx_core.quantization.fp8_scaled_mm import EXCLUDED_LAYER_SUBSTRINGS, quantize_weight_to_fp8_per_tensor
from safetensors.torch import save_file

import ltx
from ltx.core.checkpoint import CheckpointError, SafetensorsReader
from ltx.core.quant import QuantizedLinear, detect, read_gguf, resident_bytes
from ltx.core.quant import formats as fm
from ltx.ltx2 import checkpoint as ltx2_ckpt
from ltx.ltx2.transformer import AVTransformer, AVTransformerConfig, StreamInput
from ltx.ltxv.checkpoint import checkpoint_from_modules, load_component, write_official
from ltx.ltxv.keys_official import DIT_PREFIX, dit_config_to_official
from ltx.ltxv.transformer import DiT
from tools.convert_weights import main as convert

pytestmark = pytest.mark.usefixtures("one_thread")
CFG = TINY["w64"]  # 2 blocks, width 64: block 0 stays float under the official fp8 rule, block 1 is quantized


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


def randomized(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_((1 + 0.1 * torch.randn(p.shape, generator=g)) if name.endswith("norm.weight") else
                    0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def dit_file(tmp_path_factory):
    dit = randomized(DiT(CFG), 0)
    path = tmp_path_factory.mktemp("q") / "dit.safetensors"
    write_official(checkpoint_from_modules({"dit": dit}), path)
    return path, dit


def dit_inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    t = 2 * 3 * 4
    f, h, w = torch.meshgrid(torch.arange(2.0), torch.arange(3.0) * 32, torch.arange(4.0) * 32, indexing="ij")
    positions = torch.stack([f / 8, h, w]).reshape(1, 3, t)
    return dict(x=torch.randn(1, t, CFG.in_channels, generator=g), sigma=torch.tensor([0.6]),
                context=torch.randn(1, 5, CFG.caption_channels, generator=g), context_mask=torch.ones(1, 5),
                positions=positions)


def reference_run(float_model, dequantized: dict[str, torch.Tensor], inputs, call):
    """The reference's dequantize-then-run: a float copy of the model whose quantized weights are replaced."""
    ref = type(float_model)(float_model.cfg)
    ref.load_state_dict(float_model.state_dict())
    with torch.no_grad():
        for name, w in dequantized.items():
            ref.get_submodule(name).weight.copy_(w)
    return call(ref.eval(), inputs)


def run_dit(model, inputs):
    with torch.no_grad():
        return model(**inputs)


def test_lightricks_fp8_made_by_ltx_core_loads_and_matches(dit_file, tmp_path):
    """ltx-core's quantizer and exclusion list make the file; ours reads it and writes the same bytes."""
    src, dit = dit_file
    sd = {DIT_PREFIX + k: v for k, v in dit.state_dict().items()}
    deq = {}
    for name, m in dit.named_modules():
        if isinstance(m, torch.nn.Linear) and not any(s in name for s in EXCLUDED_LAYER_SUBSTRINGS):
            q, scale = quantize_weight_to_fp8_per_tensor(m.weight.detach())
            sd[f"{DIT_PREFIX}{name}.weight"] = q.t().contiguous()  # 1.0.0 returns (in, out); files hold (out, in)
            sd[f"{DIT_PREFIX}{name}.weight_scale"] = scale
            sd[f"{DIT_PREFIX}{name}.input_scale"] = torch.ones(())
            deq[name] = q.t().to(torch.float32) * scale  # ltx-core's dequantization
    official = tmp_path / "official-fp8.safetensors"
    save_file(sd, str(official), metadata={"config": json.dumps({"transformer": dit_config_to_official(CFG)})})
    assert detect(official).layout == "fp8-scaled" and len(deq) == 10
    loaded = load_component(official, "dit")
    assert sum(isinstance(m, QuantizedLinear) for m in loaded.modules()) == 10
    assert loaded.transformer_blocks[1].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    out = run_dit(loaded, dit_inputs())
    ref = reference_run(dit, deq, dit_inputs(), run_dit)
    assert (out - ref).abs().max() <= 1e-5
    ours = tmp_path / "ours-fp8.safetensors"
    assert convert([str(src), str(ours), "--to", "fp8-scaled"]) == 0
    a, b = SafetensorsReader(official), SafetensorsReader(ours)
    assert sorted(a.keys()) == sorted(b.keys())
    assert all(same_bytes(a.get(k), b.get(k)) for k in a.keys())


@pytest.mark.parametrize("layout", ["fp8-scaled", "fp8-comfy", "fp8-cast", "nvfp4", "gguf-q8_0", "gguf-q4_k",
                                    "gguf-q5_k", "gguf-q6_k"])
def test_our_writers_round_trip_and_load_ltxv(dit_file, tmp_path, layout):
    src, dit = dit_file
    dst = tmp_path / (f"dit.{layout}." + ("gguf" if layout.startswith("gguf") else "safetensors"))
    assert convert([str(src), str(dst), "--to", layout]) == 0
    again = tmp_path / ("again." + dst.suffix.lstrip("."))
    assert convert([str(src), str(again), "--to", layout]) == 0
    loaded = load_component(dst, "dit")
    quant = {n: m for n, m in loaded.named_modules() if isinstance(m, QuantizedLinear)}
    assert quant and all(m.weight.requires_grad is False for m in quant.values())
    # write -> read: the stored tensors are those our quantizer makes from the float weights, bitwise
    f = read_gguf(dst) if layout.startswith("gguf") else SafetensorsReader(dst)
    g = read_gguf(again) if layout.startswith("gguf") else SafetensorsReader(again)
    for name, m in quant.items():
        key = name + ".weight" if layout.startswith("gguf") else DIT_PREFIX + name + ".weight"
        assert same_bytes(m.weight, f.get(key))
        assert same_bytes(f.get(key), g.get(key))  # deterministic
    # the reference dequantization: ltx-core's formula / gguf.quants.dequantize / the documented NVFP4 decode
    deq = {}
    for name, m in quant.items():
        if layout.startswith("gguf"):
            raw = m.weight.numpy()
            deq[name] = torch.from_numpy(gguf.quants.dequantize(raw, m.scheme.qtype)).reshape(m.out_features, -1)
        elif layout == "nvfp4":
            deq[name] = fm.nvfp4_dequantize(m.weight, m.weight_scale, m.weight_scale_2, m.out_features)
        else:
            scale = getattr(m, "weight_scale", None)
            deq[name] = m.weight.to(torch.float32) * (scale if scale is not None else 1.0)
        assert torch.equal(m.dequantized_weight(), deq[name])
    out = run_dit(loaded, dit_inputs())
    assert (out - reference_run(dit, deq, dit_inputs(), run_dit)).abs().max() <= 1e-5
    assert resident_bytes(loaded) < resident_bytes(dit)


def test_gguf_made_by_gguf_writer_the_comfyui_gguf_way(dit_file, tmp_path):
    """A community-style file: gguf.GGUFWriter + gguf.quants.quantize (Q8_0), model.diffusion_model. prefix, no
    ltx fields: the 0.9.x reader takes the config from the shapes."""
    _, dit = dit_file
    path = tmp_path / "comfy.gguf"
    writer = gguf.GGUFWriter(path, arch="ltxv")
    deq = {}
    for k, v in dit.state_dict().items():
        arr = v.numpy()
        if k.endswith(".weight") and v.ndim == 2 and v.numel() > 1024 and v.shape[1] % 32 == 0:
            q = gguf.quants.quantize(arr, Q := gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(DIT_PREFIX + k, q, raw_dtype=Q)
            deq[k[: -len(".weight")]] = torch.from_numpy(gguf.quants.dequantize(q, Q))
        else:
            writer.add_tensor(DIT_PREFIX + k, arr.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    loaded = load_component(path, "dit")
    # no config in the file: the sizes come from the shapes, the head split (not in the shapes) from a preset of
    # those sizes or else 64-wide heads; the weights are the reference's either way
    assert (loaded.cfg.num_layers, loaded.cfg.dim) == (CFG.num_layers, CFG.dim)
    float_model = randomized(DiT(loaded.cfg), 0)
    float_model.load_state_dict(dit.state_dict())
    out = run_dit(loaded, dit_inputs())
    assert (out - reference_run(float_model, deq, dit_inputs(), run_dit)).abs().max() <= 1e-5


def tiny_av() -> AVTransformer:
    cfg = AVTransformerConfig(num_layers=2, num_attention_heads=2, attention_head_dim=16, audio_num_attention_heads=2,
                              audio_attention_head_dim=8, in_channels=32, out_channels=32, audio_in_channels=16,
                              audio_out_channels=16, cross_attention_dim=32, audio_cross_attention_dim=16,
                              caption_channels=24, rope_type="split", frequencies_precision="float64",
                              av_ca_timestep_scale_multiplier=1000.0)
    return randomized(AVTransformer(cfg), 2)


def av_inputs(model):
    g = torch.Generator().manual_seed(3)
    c = model.cfg
    vpos = torch.stack([torch.stack([torch.arange(6.0) / 24, torch.arange(6.0) / 24 + 0.04], -1)] * 3)[None]
    apos = torch.stack([torch.arange(4.0) * 0.04, torch.arange(4.0) * 0.04 + 0.04], -1)[None, None]
    v = StreamInput(x=torch.randn(1, 6, c.in_channels, generator=g), timesteps=torch.full((1, 6), 0.5),
                    sigma=torch.tensor([0.5]), positions=vpos, context=torch.randn(1, 3, 24, generator=g))
    a = StreamInput(x=torch.randn(1, 4, c.audio_in_channels, generator=g), timesteps=torch.full((1, 4), 0.5),
                    sigma=torch.tensor([0.5]), positions=apos, context=torch.randn(1, 3, 24, generator=g))
    return v, a


def run_av(model, inputs):
    with torch.no_grad():
        v, a = model(*inputs)
    return torch.cat([v.reshape(-1), a.reshape(-1)])


@pytest.mark.parametrize("layout", ["fp8-scaled", "nvfp4", "fp8-cast"])
def test_ltx2_quantized_bundle_loads_strictly_and_matches(tmp_path, layout):
    model = tiny_av()
    src = ltx2_ckpt.write_modules(tmp_path / "bundle.safetensors", {"transformer": model})
    dst = tmp_path / f"bundle-{layout}.safetensors"
    assert convert([str(src), str(dst), "--to", layout]) == 0
    loaded = ltx2_ckpt.load(dst, "transformer")["transformer"]
    quant = {n: m for n, m in loaded.named_modules() if isinstance(m, QuantizedLinear)}
    if layout == "nvfp4":  # the official allowlist: 12 video Linears per block, no audio branch
        assert len(quant) == 24 and not any(".audio_attn" in n or ".audio_ff" in n for n in quant)
    deq = {n: m.dequantized_weight() for n, m in quant.items()}
    ref = reference_run(model, deq, av_inputs(model), run_av)
    assert (run_av(loaded, av_inputs(model)) - ref).abs().max() <= 1e-5
    with pytest.raises(CheckpointError, match=r"scale tensors \['input_scale'\] beside a float32 weight"):  # strict
        extra = dict(SafetensorsReader(dst).infos)
        bad = tmp_path / "extra.safetensors"
        r = SafetensorsReader(dst)
        save_file({**{k: r.get(k) for k in extra}, "model.diffusion_model.proj_out.input_scale": torch.ones(())},
                  str(bad), metadata=r.metadata)
        ltx2_ckpt.load(bad, "transformer")


def test_weights_stay_quantized_on_dtype_moves(dit_file, tmp_path):
    src, _ = dit_file
    dst = tmp_path / "fp8.safetensors"
    convert([str(src), str(dst), "--to", "fp8-scaled"])
    m = load_component(dst, "dit", dtype=torch.bfloat16)  # the loader casts only the float tensors
    q = m.transformer_blocks[1].ff.net[2]
    assert q.weight.dtype == torch.float8_e4m3fn and q.weight_scale.dtype == torch.float32
    assert q.bias.dtype == torch.bfloat16 and m.patchify_proj.weight.dtype == torch.bfloat16
    scale = q.weight_scale.clone()
    m.to(torch.float16)
    assert q.weight.dtype == torch.float8_e4m3fn and torch.equal(q.weight_scale, scale)
    assert q.bias.dtype == torch.float16
    assert run_dit(m, {k: v.half() if v.is_floating_point() else v for k, v in dit_inputs().items()}).isfinite().all()


def test_corrupt_quantized_tensors_are_one_line(dit_file, tmp_path, capsys):
    src, _ = dit_file
    dst = tmp_path / "fp8.safetensors"
    convert([str(src), str(dst), "--to", "nvfp4"])
    r = SafetensorsReader(dst)
    key = DIT_PREFIX + "transformer_blocks.1.attn1.to_q.weight"
    sd = {k: r.get(k) for k in r.keys()}
    sd[key] = sd[key][:, :8].contiguous()  # half the packed bytes
    bad = tmp_path / "bad.safetensors"
    save_file(sd, str(bad), metadata=r.metadata)
    with pytest.raises(CheckpointError, match=r"corrupt nvfp4 tensors for transformer_blocks.1.attn1.to_q "
                                              r"\(64x64 Linear\): weight \(64, 8\), expected \(64, 32\)") as e:
        load_component(bad, "dit")
    assert "\n" not in str(e.value)
    assert convert([str(bad), str(tmp_path / "x.safetensors"), "--to", "fp8-scaled"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "corrupt nvfp4" in err


@pytest.mark.slow  # ~25 s on one CPU thread
def test_demo_pipeline_generates_from_an_fp8_file(tmp_path):
    """`ltx.load_pipeline(fp8 file, model="ltx-demo")`: the same video as the float demo whose quantized weights
    are replaced by their dequantization (fp32)."""
    from ltx.core.quant import dequantize_model

    dst = tmp_path / "demo-fp8.safetensors"
    demo = Path(__file__).resolve().parents[1] / "demo" / "ltx-demo.safetensors"
    assert convert([str(demo), str(dst), "--to", "fp8-scaled"]) == 0
    pipe = ltx.load_pipeline(dst, model="ltx-demo")
    assert sum(isinstance(m, QuantizedLinear) for m in pipe.dit.modules()) == 50
    a = pipe("a red circle moves to the left", seed=0, num_inference_steps=2)
    dequantize_model(pipe.dit)  # the reference: plain Linears holding the dequantized weights
    b = pipe("a red circle moves to the left", seed=0, num_inference_steps=2)
    assert (a.frames - b.frames).abs().max() <= 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9),
                    reason="FP8 matmul needs a GPU of compute capability >= 8.9")
def test_fp8_scaled_mm_fast_path_matches_dequantization():
    """The GPU path (ltx-core's activation clamp + torch._scaled_mm) against the dequantize path: equal up to the
    fp8 rounding of the activations (relative Frobenius error < 5%)."""
    from ltx.core.quant.linear import quantized_forward

    lin = torch.nn.Linear(256, 128).cuda().to(torch.bfloat16)
    q = QuantizedLinear.quantize(lin, "fp8_scaled")
    with torch.no_grad():
        q.input_scale.fill_(0.02)
    x = torch.randn(4, 33, 256, device="cuda", dtype=torch.bfloat16)
    fast = q(x)
    QuantizedLinear.fast_path = False
    try:
        slow = quantized_forward(q, x)
    finally:
        QuantizedLinear.fast_path = True
    assert fast.shape == slow.shape == (4, 33, 128)
    assert ((fast.float() - slow.float()).norm() / slow.float().norm()) < 0.05
    x[0, 0, 0] = 1e6  # out of the fp8 range: clamped, never NaN (ltx-core's black-frame fix)
    assert q(x).isfinite().all()
