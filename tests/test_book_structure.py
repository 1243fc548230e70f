"""Structural tests of the book: the table of contents, the notebooks, citations, exercises."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
TOC = ROOT / "_toc.yml"


def toc_files() -> list[str]:
    import yaml

    toc = yaml.safe_load(TOC.read_text())
    out = [toc["root"]]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "file" in node:
                out.append(node["file"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(toc.get("parts", toc.get("chapters", [])))
    return out


NOTEBOOKS = sorted(p for p in BOOK.glob("*.ipynb"))
PAGES = sorted(BOOK.glob("*.md"))


def _cells(nb: Path) -> list[dict]:
    return json.loads(nb.read_text())["cells"]


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def test_every_toc_entry_exists() -> None:
    for f in toc_files():
        assert (ROOT / f).with_suffix(".ipynb").exists() or (ROOT / f).with_suffix(
            ".md"
        ).exists(), f


def test_every_book_file_is_in_the_toc() -> None:
    listed = {str(Path(f)) for f in toc_files()}
    for p in NOTEBOOKS + PAGES:
        stem = str(p.relative_to(ROOT).with_suffix(""))
        assert stem in listed, f"{stem} is not in _toc.yml"


def test_there_are_chapters() -> None:
    assert len(NOTEBOOKS) >= 1


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stripped(nb: Path) -> None:
    data = json.loads(nb.read_text())
    for cell in data["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs", []) == [], f"{nb.name}: a code cell has outputs committed"
            assert cell.get("execution_count") is None, f"{nb.name}: execution_count committed"
    assert data["metadata"].get("kernelspec", {}).get("name") == "python3", (
        f"{nb.name}: kernelspec must be python3"
    )


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_contract(nb: Path) -> None:
    cells = _cells(nb)
    code = "\n".join(_source(c) for c in cells if c["cell_type"] == "code")
    text = "\n".join(_source(c) for c in cells if c["cell_type"] == "markdown")
    assert re.search(r"^\s*(import igbook|from igbook)", code, re.M), (
        f"{nb.name} must import igbook"
    )
    n_checks = len(re.findall(r"\bassert\b|assert_close|assert_allclose", code))
    assert n_checks >= 5, f"{nb.name} verifies too little ({n_checks} checks)"
    assert re.search(r"^# ", text, re.M), f"{nb.name} needs a title"
    assert re.search(r"\{prf:(theorem|proposition|lemma|definition)\}", text), (
        f"{nb.name} has no prf directive"
    )
    assert "{cite" in text, f"{nb.name} cites nothing"
    n_ex = len(re.findall(r"```\{exercise\}|:::\{exercise\}", text))
    n_sol = len(re.findall(r"```\{solution\}|:::\{solution\}", text))
    assert n_ex >= 3, f"{nb.name} has {n_ex} exercises, needs at least 3"
    assert n_sol >= n_ex, f"{nb.name} has {n_ex} exercises but {n_sol} solutions"
    assert "np.random.seed(" not in code or "default_rng" in code, "use seeded generators"
    # figures: at least one matplotlib figure
    assert "plt." in code or "fig" in code, f"{nb.name} draws nothing"


def _bib_keys() -> set[str]:
    bib = (BOOK / "references.bib").read_text()
    return set(re.findall(r"^@\w+\{([^,]+),", bib, re.M))


def test_bib_keys_unique() -> None:
    bib = (BOOK / "references.bib").read_text()
    keys = re.findall(r"^@\w+\{([^,]+),", bib, re.M)
    dupes = {k for k in keys if keys.count(k) > 1}
    assert not dupes, f"duplicate bibliography keys: {dupes}"


def test_every_citation_resolves() -> None:
    keys = _bib_keys()
    texts = [p.read_text() for p in PAGES]
    texts += ["\n".join(_source(c) for c in _cells(nb)) for nb in NOTEBOOKS]
    texts += [p.read_text() for p in (ROOT / "src" / "igbook").rglob("*.py")]
    cited: set[str] = set()
    for t in texts:
        for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", t) + re.findall(
            r":cite(?::\w+)?:`([^`]+)`", t
        ):
            cited.update(k.strip() for k in group.split(","))
    missing = cited - keys
    assert not missing, f"cited but not in book/references.bib: {sorted(missing)}"


_SEED_MENTION = re.compile(
    r"seed(?:'s)? (?:notes|slides|documents?)|seeds? 0\d\d|slides of seed|the seed's", re.I
)


def test_the_book_never_mentions_seed_documents() -> None:
    """Readers cannot see the seed documents: chapters and pages cite published sources instead."""
    for nb in NOTEBOOKS:
        for i, cell in enumerate(_cells(nb)):
            hit = _SEED_MENTION.search(_source(cell))
            assert hit is None, f"{nb.name}, cell {i}: mentions a seed document ({hit.group(0)!r})"
    for page in PAGES:
        hit = _SEED_MENTION.search(page.read_text())
        assert hit is None, f"{page.name}: mentions a seed document ({hit.group(0)!r})"


def test_optional_comparisons_say_when_they_are_skipped() -> None:
    """A cell that tolerates a missing package prints that the check was skipped, and why."""
    for nb in NOTEBOOKS:
        for i, cell in enumerate(_cells(nb)):
            src = _source(cell)
            if cell["cell_type"] == "code" and re.search(
                r"except (ImportError|ModuleNotFoundError)", src
            ):
                assert re.search(r"print\(\s*[fr]?[\"']skipped", src), (
                    f"{nb.name}, cell {i}: a silent skip"
                )


def test_footnotes_are_defined_in_the_cell_that_cites_them() -> None:
    """MyST and JupyterLab resolve a footnote only within one cell; labels are unique per notebook."""
    for nb in NOTEBOOKS:
        labels: list[str] = []
        for i, cell in enumerate(_cells(nb)):
            if cell["cell_type"] != "markdown":
                continue
            src = _source(cell)
            defined = re.findall(r"^\[\^([\w-]+)\]:", src, re.M)
            cited = set(
                re.findall(r"\[\^([\w-]+)\]", re.sub(r"^\[\^[\w-]+\]:", "", src, flags=re.M))
            )
            assert cited == set(defined), (
                f"{nb.name}, cell {i}: footnotes cited {cited}, defined {defined}"
            )
            labels += defined
        assert len(labels) == len(set(labels)), f"{nb.name}: duplicate footnote labels {labels}"


def test_notebook_macros_equal_the_single_source() -> None:
    """Every chapter carries the book's TeX macros for JupyterLab (jupyterlab-myst reads the
    ``math`` frontmatter of the first Markdown cell), equal to ``_config.yml``'s MathJax macros,
    and the website leaves that cell out (``remove-cell``). Fix: ``python tools/book_macros.py``."""
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    import book_macros

    expected = book_macros.myst_math(book_macros.load_macros())
    assert expected and "\\Fisher" in expected, "no macros read from _config.yml"
    for nb in NOTEBOOKS:
        data = json.loads(nb.read_text())
        assert book_macros.notebook_macros(data) == expected, (
            f"{nb.name}: macros differ from _config.yml (run tools/book_macros.py)"
        )
        first = data["cells"][0]
        assert first["cell_type"] == "markdown" and "remove-cell" in first["metadata"].get(
            "tags", []
        ), f"{nb.name}: the macros cell must be the first cell, tagged remove-cell"
        assert _source(first).startswith("---\n") and _source(first).rstrip().endswith("---"), (
            f"{nb.name}: the macros cell holds only frontmatter"
        )


def test_deployment_is_configured_once() -> None:
    """README's links come from _config.yml (tools/deployment.py); no CDN-loaded Live Code."""
    import sys

    import yaml

    sys.path.insert(0, str(ROOT / "tools"))
    import deployment

    dep = deployment.settings(environ={})
    assert not deployment.update_readme(dep, check=True), (
        "README.md's links disagree with _config.yml: run tools/deployment.py --readme"
    )
    assert dep.url in (ROOT / "README.md").read_text()
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["launch_buttons"].get("thebe") is False, (
        "Thebe loads from a CDN: the offline site keeps it off"
    )
    fork = deployment.settings(
        environ={"IGBOOK_REPOSITORY": "https://github.com/someone/fork.git", "IGBOOK_BRANCH": "dev"}
    )
    assert (
        fork.binder("book/kfac.ipynb")
        == "https://mybinder.org/v2/gh/someone/fork/dev?urlpath=lab/tree/book/kfac.ipynb"
    )
    for req in ("requirements.txt", "binder/requirements.txt"):
        assert re.search(r"^jupyterlab-myst\b", (ROOT / req).read_text(), re.M), (
            f"{req} does not install jupyterlab-myst"
        )


def test_student_edition(tmp_path: Path) -> None:
    """`make student`: no solution blocks, every self-check still called (for the student to fill
    in), no worked self-check answer left, every other cell unchanged, every exercise kept."""
    import ast
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    import student_edition

    written = student_edition.build(tmp_path)
    assert sorted(p.name for p in written) == sorted(
        p.name for p in NOTEBOOKS if p.stem in {Path(f).name for f in toc_files()}
    )
    for path in written:
        orig, student = _cells(BOOK / path.name), _cells(path)
        md = "\n".join(_source(c) for c in student if c["cell_type"] == "markdown")
        code = "\n".join(_source(c) for c in student if c["cell_type"] == "code")
        orig_md = "\n".join(_source(c) for c in orig if c["cell_type"] == "markdown")
        orig_code = [_source(c) for c in orig if c["cell_type"] == "code"]
        assert "{solution}" not in md, f"{path.name}: a solution block is left"
        assert md.count("{exercise}") == orig_md.count("{exercise}"), f"{path.name}: exercises lost"
        for name in student_edition.check_names("\n".join(orig_code)):
            assert re.search(rf"\b{name}\(", code), f"{path.name}: the self-check {name} is gone"
        answers = [s for s in orig_code if student_edition.check_names(s)]
        kept = [s for s in orig_code if not student_edition.check_names(s)]
        assert answers, f"{path.name}: no self-check cell found"
        assert [
            _source(c)
            for c in student
            if c["cell_type"] == "code" and not _source(c).startswith("# Self-checks")
        ] == kept
        for s in answers:
            assert s not in code, f"{path.name}: a worked self-check answer is left"
        for c in student:
            if c["cell_type"] == "code":
                ast.parse(_source(c))  # every cell still runs (the scaffold's calls are comments)
    assert (tmp_path / "_config.yml").exists() and (tmp_path / "_toc.yml").exists()


def test_api_page_documents_every_package() -> None:
    """Every public top-level module or subpackage of igbook has its section in book/api.md."""
    import pkgutil

    import igbook

    api = (BOOK / "api.md").read_text()
    names = [m.name for m in pkgutil.iter_modules(igbook.__path__) if not m.name.startswith("_")]
    assert "fisher" in names and "optim" in names
    missing = [n for n in names if f"## `igbook.{n}`" not in api]
    assert not missing, f"book/api.md has no section for igbook.{missing}"
