"""The package's modules form no import cycle (imports inside functions and under TYPE_CHECKING count)."""

from __future__ import annotations

import ast

from conftest import ROOT


def imports_between_modules() -> dict[str, set[str]]:
    modules = {path.stem: path for path in (ROOT / "rlvr_sweeps").glob("*.py")}
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.level == 1:
                    graph[name].add(node.module.split(".")[0])
                elif node.module.startswith("rlvr_sweeps."):
                    graph[name].add(node.module.split(".")[1])
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return path + [target]
            if target not in state and (cycle := visit(target, path + [target])):
                return cycle
        state[node] = "done"
        return None

    return next((cycle for node in sorted(graph) if node not in state and (cycle := visit(node, [node]))), None)


def test_no_import_cycle_in_the_package():
    graph = imports_between_modules()
    assert graph["train"] >= {"checks", "budget", "evaluation", "run_record"}  # the graph is really read
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
