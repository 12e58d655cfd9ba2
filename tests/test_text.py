"""T5 wrapper on a tiny random T5 + word-level tokenizer written to a temp folder (no downloads)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from ltx.ltxv.text import T5TextEncoder, TextEncoderMissing, load_embeddings, save_embeddings  # noqa: E402


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    root = tmp_path_factory.mktemp("t5")
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "a": 3, "cat": 4, "dog": 5, "runs": 6, "red": 7}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>") \
        .save_pretrained(root / "tokenizer")
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=8, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, feed_forward_proj="gated-gelu")
    T5EncoderModel(cfg).save_pretrained(root / "text_encoder")
    return root


def test_encode_mask_padding_and_cache(t5_dir):
    enc = T5TextEncoder(t5_dir, dtype=torch.float32, max_tokens=8)
    ctx, mask = enc.encode(["a cat runs ", "dog"])
    assert ctx.shape == (2, 8, 16) and mask.tolist() == [[1, 1, 1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0]]
    # same as a direct masked forward of the token ids (strip + eos + pad)
    ids = torch.tensor([[3, 4, 6, 1, 0, 0, 0, 0]])
    direct = enc.model(ids, attention_mask=mask[:1]).last_hidden_state
    torch.testing.assert_close(ctx[:1], direct, atol=2e-6, rtol=0)  # measured 3.6e-7: T5 attention backend order
    again, _ = enc.encode("a cat runs")
    assert again[0].data_ptr() == ctx[0].data_ptr() or torch.equal(again[0], ctx[0])
    assert len(enc.cache) == 2


def test_missing_folder_and_embeddings_file(tmp_path):
    with pytest.raises(TextEncoderMissing, match="precomputed embeddings"):
        T5TextEncoder(tmp_path / "nope")
    ctx, mask = torch.randn(1, 4, 6), torch.ones(1, 4)
    p = save_embeddings(tmp_path / "e.safetensors", ctx, mask)
    c2, m2 = load_embeddings(p)
    assert torch.equal(c2, ctx) and torch.equal(m2, mask)
    with pytest.raises(FileExistsError):
        save_embeddings(p, ctx, mask)
