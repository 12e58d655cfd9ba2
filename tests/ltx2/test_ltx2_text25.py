"""LTX-2.5's text path: the LTX Gemma 4 (`gemma4_unified`) hidden states -> V2 feature extractor -> connectors,
against diffusers 0.42.1 (`LTX2DFRPipeline._get_gemma_prompt_embeds` + `LTX2TextConnectors`) built from the same
random weights: a tiny random gemma4_unified saved to a tmp folder and loaded by both, and one connector state
dict (diffusers' names -> the official file's names -> ours, strict). Plus the checkpoint / Gemma version check
(ltx-core 1.2.0 `_check_gemma_version`), the default image CRF, and <bos> handling. fp32 tolerance 1e-5 (scale ~1);
measured diffs are printed (-s)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from ltx_core.text_encoders.gemma import EMBEDDINGS_PROCESSOR_KEY_OPS

from ltx.ltx2.text import (
    IMAGE_CRF_LTX2,
    IMAGE_CRF_LTX2_5,
    EmbeddingsProcessor,
    GemmaFolderMissing,
    GemmaTextEncoder,
    TextConnectorConfig,
    check_gemma_version,
    default_image_crf,
    expected_gemma_version,
    official_to_ours,
    read_gemma_info,
    text_config_for,
)

LTX_GEMMA = "gemma4-12b-ltx-v1"  # the 2.5 text encoder's gemma_version (Lightricks/LTX-2 README, 400fd31)
D = 16  # tiny Gemma width
LAYERS = 3  # -> 4 hidden states
T = 32  # tokens (the official 1024, scaled down)
R = 8  # registers
MAX_POS = 64
WORDS = "a red cat runs on the green grass under blue sky while music plays softly".split()
SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>"]
VOCAB = {t: i for i, t in enumerate([*SPECIAL, *WORDS])}
PROMPTS = ["  a red cat runs on the green grass  ", "music plays softly under blue sky while a cat runs on grass",
           " ".join(WORDS * 3)]  # 45 words: truncated to T - 1 after <bos>

# The text side of a 2.5 transformer's metadata `config["transformer"]`, scaled down: the keys are those the
# official configurators read (2.3's set; 2.5 is V2 as well). Not copied from a released 2.5 file (none is here).
TINY_25 = {
    "caption_proj_before_connector": True, "caption_proj_input_norm": False,
    "caption_projection_first_linear": False, "caption_projection_second_linear": False,
    "text_encoder_norm_type": "per_token_rms", "num_attention_heads": 2, "attention_head_dim": 8,
    "audio_num_attention_heads": 2, "audio_attention_head_dim": 4, "connector_num_attention_heads": 2,
    "connector_attention_head_dim": 8, "connector_num_layers": 2, "audio_connector_num_attention_heads": 2,
    "audio_connector_attention_head_dim": 4, "audio_connector_num_layers": 2, "connector_apply_gated_attention": True,
    "connector_num_learnable_registers": R, "connector_positional_embedding_max_pos": [MAX_POS],
    "connector_norm_output": True, "use_embeddings_connector": True, "rope_type": "split",
    "frequencies_precision": "float64", "caption_channels": 3840,  # ignored once the Gemma config is known
}


def metadata(version: str | None = "2.5.0", gemma_version: str | None = LTX_GEMMA, raw: bool = True,
             transformer: dict | None = None) -> dict:
    """Top-level checkpoint metadata; raw=True: values JSON-encoded as in the safetensors header."""
    meta: dict = {"config": {"transformer": transformer or TINY_25}}
    if version is not None:
        meta["model_version"] = version
    if gemma_version is not None:
        meta["gemma_source_checkpoint"] = {"gemma_version": gemma_version}
    if raw:
        meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    return meta


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def save_tokenizer(folder, bos: bool = True):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos:  # Gemma 3's tokenizer adds <bos>; without it, as Gemma 4's, ltx prepends it
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>")
    fast.save_pretrained(folder)
    return fast


def gemma4_config(gemma_version: str | None = LTX_GEMMA):
    from transformers import Gemma4UnifiedConfig

    v = len(VOCAB) + 7  # the multimodal special ids past the words
    extra = {"gemma_version": gemma_version} if gemma_version is not None else {}
    return Gemma4UnifiedConfig(
        text_config=dict(vocab_size=v, hidden_size=D, intermediate_size=32, num_hidden_layers=LAYERS,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=8, global_head_dim=16,
                         sliding_window=8, max_position_embeddings=2048,
                         layer_types=["sliding_attention", "full_attention", "full_attention"]),
        vision_config=None, audio_config=None, boi_token_id=v - 1, eoi_token_id=v - 2, image_token_id=v - 3,
        video_token_id=v - 4, boa_token_id=v - 5, eoa_token_index=v - 6, audio_token_id=v - 7, **extra)


@pytest.fixture(scope="module")
def gemma4_folder(tmp_path_factory):
    from transformers import Gemma4UnifiedForConditionalGeneration

    folder = tmp_path_factory.mktemp("gemma4")
    save_tokenizer(folder)
    torch.manual_seed(1)
    model = Gemma4UnifiedForConditionalGeneration(gemma4_config())
    with torch.no_grad():  # Gemma's 0.02-std init gives tiny hidden states: widen so every layer matters
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.mul_(10.0)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def config_folders(tmp_path_factory):
    """config.json-only folders (the version check reads nothing else)."""
    from transformers import Gemma3Config, Gemma4Config

    root = tmp_path_factory.mktemp("configs")
    tiny = dict(vocab_size=32, hidden_size=D, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, head_dim=8)
    folders = {}
    for name, cfg in {
        "gemma3": Gemma3Config(text_config=tiny, vision_config=dict(hidden_size=16, intermediate_size=32,
                                                                    num_hidden_layers=1, num_attention_heads=2)),
        "gemma4_vanilla": gemma4_config(None),  # Google's Gemma 4: no gemma_version
        "gemma4_other": gemma4_config("gemma4-12b-ltx-v2"),
        "gemma4_dense": Gemma4Config(text_config=dict(tiny, global_head_dim=16, vocab_size_per_layer_input=32,
                                                      hidden_size_per_layer_input=4,
                                                      layer_types=["sliding_attention", "full_attention"]),
                                     vision_config=None, audio_config=None),
    }.items():
        cfg.save_pretrained(root / name)
        folders[name] = root / name
    return folders


def randomise(module: torch.nn.Module, std: float = 0.1) -> torch.nn.Module:
    with torch.no_grad():
        for name, p in module.state_dict().items():
            if "norm" in name:
                p.copy_(1 + std * torch.randn_like(p))
            elif "learnable_registers" in name:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(std * torch.randn_like(p))
    return module


def diffusers_connectors(cfg: TextConnectorConfig):
    from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors

    torch.manual_seed(2)
    ref = LTX2TextConnectors(
        caption_channels=cfg.text_dim, text_proj_in_factor=cfg.num_hidden_states,
        video_connector_num_attention_heads=cfg.video_heads, video_connector_attention_head_dim=cfg.video_head_dim,
        video_connector_num_layers=cfg.video_layers, video_connector_num_learnable_registers=cfg.num_registers,
        video_gated_attn=cfg.gated_attention, audio_connector_num_attention_heads=cfg.audio_heads,
        audio_connector_attention_head_dim=cfg.audio_head_dim, audio_connector_num_layers=cfg.audio_layers,
        audio_connector_num_learnable_registers=cfg.num_registers, audio_gated_attn=cfg.gated_attention,
        connector_rope_base_seq_len=cfg.rope_max_pos, rope_theta=10_000.0, rope_double_precision=True,
        rope_type="split", per_modality_projections=True, video_hidden_dim=cfg.video_dim,
        audio_hidden_dim=cfg.audio_dim, proj_bias=True,
    )
    return randomise(ref).float().eval()


# diffusers' LTX2TextConnectors names -> the official file's (what the 2.5 checkpoint / text-encoder file holds)
_TOP = [("video_text_proj_in.", "text_embedding_projection.video_aggregate_embed."),
        ("audio_text_proj_in.", "text_embedding_projection.audio_aggregate_embed."),
        ("video_connector.", "model.diffusion_model.video_embeddings_connector."),
        ("audio_connector.", "model.diffusion_model.audio_embeddings_connector.")]
_INNER = [(".transformer_blocks.", ".transformer_1d_blocks."), (".attn1.norm_q.", ".attn1.q_norm."),
          (".attn1.norm_k.", ".attn1.k_norm.")]


def official_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        src, dst = next((s, d) for s, d in _TOP if key.startswith(s))
        key = dst + key[len(src):]
        for a, b in _INNER:
            key = key.replace(a, b)
        out[key] = value
    return out


def diffusers_embeds(folder, prompts, dtype=torch.float32):
    """diffusers' own prompt path on its own load of the folder: (B, T, D*L) packed hidden states, (B, T) mask."""
    from diffusers.pipelines.ltx2.pipeline_ltx2_dfr import LTX2DFRPipeline
    from transformers import AutoTokenizer, Gemma4UnifiedForConditionalGeneration

    pipe = SimpleNamespace(tokenizer=AutoTokenizer.from_pretrained(folder, local_files_only=True),
                           text_encoder=Gemma4UnifiedForConditionalGeneration.from_pretrained(
                               folder, local_files_only=True, dtype=dtype).eval())
    with torch.no_grad():
        return LTX2DFRPipeline._get_gemma_prompt_embeds(pipe, prompts, max_sequence_length=T,
                                                        device=torch.device("cpu"), dtype=dtype)


# ---------------------------------------------------------------------------------------------------------------
# parity with diffusers
# ---------------------------------------------------------------------------------------------------------------


def test_config_from_metadata_and_gemma(gemma4_folder):
    cfg = text_config_for(metadata(), gemma4_folder)
    assert cfg.feature_extractor == "v2"
    assert (cfg.text_dim, cfg.num_hidden_states) == (D, LAYERS + 1)  # from the Gemma config, not caption_channels
    assert (cfg.video_dim, cfg.audio_dim, cfg.video_layers, cfg.num_registers) == (16, 8, 2, R)
    assert cfg.gated_attention and cfg.ff_bias and cfg.rope_max_pos == MAX_POS
    assert text_config_for(metadata(raw=False), read_gemma_info(gemma4_folder)) == cfg  # decoded metadata too


def test_hidden_states_match_diffusers(gemma4_folder):
    ours = GemmaTextEncoder.from_folder(gemma4_folder, dtype=torch.float32, max_length=T,
                                        checkpoint_metadata=metadata())
    hs, mask = ours.encode(PROMPTS)
    want, want_mask = diffusers_embeds(gemma4_folder, PROMPTS)
    assert len(hs) == LAYERS + 1 and hs[0].shape == (3, T, D)
    assert torch.equal(mask, want_mask) and mask[:, -1].all() and not mask[:2, 0].any() and mask[2].all()
    got = torch.stack(hs, dim=-1).flatten(2)  # (B, T, D*L), d-major / layer-minor as diffusers packs it
    d = maxdiff(got, want)
    print(f"gemma4_unified hidden states vs diffusers: max diff {d:.3g} (scale {want.abs().max():.3g})")
    assert torch.isfinite(got).all() and d <= 1e-5
    assert min(h[mask.bool()].std().item() for h in hs) > 0.05  # every layer carries signal


def test_processor_matches_diffusers_connectors(gemma4_folder):
    cfg = text_config_for(metadata(), gemma4_folder)
    ref = diffusers_connectors(cfg)
    ours = EmbeddingsProcessor(cfg)
    ours.load_state_dict(official_to_ours(official_names(ref.state_dict())), strict=True)
    ours.eval()
    encoder = GemmaTextEncoder.from_folder(gemma4_folder, dtype=torch.float32, max_length=T)
    hs, mask = encoder.encode(PROMPTS)
    embeds, want_mask = diffusers_embeds(gemma4_folder, PROMPTS)
    with torch.no_grad():
        want_v, want_a, want_m = ref(embeds, want_mask)
        got_v, got_a, got_m = ours(hs, mask)
    dv, da = maxdiff(got_v, want_v), maxdiff(got_a, want_a)
    print(f"2.5 text path vs diffusers: video max diff {dv:.3g} (scale {want_v.abs().max():.3g}), "
          f"audio {da:.3g} (scale {want_a.abs().max():.3g})")
    assert got_v.shape == (3, T, 16) and got_a.shape == (3, T, 8)
    assert torch.equal(got_m, want_m) and got_m.all()
    assert dv <= 1e-5 and da <= 1e-5
    assert maxdiff(got_v[0], got_v[1]) > 0.1  # the two prompts differ


def test_connector_without_ff_bias(gemma4_folder):
    """`connector_ff_bias: false` (ltx-core 1.2.0 key; diffusers 0.42.1 has no such flag): no MLP bias keys, and
    the output equals diffusers' with those biases zero."""
    cfg = text_config_for(metadata(transformer={**TINY_25, "connector_ff_bias": False}), gemma4_folder)
    assert not cfg.ff_bias
    ref = diffusers_connectors(cfg)
    sd = {}
    for key, value in ref.state_dict().items():
        if ".ff." in key and key.endswith(".bias"):
            value.zero_()
        else:
            sd[key] = value
    ours = EmbeddingsProcessor(cfg)
    ours.load_state_dict(official_to_ours(official_names(sd)), strict=True)
    assert not any(".ff." in k and k.endswith(".bias") for k in ours.state_dict())
    hs = [torch.randn(1, T, D) * 3 for _ in range(LAYERS + 1)]
    mask = (torch.arange(T) >= T - 9).long()[None]
    with torch.no_grad():
        want_v, want_a, _ = ref(torch.stack(hs, dim=-1).flatten(2), mask)
        got_v, got_a, _ = ours.eval()(hs, mask)
    d = max(maxdiff(got_v, want_v), maxdiff(got_a, want_a))
    print(f"connector_ff_bias=false vs diffusers (zero biases): max diff {d:.3g}")
    assert d <= 1e-5
    assert TextConnectorConfig.from_metadata(cfg.to_metadata()) == cfg  # our metadata round trip keeps it
    assert cfg.to_metadata()["connector_ff_bias"] is False
    assert "connector_ff_bias" not in TextConnectorConfig.ltx2_3().to_metadata()


def test_official_key_layout(gemma4_folder):
    """The tensors as the official file names them load strictly, and our renaming is ltx-core's SDOps one."""
    cfg = text_config_for(metadata(), gemma4_folder)
    official = official_names(diffusers_connectors(cfg).state_dict())
    for key in (
        "text_embedding_projection.video_aggregate_embed.weight",
        "text_embedding_projection.audio_aggregate_embed.bias",
        "model.diffusion_model.video_embeddings_connector.learnable_registers",
        "model.diffusion_model.video_embeddings_connector.transformer_1d_blocks.1.attn1.q_norm.weight",
        "model.diffusion_model.audio_embeddings_connector.transformer_1d_blocks.0.attn1.to_gate_logits.weight",
        "model.diffusion_model.audio_embeddings_connector.transformer_1d_blocks.1.ff.net.2.bias",
    ):
        assert key in official
    ours = official_to_ours(official)
    assert ours == {EMBEDDINGS_PROCESSOR_KEY_OPS.apply_to_key(k): v for k, v in official.items()}
    assert set(ours) == set(EmbeddingsProcessor(cfg).state_dict())
    assert ours["feature_extractor.video_aggregate_embed.weight"].shape == (16, D * (LAYERS + 1))
    with pytest.raises(ValueError, match="not a text-side key"):
        official_to_ours({"model.diffusion_model.transformer_blocks.0.ff.net.2.bias": torch.zeros(1)})


# ---------------------------------------------------------------------------------------------------------------
# tokenization: <bos> first, as ltx-core 1.2.0's LTXGemmaTokenizer
# ---------------------------------------------------------------------------------------------------------------


def test_bos_prepended_when_the_tokenizer_does_not(gemma4_folder, tmp_path):
    with_bos = GemmaTextEncoder.from_folder(gemma4_folder, dtype=torch.float32, max_length=T)
    without = GemmaTextEncoder(with_bos.model, save_tokenizer(tmp_path, bos=False), max_length=T)
    assert without.tokenizer("a cat").input_ids[0] != 2  # this tokenizer adds no <bos> itself
    ids, mask = without.tokenize(PROMPTS)
    want_ids, want_mask = with_bos.tokenize(PROMPTS)
    assert torch.equal(ids, want_ids) and torch.equal(mask, want_mask)
    assert (ids[torch.arange(3), T - mask.sum(1)] == 2).all()  # <bos> first among the real tokens
    assert mask[2].all() and ids[2, 1:].tolist() == [VOCAB[w] for w in WORDS * 3][: T - 1]  # truncated
    assert without.token_count(PROMPTS[0]) == with_bos.token_count(PROMPTS[0]) == 9  # 8 words + <bos>
    short = GemmaTextEncoder(with_bos.model, without.tokenizer, max_length=4)
    ids, mask = short.tokenize("a red cat runs on the green grass")
    assert ids[0].tolist() == [2, VOCAB["a"], VOCAB["red"], VOCAB["cat"]] and mask.all()  # truncated, <bos> kept


# ---------------------------------------------------------------------------------------------------------------
# the version check
# ---------------------------------------------------------------------------------------------------------------


def _one_line_error(fn, match: str) -> str:
    with pytest.raises(ValueError, match=match) as e:
        fn()
    text = str(e.value)
    print(text)
    assert "\n" not in text
    return text


def test_version_check_accepts_the_right_pairs(gemma4_folder, config_folders):
    check_gemma_version(metadata(), gemma4_folder)  # 2.5 + its LTX Gemma 4
    check_gemma_version(metadata(raw=False), gemma4_folder)
    for version in ("2.3.0", "2.0.0", None):  # 2.0 / 2.3 (or unversioned) + Gemma 3
        check_gemma_version(metadata(version, gemma_version=None), config_folders["gemma3"])
    assert expected_gemma_version(metadata()) == LTX_GEMMA
    assert expected_gemma_version(metadata("2.3.0", None)) is None


def test_version_check_refuses_gemma3_for_2_5(config_folders):
    text = _one_line_error(lambda: check_gemma_version(metadata(), config_folders["gemma3"]),
                           "trained with gemma_version 'gemma4-12b-ltx-v1'")
    assert "a Gemma 3 folder" in text and "model_type 'gemma3'" in text and "pass the gemma4-12b-ltx-v1" in text


def test_version_check_refuses_other_gemma4_for_2_5(config_folders):
    _one_line_error(lambda: check_gemma_version(metadata(), config_folders["gemma4_vanilla"]),
                    r"a Gemma 4 folder, .*no gemma_version")
    _one_line_error(lambda: check_gemma_version(metadata(), config_folders["gemma4_other"]),
                    "gemma_version 'gemma4-12b-ltx-v2'")


@pytest.mark.parametrize("version", ["2.3.0", "2.0.0", None])
def test_version_check_refuses_gemma4_for_2_0_and_2_3(gemma4_folder, config_folders, version):
    for folder in (gemma4_folder, config_folders["gemma4_dense"]):
        text = _one_line_error(lambda f=folder: check_gemma_version(metadata(version, None), f),
                               r"is LTX-2 / 2.3, trained with Gemma 3 \(model_type 'gemma3'\)")
        assert "model_type 'gemma4" in text and "google/gemma-3-12b-it" in text


def test_version_check_for_2_4_without_gemma_source(gemma4_folder, config_folders):
    _one_line_error(lambda: check_gemma_version(metadata("2.5.0", None), gemma4_folder),
                    "must name its text encoder")
    _one_line_error(lambda: check_gemma_version(metadata("2.4-rc2", None), gemma4_folder),
                    "must name its text encoder")
    with pytest.warns(UserWarning, match="not checked"):  # nothing to compare: the official code only warns
        check_gemma_version(metadata("2.5.0", None), config_folders["gemma4_vanilla"])


def test_version_check_bad_metadata_and_folders(gemma4_folder, tmp_path):
    _one_line_error(lambda: check_gemma_version({"gemma_source_checkpoint": '{"name": "x"}'}, gemma4_folder),
                    "has no gemma_version")
    with pytest.raises(GemmaFolderMissing, match="does not exist"):
        check_gemma_version(metadata(), tmp_path / "nope")
    with pytest.raises(ValueError, match="no config.transformer"):
        text_config_for({"gemma_source_checkpoint": json.dumps({"gemma_version": LTX_GEMMA})}, gemma4_folder)
    with pytest.raises(ValueError, match="text_encoder_num_hidden_states=49 but the Gemma"):
        text_config_for(metadata(transformer={**TINY_25, "text_encoder_num_hidden_states": 49}), gemma4_folder)


def test_encoder_from_folder_checks_before_loading(gemma4_folder, config_folders):
    _one_line_error(lambda: GemmaTextEncoder.from_folder(gemma4_folder, checkpoint_metadata=metadata("2.3.0", None)),
                    "trained with Gemma 3")
    _one_line_error(lambda: GemmaTextEncoder.from_folder(config_folders["gemma3"], checkpoint_metadata=metadata()),
                    "a Gemma 3 folder")  # config.json only: refused before any weight is looked for
    _one_line_error(lambda: GemmaTextEncoder.from_folder(config_folders["gemma4_dense"]),
                    "LTX-2.5's prompt enhancer, not its text encoder")


# ---------------------------------------------------------------------------------------------------------------
# default image CRF (ltx-pipelines detect_params / diffusers resolve_default_image_crf)
# ---------------------------------------------------------------------------------------------------------------


def test_default_image_crf(gemma4_folder, config_folders):
    from diffusers.pipelines.ltx2.utils import resolve_default_image_crf

    assert (IMAGE_CRF_LTX2, IMAGE_CRF_LTX2_5) == (33, 18)
    # from the checkpoint: model_version >= 2.4 (pre-release tags too), or a gemma_source_checkpoint
    for version, crf in (("2.5.0", 18), ("2.4.0", 18), ("2.4", 18), ("2.4-rc2", 18), ("2.3.0", 33), ("2.0.0", 33),
                         ("2.3.rc1", 33), ("3.0", 18)):
        assert default_image_crf({"model_version": version}) == crf, version
    assert default_image_crf(metadata(None)) == 18  # unversioned, but names a Gemma 4
    assert default_image_crf({"model_version": "2.3.0"}, gemma="gemma4_unified") == 33  # the checkpoint decides
    # from the text encoder when the checkpoint does not tell: diffusers' rule, checked against diffusers itself
    for info in (read_gemma_info(gemma4_folder), *map(read_gemma_info, config_folders.values())):
        want = resolve_default_image_crf(SimpleNamespace(config=SimpleNamespace(model_type=info.model_type)))
        assert default_image_crf(gemma=info) == default_image_crf({}, info.model_type) == want, info.model_type
    assert default_image_crf() == 33
