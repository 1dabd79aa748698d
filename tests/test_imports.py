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
    `if TYPE_CHECKING:`)."""
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
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name in modules}


def test_no_module_of_the_package_imports_itself_back():
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: imports_of(path, set(paths)) - {name} for name, path in paths.items()}
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
    assert not cycles, cycles


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
