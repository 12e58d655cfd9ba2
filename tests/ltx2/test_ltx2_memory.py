"""ltx/ltx2/memory.py: parameter counts against the modules built on meta (exact), each item's closed form,
monotonicity, the checkpointing saving, the README's verdicts, and bad input in one line."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ltx.core.lora import LoRAConfig, inject_lora, lora_parameters
from ltx.ltx2 import memory
from ltx.ltx2.text import EmbeddingsProcessor, TextConnectorConfig
from ltx.ltx2.transformer import AVTransformer, AVTransformerConfig

CONFIGS = {"19b": (AVTransformerConfig.ltx2_19b(), TextConnectorConfig.ltx2_19b()),
           "22b": (AVTransformerConfig.ltx2_3_22b(), TextConnectorConfig.ltx2_3())}
CLIP_V, CLIP_A = 6144, 126


def _numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("model", ["19b", "22b"])
def test_parameter_counts_equal_the_modules_on_meta(model):
    cfg, text = CONFIGS[model]
    with torch.device("meta"):
        transformer = AVTransformer(cfg)
        processor = EmbeddingsProcessor(text)
    assert memory.transformer_parameters(cfg) == _numel(transformer)
    assert memory.block_parameters(cfg) == _numel(transformer.transformer_blocks[0])
    connectors = _numel(processor.video_connector) + _numel(processor.audio_connector)
    assert memory.connector_parameters(text) == connectors
    assert 18.5e9 < memory.transformer_parameters(cfg) < 19.5e9  # "19B" (the 22B counts Gemma's projections too)


@pytest.mark.parametrize("model", ["19b", "22b"])
def test_lora_parameters_equal_the_injected_adapters(model):
    cfg = dataclasses.replace(CONFIGS[model][0], num_layers=1)  # full widths, one block: counts scale by layers
    with torch.device("meta"):
        transformer = AVTransformer(cfg)
    inject_lora(transformer, LoRAConfig(rank=4, targets=memory.LORA_TARGETS), dtype=torch.float32)
    assert memory.lora_parameters(cfg, 4) == sum(p.numel() for p in lora_parameters(transformer))
    assert memory.lora_parameters(CONFIGS[model][0], 4) == 48 * memory.lora_parameters(cfg, 4)


def test_items_follow_their_closed_forms():
    cfg, text = CONFIGS["19b"]
    n, n_lora, n_conn = (memory.transformer_parameters(cfg), memory.lora_parameters(cfg, 32),
                         memory.connector_parameters(text))
    gb = 1e9
    p = memory.plan("19b", "lora", video_tokens=CLIP_V, audio_tokens=CLIP_A, base_dtype="bf16", optimizer="adamw")
    assert p["base"] == pytest.approx(2 * n / gb) and p["text connectors"] == pytest.approx(2 * n_conn / gb)
    assert p["adapters"] == pytest.approx(4 * n_lora / gb) and p["gradients"] == pytest.approx(4 * n_lora / gb)
    assert p["optimizer"] == pytest.approx(8 * n_lora / gb) and p["fsdp gathered blocks"] == 0
    assert p["total"] == pytest.approx(sum(v for k, v in p.items() if k != "total"))
    assert 37 < p["base"] < 39  # a bf16 19B base alone is ~38 GB
    p8 = memory.plan("19b", "lora", video_tokens=CLIP_V, audio_tokens=CLIP_A, optimizer="adamw8bit")
    assert p8["optimizer"] == pytest.approx(2 * n_lora / gb)
    full = memory.plan("19b", "full", video_tokens=CLIP_V, audio_tokens=CLIP_A, base_dtype="fp32")
    assert full["base"] == full["gradients"] == pytest.approx(4 * n / gb) and full["adapters"] == 0
    assert full["optimizer"] == pytest.approx(8 * n / gb)
    four = memory.plan("19b", "full", video_tokens=CLIP_V, audio_tokens=CLIP_A, base_dtype="fp32", gpus=4)
    for item in ("base", "gradients", "optimizer", "text connectors"):
        assert four[item] == pytest.approx(full[item] / 4)
    assert four["fsdp gathered blocks"] == pytest.approx(2 * 4 * memory.block_parameters(cfg) / gb)
    assert four["activations"] == full["activations"]  # batch 1 on every GPU


def test_activations_follow_their_closed_forms():
    cfg = CONFIGS["19b"][0]
    tokens = CLIP_V + CLIP_A
    for compute, width in (("fp32", 4), ("bf16", 2)):
        a = memory.ACTIVATIONS[compute]
        plain = memory.activation_bytes(cfg, CLIP_V, CLIP_A, compute, checkpointing=False)
        assert plain == pytest.approx(tokens * (48 * a.per_block + a.fixed))
        kept = width * (CLIP_V * 4096 + CLIP_A * 2048)  # each block's input: the two residual streams
        assert memory.kept_bytes(cfg, CLIP_V, CLIP_A, compute) == kept
        ckpt = memory.activation_bytes(cfg, CLIP_V, CLIP_A, compute, checkpointing=True)
        assert ckpt == pytest.approx(48 * kept + tokens * a.recompute)
        # the saving at 48 blocks: most of the activations
        assert plain - ckpt == pytest.approx(tokens * (48 * a.per_block + a.fixed - a.recompute) - 48 * kept)
        assert plain - ckpt > 0.6 * plain
        # on the measured 2-block model checkpointing saves little: one block is recomputed while the other's
        # input is all that was kept
        two = dataclasses.replace(cfg, num_layers=2)
        assert memory.activation_bytes(two, 384, 126, compute, True) > 0.7 * memory.activation_bytes(
            two, 384, 126, compute, False)


def test_measured_constants_say_where_they_came_from():
    for compute, a in memory.ACTIVATIONS.items():
        assert a.per_block > 0 and a.fixed >= 0 and a.recompute > a.per_block, compute
        assert "bench_finetune.py --ltx2" in a.source, a.source
    assert "DERIVED" not in memory.ACTIVATIONS["fp32"].source  # the fp32 constants are measured


@pytest.mark.parametrize("model", ["19b", "22b"])
def test_monotone(model):
    def total(**kw):
        args = {"video_tokens": CLIP_V, "audio_tokens": CLIP_A, "base_dtype": "bf16", "checkpointing": True,
                "optimizer": "adamw", "rank": 32, **kw}
        return memory.plan(model, "lora", **args)["total"]

    assert total(video_tokens=1536) < total(video_tokens=3072) < total()
    assert total(audio_tokens=0) < total()
    assert total(rank=16) < total() < total(rank=64)
    assert total(base_dtype="fp8") < total() < total(base_dtype="fp32")
    assert total(optimizer="adamw8bit") < total()
    assert total(checkpointing=True) < total(checkpointing=False)
    assert total(gpus=2) < total()


def test_fits_table_is_honest():
    rows = {r["label"]: r for r in memory.fits_table("19b")}
    single_bf16 = [r for r in rows.values() if r["setting"].base_dtype == "bf16" and r["setting"].gpus == 1]
    assert single_bf16 and all(not r["fits"][24] and not r["fits"][32] for r in single_bf16)
    fp8 = [r for r in rows.values() if r["setting"].base_dtype == "fp8"]
    assert fp8 and all("not implemented" in r["plan"]["not_implemented"] for r in fp8)
    assert all("not_implemented" not in r["plan"] for r in rows.values() if r["setting"].base_dtype != "fp8")
    for r in rows.values():  # a bigger card fits whatever a smaller one does
        fits = [r["fits"][c] for c in memory.CARDS]
        assert fits == sorted(fits)
    text = memory.markdown(list(rows.values()))
    assert text.startswith("| setting |") and "not implemented" in text
    assert memory.clip_tokens() == (CLIP_V, CLIP_A)


@pytest.mark.parametrize("kwargs, message", [
    ({"model": "13b"}, "model='13b' is not supported (supported: 19b, 22b)"),
    ({"mode": "dora"}, "mode='dora' is not supported (supported: lora, full)"),
    ({"base_dtype": "fp16"}, "base_dtype='fp16' is not supported (supported: bf16, fp32, fp8)"),
    ({"optimizer": "sgd"}, "optimizer='sgd' is not supported (supported: adamw, adamw8bit)"),
    ({"video_tokens": 0}, "video_tokens=0 is not supported (supported: an integer >= 1)"),
    ({"gpus": 0}, "gpus=0 is not supported (supported: an integer >= 1)"),
    ({"mode": "full", "base_dtype": "fp8"}, "base_dtype='fp8' is not supported for full fine-tuning"),
])
def test_bad_input_is_one_line(kwargs, message):
    args = {"model": "19b", "mode": "lora", "video_tokens": CLIP_V, **kwargs}
    with pytest.raises(ValueError) as e:
        memory.plan(args.pop("model"), args.pop("mode"), **args)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
