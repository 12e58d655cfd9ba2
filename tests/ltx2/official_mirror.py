"""Run modules of the official Lightricks/LTX-2 code (ltx-core / ltx-pipelines 1.2.0, the LTX-2.5 release) straight
from a local git mirror, for parity tests where PyPI has no such version (it stops at 1.0.0).

The mirror is what the `fetch` tool makes of github:Lightricks/LTX-2 (/work/.mirror/Lightricks+LTX-2/repo). Without
it the calling test skips, saying so: the diffusers comparisons in the same files still run."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

OFFICIAL = "/work/.mirror/Lightricks+LTX-2/repo"


def load_official(files: dict[str, str], stubs: dict[str, types.ModuleType]) -> dict[str, types.ModuleType]:
    """{module name: path at the mirror's HEAD} executed in order, each registered under its name while the next
    ones run, with `stubs` standing in for the parents they import; sys.modules is restored afterwards."""
    sources = {}
    for name, path in files.items():
        try:
            sources[name] = subprocess.run(["git", "-C", OFFICIAL, "show", f"HEAD:{path}"], capture_output=True,
                                           text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            pytest.skip(f"no local mirror of Lightricks/LTX-2 at {OFFICIAL} (fetch github:Lightricks/LTX-2): the "
                        "comparison with the official 1.2.0 code needs it")
    saved = {k: sys.modules.get(k) for k in [*stubs, *sources]}
    sys.modules.update(stubs)
    modules = {}
    try:
        for name, src in sources.items():
            module = types.ModuleType(name)
            sys.modules[name] = module
            exec(compile(src, f"official:{name}", "exec"), module.__dict__)  # noqa: S102  (trusted local mirror)
            modules[name] = module
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return modules
