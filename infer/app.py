"""The entry point every Hydra app shares: register the schema, compose, convert once, and turn bad input
into one line (`error: ...`, exit status 1) instead of a traceback; `LTX_DEBUG=1` shows the traceback."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")


def hydra_app(schema: type, config_name: str, run: Callable[[object], object],
              errors: tuple[type[BaseException], ...] = ()) -> None:
    """Run `run(cfg)` on the `schema` dataclass composed from configs/<config_name>.yaml and the command line."""
    import hydra
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    ConfigStore.instance().store(name=f"{config_name}_schema", node=schema)

    @hydra.main(config_path=CONFIGS, config_name=config_name, version_base=None)
    def main(raw) -> None:
        try:
            run(OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), raw)))
        except (ValueError, FileNotFoundError, OmegaConfBaseException, *errors) as e:  # bad input: one line
            if os.environ.get("LTX_DEBUG"):
                raise
            raise SystemExit(f"error: {e}") from None

    main()
