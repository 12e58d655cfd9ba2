"""LTX-2 LoRAs through the shared engine: fusion vs ltx-core's apply_loras (bf16, bitwise), the fp32 closed form,
the no-alpha policy, adapters injected into the AVTransformer (unmerged ~ fused, merged = fused bit for bit), and
bad files."""

from __future__ import annotations

import copy

import ltx2_tiny
import pytest
import torch
from safetensors.torch import save_file

from ltx.core import lora as engine
from ltx.core.checkpoint import CheckpointError
from ltx.core.lora import (
    LoRAConfig,
    LoRALinear,
    apply_lora_weights,
    inject_lora,
    lora_parameters,
    merge_lora,
    remove_lora,
    save_lora,
)
from ltx.ltx2.lora import check_lora, fuse_loras, read_lora
from ltx.ltx2.transformer import AVTransformer, AVTransformerConfig, StreamInput

TARGETS = ("transformer_blocks.0.attn1.to_q", "transformer_blocks.1.audio_to_video_attn.to_out.0",
           "transformer_blocks.0.audio_ff.net.2", "transformer_blocks.1.ff.net.0.proj")


def _model(dtype=torch.float32) -> AVTransformer:
    cfg = AVTransformerConfig.from_metadata(ltx2_tiny.TRANSFORMER["19b"])
    return ltx2_tiny.randomize(AVTransformer(cfg), seed=0).to(dtype)


def _lora_file(path, model, rank: int, seed: int, prefix: str = "diffusion_model.", dtype=torch.bfloat16,
               alpha: float | None = None):
    """An official-style LTX-2 LoRA file over TARGETS (with `.alpha` tensors, as ComfyUI writes, if `alpha`)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    mods = dict(model.named_modules())
    for name in TARGETS:
        out_f, in_f = mods[name].weight.shape
        sd[f"{prefix}{name}.lora_A.weight"] = (torch.randn(rank, in_f, generator=g) * 0.1).to(dtype)
        sd[f"{prefix}{name}.lora_B.weight"] = (torch.randn(out_f, rank, generator=g) * 0.1).to(dtype)
        if alpha is not None:
            sd[f"{prefix}{name}.alpha"] = torch.tensor(alpha)
    save_file(sd, str(path), metadata={"reference_downscale_factor": "2"})
    return path


def _inputs(model: AVTransformer, seed: int = 1) -> tuple[StreamInput, StreamInput]:
    """Video (2 x 2 x 2 latent grid) and audio (5 tokens) streams, batch 2, with text."""
    g = torch.Generator().manual_seed(seed)
    dtype = model.patchify_proj.weight.dtype

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(dtype)

    f, h, w = (t.flatten().float() for t in torch.meshgrid(*map(torch.arange, (2, 2, 2)), indexing="ij"))
    video_pos = torch.stack([torch.stack([f / 3, (f + 1) / 3], -1), torch.stack([h * 32, h * 32 + 32], -1),
                             torch.stack([w * 32, w * 32 + 32], -1)])[None].expand(2, -1, -1, -1)
    i = torch.arange(5).float()
    audio_pos = torch.stack([i * 0.04, i * 0.04 + 0.04], -1)[None, None].expand(2, 1, -1, -1)
    sigma = torch.tensor([0.7, 0.4])
    text = model.caption_projection.linear_1.in_features, model.audio_caption_projection.linear_1.in_features
    video = StreamInput(rnd(2, 8, model.cfg.in_channels), sigma[:, None].expand(2, 8), sigma, video_pos.to(dtype),
                        rnd(2, 3, text[0]))
    audio = StreamInput(rnd(2, 5, model.cfg.audio_in_channels), sigma[:, None].expand(2, 5), sigma, audio_pos,
                        rnd(2, 3, text[1]))
    return video, audio


def _forward(model: AVTransformer) -> torch.Tensor:
    with torch.no_grad():
        video, audio = model(*_inputs(model))
    return torch.cat([video.flatten(), audio.flatten()])


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
        return sd(dict(lora.tensors))

    refs = [LoraStateDictWithStrength(lora_sd(lora), s) for lora, s in loras]
    want = apply_loras(sd(before), refs).sd
    assert fuse_loras(model, loras) == len(TARGETS)
    got = model.state_dict()
    changed = [k for k in got if not torch.equal(got[k], before[k])]
    assert sorted(changed) == sorted(f"{t}.weight" for t in TARGETS)
    for k in got:
        assert torch.equal(got[k], want[k]), k
    assert loras[0][0].reference_downscale_factor == 2 and set(loras[1][0].rank.values()) == {8}
    assert engine.reference_downscale([lora for lora, _ in loras]) == 2


@pytest.mark.parametrize("prefix", ["diffusion_model.", "transformer.", ""])
def test_fuse_fp32_closed_form(tmp_path, prefix):
    model = _model()
    lora = read_lora(_lora_file(tmp_path / "a.safetensors", model, 4, 3, prefix, torch.float32))
    w0 = dict(model.named_modules())[TARGETS[0]].weight.clone()
    fuse_loras(model, [(lora, 0.7)])
    a, b = (lora.tensors[f"{TARGETS[0]}.lora_{x}.weight"] for x in "AB")
    assert torch.allclose(dict(model.named_modules())[TARGETS[0]].weight, w0 + 0.7 * b @ a, atol=1e-7)


def test_alpha_is_ignored_as_ltx_core_does(tmp_path):
    """A file with `.alpha` tensors (ComfyUI layout): LTX-2 reads alpha = rank (ltx-core ignores alpha); the
    engine's default policy applies it."""
    model = _model()
    path = _lora_file(tmp_path / "a.safetensors", model, 4, 3, dtype=torch.float32, alpha=2.0)
    lora = read_lora(path)
    assert lora.format == "comfy" and set(lora.alpha.values()) == {4.0}
    assert set(engine.read_lora(path).alpha.values()) == {2.0}
    plain = read_lora(_lora_file(tmp_path / "b.safetensors", model, 4, 3, dtype=torch.float32))
    fused, fused_plain = copy.deepcopy(model), copy.deepcopy(model)
    fuse_loras(fused, [(lora, 0.7)])
    fuse_loras(fused_plain, [(plain, 0.7)])
    assert all(torch.equal(a, b) for a, b in zip(fused.state_dict().values(), fused_plain.state_dict().values()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_adapters_on_the_av_transformer_merge_to_the_fused_weights(tmp_path, dtype):
    """An LTX-2 LoRA as adapters on the AVTransformer's Linears: unmerged gives the fused model's output (fp32,
    to rounding), merged gives exactly the fused weights (one LoRA: the same arithmetic), and removing the adapters
    leaves the fused model's state dict."""
    model = _model(dtype)
    lora = read_lora(_lora_file(tmp_path / "a.safetensors", model, 4, 3, dtype=dtype))
    fused = copy.deepcopy(model)
    fuse_loras(fused, [(lora, 0.7)])
    adapted = copy.deepcopy(model)
    apply_lora_weights(adapted, lora, "ltx2", 0.7)
    assert sum(isinstance(m, LoRALinear) for m in adapted.modules()) == len(TARGETS)
    if dtype == torch.float32:
        want = _forward(fused)
        assert (want - _forward(model)).abs().max() > 1e-3  # the LoRA acts
        torch.testing.assert_close(_forward(adapted), want, atol=1e-5 * want.abs().max().item(), rtol=0)
    merge_lora(adapted)
    remove_lora(adapted)
    got, want = adapted.state_dict(), fused.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_trained_adapters_round_trip_through_an_ltx2_file(tmp_path):
    """Adapters injected by name pattern into the AVTransformer (as training does), saved in the trainer layout,
    read back under the LTX-2 policy and fused: the same model as merging the adapters."""
    model = _model()
    names = inject_lora(model, LoRAConfig(rank=2, targets=("attn1.to_q", "audio_attn1.to_v", "audio_ff.net.2")),
                        generator=torch.Generator().manual_seed(0))
    assert names == [f"transformer_blocks.{i}.{m}" for i in range(2)
                     for m in ("attn1.to_q", "audio_attn1.to_v", "audio_ff.net.2")]
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in lora_parameters(model):
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    path = save_lora(tmp_path / "trained.safetensors", model, format="trainer")
    base = copy.deepcopy(model)
    remove_lora(base)  # nothing merged: the base weights
    lora = read_lora(path)
    check_lora(base, lora)
    fuse_loras(base, [(lora, 1.0)])
    merge_lora(model)
    remove_lora(model)
    got, want = model.state_dict(), base.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_bad_loras(tmp_path):
    model = _model()
    with pytest.raises(CheckpointError, match="no LoRA tensors"):
        save_file({"x.weight": torch.zeros(2, 2)}, str(tmp_path / "n.safetensors"))
        read_lora(tmp_path / "n.safetensors")
    save_file({"diffusion_model.foo.lora_A.weight": torch.zeros(2, 4)}, str(tmp_path / "half.safetensors"))
    with pytest.raises(CheckpointError, match=r"1 modules lack lora_A or lora_B: \['foo'\]"):
        read_lora(tmp_path / "half.safetensors")
    save_file({"diffusion_model.nope.lora_A.weight": torch.zeros(2, 4),
               "diffusion_model.nope.lora_B.weight": torch.zeros(4, 2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="LoRA keys name no Linear module of this model"):
        fuse_loras(model, [(read_lora(tmp_path / "other.safetensors"), 1.0)])
    t = TARGETS[0]
    save_file({f"diffusion_model.{t}.lora_A.weight": torch.zeros(2, 5),
               f"diffusion_model.{t}.lora_B.weight": torch.zeros(16, 2)}, str(tmp_path / "shape.safetensors"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="LoRA tensors do not fit this model"):
        fuse_loras(model, [(read_lora(tmp_path / "shape.safetensors"), 1.0)])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # checked before any change
    nan = torch.zeros(16, 2)
    nan[3, 1] = float("nan")
    save_file({f"diffusion_model.{t}.lora_A.weight": torch.zeros(2, 16),
               f"diffusion_model.{t}.lora_B.weight": nan}, str(tmp_path / "nan.safetensors"))
    with pytest.raises(CheckpointError, match=rf"nan.safetensors: {t}.lora_B holds NaN or inf values"):
        read_lora(tmp_path / "nan.safetensors")  # named here, not as a NaN video after sampling
