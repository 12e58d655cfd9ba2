"""LTX-2 LoRA fusion vs ltx-core's apply_loras (bf16, bitwise), the fp32 closed form, and bad files."""

from __future__ import annotations

import ltx2_tiny
import pytest
import torch
from safetensors.torch import save_file

from ltx.core.checkpoint import CheckpointError
from ltx.ltx2.lora import fuse_loras, read_lora
from ltx.ltx2.transformer import AVTransformer, AVTransformerConfig

TARGETS = ("transformer_blocks.0.attn1.to_q", "transformer_blocks.1.audio_to_video_attn.to_out.0",
           "transformer_blocks.0.audio_ff.net.2", "transformer_blocks.1.ff.net.0.proj")


def _model(dtype=torch.float32) -> AVTransformer:
    cfg = AVTransformerConfig.from_metadata(ltx2_tiny.TRANSFORMER["19b"])
    return ltx2_tiny.randomize(AVTransformer(cfg), seed=0).to(dtype)


def _lora_file(path, model, rank: int, seed: int, prefix: str = "diffusion_model.", dtype=torch.bfloat16):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    mods = dict(model.named_modules())
    for name in TARGETS:
        out_f, in_f = mods[name].weight.shape
        sd[f"{prefix}{name}.lora_A.weight"] = (torch.randn(rank, in_f, generator=g) * 0.1).to(dtype)
        sd[f"{prefix}{name}.lora_B.weight"] = (torch.randn(out_f, rank, generator=g) * 0.1).to(dtype)
    save_file(sd, str(path), metadata={"reference_downscale_factor": "2"})
    return path


def test_fuse_matches_reference_apply_loras_bf16(tmp_path):
    from ltx_core.loader.fuse_loras import apply_loras
    from ltx_core.loader.primitives import LoraStateDictWithStrength, StateDict

    model = _model(torch.bfloat16)
    files = [_lora_file(tmp_path / "a.safetensors", model, 4, 1), _lora_file(tmp_path / "b.safetensors", model, 8, 2)]
    loras = [(read_lora(f), s) for f, s in zip(files, (0.8, -0.5))]
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def sd(d):
        return StateDict(d, torch.device("cpu"), 0, {torch.bfloat16})

    def lora_sd(lora):  # our key -> the reference's (prefix stripped, as its ComfyUI renaming map does)
        return sd({f"{k}.lora_{n}.weight": t for k, (a, b) in lora.pairs.items() for n, t in (("A", a), ("B", b))})

    refs = [LoraStateDictWithStrength(lora_sd(lora), s) for lora, s in loras]
    want = apply_loras(sd(before), refs).sd
    assert fuse_loras(model, loras) == len(TARGETS)
    got = model.state_dict()
    changed = [k for k in got if not torch.equal(got[k], before[k])]
    assert sorted(changed) == sorted(f"{t}.weight" for t in TARGETS)
    for k in got:
        assert torch.equal(got[k], want[k]), k
    assert loras[0][0].reference_downscale_factor == 2 and loras[1][0].rank == 8


@pytest.mark.parametrize("prefix", ["diffusion_model.", "transformer.", ""])
def test_fuse_fp32_closed_form(tmp_path, prefix):
    model = _model()
    lora = read_lora(_lora_file(tmp_path / "a.safetensors", model, 4, 3, prefix, torch.float32))
    w0 = dict(model.named_modules())[TARGETS[0]].weight.clone()
    fuse_loras(model, [(lora, 0.7)])
    a, b = lora.pairs[TARGETS[0]]
    assert torch.allclose(dict(model.named_modules())[TARGETS[0]].weight, w0 + 0.7 * b @ a, atol=1e-7)


def test_bad_loras(tmp_path):
    model = _model()
    with pytest.raises(CheckpointError, match="no LoRA tensors"):
        save_file({"x.weight": torch.zeros(2, 2)}, str(tmp_path / "n.safetensors"))
        read_lora(tmp_path / "n.safetensors")
    save_file({"diffusion_model.foo.lora_A.weight": torch.zeros(2, 4)}, str(tmp_path / "half.safetensors"))
    with pytest.raises(CheckpointError, match="has only"):
        read_lora(tmp_path / "half.safetensors")
    save_file({"diffusion_model.nope.lora_A.weight": torch.zeros(2, 4),
               "diffusion_model.nope.lora_B.weight": torch.zeros(4, 2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not Linear layers"):
        fuse_loras(model, [(read_lora(tmp_path / "other.safetensors"), 1.0)])
    t = TARGETS[0]
    save_file({f"diffusion_model.{t}.lora_A.weight": torch.zeros(2, 5),
               f"diffusion_model.{t}.lora_B.weight": torch.zeros(16, 2)}, str(tmp_path / "shape.safetensors"))
    with pytest.raises(CheckpointError, match="shapes do not fit"):
        fuse_loras(model, [(read_lora(tmp_path / "shape.safetensors"), 1.0)])
