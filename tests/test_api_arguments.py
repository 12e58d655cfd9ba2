"""The Python API's argument types: a wrong type is refused in one line that names the argument and what it
takes (before this, `load_pipeline(5)`, `loras="x.safetensors"`, `pipe(42)` and `pipe(..., generator=5)` failed
deep inside os.fspath, iterated the string's characters, or failed inside torch)."""

from __future__ import annotations

import pytest
import torch

import ltx


@pytest.mark.parametrize("kwargs, message", [
    ({"checkpoint": 5}, r"checkpoint must be a path \(str or os.PathLike\) or None, got 5 \(int\)"),
    ({"text_encoder": 1.5}, r"text_encoder must be a path"),
    ({"model": 3}, r"model must be a preset name .* got 3 \(int\)"),
    ({"loras": "x.safetensors"}, r"loras must be a list of paths .* got 'x.safetensors'; for one LoRA pass"),
    ({"loras": [7]}, r"loras\[0\] must be a path, a \(path, strength\) pair or a \{path, strength\} dict, got 7"),
    ({"loras": [{"file": "a"}]}, r"loras\[0\] must be a path"),
    ({"loras": [("a.safetensors", "strong")]}, r"loras\[0\]: strength must be a finite number, got 'strong'"),
    ({"loras": [(3, 1.0)]}, r"loras\[0\]: the path must be a str or os.PathLike, got 3"),
])
@pytest.mark.parametrize("entry", ["open_pipeline", "load_pipeline"])
def test_bad_argument_types_are_named(entry, kwargs, message):
    kwargs = dict(kwargs)  # parametrized dicts are shared between the two entries
    checkpoint = kwargs.pop("checkpoint", None)
    with pytest.raises(ValueError, match=message):
        getattr(ltx, entry)(checkpoint, **kwargs)


def test_ltx2_presets_check_the_same_way():
    with pytest.raises(ValueError, match=r"loras must be a list"):
        ltx.open_pipeline("/nonexistent.safetensors", model="ltx-2-19b-distilled", loras="x.safetensors")


@pytest.fixture(scope="module")
def demo():
    return ltx.load_pipeline()


@pytest.mark.parametrize("call, message", [
    (lambda pipe: pipe(42), r"prompt must be a string or a list of strings, got 42 \(int\)"),
    (lambda pipe: pipe(["a red circle", 3]), r"prompt\[1\] must be a string, got 3"),
    (lambda pipe: pipe("a red circle", generator=5), r"generator must be a torch.Generator or None, got 5; for a "
                                                     r"seed pass seed=5"),
    (lambda pipe: pipe("a red circle", seed="7"), r"seed must be an integer"),
])
def test_bad_call_arguments_are_named(demo, call, message):
    with pytest.raises(ValueError, match=message):
        call(demo)


def test_a_generator_still_works(demo):
    a = demo("a red circle moves to the left", generator=torch.Generator().manual_seed(3), num_inference_steps=2)
    b = demo("a red circle moves to the left", generator=torch.Generator().manual_seed(3), num_inference_steps=2)
    assert torch.equal(a.frames, b.frames)
