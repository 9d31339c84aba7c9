"""The package's layout: sub-packages in a strict one-way order (none imports one above it), the orchestrators on
top; no import cycle between modules (imports inside functions and under TYPE_CHECKING count); and what plans,
launches and analyses sweeps does not load the training stack."""

from __future__ import annotations

import ast
import subprocess
import sys

from conftest import ROOT

PACKAGE = ROOT / "rlvr_sweeps"
# From the bottom up. A sub-package may import those below it (and errors), never one above it or an orchestrator.
ORDER = ("infra", "run", "tasks", "policy", "generation", "training", "evaluation", "planning")
# The orchestrators and entry points on top: each may import any sub-package and each other (without a cycle).
TOP = {"errors", "resolvers", "checks", "train", "evaluate", "sweep", "upload", "preflight_job"}


def module_name(path) -> str:
    """'run.record' for rlvr_sweeps/run/record.py, 'generation' for rlvr_sweeps/generation/__init__.py."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_between_modules() -> dict[str, set[str]]:
    """module -> the package's modules it imports ('from .x import' and 'from rlvr_sweeps.x import' alike)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        here = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                target = [*base, *(node.module.split(".") if node.module else [])]
                names = [f"{'.'.join(target)}.{alias.name}".strip(".") for alias in node.names]
            elif node.module and node.module.startswith("rlvr_sweeps."):
                target = node.module.split(".")[1:]
                names = [f"{'.'.join(target)}.{alias.name}" for alias in node.names]
            else:
                continue
            found = {n for n in names if n in modules} or {".".join(target)}
            graph[name] |= {n for n in found if n in modules and n != name}
    return graph


def layer(module: str) -> int:
    """Where a module stands: errors at the bottom (-1), then the sub-packages of ORDER, the orchestrators on top."""
    top = module.split(".")[0]
    if top == "errors":
        return -1
    return ORDER.index(top) if top in ORDER else len(ORDER)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{module} imports {target}"
        for module, targets in sorted(graph.items())
        for target in sorted(targets)
        if layer(target) > layer(module) or (layer(target) == layer(module) == len(ORDER) and module not in TOP)
    ]


def test_the_folders_are_the_layout():
    """Every module sits in a sub-package of ORDER or is an orchestrator of TOP: a new module is placed, not dropped
    beside the others."""
    loose = sorted(name for name in imports_between_modules() if name.split(".")[0] not in (*ORDER, *TOP, ""))
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()) == sorted(ORDER)
    assert loose == [], f"modules outside the layout: {loose}"


def test_sub_packages_import_only_those_below_them():
    graph = imports_between_modules()
    assert graph["run.budget"] >= {"infra.hardware", "run.record"}  # the graph is really read, relative and dotted
    assert graph["train"] >= {"checks", "run.budget", "evaluation.evaluator", "run.record"}
    assert upward_imports(graph) == []


def test_an_upward_import_is_found():
    graph = imports_between_modules()
    assert upward_imports({**graph, "infra.hub": {"run.record"}}) == ["infra.hub imports run.record"]
    assert upward_imports({**graph, "tasks.data": {"train"}}) == ["tasks.data imports train"]
    assert upward_imports({**graph, "policy.models": {"policy.adapters"}}) == []  # within a sub-package


def test_no_import_cycle_in_the_package():
    graph = imports_between_modules()
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


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


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


# What runs on a login node or a laptop: the sweep launchers and their plan and report, `python -m rlvr_sweeps.sweep`
# and `python -m analysis`. Each import of torch & co. costs a process about 8 CPU-seconds.
CONTROL_PLANE = (
    "rlvr_sweeps.sweep",
    "rlvr_sweeps.resolvers",
    "hydra_plugins.rlvr_sweeps_launcher.launcher",
    "analysis.__main__",
    "rlvr_sweeps.infra.wandb_server",  # imported when the analysis reads from or saves to W&B
    "rlvr_sweeps.planning.preflight",  # the launcher picks the preflight arms; the plan reads preflight.json
)
TRAINING_STACK = ("torch", "transformers", "trl", "peft", "datasets", "vllm")


def test_the_control_plane_starts_without_the_training_stack():
    imports = "; ".join(f"import {module}" for module in CONTROL_PLANE)
    probe = f"import sys; {imports}; print(sorted(set(sys.modules) & {set(TRAINING_STACK)}))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", f"imported by the control plane: {done.stdout.strip()}"
