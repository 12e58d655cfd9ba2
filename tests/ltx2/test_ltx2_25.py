"""LTX-2.5 checkpoints and pipelines on tiny random weights: the split (one file per component) layout read as one
checkpoint, the duration head's default length, the distilled stage 1's Euler ancestral sampler, and the one-line
refusals (a 2.3 file given to a 2.5 preset and the reverse, a missing component file, files of two models).

The tiny 2.5 model is the tiny 2.3 bundle (tests/ltx2/ltx2_tiny.py) with a 2.5 transformer of the same widths and
a duration head; it is written with `write_modules` and then split into component files whose metadata holds only
their own config sub-dicts, as the released split files do."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import ltx2_tiny
import pytest
import test_ltx2_generate as generate_tests
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import ltx
from ltx.core.checkpoint import CheckpointError
from ltx.ltx2 import checkpoint as ckpt_io
from ltx.ltx2 import pipelines
from ltx.ltx2.api import ANCESTRAL_SEED_OFFSET, family
from ltx.ltx2.duration import DurationHead, DurationHeadConfig, duration_frames
from ltx.ltx2.text import model_version_tuple as version_tuple
from ltx.ltx2.transformer import AVTransformer
from ltx.presets import load_preset

pytestmark = pytest.mark.usefixtures("one_thread")
SPLIT = {"transformer": ("transformer", "text"), "video_vae": ("vae",), "audio_vae": ("audio_vae", "vocoder"),
         "duration_head": ("duration_head",)}
SECONDS = 2.0  # what the tiny duration head predicts: exp(bias), every weight of its last layer zero
LTX_GEMMA = "gemma4-12b-ltx-v1"  # the 2.5 text encoder's gemma_version (metadata gemma_source_checkpoint)


def _gemma4_folder(folder: Path) -> Path:
    """A tiny LTX Gemma 4 (gemma4_unified, stamped gemma_version) of the width and depth the tiny text side reads
    (8 wide, 48 layers: 49 hidden states), with the words of the tiny Gemma 3's tokenizer."""
    from transformers import Gemma4UnifiedConfig, Gemma4UnifiedForConditionalGeneration

    generate_tests._gemma_folder(folder)  # its tokenizer (the Gemma 3 weights are overwritten below)
    (folder / "model.safetensors").unlink()
    v = 32
    cfg = Gemma4UnifiedConfig(
        text_config=dict(vocab_size=v, hidden_size=ltx2_tiny.TEXT_DIM, intermediate_size=16,
                         num_hidden_layers=ltx2_tiny.NUM_HIDDEN_STATES - 1, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=4, global_head_dim=8, sliding_window=8,
                         max_position_embeddings=2048,
                         layer_types=["sliding_attention", "full_attention"] * 24),
        vision_config=None, audio_config=None, boi_token_id=v - 1, eoi_token_id=v - 2, image_token_id=v - 3,
        video_token_id=v - 4, boa_token_id=v - 5, eoa_token_index=v - 6, audio_token_id=v - 7,
        gemma_version=LTX_GEMMA)
    torch.manual_seed(3)
    Gemma4UnifiedForConditionalGeneration(cfg).save_pretrained(folder)
    return folder


def _split(bundle: Path, folder: Path) -> list[Path]:
    """One file per SPLIT entry: the official keys of those components, the metadata config cut to what they read."""
    folder.mkdir()
    ckpt = ckpt_io.read(bundle)
    with safe_open(str(bundle), "pt") as f:
        meta = f.metadata()
        config = json.loads(meta["config"])
        out = []
        for stem, names in SPLIT.items():
            keys = [k for n in names for k in ckpt.keys[n].values()]
            subs = {ckpt_io.COMPONENTS[n].config_key or "duration_head" for n in names}
            if "duration_head" in subs:
                subs.add("transformer")  # its widths (only those two keys below)
            part = {s: config[s] for s in subs}
            if names == ("duration_head",):
                part["transformer"] = {k: config["transformer"][k]
                                       for k in ("cross_attention_dim", "audio_cross_attention_dim")}
            path = folder / f"ltx-2.5-tiny-{stem}.safetensors"
            save_file({k: f.get_tensor(k) for k in keys}, str(path),
                      metadata={"config": json.dumps(part), "model_version": meta["model_version"],
                                "gemma_source_checkpoint": json.dumps({"gemma_version": LTX_GEMMA})})
            out.append(path)
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ltx25")
    base, _ = ltx2_tiny.official_file(root / "tiny-2.3.safetensors", "2.3")
    modules = ckpt_io.load(base)
    cfg = dataclasses.replace(modules["transformer"].cfg, use_prompt_adaln_single=False, ff_bias=False,
                              use_keyframes_abs_pos_embedding=True)
    transformer = AVTransformer(cfg)
    ltx2_tiny.randomize(transformer, seed=5)
    with torch.no_grad():
        transformer.keyframes_abs_pos_embedding.zero_()
    head = ltx2_tiny.randomize(DurationHead(DurationHeadConfig(video_dim=cfg.inner_dim, audio_dim=cfg.audio_inner_dim,
                                                                hidden=16, queries=2, heads=2, mlp_hidden=8)), seed=6)
    with torch.no_grad():
        head.mlp_out.weight.zero_()
        head.mlp_out.bias.fill_(math.log(SECONDS))
    modules.update(transformer=transformer, duration_head=head)
    bundle = ckpt_io.write_modules(root / "tiny-2.5.safetensors", modules, model_version="2.5.0")
    parts = _split(bundle, root / "split")
    gen = generate_tests.files.__wrapped__(tmp_path_factory)  # the tiny Gemma, upsampler and media
    return {"bundle": bundle, "base23": base, "parts": parts, "folder": root / "split",
            "gemma4": _gemma4_folder(root / "gemma4"), **gen}


# ---------------------------------------------------------------------------------------------------- split files


def test_split_files_load_as_the_bundle(files):
    whole = ckpt_io.load(files["bundle"])
    for source in (files["folder"], files["parts"], list(reversed(files["parts"]))):
        ckpt = ckpt_io.read(source)
        assert set(ckpt.components) == set(whole) == {"transformer", "text", "vae", "audio_vae", "vocoder",
                                                      "duration_head"}
        assert ckpt.model_version == "2.5.0"
        split = ckpt_io.load(ckpt)
        for name, module in whole.items():
            a, b = module.state_dict(), split[name].state_dict()
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert ckpt_io.read(files["folder"]).keys["transformer"] == ckpt_io.read(files["bundle"]).keys["transformer"]


def test_split_files_written_back_as_one_bundle(files, tmp_path):
    out = ckpt_io.write(ckpt_io.read(files["folder"]), tmp_path / "joined.safetensors", layout="official")
    a, b = ckpt_io.load(out), ckpt_io.load(files["bundle"])
    assert all(torch.equal(x, y) for n in a for x, y in zip(a[n].state_dict().values(), b[n].state_dict().values()))


def _rewrite(src: Path, dst: Path, **metadata) -> Path:
    with safe_open(str(src), "pt") as f:
        save_file({k: f.get_tensor(k) for k in f.keys()}, str(dst), metadata={**f.metadata(), **metadata})
    return dst


def test_split_files_refused_in_one_line(files, tmp_path):
    parts = files["parts"]
    with pytest.raises(CheckpointError, match=r"is in both .*: give each component once"):
        ckpt_io.read([*parts, parts[1]])
    other = _rewrite(parts[1], tmp_path / "vae-2.3.safetensors", model_version="2.3.0")
    with pytest.raises(CheckpointError, match=r"the files are of different model versions: .*'2.5.0'.*'2.3.0'"):
        ckpt_io.read([parts[0], other, *parts[2:]])
    config = json.loads(safe_open(str(parts[3]), "pt").metadata()["config"])
    config["transformer"]["cross_attention_dim"] += 1
    bad = _rewrite(parts[3], tmp_path / "head.safetensors", config=json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config transformer.cross_attention_dim is 16 in .* but 17 in .*"
                                              r"these files are not one model"):
        ckpt_io.read([*parts[:3], bad])
    with pytest.raises(CheckpointError, match=r"holds no audio_vae, vocoder \(it holds: transformer, text, vae, "
                                              r"duration_head\); a split checkpoint needs every component's file"):
        ltx.open_pipeline([parts[0], parts[1], parts[3]], model=_preset(), text_encoder=files["gemma4"],
                          upsampler=files["up"], device="cpu", dtype="float32")


# ---------------------------------------------------------------------------------------------------- versions


def _preset(name: str = "ltx-2.5-22b-distilled"):
    preset = load_preset(name)
    preset.av.video.stg_blocks = [1]  # the tiny transformer has 2 blocks
    preset.av.audio.stg_blocks = [1]
    return preset


def test_versions():
    assert version_tuple("2.5.0") == (2, 5, 0) and version_tuple("2.3-rc1") == (2, 3)
    assert version_tuple("2.3.rc1") == (2, 3) and version_tuple("2") == (2,)
    assert [family(v) for v in ("2", "2.0.0", "2.3.0", "2.3-rc1", "2.5.0", "2.6")] == \
        ["2", "2", "2.3", "2.3", "2.5", "2.5"]


def test_a_2_3_file_for_2_5_and_the_reverse_are_refused(files, tmp_path):
    kw = dict(text_encoder=files["gemma"], upsampler=files["up"], device="cpu", dtype="float32")
    with pytest.raises(ValueError, match=r"text_encoder: text encoder mismatch: the checkpoint \(model_version "
                                         r"'2.5.0'\) was trained with gemma_version 'gemma4-12b-ltx-v1'"):
        ltx.open_pipeline(files["folder"], model=_preset(), **kw)  # the Gemma 3 folder for a 2.5 checkpoint
    with pytest.raises(ValueError, match=r"text_encoder: .*gemma4_unified"):
        ltx.open_pipeline(files["base23"], model=_preset("ltx-2.3-22b-distilled"), **(kw | dict(
            text_encoder=files["gemma4"])))  # the Gemma 4 folder for a 2.3 checkpoint
    with pytest.raises(ValueError, match=r"model_version '2.3.0'; the ltx-2.5-22b-distilled preset is for LTX-2.5 "
                                         r"\(pick model=ltx-2.3-22b-dev or -distilled\)"):
        ltx.open_pipeline(files["base23"], model=_preset(), **kw)
    kw["text_encoder"] = files["gemma4"]
    with pytest.raises(ValueError, match=r"model_version '2.5.0'; the ltx-2.3-22b-distilled preset is for LTX-2.3 "
                                         r"\(pick model=ltx-2.5-22b-dev or -distilled\)"):
        ltx.open_pipeline(files["folder"], model=_preset("ltx-2.3-22b-distilled"), **kw)
    relabelled = [_rewrite(files["parts"][0], tmp_path / "t.safetensors", model_version="2.3.0"),
                  *(_rewrite(p, tmp_path / p.name, model_version="2.3.0") for p in files["parts"][1:])]
    with pytest.raises(ValueError, match=r"model_version '2.3.0' but an LTX-2.5 transformer \(its metadata flags\)"):
        ltx.open_pipeline(relabelled, model=_preset("ltx-2.3-22b-distilled"), **kw)


# ---------------------------------------------------------------------------------------------------- pipelines


def test_duration_head_gives_the_default_length(files):
    pipe = ltx.open_pipeline(files["folder"], model=_preset(), text_encoder=files["gemma4"], upsampler=files["up"],
                             device="cpu", dtype="float32").load()
    assert pipe.has_duration_head and pipe.version == (2, 5, 0)
    assert pipe.image_crf == 18  # from the checkpoint's generation (the preset leaves it unset)
    text = pipe.encode_prompts("a dog barks at the sea")
    expected = duration_frames(SECONDS, 24.0)
    assert expected == 41 and pipe.predict_num_frames(text, 24.0) == expected  # 48 frames floored onto 8k + 1
    assert pipe.predict_num_frames(text, 12.0) == duration_frames(SECONDS, 12.0) == 17
    out = pipe("a dog barks at the sea", seed=1, height=128, width=128, frame_rate=24.0)
    assert out.frames.shape == (1, 3, expected, 128, 128) and torch.isfinite(out.frames).all()
    with pytest.raises(ValueError, match="the duration head predicts one length per prompt; 2 prompts need "
                                         "num_frames"):
        pipe.predict_num_frames(pipe.encode_prompts(["a dog", "red ball"]), 24.0)


def test_distilled_stage_1_is_euler_ancestral(files, monkeypatch):
    """The 2.5 distilled pipeline hands stage 1 (only) a generator seeded seed + 10000, and the ancestral loop
    changes the result; the same seed gives the same output twice."""
    seen = []
    sample = pipelines.sample
    monkeypatch.setattr(pipelines, "sample", lambda *a, **k: seen.append(k.get("ancestral")) or sample(*a, **k))
    pipe = ltx.open_pipeline(files["folder"], model=_preset(), text_encoder=files["gemma4"], upsampler=files["up"],
                             device="cpu", dtype="float32").load()
    request = dict(seed=4, height=128, width=128, num_frames=9, frame_rate=24.0)
    first = pipe("red ball", **request)
    assert len(seen) == 2 and seen[1] is None and isinstance(seen[0], torch.Generator)
    assert seen[0].initial_seed() == 4 + ANCESTRAL_SEED_OFFSET
    again = pipe("red ball", **request)
    assert torch.equal(first.frames, again.frames) and torch.equal(first.waveform, again.waveform)
    monkeypatch.setattr(type(pipe), "version", property(lambda self: (2, 3)))  # the same weights, plain Euler
    plain = pipe("red ball", **request)
    assert (plain.frames - first.frames).abs().max() > 1e-3


def test_generate_app_runs_split_files_with_the_predicted_length(files, tmp_path):
    """`python -m infer.generate model=ltx-2.5-22b-distilled checkpoint=<folder>` without num_frames: the mp4 has
    the duration head's frame count; several prompts without num_frames get one line."""
    import infer.generate as app
    from infer.output import InputError

    cfg = dict(model=_preset(), checkpoint=str(files["folder"]), text_encoder=str(files["gemma4"]),
               upsampler_checkpoint=str(files["up"]), prompts=["a dog barks at the sea"], height=128, width=128,
               fps=24.0, seed=3, device="cpu", output_dir=str(tmp_path / "out"))
    (path,) = app.run(app.GenerateConfig(**cfg))
    frames, audio, rate, channels = generate_tests._decode(path)
    assert frames.shape == (duration_frames(SECONDS, 24.0), 128, 128, 3) and channels == 2
    record = path.with_suffix(".yaml").read_text()
    assert "num_frames: 41" in record and "model_version: 2.5.0" in record
    with pytest.raises(InputError, match="2 prompts: the duration head predicts one length per prompt; give "
                                         r"num_frames=N \(8k \+ 1\) for several prompts"):
        app.run(app.GenerateConfig(**(cfg | dict(prompts=["a dog", "red ball"], output_dir=str(tmp_path / "o2")))))


# ---------------------------------------------------------------------------------------------------- diffusion VAE

DECODER = dict(in_channels=128, patch_size=4, head_dim=16, stage_channels=(32, 32, 32, 32, 32),
               stage_depths=(1, 1, 1, 1, 1), stage_kernels=((3, 1, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)),
               upsamples=(((1, 2, 2), 1), ((2, 1, 1), 1), ((2, 2, 2), 1), ((2, 2, 2), 1)), stage5_kernel=(3, 3, 3),
               t_emb_dim=32, default_num_inference_steps=2, model_output_type="x0")


@pytest.fixture(scope="module")
def diffusion_vae(tmp_path_factory):
    """A tiny diffusion-VAE file at the released scale (8, 32, 32), in the official layout (fused qkv)."""
    from ltx.ltx2.diffusion_decoder import DiffusionDecoder, DiffusionDecoderConfig, to_official_file

    cfg = DiffusionDecoderConfig(**DECODER)
    assert cfg.scale == (8, 32, 32)
    decoder = ltx2_tiny.randomize(DiffusionDecoder(cfg), seed=9)
    path = tmp_path_factory.mktemp("dvae") / "ltx-2.5-video-vae-tiny.safetensors"
    save_file({k: v.contiguous() for k, v in to_official_file(decoder.state_dict()).items()}, str(path),
              metadata={"config": json.dumps({"vae": cfg.to_metadata()}), "model_version": "2.5.0"})
    return path, decoder


def test_the_diffusion_decoder_decodes_the_video(files, diffusion_vae, monkeypatch):
    """vae=<diffusion-VAE file>: the frames are the diffusion decoder's decode of the final latent, its noise drawn
    from the run's generator where the stages left it (replayed here from the recorded state), and they differ from
    the conv decoder's."""
    from ltx.ltx2 import diffusion_decoder as dd

    path, decoder = diffusion_vae
    states = []
    decode = dd.decode
    monkeypatch.setattr(dd, "decode", lambda dec, lat, generator=None, **k: states.append(
        generator.get_state()) or decode(dec, lat, generator=generator, **k))
    kw = dict(model=_preset(), text_encoder=files["gemma4"], upsampler=files["up"], device="cpu", dtype="float32")
    pipe = ltx.load_pipeline(files["folder"], vae=path, **kw)
    request = dict(seed=2, height=128, width=128, num_frames=9, frame_rate=24.0)
    out = pipe("red ball", **request)
    assert len(states) == 1 and out.frames.shape == (1, 3, 9, 128, 128)
    replay = torch.Generator().set_state(states[0])
    with torch.no_grad():
        expected = decode(pipe.modules["video_decoder"], out.video_latent, generator=replay)
    assert torch.equal(out.frames, (expected.clamp(-1, 1) + 1) / 2)
    loaded = pipe.modules["video_decoder"].state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in decoder.state_dict().items())  # file -> module, bitwise
    conv = ltx.load_pipeline(files["folder"], **kw)("red ball", **request)
    assert torch.equal(conv.video_latent, out.video_latent) and (conv.frames - out.frames).abs().max() > 1e-2


def test_a_conv_vae_or_a_broken_decoder_file_is_refused(files, diffusion_vae, tmp_path):
    kw = dict(model=_preset(), text_encoder=files["gemma4"], upsampler=files["up"], device="cpu", dtype="float32")
    with pytest.raises(ValueError, match=r"is the convolutional VAE \(ltx.ltx2.vae\), not a diffusion decoder"):
        ltx.open_pipeline(files["folder"], vae=files["parts"][1], **kw)
    path, _ = diffusion_vae
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys() if "det_stages.0" not in k}
        meta = f.metadata()
    cut = tmp_path / "cut.safetensors"
    save_file(tensors, str(cut), metadata=meta)
    with pytest.raises(ValueError, match=r"the decoder tensors do not fit its metadata config: \d+ missing"):
        ltx.open_pipeline(files["folder"], vae=cut, **kw)


def test_converter_joins_split_files_and_names_a_diffusion_vae(files, diffusion_vae, tmp_path, capsys):
    """tools/convert_weights.py on the folder of split files: --dry-run lists them as LTX-2.5 split files,
    --to official writes one bundle whose components load bitwise as the split files' do; a diffusion-VAE file
    among them gets one line saying where it goes."""
    import shutil
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tools.convert_weights import main

    assert main([str(files["folder"]), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "LTX-2.5 official split files (model_version 2.5.0)" in out and "  duration_head: " in out
    joined = tmp_path / "joined.safetensors"
    assert main([str(files["folder"]), str(joined), "--to", "official"]) == 0
    a, b = ckpt_io.load(joined), ckpt_io.load(files["folder"])
    assert a.keys() == b.keys()
    assert all(torch.equal(x, y) for n in a for x, y in zip(a[n].state_dict().values(), b[n].state_dict().values()))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for p in files["parts"]:
        if "video_vae" not in p.name:
            shutil.copy(p, mixed / p.name)
    shutil.copy(diffusion_vae[0], mixed / "vae.safetensors")
    capsys.readouterr()
    assert main([str(mixed), "--dry-run"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a CausalDiffusionVAE (LTX-2.5's diffusion VAE) file: give the convolutional VAE" in err[0]


def test_generate_enhances_prompts_when_asked(files, tmp_path_factory, tmp_path):
    """enhance_prompt=true: the prompt the video is generated from is the enhancer's (greedy, so reproducible here),
    the yaml keeps both; LTX-2.5 without prompt_enhancer= gets one line."""
    import test_ltx2_enhance as enhance_tests
    import yaml

    import infer.generate as app
    from infer.output import InputError
    from ltx.ltx2.enhance import PromptEnhancer

    enhancer = enhance_tests.gemma4_folder.__wrapped__(tmp_path_factory)
    cfg = dict(model=_preset(), checkpoint=str(files["folder"]), text_encoder=str(files["gemma4"]),
               upsampler_checkpoint=str(files["up"]), prompts=["a dog barks at the sea"], height=128, width=128,
               num_frames=9, fps=24.0, seed=3, device="cpu", enhance_prompt=True)
    with pytest.raises(InputError, match=r"enhance_prompt=true with LTX-2.5: its Gemma 4 text encoder is not trained "
                                         r"for enhancement; give prompt_enhancer="):
        app.run(app.GenerateConfig(**cfg, output_dir=str(tmp_path / "a")))
    (path,) = app.run(app.GenerateConfig(**cfg, prompt_enhancer=str(enhancer), output_dir=str(tmp_path / "b")))
    record = yaml.safe_load(path.with_suffix(".yaml").read_text())
    expected = PromptEnhancer.from_folder(enhancer, dtype=torch.float32).enhance("a dog barks at the sea")
    assert record["original_prompt"] == "a dog barks at the sea" and record["prompt"] == expected != ""
    assert path.name == "00_a_dog_barks_at_the_sea.mp4"


def test_converter_writes_the_transformer_in_the_diffusers_layout(files, tmp_path, capsys):
    """--to diffusers: diffusers' own from_pretrained loads every component folder; the transformer computes our
    output and reads back into AVTransformer bitwise, the others hold our tensors under diffusers' names."""
    import sys

    from diffusers import LTX2VideoTransformer3DModel
    from test_ltx2_transformer25 import inputs as transformer_inputs
    from test_ltx2_transformer25 import run_ours, run_ref

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from ltx.ltx2.diffusers_layout import read_diffusers_transformer
    from tools.convert_weights import main

    assert main([str(files["folder"]), str(tmp_path / "d"), "--to", "diffusers"]) == 0
    ours = ckpt_io.load(files["folder"], "transformer")["transformer"]
    with torch.no_grad():  # the tiny file's keyframe marker is zero: make it count
        ours.keyframes_abs_pos_embedding.normal_(generator=torch.Generator().manual_seed(1))
    ref = LTX2VideoTransformer3DModel.from_pretrained(tmp_path / "d" / "transformer").eval()
    back = read_diffusers_transformer(tmp_path / "d" / "transformer")
    file_sd, back_sd = ckpt_io.load(files["folder"], "transformer")["transformer"].state_dict(), back.state_dict()
    assert file_sd.keys() == back_sd.keys() and all(torch.equal(file_sd[k], back_sd[k]) for k in file_sd)
    with torch.no_grad():
        ref.keyframes_abs_pos_embedding.copy_(ours.keyframes_abs_pos_embedding)
    inp = transformer_inputs(ours.cfg)
    marks = torch.zeros(inp["video"]["x"].shape[:2])
    marks[:, :4] = 1.0
    ov, oa = run_ours(ours, inp, keyframes=marks)
    rv, ra = run_ref(ref, inp, keyframes=marks)
    assert (ov - rv).abs().max() <= 1e-5 and (oa - ra).abs().max() <= 1e-5
    # the other components: diffusers' own classes load each folder, and hold our mapped tensors bitwise
    import diffusers
    import diffusers.pipelines.ltx2 as ltx2_pipes

    from ltx.ltx2 import diffusers_components as dc

    mods = ckpt_io.load(files["folder"])
    expected = {"connectors": dc.text_connectors_to_diffusers(mods["text"].config, mods["text"].state_dict())[1],
                "vae": dc.video_vae_to_diffusers(mods["vae"].cfg, mods["vae"].state_dict())[1],
                "audio_vae": dc.audio_vae_to_diffusers(mods["audio_vae"].cfg, mods["audio_vae"].state_dict())[1],
                "vocoder": dc.vocoder_to_diffusers(mods["vocoder"].cfg, mods["vocoder"].state_dict())[2],
                "duration_head": dc.duration_head_to_diffusers(mods["duration_head"].cfg,
                                                               mods["duration_head"].state_dict())[1]}
    for folder, want in expected.items():
        config = json.loads((tmp_path / "d" / folder / "config.json").read_text())
        cls = getattr(diffusers, config["_class_name"], None) or getattr(ltx2_pipes, config["_class_name"])
        model = cls.from_pretrained(tmp_path / "d" / folder)
        got = model.state_dict()
        assert set(want) <= set(got) and all(torch.equal(got[k], v) for k, v in want.items()), folder
    # and back: the diffusers folder -> one official bundled file, every tensor as the split files hold it
    back_file = tmp_path / "back.safetensors"
    assert main([str(tmp_path / "d"), str(back_file), "--to", "official"]) == 0
    again, source = ckpt_io.load(back_file), ckpt_io.load(files["folder"])
    assert ckpt_io.read(back_file).model_version == "2.5.0" and set(again) == set(source)
    for name, module in again.items():
        a, b = module.state_dict(), source[name].state_dict()
        dropped = {k for k in b if k.startswith("per_channel_statistics.") and k not in a}  # diffusers keeps 2 of 4
        assert set(a) == set(b) - dropped and all(torch.equal(a[k], b[k]) for k in a), name


def test_generate_writes_hdr_outputs(files, tmp_path):
    """hdr=acescct: beside the SDR mp4, half-float EXR frames (the decoded ACEScct codes, as written by
    ltx.ltx2.hdr) and a BT.2020 / HLG master; a bad colour space is one line."""
    import av

    import infer.generate as app
    from infer.output import InputError
    from ltx.ltx2.hdr import read_exr_frames

    cfg = dict(model=_preset(), checkpoint=str(files["folder"]), text_encoder=str(files["gemma4"]),
               upsampler_checkpoint=str(files["up"]), prompts=["red ball"], height=128, width=128, num_frames=9,
               fps=24.0, seed=3, device="cpu")
    with pytest.raises(InputError, match=r"hdr='pq': unknown HDR colour space 'pq'; valid: SRGB_LINEAR, ACESCG"):
        app.run(app.GenerateConfig(**cfg, hdr="pq", output_dir=str(tmp_path / "a")))
    (path,) = app.run(app.GenerateConfig(**cfg, hdr="acescct", output_dir=str(tmp_path / "b")))
    exr = read_exr_frames(path.with_name(path.stem + "_hdr_exr"))
    assert exr.shape == (9, 128, 128, 3) and exr.dtype == torch.float32
    pipe = ltx.load_pipeline(files["folder"], model=_preset(), text_encoder=files["gemma4"], upsampler=files["up"],
                             device="cpu", dtype="float32")
    frames = pipe("red ball", seed=3, height=128, width=128, num_frames=9, frame_rate=24.0).frames[0]
    # ACEScct codes = the decoded pixels in [0, 1], stored as half floats (rel. error <= 2^-11)
    assert (exr - frames.permute(1, 2, 3, 0)).abs().max() <= 2 ** -11
    with av.open(str(path.with_name(path.stem + "_hdr.mp4"))) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "hevc" and s.frames in (0, 9)
        frame = next(c.decode(video=0))
        assert frame.format.name == "yuv420p10le" and frame.color_trc == 18  # ARIB STD-B67 (HLG)


def test_exr_images_condition_in_linear_light(files, tmp_path):
    """An .exr conditioning image with hdr=<colour space>: its pixels are the official EXR conditioning (fitted in
    linear light, ACEScct-encoded; no H.264 round trip), which the pipeline encodes like any image; without hdr,
    one line."""
    from ltx.ltx2.conditioning import fit_image
    from ltx.ltx2.hdr import exr_conditioning, read_exr_frames, write_exr

    linear = torch.rand(90, 120, 3, generator=torch.Generator().manual_seed(0)) * 4  # scene-linear, above 1 too
    path = write_exr(tmp_path / "first.exr", linear) or tmp_path / "first.exr"
    pipe = ltx.open_pipeline(files["folder"], model=_preset(), text_encoder=files["gemma4"], upsampler=files["up"],
                             device="cpu", dtype="float32")
    req = pipe.check(height=128, width=128, num_frames=9, images=[(path, 0, 1.0)], hdr="acescg")
    stored = read_exr_frames(path)[0]  # the file's half floats
    assert (stored - linear).abs().max() <= 4 * 2 ** -11
    want = exr_conditioning(stored, 128, 128, "acescg", fit="center_crop")
    assert (fit_image(req.images[0].pixels, 128, 128) - want).abs().max() <= 1e-5
    with pytest.raises(ValueError, match=r"images\[0\] \(.*first.exr\): an EXR image needs hdr=srgb_linear\|acescg"):
        pipe.check(height=128, width=128, num_frames=9, images=[(path, 0, 1.0)])
    out = pipe.load()("red ball", seed=1, height=128, width=128, num_frames=9, images=[(path, 0, 1.0)], hdr="acescg")
    assert out.frames.shape == (1, 3, 9, 128, 128) and torch.isfinite(out.frames).all()
