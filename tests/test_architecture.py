"""The package's folders follow the data flow: imports go one way, and never in a circle.

Every import counts, at module level or inside a function: a deferred import still ties two
modules together. Layers and their allowed directions are DESIGN.md's (docs/design.md):

    cli → launch, analysis, store, spec, data        launch → trial, store, spec, data
    analysis → store, spec                           trial → spec, data, algorithms,
    spec → data, algorithms, constraints, tuning             constraints, store.schema
    tuning → data
    everything → errors, files, plugins

A module may import any layer its own layer reaches through these arrows (``cli`` may use
``algorithms`` because ``spec`` does), never one that reaches it back.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "ctrain_dist"

ARROWS: dict[str, set[str]] = {
    "cli": {"launch", "analysis", "store", "spec", "data"},
    "launch": {"trial", "store", "spec", "data"},
    "analysis": {"store", "spec"},
    "trial": {"spec", "data", "algorithms", "constraints", "store.schema"},
    "spec": {"data", "algorithms", "constraints", "tuning"},
    "tuning": {"data"},
    "store": {"store.schema"},
    "store.schema": set(),
    "data": set(),
    "algorithms": set(),
    "constraints": set(),
    "errors": set(),
    "files": set(),
    "moved": set(),
    "plugins": set(),
}
EVERYONE = {"errors", "files", "plugins"}


def reachable(layer: str) -> set[str]:
    """The layers ``layer`` may import: its arrows followed transitively, itself, and leaves."""
    seen, todo = {layer}, [layer]
    while todo:
        for target in ARROWS[todo.pop()] | EVERYONE:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The ``ctrain_dist`` modules that ``path`` imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join([*base, node.module] if node.module else base)
            else:
                origin = node.module or ""
            # `from pkg import submodule` imports the submodule; `from mod import name` the module
            targets = [
                f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in known else origin
                for alias in node.names
            ]
        else:
            continue
        found.update(target for target in targets if target in known and target != name)
    return found


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imported_modules(name, path, known) for name, path in found.items()}


def layer_of(module: str) -> str | None:
    """The layer of a module; None for the package root (the public surface, which may import
    anything and which nothing inside the package imports)."""
    parts = module.split(".")[1:]
    if not parts:
        return None
    if parts[:2] == ["store", "schema"]:
        return "store.schema"
    return parts[0]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), plus self-loops."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_every_module_belongs_to_a_known_layer():
    unknown = {m for m in modules() if layer_of(m) is not None and layer_of(m) not in ARROWS}
    assert not unknown, f"modules outside the layers of docs/design.md: {sorted(unknown)}"


def test_no_two_modules_import_each_other_through_any_chain():
    found = cycles(import_graph())
    assert not found, f"import circles: {found}"


def test_imports_follow_the_data_flow():
    graph = import_graph()
    against = [
        f"{source} → {target}"
        for source, targets in graph.items()
        for target in sorted(targets)
        if layer_of(source) is not None
        and (layer_of(target) is None or layer_of(target) not in reachable(layer_of(source)))
    ]
    assert not against, "imports against the data flow:\n" + "\n".join(against)


def test_the_cycle_finder_sees_a_circle_through_a_chain():
    """Control: the check above can fail."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_the_direction_check_refuses_an_upward_import():
    """Control: data may not reach spec, nor trial reach launch, nor store reach trial."""
    assert "spec" not in reachable("data")
    assert "launch" not in reachable("trial")
    assert "trial" not in reachable("store")
    assert "store" not in reachable("trial")  # only its schema
    assert "algorithms" in reachable("cli")  # through spec


def heavy_modules_loaded_by(argv: list[str]) -> list[str]:
    """Which of torch and Ray ``ctrain ARGV`` loads, read from ``sys.modules`` of a fresh
    interpreter after the command returns."""
    probe = (
        "import sys\n"
        "from ctrain_dist.cli.main import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('LOADED', ','.join(m for m in ('torch', 'ray') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return [m for m in result.stdout.rsplit("LOADED", 1)[1].strip().split(",") if m]


LIGHT_COMMANDS = [
    ["--help"],
    ["store", "ls", "{store}"],
    ["store", "schema"],
    ["report", "--help"],
    ["status", "--help"],
]


@pytest.mark.parametrize("argv", LIGHT_COMMANDS, ids=lambda argv: " ".join(argv))
def test_store_report_and_status_commands_load_neither_torch_nor_ray(argv, tmp_path):
    argv = [part.format(store=tmp_path) for part in argv]
    assert heavy_modules_loaded_by(argv) == [], f"`ctrain {' '.join(argv)}` loads them"


def test_the_sys_modules_probe_sees_torch_when_it_is_loaded():
    """Control: a command that needs torch is seen loading it."""
    assert "torch" in heavy_modules_loaded_by(["algorithms"])
