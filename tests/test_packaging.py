"""The wheel works: it is built from this tree (``pip wheel``, as CI does), holds every module and the data
the installed package reads (the ShapesEdit models of the default run, the smoke annotations, the report's
templates), declares every third-party import, and its ``pie-bench`` console script names itself so (usage
line and shell completion). ``.ci/run`` additionally installs the wheel in a fresh venv and runs a bench."""
from __future__ import annotations

import ast
import functools
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("pie_bench", "editors", "metrics")
# what pyproject.toml's package-data promises (relative to the repo), with the files that must be there
DATA_DIRS = ("pie_bench/models/shapes", "pie_bench/report/templates", "pie_bench/report/static",
             "pie_bench/report/reference_tables")
DATA_FILES = ("pie_bench/datasets/smoke/mapping_file.json", "pie_bench/datasets/shapes/README.md")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _repo_files(folder: str) -> set[str]:
    root = REPO / folder
    return {p.relative_to(REPO).as_posix() for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts} if root.is_dir() else set()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the packaging inputs, so no build/ or egg-info of the checkout leaks in."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "setup.cfg", "README.md", "LICENSE", "cli.py"):
        shutil.copy2(REPO / name, src / name)
    for name in PACKAGES:
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", "-w", str(tmp / "dist"), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (whl,) = (tmp / "dist").glob("pie_bench_harness-*.whl")
    return whl


def test_wheel_holds_modules_models_and_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for name in PACKAGES for p in (REPO / name).rglob("*.py")
               if "__pycache__" not in p.parts}
    assert modules - names == set(), "modules missing from the wheel (a folder without __init__.py?)"
    assert "cli.py" in names
    models = _repo_files("pie_bench/models/shapes")
    assert any(n.endswith(".safetensors") for n in models) and "pie_bench/models/shapes/manifest.json" in models
    for folder in DATA_DIRS:
        assert _repo_files(folder) - names == set(), f"{folder} is not all in the wheel"
    assert set(DATA_FILES) - names == set()
    assert not any(n.startswith(("tests/", "benchmarks/", "results/")) for n in names)
    dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    assert f"{dist_info}/licenses/LICENSE" in names
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(f"{dist_info}/METADATA").decode()
        scripts = z.read(f"{dist_info}/entry_points.txt").decode()
    assert "Requires-Python: >=3.11" in meta and "License-Expression: Apache-2.0" in meta
    assert re.search(r"^pie-bench = cli:main$", scripts, re.M)
    # ranges, not pins: an exact == makes the package uninstallable next to anything else
    assert not [r for r in re.findall(r"^Requires-Dist: ([^;]*)", meta, re.M) if "==" in r]


def _third_party_imports(path: Path) -> set[str]:
    """Top-level names imported by a file (``import x``, ``from x import``, ``__import__("x")``,
    ``importlib.import_module("x")``), except those guarded by ``except ImportError`` (optional)."""
    tree = ast.parse(path.read_text(), str(path))
    optional = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers):
            optional.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Name) and node.func.id == "__import__")
                   or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"))):
            found.add(node.args[0].value)
    own = set(PACKAGES) | {"cli"}
    return {m.split(".")[0] for m in found} - set(sys.stdlib_module_names) - own


def _declared(requirements: list[str]) -> set[str]:
    return {_norm(re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0]) for r in requirements}


_providers = functools.cache(packages_distributions)  # import name -> distributions, as installed


def _undeclared(files: list[Path], declared: set[str], local: set[str] = frozenset()) -> dict[str, list[str]]:
    providers = _providers()
    undeclared: dict[str, list[str]] = {}
    for path in files:
        for module in _third_party_imports(path) - local:
            dists = {_norm(d) for d in providers.get(module, [])}
            if not dists & declared:
                undeclared.setdefault(f"{module} ({', '.join(sorted(dists)) or 'not installed'})",
                                      []).append(path.relative_to(REPO).as_posix())
    return undeclared


def test_every_third_party_import_is_declared():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    files = [REPO / "cli.py"] + [p for name in PACKAGES for p in (REPO / name).rglob("*.py")
                                 if "__pycache__" not in p.parts]
    undeclared = _undeclared(files, _declared(project["dependencies"]))
    assert not undeclared, f"imported but not in pyproject.toml's dependencies: {undeclared}"


def test_every_test_import_is_declared_with_the_test_extra():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = _declared(project["dependencies"] + project["optional-dependencies"]["test"])
    files = [p for p in (REPO / "tests").rglob("*.py") if "__pycache__" not in p.parts]
    undeclared = _undeclared(files, declared, local={"tests", "benchmarks"})
    assert not undeclared, f"imported by tests but not in pyproject.toml's dependencies or test extra: {undeclared}"


def test_console_script_names_itself_and_completes(wheel, tmp_path):
    """The script pip writes for the wheel's entry point, run from an empty folder: the installed copy
    (not the checkout) answers, as ``pie-bench``, finds its bundled models, and prints a bash completion."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, timeout=300)
    script = target / "bin" / "pie-bench"
    assert script.is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("_PIE_BENCH_COMPLETE", None)

    def run(*args, **extra):
        return subprocess.run([sys.executable, str(script), *args], cwd=empty, env={**env, **extra},
                              capture_output=True, text=True, timeout=120)

    help_ = run("--help")
    assert help_.returncode == 0, help_.stderr
    assert help_.stdout.startswith("Usage: pie-bench [OPTIONS] COMMAND"), help_.stdout[:200]
    sub = run("bench", "--help")
    assert sub.stdout.startswith("Usage: pie-bench bench [OPTIONS]"), sub.stdout[:200]
    where = subprocess.run([sys.executable, "-c", "import cli, pie_bench.core.paths as p; "
                            "print(cli.__file__); print(p.shapes_models_dir('sd'))"],
                           cwd=empty, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    cli_file, models = where.stdout.split()
    assert Path(cli_file).is_relative_to(target) and Path(models).is_relative_to(target)
    completion = run(_PIE_BENCH_COMPLETE="bash_source")
    assert completion.returncode == 0, completion.stderr
    assert "complete -o nosort -F _pie_bench_completion pie-bench" in completion.stdout
    words = run(_PIE_BENCH_COMPLETE="bash_complete", COMP_WORDS="pie-bench be", COMP_CWORD="1")
    assert "plain,bench" in words.stdout.split()


def test_python_cli_py_keeps_its_name():
    proc = subprocess.run([sys.executable, "cli.py", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: cli.py [OPTIONS] COMMAND")
