"""The import rules of the package, checked on the source: layers point one way and nothing goes in circles.

Bottom: the base modules, ``contracts`` and ``models``. Above them, one package per stage; a stage imports the
bottom and itself only. Top: the pipeline factory, its Airflow adapter, the CLI and the summary.
"""

import ast
import graphlib
from pathlib import Path

import pytest

import recsys_tasks

PACKAGE_ROOT = Path(recsys_tasks.__file__).parent
BOTTOM = {"constants", "errors", "settings", "storage", "latency", "privacy", "contracts", "models"}
STAGES = {"data", "validation", "augmentation", "training", "evaluation", "registry", "serving"}
TOP = {"params", "pipeline", "airflow_adapter", "cli", "reporting"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every recsys_tasks module ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("recsys_tasks"):
            found.update(
                f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module
                for alias in node.names
            )
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("recsys_tasks"))
    return found


MODULES = {_module_name(path): path for path in PACKAGE_ROOT.rglob("*.py")}
IMPORTS = {module: _imports(path) for module, path in MODULES.items()}
EDGES = [(module, imported) for module, imported_modules in IMPORTS.items() for imported in imported_modules]


def _part(module: str) -> str:
    """The layer unit of a module: its top-level package or module under recsys_tasks."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_top_level_part_of_the_package_has_a_layer():
    parts = {_part(module) for module in MODULES} - {""}
    assert parts <= BOTTOM | STAGES | TOP, f"unlayered: {sorted(parts - BOTTOM - STAGES - TOP)}"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stage_imports_only_the_bottom_layer_and_itself(stage):
    crossing = sorted(
        f"{module} → {imported}"
        for module, imported in EDGES
        if _part(module) == stage and _part(imported) not in BOTTOM | {stage, ""}
    )
    assert not crossing, "\n".join(crossing)


def test_the_bottom_layer_imports_no_stage_and_no_top():
    upward = sorted(
        f"{module} → {imported}"
        for module, imported in EDGES
        if _part(module) in BOTTOM and _part(imported) not in BOTTOM | {""}
    )
    assert not upward, "\n".join(upward)


def test_no_import_circle_between_modules():
    try:
        graphlib.TopologicalSorter(IMPORTS).prepare()
    except graphlib.CycleError as circle:
        pytest.fail(f"import circle: {' → '.join(reversed(circle.args[1]))}")


def test_the_checker_sees_an_import_inside_a_function(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from recsys_tasks.serving.app import create_app\n")
    assert "recsys_tasks.serving.app" in _imports(source)
