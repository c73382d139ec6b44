"""Limits a machine holds: the one-way layering, the leaf `ir/`, line length and formatting.

The layers (pyproject.toml, `[tool.importlinter]`): ir <- targets <- passes | retrain <- compiler <-
models, passes and retrain independent. `lint-imports` checks the installed `odimo.*` namespace; the
negative test runs the same contract on a copy of the source with one upward import added, to show
the check fails on the first one.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ir", "targets", "passes", "retrain", "compiler", "models")
# What ir/ may import besides the standard library: the graph model's own dependencies, and
# onnxruntime for verification, which is execution.
IR_DEPENDENCIES = {"onnx", "numpy", "networkx", "onnxruntime", "odimo"}


def _lint_imports(root: Path, config: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the `odimo` namespace found under `root`, not the installed one."""
    script = textwrap.dedent(f"""
        import sys
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()
                            and "editable" not in repr(f).lower()]
        sys.path.insert(0, {str(root)!r})
        from importlinter.cli import lint_imports
        sys.exit(lint_imports(config_filename={str(config)!r}, no_cache=True, no_logo=True))
    """)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root, timeout=120)


def _source_copy(tmp_path: Path) -> Path:
    """The packages laid out as `tmp_path/odimo/<package>/`, the namespace setuptools installs."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / "odimo" / package, ignore=shutil.ignore_patterns("*.onnx"))
    return tmp_path


def test_packages_import_only_downward(tmp_path: Path) -> None:
    result = _lint_imports(_source_copy(tmp_path), ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_layers_contract(tmp_path: Path) -> None:
    copy = _source_copy(tmp_path)
    errors = copy / "odimo" / "ir" / "errors.py"
    errors.write_text(errors.read_text() + "\nfrom odimo.compiler import cli  # an upward import\n")
    result = _lint_imports(copy, ROOT / "pyproject.toml")
    assert result.returncode != 0
    assert "odimo.ir is not allowed to import odimo.compiler" in result.stdout
    assert "odimo.ir.errors -> odimo.compiler.cli" in result.stdout


def test_ir_imports_only_the_graph_models_dependencies() -> None:
    found = set()
    for path in (ROOT / "ir").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    third_party = {name for name in found if name not in sys.stdlib_module_names and name != "__future__"}
    assert third_party <= IR_DEPENDENCIES, third_party - IR_DEPENDENCIES


def test_ruff_check_and_format_are_clean() -> None:
    check = subprocess.run([sys.executable, "-m", "ruff", "check", "."], capture_output=True, text=True, cwd=ROOT)
    assert check.returncode == 0, check.stdout
    fmt = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "."], capture_output=True, text=True, cwd=ROOT
    )
    assert fmt.returncode == 0, fmt.stdout
