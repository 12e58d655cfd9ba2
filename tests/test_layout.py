"""The layout rules, read from the sources with `ast` (nothing is imported):

(a) no import cycle among the project's modules (ltx/, infer/, train/, tools/), counting module-level and
    function-local imports alike;
(b) the library (ltx/) imports no app (infer, train) and no Hydra / OmegaConf;
(c) the families never import each other: ltx/ltxv never imports ltx.ltx2, ltx/ltx2 never imports ltx.ltxv;
(d) ltx/core serves both families, so it imports neither (nor ltx.presets / ltx.api, which import both); the
    same holds for ltx/data, the other package both families may import.

An import `from a.b import c` names `a.b.c`; it depends on the longest prefix of that name that is a project
module (`a.b.c` when c is a submodule, else `a.b`). The checks run first on a small synthetic tree, so each of
them is seen to fail.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROJECT_ROOTS = ("ltx", "infer", "train", "tools")
FORBIDDEN_IN_LIBRARY = ("infer", "train", "hydra", "omegaconf")
FAMILIES = ("ltx.ltxv", "ltx.ltx2")
NOT_FOR_CORE = (*FAMILIES, "ltx.presets", "ltx.api")


def module_files(repo: Path, roots: tuple[str, ...] = PROJECT_ROOTS) -> dict[str, Path]:
    """Dotted module name -> source file, for every .py file under the roots (a package is its __init__)."""
    modules = {}
    for root in roots:
        for path in sorted((repo / root).rglob("*.py")):
            parts = path.relative_to(repo).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_names(module: str, path: Path) -> list[tuple[str, int]]:
    """Every (dotted name, line) a file imports, wherever the import statement is (module level, functions,
    classes, conditionals). `from m import n` gives `m.n`; relative imports are resolved against `module`."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names += [(f"{base}.{alias.name}" if alias.name != "*" else base, node.lineno) for alias in node.names]
    return names


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module an imported name depends on: its longest prefix that is a module, or None."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in modules:
            return prefix
    return None


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports (self-imports dropped)."""
    graph = {}
    for module, path in modules.items():
        targets = {resolve(name, modules) for name, _ in imported_names(module, path)}
        graph[module] = targets - {None, module}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a list of modules, first == last) per strongly connected component with more than one module
    (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(set(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return [_cycle_in(component, graph) for component in components]


def _cycle_in(component: set[str], graph: dict[str, set[str]]) -> list[str]:
    # breadth-first from the first member back to itself, inside the component: a shortest cycle through it
    start = min(component)
    parents = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & component):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if child not in parents:
                    parents[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start} in its component {component}")


def forbidden_imports(
    repo: Path, modules: dict[str, Path], importer_prefix: str, forbidden: tuple[str, ...]
) -> list[str]:
    """'file:line imports name' for each import, by a module under `importer_prefix`, of a name under one of
    `forbidden` (a dotted prefix: "ltx.ltx2" forbids ltx.ltx2 and ltx.ltx2.*)."""
    offenders = []
    for module, path in modules.items():
        if module != importer_prefix and not module.startswith(importer_prefix + "."):
            continue
        for name, line in imported_names(module, path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                offenders.append(f"{path.relative_to(repo).as_posix()}:{line} imports {name}")
    return offenders


def layout_problems(repo: Path, roots: tuple[str, ...] = PROJECT_ROOTS) -> dict[str, list[str]]:
    modules = module_files(repo, roots)
    return {
        "cycles": [" -> ".join(cycle) for cycle in find_cycles(import_graph(modules))],
        "library imports apps": forbidden_imports(repo, modules, "ltx", FORBIDDEN_IN_LIBRARY),
        "ltxv imports ltx2": forbidden_imports(repo, modules, "ltx.ltxv", ("ltx.ltx2",)),
        "ltx2 imports ltxv": forbidden_imports(repo, modules, "ltx.ltx2", ("ltx.ltxv",)),
        "core imports a family": forbidden_imports(repo, modules, "ltx.core", NOT_FOR_CORE),
        "data imports a family": forbidden_imports(repo, modules, "ltx.data", NOT_FOR_CORE),
    }


# ------------------------------------------------------------------------------------------------ self-test


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_the_checks_fail_on_a_tree_that_breaks_every_rule(tmp_path):
    _write(tmp_path, {
        "ltx/__init__.py": "",
        "ltx/core/__init__.py": "",
        "ltx/core/io.py": "import os\nfrom ltx.ltxv import vae\n",
        "ltx/data/__init__.py": "",
        "ltx/data/buckets.py": "from ltx.core.io import f\nfrom ltx import presets\n",
        "ltx/ltxv/__init__.py": "",
        "ltx/ltxv/vae.py": "from ltx.core import io\n\ndef f():\n    from ltx.ltx2.vae import g\n",
        "ltx/ltx2/__init__.py": "",
        "ltx/ltx2/vae.py": "def g():\n    import omegaconf\n    from .. import ltxv\n",
        "infer/__init__.py": "",
        "infer/a.py": "from infer import b\n",
        "infer/b.py": "def h():\n    from . import a\n",
        "train/__init__.py": "",
        "tools/__init__.py": "",
    })  # fmt: skip
    problems = layout_problems(tmp_path)
    # ltx2.vae's `from .. import ltxv` names the package ltx.ltxv (an empty __init__), so it closes no cycle
    assert sorted(problems["cycles"]) == ["infer.a -> infer.b -> infer.a", "ltx.core.io -> ltx.ltxv.vae -> ltx.core.io"]
    assert problems["library imports apps"] == ["ltx/ltx2/vae.py:2 imports omegaconf"]
    assert problems["ltxv imports ltx2"] == ["ltx/ltxv/vae.py:4 imports ltx.ltx2.vae.g"]
    assert problems["ltx2 imports ltxv"] == ["ltx/ltx2/vae.py:3 imports ltx.ltxv"]
    assert problems["core imports a family"] == ["ltx/core/io.py:2 imports ltx.ltxv.vae"]
    assert problems["data imports a family"] == ["ltx/data/buckets.py:2 imports ltx.presets"]


def test_the_checks_pass_on_a_layered_tree(tmp_path):
    _write(tmp_path, {
        "ltx/__init__.py": "def __getattr__(name):\n    from ltx.ltxv import api\n",
        "ltx/core/__init__.py": "",
        "ltx/core/io.py": "import torch\n",
        "ltx/ltxv/__init__.py": "",
        "ltx/ltxv/api.py": "from ltx.core import io\n",
        "infer/__init__.py": "",
        "infer/app.py": "import hydra\nfrom ltx.ltxv.api import load\n",
    })  # fmt: skip
    problems = layout_problems(tmp_path, ("ltx", "infer"))
    assert problems == {name: [] for name in problems} and len(problems) == 6


# ------------------------------------------------------------------------------------------------ the project


@functools.cache
def project_problems() -> dict[str, list[str]]:
    return layout_problems(REPO)


def test_no_import_cycle_among_project_modules():
    cycles = project_problems()["cycles"]
    assert cycles == [], "import cycles:\n" + "\n".join(cycles)


def test_library_imports_no_app_and_no_hydra():
    offenders = project_problems()["library imports apps"]
    assert offenders == [], "\n".join(offenders)


def test_families_do_not_import_each_other():
    problems = project_problems()
    offenders = problems["ltxv imports ltx2"] + problems["ltx2 imports ltxv"]
    assert offenders == [], "\n".join(offenders)


def test_shared_packages_import_no_family():
    problems = project_problems()
    offenders = problems["core imports a family"] + problems["data imports a family"]
    assert offenders == [], "\n".join(offenders)
