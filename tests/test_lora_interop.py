"""0.9.x LoRA files through the tools they are named after (issue 27): diffusers' real loader
(`LTXPipeline.load_lora_weights`) on a tiny diffusers LTX transformer for each layout we write, with what it loads
and what it drops or refuses stated and checked; kohya files written (`lora_unet_*` + `.alpha`) under ComfyUI's key
rule, and kohya's own flattened names read back to our modules."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import save_file
from test_lora import canonical, diffusers_forward, diffusers_twin, folded, forward, out_path, tiny_dit

from ltx.core import lora as engine
from ltx.core.lora_formats import SafetensorsReader
from ltx.ltxv.lora import LoRAError, apply_lora_weights, load_lora_file, load_loras, save_lora, write_lora

TOL = 1e-5  # fp32, as tests/test_lora.py's diffusers checks


def pipeline(dit):
    """diffusers' LTXPipeline around a transformer with `dit`'s base weights: the object users call
    `load_lora_weights` on (the other components are not needed to load a LoRA)."""
    import diffusers

    return diffusers.LTXPipeline(scheduler=None, vae=None, text_encoder=None, tokenizer=None,
                                 transformer=diffusers_twin(dit))


def ours_with(dit, path, drop: tuple[str, ...] = ()) -> torch.Tensor:
    """Our output with the LoRA file at `path` applied (strength 1), leaving out the modules in `drop`."""
    model = copy.deepcopy(dit)
    w = load_lora_file(path)
    for m in drop:
        del w.rank[m], w.alpha[m], w.tensors[f"{m}.lora_A.weight"], w.tensors[f"{m}.lora_B.weight"]
    apply_lora_weights(model, w)
    return forward(model)


# ---------------------------------------------------------------------------------------------------- kohya


def test_kohya_files_are_written_with_comfyui_key_names(tmp_path):
    """`save_lora(format="kohya")`: `lora_unet_` + the module name with '.' -> '_' (ComfyUI's map from a model's
    `diffusion_model.<key>.weight` keys, rebuilt here by hand), lora_down / lora_up / float32 alpha; read back it is
    the same LoRA (alpha != rank, a module outside the blocks) and acts as the ComfyUI file does."""
    dit = tiny_dit()
    tensors, alpha = canonical(dit)
    path = save_lora(tmp_path / "k.safetensors", tensors, format="kohya", alpha=alpha)
    comfy_map = {f"lora_unet_{k[:-len('.weight')].replace('.', '_')}": k[:-len(".weight")]
                 for k in dit.state_dict() if k.endswith(".weight")}
    reader = SafetensorsReader(path)
    for key in reader.keys():
        module, _, part = key.partition(".")
        assert part in ("lora_down.weight", "lora_up.weight", "alpha")
        assert comfy_map[module] in alpha  # ComfyUI finds the module we meant
        if part == "alpha":
            t = reader.get(key)
            assert t.dtype == torch.float32 and t.ndim == 0 and float(t) == pytest.approx(alpha[comfy_map[module]])
    assert len(reader.keys()) == 3 * len(alpha)
    w = load_lora_file(path)
    assert w.format == "kohya" and w.alpha == alpha
    assert w.tensors.keys() == tensors.keys() and all(torch.equal(w.tensors[k], tensors[k]) for k in tensors)
    comfy = save_lora(tmp_path / "c.safetensors", tensors, format="comfy", alpha=alpha)
    assert torch.equal(ours_with(dit, path), ours_with(dit, comfy))


def test_kohya_names_from_other_tools_are_read(tmp_path):
    """A kohya-ss / musubi-style file (fp16 tensors and alpha, no header): flattened names map back to our
    modules, inside and outside the blocks; a name that is no module of the DiT is one error naming it."""
    dit = tiny_dit()
    base = copy.deepcopy(dit)
    lins = dict(dit.named_modules())
    g = torch.Generator().manual_seed(2)
    modules = {"transformer_blocks_1_attn1_to_out_0": "transformer_blocks.1.attn1.to_out.0",
               "transformer_blocks_0_ff_net_0_proj": "transformer_blocks.0.ff.net.0.proj",
               "adaln_single_emb_timestep_embedder_linear_1": "adaln_single.emb.timestep_embedder.linear_1",
               "caption_projection_linear_2": "caption_projection.linear_2", "patchify_proj": "patchify_proj"}
    sd = {}
    for flat, ours in modules.items():
        out_f, in_f = lins[ours].weight.shape
        sd[f"lora_unet_{flat}.lora_down.weight"] = (0.2 * torch.randn(4, in_f, generator=g)).half()
        sd[f"lora_unet_{flat}.lora_up.weight"] = (0.2 * torch.randn(out_f, 4, generator=g)).half()
        sd[f"lora_unet_{flat}.alpha"] = torch.tensor(2.0, dtype=torch.float16)
    save_file(sd, str(tmp_path / "kohya.safetensors"))
    w = load_lora_file(tmp_path / "kohya.safetensors")
    assert w.format == "kohya" and sorted(w.modules) == sorted(modules.values())
    assert set(w.alpha.values()) == {2.0} and set(w.rank.values()) == {4}
    load_loras(dit, [(tmp_path / "kohya.safetensors", 1.0)])
    torch.testing.assert_close(forward(dit), forward(folded(base, (dit, "lora0", 1.0))), atol=TOL, rtol=0)
    assert (forward(dit) - forward(base)).abs().max() > 0.1

    sd["lora_unet_transformer_blocks_0_attn3_to_q.lora_down.weight"] = torch.zeros(2, 64)
    sd["lora_unet_transformer_blocks_0_attn3_to_q.lora_up.weight"] = torch.zeros(64, 2)
    save_file(sd, str(tmp_path / "bad.safetensors"))
    with pytest.raises(LoRAError, match=r"bad.safetensors: 1 kohya names match no Linear module of this model "
                       r"family: \['lora_unet_transformer_blocks_0_attn3_to_q'\]$"):
        load_lora_file(tmp_path / "bad.safetensors")
    with pytest.raises(LoRAError, match=r"5 kohya names .* read it with the family's reader"):
        engine.read_lora(tmp_path / "kohya.safetensors")  # the engine alone knows no family's names


# ------------------------------------------------------------------------------------- diffusers' own loader


@pytest.mark.parity
def test_diffusers_folders_load_through_load_lora_weights(tmp_path):
    """format="diffusers" is the one for diffusers: the standard `pipe.load_lora_weights(folder)` loads every
    module (patchify_proj as diffusers' proj_in included) with its alpha (alpha != rank, per module) and gives our
    output."""
    dit = tiny_dit()
    tensors, alpha = canonical(dit)
    path = save_lora(out_path(tmp_path, "diffusers"), tensors, format="diffusers", alpha=alpha)
    pipe = pipeline(dit)
    pipe.load_lora_weights(str(path))
    loaded = {n.split(".lora_A.")[0] for n, _ in pipe.transformer.named_parameters() if ".lora_A." in n}
    assert "proj_in" in loaded and len(loaded) == len(alpha)
    want = ours_with(dit, path)
    assert (want - forward(dit)).abs().max() > 0.1
    torch.testing.assert_close(diffusers_forward(pipe.transformer, dit.cfg), want, atol=TOL, rtol=0)


@pytest.mark.parity
@pytest.mark.filterwarnings("ignore:The following (rank|alpha)_pattern keys did not match")  # peft, on proj_in
def test_trainer_files_in_diffusers_keep_only_modules_named_alike(tmp_path, caplog):
    """format="trainer" through `pipe.load_lora_weights(file)`: diffusers swaps `diffusion_model.` for
    `transformer.` and renames nothing, so the block adapters load (with the header's alpha) and `patchify_proj`
    (diffusers: proj_in) is dropped: its output is ours without that adapter, not ours."""
    dit = tiny_dit()
    tensors, alpha = canonical(dit)
    path = save_lora(tmp_path / "t.safetensors", tensors, format="trainer", alpha=alpha)
    pipe = pipeline(dit)
    pipe.load_lora_weights(str(path))
    got = diffusers_forward(pipe.transformer, dit.cfg)
    torch.testing.assert_close(got, ours_with(dit, path, drop=("patchify_proj",)), atol=TOL, rtol=0)
    assert (got - ours_with(dit, path)).abs().max() > 1e-2  # the dropped adapter mattered
    assert "patchify_proj.lora_A.weight" in caplog.text  # diffusers says so ("unexpected keys"), as a log line


@pytest.mark.parity
def test_comfy_and_kohya_files_in_diffusers_and_the_conversion_that_works(tmp_path, capsys):
    """ComfyUI files: `load_lora_weights` refuses them (its check wants "lora" in every key; `.alpha` has none).
    kohya files: it loads nothing (no `transformer.` / `diffusion_model.` keys). Converted with
    `tools/convert_weights.py FILE OUT --to diffusers`, both load completely and give our output."""
    from tools.convert_weights import main

    dit = tiny_dit()
    tensors, alpha = canonical(dit)
    comfy = save_lora(tmp_path / "c.safetensors", tensors, format="comfy", alpha=alpha)
    with pytest.raises(ValueError, match="Make sure all LoRA param names contain `'lora'` substring"):
        pipeline(dit).load_lora_weights(str(comfy))
    kohya = save_lora(tmp_path / "k.safetensors", tensors, format="kohya", alpha=alpha)
    pipe = pipeline(dit)
    pipe.load_lora_weights(str(kohya))
    assert not any(".lora_A." in n for n, _ in pipe.transformer.named_parameters())
    want = ours_with(dit, comfy)
    for src in (comfy, kohya):
        dst = tmp_path / f"{src.stem}_diffusers"
        assert main([str(src), str(dst), "--to", "diffusers"]) == 0
        pipe = pipeline(dit)
        pipe.load_lora_weights(str(dst))
        torch.testing.assert_close(diffusers_forward(pipe.transformer, dit.cfg), want, atol=TOL, rtol=0)
    capsys.readouterr()


def test_write_lora_takes_every_format_it_reads(tmp_path):
    """The 0.9.x writer refuses no layout the README names (kohya was refused before issue 27)."""
    tensors, alpha = canonical(tiny_dit())
    w = load_lora_file(save_lora(tmp_path / "src.safetensors", tensors, format="ltx", alpha=alpha))
    for fmt in ("comfy", "diffusers", "trainer", "ltx", "kohya"):
        back = load_lora_file(write_lora(out_path(tmp_path, fmt, fmt), w, fmt))
        assert back.format == fmt and back.alpha == alpha and all(torch.equal(back.tensors[k], t)
                                                                  for k, t in tensors.items())
