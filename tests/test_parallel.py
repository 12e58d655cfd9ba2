"""ltx/core/parallel.py and train/dist_checkpoint.py on CPU with gloo.

Two processes (one spawn for the whole file, every multi-process scenario in it) train the tiny DiT for three
AdamW steps on a global batch of 4 (2 rows per rank, per-rank loss = mean over its rows, gradients averaged
over ranks = the global-batch gradient); one process trains on the same 4 rows. Measured (torch 2.13 CPU):
DDP and FSDP2 match one process to ~1e-7 relative in losses and weights (the sums are only reordered).
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, dit_inputs, randomize_
from torch import nn

from ltx.core.checkpoint import CheckpointError, SafetensorsReader
from ltx.core.parallel import Dist, apply_activation_checkpointing, apply_compile, init_distributed, parallelize
from ltx.ltxv.transformer import DiT
from train.dist_checkpoint import complete_checkpoints, consolidate, dcp, load_state, main, save_state

CFG = TINY["w64"]
GLOBAL_BATCH = 4
STEPS = 3
LR = 1e-3
# 2 procs vs 1 (measured): losses 6e-8 relative; weights 1.6e-7 absolute at most (the weights are O(1), the
# zero-initialized ones that Adam moves from 0 are O(1e-3))
RTOL, ATOL = 1e-6, 1e-6


# ----- the training problem ---------------------------------------------------------------------------------

class _LoRALinear(nn.Linear):
    """A frozen base linear plus a trainable low-rank adapter in ModuleDicts, as LoRA injection makes it."""

    def __init__(self, base: nn.Linear, rank: int = 4):
        super().__init__(base.in_features, base.out_features)
        self.load_state_dict(base.state_dict())
        g = torch.Generator().manual_seed(base.in_features + base.out_features)
        self.lora_A = nn.ModuleDict({"default": nn.Linear(base.in_features, rank, bias=False)})
        self.lora_B = nn.ModuleDict({"default": nn.Linear(rank, base.out_features, bias=False)})
        with torch.no_grad():
            self.lora_A["default"].weight.copy_(torch.randn(rank, base.in_features, generator=g) * 0.1)
            self.lora_B["default"].weight.copy_(torch.randn(base.out_features, rank, generator=g) * 0.1)

    def forward(self, x):
        return super().forward(x) + self.lora_B["default"](self.lora_A["default"](x))


def make_model(lora: bool = False) -> DiT:
    """The tiny DiT at its training init; with `lora`, a random "pretrained" base (init_weights' zero output
    layer would give a frozen base zero gradients everywhere) with adapters on q and v."""
    model = DiT(CFG).init_weights(torch.Generator().manual_seed(0))
    if lora:
        randomize_(model, seed=0)
        for block in model.transformer_blocks:
            for attn in (block.attn1, block.attn2):
                attn.to_q = _LoRALinear(attn.to_q)
                attn.to_v = _LoRALinear(attn.to_v)
        for name, p in model.named_parameters():
            p.requires_grad_("lora_" in name)
    return model


def batch(step: int):
    x, context, mask, positions = dit_inputs(CFG, GLOBAL_BATCH, seed=100 + step)
    g = torch.Generator().manual_seed(200 + step)
    sigma = torch.rand(GLOBAL_BATCH, generator=g)
    target = torch.randn(x.shape, generator=g)
    return x, sigma, context, mask, positions, target


def train(model: nn.Module, opt: torch.optim.Optimizer, dist: Dist, steps: range) -> list[float]:
    """Global-batch losses of `steps`; rank r trains on rows [r * 4 / world, (r + 1) * 4 / world)."""
    per = GLOBAL_BATCH // dist.world_size
    rows = slice(dist.rank * per, (dist.rank + 1) * per)
    losses = []
    for step in steps:
        x, sigma, context, mask, positions, target = (t[rows] for t in batch(step))
        loss = F.mse_loss(model(x, sigma, context, mask, positions), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(dist.all_reduce_mean(loss.item()))
    return losses


def optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR, weight_decay=0.01)


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Plain full tensors, whatever the layout (DDP, FSDP2 DTensors, plain)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    return {k: v.detach().clone() for k, v in sd.items()}


def run(dist: Dist, mode: str, *, lora=False, ac=False, steps=range(STEPS), load=None, save=None, save_at=None):
    """One training session; returns (losses, final full state)."""
    model = make_model(lora)
    wrapped = parallelize(model, dist, mode=mode, activation_checkpointing=ac)
    opt = optimizer(model)
    if load is not None:
        extra = load_state(load, model=wrapped, optimizer=opt, dist=dist, trainable_only=lora)
        assert extra["next_step"] == steps.start
    losses = []
    for step in steps:
        losses += train(wrapped, opt, dist, range(step, step + 1))
        if save is not None and step + 1 == save_at:
            save_state(save, step + 1, model=wrapped, optimizer=opt, extra={"next_step": step + 1}, dist=dist,
                       trainable_only=lora)
    return losses, full_state(wrapped)


# ----- the two-process side ---------------------------------------------------------------------------------

def _worker(rank: int, world: int, port: int, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist = init_distributed()
    assert dist.enabled and dist.world_size == world and dist.device.type == "cpu"
    tmp = Path(tmp)
    sharded = parallelize(make_model(), dist, mode="fsdp")
    w = sharded.transformer_blocks[0].attn1.to_q.weight
    assert type(w).__name__ == "DTensor" and w.to_local().shape[0] == w.shape[0] // world
    assert list(sharded.state_dict()) == list(make_model().state_dict())
    out = {
        "ddp": run(dist, "ddp"),
        "fsdp": run(dist, "fsdp"),
        "fsdp_ac": run(dist, "fsdp", ac=True),
        "ddp_lora": run(dist, "ddp", lora=True),
        "fsdp_lora": run(dist, "fsdp", lora=True),
        # 2 -> 1: saved here after step 2, resumed by the test on one process
        "fsdp_save": run(dist, "fsdp", steps=range(2), save=tmp / "from2", save_at=2),
        "fsdp_lora_save": run(dist, "fsdp", lora=True, steps=range(2), save=tmp / "from2_lora", save_at=2),
        # 1 -> 2: saved by the test on one process, resumed here for step 3 under FSDP2 and under DDP
        "fsdp_resume": run(dist, "fsdp", steps=range(2, 3), load=tmp / "from1"),
        "ddp_resume": run(dist, "ddp", steps=range(2, 3), load=tmp / "from1"),
    }
    assert dist.broadcast_object({"r": dist.rank}) == {"r": 0}
    t = dist.all_reduce_mean(torch.tensor([float(dist.rank)]))
    assert t.item() == pytest.approx(0.5)
    if dist.is_main:
        torch.save(out, tmp / "results.pt")
    dist.barrier()
    dist.destroy()


def _free_port() -> int:
    from conftest import free_port

    return free_port()


@pytest.fixture(scope="module")
def single():
    dist = init_distributed()
    assert not dist.enabled
    return {
        "full": run(dist, "none"),
        "lora": run(dist, "none", lora=True),
    }


@pytest.fixture(scope="module")
def two(tmp_path_factory, single):
    tmp = tmp_path_factory.mktemp("parallel")
    run(Dist(), "none", steps=range(2), save=tmp / "from1", save_at=2)
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), str(tmp)), nprocs=2, join=True)
    return tmp, torch.load(tmp / "results.pt", weights_only=False)


def _assert_same_run(actual, expected, what: str):
    (la, sa), (le, se) = actual, expected
    torch.testing.assert_close(torch.tensor(la), torch.tensor(le), rtol=RTOL, atol=ATOL, msg=f"{what}: losses")
    assert sa.keys() == se.keys(), what
    for k in se:
        torch.testing.assert_close(sa[k], se[k], rtol=RTOL, atol=ATOL, msg=lambda m, k=k: f"{what}: {k}: {m}")


# ----- tests ------------------------------------------------------------------------------------------------

def test_single_process_dist():
    dist = init_distributed()
    assert (dist.rank, dist.world_size, dist.is_main, dist.enabled) == (0, 1, True, False)
    dist.barrier()
    assert dist.all_reduce_mean(2.5) == 2.5
    assert dist.broadcast_object([1]) == [1]
    assert parallelize(make_model(), dist, mode="fsdp").__class__ is DiT  # nothing to shard on one process
    with pytest.raises(ValueError, match="unknown parallel mode"):
        parallelize(make_model(), dist, mode="zero3")


def test_activation_checkpointing_same_numbers_and_names():
    ref, ckpt = make_model(), apply_activation_checkpointing(make_model())
    apply_activation_checkpointing(ckpt)  # idempotent
    assert list(ckpt.state_dict()) == list(ref.state_dict())
    assert [n for n, _ in ckpt.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert "transformer_blocks.0.attn1.to_q.weight" in ckpt.state_dict()
    assert all(type(b).__name__ == "Block" for b in ckpt.transformer_blocks)
    for step in range(2):
        x, sigma, context, mask, positions, target = batch(step)
        for m in (ref, ckpt):
            m.zero_grad()
            F.mse_loss(m(x, sigma, context, mask, positions), target).backward()
        for (n, a), b in zip(ref.named_parameters(), ckpt.parameters()):
            torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=1e-7, msg=n)


@pytest.mark.slow
def test_activation_checkpointing_then_compile():
    """parallelize's order (checkpointing inside, compile outside) traces with fullgraph=True."""
    ref = make_model()
    model = apply_compile(apply_activation_checkpointing(make_model()), backend="aot_eager")
    x, sigma, context, mask, positions, target = batch(0)
    for m in (ref, model):
        F.mse_loss(m(x, sigma, context, mask, positions), target).backward()
    for (n, a), b in zip(ref.named_parameters(), model.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=1e-7, msg=n)


def test_activation_checkpointing_recomputes():
    model = apply_activation_checkpointing(make_model())
    calls = []
    block = model.transformer_blocks[0]
    block.attn1.register_forward_hook(lambda *_: calls.append(1))
    x, sigma, context, mask, positions, target = batch(0)
    F.mse_loss(model(x, sigma, context, mask, positions), target).backward()
    assert len(calls) == 2  # once in forward, once recomputed in backward


@pytest.mark.slow
def test_ddp_matches_single_process(two, single):
    _assert_same_run(two[1]["ddp"], single["full"], "ddp")


@pytest.mark.slow
def test_fsdp2_matches_single_process(two, single):
    _assert_same_run(two[1]["fsdp"], single["full"], "fsdp")
    _assert_same_run(two[1]["fsdp_ac"], single["full"], "fsdp + activation checkpointing")


@pytest.mark.slow
def test_mixed_requires_grad(two, single):
    _assert_same_run(two[1]["ddp_lora"], single["lora"], "ddp lora")
    _assert_same_run(two[1]["fsdp_lora"], single["lora"], "fsdp lora")
    base, (_, trained) = make_model(lora=True).state_dict(), single["lora"]
    for k, v in base.items():  # frozen weights untouched, adapters trained (by more than weight decay)
        assert torch.equal(trained[k], v) if "lora_" not in k else (trained[k] - v).abs().max() > LR / 2, k


@pytest.mark.slow
def test_resume_across_topologies(two, single):
    tmp, out = two
    # 1 -> 2 (FSDP2 and DDP): the step-3 loss and final weights of the uninterrupted run
    expected = ([single["full"][0][2]], single["full"][1])
    _assert_same_run(out["fsdp_resume"], expected, "1 proc -> 2 fsdp")
    _assert_same_run(out["ddp_resume"], expected, "1 proc -> 2 ddp")
    # 2 (FSDP2) -> 1
    _assert_same_run(out["fsdp_save"], (single["full"][0][:2], out["fsdp_save"][1]), "2 fsdp, first 2 steps")
    _assert_same_run(run(Dist(), "none", steps=range(2, 3), load=tmp / "from2"), expected, "2 fsdp -> 1 proc")


@pytest.mark.slow
def test_trainable_only_resume(two, single):
    tmp, _ = two
    ckpt = tmp / "from2_lora" / "step_00000002"
    from torch.distributed.checkpoint import FileSystemReader

    keys = [k for k in FileSystemReader(ckpt).read_metadata().state_dict_metadata if k.startswith("model.")]
    assert keys and all("lora_" in k for k in keys), keys[:5]
    expected = ([single["lora"][0][2]], single["lora"][1])
    _assert_same_run(run(Dist(), "none", lora=True, steps=range(2, 3), load=tmp / "from2_lora"), expected,
                     "trainable-only 2 fsdp -> 1 proc")
    with pytest.raises(CheckpointError, match="trainable_only=True"):
        load_state(tmp / "from2_lora", model=make_model(lora=True), optimizer=None, dist=Dist())


@pytest.mark.slow
def test_consolidate_sharded_checkpoint(two, tmp_path):
    tmp, _ = two
    model = make_model()
    load_state(tmp / "from2", model=model, optimizer=optimizer(model), dist=Dist())
    out = consolidate(tmp / "from2", tmp_path / "w.safetensors")
    reader = SafetensorsReader(out)
    sd = model.state_dict()
    assert sorted(reader.keys()) == sorted(sd)
    for k, v in sd.items():
        assert torch.equal(reader.get(k), v), k
    main(["consolidate", str(tmp / "from2" / "step_00000002"), str(tmp_path / "cli.safetensors")])
    assert sorted(SafetensorsReader(tmp_path / "cli.safetensors").keys()) == sorted(sd)


def _save(folder: Path, step: int, model: nn.Module, opt, **kw) -> Path:
    return save_state(folder, step, model=model, optimizer=opt, extra={"step": step}, dist=Dist(), **kw)


def test_interrupted_save_leaves_previous_checkpoint(tmp_path):
    model = make_model()
    opt = optimizer(model)
    train(model, opt, Dist(), range(1))
    _save(tmp_path, 1, model, opt)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, opt, Dist(), range(1, 2))
    # killed after the shards, while writing extra.pt: an unpicklable extra fails exactly there
    with pytest.raises(Exception):  # noqa: B017 - whatever pickle raises
        save_state(tmp_path, 2, model=model, optimizer=opt, extra={"bad": lambda: 0}, dist=Dist())
    assert (tmp_path / "step_00000002.tmp" / ".metadata").is_file()
    (tmp_path / "step_00000007.tmp").mkdir()  # a kill before anything was written
    assert (tmp_path / "latest").read_text().strip() == "step_00000001"
    fresh = make_model()
    assert load_state(tmp_path, model=fresh, optimizer=optimizer(fresh), dist=Dist()) == {"step": 1}
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, weights[k]), k
    assert not list(tmp_path.glob("*.tmp"))  # removed on load
    (tmp_path / "step_00000007.tmp").mkdir()
    _save(tmp_path, 2, model, opt)
    assert not list(tmp_path.glob("*.tmp"))  # and on save
    _save(tmp_path, 3, model, opt)
    _save(tmp_path, 3, model, opt)  # the same step again replaces it
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_00000002", "step_00000003"]  # keep=2
    assert (tmp_path / "latest").read_text().strip() == "step_00000003"
    # killed while replacing step 3 by itself, between moving the old copy aside and renaming the new one in
    (tmp_path / "step_00000003").rename(tmp_path / "step_00000003.old")
    assert load_state(tmp_path, model=fresh, optimizer=optimizer(fresh), dist=Dist()) == {"step": 3}


def test_save_before_the_first_step(tmp_path):
    model = make_model()
    opt = optimizer(model)
    _save(tmp_path, 0, model, opt)
    assert not opt.state  # saving did not initialize (= step) the optimizer
    fresh = make_model()
    fresh_opt = optimizer(fresh)
    assert load_state(tmp_path, model=fresh, optimizer=fresh_opt, dist=Dist()) == {"step": 0}
    assert not fresh_opt.state
    assert train(fresh, fresh_opt, Dist(), range(2)) == train(model, opt, Dist(), range(2))


def test_corrupt_checkpoints_fail_clearly(tmp_path):
    model = make_model()
    opt = optimizer(model)
    assert load_state(tmp_path, model=model, optimizer=opt, dist=Dist()) is None  # nothing yet
    train(model, opt, Dist(), range(1))
    _save(tmp_path, 1, model, opt)
    _save(tmp_path, 2, model, opt)
    shard = next((tmp_path / "step_00000002").glob("*.distcp"))
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"step_00000002: cannot be loaded .*'step_00000001' into"):
        load_state(tmp_path, model=model, optimizer=opt, dist=Dist())
    shard.write_bytes(data)
    (tmp_path / "step_00000002" / ".metadata").unlink()
    with pytest.raises(CheckpointError, match=r"incomplete checkpoint \(no .metadata\); delete"):
        load_state(tmp_path, model=model, optimizer=opt, dist=Dist())
    (tmp_path / "step_00000002" / ".metadata").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"step_00000002: cannot be loaded .*; delete"):
        load_state(tmp_path, model=model, optimizer=opt, dist=Dist())
    (tmp_path / "latest").write_text("step_00000001\n")
    lora = make_model(lora=True)
    with pytest.raises(CheckpointError, match=r"does not fit .*\(16 keys missing from the checkpoint: model\..*lora_"):
        load_state(tmp_path, model=lora, optimizer=None, dist=Dist())
    (tmp_path / "latest").write_text("step_00000009\n")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state(tmp_path, model=model, optimizer=opt, dist=Dist())
    (tmp_path / "latest").write_bytes(bytes(range(128, 256)))  # garbage, not text
    with pytest.raises(CheckpointError, match=r"latest: names '<not text>', not a checkpoint folder .*damaged\? "
                                              r"write 'step_00000002' into .*latest"):
        load_state(tmp_path, model=model, optimizer=opt, dist=Dist())


def test_a_deleted_latest_resumes_from_the_newest_complete_checkpoint(tmp_path, capsys):
    """Never a silent restart from step 0 on top of a run's checkpoints (its metrics would read 1, 2, 1, 2, 3)."""
    model = make_model()
    opt = optimizer(model)
    train(model, opt, Dist(), range(1))
    _save(tmp_path, 1, model, opt)
    train(model, opt, Dist(), range(1, 2))
    _save(tmp_path, 2, model, opt)
    (tmp_path / "latest").unlink()
    (tmp_path / "step_00000003").mkdir()  # an incomplete one is not a candidate
    fresh = make_model()
    assert load_state(tmp_path, model=fresh, optimizer=optimizer(fresh), dist=Dist()) == {"step": 2}
    assert "latest is missing: resuming from the newest complete checkpoint, step_00000002" in capsys.readouterr().out
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_a_full_disk_while_saving_is_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    model = make_model()
    opt = optimizer(model)
    train(model, opt, Dist(), range(1))
    _save(tmp_path, 1, model, opt)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dcp, "save", full)
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*step_00000002 \(OSError: \[Errno 28\] No "
                                              r"space left on device\); the last checkpoint, step_00000001, is intact"):
        _save(tmp_path, 2, model, opt)
    assert not list(tmp_path.glob("*.tmp")) and (tmp_path / "latest").read_text().strip() == "step_00000001"


def test_consolidate_on_damaged_checkpoints_is_one_line(tmp_path, capsys):
    """Garbage `latest` / `.metadata`, a truncated shard, an output under a file: `error: ...` naming the file
    (once UnicodeDecodeError / UnpicklingError / EOFError tracebacks)."""
    model = make_model()
    opt = optimizer(model)
    train(model, opt, Dist(), range(1))
    _save(tmp_path, 1, model, opt)
    _save(tmp_path, 2, model, opt)
    out = str(tmp_path / "w.safetensors")

    def error(*args) -> str:
        with pytest.raises(SystemExit) as e:
            main(["consolidate", *map(str, args)])
        assert not (tmp_path / "w.safetensors").exists()
        return str(e.value)

    (tmp_path / "latest").write_bytes(b"\xff\xfe\x00garbage")
    assert re.match(r"error: .*latest: names '<not text>'.*write 'step_00000002' into", error(tmp_path, out))
    (tmp_path / "latest").write_text("step_00000002\n")
    step2 = tmp_path / "step_00000002"
    metadata = (step2 / ".metadata").read_bytes()
    (step2 / ".metadata").write_bytes(b"\x80\x04garbage")
    assert re.match(r"error: .*step_00000002: its .metadata cannot be read .*damaged", error(tmp_path, out))
    (step2 / ".metadata").write_bytes(metadata)
    shard = next(step2.glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:100])
    assert re.match(r"error: .*step_00000002: model\..* cannot be read .*truncated", error(tmp_path, out))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert "error: " in error(tmp_path / "step_00000001", blocker / "w.safetensors")
    assert "Traceback" not in capsys.readouterr().err
