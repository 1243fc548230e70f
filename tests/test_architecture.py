"""The layering of ARCHITECTURE.md, checked against the real imports of ``src/igbook``.

Every ``import``/``from ... import`` of every module (module level and inside functions,
relative imports resolved) is read with :mod:`ast`; nothing is imported. Checks:

(a) the graph between igbook's top-level modules and subpackages has no cycle;
(b) every edge is allowed by the "depends on" column of the modules table in ARCHITECTURE.md
    (transitively: a module may import what it lists and what those list), and the table has
    one row per module of the package;
(c) no private name (leading underscore) is imported from another module (the private modules
    ``igbook._validation``, ``igbook._safety`` and ``igbook._distributed`` may be; a private submodule such as
    ``igbook.live._core`` only from inside its own subpackage);
(d) matplotlib is imported only by the presentation layer;
(e) no module is longer than 700 lines;
(f) ``igbook.experiments`` and ``igbook.book`` are imported by no other igbook module.

Work in flight is listed in ``KNOWN_VIOLATIONS`` with a reason; an entry that no longer occurs
fails the test too, so the list only shrinks. ``python tests/test_architecture.py`` prints the
graph and every finding.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "igbook"
ARCHITECTURE = ROOT / "ARCHITECTURE.md"

#: hard limit of the developer guide (aim for ~600)
MAX_LINES = 700
#: the only igbook modules that may import matplotlib (or its ``cycler``/``mpl_toolkits``)
MATPLOTLIB_ALLOWED = frozenset({"plotting", "widgets", "live", "book"})
PLOTTING_LIBRARIES = frozenset({"matplotlib", "mpl_toolkits", "cycler"})
#: private modules that any igbook module may import
SHARED_PRIVATE_MODULES = frozenset({"igbook._validation", "igbook._safety", "igbook._distributed"})
#: imported only by chapters, tests and benchmarks
TOP_ONLY = frozenset({"experiments", "book"})

#: Violations that work in flight (issue 13) will remove. Keys name the finding exactly as the
#: checks below spell it; the value is the reason / target. The test fails on a violation not
#: listed here *and* on an entry here that no longer occurs: delete it when the work lands.
KNOWN_VIOLATIONS: dict[str, str] = {
    # e.g. "edge kfac -> data": "kfac.experiments moves to igbook.experiments",
    #      "size igbook/families.py": "split into igbook/families/",
    #      "private igbook.optim.mesu imports igbook.optim.bgd._check_pos": "moves to _validation",
}


# --------------------------------------------------------------------------- reading the code
@dataclass(frozen=True)
class Import:
    """One imported thing: ``target`` is a dotted module, ``name`` an attribute of it (or None)."""

    source: str  # dotted module that imports
    target: str  # dotted module imported from
    name: str | None  # for ``from target import name``
    line: int

    @property
    def where(self) -> str:
        return f"{module_path(self.source)}:{self.line}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def module_path(name: str) -> str:
    """``igbook.fisher.models`` -> ``src/igbook/fisher/models.py`` (for messages)."""
    base = SRC.joinpath(*name.split("."))
    path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
    return str(path.relative_to(ROOT))


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_module(dotted: str) -> bool:
    return dotted in modules()


def top_level(dotted: str) -> str | None:
    """``igbook.fisher.models`` -> ``fisher``; ``None`` for the package root or non-igbook."""
    parts = dotted.split(".")
    if parts[0] != "igbook" or len(parts) < 2:
        return None
    return parts[1]


def _imports_of(name: str, path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(name, alias.name, None, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                # ``from igbook import mixtures``: the module igbook.mixtures itself
                sub = f"{target}.{alias.name}"
                if alias.name != "*" and is_module(sub):
                    yield Import(name, sub, None, node.lineno)
                else:
                    yield Import(name, target, alias.name, node.lineno)


@cache
def all_imports() -> tuple[Import, ...]:
    return tuple(imp for name, path in modules().items() for imp in _imports_of(name, path))


def import_graph() -> dict[str, dict[str, list[Import]]]:
    """Top-level module -> top-level module it imports -> the import statements."""
    graph: dict[str, dict[str, list[Import]]] = {}
    for imp in all_imports():
        src, dst = top_level(imp.source), top_level(imp.target)
        if src is None or dst is None or src == dst:
            continue
        graph.setdefault(src, {}).setdefault(dst, []).append(imp)
    return graph


def package_modules() -> set[str]:
    """The top-level modules and subpackages of igbook (``fisher``, ``_validation``, ...)."""
    return {t for name in modules() if (t := top_level(name)) is not None}


# --------------------------------------------------------------------------- reading the table
@cache
def architecture_table() -> dict[str, set[str]]:
    """The modules table of ARCHITECTURE.md: module -> igbook modules it may import directly."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    rows: dict[str, set[str]] = {}
    in_table = False
    for line in text.splitlines():
        if line.startswith("| module | holds | depends on |"):
            in_table = True
            continue
        if not in_table:
            continue
        if not line.startswith("|"):
            break
        if set(line) <= set("|- "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3:
            raise AssertionError(f"ARCHITECTURE.md: a modules-table row needs 3 cells: {line!r}")
        mod = re.fullmatch(r"`([A-Za-z_][A-Za-z0-9_]*)`", cells[0])
        if mod is None:
            raise AssertionError(
                f"ARCHITECTURE.md: the first cell must be one top-level module in backticks: {cells[0]!r}"
            )
        if mod.group(1) in rows:
            raise AssertionError(f"ARCHITECTURE.md: module {mod.group(1)!r} has two rows")
        deps = set(re.findall(r"`([^`]+)`", cells[2]))
        rows[mod.group(1)] = deps
    if not rows:
        raise AssertionError(
            "ARCHITECTURE.md: no modules table (header '| module | holds | depends on |')"
        )
    for mod, deps in rows.items():
        unknown = sorted(deps - set(rows))
        if unknown:
            raise AssertionError(
                f"ARCHITECTURE.md: {mod!r} depends on {unknown}, which have no row; write igbook "
                "modules as top-level names in backticks and third-party libraries without backticks"
            )
    return rows


def allowed_dependencies() -> dict[str, set[str]]:
    """Transitive closure of the table: everything each module may import."""
    table = architecture_table()
    closure: dict[str, set[str]] = {}
    for mod in table:
        seen: set[str] = set()
        stack = list(table[mod])
        while stack:
            d = stack.pop()
            if d not in seen:
                seen.add(d)
                stack.extend(table.get(d, ()))
        closure[mod] = seen
    return closure


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (or a self-loop), Tarjan."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            visit(v)
    return out


# --------------------------------------------------------------------------- the findings
def edge_findings() -> dict[str, str]:
    allowed = allowed_dependencies()
    found = {}
    for src, targets in sorted(import_graph().items()):
        for dst, imps in sorted(targets.items()):
            if dst not in allowed.get(src, set()):
                found[f"edge {src} -> {dst}"] = ", ".join(i.where for i in imps)
    return found


def table_findings() -> dict[str, str]:
    table, code = set(architecture_table()), package_modules()
    found = {
        f"missing {m}": "a module of the package with no row in the table"
        for m in sorted(code - table)
    }
    found.update(
        {
            f"planned {m}": "a table row for a module the package does not have"
            for m in sorted(table - code)
        }
    )
    return found


def private_findings() -> dict[str, str]:
    found = {}
    for imp in all_imports():
        if top_level(imp.target) is None:
            continue
        # a private *module* on the path, other than the shared ones, from outside its package
        parts = imp.target.split(".")
        for i in range(1, len(parts)):
            prefix = ".".join(parts[: i + 1])
            if parts[i].startswith("_") and prefix not in SHARED_PRIVATE_MODULES:
                owner = ".".join(parts[:i])
                if owner == "igbook" or not (
                    imp.source == owner or imp.source.startswith(owner + ".")
                ):
                    found[f"private {imp.source} imports {prefix}"] = imp.where
                break
        if imp.name is not None and imp.name.startswith("_") and not imp.name.startswith("__"):
            found[f"private {imp.source} imports {imp.target}.{imp.name}"] = imp.where
    return found


def matplotlib_findings() -> dict[str, str]:
    found = {}
    for imp in all_imports():
        lib = imp.target.split(".")[0]
        if lib in PLOTTING_LIBRARIES and top_level(imp.source) not in MATPLOTLIB_ALLOWED:
            found[f"matplotlib {imp.source}"] = imp.where
    return found


def size_findings() -> dict[str, str]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES:
            found[f"size {path.relative_to(SRC).as_posix()}"] = f"{n} lines"
    return found


def top_only_findings() -> dict[str, str]:
    found = {}
    for imp in all_imports():
        dst, src = top_level(imp.target), top_level(imp.source)
        if dst in TOP_ONLY and src != dst:
            found[f"imports-top {imp.source} -> igbook.{dst}"] = imp.where
    return found


CHECKS = {
    "edge": edge_findings,
    "planned": table_findings,
    "missing": table_findings,
    "private": private_findings,
    "matplotlib": matplotlib_findings,
    "size": size_findings,
    "imports-top": top_only_findings,
}


def report(found: dict[str, str], kinds: tuple[str, ...]) -> str:
    """Readable list of new findings and stale KNOWN_VIOLATIONS entries ('' if none)."""
    known = {k: v for k, v in KNOWN_VIOLATIONS.items() if k.split(" ", 1)[0] in kinds}
    new = sorted(set(found) - set(known))
    stale = sorted(set(known) - set(found))
    lines = []
    if new:
        lines.append("violations (fix them, or list them in KNOWN_VIOLATIONS with a reason):")
        lines += [f"  {k}    [{found[k]}]" for k in new]
    if stale:
        lines.append("KNOWN_VIOLATIONS entries that no longer occur (delete them):")
        lines += [f"  {k}    ({known[k]})" for k in stale]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the tests
def test_the_package_is_read() -> None:
    """The scanner sees the package and its imports (a check that could pass on an empty tree)."""
    assert "igbook.fisher.models" in modules()
    assert "fisher" in import_graph().get("natgrad", {}), "natgrad's import of fisher was not seen"


def test_relative_imports_are_resolved(tmp_path: Path) -> None:
    pkg = tmp_path / "src" / "igbook" / "foo"
    pkg.mkdir(parents=True)
    code = "from . import bar\nfrom .bar import baz\nfrom ..fisher.models import x\n"
    (pkg / "mod.py").write_text(code)
    got = {(i.target, i.name) for i in _imports_of("igbook.foo.mod", pkg / "mod.py")}
    assert got == {("igbook.foo", "bar"), ("igbook.foo.bar", "baz"), ("igbook.fisher.models", "x")}


def test_table_parses_and_has_no_cycle() -> None:
    table = architecture_table()
    assert {"_validation", "fisher", "natgrad", "kfac", "exercises"} <= set(table)
    assert not table["_validation"], (
        "_validation is the bottom layer and depends on no igbook module"
    )
    bad = cycles(table)
    assert not bad, f"the table of ARCHITECTURE.md has dependency cycles: {bad}"


def test_intended_layering() -> None:
    """The table says what issue 13 intends: validation at the bottom, fisher as the curvature core."""
    allowed = allowed_dependencies()
    for consumer in ("natgrad", "kfac", "continual", "optim", "vi"):
        assert "fisher" in allowed[consumer], f"{consumer} should be allowed to consume fisher"
    for mod, deps in allowed.items():
        if mod not in ("_validation",):
            assert "_validation" in deps, f"{mod} cannot reach _validation through the table"
        assert not (deps & TOP_ONLY), f"{mod} may import {sorted(deps & TOP_ONLY)} per the table"
    assert "fisher" not in allowed["_safety"] and "fisher" not in allowed["families"]


def test_import_graph_has_no_cycle() -> None:
    graph = {k: set(v) for k, v in import_graph().items()}
    bad = cycles(graph)
    detail = "\n".join(
        f"  {' <-> '.join(c)}: "
        + "; ".join(
            f"{a}->{b} at {graph_where(a, b)}" for a in c for b in c if b in graph.get(a, ())
        )
        for c in bad
    )
    assert not bad, f"import cycles between igbook modules:\n{detail}"


def graph_where(a: str, b: str) -> str:
    return ", ".join(i.where for i in import_graph()[a][b])


def test_table_rows_match_the_package() -> None:
    msg = report(table_findings(), ("planned", "missing"))
    assert not msg, "\n" + msg


def test_every_edge_is_in_the_table() -> None:
    msg = report(edge_findings(), ("edge",))
    assert not msg, "\n" + msg


def test_no_private_names_across_modules() -> None:
    msg = report(private_findings(), ("private",))
    assert not msg, "\n" + msg


def test_matplotlib_only_in_the_presentation_layer() -> None:
    msg = report(matplotlib_findings(), ("matplotlib",))
    assert not msg, "\n" + msg


def test_module_sizes() -> None:
    msg = report(size_findings(), ("size",))
    assert not msg, "\n" + msg


def test_experiments_and_book_are_not_imported_by_the_library() -> None:
    msg = report(top_only_findings(), ("imports-top",))
    assert not msg, "\n" + msg


def test_known_violations_are_spelled_as_findings() -> None:
    kinds = {k.split(" ", 1)[0] for k in KNOWN_VIOLATIONS}
    assert kinds <= set(CHECKS), f"unknown kinds in KNOWN_VIOLATIONS: {sorted(kinds - set(CHECKS))}"
    assert all(v.strip() for v in KNOWN_VIOLATIONS.values()), "every known violation needs a reason"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (
            "from igbook.kfac.core import _private\n",
            {"private igbook.x.m imports igbook.kfac.core._private"},
        ),
        (
            "from igbook.live._core import LiveFigure\n",
            {"private igbook.x.m imports igbook.live._core"},
        ),
        ("from igbook._validation import check_scalar\n", set()),
        ("import igbook._safety\n", set()),
    ],
)
def test_private_check_detects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: str, expected: set[str]
) -> None:
    """The private-name check flags what it should on a synthetic module (it can fail)."""
    path = tmp_path / "m.py"
    path.write_text(code)
    imps = tuple(_imports_of("igbook.x.m", path))
    monkeypatch.setattr(sys.modules[__name__], "all_imports", lambda: imps)
    assert set(private_findings()) == expected


def test_checks_detect_synthetic_violations(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each check flags a planted violation (so a clean run means something)."""
    planted = (
        Import("igbook.fisher.x", "igbook.natgrad.core", "natural_gradient", 1),
        Import("igbook.fisher.x", "matplotlib.pyplot", None, 2),
        Import("igbook.kfac.x", "igbook.experiments.blr", None, 3),
        Import("igbook.kfac.x", "igbook.kfac.core", "_private", 4),
    )
    monkeypatch.setattr(sys.modules[__name__], "all_imports", lambda: planted)
    assert "edge fisher -> natgrad" in edge_findings()
    assert "edge kfac -> experiments" in edge_findings()
    assert set(matplotlib_findings()) == {"matplotlib igbook.fisher.x"}
    assert set(top_only_findings()) == {"imports-top igbook.kfac.x -> igbook.experiments"}
    assert set(private_findings()) == {"private igbook.kfac.x imports igbook.kfac.core._private"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"a"}}) == [["a"]]
    assert report({"edge x -> y": "f.py:1"}, ("edge",)).startswith("violations")


# --------------------------------------------------------------------------- script output
def main() -> int:
    print("igbook import graph (top-level module -> what it imports):")
    for src, targets in sorted(import_graph().items()):
        print(f"  {src:12s} -> {', '.join(sorted(targets))}")
    failed = False
    bad = cycles({k: set(v) for k, v in import_graph().items()})
    if bad:
        failed = True
        print("\nimport cycles:", bad)
    groups = [
        ("table rows", table_findings(), ("planned", "missing")),
        ("edges", edge_findings(), ("edge",)),
        ("private names", private_findings(), ("private",)),
        ("matplotlib", matplotlib_findings(), ("matplotlib",)),
        ("module sizes", size_findings(), ("size",)),
        ("experiments/book imported", top_only_findings(), ("imports-top",)),
    ]
    for title, found, kinds in groups:
        known = sorted(k for k in found if k in KNOWN_VIOLATIONS)
        msg = report(found, kinds)
        status = "FAIL" if msg else "ok"
        print(f"\n[{status}] {title}: {len(found)} found, {len(known)} of them known")
        for k in known:
            print(f"  known  {k}    [{found[k]}] -- {KNOWN_VIOLATIONS[k]}")
        if msg:
            failed = True
            print("  " + msg.replace("\n", "\n  "))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
