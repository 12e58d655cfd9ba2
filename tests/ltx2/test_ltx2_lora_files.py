"""LTX-2 LoRA files against the official tools: a LoRA written by `ltx.ltx2.lora.save_lora` and fused by ltx-core's
own loader (SingleGPUModelBuilder + the ComfyUI LoRA renaming, as ltx-pipelines loads `--lora`) into the REFERENCE
transformer gives our output, fused and unfused (alpha != rank included: baked into B); a file in the official
ltx-trainer layout, made the trainer's way (peft `get_peft_model` on the reference transformer, the peft state
dict with `diffusion_model.` for `base_model.model.`, its metadata), loads in ours and gives peft's own output;
the IC-LoRA metadata round trips; target patterns select what the trainer's docs say, peft's way."""

from __future__ import annotations

import copy
import json

import ltx2_tiny
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ltx.core.lora_formats import SafetensorsReader
from ltx.ltx2.checkpoint import load
from ltx.ltx2.lora import (
    LoRAConfig,
    LoRAError,
    apply_lora_weights,
    fuse_loras,
    inject_lora,
    lora_parameters,
    lora_targets,
    read_lora,
    reference_downscale,
    save_lora,
    set_strength,
)
from ltx.ltx2.transformer import AVTransformer, StreamInput

TOL = 1e-5  # fp32, the parity bound of tests/ltx2/test_ltx2_transformer.py
PATTERNS = ("to_q", "audio_to_video_attn.*", "audio_ff.net.2", "attn1.to_out.0", "re:patchify_proj|audio_proj_out")


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """A tiny official 19B file whose transformer is stored in bf16 (ltx-core fuses LoRAs only into bf16 / fp8
    weights; with dtype=float32 it fuses in float32), and our transformer loaded from it in float32."""
    path, _ = ltx2_tiny.official_file(tmp_path_factory.mktemp("ltx2") / "tiny.safetensors", "19b")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    sd = {k: v.to(torch.bfloat16) if k.startswith("model.diffusion_model.") else v for k, v in load_file(path).items()}
    save_file(sd, str(path), metadata=meta)
    return path, load(path, "transformer", dtype=torch.float32)["transformer"]


def reference_with_loras(path, loras: list[tuple[str, float]]) -> torch.nn.Module:
    """The reference transformer built by ltx-core from the file with LoRAs fused, as ltx-pipelines does it, in
    float32. (With LoRAs and no registry, ltx-core's builder casts only the fused weights to `dtype` and leaves the
    others as stored, bf16 here: `.float()` makes those exact float32 copies.)"""
    from ltx_core.loader import LTXV_LORA_COMFY_RENAMING_MAP, SingleGPUModelBuilder
    from ltx_core.model.transformer import LTXV_MODEL_COMFY_RENAMING_MAP
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator

    builder = SingleGPUModelBuilder(model_class_configurator=LTXModelConfigurator, model_path=str(path),
                                    model_sd_ops=LTXV_MODEL_COMFY_RENAMING_MAP)
    for lora, strength in loras:
        builder = builder.lora(str(lora), strength, LTXV_LORA_COMFY_RENAMING_MAP)
    return builder.build(device=torch.device("cpu"), dtype=torch.float32).float().eval()


def inputs(model: AVTransformer, seed: int = 1) -> dict:
    """Video (2 x 2 x 2 latent grid) and audio (5 tokens) streams, batch 2, with text."""
    g = torch.Generator().manual_seed(seed)
    f, h, w = (t.flatten().float() for t in torch.meshgrid(*map(torch.arange, (2, 2, 2)), indexing="ij"))
    video_pos = torch.stack([torch.stack([f / 3, (f + 1) / 3], -1), torch.stack([h * 32, h * 32 + 32], -1),
                             torch.stack([w * 32, w * 32 + 32], -1)])[None].expand(2, -1, -1, -1)
    i = torch.arange(5).float()
    audio_pos = torch.stack([i * 0.04, i * 0.04 + 0.04], -1)[None, None].expand(2, 1, -1, -1)
    sigma = torch.tensor([0.7, 0.4])
    widths = model.caption_projection.linear_1.in_features, model.audio_caption_projection.linear_1.in_features
    return {
        "video": dict(x=torch.randn(2, 8, model.cfg.in_channels, generator=g), timesteps=sigma[:, None].expand(2, 8),
                      sigma=sigma, positions=video_pos, context=torch.randn(2, 3, widths[0], generator=g)),
        "audio": dict(x=torch.randn(2, 5, model.cfg.audio_in_channels, generator=g),
                      timesteps=sigma[:, None].expand(2, 5), sigma=sigma, positions=audio_pos,
                      context=torch.randn(2, 3, widths[1], generator=g)),
    }


def ours(model: AVTransformer, inp: dict) -> torch.Tensor:
    with torch.no_grad():
        v, a = model(StreamInput(**inp["video"]), StreamInput(**inp["audio"]))
    return torch.cat([v.flatten(), a.flatten()])


def reference(model: torch.nn.Module, inp: dict) -> torch.Tensor:
    from ltx_core.model.transformer.modality import Modality

    def modality(d):
        return Modality(latent=d["x"], sigma=d["sigma"], timesteps=d["timesteps"], positions=d["positions"],
                        context=d["context"])

    with torch.no_grad():
        v, a = model(modality(inp["video"]), modality(inp["audio"]), None)
    return torch.cat([v.flatten(), a.flatten()])


def trained(base: AVTransformer, rank: int, alpha: float, seed: int = 4) -> AVTransformer:
    """`base` with random adapters on PATTERNS (as after training)."""
    model = copy.deepcopy(base)
    inject_lora(model, LoRAConfig(rank=rank, alpha=alpha, targets=PATTERNS))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora_parameters(model):
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parity
@pytest.mark.parametrize("fmt,alpha", [("trainer", 4.0), ("comfy", 2.0), ("trainer", 3.0)])
def test_our_file_fused_by_ltx_core_gives_our_output(official, tmp_path, fmt, alpha):
    """Ours unfused (adapters, strength 0.7) = ours fused from the file = ltx-core's loader fusing the file into the
    reference transformer (<= 1e-5 fp32). alpha 2 and 3 with rank 4: written as alpha = rank with B scaled (0.5
    exactly; 0.75 rounds B once in fp32)."""
    path, base = official
    model = trained(base, rank=4, alpha=alpha)
    set_strength(model, "default", 0.7)
    lora = save_lora(tmp_path / "lora.safetensors", model, format=fmt)
    keys = SafetensorsReader(lora).keys()
    assert all(k.startswith("diffusion_model.") for k in keys)
    assert any(k.endswith(".alpha") for k in keys) == (fmt == "comfy")
    if fmt == "comfy":
        assert {float(SafetensorsReader(lora).get(k)) for k in keys if k.endswith(".alpha")} == {4.0}
    assert "diffusion_model.transformer_blocks.1.audio_to_video_attn.to_k.lora_A.weight" in keys
    assert "diffusion_model.transformer_blocks.0.audio_attn1.to_q.lora_B.weight" in keys  # "to_q": every stream

    inp = inputs(base)
    unfused = ours(model, inp)
    fused = copy.deepcopy(base)
    fuse_loras(fused, [(read_lora(lora), 0.7)])
    want = reference(reference_with_loras(path, [(lora, 0.7)]), inp)
    print(f"{fmt} alpha {alpha}: ours fused {(ours(fused, inp) - want).abs().max():.2e}, unfused "
          f"{(unfused - want).abs().max():.2e} (scale {want.abs().max():.2f})")
    assert (want - reference(reference_with_loras(path, []), inp)).abs().max() > 1e-2  # the LoRA acts
    torch.testing.assert_close(ours(fused, inp), want, atol=TOL, rtol=0)
    torch.testing.assert_close(unfused, want, atol=TOL, rtol=0)


@pytest.mark.parity
def test_official_trainer_layout_file_loads_in_ours(official, tmp_path):
    """A file made as ltx-trainer's `_save_checkpoint` makes it: peft on the reference transformer
    (`get_peft_model`, alpha = rank as its configs), `get_peft_model_state_dict`, `base_model.model.` replaced by
    `diffusion_model.`, bf16, the strategy's metadata as strings. Read by ours: the same modules, alpha = rank, the
    IC-LoRA factor, and peft's own output with adapters; fused, ltx-core's loader's output (the bf16 file's deltas
    are computed in bf16 by both, which peft's float32 forward does not)."""
    from peft import LoraConfig, get_peft_model
    from peft.utils import get_peft_model_state_dict

    path, base = official
    ref = reference_with_loras(path, [])
    targets = ["to_k", "to_q", "to_v", "to_out.0", "audio_ff.net.2"]
    peft_model = get_peft_model(ref, LoraConfig(r=8, lora_alpha=8, target_modules=targets, init_lora_weights=True))
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_" in n:  # bf16-exact values: the file is bf16
                p.copy_((0.1 * torch.randn(p.shape, generator=g)).bfloat16().float())
    sd = {k.replace("base_model.model.", "", 1): v for k, v in get_peft_model_state_dict(peft_model).items()}
    sd = {f"diffusion_model.{k}": v.to(torch.bfloat16).contiguous() for k, v in sd.items()}
    meta = {k: str(v) for k, v in {"reference_spatial_scale_factor": 2, "reference_downscale_factor": 2}.items()}
    save_file(sd, str(tmp_path / "lora_weights_step_00010.safetensors"), metadata=meta)

    lora = read_lora(tmp_path / "lora_weights_step_00010.safetensors")
    assert lora.format == "trainer" and set(lora.rank.values()) == {8} and set(lora.alpha.values()) == {8.0}
    assert sorted(lora.modules) == sorted(lora_targets(base, targets))  # peft's selection = ours
    assert lora.reference_downscale_factor == 2 and reference_downscale([lora]) == 2
    inp = inputs(base, seed=2)
    want = reference(peft_model, inp)
    assert (want - ours(base, inp)).abs().max() > 1e-2
    adapted = copy.deepcopy(base)
    apply_lora_weights(adapted, lora)
    torch.testing.assert_close(ours(adapted, inp), want, atol=TOL, rtol=0)
    fused = copy.deepcopy(base)
    fuse_loras(fused, [(lora, 1.0)])
    official_fused = reference(reference_with_loras(path, [(tmp_path / "lora_weights_step_00010.safetensors", 1.0)]),
                               inp)
    print(f"trainer file: ours adapters vs peft {(ours(adapted, inp) - want).abs().max():.2e}, ours fused vs ltx-core "
          f"fused {(ours(fused, inp) - official_fused).abs().max():.2e}")
    torch.testing.assert_close(ours(fused, inp), official_fused, atol=TOL, rtol=0)


def test_ic_lora_metadata_and_formats_round_trip(official, tmp_path):
    _, base = official
    model = trained(base, rank=2, alpha=2.0)
    for fmt in ("trainer", "comfy", "kohya", "ltx"):
        path = save_lora(tmp_path / f"{fmt}.safetensors", model, format=fmt,
                         extra_metadata={"reference_downscale_factor": "2"})
        lora = read_lora(path)
        assert lora.format == fmt and lora.reference_downscale_factor == 2
        want = {f"{m}.lora_{x}.weight": t for m, (a, b) in _adapters(model).items() for x, t in zip("AB", (a, b))}
        assert lora.tensors.keys() == want.keys() and all(torch.equal(lora.tensors[k], want[k]) for k in want)
        assert json.loads(lora.metadata["targets"]) == sorted({m.split(".", 2)[-1] if m.startswith("transformer_")
                                                               else m for m in lora.modules})
    with pytest.raises(ValueError, match=r"LTX-2 LoRAs are written as .*not 'diffusers'; diffusers' LTX2 loader"):
        save_lora(tmp_path / "d", model, format="diffusers")
    with pytest.raises(LoRAError, match=r"kohya names match no Linear module .*lora_unet_transformer_blocks_0_x"):
        save_file({"lora_unet_transformer_blocks_0_x.lora_down.weight": torch.zeros(2, 4),
                   "lora_unet_transformer_blocks_0_x.lora_up.weight": torch.zeros(4, 2)},
                  str(tmp_path / "k.safetensors"))
        read_lora(tmp_path / "k.safetensors")


def _adapters(model) -> dict:
    from ltx.core.lora import lora_modules

    return {n: (m.lora_A["default"].weight.detach(), m.lora_B["default"].weight.detach())
            for n, m in lora_modules(model)}


def test_target_patterns_select_streams(official):
    """The trainer docs' patterns, as peft matches them, plus globs; a pattern that selects nothing is one line."""
    _, base = official

    def tails(patterns):
        return sorted({n.split(".", 2)[2] for n in lora_targets(base, patterns) if n.startswith("transformer_blocks.")})

    q = ["attn1.to_q", "attn2.to_q", "audio_attn1.to_q", "audio_attn2.to_q", "audio_to_video_attn.to_q",
         "video_to_audio_attn.to_q"]
    assert tails(["to_q"]) == sorted(q)
    assert tails(["attn1.to_q"]) == ["attn1.to_q"]  # video only: audio_attn1.to_q does not end in ".attn1.to_q"
    assert tails(["audio_attn1.to_q"]) == ["audio_attn1.to_q"]
    assert tails(["audio_to_video_attn.*"]) == [f"audio_to_video_attn.{p}" for p in ("to_k", "to_out.0", "to_q",
                                                                                      "to_v")]
    assert tails(["*_to_*_attn.to_q"]) == ["audio_to_video_attn.to_q", "video_to_audio_attn.to_q"]
    assert tails(["ff.net.2"]) == ["ff.net.2"] and tails(["audio_ff.*"]) == ["audio_ff.net.0.proj", "audio_ff.net.2"]
    assert len(lora_targets(base, ["to_q"])) == 2 * len(q)  # both blocks
    assert lora_targets(base, ["re:audio_proj_out"]) == ["audio_proj_out"]
    with pytest.raises(ValueError) as e:
        lora_targets(base, ["to_q", "audio_attn3.to_q", "proj_out"])
    msg = str(e.value)
    assert "\n" not in msg and "no nn.Linear matches LoRA targets ('audio_attn3.to_q', 'proj_out')" in msg
    assert "'audio_attn1.to_q'" in msg and "'patchify_proj'" in msg  # valid names, inside and outside the blocks
    with pytest.raises(ValueError, match=r"LoRA targets \('audio_attn3.to_q',\)"):
        inject_lora(copy.deepcopy(base), LoRAConfig(targets=("to_q", "audio_attn3.to_q")))


@pytest.mark.parity
@pytest.mark.filterwarnings("ignore:While injecting the PEFT adapters")  # peft: proj_in is not in the header's list
def test_trainer_files_load_whole_in_diffusers_ltx2(official, tmp_path):
    """diffusers' `LTX2Pipeline.load_lora_weights` on our trainer file: every adapter lands on the diffusers module
    its conversion table names (patchify_proj -> proj_in, blocks unchanged), with scaling 1 and our tensors, so
    its delta is the one we trained (alpha 2, rank 4: B written * 0.5)."""
    import inspect

    from diffusers import LTX2Pipeline, LTX2VideoTransformer3DModel

    _, base = official
    model = trained(base, rank=4, alpha=2.0)
    path = save_lora(tmp_path / "lora.safetensors", model, format="trainer")
    t = ltx2_tiny.TRANSFORMER["19b"]
    same = ("in_channels", "out_channels", "num_attention_heads", "attention_head_dim", "cross_attention_dim",
            "audio_num_attention_heads", "audio_attention_head_dim", "audio_cross_attention_dim", "num_layers",
            "caption_channels")  # diffusers' argument names for these are the official config's
    dit = LTX2VideoTransformer3DModel(**{k: t[k] for k in same})
    components = list(inspect.signature(LTX2Pipeline.__init__).parameters)[1:]
    LTX2Pipeline(**{n: dit if n == "transformer" else None for n in components}).load_lora_weights(str(path))
    theirs = {n: m for n, m in dit.named_modules() if hasattr(m, "lora_A") and "default_0" in m.lora_A}
    renamed = {"patchify_proj": "proj_in", "audio_patchify_proj": "audio_proj_in"}
    adapters = _adapters(model)
    assert sorted(theirs) == sorted(renamed.get(m, m) for m in adapters)
    for m, (a, b) in adapters.items():
        d = theirs[renamed.get(m, m)]
        assert d.scaling["default_0"] == 1.0
        assert torch.equal(d.lora_A["default_0"].weight, a) and torch.equal(d.lora_B["default_0"].weight, 0.5 * b)
