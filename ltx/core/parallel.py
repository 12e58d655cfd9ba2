"""How a model is run, applied from outside the model (torchtitan style).

These act on the repeated blocks of a model (`transformer_blocks` of the DiT), so the model files never
branch on "am I distributed / compiled / checkpointed".

- `init_distributed` reads the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) and
  returns a `Dist`; one process (or no environment) means no process group at all.
- `parallelize` is the one entry point a trainer calls. Order (torchtitan): activation checkpointing ->
  compile -> FSDP2 or DDP. Build the optimizer *after* it: FSDP2 replaces the parameters by sharded ones.

Parameter names never change here, except through `apply_compile`, which wraps each block in torch.compile's
`OptimizedModule` (keys gain `_orig_mod.`; `torch.distributed.checkpoint.state_dict.get_state_dict`, which
`train/dist_checkpoint.py` uses, strips it).

State dicts under FSDP2: `model.state_dict()` returns `DTensor`s, each rank holding its dim-0 shard
(`Shard(0)` over a 1-D mesh of all ranks). `get_state_dict(..., StateDictOptions(full_state_dict=True))`
gathers plain tensors; `torch.distributed.checkpoint` saves the shards as they are, with their global shape,
so a checkpoint loads on any number of processes.

Big models: build on `meta`, `apply_fsdp2` there, then `materialize` fills each parameter one tensor at a time
with only this process's shard kept, so a 19B / 22B model never sits whole in one process's memory (the peak is
one full tensor, read from the file, plus the shards).
"""

from __future__ import annotations

import functools
import gc
import os
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from typing import Literal

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.utils.checkpoint import checkpoint

ParallelMode = Literal["none", "ddp", "fsdp"]


@dataclass
class Dist:
    """Where this process sits. `enabled` is False for a single process without a process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            if self.device.type == "cuda":
                torch_dist.barrier(device_ids=[self.device.index])
            else:
                torch_dist.barrier()

    def all_reduce_mean(self, value: torch.Tensor | float) -> torch.Tensor | float:
        """The mean over ranks of a tensor (returns a new tensor) or a float (returns a float)."""
        if isinstance(value, torch.Tensor):
            if not self.enabled:
                return value.detach().clone()
            t = value.detach().to(self.device, copy=True)
            torch_dist.all_reduce(t, op=torch_dist.ReduceOp.SUM)
            return (t / self.world_size).to(value.device)
        if not self.enabled:
            return float(value)
        t = torch.tensor(float(value), dtype=torch.float64, device=self.device)
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.SUM)
        return t.item() / self.world_size

    def broadcast_object(self, obj: object = None, src: int = 0) -> object:
        """`obj` from rank `src` on every rank (picklable objects)."""
        if not self.enabled:
            return obj
        box = [obj]
        torch_dist.broadcast_object_list(box, src=src, device=self.device)
        return box[0]

    def destroy(self, barrier: bool = True) -> None:
        """Leave together: a barrier first (after a normal end), so no process tears the group down while
        another still works (gloo aborts a process whose peer left mid-way, e.g. while rank 0 writes plots and
        reports). After an error pass barrier=False: the others may never reach it."""
        if self.enabled and torch_dist.is_initialized():
            if barrier:
                torch_dist.barrier()
            torch_dist.destroy_process_group()
            gc.collect()  # what still holds the group (meshes, DTensors) goes now, not at interpreter exit
        self.enabled = False


def init_distributed() -> Dist:
    """A `Dist` from the torchrun environment; initializes the process group when WORLD_SIZE > 1.

    Backend: nccl with CUDA (the device is cuda:LOCAL_RANK), gloo on CPU. Calling it again reuses the group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world <= 1:
        return Dist(0, 1, 0, device, enabled=False)
    if not torch_dist.is_initialized():
        if cuda:
            torch_dist.init_process_group("nccl", rank=rank, world_size=world, device_id=device)
        else:
            torch_dist.init_process_group("gloo", rank=rank, world_size=world)
    return Dist(rank, world, local_rank, device, enabled=True)


def _blocks(model: nn.Module, attr: str) -> nn.ModuleList:
    """The ModuleList at `attr`, a dotted path for a nested model (e.g. "transformer.transformer_blocks")."""
    blocks = model
    for part in attr.split("."):
        blocks = getattr(blocks, part, None)
    if not isinstance(blocks, nn.ModuleList):
        raise ValueError(f"{type(model).__name__} has no ModuleList {attr!r} (its transformer blocks)")
    return blocks


def apply_compile(model: nn.Module, *, attr: str = "transformer_blocks", **compile_kwargs) -> nn.Module:
    """Compile each block separately (`fullgraph=True` by default): one graph per block keeps compile time
    small and reuses it across identical blocks."""
    compile_kwargs.setdefault("fullgraph", True)
    blocks = _blocks(model, attr)
    for i, block in enumerate(blocks):
        blocks[i] = torch.compile(block, **compile_kwargs)
    return model


def _checkpointed(forward):
    @functools.wraps(forward)
    def run(*args, **kwargs):
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    run.activation_checkpointed = True
    return run


def apply_activation_checkpointing(model: nn.Module, *, attr: str = "transformer_blocks") -> nn.Module:
    """Recompute each block's activations in backward (`torch.utils.checkpoint`, non-reentrant).

    The block's `forward` is replaced on the instance by a checkpointed call of the original: no wrapper
    module, so parameter names, state_dict keys and module types stay exactly as they were. Hooks (FSDP2's
    unshard/reshard) run around it, as around torchtitan's checkpoint wrapper. Idempotent."""
    for block in _blocks(model, attr):
        if not getattr(block.forward, "activation_checkpointed", False):
            block.forward = _checkpointed(block.forward)
    return model


def apply_ddp(model: nn.Module, dist: Dist) -> nn.Module:
    """DistributedDataParallel: gradients of the parameters that require grad are averaged over ranks.

    Returns the wrapper; keep the inner model (`wrapper.module`) for saving and evaluation."""
    from torch.nn.parallel import DistributedDataParallel

    if not dist.enabled:
        raise ValueError("apply_ddp needs a process group (init_distributed with WORLD_SIZE > 1)")
    device_ids = [dist.device.index] if dist.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=False)


def apply_fsdp2(
    model: nn.Module,
    dist: Dist,
    *,
    param_dtype: torch.dtype | None = None,
    reduce_dtype: torch.dtype | None = torch.float32,
    reshard_after_forward: bool = True,
    attr: str = "transformer_blocks",
) -> nn.Module:
    """FSDP2 (`fully_shard`) on each block, then on the root (which takes the remaining parameters).

    Parameters become DTensors sharded on dim 0 over all ranks; gradients are reduce-scattered and averaged.
    `param_dtype` is the compute dtype of the gathered parameters (None = as stored), `reduce_dtype` the dtype
    of the gradient reduction. Works on CPU with gloo. Returns the model itself (its class is swapped to an
    FSDP subclass in place; names are unchanged)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if not dist.enabled:
        raise ValueError("apply_fsdp2 needs a process group (init_distributed with WORLD_SIZE > 1)")
    mesh = init_device_mesh(dist.device.type, (dist.world_size,))
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    blocks = _blocks(model, attr)
    for i, block in enumerate(blocks):
        # the last block is resharded by the root's post-forward anyway; keeping it gathered saves a gather
        last = i == len(blocks) - 1
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward and not last)
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    return model


def parallelize(
    model: nn.Module,
    dist: Dist,
    *,
    mode: ParallelMode = "none",
    activation_checkpointing: bool = False,
    compile: bool = False,
    param_dtype: torch.dtype | None = None,
    attr: str = "transformer_blocks",
) -> nn.Module:
    """Activation checkpointing -> compile -> FSDP2 / DDP, in torchtitan's order; returns the model to call.

    For "ddp" that is the DDP wrapper (keep a handle on the inner model); for "fsdp" and "none" the model
    itself. With one process "ddp" and "fsdp" run the plain model (there is nothing to shard or average).
    `param_dtype` is FSDP2's compute dtype; for "none"/"ddp" use autocast in the trainer. Build the optimizer
    after this call."""
    if mode not in ("none", "ddp", "fsdp"):
        raise ValueError(f"unknown parallel mode {mode!r}; expected 'none', 'ddp' or 'fsdp'")
    if activation_checkpointing:
        apply_activation_checkpointing(model, attr=attr)
    if compile:
        apply_compile(model, attr=attr)
    if not dist.enabled:
        return model
    if mode == "ddp":
        return apply_ddp(model, dist)
    if mode == "fsdp":
        return apply_fsdp2(model, dist, param_dtype=param_dtype, attr=attr)
    return model


@torch.no_grad()
def materialize(model: nn.Module, device: torch.device | str, full_tensor: Callable[[str], torch.Tensor]) -> nn.Module:
    """Allocate a model built on `meta` (sharded by `apply_fsdp2` or not) on `device` and fill it in place.

    Each parameter and meta buffer `name` gets `full_tensor(name)` (the whole tensor, any device, cast to the
    parameter's dtype); a sharded (DTensor) parameter keeps only this process's shard of it, cut locally without
    communication. Buffers that were computed at build (not on meta) keep their values. One full tensor at a
    time is alive, so the model never sits whole in memory; every process reads what it needs itself."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    computed = {n: b.clone() for n, b in model.named_buffers() if not b.is_meta}
    model.to_empty(device=device)
    for name, t in chain(model.named_parameters(), model.named_buffers()):
        if name in computed:
            t.copy_(computed[name])
            continue
        full = full_tensor(name)
        if tuple(full.shape) != tuple(t.shape):
            raise ValueError(f"materialize: {name} is {tuple(full.shape)} in the source, {tuple(t.shape)} in the model")
        if isinstance(t, DTensor):
            local = distribute_tensor(full.to(t.dtype), t.device_mesh, t.placements, src_data_rank=None).to_local()
            t.to_local().copy_(local)
        else:
            t.copy_(full.to(t.dtype))
    return model
