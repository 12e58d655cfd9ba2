"""LTX-2.0's text connectors (our feature extractor "v1": one shared D*L -> D projection feeding both connectors) in
diffusers 0.42.1's `LTX2TextConnectors(per_modality_projections=False)` layout, both ways
(ltx/ltx2/diffusers_components.py `text_connectors_to_diffusers` / `text_connectors_from_diffusers`).

1. ours -> diffusers loads strictly into diffusers' module built from the returned config. On the same random Gemma
   hidden states (a list of L (B, T, D) tensors for ours; for diffusers stacked and packed to (B, T, D*L) as
   `LTX2Pipeline._get_gemma_prompt_embeds` packs them) and one left-padded mask (a full prompt, a shorter one, a
   single token), diffusers' own forward (its `per_layer_masked_mean_norm`, `text_proj_in`, both connectors) equals
   our `EmbeddingsProcessor`: video and audio contexts and the context mask, fp32, max abs diff 0.0 (bitwise; the
   features alone too). diffusers keeps LTX-2.0's Gemma normalisation in the module, not in the pipeline, so its
   forward is the whole path. In bf16 the features are bitwise as well; the contexts differ by <= 1 bf16 ulp of
   their largest value because diffusers' `apply_split_rotary_emb` rotates q / k in fp32 and casts back, where ours
   (as ltx-core) rotates in the activations' dtype: with our rotation done in fp32 the bf16 contexts are bitwise.
2. ours -> diffusers -> ours is bitwise (config through JSON, every tensor the same object); the released
   `TextConnectorConfig.ltx2_19b()` maps to diffusers' own LTX-2.0 connector config (scripts/convert_ltx2_to_diffusers
   `get_ltx2_connectors_config("2.0")`) and back, with equal key sets and shapes on `meta`; a `save_pretrained`
   folder is read by `read_diffusers_component`; the converter writes a tiny official 19B file's connectors as a
   diffusers folder and reads them back bitwise.
3. What diffusers' layout can hold but ours cannot (and the reverse) is refused in one line.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import ltx2_tiny
import pytest
import torch

from ltx.core.checkpoint import CheckpointError
from ltx.ltx2 import diffusers_components as dc
from ltx.ltx2.text import EmbeddingsProcessor, TextConnectorConfig

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[2]

# video 2 x 8 and audio 4 x 4 heads: both 16 wide, as v1 requires (= text_dim); 4 registers for T = 8
CFG = TextConnectorConfig(feature_extractor="v1", text_dim=16, num_hidden_states=3, video_heads=2, video_head_dim=8,
                          video_layers=2, audio_heads=4, audio_head_dim=4, audio_layers=1, num_registers=4)
MASK = torch.tensor([[1] * 8, [0] * 3 + [1] * 5, [0] * 7 + [1]])  # left padded: full, shorter, one token
# diffusers' own LTX-2.0 connector config (scripts/convert_ltx2_to_diffusers.py, get_ltx2_connectors_config("2.0"),
# model_id Lightricks/LTX-2), plus the two keys save_pretrained writes with their defaults (unused by this layout)
RELEASED_2_0 = dict(
    caption_channels=3840, text_proj_in_factor=49, video_connector_num_attention_heads=30,
    video_connector_attention_head_dim=128, video_connector_num_layers=2, video_connector_num_learnable_registers=128,
    video_gated_attn=False, audio_connector_num_attention_heads=30, audio_connector_attention_head_dim=128,
    audio_connector_num_layers=2, audio_connector_num_learnable_registers=128, audio_gated_attn=False,
    connector_rope_base_seq_len=4096, rope_theta=10000.0, rope_double_precision=True, causal_temporal_positioning=False,
    rope_type="split", per_modality_projections=False, proj_bias=False)


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


def ours(cfg: TextConnectorConfig = CFG, seed: int = 4) -> EmbeddingsProcessor:
    return ltx2_tiny.randomize(EmbeddingsProcessor(cfg), seed=seed)


def to_diffusers(m: EmbeddingsProcessor):
    """(diffusers LTX2TextConnectors loaded strictly, config as config.json holds it, mapped state dict)."""
    from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors

    config, sd = dc.text_connectors_to_diffusers(m.config, m.state_dict())
    config = json.loads(json.dumps(config))
    ref = LTX2TextConnectors(**config)
    ref.load_state_dict(sd, strict=True)
    return ref.eval(), config, sd


def gemma_states(cfg: TextConnectorConfig = CFG, seed: int = 0) -> list[torch.Tensor]:
    """L hidden states (B, T, D) as Gemma returns them: per-layer offsets and scales, so the per-layer norm matters."""
    gen = torch.Generator().manual_seed(seed)
    B, T = MASK.shape
    return [torch.randn(B, T, cfg.text_dim, generator=gen) * (1 + 3 * i) + i for i in range(cfg.num_hidden_states)]


def packed(hidden: list[torch.Tensor]) -> torch.Tensor:
    """What `LTX2Pipeline._get_gemma_prompt_embeds` hands the connectors: stack(dim=-1).flatten(2, 3)."""
    return torch.stack(hidden, dim=-1).flatten(2, 3)


# ------------------------------------------------------------------------------------------------ 1. same outputs


@pytest.mark.parametrize("gated", [False, True], ids=["ltx2.0", "gated"])
def test_diffusers_forward_equals_ours_fp32(gated):
    from diffusers.pipelines.ltx2.connectors import per_layer_masked_mean_norm

    m = ours(dataclasses.replace(CFG, gated_attention=gated))
    ref, config, _ = to_diffusers(m)
    assert config["per_modality_projections"] is False and config["proj_bias"] is False
    hidden = gemma_states()
    with torch.no_grad():
        ov, oa, om = m(hidden, MASK)
        rv, ra, rm = ref(packed(hidden), MASK)  # padding_side="left", scale_factor=8: the pipeline's call
        # the feature stage alone: diffusers' normalisation function and its projection vs our FeatureExtractorV1
        x = torch.stack(hidden, dim=-1)
        rf = ref.text_proj_in(per_layer_masked_mean_norm(x, MASK.sum(dim=-1), x.device))
        of, of_audio = m.features(hidden, MASK)
    diffs = {"features": maxdiff(of, rf), "video": maxdiff(ov, rv), "audio": maxdiff(oa, ra)}
    print(f"gated={gated}", {k: f"{v:.1e}" for k, v in diffs.items()}, f"(max |video| {rv.abs().max():.2f})")
    assert of_audio is of  # one projection for both connectors, as diffusers' text_emb_proj
    assert torch.equal(of, rf) and torch.equal(ov, rv) and torch.equal(oa, ra), diffs
    assert torch.equal(om, rm) and om.dtype == rm.dtype == torch.int64  # all ones: registers fill the padding
    assert rv.abs().max() > 0.5 and rf[1, 3:].abs().min() > 0  # real values
    assert (rf[1, :3] == 0).all()  # padding features are zeroed, and the projection has no bias


def test_bf16_differs_only_by_diffusers_fp32_rope(monkeypatch):
    from diffusers.pipelines.ltx2.connectors import per_layer_masked_mean_norm

    import ltx.ltx2.text as text
    import ltx.ltx2.transformer as transformer

    m = ours().to(torch.bfloat16)
    ref = to_diffusers(ours())[0].to(torch.bfloat16)
    hidden = [h.bfloat16() for h in gemma_states()]
    with torch.no_grad():
        x = torch.stack(hidden, dim=-1)
        rf = ref.text_proj_in(per_layer_masked_mean_norm(x, MASK.sum(dim=-1), x.device))
        assert torch.equal(m.features(hidden, MASK)[0], rf)  # the normalisation's dtypes agree (fp32 mean, bf16 range)
        ov, oa, _ = m(hidden, MASK)
        rv, ra, _ = ref(packed(hidden), MASK)
        for o, r in ((ov, rv), (oa, ra)):
            ulp = 2.0 ** (math.floor(math.log2(r.abs().max().item())) - 7)  # bf16 spacing at the largest value
            print(f"bf16 context {maxdiff(o, r):.2e} (1 ulp {ulp:.2e})")
            assert maxdiff(o, r) <= ulp
        # the cause: our RoPE table in fp32 and the rotation upcast, as diffusers' apply_split_rotary_emb does
        table, rotate = text.rope_table, transformer.apply_rope
        monkeypatch.setattr(text, "rope_table", lambda *a, **k: table(*a, **{**k, "dtype": torch.float32}))
        monkeypatch.setattr(transformer, "apply_rope", lambda q, t: rotate(q.float(), t).to(q.dtype))
        ov, oa, _ = m(hidden, MASK)
    assert torch.equal(ov, rv) and torch.equal(oa, ra)


# ------------------------------------------------------------------------------------------------ 2. round trips


def test_round_trip_ours_diffusers_ours_bitwise():
    m = ours()
    _, config, sd = to_diffusers(m)
    assert {k.split(".")[0] for k in sd} == {"text_proj_in", "video_connector", "audio_connector"}
    assert torch.equal(sd["text_proj_in.weight"], m.feature_extractor.aggregate_embed.weight)  # D*L -> D, no bias
    cfg, back = dc.text_connectors_from_diffusers(config, sd)
    own = m.state_dict()
    assert cfg == m.config
    assert back.keys() == own.keys(), sorted(set(back) ^ set(own))
    assert all(a is b for a, b in zip(back.values(), sd.values()))  # renamed, not copied
    assert all(torch.equal(back[k], own[k]) for k in own)


def test_released_19b_config_is_diffusers_ltx2_0():
    from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors

    cfg = TextConnectorConfig.ltx2_19b()
    with torch.device("meta"):
        m = EmbeddingsProcessor(cfg)
    config, sd = dc.text_connectors_to_diffusers(cfg, m.state_dict())
    full = dc._full_config  # with diffusers' __init__ defaults for the keys left out: what its module is built from
    assert full("LTX2TextConnectors", config) == full("LTX2TextConnectors", RELEASED_2_0)
    with torch.device("meta"):
        ref = LTX2TextConnectors(**config)
    assert {k: tuple(t.shape) for k, t in sd.items()} == {k: tuple(t.shape) for k, t in ref.state_dict().items()}
    # a config.json as save_pretrained writes it holds video / audio_hidden_dim (defaults 4096 / 2048): not read
    saved = {"_class_name": "LTX2TextConnectors", **RELEASED_2_0, "video_hidden_dim": 4096, "audio_hidden_dim": 2048}
    assert dc.text_connectors_from_diffusers(saved, {})[0] == cfg


def test_save_pretrained_folder_reads_back(tmp_path):
    m = ours()
    ref = to_diffusers(m)[0]
    ref.save_pretrained(tmp_path / "connectors")
    read = dc.read_diffusers_component(tmp_path / "connectors", "text")
    assert not read.training and read.config == m.config
    assert all(torch.equal(read.state_dict()[k], t) for k, t in m.state_dict().items())
    hidden = gemma_states(seed=1)
    with torch.no_grad():
        for a, b in zip(read(hidden, MASK), ref(packed(hidden), MASK), strict=True):
            assert torch.equal(a, b)


def test_converter_writes_and_reads_19b_connectors(tmp_path, capsys):
    """tools/convert_weights.py --to diffusers on a tiny official LTX-2.0 file (the reference's own modules; every
    component, the connectors now included), then the diffusers folder back to an official file: the connectors'
    config and tensors as the source file holds them."""
    from ltx.ltx2 import checkpoint as ck

    sys.path.insert(0, str(REPO))
    from tools.convert_weights import main

    src, _ = ltx2_tiny.official_file(tmp_path / "tiny-19b.safetensors", "19b")
    dst, back = tmp_path / "diffusers", tmp_path / "back.safetensors"
    assert main([str(src), str(dst), "--to", "diffusers"]) == 0
    config = json.loads((dst / "connectors" / "config.json").read_text())
    assert config["_class_name"] == "LTX2TextConnectors" and config["per_modality_projections"] is False
    assert main([str(dst), str(back), "--to", "official"]) == 0
    capsys.readouterr()
    a, b = (ck.load(ck.read(p), ["text"])["text"] for p in (src, back))
    assert a.config == b.config and a.config.feature_extractor == "v1"
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------------ 3. refusals


def test_unrepresentable_v1_configs_are_refused_in_one_line(tmp_path):
    m = ours()
    _, config, sd = to_diffusers(m)
    cases = [
        ({**config, "proj_bias": True}, r"proj_bias=True has no counterpart here \(supported: False\)"),
        ({k: v for k, v in config.items() if k != "rope_type"},  # diffusers' default: interleaved
         r"rope_type='interleaved' has no counterpart here \(supported: 'split'\)"),
        ({**config, "audio_connector_num_attention_heads": 2},
         r"per_modality_projections=False \(LTX-2.0\) feeds its caption_channels=16-wide projection to both "
         r"connectors, but audio is 2\*4 wide \(heads \* head dim must equal caption_channels\)"),
        ({**config, "video_connector_num_learnable_registers": None, "audio_connector_num_learnable_registers": None},
         "connectors without learnable registers have no counterpart here"),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError, match=message) as err:
            dc.text_connectors_from_diffusers(bad, sd)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"has connector MLP biases; this model has none") as err:
        dc.text_connectors_to_diffusers(dataclasses.replace(CFG, ff_bias=False), {})
    with pytest.raises(ValueError, match=r"key 'feature_extractor\.video_aggregate_embed\.weight' is not a V1 "
                                         r"text-connector key"):
        dc.text_connectors_to_diffusers(CFG, {"feature_extractor.video_aggregate_embed.weight": torch.zeros(1)})
    # through the folder reader: CheckpointError, one line, naming the folder
    ref = to_diffusers(m)[0]
    ref.save_pretrained(tmp_path / "connectors")
    path = tmp_path / "connectors" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "proj_bias": True}))
    with pytest.raises(CheckpointError) as err:
        dc.read_diffusers_component(tmp_path / "connectors", "text")
    assert str(err.value).startswith(str(tmp_path / "connectors")) and "\n" not in str(err.value)
    assert str(err.value).endswith("proj_bias=True has no counterpart here (supported: False)")
