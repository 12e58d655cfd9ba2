"""CPU offload, applied from outside the models (as `ltx.core.parallel` applies compile and FSDP).

Two levels, both reversible (`handle.remove()` puts every weight back where it was):

- component offload (`mode="model"`): the pipeline's components (transformer, VAE, upsampler, text connectors,
  audio VAE, vocoder, the 0.9.x T5) live in CPU memory and one at a time is on the compute device: a component
  is moved there when it is entered (a forward pre-hook on each of its modules, and its entry methods such as
  `encode` / `decode` / `normalize`) and the one used before goes back to the CPU. The transformer therefore
  stays on the device for all the steps of a pass and leaves for the VAE decode. Buffers (statistics, tables:
  small) stay on the device. LTX-2's Gemma is already loaded for `encode_prompts` and freed; offload empties the
  device before it loads (`text_encoder_device="cpu"` runs it on the CPU instead).
- block streaming (`mode="blocks"`): component offload plus the transformer's `transformer_blocks` streamed from
  pinned CPU memory: block i is copied to the device before it runs and freed after, and block i+1 (up to
  `prefetch` blocks ahead) is copied on a side CUDA stream while block i computes. Resident on the device: the
  transformer's other layers while it runs, and (`apply_block_offload`, the trainers' entry) every parameter
  that requires grad (LoRA adapters: their gradients and the optimizer never see a CPU tensor). A pipeline
  (`apply_offload`) is inference: every weight moves.

Training (block streaming): gradients flow as without offload. Without activation checkpointing the autograd
graph would keep each block's device weights alive; instead a saved-tensor hook replaces a saved block weight by a
reference and backward copies the block again when it needs it (once per block, in reverse order, prefetching
the block below). With activation checkpointing (either order of `apply_activation_checkpointing` and this) the
recomputation runs through the streamed forward and copies the block once. So a training step copies each block
exactly twice: once in forward, once in backward. Inference: once per transformer forward.

On the CPU (compute device == storage device) the hooks run all the same: a "copy" is a clone, so the tests see
the logic (bitwise-equal outputs and gradients, the copy counts in `stats`).

    handle = apply_offload(pipe, "blocks", prefetch=1)   # a 0.9.x or LTX-2 ltx Pipeline
    out = pipe("a red ball", seed=0)
    handle.stats            # {"component_moves": {...}, "block_copies": {"forward": [..], "backward": [..]}}
    handle.remove()

    streamer = apply_block_offload(transformer, "cuda")   # a transformer alone
    streamer = apply_training_offload(transformer, "cuda")  # a LoRA trainer: built on the CPU, the rest moved
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ltx.core.parallel import _blocks, _checkpointed

OffloadMode = Literal["none", "model", "blocks"]
MODES = ("none", "model", "blocks")
ENTRY_METHODS = ("encode", "decode", "encode_moments", "decoder_input", "posterior", "normalize", "denormalize")
STORAGE = torch.device("cpu")


def _in_backward() -> bool:
    return torch._C._current_graph_task_id() != -1  # as torch.utils.checkpoint tells recomputation apart


def _moved_params(module: nn.Module, keep_trainable: bool, skip: tuple[nn.Module, ...] = ()
                  ) -> list[tuple[nn.Module, str, str]]:
    """(owner module, "param", name) of the parameters of `module` that offload moves (all of them, or only the
    frozen ones when `keep_trainable`), outside the subtrees in `skip`."""
    skipped = {id(m) for s in skip for m in s.modules()}
    out = []
    for m in module.modules():
        if id(m) in skipped:
            continue
        out += [(m, "param", n) for n, p in m._parameters.items()
                if p is not None and not (keep_trainable and p.requires_grad)]
    return out


def _get(owner: nn.Module, kind: str, name: str) -> Tensor:
    return owner._parameters[name] if kind == "param" else owner._buffers[name]


def _set(owner: nn.Module, kind: str, name: str, value: Tensor) -> None:
    if kind == "param":
        owner._parameters[name].data = value
    else:
        owner._buffers[name] = value


# ------------------------------------------------------------------------------------------- block streaming


@dataclass(frozen=True)
class _SavedWeight:
    """What backward keeps of a block weight instead of the device tensor: where to find it again."""

    block: int
    slot: int
    size: torch.Size
    stride: tuple[int, ...]
    offset: int


class BlockOffload:
    """Stream `transformer_blocks` (frozen parameters and buffers) from CPU memory to `device`.

    `stats["block_copies"]`: per phase ("forward", "backward") the number of host -> device copies of each block
    (prefetched copies included); `reset_stats()` zeroes them."""

    def __init__(self, model: nn.Module, device: torch.device | str, *, prefetch: int = 1,
                 attr: str = "transformer_blocks", keep_trainable: bool = True):
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
            raise ValueError(f"prefetch must be an integer >= 0 (blocks copied ahead), got {prefetch!r}")
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.prefetch = prefetch
        self.blocks = _blocks(model, attr)
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        n = len(self.blocks)
        self.stats = {"block_copies": {"forward": [0] * n, "backward": [0] * n}}
        self._slots: list[list[tuple[nn.Module, str, str]]] = []
        self._masters: list[list[Tensor]] = []
        self._origins: list[list[torch.device]] = []
        self._pending: dict[int, tuple[list[Tensor], torch.cuda.Event | None]] = {}
        self._resident: dict[int, list[Tensor]] = {}
        self._storage: dict[tuple[torch.device, int], tuple[int, int]] = {}  # device storage -> (block, slot)
        self._callback_queued = False
        self._forwards: list[tuple[nn.Module, object]] = []
        for i, block in enumerate(self.blocks):
            slots = _moved_params(block, keep_trainable) + [(m, "buffer", name) for m in block.modules()
                                              for name, b in m._buffers.items() if b is not None]
            origins, masters = [], []
            for owner, kind, name in slots:
                t = _get(owner, kind, name)
                origins.append(t.device)
                master = t.detach().to(STORAGE)
                if self.cuda:
                    master = master.pin_memory()
                masters.append(master)
                _set(owner, kind, name, master)
            for p in block.parameters():  # kept parameters (adapters being trained): resident
                if keep_trainable and p.requires_grad:
                    p.data = p.data.to(self.device)
            self._slots.append(slots)
            self._masters.append(masters)
            self._origins.append(origins)
            self._forwards.append((block, block.__dict__.get("forward")))
            self._wrap(i, block)

    # --- moving
    def _copy(self, i: int, phase: str) -> None:
        """Start copying block i to the device (on the side stream with CUDA; a clone on the CPU)."""
        if i in self._pending or i in self._resident or not 0 <= i < len(self.blocks):
            return
        if self.cuda:
            with torch.cuda.stream(self.stream):
                tensors = [m.to(self.device, non_blocking=True) for m in self._masters[i]]
                event = torch.cuda.Event()
                event.record(self.stream)
        else:
            tensors, event = [m.to(self.device, copy=True) for m in self._masters[i]], None
        self._pending[i] = (tensors, event)
        self.stats["block_copies"][phase][i] += 1

    def _activate(self, i: int, phase: str) -> list[Tensor]:
        """Block i's device tensors, in place in the block (copied now unless prefetched); prefetch the next."""
        if i not in self._resident:
            self._copy(i, phase)
            tensors, event = self._pending.pop(i)
            if event is not None:
                current = torch.cuda.current_stream(self.device)
                current.wait_event(event)
                for t in tensors:  # allocated on the side stream, used and freed on this one
                    t.record_stream(current)
            for slot, ((owner, kind, name), t) in enumerate(zip(self._slots[i], tensors)):
                _set(owner, kind, name, t)
                self._storage[(t.device, t.untyped_storage().data_ptr())] = (i, slot)
            self._resident[i] = tensors
        step = -1 if phase == "backward" else 1
        for k in range(1, self.prefetch + 1):
            self._copy(i + step * k, phase)
        return self._resident[i]

    def _release(self, i: int) -> None:
        tensors = self._resident.pop(i, None)
        if tensors is None:
            return
        for (owner, kind, name), master, t in zip(self._slots[i], self._masters[i], tensors):
            _set(owner, kind, name, master)
            self._storage.pop((t.device, t.untyped_storage().data_ptr()), None)

    def release_all(self) -> None:
        """Every block back to CPU memory, prefetched copies dropped."""
        for i in list(self._resident):
            self._release(i)
        self._pending.clear()
        self._callback_queued = False

    # --- backward: block weights saved by autograd are references, fetched again on use
    def _pack(self, t: Tensor):
        where = self._storage.get((t.device, t.untyped_storage().data_ptr())) if isinstance(t, Tensor) else None
        if where is None:
            return t
        i, slot = where
        if self._resident[i][slot].dtype != t.dtype:
            return t
        return _SavedWeight(i, slot, t.size(), t.stride(), t.storage_offset())

    def _unpack(self, saved) -> Tensor:
        if not isinstance(saved, _SavedWeight):
            return saved
        if not self._callback_queued:  # release everything when this backward ends
            torch.autograd.Variable._execution_engine.queue_callback(self.release_all)
            self._callback_queued = True
        for j in [j for j in self._resident if j > saved.block]:  # backward walks down: those are done
            self._release(j)
        base = self._activate(saved.block, "backward")[saved.slot]
        return base.as_strided(saved.size, saved.stride, saved.offset)

    def _wrap(self, i: int, block: nn.Module) -> None:
        inner = block.forward
        checkpointed = getattr(inner, "activation_checkpointed", False)
        if checkpointed:  # stream inside the checkpoint, so its recomputation fetches the block too
            inner = inner.__wrapped__

        @functools.wraps(inner)
        def streamed(*args, **kwargs):
            phase = "backward" if _in_backward() else "forward"
            self._activate(i, phase)
            try:
                saving = torch.is_grad_enabled() and not getattr(block.forward, "activation_checkpointed", False)
                if saving:
                    with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
                        return inner(*args, **kwargs)
                return inner(*args, **kwargs)
            finally:
                self._release(i)

        streamed.block_streamed = True
        if checkpointed:
            block.forward = _checkpointed(streamed)
        else:
            block.forward = streamed

    def reset_stats(self) -> None:
        for counts in self.stats["block_copies"].values():
            counts[:] = [0] * len(counts)

    def remove(self) -> None:
        """Undo: the blocks' forwards and every tensor back on the device it had before."""
        self.release_all()
        for (block, forward), slots, masters, origins in zip(self._forwards, self._slots, self._masters,
                                                            self._origins):
            if forward is None:
                block.__dict__.pop("forward", None)
            else:
                block.forward = forward
            for (owner, kind, name), master, origin in zip(slots, masters, origins):
                _set(owner, kind, name, master.to(origin))


def apply_block_offload(model: nn.Module, device: torch.device | str, *, prefetch: int = 1,
                        attr: str = "transformer_blocks", keep_trainable: bool = True) -> BlockOffload:
    """Stream `model.<attr>` from CPU memory to `device` (see the module docstring); the rest of the model is
    not moved: put it on `device` yourself (a trainer) or use `apply_offload` (a pipeline). `keep_trainable`:
    parameters that require grad (LoRA adapters) stay on the device; False streams every parameter."""
    return BlockOffload(model, device, prefetch=prefetch, attr=attr, keep_trainable=keep_trainable)


def apply_training_offload(model: nn.Module, device: torch.device | str, *, prefetch: int = 1,
                           attr: str = "transformer_blocks") -> BlockOffload:
    """A LoRA trainer's offload (`offload=blocks`): `model` was built in CPU memory, so its frozen weights never
    sit on `device` together. Its `attr` blocks stream from CPU memory (`apply_block_offload`, the adapters
    resident on `device`) and every other parameter and buffer moves to `device` now. `.remove()` puts the blocks
    back in CPU memory (the rest stays on `device`)."""
    handle = apply_block_offload(model, device, prefetch=prefetch, attr=attr, keep_trainable=True)
    streamed = {id(m) for m in _blocks(model, attr).modules()}
    device = torch.device(device)
    for m in model.modules():
        if id(m) in streamed:
            continue
        for p in m._parameters.values():
            if p is not None:
                p.data = p.data.to(device)
        m._buffers.update({k: b.to(device) for k, b in m._buffers.items() if b is not None})
    return handle


# ------------------------------------------------------------------------------------------- component offload


class ComponentOffload:
    """At most one component's weights on the device at a time; the others in CPU memory.

    `stats["component_moves"][name]`: how many times `name` was moved to the device."""

    def __init__(self, device: torch.device | str, *, keep_trainable: bool = False):
        self.device = torch.device(device)
        self.keep_trainable = keep_trainable
        self.components: dict[str, tuple[nn.Module, list[tuple[nn.Module, str, str]]]] = {}
        self.current: str | None = None
        self.stats: dict = {"component_moves": {}}
        self._hooks: list = []
        self._methods: list[tuple[nn.Module, str]] = []
        self._origins: dict[str, list[torch.device]] = {}

    def add(self, name: str, module: nn.Module, *, skip: tuple[nn.Module, ...] = ()) -> None:
        """Manage `module`: its parameters (outside `skip`, e.g. streamed blocks; with `keep_trainable` only the
        frozen ones) go to the CPU now, its buffers (and kept parameters) to the device; it comes back to the device
        when one of its modules runs or an entry method (`ENTRY_METHODS`) is called."""
        slots = _moved_params(module, self.keep_trainable, skip)
        self._origins[name] = [_get(*s).device for s in slots]
        self.components[name] = (module, slots)
        self.stats["component_moves"].setdefault(name, 0)
        skipped = {id(m) for s in skip for m in s.modules()}
        for m in module.modules():
            if id(m) not in skipped:
                m._buffers.update({k: b.to(self.device) for k, b in m._buffers.items() if b is not None})
                for p in m._parameters.values():
                    if p is not None and self.keep_trainable and p.requires_grad:
                        p.data = p.data.to(self.device)
        self._move(name, STORAGE)
        enter = functools.partial(self._enter, name)
        self._hooks += [m.register_forward_pre_hook(lambda *_: enter()) for m in module.modules()]
        for method in ENTRY_METHODS:
            if callable(getattr(type(module), method, None)):
                self._methods.append((module, method))
                setattr(module, method, self._entering(name, getattr(module, method)))

    def _entering(self, name: str, method: Callable) -> Callable:
        @functools.wraps(method)
        def entered(*args, **kwargs):
            self._enter(name)
            return method(*args, **kwargs)

        return entered

    def _move(self, name: str, device: torch.device) -> None:
        for owner, kind, attr in self.components[name][1]:
            t = _get(owner, kind, attr)
            if t.device != device:
                _set(owner, kind, attr, t.to(device))

    def _enter(self, name: str) -> None:
        if self.current == name:
            return
        self.evict()
        self._move(name, self.device)
        self.current = name
        self.stats["component_moves"][name] += 1

    def evict(self) -> None:
        """The component on the device (if any) back to CPU memory."""
        if self.current is not None:
            self._move(self.current, STORAGE)
            self.current = None
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        for module, method in self._methods:
            module.__dict__.pop(method, None)
        for name, (_, slots) in self.components.items():
            for (owner, kind, attr), origin in zip(slots, self._origins[name]):
                _set(owner, kind, attr, _get(owner, kind, attr).to(origin))
        self.components.clear()
        self.current = None


# ------------------------------------------------------------------------------------------- pipelines


def pipeline_components(pipe) -> dict[str, nn.Module]:
    """The torch modules of an ltx pipeline by role: LTX-2 (`pipe.modules`: transformer, text, vae, audio_vae,
    vocoder, upsampler) or 0.9.x (`dit` -> transformer, vae, upsampler). Duck-typed: the core imports neither
    family."""
    if isinstance(getattr(pipe, "modules", None), dict):
        return {k: m for k, m in pipe.modules.items() if isinstance(m, nn.Module)}
    if hasattr(pipe, "dit") and hasattr(pipe, "vae"):
        found = {"transformer": pipe.dit, "vae": pipe.vae, "upsampler": getattr(pipe, "upsampler", None)}
        return {k: m for k, m in found.items() if isinstance(m, nn.Module)}
    raise ValueError(f"{type(pipe).__name__} is not an ltx pipeline (expected ltx.ltxv.api.Pipeline or "
                     "ltx.ltx2.api.Pipeline)")


class Offload:
    """The handle `apply_offload` returns: `.stats`, `.reset_stats()`, `.remove()`."""

    def __init__(self, pipe, mode: str, components: ComponentOffload, blocks: BlockOffload | None,
                 restore: dict[str, object]):
        self.pipe, self.mode, self.components, self.blocks, self._restore = pipe, mode, components, blocks, restore

    @property
    def stats(self) -> dict:
        out = dict(self.components.stats)
        if self.blocks is not None:
            out.update(self.blocks.stats)
        return out

    def reset_stats(self) -> None:
        self.components.stats["component_moves"] = dict.fromkeys(self.components.stats["component_moves"], 0)
        if self.blocks is not None:
            self.blocks.reset_stats()

    def remove(self) -> None:
        """Undo everything: weights back on the devices they had, the pipeline's methods and device as before."""
        if self.blocks is not None:
            self.blocks.remove()
        self.components.remove()
        for name, value in self._restore.items():
            if name == "device":
                self.pipe.device = value
            else:
                self.pipe.__dict__.pop(name, None)


def tensors_to(x, device: torch.device):
    """Every tensor in `x` (tensors, tuples / lists and dataclasses of them, nested) moved to `device`."""
    if isinstance(x, Tensor):
        return x.to(device)
    if isinstance(x, tuple | list):
        return type(x)(tensors_to(v, device) for v in x)
    if hasattr(x, "__dataclass_fields__"):
        for f in x.__dataclass_fields__:
            setattr(x, f, tensors_to(getattr(x, f), device))
    return x


def apply_offload(pipe, mode: OffloadMode | str = "model", *, device: torch.device | str | None = None,
                  prefetch: int = 1, text_encoder_device: torch.device | str | None = None) -> Offload:
    """Offload a loaded ltx pipeline (0.9.x or LTX-2) from outside; returns the handle (`.stats`, `.remove()`).

    mode: "model" (one component on the device at a time) or "blocks" (that, plus the transformer's blocks
    streamed with `prefetch` blocks copied ahead); "none" returns a handle that does nothing. device: the
    compute device (default: the pipeline's); load the pipeline on "cpu" and pass device="cuda" so the weights
    never sit on the card together. text_encoder_device: where the prompt encoder runs (default: `device`,
    after every component has left it); "cpu" keeps T5 / Gemma off the card."""
    if mode not in MODES:
        raise ValueError(f"offload={mode!r} is not supported (supported: {', '.join(MODES)})")
    if not getattr(pipe, "loaded", True):
        raise ValueError("apply_offload needs a loaded pipeline: call .load() first")
    components = pipeline_components(pipe)
    device = torch.device(device) if device is not None else torch.device(pipe.device)
    text_device = torch.device(text_encoder_device) if text_encoder_device is not None else device
    group = ComponentOffload(device)
    restore: dict[str, object] = {"device": pipe.device}
    if mode == "none":
        return Offload(pipe, mode, group, None, {})
    blocks = None
    if mode == "blocks":
        blocks = BlockOffload(components["transformer"], device, prefetch=prefetch, keep_trainable=False)
    for name, module in components.items():
        group.add(name, module, skip=(blocks.blocks,) if blocks is not None and name == "transformer" else ())
    pipe.device = device
    if hasattr(pipe, "encode_prompts"):  # LTX-2: Gemma is loaded for the call and freed
        encode = pipe.encode_prompts

        @functools.wraps(encode)
        def encode_prompts(*args, **kwargs):
            group.evict()
            pipe.device = text_device
            try:
                states = encode(*args, **kwargs)
            finally:
                pipe.device = device
            return tensors_to(states, device)

        pipe.encode_prompts = encode_prompts
        restore["encode_prompts"] = None
    elif hasattr(pipe, "_text_encoder"):  # 0.9.x: T5 is built on first use and kept: one more component
        build = pipe._text_encoder

        @functools.wraps(build)
        def text_encoder():
            if "text_encoder" not in group.components:
                group.evict()
                pipe.device = text_device
                try:
                    t5 = build()
                finally:
                    pipe.device = device
                if text_device == device:
                    group.add("text_encoder", t5.model)
                return t5
            return build()

        pipe._text_encoder = text_encoder
        restore["_text_encoder"] = None
    return Offload(pipe, mode, group, blocks, restore)
