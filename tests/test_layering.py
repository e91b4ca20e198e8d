"""The package's import graph: layers in the order docs/architecture.md gives, and no cycles.

Every import counts, at module level or inside a function, since a cycle through a function-level
import is still a cycle for whoever changes one of the two files.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from tests.helpers import REPO

PACKAGE = REPO / "tinytitan"

# Lowest first. A unit (a top-level module, or a sub-package) may import units of its own
# layer or below, never above. Keep in step with docs/architecture.md.
LAYERS: list[tuple[str, ...]] = [
    ("errors",),
    ("config", "config_types", "folders", "hf_token", "models", "processes", "compat", "lm_tasks"),
    ("tokenizer", "tokenizer_convert"),
    ("data", "checkpoint", "run"),
    ("export",),
    ("observe",),
    ("rank", "job_config", "register"),
    ("launcher",),
    ("bench",),
    ("cli",),
]
LAYER_OF = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (``from pkg import mod`` counts as pkg.mod)."""
    modules = module_names()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                    module = ".".join([*base, node.module] if node.module else base)
                else:
                    module = node.module or ""
                subs = [f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in modules]
                targets = subs or [module]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target.startswith("tinytitan.") and target != name:
                    graph[name].add(target)
    return graph


def unit(module: str) -> str:
    return module.split(".")[1]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path a -> ... -> a, or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_unit_has_a_layer():
    units = {unit(m) for m in module_names() if m != "tinytitan"}
    assert units <= set(LAYER_OF), f"add {sorted(units - set(LAYER_OF))} to LAYERS and docs/architecture.md"


def test_no_import_runs_against_the_layers():
    wrong = [
        f"{a} imports {b} ({unit(a)} is layer {LAYER_OF[unit(a)]}, {unit(b)} is layer {LAYER_OF[unit(b)]})"
        for a, targets in import_graph().items()
        if a != "tinytitan"
        for b in targets
        if LAYER_OF[unit(b)] > LAYER_OF[unit(a)]
    ]
    assert not wrong, "\n".join(wrong)


def test_nothing_below_the_cli_imports_it():
    assert not [a for a, targets in import_graph().items() if "tinytitan.cli" in targets]


def test_no_cycle_between_files():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_no_cycle_between_packages():
    units: dict[str, set[str]] = defaultdict(set)
    for a, targets in import_graph().items():
        for b in targets:
            if a != "tinytitan" and unit(a) != unit(b):
                units[unit(a)].add(unit(b))
    cycle = find_cycle(units)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_checker_sees_a_cycle_and_a_function_level_import(tmp_path):
    """The walker must not pass by seeing nothing: it finds a known function-level import and a made-up cycle."""
    graph = import_graph()
    assert "tinytitan.data.preflight" in graph["tinytitan.launcher.preflight"]  # imported inside preflight()
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_one_module_reads_toml():
    readers = [
        str(path.relative_to(REPO))
        for path in PACKAGE.rglob("*.py")
        if any(word in path.read_text() for word in ("import tomllib", "import tomli", "ConfigManager("))
    ]
    assert readers == ["tinytitan/config.py"]
