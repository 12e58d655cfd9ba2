"""Offload (ltx.core.offload) on the CPU: the hooks run as on a GPU (a "copy" is a clone), so the outputs must be
bitwise those without offload, every block must be copied exactly once per transformer forward (and once more in
backward when training), and `remove()` must give back the model exactly."""

from __future__ import annotations

import pytest
import torch

import ltx
from ltx.core.lora import LoRAConfig, freeze_base, inject_lora, lora_parameters
from ltx.core.offload import apply_block_offload, apply_offload
from ltx.core.parallel import apply_activation_checkpointing

PROMPT = "a red circle moves to the left"


@pytest.fixture(scope="module")
def pipes():
    torch.manual_seed(0)
    return {"ltxv": ltx.load_pipeline(device="cpu"), "ltx2": ltx.load_pipeline(model="ltx2-demo", device="cpu")}


@pytest.fixture(scope="module")
def captured(pipes):
    """The inputs of each family's transformer in its first call of a real generation."""
    return {family: _captured_inputs(family, pipe) for family, pipe in pipes.items()}


def _run(family, pipe):  # 2 steps, 9 frames: a few transformer forwards are enough to count
    out = pipe(PROMPT, seed=0, num_inference_steps=2, num_frames=9)
    return (out.frames,) if family == "ltxv" else (out.frames, out.waveform)


def _transformer(family, pipe):
    return pipe.dit if family == "ltxv" else pipe.modules["transformer"]


def _count_forwards(module):
    calls = []
    return calls, module.register_forward_pre_hook(lambda *_: calls.append(1))


def _state(module):
    return {k: (v.clone(), v.device) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("family", ["ltxv", "ltx2"])
@pytest.mark.parametrize("mode", ["model", "blocks"])
def test_pipeline_output_is_bitwise_the_same(pipes, family, mode):
    pipe = pipes[family]
    reference = _run(family, pipe)
    transformer = _transformer(family, pipe)
    before = _state(transformer)
    handle = apply_offload(pipe, mode)
    managed = handle.components.components["transformer"][1]
    if mode == "model":  # every weight is managed (inference: nothing stays behind as "trainable")
        assert len(managed) == len(list(transformer.parameters()))
    else:  # the blocks' weights are streamed, the rest managed as a component
        streamed = sum(t.numel() for masters in handle.blocks._masters for t in masters)
        assert streamed == sum(p.numel() for p in transformer.transformer_blocks.parameters())
        assert len(managed) == len(list(transformer.parameters())) - len(
            list(transformer.transformer_blocks.parameters()))
        weight = transformer.transformer_blocks[0].attn1.to_q.weight  # both families' name
        master, seen = weight.data_ptr(), []
        transformer.transformer_blocks[0].attn1.to_q.register_forward_pre_hook(
            lambda m, _: seen.append(m.weight.data_ptr()))
    calls, hook = _count_forwards(transformer)
    try:
        got = _run(family, pipe)
    finally:
        hook.remove()
    for a, b in zip(reference, got):
        assert torch.equal(a, b), (a.shape, (a - b).abs().max())
    stats = handle.stats
    assert stats["component_moves"]["transformer"] == 1  # stays for every step, leaves for the decode once
    assert stats["component_moves"]["vae"] == 1
    if mode == "blocks":  # each block copied once per transformer forward, nothing in backward
        assert seen and master not in seen  # it ran on the copy, not on the CPU master
        transformer.transformer_blocks[0].attn1.to_q._forward_pre_hooks.clear()
        layers = len(transformer.transformer_blocks)
        assert len(calls) > 1
        assert stats["block_copies"]["forward"] == [len(calls)] * layers
        assert stats["block_copies"]["backward"] == [0] * layers
    handle.remove()
    after = _state(transformer)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k][0], after[k][0]) and before[k][1] == after[k][1] for k in before)
    assert "forward" not in transformer.transformer_blocks[0].__dict__


class _Captured(Exception):
    pass


def _captured_inputs(family, pipe):
    """The (args, kwargs) of the transformer's first call in a real generation (which stops there)."""
    seen = []

    def capture(module, args, kwargs):
        seen.append((args, kwargs))
        raise _Captured

    hook = _transformer(family, pipe).register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with pytest.raises(_Captured):
            _run(family, pipe)
    finally:
        hook.remove()
    return seen[0]


def _lora_step(model, inputs):
    args, kwargs = inputs
    out = model(*args, **kwargs)
    outs = out if isinstance(out, tuple) else (out,)
    loss = sum(o.float().square().mean() for o in outs if o is not None)
    loss.backward()
    grads = [p.grad.clone() for p in lora_parameters(model)]
    for p in lora_parameters(model):
        p.grad = None
    return loss.detach(), grads


@pytest.mark.parametrize("family, checkpointing", [
    ("ltxv", False), ("ltx2", False), ("ltx2", True),
    pytest.param("ltxv", True, marks=pytest.mark.slow),  # ~20 s; ltx2 covers checkpointing in the fast set
])
def test_lora_training_gradients_are_bitwise_the_same(pipes, captured, family, checkpointing):
    """A LoRA step on the demo transformer: loss and adapter gradients equal with and without block streaming;
    each block copied once in forward and once in backward; the adapters never leave the device."""
    pipe = pipes[family]
    inputs = captured[family]
    model = _transformer(family, pipe)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        inject_lora(model, LoRAConfig(rank=2), generator=torch.Generator().manual_seed(0))
        freeze_base(model)
        with torch.no_grad():  # B starts at zero: give it values so A's gradient is not zero either
            for p in lora_parameters(model):
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.1)
        if checkpointing:
            apply_activation_checkpointing(model)
        model.train()
        loss, grads = _lora_step(model, inputs)
        assert all(g.abs().sum() > 0 for g in grads)
        streamer = apply_block_offload(model, "cpu", prefetch=1)
        layers = len(model.transformer_blocks)
        for _ in range(2):  # a second step: the release at the end of backward left nothing behind
            streamer.reset_stats()
            loss2, grads2 = _lora_step(model, inputs)
            assert torch.equal(loss, loss2)
            assert all(torch.equal(a, b) for a, b in zip(grads, grads2))
            assert streamer.stats["block_copies"] == {"forward": [1] * layers, "backward": [1] * layers}
            assert not streamer._resident and not streamer._pending
        streamer.remove()
    finally:  # the module-scoped demo pipeline gets its plain transformer back
        from ltx.core.lora import remove_lora

        remove_lora(model)
        for block in model.transformer_blocks:
            block.__dict__.pop("forward", None)
        model.load_state_dict(saved)
        model.eval()
        model.requires_grad_(True)


def test_streamed_weights_are_references_in_the_graph(pipes, captured):
    """Without checkpointing the graph must not keep the block's device copy alive: after forward no block is
    resident (the saved weights are references), and backward fetches each block again."""
    pipe = pipes["ltxv"]
    inputs = captured["ltxv"]
    model = pipe.dit
    model.requires_grad_(False)
    try:
        streamer = apply_block_offload(model, "cpu", prefetch=0)
        args, kwargs = inputs
        x = args[0].clone().requires_grad_(True)
        out = model(x, *args[1:], **kwargs)
        assert not streamer._resident and not streamer._storage
        out.square().mean().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
        layers = len(model.transformer_blocks)
        assert streamer.stats["block_copies"] == {"forward": [1] * layers, "backward": [1] * layers}
        streamer.remove()
    finally:
        model.requires_grad_(True)


def test_bad_mode_is_one_clear_line(pipes):
    with pytest.raises(ValueError, match=r"offload='disk' is not supported \(supported: none, model, blocks\)"):
        apply_offload(pipes["ltxv"], "disk")
    with pytest.raises(ValueError, match="prefetch must be an integer >= 0"):
        apply_block_offload(pipes["ltxv"].dit, "cpu", prefetch=-1)
