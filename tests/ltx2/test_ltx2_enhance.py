"""ltx.ltx2.enhance on tiny random Gemmas saved to tmp folders (a dense Gemma 4, as LTX-2.5's enhancer, and a
Gemma 3 that is also the text encoder, as LTX-2 / 2.3's). Their output is gibberish, so the mechanics are tested:
the chat template applied, greedy = deterministic (RNG state irrelevant, a longer budget extends the shorter
output), max_new_tokens respected, one clear line for a missing or unsuitable folder, the official system prompts
read at run time from the installed diffusers."""

from __future__ import annotations

import pytest
import torch

from ltx.ltx2.enhance import (
    MAX_NEW_TOKENS,
    SYSTEM_PROMPT,
    USER_PREFIX,
    PromptEnhancer,
    enhance_prompt,
    official_system_prompt,
)
from ltx.ltx2.text import GemmaFolderMissing, GemmaTextEncoder

WORDS = ("a red cat runs on the green grass under blue sky while music plays softly system user model request "
         "video caption sound").split()
SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
VOCAB = {t: i for i, t in enumerate([*SPECIAL, *WORDS])}
END_OF_TURN = VOCAB["<end_of_turn>"]
# a Gemma-style turn format, written for this test (the real templates ship with the -it folders)
TEMPLATE = ("{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
            "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
PROMPT = "a red cat runs on the green grass"


def save_tokenizer(folder, chat: bool = True):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
                                   chat_template=TEMPLATE if chat else None)
    fast.save_pretrained(folder)


def _widen(model: torch.nn.Module) -> None:
    with torch.no_grad():  # Gemma's 0.02-std init makes near-uniform logits: widen so greedy choices are clear
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.mul_(10.0)


def gemma4_dense_config():
    from transformers import Gemma4Config

    v = len(VOCAB) + 7
    return Gemma4Config(
        text_config=dict(vocab_size=v, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=8, global_head_dim=16,
                         sliding_window=8, vocab_size_per_layer_input=v, hidden_size_per_layer_input=4,
                         layer_types=["sliding_attention", "full_attention"], eos_token_id=[1, END_OF_TURN]),
        vision_config=None, audio_config=None, boi_token_id=v - 1, eoi_token_id=v - 2, image_token_id=v - 3,
        video_token_id=v - 4, boa_token_id=v - 5, eoa_token_index=v - 6, audio_token_id=v - 7)


@pytest.fixture(scope="module")
def gemma4_folder(tmp_path_factory):
    from transformers import Gemma4ForConditionalGeneration, GenerationConfig

    folder = tmp_path_factory.mktemp("gemma4_it")
    save_tokenizer(folder)
    torch.manual_seed(3)
    model = Gemma4ForConditionalGeneration(gemma4_dense_config())
    _widen(model)
    model.generation_config = GenerationConfig(bos_token_id=2, eos_token_id=[1, END_OF_TURN], pad_token_id=0)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def gemma3_folder(tmp_path_factory):
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    folder = tmp_path_factory.mktemp("gemma3_it")
    save_tokenizer(folder)
    v = len(VOCAB)
    cfg = Gemma3Config(
        text_config=dict(vocab_size=v, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=8, sliding_window=64,
                         max_position_embeddings=2048),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=28, patch_size=14),
        mm_tokens_per_image=1, boi_token_index=v, eoi_token_index=v + 1, image_token_index=v + 2)
    torch.manual_seed(5)  # a seed whose first greedy token is not <eos> (seed 4's is)
    model = Gemma3ForConditionalGeneration(cfg)
    _widen(model)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def enhancer(gemma4_folder):
    return PromptEnhancer.from_folder(gemma4_folder, dtype=torch.float32)


def test_chat_template_applied(enhancer):
    text = enhancer.chat_text(f"  {PROMPT} ")
    assert text == (f"<bos><start_of_turn>system\n{SYSTEM_PROMPT}<end_of_turn>\n"
                    f"<start_of_turn>user\n{USER_PREFIX}{PROMPT}<end_of_turn>\n<start_of_turn>model\n")
    ids = enhancer.input_ids(PROMPT)[0].tolist()
    assert ids == enhancer.tokenizer(text, add_special_tokens=False).input_ids
    assert ids.count(2) == 1 and ids[0] == 2  # one <bos>, first
    assert ids[-3:] == [VOCAB["<start_of_turn>"], VOCAB["model"], VOCAB["<unk>"]] or ids[-2:] == [
        VOCAB["<start_of_turn>"], VOCAB["model"]]  # the model's turn is open
    assert enhancer.max_new_tokens == MAX_NEW_TOKENS[4] == 600


def test_greedy_is_deterministic(enhancer):
    torch.manual_seed(0)
    first = enhancer.enhance(PROMPT, max_new_tokens=12)
    torch.manual_seed(123)
    torch.rand(7)
    again = enhancer.enhance(PROMPT, max_new_tokens=12)
    print(f"tiny Gemma 4 enhancement: {first!r}")
    assert isinstance(first, str) and first == again and first
    assert first == " ".join(first.split())  # one paragraph, single spaces


def test_max_new_tokens_respected(enhancer):
    short = enhancer.generate(PROMPT, max_new_tokens=3).tolist()
    long = enhancer.generate(PROMPT, max_new_tokens=12).tolist()
    ends = {1, END_OF_TURN}
    assert len(short) <= 3 and (len(short) == 3 or short[-1] in ends)
    assert len(long) <= 12 and (len(long) == 12 or long[-1] in ends)
    assert long[: len(short)] == short  # greedy: a larger budget only extends the output
    assert len(long) > len(short) or short[-1] in ends


def test_gemma3_text_encoder_doubles_as_enhancer(gemma3_folder):
    encoder = GemmaTextEncoder.from_folder(gemma3_folder, dtype=torch.float32, max_length=16)
    enhancer = PromptEnhancer.from_encoder(encoder)
    assert enhancer.model is encoder.model  # nothing loaded twice
    assert enhancer.max_new_tokens == MAX_NEW_TOKENS[3] == 512
    out = enhancer.enhance(PROMPT, max_new_tokens=6)
    print(f"tiny Gemma 3 enhancement: {out!r}")
    assert out and out != PROMPT and len(enhancer.generate(PROMPT, max_new_tokens=6)) <= 6
    assert out == enhance_prompt(gemma3_folder, PROMPT, dtype=torch.float32, max_new_tokens=6)  # same weights
    hs, _ = encoder.encode(PROMPT)  # the encoder still encodes (the tokenizer's padding side is untouched)
    assert len(hs) == 3 and hs[0].shape == (1, 16, 16)


def test_empty_generation_gives_the_prompt_back(enhancer, monkeypatch):
    monkeypatch.setattr(enhancer, "generate", lambda prompt, n=None: torch.tensor([END_OF_TURN]))
    with pytest.warns(UserWarning, match="no text"):
        assert enhancer.enhance(PROMPT) == PROMPT


def _one_line(excinfo) -> str:
    text = str(excinfo.value)
    print(text)
    assert "\n" not in text
    return text


def test_unsuitable_folders_one_line(tmp_path, gemma4_folder):
    with pytest.raises(GemmaFolderMissing, match="does not exist") as e:
        PromptEnhancer.from_folder(tmp_path / "nope")
    _one_line(e)
    with pytest.raises(GemmaFolderMissing, match="no config.json") as e:
        enhance_prompt(tmp_path, PROMPT)
    _one_line(e)

    from transformers import Gemma4UnifiedConfig

    unified = tmp_path / "unified"
    Gemma4UnifiedConfig(text_config=dict(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                                         layer_types=["full_attention"]),
                        vision_config=None, audio_config=None).save_pretrained(unified)
    with pytest.raises(ValueError, match="not trained for prompt enhancement") as e:
        PromptEnhancer.from_folder(unified)
    _one_line(e)

    no_chat = tmp_path / "no_chat"
    gemma4_dense_config().save_pretrained(no_chat)  # config + tokenizer only: refused before any weight is read
    save_tokenizer(no_chat, chat=False)
    with pytest.raises(ValueError, match="no chat template") as e:
        PromptEnhancer.from_folder(no_chat)
    _one_line(e)


def test_official_system_prompts_read_at_run_time():
    for model_type in ("gemma4", "gemma3"):
        text = official_system_prompt(model_type)
        assert len(text) > 500 and text != SYSTEM_PROMPT
    assert official_system_prompt("gemma4") != official_system_prompt("gemma3")
    for bad in ("gemma4_unified", "llama"):
        with pytest.raises(ValueError, match="no official enhancement system prompt"):
            official_system_prompt(bad)
