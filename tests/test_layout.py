"""The package's modules form no import cycle (imports inside functions and under TYPE_CHECKING count), and what
plans, launches and analyses sweeps does not load the training stack."""

from __future__ import annotations

import ast
import subprocess
import sys

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


# What runs on a login node or a laptop: the sweep launchers and their plan and report, `python -m rlvr_sweeps.sweep`
# and `python -m analysis`. Each import of torch & co. costs a process about 8 CPU-seconds.
CONTROL_PLANE = (
    "rlvr_sweeps.sweep",
    "rlvr_sweeps.resolvers",
    "hydra_plugins.rlvr_sweeps_launcher.launcher",
    "analysis.__main__",
    "rlvr_sweeps.wandb_server",  # imported when the analysis reads from or saves to W&B
    "rlvr_sweeps.preflight",  # the launcher picks the preflight arms; the plan reads preflight.json
)
TRAINING_STACK = ("torch", "transformers", "trl", "peft", "datasets", "vllm")


def test_the_control_plane_starts_without_the_training_stack():
    imports = "; ".join(f"import {module}" for module in CONTROL_PLANE)
    probe = f"import sys; {imports}; print(sorted(set(sys.modules) & {set(TRAINING_STACK)}))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", f"imported by the control plane: {done.stdout.strip()}"
