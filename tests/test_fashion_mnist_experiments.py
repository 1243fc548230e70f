"""The Fashion-MNIST set-ups (igbook.experiments.fashion_mnist) and benchmarks/bench_fashion_mnist.py.

Everything here needs the real IDX files (Debian's ``dataset-fashion-mnist``): the tests skip
when they are absent, except under ``CI=true``, where their absence is a failure. The benchmark's
three sub-commands run at their ``smoke`` size so that the benchmark code cannot rot.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import pytest
import torch

from igbook.data import FashionMNISTNotFoundError, fashion_mnist_directory
from igbook.experiments import fashion_mnist as fm
from igbook.experiments.blr import evaluate_classifier
from igbook.experiments.kfac_autoencoder import train_autoencoder

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture(scope="module", autouse=True)
def _real_files():
    try:
        fashion_mnist_directory()
    except FashionMNISTNotFoundError as exc:
        if IN_CI:
            pytest.fail(f"Fashion-MNIST is required when CI=true: {exc}", pytrace=False)
        pytest.skip("Fashion-MNIST not installed (apt install dataset-fashion-mnist)")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "bench_fashion_mnist", ROOT / "benchmarks" / "bench_fashion_mnist.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sizes_are_complete() -> None:
    for table in (fm.AUTOENCODER, fm.IVON_CNN, fm.PERMUTED):
        assert set(table) == set(fm.SIZES)
        keys = set(table["run"])
        assert all(set(v) == keys for v in table.values())


def test_images_subset_validation() -> None:
    with pytest.raises(ValueError, match="n_test"):
        fm.images_subset(10, -1)
    with pytest.raises(ValueError, match="n_train"):
        fm.images_subset(60001)


def test_cnn_parameter_count_and_shapes() -> None:
    net = fm.cnn(seed=3)
    # conv 1->8 3x3 with bias, conv 8->16 3x3 with bias, linear 16*7*7 -> 10 with bias
    expected = (1 * 8 * 9 + 8) + (8 * 16 * 9 + 16) + (16 * 7 * 7 * 10 + 10)
    assert sum(p.numel() for p in net.parameters()) == expected == 9098
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    again = fm.cnn(seed=3)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), again.parameters(), strict=True))


def test_permuted_stream_permutes_pixels_only() -> None:
    stream = fm.permuted_fashion_mnist(3, train_images=50, test_images=20, seed=4)
    base = stream[0]
    x, _, xt, _ = fm.images_subset(50, 20)
    assert torch.equal(base.x_train, x) and torch.equal(base.x_test, xt)  # task 0 unpermuted
    for task in stream.tasks[1:]:
        # a permutation of the columns keeps each image's multiset of pixel values ...
        assert torch.equal(task.x_train.sort(1).values, x.sort(1).values)
        assert torch.equal(task.x_test.sort(1).values, xt.sort(1).values)
        assert torch.equal(task.y_train, base.y_train)
        # ... and moves the pixels (a random permutation of 784 fixes about one of them)
        assert (task.x_train != x).any(1).float().mean() > 0.9
    # one permutation per task: the same column map on training and test images
    col = stream[1].x_train.T  # (784, 50)
    src = x.T
    match = [(src == col[j]).all(1).nonzero() for j in range(784) if col[j].abs().sum() > 0]
    assert all(len(m) >= 1 for m in match)


def test_autoencoder_steps_lower_the_loss() -> None:
    """A few steps of every optimizer on the Martens-Grosse widths lower the training loss."""
    x, _, _, _ = fm.images_subset(64)
    for method, grid in fm.AUTOENCODER_GRIDS.items():
        r = train_autoencoder(
            method, x, steps=4, eval_every=4, widths=fm.MG_WIDTHS, batch_size=16, **grid[-1]
        )
        assert not r.diverged and math.isfinite(r.losses[-1])
        assert r.losses[-1] < 0.995 * r.losses[0], (method, r.losses)


def test_cnn_training_lowers_loss_and_metrics_are_consistent() -> None:
    x, y, xt, yt = fm.images_subset(512, 200, flatten=False)
    for name in ("AdamW", "IVON"):
        trained = fm.train_cnn(name, x, y, epochs=2, batch_size=32, seed=1)
        first, last = trained.losses[0], sum(trained.losses[-4:]) / 4
        assert first == pytest.approx(math.log(10), abs=0.2)  # near-uniform logits at init
        assert last < first - 0.15, (name, first, last)
        for label, (m, p) in evaluate_classifier(trained, xt, yt, num_samples=4).items():
            # metrics recomputed from the returned probabilities
            assert torch.allclose(p.sum(1), torch.ones(200), atol=1e-5)
            assert m.accuracy == pytest.approx(float((p.argmax(1) == yt).float().mean()), abs=1e-6)
            nll = float(-p[torch.arange(200), yt].log().mean())
            assert m.nll == pytest.approx(nll, rel=1e-4), label
            assert m.accuracy > 0.2, label  # chance is 0.1


@pytest.mark.parametrize("name", ["autoencoder", "ivon_cnn", "permuted"])
def test_benchmark_smoke(bench, tmp_path, name) -> None:
    out = tmp_path / f"{name}.json"
    bench.main([name, "--size", "smoke", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["settings"]["size"] == "smoke"
    if name == "autoencoder":
        assert set(data["summary"]) == {"sgd", "adam", "kfac"}
        for method, row in data["summary"].items():
            knob = row["kl_clip"] if method == "kfac" else row["lr"]
            assert knob in data["settings"]["grids"][method]
        assert len(data["tuning"]) == sum(len(g) for g in fm.AUTOENCODER_GRIDS.values())
    elif name == "ivon_cnn":
        assert set(data["summary"]) == {"AdamW", "IVON@mean", "IVON"}
        for row in data["per_seed"]:
            assert 0 <= row["ece"] <= 1 and 0 <= row["accuracy"] <= 1 and row["nll"] > 0
    else:
        s = fm.PERMUTED["smoke"]
        assert len(data["table"]) == 7
        for runs in data["runs"].values():
            R = torch.tensor(runs[0]["accuracy_matrix"])
            assert R.shape == (s["tasks"], s["tasks"])
            # average accuracy = mean of the last row, from the matrix itself
            assert runs[0]["average_accuracy"] == pytest.approx(float(R[-1].mean()), abs=1e-3)


@pytest.mark.parametrize(
    ("name", "table"),
    [("autoencoder", "AUTOENCODER"), ("ivon_cnn", "IVON_CNN"), ("permuted", "PERMUTED")],
)
def test_committed_results_used_the_constants(name: str, table: str) -> None:
    path = ROOT / "benchmarks" / "results" / f"fashion_mnist_{name}.json"
    if not path.exists():
        pytest.skip(f"{path} not committed")
    settings = json.loads(path.read_text())["settings"]
    size = getattr(fm, table)[settings["size"]]
    for key, value in size.items():
        got = settings[key]
        want = list(value) if isinstance(value, tuple) else value
        assert got == want, (name, key)
