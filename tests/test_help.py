"""--help of the training apps (train.preprocess, train.finetune, train.distill) is generated from their schemas
(infer/app.py `schema_help`): every field, dotted, with the value in effect and a non-empty explanation, the model
presets, and no config group of another app."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

pytest.importorskip("hydra")

from infer import app  # noqa: E402
from train.distill import DistillConfig  # noqa: E402
from train.finetune import FinetuneConfig  # noqa: E402
from train.preprocess import PreprocessConfig  # noqa: E402

SCHEMAS = {"preprocess": PreprocessConfig, "finetune": FinetuneConfig, "distill": DistillConfig}


def _leaves(schema: type, prefix: str = "") -> list[str]:
    """Every leaf field, dotted, found independently of `schema_rows` (dataclasses.fields, recursively)."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(schema)
    out = []
    for f in dataclasses.fields(schema):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind) and f.name != "model":
            out += _leaves(kind, f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_field_has_an_explanation(name):
    rows = {r.key: r.explanation for r in app.schema_rows(SCHEMAS[name])}
    assert sorted(rows) == sorted(_leaves(SCHEMAS[name]))
    assert [k for k, text in rows.items() if len(text.strip()) < 3] == []
    assert any(k.startswith("lora.") for k in rows) == (name != "preprocess")


def test_fallback_explanations_are_all_used():
    """FIELD_HELP only covers fields without a comment: an entry no schema uses is stale."""
    used = {r.key for s in SCHEMAS.values() for r in app.schema_rows(s)}
    names = {k.rsplit(".", 1)[-1] for k in used}
    assert [k for k in app.FIELD_HELP if k not in used and k not in names] == []


def _help(module: str, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", module, *overrides, "--help"], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_cli_help_lists_every_field_explained_with_its_value():
    from ltx.presets import preset_names

    procs = {name: _help(f"train.{name}") for name in SCHEMAS}
    outs = {}
    for name, p in procs.items():
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        outs[name] = out
    for name, schema in SCHEMAS.items():
        out = outs[name]
        lines = out.splitlines()
        for key in _leaves(schema):
            at = [i for i, line in enumerate(lines) if line.strip().startswith(f"{key}=")]
            assert at, f"{name}: {key} is not in --help"
            line = lines[at[0]].strip()
            after = line.split(" ", 1)[1].strip() if " " in line else lines[at[0] + 1].strip()
            assert after and "=" not in after.split()[0], f"{name}: {key} has no explanation: {line!r}"
        assert "== Configuration groups ==" not in out and "demo: dit, vae" not in out  # other apps' groups
        if name != "preprocess":
            assert all(p in out for p in preset_names())
    assert "  lora.rank=16 " in outs["finetune"]
    assert "  lora.rank=32 " in outs["distill"]  # configs/distill.yaml's value, not the dataclass's
    assert "+experiment=NAME" in outs["distill"] and "distill_dmd4" in outs["distill"]
    assert "data=(required)" in outs["finetune"]


def test_help_shows_the_overridden_values():
    """The values shown are the composed config's: the YAML's, then the command line's overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="finetune_schema", node=FinetuneConfig)
    with initialize_config_dir(config_dir=app.CONFIGS, version_base=None):
        cfg = compose("finetune", overrides=["lora.rank=7", "model=ltxv-2b-0.9.5", "validation.from_data=0"])
    text = app.schema_help(FinetuneConfig, cfg)
    assert "  lora.rank=7 " in text and "  model=ltxv-2b-0.9.5 " in text and "  validation.from_data=0 " in text
