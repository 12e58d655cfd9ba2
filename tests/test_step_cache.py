"""Step caching (ltx.core.step_cache) on tiny models of both families, through the real samplers.

The references are independent of the cache's own bookkeeping: the uncached run, and what forward hooks on the
blocks see (hooks fire around the cache's wrappers, so they see the values the model really passes on).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import TINY

from ltx.core.step_cache import CachePolicy, _AVFamily, _DiTFamily, apply_step_cache, cached
from ltx.ltx2.conditioning import conditioned_states
from ltx.ltx2.pipelines import Prompt, sample
from ltx.ltx2.sched import GuiderParams
from ltx.ltx2.transformer import AVTransformer, AVTransformerConfig
from ltx.ltxv.guidance import TextConditioning
from ltx.ltxv.pipelines import SchedulerSpec, denoise_pass, latent_grid, pass_sigmas
from ltx.ltxv.transformer import DiT
from ltx.presets import PassConfig

STEPS = 8
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: more threads only add overhead


def awake(model: torch.nn.Module) -> torch.nn.Module:
    """init_weights starts the adaLN linears, the text paths and the heads at zero (each block an identity, the
    output 0): random values instead, so every path matters."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2 and p.abs().max() == 0:
                p.normal_(0, 0.2, generator=g)
    return model.eval()


def tiny_dit() -> DiT:
    return awake(DiT(TINY["w32"]).init_weights(torch.Generator().manual_seed(0)))


def tiny_av() -> AVTransformer:
    cfg = AVTransformerConfig(num_layers=3, num_attention_heads=2, attention_head_dim=8, audio_num_attention_heads=2,
                              audio_attention_head_dim=4, cross_attention_dim=16, audio_cross_attention_dim=8,
                              caption_channels=8)
    return awake(AVTransformer(cfg).init_weights(torch.Generator().manual_seed(0)))


def run_dit(model: DiT, policy: CachePolicy | None = None, steps: int = STEPS):
    """A CFG (batched rows) + STG text-to-video run through the 0.9.x sampler; returns (latents, stats)."""
    g = torch.Generator().manual_seed(3)
    text = TextConditioning(torch.randn(1, 5, 24, generator=g), torch.ones(1, 5), torch.randn(1, 5, 24, generator=g),
                            torch.ones(1, 5))
    p = PassConfig(num_inference_steps=steps, guidance_scale=[3.0], stg_scale=[1.0], skip_block_list=[[1]])
    sched = SchedulerSpec()
    sigmas = pass_sigmas(p, math.prod(latent_grid(64, 64, 9)), sched)  # what denoise_pass will use
    with torch.no_grad(), cached(model, policy, [sigmas]) as cache:
        out = denoise_pass(model, None, text, p, sched, height=64, width=64, num_frames=9, fps=25,
                           generator=torch.Generator().manual_seed(4))
    return out, None if cache is None else cache.stats


def run_av(model: AVTransformer, policy: CachePolicy | None = None, steps: int = STEPS):
    """Separate conditional, unconditional, STG and modality-isolated passes per step (LTX-2's guider)."""
    g = torch.Generator().manual_seed(3)
    video, audio = conditioned_states(9, 64, 64, 25.0, [], batch=1, dtype=torch.float32, device="cpu",
                                      generator=torch.Generator().manual_seed(4))
    positive = Prompt(torch.randn(1, 5, 8, generator=g), torch.randn(1, 5, 8, generator=g))
    negative = Prompt(torch.randn(1, 5, 8, generator=g), torch.randn(1, 5, 8, generator=g))
    guide = GuiderParams(cfg=3.0, stg=1.0, stg_blocks=(1,), modality=2.0)
    sigmas = torch.linspace(1, 0, steps + 1)
    with torch.no_grad(), cached(model, policy, [sigmas]) as cache:
        v, a = sample(model, video, audio, sigmas, positive, negative, guide, guide)
    return (v.x, a.x), None if cache is None else cache.stats


RUNS = {"dit": (tiny_dit, run_dit), "av": (tiny_av, run_av)}


def same(a, b) -> bool:
    if isinstance(a, tuple):
        return all(torch.equal(x, y) for x, y in zip(a, b))
    return torch.equal(a, b)


@pytest.mark.parametrize("family", ["dit", "av"])
@pytest.mark.parametrize("kind", ["none", "teacache", "first_block"])
def test_threshold_zero_is_bitwise_the_uncached_run(family, kind):
    make, run = RUNS[family]
    model = make()
    reference, _ = run(model)
    out, stats = run(model, CachePolicy(kind, 0.0))
    assert same(out, reference)
    assert stats["skipped"] == 0 and stats["computed"] == stats["forwards"] > 0
    passes = 1 if family == "dit" else 4
    assert stats["forwards"] == STEPS * passes and stats["steps"] == STEPS


@pytest.mark.parametrize("family", ["dit", "av"])
@pytest.mark.parametrize("kind", ["teacache", "first_block"])
def test_positive_threshold_skips_deterministically(family, kind):
    make, run = RUNS[family]
    model = make()
    reference, _ = run(model)
    policy = CachePolicy(kind, 10.0)  # far above any change: everything skippable is skipped
    out1, stats1 = run(model, policy)
    out2, stats2 = run(model, policy)
    assert stats1 == stats2 and same(out1, out2)
    passes = 1 if family == "dit" else 4
    # the first and the last step (keep_first = keep_last = 1) compute, every other step is skipped
    assert stats1["skipped"] == (STEPS - 2) * passes and stats1["computed"] == 2 * passes
    assert not same(out1, reference)
    # a moderate threshold skips some but not all
    _, some = run(model, CachePolicy(kind, 0.05, keep_first=2))
    assert some["computed"] + some.get("partial", 0) + some["skipped"] == some["forwards"]
    assert 2 * passes < some["computed"] + some.get("partial", 0)


def boundary_probe(model, family):
    """Forward hooks that record each block call's stream inputs and outputs (what the model passes on)."""
    calls = []

    def streams(obj):
        return dict(zip(("video", "audio"), obj)) if isinstance(obj, tuple) else {"video": obj}

    def pre(i):
        def hook(module, args):
            if family == "dit":
                calls.append({"block": i, "in": {"video": args[0]}})
            else:
                calls.append({"block": i, "in": {n: s.x for n, s in zip(("video", "audio"), args[:2])}})
        return hook

    def post(module, args, out):
        calls[-1]["out"] = streams(out)

    for i, b in enumerate(model.transformer_blocks):
        b.register_forward_pre_hook(pre(i))
        b.register_forward_hook(post)
    return calls


@pytest.mark.parametrize("kind", ["teacache", "first_block"])
@pytest.mark.parametrize("family", ["dit", "av"])
def test_a_skipped_forward_is_input_plus_the_cached_residual_of_its_own_pass(family, kind):
    """Exactly: last block's output == first cached block's input + (the same pass's last computed residual).
    For LTX-2 the four guidance passes (conditional, unconditional, STG, isolated) each keep their own."""
    make, run = RUNS[family]
    model = make()
    calls = boundary_probe(model, family)
    forwards = []
    model.register_forward_hook(lambda m, a, o: forwards.append(len(calls)))
    _, stats = run(model, CachePolicy(kind, 10.0, per_modality=False))
    first = 1 if kind == "first_block" else 0
    last = len(model.transformer_blocks) - 1
    passes = 1 if family == "dit" else 4
    residual: dict = {}  # pass index -> stream -> residual of its last computed forward
    skipped = 0
    start = 0
    for k, end in enumerate(forwards):
        fwd = calls[start:end]
        start = end
        entry, exit_ = fwd[first]["in"], fwd[last]["out"]
        computed = k // passes in (0, STEPS - 1)  # only the kept first and last steps run
        p = k % passes
        for name in entry:
            if computed:
                residual.setdefault(p, {})[name] = exit_[name] - entry[name]
            else:
                assert torch.equal(exit_[name], entry[name] + residual[p][name])
                others = [r[name] for q, r in residual.items() if q != p]
                assert all(not torch.equal(exit_[name], entry[name] + r) for r in others)
        skipped += not computed
    assert skipped == stats["skipped"] == (STEPS - 2) * passes


def test_the_passes_of_a_step_decide_together():
    """LTX-2 runs its passes one after another: the first pass of a step decides for all of them."""
    model = tiny_av()
    ran = []
    for block in model.transformer_blocks[1:]:  # counts the blocks that really compute (installed before the cache)
        original = block.forward

        def counting(*args, _original=original, **kwargs):
            ran.append(1)
            return _original(*args, **kwargs)

        block.forward = counting
    per_forward = []
    model.register_forward_pre_hook(lambda m, a: per_forward.append(len(ran)))
    _, stats = run_av(model, CachePolicy("first_block", 0.3, per_modality=False))
    per_forward = [b - a for a, b in zip(per_forward, per_forward[1:] + [len(ran)])]
    steps = [per_forward[i:i + 4] for i in range(0, len(per_forward), 4)]
    assert all(len(set(s)) == 1 for s in steps), steps
    assert 0 < sum(s[0] == 0 for s in steps) < STEPS - 2  # some steps skipped, some computed
    # the cache called through the counting forwards (which were on the instances before it) and put them back
    assert all(b.__dict__["forward"].__name__ == "counting" for b in model.transformer_blocks[1:])
    assert stats["skipped"] == 4 * sum(s[0] == 0 for s in steps)


def test_per_modality_decides_each_stream():
    model = tiny_av()
    ref, _ = run_av(model)
    out, stats = run_av(model, CachePolicy("teacache", 0.2))
    assert stats["video"]["skipped"] + stats["video"]["computed"] == stats["forwards"]
    assert stats["partial"] > 0  # forwards where one stream ran its blocks and the other was skipped
    assert all(torch.isfinite(x).all() for x in out) and not same(out, ref)


@pytest.mark.parametrize("family", ["dit", "av"])
def test_the_teacache_indicator_is_what_block_0_attends_over(family):
    """The modulated input the cache computes equals what block 0's self-attention receives."""
    model = RUNS[family][0]()
    block = model.transformer_blocks[0]
    seen, computed = [], []
    attn = block.attn1
    attn.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    fam = _DiTFamily if family == "dit" else _AVFamily
    names = ("x", "t") if family == "dit" else ("v", "a")

    def pre(m, args):
        b = dict(zip(names, args))
        computed.append(fam.modulated(m, b, "video"))

    block.register_forward_pre_hook(pre)
    RUNS[family][1](model, steps=2)
    assert len(seen) == len(computed) > 0
    assert all(torch.equal(s, c) for s, c in zip(seen, computed))


@pytest.mark.parametrize("family", ["dit", "av"])
def test_remove_restores_the_module_exactly(family):
    make, run = RUNS[family]
    model = make()
    keys = list(model.state_dict())
    blocks = list(model.transformer_blocks)
    reference, _ = run(model)
    cache = apply_step_cache(model, CachePolicy("teacache", 10.0))
    cache.reset([torch.linspace(1, 0, STEPS + 1)])
    assert list(model.state_dict()) == keys  # no wrapper modules even while caching
    cache.remove()
    assert list(model.state_dict()) == keys
    assert all(a is b for a, b in zip(model.transformer_blocks, blocks))
    assert all("forward" not in b.__dict__ for b in blocks)
    assert not model._forward_pre_hooks and not model._forward_hooks
    out, _ = run(model)
    assert same(out, reference)
    apply_step_cache(model, CachePolicy("first_block", 0.1)).remove()  # and it can be applied again


@pytest.mark.parametrize("kwargs, message", [
    (dict(kind="tea"), r"cache.kind='tea' is not supported \(supported: none, teacache, first_block\)"),
    (dict(kind="teacache", threshold=-0.1), r"cache.threshold must be a finite number >= 0"),
    (dict(kind="teacache", threshold=float("nan")), r"cache.threshold must be a finite number >= 0"),
    (dict(kind="teacache", threshold="0.1"), r"cache.threshold must be a finite number >= 0"),
    (dict(kind="first_block", keep_last=-1), r"cache.keep_last must be an integer >= 0"),
    (dict(kind="teacache", keep_first=0), r"keep_first must be >= 1 for teacache"),
    (dict(kind="teacache", per_modality="yes"), r"cache.per_modality must be true or false"),
])
def test_bad_policies_are_one_clear_line(kwargs, message):
    with pytest.raises(ValueError, match=message) as e:
        CachePolicy(**kwargs)
    assert "\n" not in str(e.value)


def test_misuse_is_one_clear_line():
    model = tiny_dit()
    cache = apply_step_cache(model, CachePolicy("teacache", 0.1))
    with pytest.raises(ValueError, match="already has a step cache"):
        apply_step_cache(model, CachePolicy("teacache", 0.1))
    with pytest.raises(ValueError, match=r"needs the sigma schedule.*cache.reset\(schedules="):
        run_dit(model)  # cached(None) inside: the applied cache has no schedule
    cache.remove()
    with pytest.raises(ValueError, match="supports the ltx.ltxv DiT and the ltx.ltx2 AVTransformer"):
        apply_step_cache(torch.nn.Linear(2, 2), CachePolicy())
    with pytest.raises(TypeError, match="must be a CachePolicy"):
        apply_step_cache(model, {"kind": "teacache"})
    for marker in ("_sequence_parallel", "_cfg_parallel"):  # what apply_sequence_parallel / apply_cfg_parallel set
        setattr(model, marker, object())
        with pytest.raises(ValueError, match="does not combine with parallel=sp"):
            apply_step_cache(model, CachePolicy("first_block", 0.1))
        apply_step_cache(model, CachePolicy()).remove()  # counting only: fine on a split model
        delattr(model, marker)


@pytest.mark.slow
@pytest.mark.parametrize("model, forwards_per_step", [("ltx-demo", 1), ("ltx2-demo", 2)])
def test_the_generate_app_records_the_policy_and_the_stats(tmp_path, model, forwards_per_step):
    """`python -m infer.generate cache=teacache cache.threshold=...` on the bundled demos (4 steps): the run's yaml
    holds the policy (config.cache) and the counts; the kept first and last steps computed, the two between not."""
    import os
    import subprocess
    import sys

    import yaml

    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "infer.generate", f"model={model}", "cache=teacache", "cache.threshold=100",
           'prompts=["a red circle moves to the left"]', "steps=4", f"output_dir={tmp_path}", "name=run",
           "device=cpu"]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (record,) = [yaml.safe_load(p.read_text()) for p in (tmp_path / "run").glob("*.yaml")]
    assert record["config"]["cache"] == {"kind": "teacache", "threshold": 100.0, "keep_first": 1, "keep_last": 1,
                                         "per_modality": True, "max_consecutive": 0}
    stats = record["cache_stats"]
    assert stats["forwards"] == 4 * forwards_per_step
    assert stats["skipped"] == 2 * forwards_per_step and stats["computed"] == 2 * forwards_per_step
