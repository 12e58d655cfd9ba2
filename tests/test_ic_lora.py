"""IC-LoRA end to end: official-layout control LoRAs load (13B 0.9.7 key names and shapes), preprocessing encodes
paired references (and skips pairs that cannot line up), the trainer's reference mode prepends them at the
positions the inference guides get, its LoRA carries the reference metadata and drives `generate control=[...]`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO
from omegaconf import OmegaConf
from safetensors.torch import save_file

pytest.importorskip("hydra")
pytest.importorskip("av")

from ltx.ltxv.lora import check_lora, load_lora_file  # noqa: E402
from ltx.ltxv.transformer import DiT  # noqa: E402
from train import finetune  # noqa: E402

TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v",
           "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")


def _preset(name: str):
    from ltx.presets import ModelPreset

    raw = OmegaConf.load(REPO / f"configs/model/{name}.yaml")
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelPreset), raw))


def official_ic_lora(path: Path, prefix: str = "diffusion_model.", rank: int = 1, metadata: dict | None = None):
    """A file laid out like the released `ltxv-097-ic-lora-*-control` adapters: LTX-Video-Trainer's ComfyUI export
    (`diffusion_model.` prefix, lora_A / lora_B, no alpha tensors, no metadata) on attn1 + attn2 + ff of all 48
    blocks of the 13B transformer (D = 4096, MLP 16384); the released ones are rank 8 in bf16 (81.9 MB)."""
    g = torch.Generator().manual_seed(0)
    tensors = {}
    with torch.device("meta"):
        dit = DiT(_preset("ltxv-13b-0.9.7-dev").dit)
    linears = dict(dit.named_modules())
    for i in range(len(dit.transformer_blocks)):
        for t in TARGETS:
            lin = linears[f"transformer_blocks.{i}.{t}"]
            key = f"{prefix}transformer_blocks.{i}.{t}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(rank, lin.in_features, generator=g).bfloat16()
            tensors[f"{key}.lora_B.weight"] = torch.randn(lin.out_features, rank, generator=g).bfloat16()
    save_file(tensors, str(path), metadata=metadata)
    return dit, tensors


@pytest.mark.parametrize("prefix,layout", [("diffusion_model.", "trainer"), ("transformer.", "diffusers")])
def test_official_ic_lora_layout_loads_for_the_13b_transformer(tmp_path, prefix, layout):
    dit, tensors = official_ic_lora(tmp_path / "ic.safetensors", prefix)
    w = load_lora_file(tmp_path / "ic.safetensors")
    assert w.format == layout and len(w.modules) == 48 * len(TARGETS)
    assert set(w.alpha.values()) == {1.0} and set(w.rank.values()) == {1}  # no alpha: alpha = rank (scale 1)
    check_lora(dit, w)  # every module a Linear of the 13B transformer, every shape right
    key = "transformer_blocks.47.ff.net.0.proj"
    assert torch.equal(w.tensors[f"{key}.lora_A.weight"], tensors[f"{prefix}{key}.lora_A.weight"])
    # the converter's key audit against the 0.9.7 preset, and a lossless round trip through the comfy layout
    conv = [sys.executable, str(REPO / "tools/convert_weights.py")]
    audit = subprocess.run(conv + [str(tmp_path / "ic.safetensors"), "--dry-run", "--model",
                                   "configs/model/ltxv-13b-0.9.7-dev.yaml"], capture_output=True, text=True, cwd=REPO)
    assert audit.returncode == 0, audit.stderr
    assert f"LoRA, {layout}, 480 modules, rank 1, alpha 1" in audit.stdout
    out = subprocess.run(conv + [str(tmp_path / "ic.safetensors"), str(tmp_path / "comfy.safetensors"), "--to",
                                 "comfy"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    back = load_lora_file(tmp_path / "comfy.safetensors")
    assert back.tensors.keys() == w.tensors.keys()
    assert all(torch.equal(back.tensors[k], w.tensors[k]) for k in w.tensors)
    # and the 2B transformer is refused by name
    bad = subprocess.run(conv + [str(tmp_path / "ic.safetensors"), "--dry-run", "--model",
                                 "configs/model/ltxv-2b-0.9.8-distilled.yaml"], capture_output=True, text=True,
                         cwd=REPO)
    assert bad.returncode != 0 and "400 LoRA keys name no Linear module" in bad.stderr  # blocks 28..47
    assert len(bad.stderr.splitlines()) == 1


def test_reference_downscale_metadata_is_read_and_checked(tmp_path):
    from ltx.ltxv.api import reference_downscale

    official_ic_lora(tmp_path / "a.safetensors", metadata={"reference_downscale_factor": "2"})
    official_ic_lora(tmp_path / "b.safetensors", metadata={"reference_downscale_factor": "1"})
    official_ic_lora(tmp_path / "c.safetensors", metadata={"reference_downscale_factor": "half"})
    a, b, c = (load_lora_file(tmp_path / f"{n}.safetensors") for n in "abc")
    assert reference_downscale([a]) == 2 and reference_downscale([]) is None
    with pytest.raises(ValueError, match="different reference downscale factors"):
        reference_downscale([a, b])
    with pytest.raises(ValueError, match="not a factor >= 1"):
        reference_downscale([c])


# ------------------------------------------------------------------------------------------------ training


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def _pairs(root: Path) -> Path:
    """6 good (target, reference) pairs plus one of each bad kind; reference = the clip's inverted colours."""
    from ltx.core.media import write_mp4
    from ltx.data.shapes import ShapesWorld

    rows = []
    data = ShapesWorld(split="train", num_samples=7, seed=3)
    for k in range(len(data)):
        s = data[k]
        write_mp4(root / f"clip{k}.mp4", (s.video + 1) / 2, 8)
        write_mp4(root / f"ref{k}.mp4", (1 - s.video) / 2, 8)
        rows.append({"media_path": f"clip{k}.mp4", "reference_path": f"ref{k}.mp4", "caption": s.caption})
    wide = ShapesWorld(split="train", num_samples=1, seed=4, width=96)[0]
    write_mp4(root / "wide_ref.mp4", (wide.video + 1) / 2, 8)
    write_mp4(root / "short_ref.mp4", (data[0].video[:, :9] + 1) / 2, 8)
    (root / "corrupt_ref.mp4").write_bytes(b"not a video" * 10)
    for name in ("wide_ref", "short_ref", "corrupt_ref"):
        rows.append({"media_path": "clip0.mp4", "reference_path": f"{name}.mp4", "caption": f"{name} pair"})
    rows.append({"media_path": "clip1.mp4", "reference_path": "missing.mp4", "caption": "no reference file"})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "manifest.jsonl"


@pytest.fixture(scope="module")
def pair_cache(tmp_path_factory) -> tuple[Path, dict]:
    from train import preprocess

    root = tmp_path_factory.mktemp("pairs")
    out = tmp_path_factory.mktemp("cache") / "cache"
    index = preprocess.run(preprocess.PreprocessConfig(data=str(_pairs(root)), out=str(out), text_tokens=96,
                                                       buckets=["17x64x64"], reference_downscale=2))
    return out, index


def test_preprocessing_encodes_references_and_skips_pairs_that_cannot_line_up(pair_cache):
    from ltx.data.latent_cache import LatentCache

    out, index = pair_cache
    assert len(index["items"]) == 7
    reasons = {Path(s["path"]).name + " " + s["reason"] for s in index["skipped"]}
    assert any("another aspect ratio" in r for r in reasons)
    assert any("short_ref.mp4 has 9 frames, the bucket 17" in r for r in reasons)
    assert any("reference corrupt_ref.mp4: unreadable or corrupt" in r for r in reasons)
    assert any("missing.mp4 not found" in r for r in reasons)
    cache = LatentCache(out)
    assert cache.references == (7, {2})
    item = cache[0]
    assert item["latents"].shape == (16, 3, 8, 8) and item["reference"].shape == (16, 3, 4, 4)
    # a rerun encodes nothing again
    from train import preprocess

    again = preprocess.run(preprocess.PreprocessConfig(data=str(Path(index["items"][0]["media_path"]).parent /
                                                                "manifest.jsonl"), out=str(out), text_tokens=96,
                                                       buckets=["17x64x64"], reference_downscale=2))
    assert [i["id"] for i in again["items"]] == [i["id"] for i in index["items"]]


def test_bad_reference_downscale_is_refused_with_the_valid_factors(tmp_path, pair_cache):
    from train import preprocess

    out, index = pair_cache
    manifest = Path(index["items"][0]["media_path"]).parent / "manifest.jsonl"
    with pytest.raises(ValueError, match=r"reference_downscale=3: bucket 17x64x64 / 3 .* valid factors for these "
                                         r"buckets: \[1, 2, 4, 8\]"):
        preprocess.check_config(preprocess.PreprocessConfig(data=str(manifest), out=str(tmp_path / "c"),
                                                            buckets=["17x64x64"], reference_downscale=3))
    with pytest.raises(ValueError, match="reference_downscale=0 is invalid"):
        preprocess.check_config(preprocess.PreprocessConfig(data=str(manifest), out=str(tmp_path / "c"),
                                                            reference_downscale=0))


def _cfg(cache: Path, run_dir: Path, **kw) -> finetune.FinetuneConfig:
    base = dict(model=_preset("ltx-demo"), data=str(cache), run_dir=str(run_dir), steps=4, batch_size=2, lr=1e-3,
                log_every=1, checkpoint_every=2, wandb=False, threads=1, reference_video=True,
                lora=finetune.LoRASettings(rank=4, targets=["to_q", "to_k", "to_v", "to_out.0"]),
                # validation (3 captions of the data by default) is tested on its own, not in every run
                validation=finetune.ValidationSettings(from_data=0))
    base.update(kw)
    return finetune.FinetuneConfig(**base)


def test_reference_tokens_sit_where_inference_puts_the_guides(pair_cache, tmp_path):
    """The trainer's prepended reference has the positions `apply_conditioning` gives an appended guide of the same
    latents, and the objective equals the inference layout's forward on the target tokens."""
    from ltx.ltxv.conditioning import GuideItem, apply_conditioning

    cache, _ = pair_cache
    trainer = finetune.Trainer(_cfg(cache, tmp_path / "run"))
    (_, mb), = list(trainer.micro_batches(0))
    assert mb.reference.shape == (2, 3 * 4 * 4, 16) and mb.x0.shape == (2, 3 * 8 * 8, 16)
    ref_latents = mb.reference[:1].transpose(1, 2).reshape(1, 16, 3, 4, 4)
    tok = apply_conditioning(torch.zeros(1, 16, 3, 8, 8), [], None, num_frames=17, fps=trainer.cfg.fps,
                             causal=trainer.dit.cfg.causal_temporal_positioning, generator=None, scale=(8, 8, 8),
                             guides=[GuideItem(torch.zeros(1, 3, 17, 32, 32), 1.0, 0, 2)],
                             encode_guide=lambda px: ref_latents)
    torch.testing.assert_close(tok.positions[:, :, -48:], mb.reference_positions[:1], atol=0, rtol=0)
    torch.testing.assert_close(tok.positions[:, :, :-48], mb.positions[:1], atol=0, rtol=0)
    with torch.no_grad():
        loss = finetune.flow_matching_objective(trainer.dit, mb)
        s = mb.sigma[:, None, None]
        x = torch.where(mb.cond_mask[..., None], mb.x0, (1 - s) * mb.x0 + s * mb.noise)
        sig = torch.where(mb.cond_mask, 0.0, mb.sigma[:, None])
        v = trainer.dit(torch.cat([x, mb.reference], 1), torch.cat([sig, torch.zeros(2, 48)], 1), mb.context,
                        mb.context_mask, torch.cat([mb.positions, mb.reference_positions], 2))[:, :-48]
        from ltx.core.losses import masked_flow_matching_loss

        torch.testing.assert_close(loss, masked_flow_matching_loss(v, mb.x0, mb.noise, mb.cond_mask), atol=1e-5,
                                   rtol=0)
        blind = dataclasses_replace(mb, reference=torch.zeros_like(mb.reference))
        assert (finetune.flow_matching_objective(trainer.dit, blind) - loss).abs().max() > 1e-6  # it is seen


def dataclasses_replace(obj, **kw):
    import dataclasses

    return dataclasses.replace(obj, **kw)


def test_reference_run_exports_an_ic_lora_that_drives_generate(pair_cache, tmp_path):
    cache, index = pair_cache
    run = tmp_path / "run"
    controls = [index["items"][0]["reference_path"]]
    report = finetune.train(_cfg(cache, run, validation=finetune.ValidationSettings(
        prompts=["a red circle moves to the left"], controls=controls, steps=2)))
    assert report["steps"] == 4
    lora = run / "lora.safetensors"
    w = load_lora_file(lora)
    assert w.metadata["reference_downscale_factor"] == "2"
    assert (run / "samples" / "step_000004.png").is_file()
    out = tmp_path / "gen"
    cmd = [sys.executable, "-m", "infer.generate", 'prompts=["a red circle moves to the left"]', "steps=2",
           f"loras=[{{path: {lora}}}]", f"control=[{{path: {controls[0]}}}]", f"output_dir={out}", "name=ic"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (out / "ic" / "00_a_red_circle_moves_to_the_left.mp4").is_file()
    # bad control input: one line each, nothing written
    for arg, words in ((f"control=[{{path: {tmp_path}/nope.mp4}}]", "does not exist"),
                       (f"control=[{{path: {controls[0]}, strength: 2}}]", "control[0].strength=2"),
                       (f"control=[{{path: {controls[0]}, downscale: 3}}]", "valid here: [1, 2, 4, 8]"),
                       (f"control=[{{path: {controls[0]}, frame: 40}}]", "outside the video")):
        bad = subprocess.run(cmd[:-3] + [arg, f"output_dir={tmp_path}/bad"], capture_output=True, text=True, cwd=REPO)
        assert bad.returncode != 0 and words in bad.stderr, (arg, bad.stderr[-500:])
        assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert not (tmp_path / "bad").exists()


def test_reference_mode_refuses_caches_without_references(tmp_path, pair_cache):
    from train import preprocess

    cache, index = pair_cache
    src = Path(index["items"][0]["media_path"]).parent
    (tmp_path / "plain.jsonl").write_text(json.dumps({"media_path": str(src / "clip0.mp4"), "caption": "a clip"}))
    plain = tmp_path / "plain"
    preprocess.run(preprocess.PreprocessConfig(data=str(tmp_path / "plain.jsonl"), out=str(plain), text_tokens=96))
    with pytest.raises(ValueError, match="1 of the 1 clips .* have no reference: give every manifest row a "
                                         "reference_path"):
        finetune.Trainer(_cfg(plain, tmp_path / "r"))
    assert not (tmp_path / "r").exists()
    with pytest.raises(ValueError, match="need reference_video=true"):
        _cfg(cache, tmp_path / "r", reference_video=False,
             validation=finetune.ValidationSettings(prompts=["x"], controls=["a.mp4"]))
    with pytest.raises(ValueError, match="one control video per validation prompt"):
        _cfg(cache, tmp_path / "r", validation=finetune.ValidationSettings(prompts=["x", "y"], controls=["a.mp4"]))
    from train.distill import DistillConfig

    with pytest.raises(ValueError, match="distillation takes no references"):
        DistillConfig(model=_preset("ltx-demo"), data=str(cache), reference_video=True)


def _torchrun(n: int, cache: Path, run_dir: Path, *args: str) -> dict[int, float]:
    from conftest import run_losses, torchrun

    torchrun(n, "train.finetune", f"data={cache}", f"run_dir={run_dir}", "steps=4", "batch_size=2", "lr=1e-3",
             "log_every=1", "checkpoint_every=2", "wandb=false", "threads=1", "first_frame_p=0.5",
             "reference_video=true", "lora.rank=4", "validation.from_data=0", *args)
    return run_losses(run_dir)


@pytest.mark.slow
def test_reference_runs_split_over_processes_and_resume_exactly(pair_cache, tmp_path):
    """IC-LoRA training on 2 FSDP processes, stopped at step 2 and resumed on 1: the losses of 1 process."""
    cache, _ = pair_cache
    one = _torchrun(1, cache, tmp_path / "one")
    _torchrun(2, cache, tmp_path / "two", "parallel=fsdp", "stop_after=2")
    two = _torchrun(1, cache, tmp_path / "two")
    assert sorted(one) == sorted(two) == [1, 2, 3, 4]
    for k in one:
        assert two[k] == pytest.approx(one[k], rel=1e-5, abs=1e-7), (k, one, two)
