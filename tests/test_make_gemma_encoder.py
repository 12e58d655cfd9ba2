"""The LTX-2 demo's text encoder (train.make_text_encoder --family gemma): a tiny Gemma-3 that
ltx.ltx2.text.GemmaTextEncoder loads offline, with a word-level tokenizer, seeded and pretrained on captions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ltx.data.shapes import caption, parse_caption, sample_params
from ltx.ltx2.text import GemmaTextEncoder
from train.make_text_encoder import (
    GEMMA_LAYERS,
    GEMMA_SPECIAL,
    GEMMA_WIDTH,
    gemma_features,
    gemma_vocabulary,
    main,
    make_gemma,
)

PAD, EOS, BOS, UNK = range(4)
pytestmark = pytest.mark.usefixtures("one_thread")  # a tiny model: more threads only stall on a busy machine
STEPS = 40  # the shared folder's pretraining steps
TWO = ["a red circle moves up and a blue square moves down",
       "a blue square moves down and a red circle moves up"]  # the same words, the shapes swapped


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return make_gemma(tmp_path_factory.mktemp("gemma") / "text_encoder", seed=0, pretrain_steps=STEPS)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def encoder(folder):
    return GemmaTextEncoder.from_folder(folder, dtype=torch.float32, max_length=32)


def test_folder_is_a_small_float32_gemma3_text_model(folder):
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and config["architectures"] == ["Gemma3ForCausalLM"]
    assert (config["hidden_size"], config["num_hidden_layers"]) == (GEMMA_WIDTH, GEMMA_LAYERS)
    weights = load_file(folder / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float32}
    assert sum(f.stat().st_size for f in folder.iterdir()) < 5e6
    report = json.loads((folder / "report.json").read_text())
    assert report["num_hidden_states"] == GEMMA_LAYERS + 1 and report["pretrain_steps"] == STEPS


def test_pretraining_learns_to_read_captions(folder):
    """A few dozen steps take the held-out captions above the best constant guess: 1/6 (colour), 1/3 (kind),
    1/5 (motion) for the dominant shape; 1/2 for the second shape's fields (half the scenes have none) and for
    the background (half the scenes are black)."""
    acc = json.loads((folder / "report.json").read_text())["heldout_caption_accuracy"]
    assert min(acc["first_color"], acc["first_kind"]) > 0.9 and min(acc.values()) > 0.6, acc


def test_tokenizer_pads_left_with_bos_first(encoder):
    vocab = {w: i for i, w in enumerate([*GEMMA_SPECIAL, *gemma_vocabulary()])}
    ids, mask = encoder.tokenize(["a red circle moves up", "  A RED Circle, moves UP!  ", "a cyan blob moves up"])
    expected = [BOS] + [vocab[w] for w in "a red circle moves up".split()]
    n = len(expected)
    assert ids.shape == mask.shape == (3, 32)
    assert ids[0].tolist() == [PAD] * (32 - n) + expected and ids[1].tolist() == ids[0].tolist()
    assert mask[0].tolist() == [0] * (32 - n) + [1] * n
    assert ids[2, -6:].tolist() == [BOS, vocab["a"], vocab["cyan"], UNK, vocab["moves"], vocab["up"]]
    assert encoder.tokenizer.convert_ids_to_tokens([PAD, EOS, BOS, UNK]) == list(GEMMA_SPECIAL)


def test_every_caption_word_has_its_own_token(encoder):
    rng = np.random.default_rng(0)
    for _ in range(50):
        text = caption(sample_params(rng, "all"))
        ids = encoder.tokenizer(text).input_ids
        assert ids[0] == BOS and UNK not in ids and len(ids) == len(text.split()) + 1 <= 32
        assert parse_caption(encoder.tokenizer.decode(ids, skip_special_tokens=True)) == parse_caption(text)


def test_all_hidden_states_with_left_padding(encoder):
    """num_layers + 1 states of width D, the last after the final norm; the real tokens' states do not depend on
    how much padding precedes them (what pretraining on longest-padded batches relies on)."""
    hidden, mask = encoder.encode(TWO + ["a red circle moves up"])
    assert len(hidden) == GEMMA_LAYERS + 1 and all(h.shape == (3, 32, GEMMA_WIDTH) for h in hidden)
    assert all(torch.isfinite(h).all() for h in hidden)
    base = encoder.model.model(*encoder.tokenize(TWO)).last_hidden_state
    assert torch.equal(base, hidden[-1][:2])
    short = encoder.tokenizer(["a red circle moves up"], return_tensors="pt")
    alone = encoder.model.model(input_ids=short.input_ids, attention_mask=short.attention_mask,
                                output_hidden_states=True).hidden_states
    n = short.input_ids.shape[1]
    for padded, unpadded in zip(hidden, alone):
        torch.testing.assert_close(padded[2, -n:], unpadded[0], atol=1e-5, rtol=1e-5)


def test_distinct_captions_give_distinct_features(encoder):
    rng = np.random.default_rng(1)
    texts = list(dict.fromkeys([caption(sample_params(rng, "all")) for _ in range(40)] + TWO))
    with torch.no_grad():
        pooled = gemma_features(encoder.model, encoder.tokenizer, texts)  # (N, D * (layers + 1))
        hidden, _ = encoder.encode(TWO)
    assert pooled.shape == (len(texts), GEMMA_WIDTH * (GEMMA_LAYERS + 1))
    dist = torch.cdist(pooled, pooled) + torch.eye(len(texts)) * 1e9
    assert dist.min() > 1e-3, dist.min()
    # causal attention tells the word orders apart: the same bag of words in another order differs per token
    assert (hidden[-1][0] - hidden[-1][1]).abs().amax() > 1e-2


def test_same_seed_same_weights(tmp_path):
    torch.manual_seed(123)  # the global RNG state before the call does not matter: the seed resets it
    first = load_file(make_gemma(tmp_path / "first", seed=0, pretrain_steps=2) / "model.safetensors")
    torch.randn(10)
    again = load_file(make_gemma(tmp_path / "again", seed=0, pretrain_steps=2) / "model.safetensors")
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    other = load_file(make_gemma(tmp_path / "other", seed=1, pretrain_steps=2) / "model.safetensors")
    assert not torch.equal(first["model.embed_tokens.weight"], other["model.embed_tokens.weight"])


def test_command_line_both_families(tmp_path, capsys):
    main([str(tmp_path / "g"), "--family", "gemma", "--pretrain-steps", "0", "--threads", "1"])
    assert (tmp_path / "g" / "tokenizer.json").is_file() and (tmp_path / "g" / "model.safetensors").is_file()
    main([str(tmp_path / "t5"), "--pretrain-steps", "0", "--threads", "1"])  # the default family is the T5
    assert {p.name for p in (tmp_path / "t5").iterdir()} == {"text_encoder", "tokenizer", "ltx_text.json",
                                                            "report.json"}
    with pytest.raises(SystemExit, match=r"^error: family='bert' is invalid: must be one of t5, gemma$"):
        main([str(tmp_path / "b"), "--family", "bert"])
    with pytest.raises(SystemExit, match="exists; pass --overwrite"):
        main([str(tmp_path / "g"), "--family", "gemma", "--pretrain-steps", "0"])
    assert not (tmp_path / "b").exists()
