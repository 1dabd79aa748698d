"""The package's import structure: no cycles, and the light commands stay light."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mtfilter"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """mtfilter modules that `path` imports, at module level or inside functions (not under
    `if TYPE_CHECKING:`), and those the package's facade (mtfilter/__init__.py) imports on
    first use of a name (the module paths of its `_SOURCES`). `from mtfilter import folders`
    imports the module `mtfilter.folders`, not the facade's names."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
        for node in ast.walk(branch)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & modules
            found |= submodules
            if len(submodules) < len(node.names):  # names defined in the module itself
                found.add(node.module)
        elif isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "_SOURCES":
            found |= set(ast.literal_eval(node.value).values())  # the facade's lazy imports
    return {name for name in found if name in modules}


# The floors, lowest first (../shared/STYLE.md, README "Layout"): each imports only floors below
# it. The ground floor is the package's top-level modules; `mtfilter` itself, the facade that
# re-exports the public names, sits above every floor it re-exports from.
FLOORS = ["ground", "nn", "record", "train", "report", "sweep", "cli", "facade"]


def module_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports_of(path, set(paths)) - {name} for name, path in paths.items()}


def floor_of(module: str) -> str:
    """`mtfilter.sweep._plan` -> `sweep`; the top-level modules (`mtfilter.folders`) -> ground;
    `mtfilter` itself -> facade."""
    parts = module.split(".")
    if len(parts) == 1:
        return "facade"
    return parts[1] if (PACKAGE / parts[1]).is_dir() else "ground"


def cycles_of(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles = []

    def visit(name: str, trail: list[str]) -> None:
        for target in graph[name]:
            if target in trail:
                cycles.append(trail[trail.index(target) :] + [target])
            elif target not in done:
                visit(target, [*trail, target])
        done.add(name)

    done: set[str] = set()
    for name in graph:
        if name not in done:
            visit(name, [name])
    return cycles


def test_no_module_of_the_package_imports_itself_back():
    assert not cycles_of(module_graph())


def test_no_package_imports_another_that_imports_it_back():
    """Cycles of packages, which a graph of files cannot show: `cli` importing `sweep` while a
    module of `sweep` imports one of `cli`, say."""
    packages: dict[str, set[str]] = {floor: set() for floor in FLOORS}
    for module, targets in module_graph().items():
        packages[floor_of(module)] |= {floor_of(t) for t in targets} - {floor_of(module)}
    assert not cycles_of(packages), packages


def test_each_floor_imports_only_the_floors_below_it():
    upward = [
        f"{module} -> {target}"
        for module, targets in module_graph().items()
        for target in targets
        if FLOORS.index(floor_of(target)) > FLOORS.index(floor_of(module))
    ]
    assert not upward
    assert set(FLOORS) == {floor_of(module) for module in module_graph()}  # the list is whole


def test_the_report_and_the_help_load_neither_torch_nor_lightning():
    code = (
        "import sys, mtfilter.report, mtfilter.cli.main, mtfilter.record.summaries; "
        "print(sorted({'torch', 'lightning'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_the_model_in_plain_pytorch_loads_no_lightning():
    """`mtfilter.nn` is plain PyTorch: research code can use the model without Lightning."""
    modules = sorted(p.stem for p in (PACKAGE / "nn").glob("*.py") if p.stem != "__init__")
    code = (
        f"import sys; import {', '.join(f'mtfilter.nn.{m}' for m in modules)}; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', "
        "'pytorch_lightning', 'torchmetrics')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert len(modules) >= 7 and result.stdout.strip() == "[]", result.stderr
