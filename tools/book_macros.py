"""The book's TeX macros: one definition, used by the website and by the notebooks in JupyterLab.

The single source is ``_config.yml`` (``sphinx.config.mathjax3_config.tex.macros``), which the
website's MathJax reads. JupyterLab renders Markdown cells with jupyterlab-myst, which reads
macros from the notebook's *frontmatter*: a YAML block (``---`` ... ``---``) at the top of the
first Markdown cell, key ``math`` (a map from ``\\name`` to its expansion; KaTeX infers the number
of arguments from the ``#1``, ``#2`` in the expansion). This tool writes that frontmatter as a
cell of its own at the top of every chapter notebook, tagged ``remove-cell`` so that the website
(MyST-NB, which does not read frontmatter inside notebooks and would show the YAML as text)
leaves it out. Never edit the cell by hand: edit ``_config.yml`` and run

    .venv/bin/python tools/book_macros.py          # rewrite the frontmatter cells
    .venv/bin/python tools/book_macros.py --check  # exit 1 if a notebook is out of date

``tests/test_book_structure.py`` fails when a notebook's macros differ from ``_config.yml``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "_config.yml"
CELL_ID = "igbook-tex-macros"
TAG = "remove-cell"
NOTE = "  # written by tools/book_macros.py from _config.yml (mathjax3_config.tex.macros): edit there, not here\n"

__all__ = ["CELL_ID", "frontmatter_cell", "load_macros", "myst_math", "notebook_macros", "sync"]


def load_macros(config: Path = CONFIG) -> dict[str, tuple[str, int]]:
    """``{name: (expansion, number of arguments)}`` from ``_config.yml`` (MathJax 3's format)."""
    import yaml

    cfg = yaml.safe_load(config.read_text())
    raw = cfg["sphinx"]["config"]["mathjax3_config"]["tex"]["macros"]
    out: dict[str, tuple[str, int]] = {}
    for name, value in raw.items():
        if isinstance(value, str):
            out[str(name)] = (value, 0)
        elif (
            isinstance(value, list)
            and len(value) == 2
            and isinstance(value[0], str)
            and isinstance(value[1], int)
        ):
            out[str(name)] = (value[0], value[1])
        else:
            raise ValueError(
                f"macro {name!r} in {config.name}: expected a string or [expansion, n_args], got {value!r}"
            )
        used = {int(k) for k in re.findall(r"#(\d)", out[str(name)][0])}
        if used and max(used) != out[str(name)][1]:
            raise ValueError(
                f"macro {name!r}: declares {out[str(name)][1]} arguments but uses #{max(used)}"
            )
    return out


def myst_math(macros: dict[str, tuple[str, int]]) -> dict[str, str]:
    """The frontmatter ``math`` map of jupyterlab-myst: ``{"\\\\name": expansion}``."""
    return {f"\\{name}": body for name, (body, _) in macros.items()}


def frontmatter_cell(macros: dict[str, tuple[str, int]]) -> dict[str, Any]:
    """The Markdown cell that carries the macros (YAML frontmatter only, removed from the site)."""
    import yaml

    body = yaml.safe_dump(
        {"math": myst_math(macros)},
        sort_keys=False,
        allow_unicode=True,
        width=10_000,
        default_style="'",
    )
    body = body.replace("'math':", "math:", 1)
    lines = body.splitlines(keepends=True)
    source = "---\n" + lines[0] + NOTE + "".join(lines[1:]) + "---\n"
    return {
        "cell_type": "markdown",
        "id": CELL_ID,
        "metadata": {"tags": [TAG]},
        "source": source.splitlines(keepends=True),
    }


def _source(cell: dict[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def notebook_macros(nb: dict[str, Any]) -> dict[str, str] | None:
    """The ``math`` frontmatter that jupyterlab-myst reads from a notebook (first Markdown cell), or None."""
    import yaml

    first = next((c for c in nb["cells"] if c["cell_type"] == "markdown"), None)
    if first is None:
        return None
    m = re.match(r"\A---\n(.*?)\n---\s*(\n|\Z)", _source(first), re.DOTALL)
    if not m:
        return None
    data = yaml.safe_load(m.group(1)) or {}
    return data.get("math") if isinstance(data, dict) else None


def sync(paths: list[Path], *, check: bool = False, config: Path = CONFIG) -> list[Path]:
    """Write (or with ``check``, only compare) the frontmatter cell of each notebook; returns the stale ones."""
    cell = frontmatter_cell(load_macros(config))
    stale = []
    for path in paths:
        text = path.read_text()
        nb = json.loads(text)
        cells = nb["cells"]
        has = bool(cells) and cells[0].get("id") == CELL_ID
        if (
            has
            and cells[0]["source"] == cell["source"]
            and cells[0].get("metadata") == cell["metadata"]
        ):
            continue
        stale.append(path)
        if check:
            continue
        if has:
            cells[0] = dict(cell)
        else:
            cells.insert(0, dict(cell))
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return stale


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: book/*.ipynb")
    ap.add_argument(
        "--check",
        action="store_true",
        help="only report notebooks whose macros differ from _config.yml",
    )
    args = ap.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "book").glob("*.ipynb"))
    stale = sync(paths, check=args.check)
    for p in stale:
        print(
            f"{'out of date' if args.check else 'updated'}: {p.relative_to(ROOT) if p.is_relative_to(ROOT) else p}"
        )
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
