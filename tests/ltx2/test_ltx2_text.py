"""Parity of ltx.ltx2.text against ltx-core 1.0.0 (`ltx_core/text_encoders/gemma/*`) on tiny random weights,
full-size key/shape equality on meta, config round trips and errors. fp32 tolerance 1e-5 (scale ~1)."""

from __future__ import annotations

import pytest
import torch
from ltx_core.model.transformer.rope import LTXRopeType
from ltx_core.text_encoders.gemma import (
    EMBEDDINGS_PROCESSOR_KEY_OPS,
    EmbeddingsProcessorConfigurator,
    convert_to_additive_mask,
)
from ltx_core.text_encoders.gemma import EmbeddingsProcessor as RefProcessor
from ltx_core.text_encoders.gemma.embeddings_connector import Embeddings1DConnector
from ltx_core.text_encoders.gemma.feature_extractor import FeatureExtractorV1 as RefV1
from ltx_core.text_encoders.gemma.feature_extractor import FeatureExtractorV2 as RefV2

from ltx.ltx2.text import (
    OFFICIAL_PREFIXES,
    EmbeddingsConnector,
    EmbeddingsProcessor,
    FeatureExtractorV1,
    FeatureExtractorV2,
    GemmaFolderMissing,
    GemmaTextEncoder,
    TextConnectorConfig,
)

# verbatim metadata `config["transformer"]` of ltx-2-19b-dev.safetensors and of the LTX-2.3 22B file (digest §0)
META_19B = {
    "_class_name": "AVTransformer3DModel", "_diffusers_version": "0.25.1", "activation_fn": "gelu-approximate",
    "attention_bias": True, "attention_head_dim": 128, "attention_type": "default", "audio_attention_head_dim": 64,
    "audio_cross_attention_dim": 2048, "audio_num_attention_heads": 32, "audio_out_channels": 128,
    "audio_positional_embedding_max_pos": [20], "av_ca_timestep_scale_multiplier": 1000.0, "av_cross_ada_norm": True,
    "caption_channels": 3840, "causal_temporal_positioning": True, "connector_attention_head_dim": 128,
    "connector_norm_output": True, "connector_num_attention_heads": 30, "connector_num_layers": 2,
    "connector_num_learnable_registers": 128, "connector_positional_embedding_max_pos": [4096],
    "cross_attention_dim": 4096, "cross_attention_norm": True, "double_self_attention": False, "dropout": 0.0,
    "frequencies_precision": "float64", "in_channels": 128, "norm_elementwise_affine": False, "norm_eps": 1e-06,
    "norm_num_groups": 32, "num_attention_heads": 32, "num_embeds_ada_norm": 1000, "num_layers": 48,
    "num_vector_embeds": None, "only_cross_attention": False, "out_channels": 128,
    "positional_embedding_max_pos": [20, 2048, 2048], "positional_embedding_theta": 10000.0,
    "positional_embedding_type": "rope", "qk_norm": "rms_norm", "rope_type": "split", "share_ff": False,
    "standardization_norm": "rms_norm", "timestep_scale_multiplier": 1000, "upcast_attention": False,
    "use_audio_video_cross_attention": True, "use_embeddings_connector": True, "use_linear_projection": False,
    "use_middle_indices_grid": True,
}
META_23 = {
    "_class_name": "AVTransformer3DModel", "activation_fn": "gelu-approximate", "apply_gated_attention": True,
    "attention_bias": True, "attention_head_dim": 128, "attention_type": "default", "audio_attention_head_dim": 64,
    "audio_connector_attention_head_dim": 64, "audio_connector_num_attention_heads": 32,
    "audio_cross_attention_dim": 2048, "audio_num_attention_heads": 32, "audio_out_channels": 128,
    "audio_positional_embedding_max_pos": [20], "av_ca_timestep_scale_multiplier": 1000.0, "av_cross_ada_norm": True,
    "caption_channels": 3840, "caption_proj_before_connector": True, "caption_proj_input_norm": False,
    "caption_projection_first_linear": False, "caption_projection_second_linear": False,
    "causal_temporal_positioning": True, "connector_apply_gated_attention": True, "connector_attention_head_dim": 128,
    "connector_learnable_registers_std": 1, "connector_norm_output": True, "connector_num_attention_heads": 32,
    "connector_num_layers": 8, "connector_num_learnable_registers": 128,
    "connector_positional_embedding_max_pos": [4096], "cross_attention_adaln": True, "cross_attention_dim": 4096,
    "cross_attention_norm": True, "double_self_attention": False, "dropout": 0.0, "frequencies_precision": "float64",
    "in_channels": 128, "norm_elementwise_affine": False, "norm_eps": 1e-6, "norm_num_groups": 32,
    "num_attention_heads": 32, "num_embeds_ada_norm": 1000, "num_layers": 48, "num_vector_embeds": None,
    "only_cross_attention": False, "out_channels": 128, "positional_embedding_max_pos": [20, 2048, 2048],
    "positional_embedding_theta": 10000.0, "positional_embedding_type": "rope", "qk_norm": "rms_norm",
    "rope_type": "split", "share_ff": False, "standardization_norm": "rms_norm",
    "text_encoder_norm_type": "per_token_rms", "timestep_scale_multiplier": 1000, "upcast_attention": False,
    "use_audio_video_cross_attention": True, "use_embeddings_connector": True, "use_linear_projection": False,
    "use_middle_indices_grid": True,
}

L = 49  # hidden states, as Gemma-3 12B
D = 8  # tiny text width
T = 32
R = 8  # registers
MAX_POS = 64  # tiny texts: positions 0..31 / 64 span half of [-1, 1]; the released 4096 is tested too

TINY_V1 = TextConnectorConfig(text_dim=D, video_heads=2, video_head_dim=4, audio_heads=2, audio_head_dim=4,
                              num_registers=R, rope_max_pos=MAX_POS)
TINY_V2 = TextConnectorConfig(feature_extractor="v2", text_dim=D, video_heads=2, video_head_dim=8, video_layers=3,
                              audio_heads=2, audio_head_dim=4, audio_layers=2, gated_attention=True,
                              num_registers=R, rope_max_pos=MAX_POS)


def randomise(module: torch.nn.Module, std: float = 0.1) -> torch.nn.Module:
    with torch.no_grad():
        for name, p in module.state_dict().items():
            if not p.is_floating_point():
                continue
            if "norm" in name:
                p.copy_(1 + std * torch.randn_like(p))
            elif "learnable_registers" in name:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(std * torch.randn_like(p))
    return module


def left_mask(lengths: list[int], t: int = T) -> torch.Tensor:
    return torch.stack([(torch.arange(t) >= t - n).long() for n in lengths])  # (B, T) int64, as the tokenizer


def hidden_states(b: int, t: int = T, d: int = D) -> list[torch.Tensor]:
    # layers of different scales and offsets, as Gemma's (the embedding output is ~sqrt(D) larger)
    return [torch.randn(b, t, d) * (1 + 3 * torch.rand(())) + torch.randn(()) for _ in range(L)]


def ref_connector(cfg: TextConnectorConfig, audio: bool) -> Embeddings1DConnector:
    return Embeddings1DConnector(
        attention_head_dim=cfg.audio_head_dim if audio else cfg.video_head_dim,
        num_attention_heads=cfg.audio_heads if audio else cfg.video_heads,
        num_layers=cfg.audio_layers if audio else cfg.video_layers,
        positional_embedding_max_pos=[cfg.rope_max_pos],
        num_learnable_registers=cfg.num_registers,
        rope_type=LTXRopeType.SPLIT,
        double_precision_rope=True,
        apply_gated_attention=cfg.gated_attention,
    )


def ref_processor(cfg: TextConnectorConfig) -> RefProcessor:
    flat = cfg.text_dim * cfg.num_hidden_states
    if cfg.feature_extractor == "v1":
        fe = RefV1(aggregate_embed=torch.nn.Linear(flat, cfg.text_dim, bias=False), is_av=True)
    else:
        fe = RefV2(video_aggregate_embed=torch.nn.Linear(flat, cfg.video_dim), embedding_dim=cfg.text_dim,
                   audio_aggregate_embed=torch.nn.Linear(flat, cfg.audio_dim))
    ref = RefProcessor(feature_extractor=fe, video_connector=ref_connector(cfg, False),
                       audio_connector=ref_connector(cfg, True))
    return randomise(ref).float().eval()


def ours_from(ref: torch.nn.Module, ours: torch.nn.Module) -> torch.nn.Module:
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours.eval()


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


# ---------------------------------------------------------------------------------------------------------------
# feature extractors
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 0.0)])
def test_feature_extractor_v1(dtype, tol):
    ref = randomise(RefV1(aggregate_embed=torch.nn.Linear(D * L, D, bias=False), is_av=True)).to(dtype)
    ours = ours_from(ref, FeatureExtractorV1(D, L)).to(dtype)
    mask = left_mask([5, 32, 1])
    hs = [h.to(dtype) for h in hidden_states(3)]
    want_v, want_a = ref(tuple(hs), mask, "left")
    got_v, got_a = ours(torch.stack(hs, dim=-1), mask)
    print(f"V1 {dtype}: max diff {maxdiff(got_v, want_v):.3g} (output scale {want_v.abs().max():.3g})")
    assert got_v.dtype == want_v.dtype == dtype
    assert maxdiff(got_v, want_v) <= tol and maxdiff(got_a, want_a) <= tol
    assert got_v.abs().max() > 0.1
    assert (got_v[0, : T - 5] == 0).all()  # padding rows are zero features


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 0.0)])
def test_feature_extractor_v2(dtype, tol):
    ref = randomise(RefV2(video_aggregate_embed=torch.nn.Linear(D * L, 16), embedding_dim=D,
                          audio_aggregate_embed=torch.nn.Linear(D * L, 4))).to(dtype)
    ours = ours_from(ref, FeatureExtractorV2(D, L, 16, 4)).to(dtype)
    mask = left_mask([5, 32, 1])
    hs = [h.to(dtype) for h in hidden_states(3)]
    want_v, want_a = ref(tuple(hs), mask)
    got_v, got_a = ours(torch.stack(hs, dim=-1), mask)
    print(f"V2 {dtype}: max diff video {maxdiff(got_v, want_v):.3g} audio {maxdiff(got_a, want_a):.3g}")
    assert got_v.shape == (3, T, 16) and got_a.shape == (3, T, 4)
    assert maxdiff(got_v, want_v) <= tol and maxdiff(got_a, want_a) <= tol


# ---------------------------------------------------------------------------------------------------------------
# connectors
# ---------------------------------------------------------------------------------------------------------------


def _connector_pair(cfg: TextConnectorConfig, audio: bool = False):
    ref = randomise(ref_connector(cfg, audio)).float().eval()
    p = "audio" if audio else "video"
    ours = EmbeddingsConnector(num_heads=getattr(cfg, f"{p}_heads"), head_dim=getattr(cfg, f"{p}_head_dim"),
                               num_layers=getattr(cfg, f"{p}_layers"), gated=cfg.gated_attention,
                               num_registers=cfg.num_registers, max_pos=cfg.rope_max_pos)
    return ref, ours_from(ref, ours)


@pytest.mark.parametrize("cfg", [TINY_V1, TINY_V2, TextConnectorConfig(**{**TINY_V2.__dict__, "rope_max_pos": 4096})],
                         ids=["19b-style", "2.3-style-gated", "2.3-style-maxpos4096"])
def test_connector_parity(cfg):
    ref, ours = _connector_pair(cfg)
    worst = 0.0
    for n in (1, 7, 8, 20, T):
        x = torch.randn(1, T, cfg.video_dim)
        mask = left_mask([n])
        want, want_mask = ref(x, convert_to_additive_mask(mask, x.dtype))
        got = ours(x, mask)
        worst = max(worst, maxdiff(got, want))
        assert (want_mask == 0).all()
    print(f"connector {cfg.video_layers} layers gated={cfg.gated_attention}: max diff {worst:.3g}")
    assert worst <= 1e-5


def test_connector_batch_equals_single_reference_calls():
    ref, ours = _connector_pair(TINY_V2, audio=True)
    x = torch.randn(3, T, TINY_V2.audio_dim)
    mask = left_mask([3, 32, 17])
    got = ours(x, mask)
    for b in range(3):
        want, _ = ref(x[b : b + 1], convert_to_additive_mask(mask[b : b + 1], x.dtype))
        assert maxdiff(got[b : b + 1], want) <= 1e-5


def test_connector_bf16():
    ref, ours = _connector_pair(TINY_V2)
    ref, ours = ref.bfloat16(), ours.bfloat16()
    x = torch.randn(1, T, TINY_V2.video_dim).bfloat16()
    mask = left_mask([11])
    want, _ = ref(x, convert_to_additive_mask(mask, x.dtype))
    got = ours(x, mask)
    d = maxdiff(got, want)
    print(f"connector bf16: max diff {d:.3g}")
    assert d <= 0.05  # bf16 ulp at |x| ~ 2-4 is 0.016-0.03; the reference passes a zero mask to SDPA, we pass none


# ---------------------------------------------------------------------------------------------------------------
# the whole processor
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [TINY_V1, TINY_V2], ids=["v1", "v2"])
def test_processor_parity(cfg):
    ref = ref_processor(cfg)
    ours = ours_from(ref, EmbeddingsProcessor(cfg))
    hs = hidden_states(2)
    mask = left_mask([6, 29])
    got_v, got_a, got_m = ours(hs, mask)
    worst = 0.0
    for b in range(2):
        want_v, want_a, want_m = ref.process_hidden_states(tuple(h[b : b + 1] for h in hs), mask[b : b + 1])
        worst = max(worst, maxdiff(got_v[b : b + 1], want_v), maxdiff(got_a[b : b + 1], want_a))
        assert torch.equal(got_m[b : b + 1], want_m)
    print(f"processor {cfg.feature_extractor}: max diff {worst:.3g}")
    assert got_v.shape == (2, T, cfg.video_dim) and got_a.shape == (2, T, cfg.audio_dim)
    assert worst <= 1e-5
    assert maxdiff(got_v[..., : cfg.audio_dim], got_a) > 0.1 or cfg.video_dim != cfg.audio_dim  # two contexts


# ---------------------------------------------------------------------------------------------------------------
# configs: presets, metadata, full-size key/shape equality
# ---------------------------------------------------------------------------------------------------------------


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("meta,preset", [(META_19B, TextConnectorConfig.ltx2_19b()),
                                         (META_23, TextConnectorConfig.ltx2_3())], ids=["19b", "2.3"])
def test_full_size_meta_keys_and_shapes(meta, preset):
    cfg = TextConnectorConfig.from_metadata(meta)
    assert cfg == preset
    assert TextConnectorConfig.from_metadata(cfg.to_metadata()) == cfg
    with torch.device("meta"):
        ref = EmbeddingsProcessorConfigurator.from_config({"transformer": meta})
        ours = EmbeddingsProcessor(cfg)
        ref_again = EmbeddingsProcessorConfigurator.from_config({"transformer": cfg.to_metadata()})
    assert _shapes(ours) == _shapes(ref) == _shapes(ref_again)
    shapes = _shapes(ours)
    if cfg.feature_extractor == "v1":
        assert shapes["feature_extractor.aggregate_embed.weight"] == (3840, 188160)
        assert shapes["video_connector.learnable_registers"] == (128, 3840)
        assert "video_connector.transformer_1d_blocks.1.attn1.to_q.weight" in shapes
        assert not any("to_gate_logits" in k for k in shapes)
    else:
        assert shapes["feature_extractor.video_aggregate_embed.weight"] == (4096, 188160)
        assert shapes["feature_extractor.audio_aggregate_embed.bias"] == (2048,)
        assert shapes["audio_connector.learnable_registers"] == (128, 2048)
        assert shapes["audio_connector.transformer_1d_blocks.7.attn1.to_gate_logits.weight"] == (32, 2048)
    # the file keys map onto ours through OFFICIAL_PREFIXES exactly as the official SDOps rename them
    for key in shapes:
        ours_prefix = next(p for p in OFFICIAL_PREFIXES.values() if key.startswith(p))
        file_prefix = next(f for f, p in OFFICIAL_PREFIXES.items() if p == ours_prefix)
        assert EMBEDDINGS_PROCESSOR_KEY_OPS.apply_to_key(file_prefix + key[len(ours_prefix):]) == key


def test_tiny_metadata_round_trip():
    for cfg in (TINY_V1, TINY_V2):
        assert TextConnectorConfig.from_metadata(cfg.to_metadata()) == cfg


@pytest.mark.parametrize("change,match", [
    ({"rope_type": "interleaved"}, "rope_type='interleaved' is not supported"),
    ({"rope_type": None}, "rope_type"),
    ({"frequencies_precision": "float32"}, "frequencies_precision"),
    ({"frequencies_precision": None}, "absent"),
    ({"connector_norm_output": False}, "connector_norm_output"),
    ({"connector_positional_embedding_max_pos": [20, 2048]}, "one axis"),
    ({"caption_projection_first_linear": True}, "caption_projection_first_linear=True"),
    ({"caption_proj_input_norm": None}, "missing"),
    ({"text_encoder_norm_type": "minmax"}, "text_encoder_norm_type"),
    ({"attention_head_dim": 64}, "video width"),
])
def test_metadata_errors(change, match):
    meta = {**META_23, **{k: v for k, v in change.items() if v is not None}}
    for k, v in change.items():
        if v is None:
            del meta[k]
    with pytest.raises(ValueError, match=match):
        TextConnectorConfig.from_metadata(meta)


def test_config_errors():
    with pytest.raises(ValueError, match="feature_extractor='v3'"):
        TextConnectorConfig(feature_extractor="v3")
    with pytest.raises(ValueError, match="v1 feeds 3840-wide"):
        TextConnectorConfig(video_heads=32)
    with pytest.raises(ValueError, match="even head dims"):
        TextConnectorConfig(feature_extractor="v2", video_heads=2, video_head_dim=3)


# ---------------------------------------------------------------------------------------------------------------
# input errors
# ---------------------------------------------------------------------------------------------------------------


def test_input_errors():
    ours = EmbeddingsProcessor(TINY_V1)
    hs, mask = hidden_states(1), left_mask([4])
    with pytest.raises(ValueError, match="multiple of the connectors' 8 registers"):
        ours([h[:, :30] for h in hs], mask[:, :30])
    with pytest.raises(ValueError, match="expected 49 Gemma hidden states"):
        ours(hs[:48], mask)
    with pytest.raises(ValueError, match="12 wide, expected 8"):
        ours([torch.randn(1, T, 12)] * L, mask)
    with pytest.raises(ValueError, match="left padded"):
        ours(hs, mask.flip(1))
    with pytest.raises(ValueError, match="does not match"):
        ours(hs, left_mask([4, 5]))
    with pytest.raises(ValueError, match="only 0 and 1"):
        ours(hs, mask * 2)
    with pytest.raises(ValueError, match="multiple of the connector's 8 registers"):
        ours.video_connector(torch.randn(1, 12, 8), left_mask([3], 12))


# ---------------------------------------------------------------------------------------------------------------
# Gemma wrapper on a tiny random Gemma-3 with a word-level tokenizer, vs the official encode path
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_gemma_folder(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, PreTrainedTokenizerFast

    words = "a red cat runs on the green grass under blue sky while music plays softly".split()
    vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "<bos>", "<unk>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    folder = tmp_path_factory.mktemp("gemma")
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(folder)
    cfg = Gemma3Config(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=8, sliding_window=64,
                         max_position_embeddings=2048),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=28, patch_size=14),
        mm_tokens_per_image=1, boi_token_index=len(vocab), eoi_token_index=len(vocab) + 1,
        image_token_index=len(vocab) + 2,
    )
    torch.manual_seed(1)
    Gemma3ForConditionalGeneration(cfg).save_pretrained(folder)
    return folder


def test_gemma_encoder_vs_reference(tiny_gemma_folder):
    from ltx_core.text_encoders.gemma import GemmaTextEncoder as RefEncoder
    from ltx_core.text_encoders.gemma.tokenizer import LTXVGemmaTokenizer

    ours = GemmaTextEncoder.from_folder(tiny_gemma_folder, dtype=torch.float32)
    ref = RefEncoder(model=ours.model, tokenizer=LTXVGemmaTokenizer(str(tiny_gemma_folder), 1024),
                     dtype=torch.float32)
    prompts = ["  a red cat runs on the green grass  ", "music plays softly under blue sky"]
    hs, mask = ours.encode(prompts)
    assert len(hs) == 3 and hs[0].shape == (2, 1024, 16) and mask.shape == (2, 1024)
    for b, p in enumerate(prompts):
        want_hs, want_mask = ref.encode(p)
        assert torch.equal(mask[b : b + 1], want_mask)
        assert mask[b, -1] == 1 and mask[b, 0] == 0  # left padding
        d = max(maxdiff(g[b : b + 1], w) for g, w in zip(hs, want_hs))
        print(f"gemma B=2 row {b} vs a B=1 reference call: max diff {d:.3g}")
        assert d <= 1e-5
    one_hs, _ = ours.encode(prompts[0])  # batch 1 is the reference call exactly
    want_hs, _ = ref.encode(prompts[0])
    assert all(torch.equal(g, w) for g, w in zip(one_hs, want_hs))


def test_gemma_tokenize_truncates_as_reference(tiny_gemma_folder):
    from ltx_core.text_encoders.gemma.tokenizer import LTXVGemmaTokenizer

    ours = GemmaTextEncoder.from_folder(tiny_gemma_folder, dtype=torch.float32, max_length=8)
    ref = LTXVGemmaTokenizer(str(tiny_gemma_folder), 8)
    for prompt in ("a red cat runs on the green grass under blue sky", " cat ", "zebra cat"):
        ids, mask = ours.tokenize(prompt)
        pairs = ref.tokenize_with_weights(prompt)["gemma"]
        assert ids[0].tolist() == [int(i) for i, _ in pairs] and mask[0].tolist() == [int(w) for _, w in pairs]
        assert ids[0, -mask[0].sum()] == 2  # <bos> first among the real tokens


def test_gemma_folder_errors(tmp_path):
    with pytest.raises(GemmaFolderMissing, match="does not exist"):
        GemmaTextEncoder.from_folder(tmp_path / "nope")
    with pytest.raises(GemmaFolderMissing, match="no config.json"):
        GemmaTextEncoder.from_folder(tmp_path)
