"""The house stays layered: read from the code's imports (every import, also those inside
functions), not from a picture that can go stale.

agents/ (the team and the serving core) and training/ know nothing of Django; webapp's apps and
modules import only the layers below their own, and no module of ours takes part in an import
circle."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.processes import ROOT

# Bottom to top. An app (or a module outside the apps) may import those before it, never after.
LAYERS = [
    ["agents"],
    ["training"],
    ["webapp.settings", "webapp.redis"],
    ["webapp.celery", "webapp.events"],
    ["webapp.projects"],
    ["webapp.documents"],
    ["webapp.registry"],
    ["webapp.llm"],
    ["webapp.runs"],
    ["webapp.jobs"],
    ["webapp.accounts", "webapp.health"],
    ["webapp.urls", "webapp.asgi", "webapp.wsgi", "webapp.launcher", "webapp"],
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
OURS = ("agents", "training", "webapp")
FRAMEWORKS = ("django", "channels", "celery", "webapp", "redis", "pycrdt")


def _modules() -> dict[str, Path]:
    found = {}
    for package in OURS:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every module `path` imports (with the line), resolved to a module of ours where it is one.
    Imports for type checkers only (under `if TYPE_CHECKING:`) run nothing and are left out."""
    tree = ast.parse(path.read_text())
    typing_only = {id(inner) for node in ast.walk(tree)
                   if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
                   for inner in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # `from webapp.runs import writing` imports webapp.runs.writing
                full = f"{node.module}.{alias.name}"
                out.append((full if full in MODULES else node.module, node.lineno))
    return out


def _unit(module: str) -> str:
    """The app (webapp.runs) or layer unit (webapp.llm, agents) a module belongs to."""
    parts = module.split(".")
    if parts[0] != "webapp":
        return parts[0]
    for length in (2, 1):
        if ".".join(parts[:length]) in RANK:
            return ".".join(parts[:length])
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS in {__file__}")


def test_agents_and_training_know_nothing_of_the_web_app():
    wrong = [f"{name}:{line} imports {target}" for name, path in MODULES.items()
             if _unit(name) in ("agents", "training")
             for target, line in _imports(path) if target.split(".")[0] in FRAMEWORKS]
    assert wrong == []


def test_apps_import_only_the_layers_below_them():
    wrong = []
    for name, path in MODULES.items():
        for target, line in _imports(path):
            if target.split(".")[0] not in OURS:
                continue
            low, high = _unit(target), _unit(name)
            if low != high and RANK[low] >= RANK[high]:
                wrong.append(f"{name}:{line} imports {target} ({high} must not depend on {low})")
    assert wrong == []


def test_no_module_of_ours_is_part_of_an_import_circle():
    graph = {name: {target for target, _ in _imports(path) if target in MODULES and target != name}
             for name, path in MODULES.items()}
    # Importing a package runs its __init__: a.b.c depends on a.b as well.
    circles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                circles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert circles == []


def test_the_layer_check_can_fail():
    """The checks above read real imports: a made-up upward import is caught."""
    assert _unit("webapp.documents.services") == "webapp.documents"
    assert RANK[_unit("webapp.runs.models")] > RANK[_unit("webapp.documents.models")]
    assert ("webapp.runs.writing", 1) in _imports_of("from webapp.runs import writing\n")


def _imports_of(source: str) -> list[tuple[str, int]]:
    path = ROOT / "var" / "layering-probe.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(source)
    try:
        return _imports(path)
    finally:
        path.unlink()


def test_the_article_s_steps_are_described_once_and_both_drivers_run_them(db):
    """agents/steps.py says the order plan -> write -> review (and which agents do each); the
    in-process driver (coordinator.write_article) and the app's run stages run that description,
    every step and nothing else, and batch the leaves the same way."""
    from agents import coordinator, steps
    from webapp.runs import lifecycle
    from webapp.runs.models import RunStatus

    assert [step.name for step in steps.STEPS] == ["plan", "write", "review"]
    assert list(coordinator._STEP_IN_PROCESS) == [step.name for step in steps.STEPS]
    assert list(lifecycle.STAGE_TASK) == list(steps.STEPS) == list(lifecycle.STAGE_STATUS)
    assert [lifecycle.STAGE_STATUS[step] for step in steps.STEPS] == [RunStatus.PLANNING, RunStatus.WRITING,
                                                                     RunStatus.REVIEWING]
    assert [steps.after(step) for step in steps.STEPS] == [steps.WRITE, steps.REVIEW, None]
    assert steps.batches(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    # No other module spells the order: the stage functions are reached only through the steps.
    spelled = [path.relative_to(ROOT) for package in OURS for path in (ROOT / package).rglob("*.py")
               if "(reviewer.ROLE, finisher.ROLE)" in path.read_text() and path.name != "steps.py"]
    assert not spelled, spelled
