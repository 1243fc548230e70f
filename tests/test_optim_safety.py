"""Every optimizer of igbook.optim, igbook.kfac and igbook.natgrad survives a failing step.

The matrix of issue 19, for IVON, Vadam, VON, VOGN, BGD, MESU, KFAC, DenseNaturalGradient and
NaturalGradientDescent (and Muon), in float32 and float64:

- a NaN or infinite gradient raises an error that says so (``nonfinite="raise"``) or skips the
  step (``"skip"``), and writes nothing;
- a closure that raises on the first or on a later Monte Carlo sample leaves parameters,
  optimizer state and generator as before the call;
- after either failure, the next good step gives *bitwise* the result of a run in which the
  failed step never happened (the independent path: a second run that skips that batch);
- parameters with ``.grad is None`` are not moved;
- ``state_dict``/``load_state_dict`` mid-training continue bit for bit.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from igbook._safety import NonFiniteStepError
from igbook.kfac import KFAC, DenseNaturalGradient
from igbook.natgrad import NaturalGradientDescent
from igbook.optim import (
    BGD,
    IVON,
    MESU,
    VOGN,
    VON,
    Muon,
    PerExampleClosure,
    Vadam,
    muon_param_groups,
    sampled_params,
)

# the unused parameter sits on the Net module itself, which K-FAC leaves unpreconditioned
pytestmark = pytest.mark.filterwarnings("ignore:K-FAC leaves these layers unpreconditioned")

NAMES = ["IVON", "Vadam", "VON", "VOGN", "BGD", "MESU", "KFAC", "DenseNG", "NGD", "Muon"]
SAMPLING = {"IVON", "Vadam", "VON", "VOGN", "BGD", "MESU"}  # two Monte Carlo samples per step
DTYPES = [torch.float32, torch.float64]


class Net(nn.Module):
    """A two-layer classifier with one parameter that the loss never uses (``.grad is None``)."""

    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(3, 4)
        self.l2 = nn.Linear(4, 2)
        self.unused = nn.Parameter(torch.full((3,), 0.5))

    def forward(self, x: Tensor) -> Tensor:
        return self.l2(torch.tanh(self.l1(x)))


class Boom(Exception):
    pass


def make(name: str, dtype: torch.dtype, nonfinite: str = "raise", **kw: Any) -> tuple[Net, Any]:
    torch.manual_seed(0)
    model = Net().to(dtype)
    if name == "VOGN":
        model.unused.requires_grad_(False)  # VOGN's "no gradient": requires_grad=False
    ps = model.parameters()
    common: dict[str, Any] = {"nonfinite": nonfinite, **kw}
    if name == "IVON":
        opt = IVON(ps, lr=0.1, ess=100.0, mc_samples=2, seed=1, **common)
    elif name == "Vadam":
        opt = Vadam(ps, lr=0.01, data_size=100, mc_samples=2, seed=1, **common)
    elif name == "VON":
        opt = VON(
            ps,
            lr=0.05,
            data_size=100,
            beta=0.9,
            prior_precision=10.0,
            mc_samples=2,
            seed=1,
            **common,
        )
    elif name == "VOGN":
        opt = VOGN(
            ps, lr=0.05, data_size=100, beta=0.9, mc_samples=2, fisher_type="mc", seed=1, **common
        )
    elif name == "BGD":
        opt = BGD(ps, sigma_init=0.05, num_samples=2, seed=1, **common)
    elif name == "MESU":
        opt = MESU(
            ps,
            sigma_prior=1.0,
            N=100,
            sigma_init=0.05,
            momentum_mu=0.5,
            num_samples=2,
            seed=1,
            **common,
        )
    elif name == "KFAC":
        opt = KFAC(
            model,
            lr=0.1,
            momentum=0.9,
            damping=1e-2,
            likelihood="categorical",
            inverse_period=2,
            seed=1,
            **common,
        )
    elif name == "DenseNG":
        opt = DenseNaturalGradient(
            model,
            likelihood="categorical",
            lr=0.5,
            damping=1e-2,
            momentum=0.5,
            fisher_type="mc",
            seed=1,
            **common,
        )
    elif name == "Muon":  # hidden matrices by Muon, biases and the unused vector by AdamW
        opt = Muon(muon_param_groups(model, head=False), lr=0.02, **common)
    else:
        opt = NaturalGradientDescent(
            model.parameters(),
            model,
            "categorical",
            lr=0.5,
            damping=1e-2,
            fisher_type="mc",
            seed=1,
            **common,
        )
    return model, opt


def batches(dtype: torch.dtype, n: int = 4) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(7)
    return [
        (torch.randn(6, 3, generator=g).to(dtype), torch.randint(0, 2, (6,), generator=g))
        for _ in range(n)
    ]


Fault = tuple[str, int] | None  # ("nan" | "inf" | "raise", sample index)


def _bad(kind: str) -> float:
    return math.nan if kind == "nan" else math.inf


def do_step(
    name: str, model: Net, opt: Any, batch: tuple[Tensor, Tensor], fault: Fault = None
) -> Any:
    x, y = batch
    calls = [0]

    def hit(kind: str) -> bool:
        return fault is not None and fault[0] == kind and calls[0] == fault[1]

    if name in ("IVON", "Vadam", "BGD", "MESU"):

        def closure() -> Tensor:
            try:
                if hit("raise"):
                    raise Boom
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                for kind in ("nan", "inf"):
                    if hit(kind):
                        model.l1.weight.grad[0, 0] = _bad(kind)
                return loss
            finally:
                calls[0] += 1

        return opt.step(closure)
    if name == "VON":

        def von_closure() -> Tensor:
            try:
                if hit("raise"):
                    raise Boom
                loss = F.cross_entropy(model(x), y)
                for kind in ("nan", "inf"):
                    if hit(kind):
                        loss = loss + _bad(kind) * model.l1.weight[0, 0]
                return loss
            finally:
                calls[0] += 1

        return opt.step(von_closure)
    if name == "VOGN":

        class Faulty(PerExampleClosure):
            def per_example_gradients(self, params: Any, targets: Tensor | None = None) -> Any:
                if targets is not None:  # the sampled-target call of the same sample
                    return super().per_example_gradients(params, targets)
                try:
                    if hit("raise"):
                        raise Boom
                    losses, grads = super().per_example_gradients(params, targets)
                    for kind in ("nan", "inf"):
                        if hit(kind):
                            grads = [g.clone() for g in grads]
                            i = next(j for j, p in enumerate(params) if p.ndim == 2)
                            grads[i][0, 0, 0] = _bad(kind)
                    return losses, grads
                finally:
                    calls[0] += 1

        return opt.step(Faulty(model, x, y))
    # one evaluation per step: the fault is in the closure or in the gradient
    opt.zero_grad()
    out = model(x)
    loss = F.cross_entropy(out, y)
    if name == "KFAC":
        opt.update_factors(out)
    elif name == "DenseNG":
        opt.update_curvature(x)
    loss.backward()
    for kind in ("nan", "inf"):
        if hit(kind):
            model.l1.weight.grad[0, 0] = _bad(kind)

    def raising() -> Tensor:
        raise Boom

    closure = raising if hit("raise") else None
    if name == "NGD":
        return opt.step(closure, inputs=x)
    return opt.step(closure)


def snapshot(model: Net, opt: Any) -> Any:
    gen = getattr(opt, "_generator", None) or getattr(opt, "generator", None)
    return (
        copy.deepcopy({k: v.detach().clone() for k, v in model.state_dict().items()}),
        copy.deepcopy(opt.state_dict()),
        None if gen is None else gen.get_state().clone(),
    )


def same(a: Any, b: Any) -> bool:
    """Bitwise equality of nested state (tensors by torch.equal)."""
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return (
            isinstance(a, Tensor)
            and isinstance(b, Tensor)
            and a.dtype == b.dtype
            and torch.equal(a, b)
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return (
            isinstance(b, (list, tuple))
            and len(a) == len(b)
            and all(same(x, y) for x, y in zip(a, b))
        )
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def run(
    name: str, dtype: torch.dtype, faults: dict[int, Fault], skip: set[int] = frozenset(), **kw: Any
) -> Any:
    """Steps over four batches; ``faults[i]`` breaks step i, ``skip`` leaves batches out."""
    model, opt = make(name, dtype, **kw)
    data = batches(dtype)
    for i, b in enumerate(data):
        if i in skip:
            continue
        f = faults.get(i)
        if f is None:
            do_step(name, model, opt, b)
            continue
        before = snapshot(model, opt)
        if f[0] == "raise":
            with pytest.raises(Boom):
                do_step(name, model, opt, b, f)
        elif kw.get("nonfinite", "raise") == "raise":
            with pytest.raises(FloatingPointError, match="not finite"):
                do_step(name, model, opt, b, f)
        else:
            do_step(name, model, opt, b, f)
            assert opt.skipped_steps == 1
        assert same(snapshot(model, opt), before), f"{name}: a failed step left a trace"
    return snapshot(model, opt)


def _faults(name: str) -> list[tuple[str, int]]:
    later = [1] if name in SAMPLING else []
    return [(k, s) for k in ("nan", "inf", "raise") for s in [0, *later]]


CASES = [(n, k, s) for n in NAMES for k, s in _faults(n)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize(
    ("name", "kind", "sample"), CASES, ids=[f"{n}-{k}{s}" for n, k, s in CASES]
)
def test_failed_step_leaves_no_trace(name: str, kind: str, sample: int, dtype: torch.dtype) -> None:
    """A NaN/inf gradient or a raising closure at batch 1: nothing changes, and batches 0, 2, 3
    then give bitwise what a run that never saw batch 1 gives."""
    failed = run(name, dtype, {1: (kind, sample)})
    reference = run(name, dtype, {}, skip={1})
    assert same(failed[0], reference[0]), (
        f"{name}: parameters differ from the run without the failed step"
    )
    assert same(failed[1], reference[1]), (
        f"{name}: optimizer state differs from the run without the failed step"
    )


@pytest.mark.parametrize("name", NAMES)
def test_skip_mode_skips_nonfinite_steps(name: str) -> None:
    skipped = run(name, torch.float64, {2: ("nan", 0)}, nonfinite="skip")
    reference = run(name, torch.float64, {}, skip={2})
    assert same(skipped[0], reference[0]) and same(skipped[1], reference[1])


@pytest.mark.parametrize("name", NAMES)
def test_nonfinite_error_names_the_parameter(name: str) -> None:
    model, opt = make(name, torch.float64)
    with pytest.raises(NonFiniteStepError) as info:
        do_step(name, model, opt, batches(torch.float64)[0], ("nan", 0))
    msg = str(info.value)
    assert "not finite" in msg and "parameter" in msg
    assert isinstance(info.value, ValueError) and isinstance(info.value, FloatingPointError)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", NAMES)
def test_parameter_without_gradient_is_not_moved(name: str, dtype: torch.dtype) -> None:
    model, opt = make(name, dtype)
    w0 = model.unused.detach().clone()
    l0 = model.l1.weight.detach().clone()
    for b in batches(dtype, 2):
        do_step(name, model, opt, b)
    assert torch.equal(model.unused.detach(), w0), f"{name} moved a parameter without a gradient"
    assert not torch.equal(model.l1.weight.detach(), l0), f"{name} did not train at all"


@pytest.mark.parametrize("name", ["IVON", "Vadam", "VON", "VOGN"])
def test_move_without_grad_option_applies_the_prior_pull(name: str) -> None:
    model, opt = make(name, torch.float64, move_without_grad=True)
    if name == "VOGN":
        model.unused.requires_grad_(False)
    w0 = model.unused.detach().clone()
    do_step(name, model, opt, batches(torch.float64)[0])
    # the prior pulls a zero-gradient mean towards 0: |w| strictly decreases, sign kept
    assert bool((model.unused.detach().abs() < w0.abs()).all())
    assert bool((model.unused.detach() > 0).all())


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_mid_training_is_bitwise(name: str, dtype: torch.dtype) -> None:
    data = batches(dtype)
    model, opt = make(name, dtype)
    for b in data:
        do_step(name, model, opt, b)
    straight = snapshot(model, opt)

    model, opt = make(name, dtype)
    for b in data[:2]:
        do_step(name, model, opt, b)
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(opt.state_dict())
    for b in data[2:3]:  # disturb the live objects: the resumed run must not depend on them
        do_step(name, model, opt, b)
    model2, opt2 = make(
        name, dtype
    )  # fresh objects: generators and counters come from the state dict
    model2.load_state_dict(saved_model)
    opt2.load_state_dict(saved_opt)
    for b in data[2:]:
        do_step(name, model2, opt2, b)
    resumed = snapshot(model2, opt2)
    assert same(straight[0], resumed[0]), f"{name}: resumed parameters differ"
    assert same(straight[1], resumed[1]), f"{name}: resumed optimizer state differs"


@pytest.mark.parametrize("cls", [BGD, MESU])
def test_sampled_params_function_works_for_mean_field_optimizers(cls: Callable[..., Any]) -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    opt = cls(model.parameters(), sigma_init=0.1, num_samples=2, seed=3)
    w0 = model.weight.detach().clone()
    with sampled_params(opt):
        assert not torch.equal(model.weight.detach(), w0)
    assert torch.equal(model.weight.detach(), w0)
    with pytest.raises(Boom), sampled_params(opt):
        raise Boom
    assert torch.equal(model.weight.detach(), w0)
    with pytest.raises(ValueError, match="train=True"), sampled_params(opt, train=True):
        pass


def test_mean_field_apply_gradients_checks_before_writing() -> None:
    torch.manual_seed(0)
    a, b = (
        nn.Parameter(torch.ones(2, dtype=torch.float64)),
        nn.Parameter(torch.ones(2, dtype=torch.float64)),
    )
    opt = MESU([a, b], sigma_prior=1.0, N=10, sigma_init=0.1, num_samples=1)
    sig = [s.clone() for s in opt.sigmas()]
    good = torch.zeros(2, dtype=torch.float64)
    bad = torch.tensor([0.0, math.inf], dtype=torch.float64)
    with pytest.raises(FloatingPointError, match="parameter #1"):
        opt.apply_gradients([good, bad], [good, good])
    assert torch.equal(
        a.detach(), torch.ones(2, dtype=torch.float64)
    )  # the first one was not written either
    assert all(torch.equal(s, t) for s, t in zip(opt.sigmas(), sig))
    # an update that would make sigma <= 0 is undone before the error
    with pytest.raises(RuntimeError, match="standard deviation"):
        opt.apply_gradients([good, good], [good, torch.full((2,), 1e5, dtype=torch.float64)])
    assert all(torch.equal(s, t) for s, t in zip(opt.sigmas(), sig))
    assert torch.equal(a.detach(), torch.ones(2, dtype=torch.float64))


def test_kfac_nonfinite_activations_raise_before_the_factors_change() -> None:
    model, opt = make("KFAC", torch.float64)
    x, y = batches(torch.float64)[0]
    out = model(x)
    opt.update_factors(out)
    F.cross_entropy(out, y).backward()
    opt.step()
    before = copy.deepcopy(opt.preconditioner.state_dict())
    x = x.clone()
    x[0, 0] = math.nan
    with pytest.raises(FloatingPointError, match="curvature statistic"):
        opt.update_factors(model(x))
    assert same(opt.preconditioner.state_dict(), before)


def test_optimizer_option_validation() -> None:
    model = Net().double()
    with pytest.raises(ValueError, match="nonfinite"):
        IVON(model.parameters(), lr=0.1, ess=10, nonfinite="ignore")
    with pytest.raises(TypeError, match="nonfinite"):
        BGD(model.parameters(), nonfinite=1)
    with pytest.raises(ValueError, match="nonfinite"):
        KFAC(model, likelihood="categorical", nonfinite="warn")
    with pytest.raises(TypeError, match="move_without_grad"):
        Vadam(model.parameters(), move_without_grad="yes")


@pytest.mark.parametrize("name", ["IVON", "Vadam"])
def test_manual_samples_with_a_nonfinite_gradient_are_dropped(name: str) -> None:
    model, opt = make(name, torch.float64)
    x, y = batches(torch.float64)[0]
    with opt.sampled_params(train=True):
        F.cross_entropy(model(x), y).backward()
        model.l2.bias.grad[1] = math.inf
    before = snapshot(model, opt)
    with pytest.raises(FloatingPointError, match="not finite"):
        opt.step()
    assert same(snapshot(model, opt), before)
    do_step(name, model, opt, batches(torch.float64)[1])  # no stale samples block the next step
    assert opt.state[model.l1.weight]["step"] == 1
