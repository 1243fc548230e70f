"""Tests of igbook.experiments: the one network builder, the set-ups' validation, and the tuned
constants against what the benchmarks recorded in benchmarks/results/*.json."""

from __future__ import annotations

import json
import math
import pkgutil
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import igbook
import igbook.experiments
from igbook.experiments import blr, continual, kfac_autoencoder, kunstner
from igbook.experiments.models import mlp

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def _results(name: str) -> dict:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        pytest.skip(f"{path} not committed")
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------------
# mlp
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_mlp_is_pytorch_default_initialization_under_the_seed(activation: str) -> None:
    """Same numbers as nn.Linear layers built one after another after torch.manual_seed."""
    sizes = (5, 7, 6, 3)
    model = mlp(sizes, activation=activation, seed=11, dtype=torch.float64)
    kinds = [type(m) for m in model]
    act = nn.Tanh if activation == "tanh" else nn.ReLU
    assert kinds == [nn.Linear, act, nn.Linear, act, nn.Linear]
    torch.manual_seed(11)
    ref = [nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    for got, want in zip(model[::2], ref, strict=True):
        assert got.weight.dtype == torch.float64
        torch.testing.assert_close(got.weight, want.weight.double(), rtol=0, atol=0)
        torch.testing.assert_close(got.bias, want.bias.double(), rtol=0, atol=0)
        bound = 1 / math.sqrt(got.in_features)  # U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        assert (
            float(got.weight.detach().abs().max()) <= bound
            and float(got.bias.detach().abs().max()) <= bound
        )


def test_mlp_is_reproducible_and_leaves_the_global_generator_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    a = mlp((3, 4, 2), seed=5)
    b = mlp((3, 4, 2), seed=5)
    c = mlp((3, 4, 2), seed=6)
    torch.testing.assert_close(torch.rand(4), expected, rtol=0, atol=0)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    x = torch.randn(6, 3)
    assert mlp((3, 2), seed=0)(x).shape == (6, 2)  # no hidden layer: one affine map


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"sizes": (2,)}, ValueError, "sizes"),
        ({"sizes": (2, 0, 3)}, ValueError, r"sizes\[1\]"),
        ({"sizes": (2, 3.0)}, TypeError, r"sizes\[1\]"),
        ({"sizes": (2, True)}, TypeError, r"sizes\[1\]"),
        ({"sizes": (2, 3), "activation": "gelu"}, ValueError, "activation"),
        ({"sizes": (2, 3), "seed": -1}, ValueError, "seed"),
        ({"sizes": (2, 3), "seed": 1.5}, TypeError, "seed"),
    ],
)
def test_mlp_rejects_bad_input(kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        mlp(**kwargs)


# ---------------------------------------------------------------------------------------------
# the set-ups
# ---------------------------------------------------------------------------------------------


def test_library_never_imports_the_experiments() -> None:
    """Importing every library module must not pull in igbook.experiments (or igbook.book)."""
    import subprocess

    skip = (
        "igbook.experiments",
        "igbook.book",
        "igbook.exercises",
        "igbook.widgets",
        "igbook.live",
    )
    names = [
        m.name
        for m in pkgutil.walk_packages(igbook.__path__, "igbook.")
        if not m.name.startswith(skip)
    ]
    code = (
        "import importlib, sys\n"
        f"for n in {names!r}: importlib.import_module(n)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('igbook.experiments', 'igbook.book'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    assert len(names) > 20


def test_kunstner_generators_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="seed"):
        kunstner.vector_field_data(seed=2**32)
    with pytest.raises(TypeError, match="kind"):
        kunstner.logistic_data(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="n"):
        kunstner.linear_data("well-specified", n=10.0)  # type: ignore[arg-type]
    x, y = kunstner.linear_data("misspecified-noise", n=4000, seed=1)
    # y = z + 1 + N(0, 4): residual variance 4 within 5 standard errors (sd of s^2 ~ 4 sqrt(2/n))
    res = y - x @ torch.tensor([1.0, 1.0], dtype=torch.float64)
    assert abs(float(res.var()) - 4.0) < 5 * 4.0 * math.sqrt(2 / 4000)


def test_training_drivers_reject_bad_input() -> None:
    images = torch.rand(8, 64)
    with pytest.raises(ValueError, match="method"):
        kfac_autoencoder.train_autoencoder("lbfgs", images, steps=1, lr=0.1)
    with pytest.raises(ValueError, match="steps"):
        kfac_autoencoder.train_autoencoder("sgd", images, steps=0, lr=0.1)
    with pytest.raises(TypeError, match="n"):
        blr.linreg_problem(n=2.5)  # type: ignore[arg-type]


def test_kfac_constants_are_what_the_benchmark_chose() -> None:
    bench = _results("kfac")
    assert bench["tuned"] == kfac_autoencoder.TUNED
    tiny = bench["tiny_network"]
    assert tiny["configs"] == kfac_autoencoder.TINY_CONFIGS
    assert tuple(tiny["widths"]) == kfac_autoencoder.TINY_WIDTHS
    assert tiny["batch_size"] == kfac_autoencoder.TINY_BATCH_SIZE
    assert tuple(bench["settings"]["widths"]) == kfac_autoencoder.AUTOENCODER_WIDTHS
    assert bench["settings"]["batch_size"] == kfac_autoencoder.BATCH_SIZE
    # every tuned configuration is one of the benchmark's grid points
    for method, cfg in kfac_autoencoder.TUNED.items():
        tried = [row["config"] for row in bench["tuning"] if row["method"] == method]
        assert {k: v for k, v in cfg.items() if k != "batch_size"} in tried, method


def test_continual_constants_are_what_the_benchmark_recorded() -> None:
    bench = _results("continual")["settings"]
    assert bench["config"] == continual.CONFIG
    assert bench["labels"] == continual.LABELS
    assert bench["protocol"] == continual.PROTOCOL


def test_ivon_constants_are_what_the_benchmark_used() -> None:
    digits = _results("ivon")["settings"]["digits"]
    assert {k: v for k, v in digits["IVON"].items() if k != "ess"} == blr.IVON_DIGITS
    assert digits["AdamW"] == blr.ADAMW_DIGITS


def test_subpackage_lists_its_modules() -> None:
    doc = igbook.experiments.__doc__ or ""
    mods = [m.name for m in pkgutil.iter_modules(igbook.experiments.__path__)]
    assert {"blr", "continual", "kfac_autoencoder", "kunstner", "models"} <= set(mods)
    api = (Path(__file__).resolve().parents[1] / "book" / "api.md").read_text()
    for m in mods:
        assert f"igbook.experiments.{m}" in doc, f"igbook.experiments' docstring omits {m}"
        assert f".. automodule:: igbook.experiments.{m}\n" in api, f"book/api.md omits {m}"
