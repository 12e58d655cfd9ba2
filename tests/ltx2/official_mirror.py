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


def ltx_core_src(tmp_root) -> str:
    """A directory holding the official ltx-core package (`ltx_core`) at the mirror's HEAD, for tests that run it
    in a subprocess (its whole package, not single modules): LTX_CORE_HEAD_SRC if set (a checkout's
    packages/ltx-core/src), else the mirror's packages/ltx-core/src extracted under `tmp_root` (`git archive`).
    Skips the calling test when there is neither."""
    import os
    import tarfile
    from pathlib import Path

    given = os.environ.get("LTX_CORE_HEAD_SRC")
    if given:
        return given
    out = Path(tmp_root) / "ltx-core-head"
    src = out / "packages/ltx-core/src"
    if not (src / "ltx_core").is_dir():
        try:
            archive = subprocess.run(["git", "-C", OFFICIAL, "archive", "--format=tar", "HEAD",
                                      "packages/ltx-core/src"], capture_output=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            pytest.skip(f"no local mirror of Lightricks/LTX-2 at {OFFICIAL} (fetch github:Lightricks/LTX-2) and no "
                        "LTX_CORE_HEAD_SRC: the comparison with the official ltx-core needs one")
        import io

        out.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(out, filter="data")
    return str(src)


def run_with_ltx_core(script: str, tmp_root, *args: str, timeout: int = 600) -> list[float]:
    """Run `script` in a subprocess that imports the official ltx-core (`ltx_core_src`) and this folder's helpers,
    from the repository root; it must end cleanly and print one number last on each line (a max |diff|), which
    are returned."""
    import os
    from pathlib import Path

    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((ltx_core_src(tmp_root), str(here)))}
    r = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env,
                       cwd=here.parents[1], timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return [float(line.split()[-1]) for line in r.stdout.splitlines()]
