"""igbook.continual: streams, diagonal Fisher, EWC/SI/FOPNG exactness, metrics, uncertainty, runner."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call, jacrev

from igbook.continual import (
    EWC,
    FOPNG,
    SI,
    BGDLearner,
    FineTuning,
    MESULearner,
    OnlineEWC,
    Task,
    TaskStream,
    average_accuracy,
    backward_transfer,
    batched_gradient_diagonal,
    diagonal_fisher,
    entropy,
    ewc_penalty,
    fisher_quadratic_form,
    fopng_direction,
    forgetting,
    make_learner,
    mean_std,
    minibatches,
    named_params,
    newest_task_accuracy,
    ood_auc,
    ood_digits,
    permuted_digits,
    predictive_kl,
    restrict_logits,
    roc_auc,
    run_stream,
    split_digits,
    stream_batches,
    summarize,
    uncertainty_decomposition,
)
from igbook.experiments.models import mlp

D = torch.float64


@pytest.fixture(scope="module")
def perm3() -> TaskStream:
    return permuted_digits(3, seed=1, dtype=D)


@pytest.fixture(scope="module")
def small_model_data() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    model = mlp((5, 7, 4), activation="relu", seed=3, dtype=D)
    x = torch.randn(30, 5, generator=gen, dtype=D)
    y = torch.randint(0, 4, (30,), generator=gen)
    return model, x, y


def _full_fisher(
    model: nn.Module, x: torch.Tensor, active: tuple[int, ...] | None = None
) -> torch.Tensor:
    """Reference: F = mean_x J_logp^T diag(p) J_logp from torch.func.jacrev, dense."""
    p0 = named_params(model)
    names = list(p0)

    def logp(flat: torch.Tensor, xn: torch.Tensor) -> torch.Tensor:
        parts, i = {}, 0
        for k in names:
            n = p0[k].numel()
            parts[k] = flat[i : i + n].reshape(p0[k].shape)
            i += n
        z = functional_call(model, parts, (xn.unsqueeze(0),))[0]
        if active is not None:
            z = z[list(active)]
        return torch.log_softmax(z, -1)

    flat = torch.cat([p0[k].reshape(-1) for k in names])
    F = torch.zeros(flat.numel(), flat.numel(), dtype=D)
    for xn in x:
        J = jacrev(logp)(flat, xn)  # (C, P)
        p = logp(flat, xn).exp()
        F += J.T @ (p.unsqueeze(1) * J)
    return F / x.shape[0]


def _flat(d: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([v.reshape(-1) for v in d.values()])


# ---------------------------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------------------------
def test_permuted_digits_structure() -> None:
    s = permuted_digits(10, seed=0)
    assert len(s) == 10 and s.scenario == "domain" and s.num_classes == 10 and s.num_inputs == 64
    base = s[0]
    assert base.x_train.shape == (1347, 64) and base.x_test.shape == (450, 64)
    for t in s.tasks[1:]:
        torch.testing.assert_close(t.y_train, base.y_train, rtol=0, atol=0)
        # each task is a column permutation of the first: same multiset of values per row
        torch.testing.assert_close(
            t.x_train.sort(1).values, base.x_train.sort(1).values, rtol=0, atol=0
        )
        assert not torch.equal(t.x_train, base.x_train)
    again = permuted_digits(10, seed=0)
    assert torch.equal(again[5].x_train, s[5].x_train)
    assert not torch.equal(permuted_digits(10, seed=1)[5].x_train, s[5].x_train)


def test_split_digits_scenarios() -> None:
    til, cil = split_digits("task"), split_digits("class")
    assert len(til) == 5 and til.scenario == "task" and cil.scenario == "class"
    for t_til, t_cil, c in zip(til, cil, [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]):
        assert t_til.classes == c and t_til.active_classes == c and t_cil.active_classes is None
        assert set(t_til.y_train.tolist()) == set(c) and set(t_til.y_test.tolist()) == set(c)
    assert sum(t.num_train for t in til) == 1347
    swapped = split_digits("task", class_order=[9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    assert swapped[0].classes == (9, 8)


def test_stream_batches_visit_every_example_once_per_epoch(perm3: TaskStream) -> None:
    batches = list(stream_batches(perm3, batch_size=50, epochs=2, seed=4))
    n = perm3[0].num_train
    per_task = math.ceil(n / 50) * 2
    assert len(batches) == 3 * per_task
    assert [b[0] for b in batches] == sorted(b[0] for b in batches)  # tasks in order
    first_epoch = torch.cat([b[2] for b in batches[: per_task // 2]])
    assert torch.equal(first_epoch.sort().values, perm3[0].y_train.sort().values)
    again = list(stream_batches(perm3, batch_size=50, epochs=2, seed=4))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(batches, again))


def test_ood_digits_is_a_new_permutation() -> None:
    x = ood_digits(dtype=D)
    test = permuted_digits(1, dtype=D)[0].x_test
    torch.testing.assert_close(x.sort(1).values, test.sort(1).values, rtol=0, atol=0)
    assert not torch.equal(x, test)


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: permuted_digits(0), ValueError, "num_tasks"),
        (lambda: split_digits("domain"), ValueError, "scenario"),
        (lambda: split_digits("task", class_order=[0, 1, 2]), ValueError, "class_order"),
        (lambda: TaskStream("empty", "domain", (), 64, 10), ValueError, "empty"),
        (
            lambda: TaskStream("x", "weird", permuted_digits(1).tasks, 64, 10),
            ValueError,
            "scenario",
        ),
        (lambda: list(minibatches(torch.zeros(3, 2), torch.zeros(3), 0)), ValueError, "batch_size"),
        (
            lambda: list(minibatches(torch.zeros(3, 2), torch.zeros(4), 2)),
            ValueError,
            "same number of rows",
        ),
        (lambda: list(stream_batches(permuted_digits(1), epochs=0)), ValueError, "epochs"),
        (lambda: list(stream_batches([1, 2])), TypeError, "TaskStream"),  # type: ignore[arg-type]
    ],
)
def test_stream_bad_input(call, exc, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# Diagonal Fisher and the KL
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["auto", "linear", "vmap"])
@pytest.mark.parametrize("active", [None, (1, 3)])
def test_exact_diagonal_fisher_matches_torch_func_reference(
    small_model_data, strategy: str, active
) -> None:  # type: ignore[no-untyped-def]
    model, x, y = small_model_data
    F = _full_fisher(model, x, active)
    f = diagonal_fisher(model, x, active=active, strategy=strategy, chunk_size=7)
    assert list(f) == [k for k, _ in model.named_parameters()]
    torch.testing.assert_close(_flat(f), F.diagonal(), rtol=1e-10, atol=1e-14)
    if active is not None:  # labels of the active classes are mapped to positions within them
        keep = torch.isin(y, torch.tensor(active))
        emp = diagonal_fisher(
            model, x[keep], y[keep], fisher_type="empirical", active=active, strategy=strategy
        )
        ref = torch.zeros_like(_flat(f))
        for xn, yn in zip(x[keep], y[keep], strict=True):
            model.zero_grad()
            z = model(xn[None])[:, list(active)]
            nn.functional.cross_entropy(z, torch.tensor([list(active).index(int(yn))])).backward()
            ref += torch.cat([p.grad.reshape(-1) for p in model.parameters()]) ** 2
        model.zero_grad()
        torch.testing.assert_close(_flat(emp), ref / int(keep.sum()), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize(
    ("kind", "fisher_type"),
    [("exact", "exact"), ("sample", "mc"), ("empirical", "empirical"), ("batched", None)],
)
def test_kind_is_a_deprecated_alias_of_fisher_type(
    small_model_data, kind: str, fisher_type: str | None
) -> None:  # type: ignore[no-untyped-def]
    """The old ``kind=`` spellings warn (naming the new spelling) and give exactly the new numbers."""
    model, x, y = small_model_data
    g_old, g_new = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    with pytest.warns(
        DeprecationWarning,
        match="batched_gradient_diagonal" if fisher_type is None else "fisher_type",
    ):
        old = diagonal_fisher(
            model, x, y, kind=kind, batch_size=8 if fisher_type is None else None, generator=g_old
        )
    if fisher_type is None:
        new = batched_gradient_diagonal(model, x, y, batch_size=8)
    else:
        new = diagonal_fisher(model, x, y, fisher_type=fisher_type, generator=g_new)
    assert all(torch.equal(old[k], new[k]) for k in new)
    with pytest.raises(ValueError, match="not both"):
        diagonal_fisher(model, x, y, kind=kind, fisher_type="empirical")


def test_diagonal_fisher_with_another_likelihood() -> None:
    """A Bernoulli (logit) likelihood on one output: the Fisher is sigma(1 - sigma) J^T J, by jacrev."""
    from igbook.fisher import BernoulliLikelihood

    model = mlp((5, 7, 1), activation="relu", seed=4, dtype=D)
    x = torch.randn(17, 5, generator=torch.Generator().manual_seed(8), dtype=D)
    p0 = named_params(model)
    names = list(p0)
    ref = torch.zeros(sum(v.numel() for v in p0.values()), dtype=D)
    for xn in x:
        jac = jacrev(lambda p, xn=xn: functional_call(model, p, (xn[None],))[0, 0])(p0)
        j = torch.cat([jac[k].reshape(-1) for k in names])
        s = torch.sigmoid(model(xn[None]))[0, 0].detach()
        ref += s * (1 - s) * j**2
    for strategy in ("linear", "vmap"):
        f = diagonal_fisher(model, x, likelihood=BernoulliLikelihood(), strategy=strategy)
        torch.testing.assert_close(_flat(f), ref / len(x), rtol=1e-10, atol=1e-14)


def test_restrict_logits_is_checked() -> None:
    z = torch.tensor([[0.3, -0.2, 0.5]], dtype=D)
    torch.testing.assert_close(restrict_logits(z, [2, 0]), z[:, [2, 0]], rtol=0, atol=0)
    assert restrict_logits(z, None) is z
    with pytest.raises(ValueError, match="active"):
        restrict_logits(z, [3])
    with pytest.raises(TypeError, match="active"):
        restrict_logits(z, [0.5])
    with pytest.raises(ValueError, match="logits"):
        restrict_logits(torch.full((1, 3), math.nan), [0])


@pytest.mark.parametrize("strategy", ["auto", "vmap"])
def test_empirical_fisher_is_the_mean_squared_per_example_gradient(
    small_model_data, strategy: str
) -> None:  # type: ignore[no-untyped-def]
    model, x, y = small_model_data
    ref = torch.zeros(sum(p.numel() for p in model.parameters()), dtype=D)
    for xn, yn in zip(x, y):
        model.zero_grad()
        nn.functional.cross_entropy(model(xn[None]), yn[None]).backward()
        ref += torch.cat([p.grad.reshape(-1) for p in model.parameters()]) ** 2
    f = diagonal_fisher(model, x, y, fisher_type="empirical", strategy=strategy)
    torch.testing.assert_close(_flat(f), ref / len(x), rtol=1e-10, atol=1e-14)
    model.zero_grad()


def test_batched_fisher_is_the_squared_minibatch_mean_gradient(small_model_data) -> None:  # type: ignore[no-untyped-def]
    model, x, y = small_model_data
    ref = torch.zeros(sum(p.numel() for p in model.parameters()), dtype=D)
    for s in range(0, 30, 8):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[s : s + 8]), y[s : s + 8]).backward()
        ref += torch.cat([p.grad.reshape(-1) for p in model.parameters()]) ** 2
    f = batched_gradient_diagonal(model, x, y, batch_size=8)
    torch.testing.assert_close(_flat(f), ref / 4, rtol=1e-10, atol=1e-14)
    model.zero_grad()


def test_sampled_fisher_is_unbiased(small_model_data) -> None:  # type: ignore[no-untyped-def]
    model, x, _ = small_model_data
    xr = x.repeat(400, 1)  # 12,000 sampled labels
    f = diagonal_fisher(model, xr, fisher_type="mc", generator=torch.Generator().manual_seed(0))
    exact = diagonal_fisher(model, x, fisher_type="exact")
    rel = (_flat(f) - _flat(exact)).norm() / _flat(exact).norm()
    assert float(rel) < 0.05, float(rel)
    # entrywise within 5 standard errors: 40 independent estimates with 300 labels per input each
    reps = torch.stack(
        [
            _flat(diagonal_fisher(model, x.repeat(300, 1), fisher_type="mc", seed=s))
            for s in range(40)
        ]
    )
    se = reps.std(0) / math.sqrt(40)
    keep = se > 0
    z = (reps.mean(0) - _flat(exact))[keep] / se[keep]
    assert float(z.abs().max()) < 5, float(z.abs().max())


def test_fast_path_falls_back_for_non_linear_modules() -> None:
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 2).to(D)
            self.scale = nn.Parameter(torch.tensor(1.5, dtype=D))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.scale * self.lin(x)

    model = Scaled()
    x = torch.randn(9, 3, dtype=D, generator=torch.Generator().manual_seed(1))
    f = diagonal_fisher(model, x)
    torch.testing.assert_close(_flat(f), _full_fisher(model, x).diagonal(), rtol=1e-10, atol=1e-14)
    with pytest.raises(ValueError, match="strategy='linear'"):
        diagonal_fisher(model, x, strategy="linear")


def test_fisher_quadratic_form_is_the_full_fisher(small_model_data) -> None:  # type: ignore[no-untyped-def]
    model, x, _ = small_model_data
    F = _full_fisher(model, x)
    gen = torch.Generator().manual_seed(2)
    delta = {
        k: torch.randn(v.shape, generator=gen, dtype=D) for k, v in named_params(model).items()
    }
    d = _flat(delta)
    torch.testing.assert_close(
        fisher_quadratic_form(model, x, delta), d @ F @ d, rtol=1e-10, atol=1e-14
    )


def test_ewc_penalty_formula(small_model_data) -> None:  # type: ignore[no-untyped-def]
    model, x, _ = small_model_data
    p0 = named_params(model)
    fisher = diagonal_fisher(model, x)
    gen = torch.Generator().manual_seed(5)
    w = {k: v + 0.1 * torch.randn(v.shape, generator=gen, dtype=D) for k, v in p0.items()}
    manual = 0.5 * sum(float((fisher[k] * (w[k] - p0[k]) ** 2).sum()) for k in p0)
    assert abs(float(ewc_penalty(w, p0, fisher)) - manual) < 1e-14
    assert abs(float(ewc_penalty(w, p0, fisher, lam=3.0)) - 3 * manual) < 1e-13
    assert float(ewc_penalty(p0, p0, fisher)) == 0.0


def test_ewc_penalty_approximates_the_predictive_kl(small_model_data) -> None:  # type: ignore[no-untyped-def]
    """KL(p_theta* || p_theta) = 0.5 d^T F d + O(|d|^3); along a coordinate the EWC penalty is it."""
    model, x, _ = small_model_data
    p0 = named_params(model)
    fisher = diagonal_fisher(model, x)
    gen = torch.Generator().manual_seed(7)
    u = {k: torch.randn(v.shape, generator=gen, dtype=D) for k, v in p0.items()}
    quad = 0.5 * fisher_quadratic_form(model, x, u)
    errs = []
    for eps in (1e-1, 1e-2, 1e-3):
        moved = {k: p0[k] + eps * u[k] for k in p0}
        kl = predictive_kl(model, x, p0, moved)
        errs.append(abs(float(kl / (eps**2 * quad)) - 1))
    assert errs[-1] < 1e-2 and errs[2] < errs[1] < errs[0]  # converges, at rate O(eps)
    # one coordinate: the diagonal is exact, so the EWC penalty is the KL to second order
    k0 = next(iter(p0))
    e = {k: torch.zeros_like(v) for k, v in p0.items()}
    e[k0].view(-1)[3] = 1.0
    moved = {k: p0[k] + 1e-3 * e[k] for k in p0}
    kl = predictive_kl(model, x, p0, moved)
    pen = ewc_penalty(moved, p0, fisher)
    assert abs(float(kl / pen) - 1) < 1e-2


# ---------------------------------------------------------------------------------------------
# EWC, online EWC and SI learners
# ---------------------------------------------------------------------------------------------
def _task(
    x: torch.Tensor, y: torch.Tensor, index: int = 0, active: tuple[int, ...] | None = None
) -> Task:
    return Task(
        index, f"t{index}", x, y, x, y, tuple(range(4)) if active is None else active, active
    )


def test_ewc_learner_penalty_and_gradient(small_model_data) -> None:  # type: ignore[no-untyped-def]
    base, x, y = small_model_data
    model = mlp((5, 7, 4), activation="relu", seed=3, dtype=D)
    learner = EWC(model, lam=2.5, lr=0.1)
    learner.end_task(_task(x, y))
    for _ in range(3):
        learner.observe(x, y)
    fisher = diagonal_fisher(base, x)  # same initialization as model at the anchor
    now = named_params(model)
    torch.testing.assert_close(
        learner.penalty(), ewc_penalty(now, named_params(base), fisher, lam=2.5), rtol=1e-12, atol=0
    )
    # closed-form gradient == autograd of the penalty
    pen = learner.penalty()
    auto = torch.autograd.grad(pen, learner.params)
    for a, g in zip(auto, learner.penalty_gradient()):  # type: ignore[union-attr]
        torch.testing.assert_close(a, g, rtol=1e-12, atol=1e-15)


def test_online_ewc_accumulates_fisher(small_model_data) -> None:  # type: ignore[no-untyped-def]
    _, x, y = small_model_data
    model = mlp((5, 7, 4), activation="relu", seed=3, dtype=D)
    on, ewc = OnlineEWC(model, lam=1.0, gamma=0.5), None
    f1 = diagonal_fisher(model, x)
    on.end_task(_task(x, y, 0))
    with torch.no_grad():
        model[0].weight.add_(0.05)
    f2 = diagonal_fisher(model, x)
    on.end_task(_task(x, y, 1))
    want = [0.5 * (0.5 * f1[k] + f2[k]) for k in f1]  # gamma * (gamma F1 + F2)
    for got, w in zip(on.anchors[0][0], want):
        torch.testing.assert_close(got, w, rtol=1e-12, atol=0)
    assert len(on.anchors) == 1 and ewc is None
    # with gamma = 1 the penalty curvature equals separate EWC's sum of Fishers
    m2 = mlp((5, 7, 4), activation="relu", seed=3, dtype=D)
    e, o = EWC(m2, lam=1.0), OnlineEWC(m2, lam=1.0, gamma=1.0)
    for t in range(2):
        e.end_task(_task(x, y, t))
        o.end_task(_task(x, y, t))
        with torch.no_grad():
            m2[2].bias.add_(0.1)
    total = [sum(f[i] for f, _ in e.anchors) for i in range(len(e.params))]
    for a, b in zip(total, o.anchors[0][0]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


class _QuadraticSI(SI):
    """SI whose task loss is 0.5 sum h (theta - a)^2 (to test the path integral)."""

    h: torch.Tensor
    a: torch.Tensor

    def task_loss(self, x, y, active=None):  # type: ignore[no-untyped-def,override]
        (theta,) = self.params
        return 0.5 * (self.h * (theta - self.a) ** 2).sum()


def test_si_importance_is_the_path_integral_on_a_quadratic() -> None:
    model = nn.Module()
    model.theta = nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=D))  # type: ignore[assignment]
    lr, T = 0.01, 400
    si = _QuadraticSI(model, c=1.0, xi=0.1, lr=lr)
    si.h = torch.tensor([2.0, 0.5, 4.0], dtype=D)
    si.a = torch.zeros(3, dtype=D)
    d0 = model.theta.detach().clone()
    dummy = torch.zeros(1, 1)
    for _ in range(T):
        si.observe(dummy, torch.zeros(1, dtype=torch.long))
    dT = model.theta.detach().clone()
    omega = si.omega[0].clone()
    # discrete sum of -g * dtheta for gradient descent, in closed form
    r = 1 - lr * si.h
    exact_sum = si.h * d0**2 * (1 - r ** (2 * T)) / (2 - lr * si.h)
    torch.testing.assert_close(omega, exact_sum, rtol=1e-12, atol=0)
    # ... which is the path integral of the loss decrease, 0.5 h (d0^2 - dT^2), times 2 / (2 - lr h):
    # equal up to O(lr h), the discretization error of the Riemann sum
    path = 0.5 * si.h * (d0**2 - dT**2)
    torch.testing.assert_close(omega, path * 2 / (2 - lr * si.h), rtol=1e-12, atol=0)
    torch.testing.assert_close(omega, path, rtol=0.6 * lr * float(si.h.max()), atol=0)
    si.end_task(_task(torch.zeros(1, 1), torch.zeros(1, dtype=torch.long)))
    torch.testing.assert_close(si.importance[0], omega / ((dT - d0) ** 2 + 0.1), rtol=1e-12, atol=0)
    assert float(si.omega[0].abs().sum()) == 0.0
    # SI penalty and its closed-form gradient
    with torch.no_grad():
        model.theta.add_(0.3)
    torch.testing.assert_close(si.penalty(), (si.importance[0] * 0.09).sum(), rtol=1e-12, atol=0)
    (auto,) = torch.autograd.grad(si.penalty(), si.params)
    torch.testing.assert_close(auto, si.penalty_gradient()[0], rtol=1e-12, atol=0)  # type: ignore[index]


# ---------------------------------------------------------------------------------------------
# FOPNG
# ---------------------------------------------------------------------------------------------
def _fopng_data(seed: int = 0, p: int = 40, k: int = 6) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(p, generator=gen, dtype=D)
    G = torch.randn(p, k, generator=gen, dtype=D)
    f_old = torch.rand(p, generator=gen, dtype=D) + 0.1
    f_new = torch.rand(p, generator=gen, dtype=D) ** 2 + 0.01
    return g, G, f_old, f_new


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(0, 12))
def test_fopng_exact_direction_satisfies_the_constraint(seed: int, k: int) -> None:
    g, G, f_old, f_new = _fopng_data(seed, k=k)
    v = -fopng_direction(g, G, f_old, f_new)
    if k:
        scale = (G.abs().T @ (f_old * v.abs())).max()
        assert float((G.T @ (f_old * v)).abs().max()) <= 1e-10 * max(float(scale), 1.0)
    assert float(g @ v) <= 0  # a descent direction
    # invariant to the scale of F_new (up to the length of the direction)
    v2 = -fopng_direction(g, G, f_old, 10.0 * f_new)
    torch.testing.assert_close(10.0 * v2, v, rtol=1e-8, atol=1e-12)


def test_fopng_exact_is_the_constrained_minimizer() -> None:
    """Among Fisher-orthogonal updates of the same F_new-norm, it has the lowest g^T v."""
    g, G, f_old, f_new = _fopng_data(3)
    v = -fopng_direction(g, G, f_old, f_new)
    v = v / torch.sqrt(v @ (f_new * v))
    # basis of the feasible set {v : G^T F_old v = 0}
    null = torch.linalg.svd((f_old.unsqueeze(1) * G).T, full_matrices=True).Vh[G.shape[1] :].T
    gen = torch.Generator().manual_seed(4)
    for _ in range(200):
        w = null @ torch.randn(null.shape[1], generator=gen, dtype=D)
        w = w / torch.sqrt(w @ (f_new * w))
        assert float(g @ w) >= float(g @ v) - 1e-12


def test_fopng_reference_code_variant() -> None:
    g, G, f_old, f_new = _fopng_data(1)
    one = torch.ones_like(f_new)
    # equal when F_new is the identity (and no damping) ...
    torch.testing.assert_close(
        fopng_direction(g, G, f_old, one, variant="reference_code"),
        fopng_direction(g, G, f_old, one),
        rtol=1e-9,
        atol=1e-12,
    )
    # ... but not for a multiple of it: the reference code's projection is not invariant to the scale of F_new
    v = -fopng_direction(g, G, f_old, 0.5 * one, variant="reference_code")
    assert float((G.T @ (f_old * v)).norm()) > 1e-3 * float((G.T.abs() @ (f_old * v.abs())).norm())
    # and in general it leaves a component along F_old G
    v = -fopng_direction(g, G, f_old, f_new, variant="reference_code")
    viol = (G.T @ (f_old * v)).norm() / ((G.T.abs() @ (f_old * v.abs())).norm())
    assert float(viol) > 1e-3
    # and it need not descend: a two-dimensional example where it points uphill
    g2, G2 = torch.tensor([1.0, 0.6], dtype=D), torch.tensor([[1.0], [0.5]], dtype=D)
    fo, fn = torch.tensor([1.0, 2.0], dtype=D), torch.tensor([4.0, 0.5], dtype=D)
    assert (
        float(g2 @ fopng_direction(g2, G2, fo, fn, variant="reference_code")) < 0
    )  # -direction ascends
    assert float(g2 @ fopng_direction(g2, G2, fo, fn)) > 0


def test_fopng_paper_name_is_a_deprecated_alias() -> None:
    """variant="paper" warns (DeprecationWarning) and gives exactly the "reference_code" direction."""
    g, G, f_old, f_new = _fopng_data(1)
    with pytest.warns(DeprecationWarning, match="reference_code"):
        old = fopng_direction(g, G, f_old, f_new, variant="paper")
    assert torch.equal(old, fopng_direction(g, G, f_old, f_new, variant="reference_code"))
    with pytest.warns(DeprecationWarning, match="reference_code"):
        learner = FOPNG(mlp((64, 16, 10), activation="relu", seed=0, dtype=D), variant="paper")
    assert (
        learner.variant == "reference_code"
        and learner.hyperparameters()["variant"] == "reference_code"
    )
    with pytest.raises(ValueError, match="variant"):
        fopng_direction(g, G, f_old, f_new, variant="authors")


def test_fopng_learner_steps_are_fisher_orthogonal(perm3: TaskStream) -> None:
    model = mlp((64, 16, 10), activation="relu", seed=0, dtype=D)
    learner = FOPNG(
        model, lr=0.05, directions_per_task=10, fisher_samples=200, fisher_refresh=5, seed=0
    )
    t0, t1 = perm3[0], perm3[1]
    learner.begin_task(t0)
    for xb, yb in list(
        minibatches(t0.x_train, t0.y_train, 32, generator=torch.Generator().manual_seed(0))
    )[:10]:
        learner.observe(xb, yb)
    learner.end_task(t0)
    assert learner.G.shape == (sum(p.numel() for p in learner.params), 10)
    learner.begin_task(t1)
    gen = torch.Generator().manual_seed(1)
    for xb, yb in list(minibatches(t1.x_train, t1.y_train, 32, generator=gen))[
        :8
    ]:  # crosses a refresh
        before = torch.cat([p.detach().reshape(-1) for p in learner.params])
        learner.observe(xb, yb)
        step = torch.cat([p.detach().reshape(-1) for p in learner.params]) - before
        c = learner.G.T @ (learner.fisher_old * step)
        scale = learner.G.abs().T @ (learner.fisher_old * step.abs())
        assert float((c.abs() / scale).max()) < 1e-8
        fn = learner.fisher_new + learner.damping
        assert abs(float(torch.sqrt(step @ (fn * step))) - 0.05) < 1e-10  # fixed Fisher-norm step
    # cached projection == the pure function
    g = torch.randn(learner.G.shape[0], generator=gen, dtype=D)
    torch.testing.assert_close(
        learner.projected_direction(g),
        fopng_direction(
            g, learner.G, learner.fisher_old, learner.fisher_new, damping=learner.damping
        ),
        rtol=1e-9,
        atol=1e-12,
    )


# ---------------------------------------------------------------------------------------------
# Gaussian learners
# ---------------------------------------------------------------------------------------------
def test_gaussian_learner_gradients_match_a_per_sample_loop(small_model_data) -> None:  # type: ignore[no-untyped-def]
    _, x, y = small_model_data
    model = mlp((5, 7, 4), activation="relu", seed=3, dtype=D)
    learner = MESULearner(model, N=100.0, num_samples=3, seed=0)
    weights, noise = learner.opt.draw_samples(generator=torch.Generator().manual_seed(9))
    captured: dict[str, list[torch.Tensor]] = {}
    learner.opt.draw_samples = lambda *a, **k: ([w.clone() for w in weights], noise)  # type: ignore[method-assign]
    learner.opt.apply_gradients = lambda gm, gs: captured.update(gm=list(gm), gs=list(gs))  # type: ignore[method-assign]
    learner.observe(x, y)
    gm = [torch.zeros_like(w[0]) for w in weights]
    gs = [torch.zeros_like(w[0]) for w in weights]
    for s in range(3):
        ws = {k: w[s].clone().requires_grad_() for k, w in zip(learner.names, weights)}
        loss = nn.functional.cross_entropy(functional_call(model, ws, (x,)), y, reduction="sum")
        grads = torch.autograd.grad(loss, list(ws.values()))
        for i, gr in enumerate(grads):
            gm[i] += gr / 3
            gs[i] += noise[i][s] * gr / 3
    for a, b in zip(captured["gm"], gm):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)
    for a, b in zip(captured["gs"], gs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


def test_uncertainty_of_point_and_bayesian_learners(perm3: TaskStream) -> None:
    x = perm3[0].x_test[:50]
    sgd = FineTuning(mlp((64, 16, 10), activation="relu", seed=0, dtype=D))
    u = uncertainty_decomposition(sgd.sample_proba(x))
    assert float(u.epistemic.abs().max()) == 0.0
    mesu = MESULearner(
        mlp((64, 16, 10), activation="relu", seed=0, dtype=D), N=100.0, num_test_samples=8
    )
    probs = mesu.sample_proba(x)
    assert probs.shape == (8, 50, 10)
    u = uncertainty_decomposition(probs)
    assert float(u.epistemic.min()) >= 0 and float(u.epistemic.mean()) > 1e-3
    torch.testing.assert_close(u.predictive, u.aleatoric + u.epistemic, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Metrics and uncertainty
# ---------------------------------------------------------------------------------------------
def test_metrics_on_a_hand_computed_matrix() -> None:
    R = torch.tensor([[0.5, 0.1, 0.1], [0.8, 0.9, 0.1], [0.6, 0.7, 0.95]], dtype=D)
    assert abs(average_accuracy(R) - (0.6 + 0.7 + 0.95) / 3) < 1e-15
    assert abs(average_accuracy(R, after=1) - 0.85) < 1e-15
    torch.testing.assert_close(newest_task_accuracy(R), torch.tensor([0.5, 0.9, 0.95], dtype=D))
    assert abs(forgetting(R) - 0.2) < 1e-15  # (0.8 - 0.6 + 0.9 - 0.7) / 2
    assert abs(backward_transfer(R) - (-0.05)) < 1e-15  # (0.1 - 0.2) / 2
    s = summarize(R)
    assert set(s) == {
        "average_accuracy",
        "newest_accuracy",
        "mean_newest_accuracy",
        "forgetting",
        "backward_transfer",
    }
    ms = mean_std([{"a": 1.0}, {"a": 3.0}])
    assert ms["a"] == (2.0, math.sqrt(2.0))


@pytest.mark.parametrize(
    ("R", "match"),
    [
        ([[0.5, 0.2]], "square"),
        ([[1.5]], r"\[0, 1\]"),
        ([[float("nan")]], r"\[0, 1\]"),
        ([], "square"),
    ],
)
def test_metrics_bad_input(R, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        average_accuracy(torch.tensor(R, dtype=D))


def test_forgetting_needs_two_tasks() -> None:
    with pytest.raises(ValueError, match="2 tasks"):
        forgetting(torch.tensor([[0.9]]))
    with pytest.raises(ValueError, match="2 tasks"):
        backward_transfer(torch.tensor([[0.9]]))


def test_entropy_and_decomposition_extremes() -> None:
    assert abs(float(entropy(torch.full((8,), 1 / 8, dtype=D))) - 3.0) < 1e-14
    same = torch.tensor([[[0.2, 0.8]]] * 5, dtype=D)  # all samples agree
    u = uncertainty_decomposition(same)
    assert (
        float(u.epistemic) == 0.0 and abs(float(u.aleatoric) - float(entropy(same[0, 0]))) < 1e-14
    )
    disagree = torch.eye(4, dtype=D).unsqueeze(1)  # 4 confident samples, 4 different classes
    u = uncertainty_decomposition(disagree)
    assert float(u.aleatoric) == 0.0 and abs(float(u.epistemic) - 2.0) < 1e-14


@settings(max_examples=40, deadline=None)
@given(
    a=st.lists(st.integers(0, 5), min_size=1, max_size=30),
    b=st.lists(st.integers(0, 5), min_size=1, max_size=30),
)
def test_roc_auc_matches_sklearn_with_ties(a: list[int], b: list[int]) -> None:
    from sklearn.metrics import roc_auc_score

    labels = [0] * len(a) + [1] * len(b)
    ref = roc_auc_score(labels, a + b) if len(set(labels)) == 2 else None
    assert ref is not None
    assert abs(roc_auc(torch.tensor(a, dtype=D), torch.tensor(b, dtype=D)) - ref) < 1e-12


def test_ood_auc_and_bad_input() -> None:
    confident = torch.tensor([[[0.99, 0.01]]] * 3, dtype=D).expand(3, 10, 2)
    unsure = torch.tensor([[[0.99, 0.01]], [[0.01, 0.99]], [[0.5, 0.5]]], dtype=D).expand(3, 10, 2)
    assert ood_auc(confident, unsure, score="epistemic") == 1.0
    assert ood_auc(unsure, confident, score="predictive") == 0.0
    with pytest.raises(ValueError, match="score"):
        ood_auc(confident, unsure, score="total")
    with pytest.raises(ValueError, match="non-empty"):
        roc_auc(torch.tensor([]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="finite"):
        roc_auc(torch.tensor([math.nan]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match=r"\(S, n, C\)"):
        uncertainty_decomposition(torch.ones(3, 2))
    with pytest.raises(ValueError, match="sum to 1"):
        uncertainty_decomposition(torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match=">= 0"):
        entropy(torch.tensor([-0.1, 1.1]))


# ---------------------------------------------------------------------------------------------
# Runner: reproducibility, modes, task-incremental masking
# ---------------------------------------------------------------------------------------------
def _tiny_stream(scenario: str = "perm") -> TaskStream:
    full = permuted_digits(2, seed=3) if scenario == "perm" else split_digits(scenario)
    tasks = tuple(
        Task(
            t.index,
            t.name,
            t.x_train[:160],
            t.y_train[:160],
            t.x_test[:80],
            t.y_test[:80],
            t.classes,
            t.active_classes,
        )
        for t in full.tasks[:2]
    )
    return TaskStream(full.name, full.scenario, tasks, full.num_inputs, full.num_classes)


@pytest.mark.parametrize("method", ["sgd", "ewc", "online_ewc", "si", "bgd", "mesu", "fopng"])
def test_seeded_runs_are_reproducible(method: str) -> None:
    stream = _tiny_stream()
    kw = {"fisher_samples": 64} if method == "fopng" else {}
    results = [
        run_stream(
            make_learner(method, mlp((64, 16, 10), activation="relu", seed=2), seed=5, **kw),
            stream,
            batch_size=16,
            epochs=2,
            seed=1,
        )
        for _ in range(2)
    ]
    assert torch.equal(results[0].accuracy, results[1].accuracy)
    assert (
        results[0].accuracy.shape == (2, 2) and float(results[0].accuracy[0, 0]) > 0.2
    )  # it learns (chance 0.1)


def test_streaming_mode() -> None:
    stream = _tiny_stream()
    a = run_stream(
        MESULearner(mlp((64, 16, 10), activation="relu", seed=2), N=200.0, num_samples=2),
        stream,
        batch_size=32,
        task_boundaries=False,
    )
    b = run_stream(
        MESULearner(mlp((64, 16, 10), activation="relu", seed=2), N=200.0, num_samples=2),
        stream,
        batch_size=32,
        task_boundaries=True,
    )
    assert torch.equal(a.accuracy, b.accuracy)  # MESU never uses task boundaries
    with pytest.raises(ValueError, match="task boundaries"):
        run_stream(EWC(mlp((64, 16, 10), activation="relu")), stream, task_boundaries=False)
    c = run_stream(
        FineTuning(mlp((64, 16, 10), activation="relu")), stream, batch_size=32, eval_every=3
    )
    assert (
        c.curve is not None and c.curve.shape == (len(c.curve_steps), 2) and c.curve_steps[0] == 3
    )


def test_task_incremental_predictions_stay_in_the_task() -> None:
    stream = _tiny_stream("task")
    learner = FineTuning(mlp((64, 16, 10), activation="relu", seed=0))
    res = run_stream(learner, stream, batch_size=32, epochs=2)
    for t in stream:
        pred = learner.predict(t.x_test, t.active_classes)
        assert set(pred.tolist()) <= set(t.classes)
    assert float(res.accuracy[1, 1]) > 0.8


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda m: EWC(m, lam=-1.0), "lam"),
        (lambda m: EWC(m, fisher="hessian"), "fisher"),
        (lambda m: OnlineEWC(m, gamma=1.5), "gamma"),
        (lambda m: SI(m, xi=0.0), "xi"),
        (lambda m: FineTuning(m, lr=0.0), "lr"),
        (lambda m: FineTuning(m, optimizer="lbfgs"), "optimizer"),
        (lambda m: MESULearner(m, N=0.5), "memory window"),
        (lambda m: MESULearner(m, sigma_prior=-1.0), "sigma_prior"),
        (lambda m: MESULearner(m, sigma_prior=0.0), "sigma_prior"),
        (lambda m: BGDLearner(m, reduction="max"), "reduction"),
        (lambda m: FOPNG(m, variant="ogd"), "variant"),
        (lambda m: FOPNG(m, damping=0.0), "damping"),
        (lambda m: FOPNG(m, fisher_mix=1.5), "fisher_mix"),
        (lambda m: make_learner("lwf", m), "method"),
        (lambda m: diagonal_fisher(m, torch.zeros(3, 64), kind="hessian"), "kind"),
        (lambda m: diagonal_fisher(m, torch.zeros(3, 64), fisher_type="wishart"), "fisher_type"),
        (lambda m: diagonal_fisher(m, torch.zeros(3, 64), fisher_type="empirical"), "labels"),
        (lambda m: diagonal_fisher(m, torch.zeros(0, 64)), "empty"),
        (lambda m: diagonal_fisher(m, torch.zeros(3, 64), active=[10]), "active"),
        (lambda m: diagonal_fisher(m, torch.zeros(3, 64), batch_size=4), "batch_size"),
        (
            lambda m: batched_gradient_diagonal(
                m, torch.zeros(3, 64), torch.zeros(3, dtype=torch.long), batch_size=0
            ),
            "batch_size",
        ),
        (lambda m: run_stream(FineTuning(m), _tiny_stream(), epochs=0), "epochs"),
        (
            lambda m: fopng_direction(
                torch.zeros(3), torch.zeros(2, 1), torch.ones(3), torch.ones(3)
            ),
            "directions",
        ),
        (
            lambda m: fopng_direction(
                torch.zeros(3), torch.zeros(3, 1), -torch.ones(3), torch.ones(3)
            ),
            "fisher_old",
        ),
        (
            lambda m: fopng_direction(
                torch.zeros(3), torch.zeros(3, 1), torch.ones(3), torch.zeros(3)
            ),
            "damping",
        ),
    ],
)
def test_learner_bad_input(build, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        build(mlp((64, 8, 10), activation="relu"))


def test_learner_type_errors() -> None:
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        FineTuning("not a model")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ContinualLearner"):
        run_stream("sgd", _tiny_stream())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no trainable parameters"):
        FineTuning(nn.ReLU())


# ----- self-checks of the chapter's exercises --------------------------------------------------------
def test_continual_exercise_self_checks_accept_right_and_explain_wrong_answers() -> None:
    from igbook.exercises import continual_learning as ex

    f, w, ws = [2.0, 0.5], [1.0, -1.0], [0.0, 1.0]
    right = 0.5 * 3.0 * (2.0 * 1.0 + 0.5 * 4.0)
    assert ex.check_ewc_penalty(right, f, w, ws, lam=3.0)
    fb = ex.check_ewc_penalty(2 * right, f, w, ws, lam=3.0)
    assert not fb and "factor of 2" in fb.message
    assert not ex.check_ewc_penalty(float("nan"), f, w, ws, lam=3.0)

    h, n, sp = 4.0, 100.0, 0.5
    var = 1.0 / (n * h + 1.0 / sp**2)
    assert ex.check_stationary_variance(var, h, n, sp)
    assert "standard deviation" in ex.check_stationary_variance(var**0.5, h, n, sp).message
    assert "prior" in ex.check_stationary_variance(1.0 / (n * h), h, n, sp).message
    assert not ex.check_stationary_variance("not a number", h, n, sp)

    h, lr, d0, steps = 2.0, 0.1, 1.5, 7
    r = 1 - lr * h
    omega = sum(lr * (h * d0 * r**t) ** 2 for t in range(steps))  # sum of eta g_t^2 along the path
    assert ex.check_si_path_integral(omega, h, lr, d0, steps)
    cont = 0.5 * h * d0**2 * (1 - r ** (2 * steps))
    assert "continuous path integral" in ex.check_si_path_integral(cont, h, lr, d0, steps).message

    R = [[0.9, 0.0, 0.0], [0.95, 0.8, 0.0], [0.7, 0.6, 0.9]]  # task 1 peaks after task 2
    forg = ((0.95 - 0.7) + (0.8 - 0.6)) / 2
    bwt = ((0.7 - 0.9) + (0.6 - 0.8)) / 2
    assert ex.check_forgetting(forg, R) and ex.check_backward_transfer(bwt, R)
    assert "best" in ex.check_forgetting(-bwt, R).message
    assert not ex.check_backward_transfer(-bwt, R)

    # (2 (N H + 1/sp^2) - 1/sp^2) / H minibatches; "about 2N" is accepted within 5%
    assert ex.check_halving_time(10_200, 5000, 0.02, 0.5) and ex.check_halving_time(
        10_000, 5000, 0.02, 0.5
    )
    assert "twice that precision" in ex.check_halving_time(5000, 5000, 0.02, 0.5).message
    assert not ex.check_halving_time(20_000, 5000, 0.02, 0.5)
    assert ex.check_batched_lambda(80, 5000, 64) and not ex.check_batched_lambda(5000, 5000, 64)
    assert "other way round" in ex.check_batched_lambda(5000 * 64, 5000, 64).message
