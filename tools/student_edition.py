"""The student edition of the book: the same chapters without the worked answers.

From the chapter notebooks in ``book/`` this writes, into ``_build/student/`` (``make student``):

* ``book/*.ipynb``: every ``{solution}`` block removed from the Markdown; every code cell that
  calls a self-check (``check_*`` from :mod:`igbook.exercises`) with the worked answer replaced
  by a cell for the student: the same imports, and one commented call per self-check, written
  as the exercise text writes it (``check_bernoulli_fisher(lambda p: ...)``), to fill in and run.
  Every other cell is unchanged, so the chapter still runs from top to bottom.
* the rest of a buildable book (``_config.yml``, ``_toc.yml``, the Markdown pages, ``_static``,
  the bibliography), so that ``make student-site`` builds the student website from it into
  ``_build/student-site/_build/html``: the same site without solution blocks, whose download
  buttons give the student notebooks.

Usage::

    python tools/student_edition.py [--out _build/student]
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHECK_CALL = re.compile(r"\b(?:[A-Za-z_]\w*\.)*(check_\w+)\s*\(")
SCAFFOLD_NOTE = (
    "# Self-checks: write your answer in place of the `...` (or of the names the exercise uses),\n"
    "# remove the `#` and run the cell; each check says what is right or wrong with your answer.\n"
)

__all__ = ["build", "check_names", "remove_solutions", "student_notebook"]


def _src(cell: dict[str, Any]) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def remove_solutions(markdown: str) -> str:
    """``markdown`` without its ``{solution}`` directives (backtick or colon fences of any length)."""
    out, lines, i = [], markdown.split("\n"), 0
    while i < len(lines):
        m = re.match(r"^(\s*)(`{3,}|:{3,})\{solution\}", lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        fence = m.group(2)
        j = i + 1
        while j < len(lines) and not re.match(rf"^\s*{re.escape(fence)}\s*$", lines[j]):
            j += 1
        i = j + 1  # past the closing fence (or the end, for an unclosed block)
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(out))
    return text.strip("\n") + ("\n" if markdown.endswith("\n") else "")


def check_names(code: str) -> list[str]:
    """Names of the self-checks that ``code`` calls, in order of first call."""
    return list(
        dict.fromkeys(
            m.group(1)
            for m in CHECK_CALL.finditer(code)
            if not code[: m.start()].rstrip().endswith("def")
        )
    )


def _templates(markdown: str) -> dict[str, str]:
    """Calls written in the exercise text: ``check_x(lambda p: ...)`` -> {"check_x": "check_x(lambda p: ...)"}."""
    out: dict[str, str] = {}
    for span in re.findall(r"`([^`\n]+)`", markdown):
        m = re.search(r"(?:[A-Za-z_]\w*\.)*(check_\w+)\s*\(.*\)\s*$", span)
        if m and m.group(1) not in out:
            try:
                ast.parse(span[m.start(1) :])
            except SyntaxError:
                continue
            out[m.group(1)] = span[m.start(1) :]
    return out


def _signature_call(chapter: str | None, name: str) -> str:
    """``name(arg, ..., kw=default)`` from the self-check's signature in ``igbook.exercises.<chapter>``."""
    import importlib
    import inspect

    try:
        fn = getattr(importlib.import_module(f"igbook.exercises.{chapter}"), name)
        params = inspect.signature(fn).parameters.values()
    except (ImportError, AttributeError, TypeError, ValueError):
        return f"{name}(...)"
    args = [
        p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
        for p in params
    ]
    return f"{name}({', '.join(args)})"


def _scaffold(
    code: str, names: list[str], templates: dict[str, str], chapter: str | None = None
) -> str:
    """The student's cell: the cell's imports and one commented call per self-check."""
    imports: list[str] = []
    try:
        tree = ast.parse(code)
        lines = code.splitlines()
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                imports.append("\n".join(lines[node.lineno - 1 : node.end_lineno]))
    except SyntaxError:
        pass
    prefix = {}
    for m in CHECK_CALL.finditer(code):
        full = m.group(0)[:-1].rstrip()
        prefix.setdefault(m.group(1), full[: -len(m.group(1))])
    calls = []
    for name in names:
        call = templates.get(name) or _signature_call(chapter, name)
        calls.append(f"# print({prefix.get(name, '')}{call})")
    parts = [SCAFFOLD_NOTE.rstrip("\n")]
    if imports:
        parts.append("\n".join(imports))
    parts.append("\n".join(calls))
    return "\n\n".join(parts)


def student_notebook(nb: dict[str, Any], chapter: str | None = None) -> dict[str, Any]:
    """A copy of notebook ``nb`` (chapter ``chapter``) without solutions and worked self-check answers."""
    nb = json.loads(json.dumps(nb))
    markdown = "\n".join(_src(c) for c in nb["cells"] if c["cell_type"] == "markdown")
    templates = _templates(markdown)
    cells = []
    for cell in nb["cells"]:
        src = _src(cell)
        if cell["cell_type"] == "markdown" and "{solution}" in src:
            src = remove_solutions(src)
            if not src.strip():
                continue
            cell["source"] = src.splitlines(keepends=True)
        elif cell["cell_type"] == "code" and (names := check_names(src)):
            cell["source"] = _scaffold(src, names, templates, chapter).splitlines(keepends=True)
            cell["outputs"], cell["execution_count"] = [], None
        cells.append(cell)
    nb["cells"] = cells
    return nb


def _toc_notebooks(root: Path) -> list[Path]:
    sys.path.insert(0, str(root / "tools"))
    from igbook_site import _toc_files

    return [
        (root / f).with_suffix(".ipynb")
        for f in _toc_files()
        if (root / f).with_suffix(".ipynb").exists()
    ]


def build(out: Path, root: Path = ROOT) -> list[Path]:
    """Write the student edition into ``out``; returns the notebooks written."""
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    book = out / "book"
    if book.exists():
        shutil.rmtree(book)
    shutil.copytree(
        root / "book",
        book,
        ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints", "_build"),
    )
    written = []
    for path in _toc_notebooks(root):
        nb = student_notebook(json.loads(path.read_text()), path.stem)
        dest = book / path.name
        dest.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        written.append(dest)
    shutil.copy2(root / "_toc.yml", out / "_toc.yml")
    cfg = yaml.safe_load((root / "_config.yml").read_text())
    cfg["title"] = f"{cfg.get('title', '')} (student edition)".strip()
    cfg["sphinx"]["local_extensions"] = {"igbook_site": str((root / "tools").resolve())}
    (out / "_config.yml").write_text(
        "# Generated by tools/student_edition.py from ../../_config.yml: edit that file, not this one.\n"
        + yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True, width=100)
    )
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Write the student edition (no solutions, self-checks kept)."
    )
    ap.add_argument("--out", type=Path, default=ROOT / "_build" / "student")
    args = ap.parse_args(argv)
    written = build(args.out)
    print(
        f"{len(written)} student notebooks in {args.out / 'book'}; "
        f"`make student-site` builds the website from {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
