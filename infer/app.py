"""The entry point every Hydra app shares: register the schema, compose, convert once, and turn bad input
into one line (`error: ...`, exit status 1) instead of a traceback; `LTX_DEBUG=1` (or HYDRA_FULL_ERROR=1)
shows the traceback. Ctrl-C and SIGTERM end the run with one line (exit 130 / 143) after the atomic writers
have removed their temporary files."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

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
