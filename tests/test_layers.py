"""The import layers of issue 16, checked statically.

    pie_bench.core                                   imports nothing else of the project
    editors | metrics | pie_bench.datasets           each imports only pie_bench.core (independent of each other)
    pie_bench.training                               core, editors, datasets, metrics
    pie_bench.run                                    core, editors, metrics, datasets
    pie_bench.report | cli                           anything below
    pie_bench/__init__.py                            imports nothing at all

``benchmarks/`` and ``tests/`` sit outside the package and may import anything, so they are not scanned;
the package, in turn, may not import them (they are not installed).

Every ``.py`` under pie_bench/, editors/, metrics/ and cli.py is parsed with ``ast`` and every import is
collected, function-level ones included, relative ones resolved against the importing package, plus
``importlib.import_module("...")`` / ``__import__("...")`` calls with a literal name (those load a module
as surely as an import statement). Plain strings, such as the registries' ``"module:Class"`` entries, are
not imports: the registries resolve them lazily, at the user's request, so they do not tie layers together.

An ``ast`` walk rather than grimp / import-linter: it needs no extra dependency, imports nothing (so a
broken or slow module cannot hide a violation), and sees imports inside functions, which is where this
code base defers its heavy ones.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("pie_bench", "editors", "metrics", "cli.py")
PROJECT_TOPS = {"pie_bench", "editors", "metrics", "cli", "benchmarks", "tests"}

# unit -> units it may import (itself always allowed). "pie_bench" is the root package: empty, so any
# unit may name it (``import pie_bench.x`` loads it), but it may import nothing.
LOWER = {"pie_bench.core"}
MIDDLE = {"pie_bench.datasets", "editors", "metrics"}
ALLOWED = {
    "pie_bench": set(),
    "pie_bench.core": set(),
    "pie_bench.datasets": LOWER,
    "editors": LOWER,
    "metrics": LOWER,
    "pie_bench.training": LOWER | MIDDLE,
    "pie_bench.run": LOWER | MIDDLE,
    "pie_bench.report": LOWER | MIDDLE | {"pie_bench.run", "pie_bench.training"},
    "cli": LOWER | MIDDLE | {"pie_bench.run", "pie_bench.training", "pie_bench.report"},
}
SUBPACKAGE_UNITS = sorted((u for u in ALLOWED if u.startswith("pie_bench.")), key=len, reverse=True)


@dataclass(frozen=True)
class Import:
    file: str  # relative to the repository root
    line: int
    source: str  # the importing module
    target: str  # the imported module (project modules only)
    text: str  # the statement as written, for the message

    def where(self) -> str:
        return f"{self.file}:{self.line}"


def unit_of(module: str) -> str | None:
    """The layer a dotted module name belongs to, or None for modules outside every layer."""
    top = module.split(".")[0]
    if top in ("editors", "metrics", "cli", "benchmarks", "tests"):
        return top
    if top != "pie_bench":
        return None
    for unit in SUBPACKAGE_UNITS:
        if module == unit or module.startswith(unit + "."):
            return unit
    return "pie_bench" if module == "pie_bench" else None


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def scanned_files() -> list[Path]:
    files = []
    for entry in SCANNED:
        p = ROOT / entry
        files += [p] if p.is_file() else sorted(p.rglob("*.py"))
    return files


def _known_modules() -> set[str]:
    return {module_name(p) for p in scanned_files()} | {
        module_name(p) for p in (ROOT / "benchmarks").rglob("*.py")}


def _resolve_relative(module: str | None, level: int, source: str, is_package: bool) -> str:
    base = source.split(".") if is_package else source.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _literal_import_call(node: ast.Call) -> str | None:
    """The module named by ``importlib.import_module("x")``, ``import_module("x")`` or ``__import__("x")``."""
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
    if name not in ("import_module", "__import__") or not node.args:
        return None
    arg = node.args[0]
    return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None


def imports_of(path: Path, known: set[str], root: Path = ROOT) -> list[Import]:
    """Every project import in one file, at any depth of the syntax tree; ``known`` holds the project's
    module names (so ``from pkg import name`` can tell a submodule from an attribute)."""
    source = module_name(path, root)
    is_package = path.name == "__init__.py"
    rel = str(path.relative_to(root))
    text = path.read_text(encoding="utf-8")
    found = []

    def add(node, target, statement):
        if target.split(".")[0] in PROJECT_TOPS:
            found.append(Import(rel, node.lineno, source, target, statement))

    for node in ast.walk(ast.parse(text, filename=rel)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(node, alias.name, f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = _resolve_relative(node.module, node.level, source, is_package)
            if base == "__future__":
                continue
            for alias in node.names:
                # ``from pkg import sub`` imports the submodule pkg.sub when there is one
                sub = f"{base}.{alias.name}" if base else alias.name
                target = sub if sub in known else base
                add(node, target, f"from {'.' * node.level}{node.module or ''} import {alias.name}")
        elif isinstance(node, ast.Call):
            name = _literal_import_call(node)
            if name:
                if name.startswith("."):
                    level = len(name) - len(name.lstrip("."))
                    name = _resolve_relative(name.lstrip(".") or None, level, source, is_package)
                add(node, name, ast.get_source_segment(text, node) or name)
    return sorted(found, key=lambda i: (i.file, i.line, i.target))


def all_imports() -> list[Import]:
    known = _known_modules()
    return [imp for p in scanned_files() for imp in imports_of(p, known)]


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one node (Tarjan), as a closed path."""
    index, low, stack, on_stack, sccs = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for comp in sccs:  # a shortest cycle through the component's first node, by breadth-first search
        start = min(comp)
        paths, seen = [[start]], {start}
        while paths:
            path = paths.pop(0)
            nxt = sorted(w for w in graph[path[-1]] if w in comp)
            if start in nxt:
                cycles.append(path + [start])
                break
            for w in nxt:
                if w not in seen:
                    seen.add(w)
                    paths.append(path + [w])
    return cycles


# ---------------------------------------------------------------------------------------------


def test_every_scanned_module_has_a_layer():
    orphans = [module_name(p) for p in scanned_files() if unit_of(module_name(p)) not in ALLOWED]
    assert not orphans, ("modules outside every layer; put them in a unit or add the unit to ALLOWED in "
                         f"tests/test_layers.py: {orphans}")


def test_root_package_imports_nothing():
    tree = ast.parse((ROOT / "pie_bench" / "__init__.py").read_text(encoding="utf-8"))
    stmts = [f"pie_bench/__init__.py:{n.lineno}" for n in ast.walk(tree)
             if isinstance(n, (ast.Import, ast.ImportFrom)) and getattr(n, "module", None) != "__future__"]
    assert not stmts, ("pie_bench/__init__.py must import nothing (``import pie_bench.core`` would load it, "
                       f"and with it every layer it pulls in): {stmts}")


def test_imports_follow_the_layers():
    bad = defaultdict(list)
    for imp in all_imports():
        src, dst = unit_of(imp.source), unit_of(imp.target)
        if dst is None and imp.target.startswith("pie_bench."):
            dst = f"<no layer: {imp.target}>"
        if src == dst or (dst == "pie_bench" and src != "pie_bench"):
            continue
        if dst not in ALLOWED.get(src, set()):
            bad[(src, dst)].append(imp)
    if not bad:
        return
    lines = []
    for (src, dst), imps in sorted(bad.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        allowed = ", ".join(sorted(ALLOWED.get(src, ()))) or "nothing else of the project"
        lines.append(f"{src} -> {dst}  ({src} may import: {allowed})")
        lines += [f"    {imp.where()}: {imp.text}" for imp in imps]
    raise AssertionError(
        f"{sum(map(len, bad.values()))} imports break the layers of issue 16 (tests/test_layers.py). Move the "
        "imported code down to a layer both sides may use (often pie_bench.core), or pass it in from above:\n"
        + "\n".join(lines))


def test_no_cycle_between_units():
    graph = defaultdict(set)
    witness = {}
    for imp in all_imports():
        src, dst = unit_of(imp.source), unit_of(imp.target)
        if src and dst and src != dst:
            graph[src].add(dst)
            witness.setdefault((src, dst), imp)
    cycles = find_cycles(graph)
    if not cycles:
        return
    lines = []
    for cyc in cycles:
        lines.append(" -> ".join(cyc))
        for a, b in zip(cyc, cyc[1:]):
            w = witness[(a, b)]
            lines.append(f"    {a} -> {b}: {w.where()}: {w.text}")
    raise AssertionError("import cycles between units (one import per edge shown; "
                         "test_imports_follow_the_layers lists them all):\n" + "\n".join(lines))


def test_the_checker_sees_what_it_must():
    """Self-test on a synthetic file: function-level, relative and import_module imports count;
    registry strings do not."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pkg = root / "editors" / "sub"
        pkg.mkdir(parents=True)
        (pkg / "m.py").write_text(
            "import importlib\n"
            "from . import n\n"
            "from .. import registry\n"
            "REG = {'x': 'metrics.pixel:PSNR'}\n"
            "def f():\n"
            "    from pie_bench.datasets.pie import load_dataset\n"
            "    importlib.import_module('metrics.ssim')\n")
        known = {"editors", "editors.sub", "editors.sub.m", "editors.sub.n", "editors.registry"}
        got = {(i.line, i.target) for i in imports_of(pkg / "m.py", known, root)}
    assert got == {(2, "editors.sub.n"), (3, "editors.registry"), (6, "pie_bench.datasets.pie"),
                   (7, "metrics.ssim")}
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
