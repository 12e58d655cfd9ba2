"""The LTX-2.5 transformer flags (ltx/ltx2/transformer.py) against diffusers 0.42.1's LTX2VideoTransformer3DModel,
the one reference that runs 2.5 (PyPI's ltx-core stops at 1.0.0 = LTX-2.3).

Tiny random-weight 2.3 and 2.5 configs; our state dict goes into diffusers through the key map of
ltx/ltx2/diffusers_layout.py with a strict load; both streams, text masks, a 0/1 video self-attention mask, STG
(all rows and one row), modality isolation and the 2.5 keyframe marker. The released full-size 2.5 config is built
on `meta` in both and compared key by key. 2.3 keeps its ltx-core 1.0.0 parity in test_ltx2_transformer.py.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from diffusers import LTX2VideoTransformer3DModel
from test_ltx2_transformer import F_LAT, H_LAT, META_23, W_LAT, B, make_inputs, max_diff, randomize_

from ltx.ltx2.diffusers_layout import (
    config_from_diffusers,
    diffusers_transformer_config,
    transformer_from_diffusers,
    transformer_to_diffusers,
)
from ltx.ltx2.transformer import AVTransformer, AVTransformerConfig, Perturbations, StreamInput

META_25 = {**META_23, "use_prompt_adaln_single": False, "ff_bias": False, "use_keyframes_abs_pos_embedding": True}
L = 3


def tiny(version: str) -> AVTransformerConfig:
    cfg = AVTransformerConfig(
        num_layers=L, num_attention_heads=2, attention_head_dim=8, audio_num_attention_heads=2,
        audio_attention_head_dim=4, in_channels=32, out_channels=24, audio_in_channels=20, audio_out_channels=12,
        cross_attention_dim=16, audio_cross_attention_dim=8, caption_channels=12,
        apply_gated_attention=True, cross_attention_adaln=True, caption_proj_before_connector=True)
    if version == "2.5":
        cfg = dataclasses.replace(cfg, use_prompt_adaln_single=False, ff_bias=False,
                                  use_keyframes_abs_pos_embedding=True)
    return cfg


_MODELS: dict[str, tuple[AVTransformer, LTX2VideoTransformer3DModel]] = {}


def models(version: str) -> tuple[AVTransformer, LTX2VideoTransformer3DModel]:
    if version not in _MODELS:
        cfg = tiny(version)
        ours = AVTransformer(cfg)
        randomize_(ours, seed=7)
        ref = LTX2VideoTransformer3DModel(**diffusers_transformer_config(cfg))
        ref.load_state_dict(transformer_to_diffusers(ours.state_dict()), strict=True)
        _MODELS[version] = (ours.eval(), ref.eval())
    return _MODELS[version]


def inputs(cfg: AVTransformerConfig) -> dict:
    inp = make_inputs(cfg, seed=3)
    inp["video"]["attention_mask"] = (inp["video"]["attention_mask"] > 0).float()  # 0/1: see diffusers_layout
    inp["audio"]["attention_mask"] = None  # diffusers has none
    return inp


def run_ref(ref, inp: dict, keyframes: torch.Tensor | None = None, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    v, a = inp["video"], inp["audio"]
    with torch.no_grad():
        return ref(
            hidden_states=v["x"], audio_hidden_states=a["x"], encoder_hidden_states=v["context"],
            audio_encoder_hidden_states=a["context"], timestep=v["timesteps"] * 1000,
            audio_timestep=a["timesteps"] * 1000, sigma=v["sigma"] * 1000, audio_sigma=a["sigma"] * 1000,
            encoder_attention_mask=v["context_mask"], audio_encoder_attention_mask=a["context_mask"],
            video_coords=v["positions"], audio_coords=a["positions"], use_cross_timestep=True,
            video_self_attention_mask=v["attention_mask"],
            video_keyframes_mask=None if keyframes is None else keyframes[..., None], return_dict=False, **kw)


def run_ours(ours, inp: dict, perturb: Perturbations | None = None, keyframes: torch.Tensor | None = None):
    with torch.no_grad():
        return ours(StreamInput(**inp["video"], keyframes_mask=keyframes), StreamInput(**inp["audio"]), perturb)


CASES = {
    "plain": (None, {}),
    "stg_all_rows": (lambda: Perturbations.stg(L, B, blocks=[1]), dict(spatio_temporal_guidance_blocks=[1])),
    "stg_row0": (lambda: Perturbations.stg(L, B, blocks=[0, 2], rows=[0]),
                 dict(spatio_temporal_guidance_blocks=[0, 2], perturbation_mask=torch.tensor([0.0, 1.0]))),
    "isolated": (lambda: Perturbations.isolate_modalities(L, B), dict(isolate_modalities=True)),
}


@pytest.mark.parametrize("version", ["2.3", "2.5"])
@pytest.mark.parametrize("case", list(CASES))
def test_forward_matches_diffusers(version: str, case: str):
    ours, ref = models(version)
    inp = inputs(ours.cfg)
    make_perturb, ref_kw = CASES[case]
    ov, oa = run_ours(ours, inp, make_perturb() if make_perturb else None)
    rv, ra = run_ref(ref, inp, **ref_kw)
    dv, da = max_diff(ov, rv), max_diff(oa, ra)
    print(f"{version} {case}: video {dv:.2e} audio {da:.2e} (scale {rv.abs().max():.2f} / {ra.abs().max():.2f})")
    assert dv <= 1e-5 and da <= 1e-5
    if case != "plain":  # the perturbation must change something, or the comparison proves little
        pv, pa = run_ours(ours, inp)
        assert max(max_diff(pv, ov), max_diff(pa, oa)) > 1e-3


def test_keyframe_marker_matches_diffusers():
    ours, ref = models("2.5")
    with torch.no_grad():
        ours.keyframes_abs_pos_embedding.normal_(0, 0.5, generator=torch.Generator().manual_seed(2))
        ref.keyframes_abs_pos_embedding.copy_(ours.keyframes_abs_pos_embedding)
    try:
        inp = inputs(ours.cfg)
        marks = torch.zeros(B, F_LAT * H_LAT * W_LAT)
        marks[0, : H_LAT * W_LAT] = 1.0  # the first latent frame of row 0
        marks[1, -1] = 3.0  # any nonzero marks
        ov, oa = run_ours(ours, inp, keyframes=marks)
        rv, ra = run_ref(ref, inp, keyframes=marks)
        assert max_diff(ov, rv) <= 1e-5 and max_diff(oa, ra) <= 1e-5
        nv, _ = run_ours(ours, inp)
        assert max_diff(nv, ov) > 1e-3  # the marker is used
    finally:
        with torch.no_grad():
            ours.keyframes_abs_pos_embedding.zero_()
            ref.keyframes_abs_pos_embedding.zero_()


def test_v25_text_modulation_does_not_depend_on_the_step():
    """2.5's text K/V are the same at every step (cacheable): changing only the step sigma must leave the text
    cross-attention input unchanged, while in 2.3 it changes it."""
    seen = {}
    for version in ("2.3", "2.5"):
        ours, _ = models(version)
        contexts = []
        hook = ours.transformer_blocks[0].attn2.to_k.register_forward_hook(lambda m, a, o, c=contexts: c.append(a[0]))
        inp = inputs(ours.cfg)
        run_ours(ours, inp)
        inp["video"]["sigma"] = inp["video"]["sigma"] * 0.5
        run_ours(ours, inp)
        hook.remove()
        seen[version] = max_diff(contexts[0], contexts[1])
    assert seen["2.5"] == 0.0 and seen["2.3"] > 1e-3


def test_keyframes_mask_needs_the_embedding():
    ours, _ = models("2.3")
    inp = inputs(ours.cfg)
    with pytest.raises(ValueError, match="keyframes_mask was given for a stream without a keyframe embedding"):
        ours(StreamInput(**inp["video"], keyframes_mask=torch.ones(B, F_LAT * H_LAT * W_LAT)), None)


# ---------------------------------------------------------------------------------------------------- layout


def test_key_map_round_trips_and_config_round_trips():
    for version in ("2.3", "2.5"):
        ours, ref = models(version)
        sd = ours.state_dict()
        back = transformer_from_diffusers(transformer_to_diffusers(sd))
        assert list(back) == list(sd) and all(back[k] is sd[k] for k in sd)
        assert config_from_diffusers(dict(ref.config)) == ours.cfg


def test_full_size_25_keys_and_shapes():
    cfg = AVTransformerConfig.from_metadata(META_25)
    assert cfg == AVTransformerConfig.ltx2_5_22b() and cfg.version == "2.5"
    with torch.device("meta"):
        ours = AVTransformer(cfg)
        ref = LTX2VideoTransformer3DModel(**diffusers_transformer_config(cfg))
    ours_shapes = {k: tuple(v.shape) for k, v in transformer_to_diffusers(ours.state_dict()).items()}
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert sorted(set(ours_shapes) ^ set(ref_shapes)) == []
    assert ours_shapes == ref_shapes
    keys = set(ours.state_dict())
    # 2.5 against 2.3: no prompt AdaLN MLPs, no video MLP biases (2 per block), one keyframe marker
    with torch.device("meta"):
        keys23 = set(AVTransformer(AVTransformerConfig.from_metadata(META_23)).state_dict())
    prompt_mlps = {k for k in keys23 if k.startswith(("prompt_adaln_single.", "audio_prompt_adaln_single."))}
    ff_biases = {f"transformer_blocks.{i}.ff.{m}.bias" for i in range(48) for m in ("net.0.proj", "net.2")}
    assert len(prompt_mlps) == 12 and keys23 - keys == prompt_mlps | ff_biases
    assert keys - keys23 == {"keyframes_abs_pos_embedding"}


def test_versions_and_metadata():
    assert AVTransformerConfig.ltx2_19b().version == "2.0"
    assert AVTransformerConfig.ltx2_3_22b().version == "2.3"
    assert AVTransformerConfig.ltx2_5_22b().version == "2.5"
    meta23 = AVTransformerConfig.ltx2_3_22b().to_metadata()
    assert not {"use_prompt_adaln_single", "ff_bias", "audio_ff_bias", "use_keyframes_abs_pos_embedding"} & set(meta23)
    assert AVTransformerConfig.from_metadata(AVTransformerConfig.ltx2_5_22b().to_metadata()).version == "2.5"
    with pytest.raises(ValueError, match=r"transformer.ff_bias='no' is not supported \(supported: true, false\)"):
        AVTransformerConfig.from_metadata({**META_25, "ff_bias": "no"})
