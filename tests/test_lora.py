"""0.9.x LoRA (ltx/ltxv/lora.py over ltx/core/lora.py, ltx/core/lora_formats.py): adapters against closed forms
(W + s * alpha/r * B @ A on a plain copy of the model), fusion = merged adapters, file layouts round trip, our files
through diffusers' own LoRA loader, diffusers' own files through ours, the converter CLI, and generate with
`loras=[...]` on the bundled demo model."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from conftest import REPO, TINY, dit_inputs, randomize_
from torch import nn

from ltx.core import lora as engine
from ltx.core import lora_formats
from ltx.ltxv.lora import (
    LoRAConfig,
    LoRAError,
    LoRALinear,
    apply_lora_weights,
    freeze_base,
    fuse_loras,
    inject_lora,
    load_lora_file,
    load_loras,
    lora_parameters,
    lora_state_dict,
    lora_weights,
    merge_lora,
    remove_lora,
    save_lora,
    set_strength,
    unmerge_lora,
)
from ltx.ltxv.transformer import DiT

ALL = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")


def tiny_dit(name="w64", seed=0) -> DiT:
    return randomize_(DiT(TINY[name]), seed).eval()


def forward(dit, seed=1):
    x, ctx, mask, pos = dit_inputs(dit.cfg, batch=2, grid=(2, 3, 3), seed=seed)
    with torch.no_grad():
        return dit(x, torch.tensor([0.7, 0.3]), ctx, mask, pos)


def randomize_lora_(model, name=None, seed=5, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora_parameters(model, name):
            p.copy_(scale * torch.randn(p.shape, generator=g))


def folded(base: DiT, *adapters: tuple[DiT, str, float]) -> DiT:
    """The closed form: a plain copy of `base` with W += strength * alpha / rank * B @ A for each adapter."""
    out = copy.deepcopy(base)
    weights = dict(out.named_parameters())
    with torch.no_grad():
        for model, name, strength in adapters:
            for module, m in ((n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)):
                if name in m.lora_A:
                    a, b = m.lora_A[name].weight, m.lora_B[name].weight
                    weights[module + ".weight"] += strength * m.lora_alpha[name] / a.shape[0] * (b @ a)
    return out


# ------------------------------------------------------------------------------------------------ adapters


def test_config_validation():
    assert LoRAConfig(targets=["to_q"]).targets == ("to_q",)
    for kw, msg in [(dict(rank=0), "rank must be an integer >= 1"), (dict(alpha=0.0), "alpha must be > 0"),
                    (dict(dropout=1.0), r"dropout must be in \[0, 1\)"), (dict(targets=()), "non-empty"),
                    (dict(targets=("re:(",)), "not a valid regex")]:
        with pytest.raises(ValueError, match=msg):
            LoRAConfig(**kw)


def test_targets_match_name_ends_inside_blocks_and_regex():
    dit = tiny_dit()
    touched = inject_lora(dit, LoRAConfig(rank=2, targets=("to_q", "attn2.to_out.0")))
    assert touched == [f"transformer_blocks.{i}.{m}" for i in range(2)
                       for m in ("attn1.to_q", "attn2.to_q", "attn2.to_out.0")]
    assert inject_lora(tiny_dit(), LoRAConfig(rank=2, targets=("re:proj_out|patchify_proj",))) == [
        "patchify_proj", "proj_out"]
    with pytest.raises(ValueError, match=r"no nn.Linear matches LoRA targets \('proj_out',\).*Linear modules"):
        inject_lora(tiny_dit(), LoRAConfig(targets=("proj_out",)))
    with pytest.raises(ValueError, match="already has a LoRA adapter 'default'"):
        inject_lora(dit, LoRAConfig(targets=("to_k",)))


def test_zero_init_leaves_outputs_and_base_keys_unchanged():
    dit = tiny_dit()
    before = forward(dit)
    sd = dit.state_dict()
    touched = inject_lora(dit, LoRAConfig(rank=4, targets=ALL), generator=torch.Generator().manual_seed(0))
    assert len(touched) == 2 * 10
    assert torch.equal(forward(dit), before)
    after = dit.state_dict()
    base = {k: v for k, v in after.items() if ".lora_" not in k}
    assert list(base) == list(sd) and all(base[k].data_ptr() == sd[k].data_ptr() for k in sd)  # same Parameters
    assert sorted(set(after) - set(sd)) == sorted(f"{m}.lora_{x}.default.weight" for m in touched for x in "AB")
    a = dit.transformer_blocks[0].attn1.to_q.lora_A["default"].weight
    bound = 1 / math.sqrt(a.shape[1])  # kaiming-uniform with a = sqrt(5): U(-1/sqrt(in), 1/sqrt(in))
    assert a.abs().max() <= bound and a.abs().max() > 0.5 * bound
    assert all(p.abs().sum() == 0 for n, p in dit.named_parameters() if ".lora_B." in n)
    remove_lora(dit)
    assert type(dit.transformer_blocks[0].attn1.to_q) is nn.Linear and dit.state_dict().keys() == sd.keys()
    assert torch.equal(forward(dit), before)


def test_merged_equals_unmerged_equals_closed_form_and_unmerge_restores():
    """fp32. One Linear: merged vs unmerged <= 1e-6. The whole DiT: <= 1e-6 of the output scale (measured 1.4-1.9e-6
    on outputs up to 6, i.e. 3-4 ulps: each merged weight rounds once, and the blocks carry that along)."""
    g = torch.Generator().manual_seed(0)
    lin = LoRALinear(nn.Linear(64, 48))
    lin.add_adapter("x", 4, 3.0, tensors=(0.1 * torch.randn(4, 64, generator=g), 0.1 * torch.randn(48, 4, generator=g)))
    h = torch.randn(10, 64, generator=g)
    with torch.no_grad():
        y = lin(h)
        lin.merge("x")
        torch.testing.assert_close(lin(h), y, atol=1e-6, rtol=0)
    dit = tiny_dit()
    base = copy.deepcopy(dit)
    inject_lora(dit, LoRAConfig(rank=4, alpha=2.0, targets=ALL))
    randomize_lora_(dit)
    set_strength(dit, "default", 0.7)
    unmerged = forward(dit)
    expected = forward(folded(base, (dit, "default", 0.7)))
    assert (unmerged - forward(base)).abs().max() > 0.1  # the adapter does something
    torch.testing.assert_close(unmerged, expected, atol=1e-5, rtol=0)
    merge_lora(dit)
    scale = unmerged.abs().max().item()
    torch.testing.assert_close(forward(dit), unmerged, atol=1e-6 * scale, rtol=0)
    with pytest.raises(ValueError, match="is merged into .*unmerge_lora first"):
        set_strength(dit, "default", 1.0)
    unmerge_lora(dit)
    params = dict(dit.named_parameters())
    for n, q in base.named_parameters():
        torch.testing.assert_close(params[n], q, atol=1e-6, rtol=0)
    torch.testing.assert_close(forward(dit), unmerged, atol=1e-6 * scale, rtol=0)


def test_two_adapters_add_up_with_their_strengths():
    dit = tiny_dit()
    base = copy.deepcopy(dit)
    inject_lora(dit, LoRAConfig(rank=4, targets=("to_q", "to_v")), name="a")
    inject_lora(dit, LoRAConfig(rank=2, alpha=8.0, targets=("to_v", "ff.net.2")), name="b")
    randomize_lora_(dit, "a", seed=1)
    randomize_lora_(dit, "b", seed=2)
    set_strength(dit, "a", 0.5)
    set_strength(dit, "b", -1.25)
    expected = forward(folded(base, (dit, "a", 0.5), (dit, "b", -1.25)))
    torch.testing.assert_close(forward(dit), expected, atol=1e-5, rtol=0)
    set_strength(dit, "b", 0.0)
    torch.testing.assert_close(forward(dit), forward(folded(base, (dit, "a", 0.5))), atol=1e-5, rtol=0)
    remove_lora(dit, "a")
    assert sorted({n for m in dit.modules() if isinstance(m, LoRALinear) for n in m.lora_A}) == ["b"]
    assert type(dit.transformer_blocks[0].attn1.to_q) is nn.Linear  # it only had "a"


def test_freeze_base_and_parameters():
    dit = tiny_dit()
    inject_lora(dit, LoRAConfig(rank=2, dropout=0.1))
    freeze_base(dit)
    trainable = [n for n, p in dit.named_parameters() if p.requires_grad]
    assert len(trainable) == len(lora_parameters(dit)) == 2 * 8 * 2
    assert all(".lora_A.default." in n or ".lora_B.default." in n for n in trainable)
    dit.train()
    x, ctx, mask, pos = dit_inputs(dit.cfg, batch=1, grid=(1, 2, 2))
    dit(x, torch.tensor([0.5]), ctx, mask, pos).square().mean().backward()
    assert all(p.grad is not None for p in lora_parameters(dit))


def test_fuse_equals_merged_adapters_and_the_closed_form():
    """fuse_loras with alpha != rank and two LoRAs: the closed form; one LoRA fused = its adapter merged, bitwise."""
    dit = tiny_dit()
    base = copy.deepcopy(dit)
    inject_lora(dit, LoRAConfig(rank=4, alpha=2.0, targets=("to_q", "to_v")), name="a")
    inject_lora(dit, LoRAConfig(rank=2, alpha=8.0, targets=("to_v", "ff.net.2")), name="b")
    randomize_lora_(dit, "a", seed=1)
    randomize_lora_(dit, "b", seed=2)
    fused = copy.deepcopy(base)
    assert fuse_loras(fused, [(lora_weights(dit, "a"), 0.5), (lora_weights(dit, "b"), -1.25)]) == 2 * 5
    torch.testing.assert_close(forward(fused), forward(folded(base, (dit, "a", 0.5), (dit, "b", -1.25))),
                               atol=1e-5, rtol=0)
    one = copy.deepcopy(base)
    fuse_loras(one, [(lora_weights(dit, "a"), 0.5)])
    set_strength(dit, "a", 0.5)
    merge_lora(dit, "a")
    weights = dict(dit.named_parameters())
    assert all(torch.equal(weights[n], p) for n, p in one.named_parameters())
    with pytest.raises(ValueError, match="strength must be finite"):
        fuse_loras(one, [(lora_weights(dit, "b"), math.inf)])


# ---------------------------------------------------------------------------------------------------- files


def canonical(dit: DiT, seed=3) -> tuple[dict, dict]:
    """Tensors with per-module ranks and alphas (one module outside the blocks, one fractional alpha)."""
    g = torch.Generator().manual_seed(seed)
    lins = {n: m for n, m in dit.named_modules() if isinstance(m, nn.Linear)}
    spec = {"transformer_blocks.0.attn1.to_q": (4, 4.0), "transformer_blocks.1.attn2.to_out.0": (2, 0.3),
            "transformer_blocks.1.ff.net.0.proj": (4, 8.0), "patchify_proj": (3, 1.5)}
    tensors, alpha = {}, {}
    for m, (r, a) in spec.items():
        tensors[f"{m}.lora_A.weight"] = 0.3 * torch.randn(r, lins[m].in_features, generator=g)
        tensors[f"{m}.lora_B.weight"] = 0.3 * torch.randn(lins[m].out_features, r, generator=g)
        alpha[m] = a
    return tensors, alpha


def out_path(tmp_path, fmt, stem="lora"):
    return tmp_path / (stem if fmt == "diffusers" else f"{stem}.safetensors")


@pytest.mark.parametrize("fmt", lora_formats.FORMATS)
def test_round_trip_each_format(tmp_path, fmt):
    tensors, alpha = canonical(tiny_dit())
    path = save_lora(out_path(tmp_path, fmt), tensors, format=fmt, alpha=alpha, base_model="tiny w64")
    w = load_lora_file(path)
    assert w.format == fmt and w.alpha == alpha and w.rank == {m: tensors[f"{m}.lora_A.weight"].shape[0] for m in alpha}
    assert w.tensors.keys() == tensors.keys() and all(torch.equal(w.tensors[k], tensors[k]) for k in tensors)
    assert w.metadata["format"] == "ltx-lora" and w.metadata["base_model"] == "tiny w64"
    assert json.loads(w.metadata["targets"]) == ["attn1.to_q", "attn2.to_out.0", "ff.net.0.proj", "patchify_proj"]
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_lora(path, tensors, format=fmt)
    again = save_lora(out_path(tmp_path, fmt, "again"), w, format=fmt)  # LoRAWeights in, same out
    assert load_lora_file(again).alpha == alpha
    file = path / lora_formats.DIFFUSERS_FILE if fmt == "diffusers" else path
    keys = list(lora_formats.SafetensorsReader(file).keys())
    prefix = {"comfy": "diffusion_model.", "trainer": "diffusion_model.", "diffusers": "transformer.", "ltx": "",
              "kohya": "lora_unet_"}[fmt]
    assert all(k.startswith(prefix) for k in keys)
    assert any(k.endswith(".alpha") for k in keys) == (fmt in ("comfy", "kohya"))
    assert ("transformer.proj_in.lora_A.weight" in keys) == (fmt == "diffusers")  # diffusers' module names
    if fmt == "diffusers":
        peft = pytest.importorskip("peft")
        config = peft.LoraConfig.from_pretrained(str(path))
        assert config.r == 4 and config.lora_alpha == 4.0 and "proj_in" in config.target_modules
        assert load_lora_file(file).tensors.keys() == tensors.keys()  # the file itself too


def test_foreign_files_alpha_rules(tmp_path):
    """Files other tools write (no ltx header): kohya names + fp16 alpha, trainer (alpha = rank), peft folder."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 64, generator=g), torch.randn(64, 4, generator=g)
    m = "transformer_blocks.0.attn1.to_k"
    save_file({f"diffusion_model.{m}.lora_down.weight": a, f"diffusion_model.{m}.lora_up.weight": b,
               f"diffusion_model.{m}.alpha": torch.tensor(2.0, dtype=torch.float16)}, tmp_path / "kohya.safetensors")
    w = load_lora_file(tmp_path / "kohya.safetensors")
    assert (w.format, w.alpha, w.rank) == ("comfy", {m: 2.0}, {m: 4})
    assert torch.equal(w.tensors[f"{m}.lora_B.weight"], b)
    save_file({f"diffusion_model.{m}.lora_A.weight": a, f"diffusion_model.{m}.lora_B.weight": b},
              tmp_path / "trainer.safetensors")
    assert load_lora_file(tmp_path / "trainer.safetensors").alpha == {m: 4.0}
    (tmp_path / "peft").mkdir()
    peft = {m: (a, b), "proj_in": (a[:, :16].clone(), b.clone())}  # peft's names: diffusers' (proj_in)
    save_file({f"base_model.model.{n}.lora_{x}.weight": t for n, ab in peft.items() for x, t in zip("AB", ab)},
              tmp_path / "peft" / lora_formats.PEFT_FILE)
    (tmp_path / "peft" / lora_formats.ADAPTER_CONFIG).write_text(json.dumps(
        {"r": 4, "lora_alpha": 8, "alpha_pattern": {"proj_in": 1}, "use_rslora": True}))
    w = load_lora_file(tmp_path / "peft")
    assert w.format == "diffusers" and w.alpha == {m: 16.0, "patchify_proj": 2.0}  # rsLoRA: alpha * sqrt(r)
    save_file({f"{m}.weight": a}, tmp_path / "model.safetensors")
    with pytest.raises(LoRAError, match=r"1 keys are not LoRA tensors .*to_k.weight"):
        load_lora_file(tmp_path / "model.safetensors")
    assert not lora_formats.is_lora(tmp_path / "model.safetensors") and lora_formats.is_lora(tmp_path / "peft")
    assert "proj_in" in engine.read_lora(tmp_path / "peft").rank  # the engine alone renames nothing


def test_lora_for_another_base_model_and_unmatched_keys_fail(tmp_path):
    tensors, alpha = canonical(tiny_dit("w64"))
    path = save_lora(tmp_path / "w64.safetensors", tensors, format="comfy", alpha=alpha)
    other = tiny_dit("w32")
    with pytest.raises(LoRAError, match=r"w64.safetensors: \d+ LoRA tensors do not fit this model \(a LoRA for "
                       r"another base model\?\): transformer_blocks.0.attn1.to_q.lora_A.weight: file \(4, 64\) vs "
                       r"model \(4, 32\)"):
        load_loras(other, [(path, 1.0)])
    assert not any(isinstance(m, LoRALinear) for m in other.modules())  # checked before touching the model
    deep = {f"transformer_blocks.{i}.attn1.to_v.lora_{x}.weight": torch.zeros(2, 64) if x == "A" else torch.zeros(64, 2)
            for i in range(14) for x in "AB"}
    path = save_lora(tmp_path / "deep.safetensors", deep, format="ltx")
    with pytest.raises(LoRAError, match=r"24 LoRA keys name no Linear module of this model: \['transformer_blocks.2"
                       r".attn1.to_v.lora_A.weight', .* \.\.\."):
        apply_lora_weights(tiny_dit("w64"), load_lora_file(path))


def test_apply_loaded_lora_equals_closed_form_and_exports_back(tmp_path):
    dit = tiny_dit()
    base = copy.deepcopy(dit)
    tensors, alpha = canonical(dit)
    path = save_lora(tmp_path / "l.safetensors", tensors, format="comfy", alpha=alpha)
    (report,) = load_loras(dit, [(path, 0.8)])
    assert str(report) == "lora l.safetensors: 4 modules, rank 2..4, alpha 0.3..8, strength 0.8"
    torch.testing.assert_close(forward(dit), forward(folded(base, (dit, "lora0", 0.8))), atol=1e-5, rtol=0)
    sd = lora_state_dict(dit, "lora0")
    assert sd.keys() == tensors.keys() and all(torch.equal(sd[k], tensors[k]) for k in sd)
    assert lora_weights(dit, "lora0").alpha == alpha
    with pytest.raises(ValueError, match="alpha 4 given, but the adapters have alpha 0.3..8"):
        save_lora(tmp_path / "x.safetensors", dit, name="lora0", alpha=4)


# ------------------------------------------------------------------------------------- diffusers' own loader


def diffusers_twin(dit: DiT):
    """diffusers' LTXVideoTransformer3DModel with `dit`'s base weights (through our key table)."""
    from diffusers import LTXVideoTransformer3DModel

    from ltx.core.keymap import apply, invert
    from ltx.ltxv.keys_diffusers import DIT_FROM_DIFFUSERS, dit_config_to_diffusers

    c = {k: v for k, v in dit_config_to_diffusers(dit.cfg).items() if not k.startswith("_")}
    ref = LTXVideoTransformer3DModel(**c)
    base = {k: v for k, v in dit.state_dict().items() if ".lora_" not in k}
    ref.load_state_dict(apply(base, invert(DIT_FROM_DIFFUSERS)), strict=True)
    return ref.eval()


def diffusers_forward(ref, cfg, seed=1):
    x, ctx, mask, pos = dit_inputs(cfg, batch=2, grid=(2, 3, 3), seed=seed)
    with torch.no_grad():
        return ref(hidden_states=x, encoder_hidden_states=ctx, timestep=1000 * torch.tensor([0.7, 0.3]),
                   encoder_attention_mask=mask, video_coords=pos, return_dict=False)[0]


@pytest.mark.parity
@pytest.mark.parametrize("fmt", ["comfy", "trainer", "diffusers"])
def test_our_files_load_through_diffusers_loader(tmp_path, fmt):
    """diffusers' LTXVideoLoraLoaderMixin (lora_state_dict + load_lora_into_transformer, with the header metadata)
    gives our output, alpha != rank included. comfy / trainer: block modules only (diffusers renames nothing there)."""
    diffusers = pytest.importorskip("diffusers")
    dit = tiny_dit()
    ref = diffusers_twin(dit)
    tensors, alpha = canonical(dit)
    if fmt != "diffusers":
        tensors = {k: v for k, v in tensors.items() if k.startswith("transformer_blocks.")}
    path = save_lora(out_path(tmp_path, fmt), tensors, format=fmt, alpha=alpha)
    load_loras(dit, [(path, 1.0)])
    sd, meta = diffusers.LTXPipeline.lora_state_dict(str(path), return_lora_metadata=True)
    diffusers.LTXPipeline.load_lora_into_transformer(sd, transformer=ref, metadata=meta)
    ours = forward(dit)
    assert (ours - diffusers_forward(diffusers_twin(tiny_dit()), dit.cfg)).abs().max() > 0.1  # the LoRA acts
    torch.testing.assert_close(diffusers_forward(ref, dit.cfg), ours, atol=1e-5, rtol=0)


@pytest.mark.parity
def test_diffusers_saved_lora_loads_into_our_dit(tmp_path):
    """A LoRA that diffusers itself writes (peft adapter on its transformer, save_lora_weights) reads with its
    alpha and its module names (proj_in -> patchify_proj) and gives diffusers' output."""
    diffusers = pytest.importorskip("diffusers")
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    dit = tiny_dit()
    ref = diffusers_twin(dit)
    ref.add_adapter(LoraConfig(r=4, lora_alpha=2, target_modules=["to_q", "to_v", "ff.net.2", "proj_in"],
                               init_lora_weights=False))
    diffusers.LTXPipeline.save_lora_weights(tmp_path / "d", transformer_lora_layers=get_peft_model_state_dict(ref),
                                            transformer_lora_adapter_metadata=ref.peft_config["default"].to_dict())
    w = load_lora_file(tmp_path / "d")
    assert w.format == "diffusers" and set(w.alpha.values()) == {2.0} and "patchify_proj" in w.rank
    assert len(w.modules) == 2 * 5 + 1
    apply_lora_weights(dit, w)
    torch.testing.assert_close(forward(dit), diffusers_forward(ref, dit.cfg), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------- converter CLI


def test_convert_weights_lora_round_trip(tmp_path, capsys):
    from tools.convert_weights import main

    tensors, alpha = canonical(tiny_dit())
    src = save_lora(tmp_path / "src.safetensors", tensors, format="comfy", alpha=alpha, base_model="tiny")
    chain = [src]
    for fmt in ("diffusers", "trainer", "ltx", "comfy"):
        dst = out_path(tmp_path, fmt, f"to_{fmt}")
        assert main([str(chain[-1]), str(dst), "--to", fmt]) == 0
        chain.append(dst)
    out = capsys.readouterr().out
    assert "wrote" in out and "LoRA, comfy, 4 modules, rank 2..4, alpha 0.3..8" in out
    for path in chain[1:]:
        w = load_lora_file(path)
        assert w.alpha == alpha and all(torch.equal(w.tensors[k], tensors[k]) for k in tensors)
        assert w.metadata["base_model"] == "tiny"
    assert main([str(src), "--dry-run"]) == 0
    assert "modules: transformer_blocks.0.attn1.to_q" in capsys.readouterr().out
    assert main([str(src), str(tmp_path / "half.safetensors"), "--dtype", "bfloat16"]) == 0
    assert {t.dtype for t in load_lora_file(tmp_path / "half.safetensors").tensors.values()} == {torch.bfloat16}
    assert main([str(src), str(tmp_path / "x.safetensors"), "--to", "official"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a LoRA; --to takes ('comfy', 'diffusers', 'trainer', 'ltx', 'kohya')" in err
    model = REPO / "configs/model/ltxv-2b-0.9.5.yaml"
    assert main([str(src), "--dry-run", "--model", str(model)]) == 1
    assert "another base model?" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- generate + demo


DEMO = REPO / "demo" / "ltx-demo.safetensors"


@pytest.mark.skipif(not DEMO.exists(), reason="no bundled demo weights")
def test_generate_with_loras_on_the_demo(tmp_path, capsys, monkeypatch):
    """Strength 0 gives the no-LoRA video bit for bit; strength 0.8 changes it; bad LoRAs fail before any load."""
    pytest.importorskip("hydra")
    pytest.importorskip("av")
    from omegaconf import OmegaConf

    import infer.generate as app
    from ltx.ltxv.checkpoint import read_checkpoint
    from ltx.presets import ModelPreset

    preset = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelPreset),
                                                 OmegaConf.load(REPO / "configs/model/ltx-demo.yaml")))
    with torch.device("meta"):
        demo = DiT(read_checkpoint(DEMO).components["dit"].config)
    demo.to_empty(device="cpu")
    inject_lora(demo, LoRAConfig(rank=4, targets=("to_q", "to_v", "ff.net.2")))
    randomize_lora_(demo, scale=0.05)
    lora = save_lora(tmp_path / "demo_lora.safetensors", demo, format="comfy")

    seen = []
    generate = app.generate
    monkeypatch.setattr(app, "generate", lambda *a, **k: seen.append(generate(*a, **k)) or seen[-1])

    def run(name, **kw):
        cfg = app.GenerateConfig(model=preset, prompts=["a red circle moves to the left"], steps=3, device="cpu",
                                 output_dir=str(tmp_path / "out"), name=name, **kw)
        return app.run(cfg)

    run("plain")
    run("zero", loras=[app.LoraSpec(path=str(lora), strength=0.0)])
    (video,) = run("lora", loras=[app.LoraSpec(path=str(lora), strength=0.8)])
    assert torch.equal(seen[0], seen[1])
    assert (seen[2] - seen[0]).abs().mean() > 1e-3
    out = capsys.readouterr().out
    assert "lora demo_lora.safetensors: 30 modules, rank 4, alpha 4, strength 0.8" in out
    assert f"path: {lora}" in video.with_suffix(".yaml").read_text()

    def boom(*a, **k):
        raise AssertionError("weights were loaded before the bad LoRA was reported")

    monkeypatch.setattr("ltx.ltxv.api.load_component", boom)
    other = save_lora(tmp_path / "w64.safetensors", canonical(tiny_dit())[0], format="comfy")
    with pytest.raises(app.InputError, match=r"loras\[0\]: .*another base model\?"):
        run("bad", loras=[app.LoraSpec(path=str(other))])
    with pytest.raises(app.InputError, match=r"loras\[0\] .*missing.safetensors does not exist"):
        run("bad", loras=[app.LoraSpec(path=str(tmp_path / "missing.safetensors"))])
    with pytest.raises(ValueError, match="strength must be a finite number"):
        app.LoraSpec(path="x", strength=float("nan"))


def test_full_size_lora_matches_the_published_ic_lora_file_size():
    """On the 13B config (meta device): rank 8 on attn1 + attn2 + ff of all 48 blocks is 5.11 M values per unit
    rank, 81.8 MB in bf16, the size ComfyUI-Manager lists for the official 0.9.7 depth / canny IC-LoRAs (81.9 MB,
    shared/reference/training.md C.2)."""
    from ltx.core.lora import LoRAConfig, inject_lora, lora_parameters
    from ltx.ltxv.transformer import DiT, DiTConfig

    with torch.device("meta"):
        dit = DiT(DiTConfig(num_layers=48, num_heads=32, head_dim=128))
    names = inject_lora(dit, LoRAConfig(rank=8, targets=("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj",
                                                         "ff.net.2")))
    n = sum(p.numel() for p in lora_parameters(dit))
    assert len(names) == 48 * 10
    assert n == 48 * 8 * (8 * 2 * 4096 + 2 * (4096 + 16384))
    assert abs(n * 2 / 1e6 - 81.9) < 0.2
