"""The entry point every Hydra app shares: register the schema, compose, convert once, and turn bad input
into one line (`error: ...`, exit status 1) instead of a traceback; `LTX_DEBUG=1` (or HYDRA_FULL_ERROR=1)
shows the traceback. Ctrl-C and SIGTERM end the run with one line (exit 130 / 143) after the atomic writers
have removed their temporary files."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ltx.presets import config_root

CONFIGS = str(config_root() / "configs")


def debug() -> bool:
    return bool(os.environ.get("LTX_DEBUG") or os.environ.get("HYDRA_FULL_ERROR"))


def hydra_app(schema: type, config_name: str, run: Callable[[object], object],
              errors: tuple[type[BaseException], ...] = ()) -> None:
    """Run `run(cfg)` on the `schema` dataclass composed from configs/<config_name>.yaml and the command line."""
    import hydra
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from ltx.core.checkpoint import Terminated, raise_on_sigterm

    ConfigStore.instance().store(name=f"{config_name}_schema", node=schema)
    register_help(schema)
    raise_on_sigterm()
    check_overrides(config_name, sys.argv[1:])

    @hydra.main(config_path=CONFIGS, config_name=config_name, version_base=None)
    def main(raw) -> None:
        try:
            run(OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), raw)))
        except (ValueError, OSError, OmegaConfBaseException, *errors) as e:  # bad input, unusable files: one line
            if debug():
                raise
            raise SystemExit(f"error: {one_line(e)}") from None
        except KeyboardInterrupt as e:
            if debug():
                raise
            what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
            print(f"{what}: stopped before finishing; files being written were removed, finished ones kept",
                  file=sys.stderr)
            raise SystemExit(143 if isinstance(e, Terminated) else 130) from None

    main()


def check_overrides(config_name: str, overrides: list[str]) -> None:
    """Compose the config once up front so that an override the schema refuses (a typo, `seed=abc`) ends in one
    line, `error: <override>: <why>` (exit status 1), instead of Hydra's multi-line report. Runs only for plain
    `key=value` overrides: Hydra's own flags (--help, -m, ...) and `hydra...` overrides go to Hydra unchecked."""
    if not overrides or debug() or any(a.startswith("-") or a.lstrip("+~").startswith("hydra") for a in overrides):
        return
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=CONFIGS, version_base=None):
            compose(config_name, overrides=overrides)
    except (ConfigCompositionException, OmegaConfBaseException) as e:
        cause = e.__cause__ if isinstance(e.__cause__, OmegaConfBaseException) else e
        lines = [line.strip() for line in str(cause).splitlines() if line.strip()] or [type(cause).__name__]
        why = lines[0]
        options = next((i for i, line in enumerate(lines) if line.startswith("Available options")), None)
        if options is not None:  # a config group option that does not exist: say which do
            names = [line for line in lines[options + 1 :] if not line.startswith(("Config search path", "provider="))]
            why = f"{why}; {lines[options]} {', '.join(names)}"
        def key(a: str) -> str:
            return a.split("=", 1)[0].lstrip("+~")

        named = [a for a in overrides if key(a) in str(e) + str(cause)]
        bad = max(named, key=lambda a: len(key(a))) if named else None  # model.av.pipeline=x over model=...
        where = f"{bad}: " if bad else ""
        raise SystemExit(f"error: {where}{why} (--help lists the options)") from None
    except Exception:  # noqa: BLE001 - anything else: let Hydra compose and report it as it does
        return


def one_line(e: BaseException) -> str:
    """The message of an expected error as one line; OS errors name the file and what failed, config errors
    the option."""
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    if isinstance(e, OSError) and e.filename is not None and not isinstance(e, FileNotFoundError | FileExistsError):
        return f"{e.filename}: {e.strerror or e}"
    if isinstance(e, OmegaConfBaseException) and getattr(e, "full_key", None):
        key = e.full_key
        if isinstance(e, MissingMandatoryValue):
            return f"{key} is required: pass {key}=... on the command line (--help lists the options)"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"{key}: {first}"
    text = str(e).strip() or type(e).__name__
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


# ------------------------------------------------------------------------------------------------ --help
# An app's --help generated from its schema: every field, dotted (lora.rank), with the value in effect (the YAML's
# default, or the override given before --help) and the comment written beside the field in the dataclass, so the
# help cannot drift from the code. An app asks for it in its YAML: `hydra.help.template` holds `${schema_help:}`
# (optionally `${schema_help:experiment}` to list a config group's options too); `hydra_app` registers the resolver.

HELP_WIDTH = 118
KEY_COLUMN = 34

# Fields whose dataclass carries no comment (yet): their explanation. A field's own comment wins.
FIELD_HELP = {
    "run_dir": "the run's folder: config.json, metrics.jsonl, loss.png, checkpoints/, samples/, the result; an "
               "existing run with checkpoints is resumed (with the config it started with)",
    "seed": "seeds every random draw (data order, sigmas, noise, dropout): a run is a pure function of its config",
    "steps": "optimizer steps in all (the LR schedule and the final export use it)",
    "lr": "learning rate (AdamW)",
    "warmup": "steps of linear LR warmup from 0",
    "min_lr_ratio": "linear / cosine schedules end at lr * min_lr_ratio",
    "weight_decay": "AdamW weight decay",
    "betas": "AdamW (beta1, beta2)",
    "objective": "the training loss: flow_matching (rectified-flow velocity, as the official trainer)",
    "activation_checkpointing": "recompute each block's activations in the backward pass (less memory, ~30% "
                                "slower)",
    "compile": "torch.compile the transformer blocks (CUDA: faster after a slow first step)",
    "log_every": "append a row to metrics.jsonl (and wandb, the progress bar) every N steps, and at the last",
    "checkpoint_every": "save a resumable checkpoint every N steps (and where a session stops)",
    "keep_checkpoints": "how many of the newest checkpoints to keep in run_dir/checkpoints",
    "wandb_project": "the wandb project name (offline logs in run_dir/wandb)",
    "device": "cpu, cuda or cuda:N",
    "rank": "LoRA rank (adapter width)",
    "dropout": "dropout on the LoRA branch's input while training",
    "std": "standard deviation of the logit-normal sigma distribution",
    "uniform_fraction": "share of the samples whose sigma is drawn uniformly instead",
    "video_loss_weight": "weight of the video stream's loss",
    "audio_loss_weight": "weight of the audio stream's loss",
    "validation.seed": "seed of the validation samples (the same noise at every validation)",
    "validation.width": "None: the first bucket's width",
    "validation.num_frames": "None: the first bucket's frames",
}


def field_comments(cls: type) -> dict[str, tuple[str, str]]:
    """{field: (comment beside it, comment block above it)} from a dataclass's source ("" where there is none)."""
    import ast
    import inspect
    import io
    import textwrap
    import tokenize

    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source (a frozen install): no comments
        return {}
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    lines = source.splitlines()
    out = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        beside = " ".join(comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments)
        above, n = [], node.lineno - 1
        while n >= 1 and lines[n - 1].strip().startswith("#"):
            above.insert(0, comments.get(n, ""))
            n -= 1
        out[node.target.id] = (beside, " ".join(above))
    return out


@dataclass
class HelpRow:
    key: str  # dotted: lora.rank
    explanation: str
    heading: str = ""  # a comment block above the field that it shares with the fields after it
    section: str = ""  # a nested dataclass's docstring, on its first row
    preset: bool = False  # the model preset field (a ModelPreset), shown as its name and the preset list


def schema_rows(schema: type, prefix: str = "") -> list[HelpRow]:
    """One row per leaf field of `schema` (nested dataclasses flattened to dotted keys; the model preset is one
    field, `model`)."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(schema)
    rows = []
    for f in dataclasses.fields(schema):
        owner = next(c for c in schema.__mro__ if f.name in c.__dict__.get("__annotations__", {}))
        beside, above = field_comments(owner).get(f.name, ("", ""))
        key = prefix + f.name
        kind = hints[f.name]
        nested = kind if dataclasses.is_dataclass(kind) else None
        if nested is not None and nested.__name__ != "ModelPreset":
            doc = (nested.__doc__ or "").strip()
            if doc.startswith(f"{nested.__name__}("):  # the dataclass's generated signature, not a docstring
                doc = ""
            sub = schema_rows(nested, key + ".")
            if sub:
                sub[0].section = doc or beside or above
            rows += sub
            continue
        explanation = beside or FIELD_HELP.get(key) or FIELD_HELP.get(f.name) or above
        heading = above if beside and above else ""
        rows.append(HelpRow(key, explanation, heading, preset=nested is not None))
    return rows


def _shown(value: object) -> str:
    from omegaconf import OmegaConf

    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    if value is None:
        return "null"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return str(getattr(value, "value", value))


def schema_help(schema: type, values=None, groups: tuple[str, ...] = ()) -> str:
    """The options part of an app's --help: every field of `schema` with its value in `values` (the composed
    config; None: the schema's defaults) and its explanation; the model presets, and the options of `groups`."""
    import textwrap

    from omegaconf import OmegaConf

    from ltx.presets import preset_names

    if values is None:
        values = OmegaConf.structured(schema)
    out = []
    group = ""
    for row in schema_rows(schema):
        where = row.key.rsplit(".", 1)[0] if "." in row.key else ""
        if where != group:  # a nested settings group (lora.*, validation.*) between blank lines
            out.append("")
            if where:
                out += textwrap.wrap(f"{where}.*" + (f": {row.section}" if row.section else ""), HELP_WIDTH,
                                     initial_indent="  ", subsequent_indent="    ")
            group = where
        if row.heading:
            out += ["", *textwrap.wrap(f"{row.heading}:", HELP_WIDTH, initial_indent="  ", subsequent_indent="    ")]
        if row.preset:
            value = OmegaConf.select(values, f"{row.key}.name", default="?")
            text = (f"{row.explanation}; presets: {', '.join(preset_names())}. Any preset field can be overridden "
                    "too, e.g. model.sampling.first_pass.num_inference_steps=20")
        else:
            parent, _, leaf = row.key.rpartition(".")
            node = OmegaConf.select(values, parent) if parent else values
            missing = node is None or OmegaConf.is_missing(node, leaf)
            value = "(required)" if missing else _shown(node[leaf])
            text = row.explanation
        head = f"  {row.key}={value}"
        if len(head) + 2 > KEY_COLUMN:
            out.append(head)
            head = ""
        text = re.sub(r"\bNone\b", "null", text) or "(no explanation)"  # null: what one types on the command line
        out += textwrap.wrap(text, HELP_WIDTH, initial_indent=head.ljust(KEY_COLUMN),
                             subsequent_indent=" " * KEY_COLUMN)
    for group in groups:
        names = sorted(p.stem for p in (Path(CONFIGS) / group).glob("*.yaml"))
        out += ["", *textwrap.wrap(f"+{group}=NAME: a preset of several options (configs/{group}/NAME.yaml): "
                                   f"{', '.join(names)}", HELP_WIDTH, initial_indent="  ", subsequent_indent="    ")]
    return "\n".join(out).strip("\n").replace("$", "$$")  # Hydra passes the template through string.Template next


def register_help(schema: type) -> None:
    """Make `${schema_help:}` in an app's hydra.help.template expand to `schema_help(schema, <composed config>)`."""
    from omegaconf import OmegaConf

    def resolve(*groups: str, _root_) -> str:
        return schema_help(schema, _root_, tuple(groups))

    OmegaConf.register_new_resolver("schema_help", resolve, replace=True)
