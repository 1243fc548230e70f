r"""Experiments of the chapter "The Bayesian learning rule" (and of ``benchmarks/bench_ivon.py``).

Small, seeded, CPU-sized versions of the standard demonstrations for the optimizers of
:mod:`igbook.optim.blr` (networks from :func:`igbook.experiments.models.mlp`):

- :func:`linreg_problem` and :func:`run_linreg`: Bayesian linear regression, where the exact
  mean-field posterior is known, so that every optimizer's fixed point can be checked;
- :func:`gap_regression_data` and :func:`fit_gap_regression`: a Bayesian neural network on 1-D
  data with a gap between two clusters, the setting of in-between uncertainty
  :cite:`foong2019between`, against an Adam point estimate :cite:`kingma2015adam`;
- :func:`train_classifier` and :func:`evaluate_classifier`: an MLP on scikit-learn digits trained
  with IVON :cite:`shen2024variational` or AdamW :cite:`loshchilov2019decoupled`, judged by
  accuracy, NLL and calibration :cite:`guo2017calibration`.

The hyperparameters are module constants so that the chapter, the tests and the benchmark use
the same ones (chosen once, before comparing, and reported).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from igbook._validation import check_choice, check_count
from igbook.experiments.models import mlp
from igbook.fisher import FisherType
from igbook.optim.blr import IVON, VOGN, VON, PerExampleClosure, Vadam
from igbook.optim.sampling import ClassificationMetrics, classification_metrics, predictive

__all__ = [
    "LinregProblem",
    "linreg_problem",
    "LinregRun",
    "run_linreg",
    "LINREG_OPTIMIZERS",
    "LINREG_SETTINGS",
    "gap_function",
    "gap_regression_data",
    "GapFit",
    "IVON_GAP",
    "ADAM_GAP_LR",
    "fit_gap_regression",
    "IVON_DIGITS",
    "ADAMW_DIGITS",
    "TrainedClassifier",
    "train_classifier",
    "evaluate_classifier",
]


# --------------------------------------------------------------------------------------------
# Bayesian linear regression
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinregProblem:
    r"""Data and exact posterior of :math:`y = X\theta + \epsilon`, :math:`\epsilon\sim\mathcal{N}(0,\sigma^2)`,
    prior :math:`\mathcal{N}(0, \lambda^{-1} I)`: precision :math:`P = X^\top X/\sigma^2 + \lambda I`,
    mean :math:`P^{-1}X^\top y/\sigma^2`; the mean-field posterior has the same mean and variances
    :math:`1/P_{jj}`."""

    x: Tensor
    y: Tensor
    noise_std: float
    prior_precision: float
    mean: Tensor
    precision: Tensor

    @property
    def mf_variance(self) -> Tensor:
        """Variances of the optimal mean-field Gaussian, :math:`1/P_{jj}`."""
        return 1.0 / torch.diagonal(self.precision)

    @property
    def num_data(self) -> int:
        return int(self.x.shape[0])


def linreg_problem(
    n: int = 200, noise_std: float = 0.5, prior_precision: float = 1.0, seed: int = 0
) -> LinregProblem:
    """A 3-feature regression with correlated, differently scaled features (float64)."""
    n = check_count(n, "n", minimum=2)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64) * torch.tensor(
        [1.0, 0.5, 2.0], dtype=torch.float64
    )
    x[:, 1] += 0.5 * x[:, 0]
    noise = noise_std * torch.randn(n, generator=g, dtype=torch.float64)
    y = x @ torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64) + noise
    prec = x.T @ x / noise_std**2 + prior_precision * torch.eye(3, dtype=torch.float64)
    mean = torch.linalg.solve(prec, x.T @ y / noise_std**2)
    return LinregProblem(x, y, noise_std, prior_precision, mean, prec)


#: hyperparameters :func:`run_linreg` gives each optimizer (``beta``/``beta2`` during the
#: burn-in; 0.999 afterwards)
LINREG_SETTINGS: dict[str, dict[str, float]] = {
    "VON": {"lr": 0.1, "beta": 0.98},
    "VOGN-empirical": {"lr": 0.1, "beta": 0.98},
    "VOGN-sampled": {"lr": 0.1, "beta": 0.98},
    "Vadam": {"lr": 0.02},
    "IVON": {"lr": 0.05, "hess_init": 1.0, "beta2": 0.98},
}
#: optimizers :func:`run_linreg` knows
LINREG_OPTIMIZERS = tuple(LINREG_SETTINGS)


@dataclass(frozen=True)
class LinregRun:
    """Per-step means and variances (averaged over replicas), shape ``(steps, 3)`` each."""

    name: str
    means: Tensor
    variances: Tensor

    def tail_average(self, fraction: float = 0.4) -> tuple[Tensor, Tensor]:
        """Mean and variance estimates averaged over the last ``fraction`` of the steps."""
        # fraction is not validated: int() keeps k a Python int for numpy/torch scalars too
        k = max(1, int(round(fraction * self.means.shape[0])))  # noqa: RUF046
        return self.means[-k:].mean(0), self.variances[-k:].mean(0)


class _Replicas(nn.Module):
    def __init__(self, r: int, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(r, d, dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.weight.T


def run_linreg(
    name: str, problem: LinregProblem, *, steps: int = 800, replicas: int = 16, seed: int = 0
) -> LinregRun:
    r"""Run one optimizer on :func:`linreg_problem` with ``replicas`` independent chains.

    The optimizers are diagonal (element-wise), so a ``(replicas, 3)`` parameter whose loss is
    the sum of ``replicas`` copies of the problem holds independent chains; their average
    reduces Monte Carlo noise. The closure returns the *average* negative log-likelihood, the
    prior enters through ``prior_precision`` (``weight_decay = prior/N`` for IVON). The curvature
    average has a short memory (0.98) for the first half of the steps (burn-in: the initial
    value decays to :math:`0.98^{\text{steps}/2}`), then a long one (0.999).
    """
    check_choice(name, "name", LINREG_OPTIMIZERS)
    hp = LINREG_SETTINGS[name]
    n, lam, sig = problem.num_data, problem.prior_precision, problem.noise_std
    x, y = problem.x, problem.y
    model = _Replicas(replicas, x.shape[1])
    w = model.weight
    opt: Any
    burn = steps // 2
    if name == "VON":
        opt = VON([w], lr=hp["lr"], data_size=n, beta=hp["beta"], prior_precision=lam, seed=seed)
    elif name.startswith("VOGN"):
        ftype = FisherType.MC if name.endswith("sampled") else FisherType.EMPIRICAL
        opt = VOGN(
            [w],
            lr=hp["lr"],
            data_size=n,
            beta=hp["beta"],
            prior_precision=lam,
            fisher_type=ftype,
            seed=seed,
        )
    elif name == "Vadam":
        opt = Vadam([w], lr=hp["lr"], data_size=n, prior_precision=lam, seed=seed)
    else:
        opt = IVON(
            [w],
            lr=hp["lr"],
            ess=n,
            hess_init=hp["hess_init"],
            beta2=hp["beta2"],
            weight_decay=lam / n,
            seed=seed,
        )

    def avg_nll() -> Tensor:
        r = y[:, None] - x @ w.T
        return (0.5 * r * r / sig**2).mean(0).sum()

    def backward_closure() -> Tensor:
        loss = avg_nll()
        loss.backward()
        return loss

    per_example = PerExampleClosure(
        model, x, y[:, None].expand(n, replicas), likelihood="gaussian", noise_std=sig
    )
    means, variances = [], []
    for k in range(steps):
        if k == burn:
            for grp in opt.param_groups:
                if "beta" in grp:
                    grp["beta"] = 0.999
                if "beta2" in grp:
                    grp["beta2"] = 0.999
        if name == "VON":
            opt.step(avg_nll)
        elif name.startswith("VOGN"):
            opt.step(per_example)
        else:
            opt.step(backward_closure)
        means.append(w.detach().mean(0))
        variances.append((1.0 / opt.posterior_precision()[0]).mean(0))
    return LinregRun(name, torch.stack(means), torch.stack(variances))


# --------------------------------------------------------------------------------------------
# 1-D regression with a gap
# --------------------------------------------------------------------------------------------


def gap_function(x: Tensor) -> Tensor:
    r"""The true regression function :math:`\sin(2x) + 0.3x`."""
    return torch.sin(2 * x) + 0.3 * x


def gap_regression_data(
    n: int = 60, noise_std: float = 0.1, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """``n`` points in two clusters, :math:`[-2, -0.8]` and :math:`[0.8, 2]`, shape ``(n, 1)``."""
    n = check_count(n, "n", minimum=2)
    if n % 2:
        raise ValueError(f"n must be an even number >= 2, got {n}")
    g = torch.Generator().manual_seed(seed)
    x = torch.cat(
        [torch.rand(n // 2, generator=g) * 1.2 - 2.0, torch.rand(n // 2, generator=g) * 1.2 + 0.8]
    )
    x = x.unsqueeze(1)
    y = gap_function(x) + noise_std * torch.randn(x.shape, generator=g)
    return x, y


#: IVON on the gap regression: initial curvature :math:`h_0` (the likelihood's :math:`1/\sigma^2`
#: scale), :math:`\alpha = \text{lr}\,(h_0+\delta)`, ``beta2`` and the prior precision
IVON_GAP: dict[str, float] = {
    "hess_init": 50.0,
    "alpha": 0.1,
    "beta2": 0.995,
    "prior_precision": 3.0,
}
#: Adam's learning rate on the gap regression (mean squared error)
ADAM_GAP_LR = 1e-2


@dataclass
class GapFit:
    """Posterior predictive of the BNN and the Adam point estimate on ``grid``."""

    grid: Tensor
    samples: Tensor  #: (S, G) network outputs at posterior samples
    mean: Tensor  #: predictive mean (G,)
    std: Tensor  #: predictive standard deviation including the noise (G,)
    epistemic_std: Tensor  #: standard deviation over weight samples only (G,)
    adam_mean: Tensor  #: the Adam network (G,)
    noise_std: float
    train_seconds: dict[str, float] = field(default_factory=dict)


def fit_gap_regression(
    x: Tensor,
    y: Tensor,
    *,
    noise_std: float = 0.1,
    hidden: tuple[int, ...] = (32, 32),
    steps: int = 1500,
    ess_factor: float = 5.0,
    num_samples: int = 64,
    seed: int = 0,
    grid: Tensor | None = None,
) -> GapFit:
    r"""A Bayesian MLP trained with IVON against the same MLP trained with Adam.

    IVON: average Gaussian NLL with noise ``noise_std``, prior precision 3, ``hess_init=50``
    (the curvature scale :math:`1/\sigma^2` of this likelihood: starting far below it makes the
    first, Newton-like steps unstable), :math:`\alpha = \text{lr}\,(h_0 + \delta) = 0.1`,
    ``beta2=0.995``, cosine learning-rate decay, and a tempered posterior
    ``ess = ess_factor * N`` (with ``ess = N`` the mean-field posterior of this small network
    underfits the clusters). Adam: learning rate :math:`10^{-2}` on the mean squared error.
    """
    import time

    n = x.shape[0]
    grid = torch.linspace(-3, 3, 200).unsqueeze(1) if grid is None else grid
    sizes = (1, *hidden, 1)
    model = mlp(sizes, activation="tanh", seed=seed)
    ess = ess_factor * n
    h0 = IVON_GAP["hess_init"]
    opt = IVON(
        model.parameters(),
        lr=IVON_GAP["alpha"] / h0,
        ess=ess,
        hess_init=h0,
        beta2=IVON_GAP["beta2"],
        weight_decay=IVON_GAP["prior_precision"] / ess,
        seed=seed,
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)

    def closure() -> Tensor:
        loss = 0.5 * ((model(x) - y) ** 2).mean() / noise_std**2
        loss.backward()
        return loss

    t0 = time.perf_counter()
    for _ in range(steps):
        opt.step(closure)
        sched.step()
    t_ivon = time.perf_counter() - t0
    samples = predictive(opt, lambda: model(grid).squeeze(-1), num_samples, return_samples=True)

    adam_model = mlp(sizes, activation="tanh", seed=seed)
    adam = torch.optim.Adam(adam_model.parameters(), lr=ADAM_GAP_LR)
    t0 = time.perf_counter()
    for _ in range(steps):
        adam.zero_grad()
        ((adam_model(x) - y) ** 2).mean().backward()
        adam.step()
    t_adam = time.perf_counter() - t0
    with torch.no_grad():
        adam_mean = adam_model(grid).squeeze(-1)
    epi = samples.std(0)
    return GapFit(
        grid=grid.squeeze(-1),
        samples=samples,
        mean=samples.mean(0),
        std=(samples.var(0) + noise_std**2).sqrt(),
        epistemic_std=epi,
        adam_mean=adam_mean,
        noise_std=noise_std,
        train_seconds={"IVON": t_ivon, "Adam": t_adam},
    )


# --------------------------------------------------------------------------------------------
# digits: IVON against AdamW
# --------------------------------------------------------------------------------------------

#: IVON on digits (MLP 64-64-10, batches of 64, 20 epochs, ess = N_train), chosen by validation
#: NLL on another split (``benchmarks/bench_ivon.py --tune``); prior N(0, 1/(ess wd))
IVON_DIGITS: dict[str, float] = {
    "lr": 1.0,
    "hess_init": 5.0,
    "beta1": 0.9,
    "beta2": 0.999,
    "weight_decay": 1e-3,
}
#: AdamW on digits (same network, batches, epochs and selection)
ADAMW_DIGITS: dict[str, float] = {"lr": 1e-2, "weight_decay": 1e-1}


@dataclass
class TrainedClassifier:
    """A trained network with its optimizer (IVON's holds the posterior) and the training losses."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    losses: list[float]
    seconds: float


def train_classifier(
    name: str,
    x: Tensor,
    y: Tensor,
    *,
    num_classes: int,
    hidden: tuple[int, ...] = (64,),
    epochs: int = 20,
    batch_size: int = 64,
    seed: int = 0,
    hyper: dict[str, float] | None = None,
) -> TrainedClassifier:
    """Train an MLP with ``"IVON"`` (one MC sample per step, ``ess`` = number of training points)
    or ``"AdamW"`` on cross-entropy; minibatches from a seeded permutation per epoch."""
    import time

    check_choice(name, "name", ("IVON", "AdamW"))
    n = x.shape[0]
    model = mlp((x.shape[1], *hidden, num_classes), activation="relu", seed=seed, dtype=x.dtype)
    opt: torch.optim.Optimizer
    if name == "IVON":
        opt = IVON(model.parameters(), ess=n, seed=seed, **(hyper or IVON_DIGITS))
    else:
        opt = torch.optim.AdamW(model.parameters(), **(hyper or ADAMW_DIGITS))
    g = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            xb, yb = x[idx], y[idx]

            def closure(xb: Tensor = xb, yb: Tensor = yb) -> Tensor:
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(xb), yb)
                loss.backward()
                return loss

            losses.append(float(opt.step(closure).detach()))  # type: ignore[union-attr,arg-type]
    return TrainedClassifier(name, model, opt, losses, time.perf_counter() - t0)


def evaluate_classifier(
    trained: TrainedClassifier, x: Tensor, y: Tensor, *, num_samples: int = 32, num_bins: int = 10
) -> dict[str, tuple[ClassificationMetrics, Tensor]]:
    """Metrics and test probabilities: ``"AdamW"``; for IVON ``"IVON@mean"`` (the mean
    network) and ``"IVON"`` (the posterior predictive over ``num_samples`` samples)."""
    model = trained.model
    with torch.no_grad():
        p_mean = model(x).softmax(-1)
    if trained.name == "AdamW":
        return {"AdamW": (classification_metrics(p_mean, y, num_bins), p_mean)}
    p_pred = predictive(trained.optimizer, lambda: model(x).softmax(-1), num_samples)
    return {
        "IVON@mean": (classification_metrics(p_mean, y, num_bins), p_mean),
        "IVON": (classification_metrics(p_pred, y, num_bins), p_pred),
    }
