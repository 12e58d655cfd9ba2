"""Reading diffusers 0.42.1's LTX-2 component layouts back into ours (ltx/ltx2/diffusers_components.py).

1. Round trips ours -> diffusers -> ours (the config through JSON, as config.json holds it) for the video VAE,
   audio VAE and vocoder of the LTX-2.0 ("19b") and 2.3 / 2.5 ("2.3") layouts and the 2.3 / 2.5 text connectors
   (LTX-2.0's: tests/ltx2/test_ltx2_connectors20_diffusers.py): configs equal, every tensor the same object.
2. The independent check: diffusers' own models, built from the forward-mapped config and loaded strictly,
   written with `save_pretrained`, read back with `read_diffusers_component`; our read-back modules against
   diffusers' on one small input, fp32, max abs difference <= 1e-5: the video decode and encode, audio-VAE
   decode + vocoder (as diffusers' pipeline ends, test_ltx2_25_e2e's helpers), the vocoder alone, the connectors.
   LTX-2.5's duration head the same way (its own test below).
3. The table of diffusers' __init__ defaults (used for keys a config.json leaves out) equals diffusers'
   signatures; unrepresentable configs are refused with one line.
"""

from __future__ import annotations

import dataclasses
import inspect
import json

import ltx2_tiny
import pytest
import torch

from ltx.core.checkpoint import CheckpointError
from ltx.ltx2 import diffusers_components as dc
from ltx.ltx2.audio_vae import AudioVAE, AudioVAEConfig
from ltx.ltx2.text import EmbeddingsProcessor, TextConnectorConfig
from ltx.ltx2.vae import VideoVAE, VideoVAEConfig
from ltx.ltx2.vocoder import VocoderConfig, build_vocoder

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = 1e-5
LAYOUTS = ("19b", "2.3")
TEXT_CFG = TextConnectorConfig(feature_extractor="v2", text_dim=8, num_hidden_states=3, video_heads=2,
                               video_head_dim=8, video_layers=1, audio_heads=2, audio_head_dim=4, audio_layers=1,
                               gated_attention=True, num_registers=4)


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


def ours(layout: str) -> dict[str, torch.nn.Module]:
    """Our tiny modules of a layout (ltx2_tiny's metadata configs), random weights."""
    meta = ltx2_tiny.config(layout)
    return {"vae": ltx2_tiny.randomize(VideoVAE(VideoVAEConfig.from_metadata(meta["vae"])), seed=1),
            "audio_vae": ltx2_tiny.randomize(AudioVAE(AudioVAEConfig.from_metadata(meta["audio_vae"])), seed=2),
            "vocoder": ltx2_tiny.randomize(build_vocoder(VocoderConfig.from_metadata(meta["vocoder"])), seed=3),
            "text": ltx2_tiny.randomize(EmbeddingsProcessor(TEXT_CFG), seed=4)}


def forward(name: str, module) -> tuple[str, dict, dict[str, torch.Tensor]]:
    """(diffusers class, config as config.json holds it, state dict) of one of our modules."""
    sd = module.state_dict()
    if name == "vocoder":
        cls, config, out = dc.vocoder_to_diffusers(module.cfg, sd)
    else:
        fn = {"vae": dc.video_vae_to_diffusers, "audio_vae": dc.audio_vae_to_diffusers,
              "text": dc.text_connectors_to_diffusers}[name]
        config, out = fn(module.config if name == "text" else module.cfg, sd)
        cls = {"vae": "AutoencoderKLLTX2Video", "audio_vae": "AutoencoderKLLTX2Audio",
               "text": "LTX2TextConnectors"}[name]
    return cls, json.loads(json.dumps(config)), out


def inverse(name: str, cls: str, config: dict, sd: dict):
    if name == "vocoder":
        return dc.vocoder_from_diffusers(cls, config, sd)
    return {"vae": dc.video_vae_from_diffusers, "audio_vae": dc.audio_vae_from_diffusers,
            "text": dc.text_connectors_from_diffusers}[name](config, sd)


def components(layout: str) -> tuple[str, ...]:
    return ("vae", "audio_vae", "vocoder") + (("text",) if layout == "2.3" else ())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_round_trip_ours_diffusers_ours(layout):
    modules = ours(layout)
    for name in components(layout):
        m = modules[name]
        cls, config, sd = forward(name, m)
        cfg, back = inverse(name, cls, config, sd)
        own = m.state_dict()
        if name == "vae":
            want = dataclasses.replace(m.cfg, extra_statistics=False)
            own = {k: v for k, v in own.items() if k not in dc._DROPPED_STATS}
        elif name == "vocoder":
            want = m.cfg if isinstance(m.cfg, VocoderConfig) else VocoderConfig(vocoder=m.cfg)
        else:
            want = m.config if name == "text" else m.cfg
        assert cfg == want, name
        assert back.keys() == own.keys(), (name, sorted(set(back) ^ set(own))[:5])
        assert all(a is b for a, b in zip(back.values(), sd.values()))  # renamed, not copied
        assert all(torch.equal(back[k], own[k]) for k in own), name


def _diffusers_module(name: str, cls: str, config: dict, sd: dict):
    import diffusers
    from diffusers.pipelines.ltx2 import connectors, vocoder

    where = {"vocoder": vocoder, "text": connectors}.get(name, diffusers)
    module = getattr(where, cls)(**config)
    module.load_state_dict(sd, strict=True)
    return module.eval()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_save_pretrained_folders_read_back_match_diffusers(layout, tmp_path):
    from types import SimpleNamespace

    import test_ltx2_25_e2e as e2e
    from diffusers.pipelines.ltx2.pipeline_ltx2 import LTX2Pipeline as P

    modules, ref, read = ours(layout), {}, {}
    for name in components(layout):
        cls, config, sd = forward(name, modules[name])
        ref[name] = _diffusers_module(name, cls, config, sd)
        ref[name].save_pretrained(tmp_path / name)
        read[name] = dc.read_diffusers_component(tmp_path / name, name)
        assert not read[name].training
    gen = torch.Generator().manual_seed(3)
    video_latent, audio_latent = torch.randn(1, 128, 2, 2, 2, generator=gen), torch.randn(1, 8, 5, 16, generator=gen)
    of, ow = e2e._our_decode(read, video_latent, audio_latent)
    rf, rw = e2e._diffusers_decode(SimpleNamespace(**ref), video_latent, audio_latent)
    mel = torch.randn(1, 2, 6, 64, generator=gen)
    pixels = torch.rand(1, 3, 9, 32, 32, generator=gen) * 2 - 1
    with torch.no_grad():
        vae = ref["vae"]
        z = P._normalize_latents(vae.encode(pixels).latent_dist.mode(), vae.latents_mean, vae.latents_std)
        diffs = {"frames": maxdiff(of, rf), "waveform": maxdiff(ow, rw),
                 "encoder": maxdiff(read["vae"].encode(pixels), z),
                 "vocoder": maxdiff(read["vocoder"](mel), ref["vocoder"](mel))}
        if "text" in read:
            hidden = torch.randn(2, 8, TEXT_CFG.text_dim, TEXT_CFG.num_hidden_states, generator=gen)
            mask = torch.tensor([[1] * 8, [0] * 3 + [1] * 5])
            ov, oa, _ = read["text"](hidden, mask)
            rv, ra, _ = ref["text"](hidden, mask)
            diffs.update(text_video=maxdiff(ov, rv), text_audio=maxdiff(oa, ra))
    print(layout, {k: f"{v:.2e}" for k, v in diffs.items()}, f"frames std {rf.std():.2f}, wave std {rw.std():.3f}")
    assert all(v <= TOL for v in diffs.values()), diffs
    assert rf.std() > 0.01 and rw.std() > 0.005  # real values, not saturated or silent


def test_defaults_table_is_diffusers_signatures():
    import diffusers
    from diffusers.pipelines.ltx2 import connectors, duration_head, vocoder

    for cls, table in dc._DIFFUSERS_DEFAULTS.items():
        where = connectors if cls == "LTX2TextConnectors" else vocoder if "Vocoder" in cls else \
            duration_head if cls == "LTX2DurationHead" else diffusers
        params = inspect.signature(getattr(where, cls).__init__).parameters
        theirs = {k: dc._plain(p.default) for k, p in params.items() if k != "self"}
        assert {k: dc._plain(v) for k, v in table.items()} == theirs, cls


def test_unrepresentable_configs_are_refused_in_one_line(tmp_path):
    m = ours("2.3")
    cls, config, sd = forward("vae", m["vae"])
    bad = [("vae", cls, {**config, "decoder_causal": True},
            "diffusers AutoencoderKLLTX2Video decoder_causal=True has no counterpart here (supported: False)"),
           ("vae", cls, {**config, "decoder_block_out_channels": [8, 16, 40, 80]},
            "the official layout needs 8 x decoder_base_channels"),
           ("vae", cls, {**config, "some_new_key": 1}, "config keys ['some_new_key'] are not known"),
           ("text", *forward("text", m["text"])[:2], None)]
    bad[-1] = ("text", bad[-1][1], {**bad[-1][2], "per_modality_projections": False},
               "proj_bias=True has no counterpart here (supported: False)")  # the LTX-2.0 layout has no bias
    for name, c, cfg, message in bad:
        with pytest.raises(ValueError) as err:
            inverse(name, c, cfg, {})
        assert message in str(err.value) and "\n" not in str(err.value)
    cls, config, sd = forward("vocoder", m["vocoder"])
    with pytest.raises(ValueError, match=r"final_act_fn=None has no counterpart in the official layout"):
        dc.vocoder_from_diffusers(cls, {**config, "final_act_fn": None}, sd)
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLLTX2Video",
                                                              **forward("vae", m["vae"])[1], "decoder_causal": True}))
    torch.save({}, tmp_path / "vae" / "x.bin")
    with pytest.raises(CheckpointError, match="no .safetensors weights"):
        dc.read_diffusers_component(tmp_path / "vae", "vae")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "vae" / "w.safetensors"))
    with pytest.raises(CheckpointError) as err:
        dc.read_diffusers_component(tmp_path / "vae", "vae")
    assert str(err.value).endswith("decoder_causal=True has no counterpart here (supported: False)")
    assert "\n" not in str(err.value)


def test_duration_head_both_ways(tmp_path):
    """LTX-2.5's duration head: ours -> diffusers (the packed q/k/v split) loads strictly into diffusers'
    `LTX2DurationHead`, `save_pretrained` folder -> `read_diffusers_component` gives back our tensors bitwise, and
    both predict the same seconds (fp32, <= 1e-5)."""
    from diffusers.pipelines.ltx2.duration_head import LTX2DurationHead

    from ltx.ltx2.duration import DurationHead, DurationHeadConfig

    m = ltx2_tiny.randomize(DurationHead(DurationHeadConfig(video_dim=16, audio_dim=8, hidden=16, queries=2, heads=2,
                                                            mlp_hidden=8)), seed=7).eval()
    config, sd = dc.duration_head_to_diffusers(m.cfg, m.state_dict())
    config = json.loads(json.dumps(config))
    cfg, back = dc.duration_head_from_diffusers(config, sd)
    assert cfg == m.cfg and back.keys() == m.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in m.state_dict().items())
    theirs = LTX2DurationHead(**config)
    theirs.load_state_dict(sd, strict=True)
    theirs.save_pretrained(tmp_path / "duration_head")
    read = dc.read_diffusers_component(tmp_path / "duration_head", "duration_head")
    assert all(torch.equal(read.state_dict()[k], v) for k, v in m.state_dict().items())
    gen = torch.Generator().manual_seed(2)
    video, audio = torch.randn(2, 7, 16, generator=gen), torch.randn(2, 7, 8, generator=gen)
    with torch.no_grad():
        ours_s, theirs_s = read(video, audio), theirs.eval()(video, audio)
    assert maxdiff(ours_s.reshape(-1), theirs_s.reshape(-1)) <= TOL and ours_s.abs().max() > 0
