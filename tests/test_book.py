"""Tests of igbook.book: the chapters' preamble and the table helpers."""

from __future__ import annotations

from collections.abc import Iterator

import matplotlib as mpl
import pytest
import torch

from igbook.book import html_table, markdown_table, setup
from igbook.plotting import PALETTE


@pytest.fixture
def restore() -> Iterator[None]:
    dtype, threads, rng = (
        torch.get_default_dtype(),
        torch.get_num_threads(),
        torch.random.get_rng_state(),
    )
    rc = mpl.rcParams.copy()
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)
        torch.random.set_rng_state(rng)
        mpl.rcParams.update(rc)


def test_setup_sets_dtype_threads_seed_and_style(restore: None) -> None:
    mpl.rcParams["axes.spines.top"] = True
    setup(threads=1, seed=3)
    assert torch.get_default_dtype() == torch.float64
    assert torch.get_num_threads() == 1
    assert torch.tensor(0.5).dtype == torch.float64
    drawn = torch.rand(3)
    torch.manual_seed(3)
    torch.testing.assert_close(drawn, torch.rand(3), rtol=0, atol=0)
    assert mpl.rcParams["axes.spines.top"] is False
    assert [c.lower() for c in mpl.rcParams["axes.prop_cycle"].by_key()["color"]] == [
        c.lower() for c in PALETTE
    ]


def test_setup_leaves_alone_what_it_is_not_asked_to_change(restore: None) -> None:
    torch.set_num_threads(2)
    mpl.rcParams["axes.spines.top"] = True
    torch.manual_seed(7)
    expected = torch.rand(2)
    torch.manual_seed(7)
    setup(dtype=torch.float32, threads=None, style=False)
    assert torch.get_default_dtype() == torch.float32
    assert torch.get_num_threads() == 2
    assert mpl.rcParams["axes.spines.top"] is True
    torch.testing.assert_close(torch.rand(2), expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"dtype": torch.int64}, TypeError, "dtype"),
        ({"dtype": "float64"}, TypeError, "dtype"),
        ({"threads": 0}, ValueError, "threads"),
        ({"threads": 1.0}, TypeError, "threads"),
        ({"seed": -1}, ValueError, "seed"),
        ({"style": "yes"}, TypeError, "style"),
    ],
)
def test_setup_rejects_bad_input_and_changes_nothing(
    restore: None, kwargs: dict, exc: type, match: str
) -> None:
    dtype = torch.get_default_dtype()
    with pytest.raises(exc, match=match):
        setup(**kwargs)
    assert torch.get_default_dtype() == dtype


def test_tables() -> None:
    assert markdown_table(["a", "b"], [[1, 2]]) == "| a | b |\n|---|---|\n| 1 | 2 |"
    assert markdown_table(["a"], []) == "| a |\n|---|"
    h = html_table(["a", "b<"], [[1, "x&y"]], caption="c")
    assert h == (
        '<table class="igbook-table igbook-output-table"><caption>c</caption><thead><tr><th>a</th>'
        "<th>b&lt;</th></tr></thead><tbody><tr><td>1</td><td>x&amp;y</td></tr></tbody></table>"
    )
    for table in (html_table, markdown_table):
        with pytest.raises(ValueError, match=r"rows\[1\].*one entry per header"):
            table(["a"], [[1], [1, 2]])
        with pytest.raises(ValueError, match="header"):
            table([], [])
