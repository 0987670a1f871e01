"""Architecture rules of the package (issue 12), checked on the source: no import cycles among ``ucgm_core``
modules and no private names imported across modules.

The import graph is read with ``ast`` (every ``import`` statement, also those inside functions, since a
deferred import that closes a cycle is still a cycle for the reader), so the test does not depend on
import order or on what happens to be imported already.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "ucgm_core"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> Dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _resolve(current: str, is_pkg: bool, level: int, module: str | None) -> str:
    """The absolute module a relative ``from ... import`` names."""
    if level == 0:
        return module or ""
    base = current.split(".") if is_pkg else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([module] if module else []))


def import_edges(modules: Dict[str, Path]) -> Dict[str, Set[Tuple[str, str]]]:
    """``{module: {(imported module, imported name or "")}}`` for imports of ``ucgm_core`` modules."""
    edges: Dict[str, Set[Tuple[str, str]]] = {}
    for name, path in modules.items():
        out: Set[Tuple[str, str]] = set()
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                out |= {(a.name, "") for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(name, is_pkg, node.level, node.module)
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    if sub in modules:  # "from . import accel": the submodule itself
                        out.add((sub, ""))
                    elif target in modules:
                        out.add((target, a.name))
        edges[name] = {(m, n) for m, n in out if m != name}
    return edges


def _strongly_connected(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Tarjan's algorithm, iterative; components with more than one module are cycles."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    on_stack: Set[str] = set()
    stack: List[str] = []
    out: List[List[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def _is_ancestor(pkg: str, mod: str) -> bool:
    return mod.startswith(pkg + ".")


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _strongly_connected(graph) == [["a", "b", "c"]]
    assert _strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_among_ucgm_core_modules():
    modules = _modules()
    edges = import_edges(modules)
    assert edges["ucgm_core.models.registry"], "the import reader found no imports in models/registry.py"
    # A package's __init__ importing its own submodules is not a cycle with them (Python imports the
    # package first by design); edges from a submodule up to an ancestor package's __init__ are kept.
    graph = {m: {t for t, _ in e if not _is_ancestor(m, t)} for m, e in edges.items()}
    cycles = _strongly_connected(graph)
    assert not cycles, "import cycles among ucgm_core modules:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_no_private_names_imported_across_modules():
    edges = import_edges(_modules())
    bad = sorted(
        f"{m} imports {n} from {t}"
        for m, e in edges.items()
        for t, n in e
        if n.startswith("_") and not n.startswith("__")
    )
    assert not bad, "private names imported across modules (make them public or move them):\n" + "\n".join(bad)


def test_schema_is_package_data_and_the_workflow_links_to_it():
    """A non-editable install must find the schema: it lives in the package and pyproject ships it."""
    import tomllib

    from ucgm_core.workflow_config import SCHEMA_PATH

    assert SCHEMA_PATH.is_file() and PKG in SCHEMA_PATH.resolve().parents, SCHEMA_PATH
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["ucgm_core"]
    rel = SCHEMA_PATH.relative_to(PKG).as_posix()
    assert any(Path(rel).match(pattern) for pattern in data), (rel, data)
    assert (ROOT / "workflow" / "schemas" / "config.schema.yaml").resolve() == SCHEMA_PATH.resolve()


def command_line_uses(source: str, filename: str = "<source>") -> List[str]:
    """What in ``source`` belongs to a command line: ``import argparse`` / ``from argparse import ...`` (also
    inside functions), ``sys.argv`` and ``if __name__ == "__main__"``, as ``"line N: what"``."""
    found: List[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name.split(".")[0] == "argparse"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "argparse":
            found.append(f"line {node.lineno}: from {node.module} import ...")
        elif (
            isinstance(node, ast.Attribute)
            and node.attr == "argv"
            and isinstance(node.value, ast.Name)
            and node.value.id == "sys"
        ):
            found.append(f"line {node.lineno}: sys.argv")
        elif (
            isinstance(node, ast.Compare)
            and isinstance(node.left, ast.Name)
            and node.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in node.comparators)
        ):
            found.append(f'line {node.lineno}: __name__ == "__main__"')
    return found


def test_no_argparse_in_the_library():
    """Command lines live in the stage tools (workflow/scripts/); the package only has typed functions they
    call (issue 12). The reader must see every form in planted code and in a real tool, then none in ucgm_core."""
    planted = (
        "import argparse\ndef f():\n    from argparse import ArgumentParser\n    import sys\n"
        "    return sys.argv\nif __name__ == '__main__':\n    f()\n"
    )
    assert sorted(command_line_uses(planted)) == [
        "line 1: import argparse",
        "line 3: from argparse import ...",
        "line 5: sys.argv",
        'line 6: __name__ == "__main__"',
    ]
    for tool in ("shards.py", "latents.py", "inception_weights.py"):
        path = ROOT / "workflow" / "scripts" / tool
        assert any("import argparse" in u for u in command_line_uses(path.read_text(), str(path))), path
    bad = [
        f"{path.relative_to(ROOT)} {use}"
        for path in sorted(PKG.rglob("*.py"))
        for use in command_line_uses(path.read_text(), str(path))
    ]
    assert not bad, "command lines in the library (move them to a tool in workflow/scripts/):\n" + "\n".join(bad)


#: a stage tool maps its flags (or ``snakemake.*``) onto one library call; the work itself is in ucgm_core
SCRIPT_MAX_LINES = 100


def test_stage_scripts_are_thin():
    """Every ``workflow/scripts/*.py`` is under ``SCRIPT_MAX_LINES`` lines (issue 12: the largest were 309
    and 220 lines, building models, loaders and files themselves) and imports ``ucgm_core`` for its work."""
    scripts = sorted((ROOT / "workflow" / "scripts").glob("*.py"))
    assert len(scripts) >= 10, scripts  # the stage tools are there to be checked
    sizes = {p.name: len(p.read_text().splitlines()) for p in scripts}
    fat = {name: n for name, n in sizes.items() if n > SCRIPT_MAX_LINES}
    assert not fat, f"stage scripts over {SCRIPT_MAX_LINES} lines (move the work into ucgm_core): {fat}"
    lazy = [p.name for p in scripts if "ucgm_core" not in p.read_text()]
    assert not lazy, f"stage scripts that do not call the library: {lazy}"
