"""igbook.rl: exact tabular MDPs and LQR, policy Fishers, PG/NPG/TRPO/PPO updates, rollouts.

Every claim is checked by an independent path: finite differences and autograd of the exact
return, Monte Carlo score covariances with their standard errors, dynamic programming, the
closed-form Riccati solution, dense Fishers built from autograd scores.
"""

from __future__ import annotations

import math

import pytest
import torch

from igbook.fisher import fisher_monte_carlo, score_covariance
from igbook.rl import (
    CategoricalPolicy,
    GaussianPolicy,
    ScalarLQR,
    TabularMDP,
    advantages,
    categorical_kl,
    collect_rollout,
    discounted_occupancy,
    expected_return,
    gae,
    lqr_fisher,
    lqr_gain_value,
    lqr_gradient,
    lqr_natural_gradient,
    lqr_optimal_gain,
    lqr_return,
    lqr_second_moment,
    natural_policy_gradient,
    npg_step,
    npg_step_network,
    policy_evaluation,
    policy_fisher,
    policy_iterates,
    policy_parameters,
    ppo_clip_loss,
    random_mdp,
    returns_to_go,
    riccati_iteration,
    softmax_policy,
    softmax_policy_fisher,
    softmax_policy_gradient,
    surrogate_gradient,
    trpo_step,
    two_state_mdp,
    value_iteration,
)

D = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: one thread (extra threads only add synchronization on a shared machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _logits(mdp: TabularMDP, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(mdp.num_states, mdp.num_actions, generator=g, dtype=D)


# ---------------------------------------------------------------- tabular: exact quantities
def test_occupancy_is_the_discounted_power_series():
    mdp = random_mdp(6, 3, 0.8, seed=0)
    pi = softmax_policy(_logits(mdp))
    p_pi = torch.einsum("sa,sat->st", pi, mdp.transitions)
    series, m = torch.zeros(6, dtype=D), mdp.initial.clone()
    for t in range(400):  # 0.8^400 < 1e-38
        series += (1 - mdp.gamma) * mdp.gamma**t * m
        m = m @ p_pi
    d = discounted_occupancy(mdp, pi)
    assert torch.allclose(d, series, rtol=0, atol=1e-13)
    assert abs(float(d.sum()) - 1) < 1e-13


def test_value_iteration_is_optimal():
    mdp = random_mdp(8, 4, 0.9, seed=3)
    v_star, greedy = value_iteration(mdp, tol=1e-12)
    # the greedy policy's exact value equals V* (one linear solve, an independent path)
    assert torch.allclose(policy_evaluation(mdp, greedy), v_star, rtol=0, atol=1e-10)
    # and no random policy beats it anywhere
    for seed in range(20):
        pi = softmax_policy(3 * _logits(mdp, seed))
        assert bool((policy_evaluation(mdp, pi) <= v_star + 1e-10).all())


def test_advantages_are_centred_under_the_policy():
    mdp = random_mdp(5, 3, 0.9, seed=1)
    pi = softmax_policy(_logits(mdp))
    assert float((pi * advantages(mdp, pi)).sum(-1).abs().max()) < 1e-12


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_policy_gradient_theorem_matches_finite_differences(seed):
    mdp = random_mdp(5, 3, 0.9, seed=seed)
    th = _logits(mdp, seed + 10)
    g = softmax_policy_gradient(mdp, th)
    h = 1e-6
    fd = torch.zeros_like(th)
    for s in range(5):
        for a in range(3):
            e = torch.zeros_like(th)
            e[s, a] = h
            fd[s, a] = (
                expected_return(mdp, softmax_policy(th + e))
                - expected_return(mdp, softmax_policy(th - e))
            ) / (2 * h)
    assert torch.allclose(g, fd, rtol=0, atol=1e-8)
    # and autograd through the linear solve
    auto = torch.func.grad(lambda t: expected_return(mdp, torch.softmax(t, -1)))(th)
    assert torch.allclose(g, auto, rtol=0, atol=1e-12)


def _sa_log_prob(num_states: int, num_actions: int):
    def log_prob(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        s_hot = (torch.arange(num_states, dtype=D) == x[0]).to(D)
        a_hot = (torch.arange(num_actions, dtype=D) == x[1]).to(D)
        lp = torch.log_softmax(theta.reshape(num_states, num_actions), -1)
        return (s_hot[:, None] * a_hot[None, :] * lp).sum()

    return log_prob


def test_softmax_policy_fisher_matches_monte_carlo_score_covariance():
    mdp = random_mdp(4, 3, 0.8, seed=2)
    th = _logits(mdp)
    pi = softmax_policy(th)
    d = discounted_occupancy(mdp, pi)

    def sampler(n: int, g: torch.Generator) -> torch.Tensor:
        s = torch.multinomial(d, n, replacement=True, generator=g)
        a = torch.multinomial(pi[s], 1, generator=g)[:, 0]
        return torch.stack([s, a], 1).to(D)

    f_mc, se = fisher_monte_carlo(_sa_log_prob(4, 3), th.flatten(), sampler, 40_000, seed=0)
    f = softmax_policy_fisher(mdp, th)
    z = (f_mc - f).abs() / (se + 1e-300)
    assert float(z[se > 0].max()) < 5.0  # every entry within 5 standard errors
    assert bool((f_mc[se == 0] == f[se == 0]).all())  # the exact zeros (off-state blocks)
    # the exact expectation over (s, a) through autograd scores equals the closed form
    support = torch.tensor([[s, a] for s in range(4) for a in range(3)], dtype=D)
    w = (d[:, None] * pi).flatten()
    f_exact = score_covariance(_sa_log_prob(4, 3), th.flatten(), support, w)
    assert torch.allclose(f, f_exact, rtol=0, atol=1e-13)


def test_natural_policy_gradient_solves_the_fisher_system_with_minimum_norm():
    mdp = random_mdp(5, 4, 0.9, seed=4)
    th = _logits(mdp)
    w = natural_policy_gradient(mdp, th).flatten()
    f = softmax_policy_fisher(mdp, th)
    g = softmax_policy_gradient(mdp, th).flatten()
    assert torch.allclose(w, torch.linalg.pinv(f, hermitian=True) @ g, rtol=0, atol=1e-9)
    assert torch.allclose(f @ w, g, rtol=0, atol=1e-12)


def test_compatible_function_approximation():
    """Kakade: the least-squares fit of A by the score has weights (1 - gamma) F^+ grad V."""
    mdp = random_mdp(6, 3, 0.9, seed=5)
    th = _logits(mdp)
    pi = softmax_policy(th)
    d = discounted_occupancy(mdp, pi)
    adv = advantages(mdp, pi)
    rows, targets, weights = [], [], []
    for s in range(6):
        for a in range(3):
            psi = torch.zeros(6, 3, dtype=D)
            psi[s] = -pi[s]
            psi[s, a] += 1.0  # the score of log pi(a|s) in the logits
            rows.append(psi.flatten())
            targets.append(adv[s, a])
            weights.append(d[s] * pi[s, a])
    sw = torch.stack(weights).sqrt()
    design = torch.stack(rows) * sw[:, None]
    fit = torch.linalg.pinv(design) @ (torch.stack(targets) * sw)  # minimum-norm least squares
    npg = natural_policy_gradient(mdp, th).flatten()
    assert torch.allclose(fit, (1 - mdp.gamma) * npg, rtol=0, atol=1e-10)
    # the fit is exact: the advantage lies in the span of the scores
    assert float((design @ fit - torch.stack(targets) * sw).abs().max()) < 1e-12


def _reparam(phi: torch.Tensor) -> torch.Tensor:
    """A nonlinear invertible chart of the same logits: theta = M (phi + phi^3 / 3) per state."""
    m = torch.tensor([[1.0, 0.5, 0.0], [0.2, 1.0, -0.3], [0.0, 0.4, 1.0]], dtype=D)
    return (phi + phi**3 / 3) @ m.T


def test_npg_is_invariant_to_the_parameterization():
    mdp = random_mdp(4, 3, 0.9, seed=6)
    phi = 0.5 * _logits(mdp)
    th = _reparam(phi)
    pi = softmax_policy(th)
    d = discounted_occupancy(mdp, pi)

    def ret(p: torch.Tensor) -> torch.Tensor:
        return expected_return(mdp, torch.softmax(_reparam(p.reshape(4, 3)), -1))

    g_phi = torch.func.grad(ret)(phi.flatten())
    support = torch.tensor([[s, a] for s in range(4) for a in range(3)], dtype=D)

    def log_prob_phi(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return _sa_log_prob(4, 3)(_reparam(p.reshape(4, 3)).flatten(), x)

    f_phi = score_covariance(log_prob_phi, phi.flatten(), support, (d[:, None] * pi).flatten())
    w_phi = torch.linalg.pinv(f_phi, hermitian=True) @ g_phi
    # the policy's velocity d pi / dt along each natural gradient, in the two charts
    jac = torch.func.jacrev(lambda p: _reparam(p.reshape(4, 3)).flatten())(phi.flatten())
    pi_of = lambda t: torch.softmax(t.reshape(4, 3), -1).flatten()  # noqa: E731
    vel_phi = torch.func.jvp(pi_of, (th.flatten(),), (jac @ w_phi,))[1]
    vel_th = torch.func.jvp(pi_of, (th.flatten(),), (natural_policy_gradient(mdp, th).flatten(),))[
        1
    ]
    assert torch.allclose(vel_phi, vel_th, rtol=0, atol=1e-9)
    # the vanilla gradients move the policy differently in the two charts (the check can fail)
    vel_g_phi = torch.func.jvp(pi_of, (th.flatten(),), (jac @ g_phi,))[1]
    vel_g_th = torch.func.jvp(
        pi_of, (th.flatten(),), (softmax_policy_gradient(mdp, th).flatten(),)
    )[1]
    assert float((vel_g_phi - vel_g_th).abs().max()) > 1e-2


def test_npg_step_is_multiplicative_weights():
    mdp = random_mdp(5, 3, 0.9, seed=7)
    th = _logits(mdp)
    for eta in (0.1, 1.0, 5.0):
        mw = npg_step(mdp, softmax_policy(th), eta)
        via_logits = softmax_policy(th + eta * natural_policy_gradient(mdp, th))
        assert torch.allclose(mw, via_logits, rtol=0, atol=1e-13)


@pytest.mark.parametrize("seed", range(4))
def test_npg_sublinear_rate_of_agarwal_et_al(seed):
    """V* - V^T <= log|A| / (eta T) + 1 / ((1 - gamma)^2 T) from the uniform policy (Agarwal et al. 2021, Thm 16)."""
    mdp = random_mdp(10, 4, 0.9, seed=seed)
    v_star = float(mdp.initial @ value_iteration(mdp, tol=1e-12)[0])
    eta, steps = 0.5, 60
    rets, _ = policy_iterates(mdp, torch.zeros(10, 4, dtype=D), eta, steps, method="npg")
    gap = v_star - rets.numpy()
    t = torch.arange(1, steps + 1, dtype=D).numpy()
    bound = math.log(4) / (eta * t) + 1 / ((1 - mdp.gamma) ** 2 * t)
    assert (gap[1:] <= bound + 1e-12).all()
    assert (gap >= -1e-10).all()
    assert (rets[1:] >= rets[:-1] - 1e-12).all()  # NPG improves monotonically


@pytest.mark.parametrize("seed", range(4))
def test_npg_linear_rate_with_geometric_steps(seed):
    """eta_k = eta_0 / gamma^k: V* - V^k <= gamma^k (V* - V^0 + log|A| / ((1-gamma) eta_0)) (Xiao 2022)."""
    mdp = random_mdp(10, 4, 0.9, seed=seed)
    v_star = float(mdp.initial @ value_iteration(mdp, tol=1e-13)[0])
    eta0, steps = 1.0, 80
    lrs = [eta0 / mdp.gamma**k for k in range(steps)]
    rets, _ = policy_iterates(mdp, torch.zeros(10, 4, dtype=D), lrs, steps, method="npg")
    gap = v_star - rets.numpy()
    k = torch.arange(steps + 1, dtype=D).numpy()
    bound = mdp.gamma**k * (gap[0] + math.log(4) / ((1 - mdp.gamma) * eta0))
    assert (gap <= bound + 1e-12).all()
    assert bound[-1] < 5e-3  # the bound has teeth: after 80 steps it is below 0.05% of V*


def test_pg_plateau_and_npg_escape():
    """From a near-deterministic bad policy, exact PG crawls while NPG escapes at once."""
    mdp = two_state_mdp(0.9)
    v_star = float(mdp.initial @ value_iteration(mdp)[0])
    th0 = torch.tensor([[4.0, -4.0], [0.0, 0.0]], dtype=D)  # almost always "stay in state 0"
    pg, _ = policy_iterates(mdp, th0, 1.0, 300, method="pg")
    npg, _ = policy_iterates(mdp, th0, 1.0, 300, method="npg")

    def first_within(r: torch.Tensor, tol: float) -> int:
        hits = torch.nonzero(v_star - r < tol)
        return int(hits[0]) if len(hits) else 10**9

    assert first_within(npg, 0.1) <= 10
    assert first_within(pg, 0.1) > 10 * first_within(npg, 0.1)


# --------------------------------------------------------------------------------- LQR
LQR = ScalarLQR(a=1.1, b=0.5, q=1.0, r=0.5, gamma=0.9, noise_std=0.2, initial_std=1.0)


def test_lqr_gradient_matches_autograd_and_finite_differences():
    for k, s in [(1.0, 0.3), (0.5, 1.0), (2.0, 0.1)]:
        g = lqr_gradient(LQR, k, s)
        auto = torch.func.grad(lambda p: lqr_return(LQR, p[0], torch.exp(p[1])))(
            torch.tensor([k, math.log(s)], dtype=D)
        )
        assert torch.allclose(g, auto, rtol=1e-12, atol=0)
        h = 1e-6
        fd_k = (lqr_return(LQR, k + h, s) - lqr_return(LQR, k - h, s)) / (2 * h)
        fd_s = (lqr_return(LQR, k, s * math.exp(h)) - lqr_return(LQR, k, s * math.exp(-h))) / (
            2 * h
        )
        assert abs(float(g[0] - fd_k)) < 1e-6 and abs(float(g[1] - fd_s)) < 1e-6


def test_lqr_return_matches_a_long_simulation_sum():
    k, s = 1.0, 0.3
    ell, sig, total = (LQR.a - LQR.b * k) ** 2, LQR.initial_std**2, 0.0
    for t in range(600):
        total += LQR.gamma**t * ((LQR.q + LQR.r * k**2) * sig + LQR.r * s**2)
        sig = ell * sig + LQR.b**2 * s**2 + LQR.noise_std**2
    assert abs(float(lqr_return(LQR, k, s)) + total) < 1e-10


def test_lqr_fisher_matches_monte_carlo_score_covariance():
    k, s = 1.0, 0.5
    ell = (LQR.a - LQR.b * k) ** 2
    var = [LQR.initial_std**2]
    for _ in range(400):
        var.append(ell * var[-1] + LQR.b**2 * s**2 + LQR.noise_std**2)
    var_t = torch.tensor(var, dtype=D)

    def sampler(n: int, g: torch.Generator) -> torch.Tensor:
        # x ~ discounted occupancy: t ~ Geometric(1 - gamma), x_t ~ N(0, Sigma_t) (linear system)
        u = torch.rand(n, generator=g, dtype=D)
        t = torch.clamp(torch.floor(torch.log(u) / math.log(LQR.gamma)), max=400).long()
        x = var_t[t].sqrt() * torch.randn(n, generator=g, dtype=D)
        a = -k * x + s * torch.randn(n, generator=g, dtype=D)
        return torch.stack([x, a], 1)

    def log_prob(theta: torch.Tensor, xa: torch.Tensor) -> torch.Tensor:
        mean, sd = -theta[0] * xa[0], torch.exp(theta[1])
        return -0.5 * ((xa[1] - mean) / sd) ** 2 - theta[1]

    f_mc, se = fisher_monte_carlo(
        log_prob, torch.tensor([k, math.log(s)], dtype=D), sampler, 200_000
    )
    f = lqr_fisher(LQR, k, s)
    assert float(((f_mc - f).abs() / se).max()) < 5.0
    assert (
        abs(float(f[0, 0]) - (1 - LQR.gamma) * float(lqr_second_moment(LQR, k, s)) / s**2) < 1e-12
    )


def test_lqr_optimal_gain_riccati_and_stationarity():
    k_star, p_star = lqr_optimal_gain(LQR)
    assert abs(float(riccati_iteration(LQR, 400)[-1]) - p_star) < 1e-10
    assert abs(float(lqr_gain_value(LQR, k_star)) - p_star) < 1e-10
    for s in (0.0, 0.3, 1.0):  # the noise does not move k*
        assert abs(float(lqr_gradient(LQR, k_star, max(s, 1e-3))[0])) < 1e-9
    grid = torch.linspace(k_star - 1.0, k_star + 1.0, 201, dtype=D)
    vals = torch.stack([lqr_return(LQR, float(k), 0.3) for k in grid])
    assert abs(float(grid[vals.argmax()]) - k_star) <= 0.01 + 1e-12


def test_lqr_gradient_is_twice_the_policy_iteration_residual():
    """dJ/dk = -2 E_k S with E_k = (r + gamma b^2 P_k) k - gamma a b P_k (Fazel et al. 2018), so
    the natural gradient in k is -2 E_k sigma^2 / (1 - gamma)."""
    for k, s in [(0.8, 0.3), (1.5, 0.2)]:
        pk = float(lqr_gain_value(LQR, k))
        e_k = (LQR.r + LQR.gamma * LQR.b**2 * pk) * k - LQR.gamma * LQR.a * LQR.b * pk
        sm = float(lqr_second_moment(LQR, k, s))
        assert abs(float(lqr_gradient(LQR, k, s)[0]) + 2 * e_k * sm) < 1e-10
        ng = lqr_natural_gradient(LQR, k, s)
        assert abs(float(ng[0]) + 2 * e_k * s**2 / (1 - LQR.gamma)) < 1e-10


def test_lqr_rejects_unstable_gain_naming_it():
    with pytest.raises(ValueError, match="gain"):
        lqr_return(LQR, 10.0, 0.1)
    with pytest.raises(ValueError, match="gamma"):
        ScalarLQR(gamma=1.0)


# ------------------------------------------------------------------ policy networks
def _dense_categorical_fisher(policy: CategoricalPolicy, obs: torch.Tensor) -> torch.Tensor:
    """sum_a pi(a|s) score score^T averaged over states, scores by autograd (independent path)."""
    params = {k: v.detach() for k, v in policy.named_parameters()}
    flat = torch.cat([v.flatten() for v in params.values()])
    shapes = [(k, v.shape, v.numel()) for k, v in params.items()]

    def logp(theta: torch.Tensor) -> torch.Tensor:
        out, i = {}, 0
        for k, shp, n in shapes:
            out[k] = theta[i : i + n].reshape(shp)
            i += n
        return torch.log_softmax(torch.func.functional_call(policy, out, (obs,)), -1)

    jac = torch.func.jacrev(logp)(flat)  # (N, A, P)
    probs = logp(flat).exp()
    return torch.einsum("na,nap,naq->pq", probs, jac, jac) / obs.shape[0]


def test_categorical_policy_fisher_is_the_score_covariance():
    policy = CategoricalPolicy(3, 4, (5,), seed=0)
    with torch.no_grad():  # a non-uniform policy
        policy.net[-1].weight.mul_(100)
    obs = torch.randn(7, 3, generator=torch.Generator().manual_seed(0), dtype=D)
    fvp = policy_fisher(policy, obs)
    f = _dense_categorical_fisher(policy, obs)
    p = f.shape[0]
    dense = torch.stack([fvp(e) for e in torch.eye(p, dtype=D)], 1)
    assert torch.allclose(dense, f, rtol=0, atol=1e-12)


def test_gaussian_policy_fisher_matches_monte_carlo():
    policy = GaussianPolicy(2, 2, (3,), log_std=-0.5, seed=1)
    obs = torch.randn(4, 2, generator=torch.Generator().manual_seed(1), dtype=D)
    fvp = policy_fisher(policy, obs)
    theta = policy_parameters(policy)
    p = theta.shape[0]
    f = torch.stack([fvp(e) for e in torch.eye(p, dtype=D)], 1)
    names = [(k, v.shape, v.numel()) for k, v in policy.named_parameters()]

    def log_prob(th: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out, i = {}, 0
        for k, shp, n in names:
            out[k] = th[i : i + n].reshape(shp)
            i += n
        s_hot = (torch.arange(4, dtype=D) == x[0]).to(D)
        o = s_hot @ obs
        mean = torch.func.functional_call(
            policy.mean, {k[5:]: v for k, v in out.items() if k.startswith("mean.")}, (o[None],)
        )[0]
        z = (x[1:] - mean) * torch.exp(-out["log_std"])
        return (-0.5 * z**2 - out["log_std"]).sum()

    with torch.no_grad():
        means = policy(obs)
    sd = torch.exp(policy.log_std.detach())

    def sampler(n: int, g: torch.Generator) -> torch.Tensor:
        s = torch.randint(0, 4, (n,), generator=g)
        a = means[s] + sd * torch.randn(n, 2, generator=g, dtype=D)
        return torch.cat([s[:, None].to(D), a], 1)

    f_mc, se = fisher_monte_carlo(log_prob, theta, sampler, 60_000, seed=3)
    assert float(((f_mc - f).abs() / (se + 1e-300))[se > 0].max()) < 5.0


def _batch(seed: int = 0, n: int = 64):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, 4, generator=g, dtype=D)
    actions = torch.randint(0, 2, (n,), generator=g)
    adv = torch.randn(n, generator=g, dtype=D)
    return obs, actions, adv


def test_surrogate_gradient_is_the_score_weighted_advantage():
    policy = CategoricalPolicy(4, 2, (8,), seed=0)
    obs, actions, adv = _batch()
    g = surrogate_gradient(policy, obs, actions, adv)
    # independent path: autograd of mean(log pi(a|s) A)
    policy.zero_grad()
    (policy.log_prob(obs, actions) * adv).mean().backward()
    ref = torch.cat([p.grad.flatten() for p in policy.parameters()])
    assert torch.allclose(g, ref, rtol=0, atol=1e-14)
    # and PPO's clipped loss has gradient -g at the old policy
    policy.zero_grad()
    lp = policy.log_prob(obs, actions)
    ppo_clip_loss(lp, lp.detach(), adv, 0.2).backward()
    ref2 = torch.cat([p.grad.flatten() for p in policy.parameters()])
    assert torch.allclose(ref2, -g, rtol=0, atol=1e-14)


def test_ppo_clip_stops_the_gradient_outside_the_interval():
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=D)
    old = torch.zeros(4, dtype=D)
    lp = torch.log(torch.tensor([1.5, 0.5, 0.9, 1.1], dtype=D)).requires_grad_(True)
    ppo_clip_loss(lp, old, adv, 0.2).backward()
    # ratio 1.5 with A > 0 and 0.5 with A < 0 are clipped: no gradient; the others move
    assert lp.grad[0] == 0 and lp.grad[1] == 0
    assert torch.allclose(lp.grad[2:], torch.tensor([-0.9, 1.1], dtype=D) / 4, rtol=1e-12, atol=0)


def test_trpo_step_meets_the_exact_kl_and_solves_the_fisher_system():
    policy = CategoricalPolicy(4, 2, (8,), seed=0)
    obs, actions, adv = _batch()
    f = _dense_categorical_fisher(policy, obs)
    g = surrogate_gradient(policy, obs, actions, adv)
    lam, delta = 0.1, 1e-4
    with torch.no_grad():
        old_logits = policy(obs)
    res = trpo_step(policy, obs, actions, adv, max_kl=delta, damping=lam, cg_iters=200)
    x = torch.linalg.solve(f + lam * torch.eye(f.shape[0], dtype=D), g)
    full = math.sqrt(2 * delta / float(x @ (f + lam * torch.eye(f.shape[0], dtype=D)) @ x)) * x
    assert res.backtracks >= 0
    assert torch.allclose(res.step, full * 0.5**res.backtracks, rtol=1e-8, atol=1e-12)
    with torch.no_grad():
        kl = float(categorical_kl(old_logits, policy(obs)))
    assert kl <= delta and abs(kl - res.kl) < 1e-15
    # the quadratic model of the KL is accurate for a small radius
    assert abs(kl - 0.5 * float(res.step @ f @ res.step)) < 0.05 * kl
    assert res.improvement > 0


def test_npg_network_step_is_the_damped_dense_solve():
    policy = CategoricalPolicy(4, 2, (6,), seed=2)
    obs, actions, adv = _batch(1)
    f = _dense_categorical_fisher(policy, obs)
    g = surrogate_gradient(policy, obs, actions, adv)
    res = npg_step_network(policy, obs, actions, adv, 0.1, damping=0.01, cg_iters=500)
    ref = 0.1 * torch.linalg.solve(f + 0.01 * torch.eye(f.shape[0], dtype=D), g)
    assert torch.allclose(res.step, ref, rtol=1e-7, atol=1e-10)


# ---------------------------------------------------------------------- rollouts
def test_gae_limits_are_returns_and_td_errors():
    g = torch.Generator().manual_seed(0)
    r = torch.rand(12, generator=g, dtype=D)
    v = torch.rand(12, generator=g, dtype=D)
    nv = torch.rand(12, generator=g, dtype=D)
    term = torch.zeros(12, dtype=torch.bool)
    term[4] = True
    end = term.clone()
    end[8] = True  # a time-limit cut
    end[11] = True
    z = torch.zeros(12, dtype=D)
    assert torch.allclose(
        gae(r, z, z, term, end, 0.9, 1.0), returns_to_go(r, end, 0.9), atol=1e-14, rtol=0
    )
    td = r + 0.9 * (~term).to(D) * nv - v
    assert torch.allclose(gae(r, v, nv, term, end, 0.9, 0.0), td, atol=1e-14, rtol=0)
    # returns-to-go by the explicit sum within the first episode
    assert (
        abs(float(returns_to_go(r, end, 0.9)[0]) - sum(0.9**t * float(r[t]) for t in range(5)))
        < 1e-14
    )


def test_rollouts_are_reproducible():
    gym = pytest.importorskip("gymnasium")
    policy = CategoricalPolicy(4, 2, (8,), seed=0)
    outs = []
    for _ in range(2):
        env = gym.make("CartPole-v1")
        outs.append(
            collect_rollout(env, policy, 200, generator=torch.Generator().manual_seed(5), seed=3)
        )
        env.close()
    assert torch.equal(outs[0].obs, outs[1].obs) and torch.equal(outs[0].actions, outs[1].actions)
    assert outs[0].episode_returns == outs[1].episode_returns and len(outs[0].episode_returns) > 0
    # the log-probabilities are those of the policy
    assert torch.allclose(
        policy.log_prob(outs[0].obs, outs[0].actions).detach(),
        outs[0].log_probs,
        atol=1e-14,
        rtol=0,
    )


# ---------------------------------------------------------------------- bad input
def test_bad_input_names_the_argument():
    mdp = random_mdp(3, 2, seed=0)
    with pytest.raises(ValueError, match="policy"):
        policy_evaluation(mdp, torch.ones(3, 2, dtype=D))
    with pytest.raises(ValueError, match="logits"):
        softmax_policy_gradient(mdp, torch.zeros(2, 2, dtype=D))
    with pytest.raises(TypeError, match="mdp"):
        discounted_occupancy("mdp", torch.full((3, 2), 0.5, dtype=D))
    with pytest.raises(ValueError, match="gamma"):
        random_mdp(3, 2, gamma=1.0)
    with pytest.raises(ValueError, match="transitions"):
        TabularMDP(
            torch.ones(2, 2, 2, dtype=D), torch.zeros(2, 2, dtype=D), torch.tensor([1.0, 0.0]), 0.9
        )
    with pytest.raises(ValueError, match="lr"):
        npg_step(mdp, torch.full((3, 2), 0.5, dtype=D), -1.0)
    with pytest.raises(ValueError, match="lr"):
        policy_iterates(mdp, torch.zeros(3, 2, dtype=D), [0.1], 3)
    with pytest.raises(ValueError, match="method"):
        policy_iterates(mdp, torch.zeros(3, 2, dtype=D), 0.1, 3, method="sgd")
    policy = CategoricalPolicy(4, 2, (8,), seed=0)
    obs, actions, adv = _batch()
    with pytest.raises(ValueError, match="max_kl"):
        trpo_step(policy, obs, actions, adv, max_kl=0.0)
    with pytest.raises(ValueError, match="advantages"):
        trpo_step(policy, obs, actions, adv[:3])
    with pytest.raises(ValueError, match="clip"):
        ppo_clip_loss(adv, adv, adv, clip=1.5)
    with pytest.raises(ValueError, match="lam"):
        gae(
            adv,
            adv,
            adv,
            torch.zeros(64, dtype=torch.bool),
            torch.zeros(64, dtype=torch.bool),
            0.9,
            2.0,
        )


def _rl_bases() -> dict:
    import igbook.rl as rl

    mdp, lqr = random_mdp(3, 2, 0.9, seed=0), ScalarLQR()
    pol = torch.tensor([[0.3, 0.7], [0.5, 0.5], [0.9, 0.1]], dtype=D)
    lg = torch.tensor([[0.3, -0.2], [0.1, 0.4], [-0.5, 0.2]], dtype=D)
    flags = torch.tensor([False, True, False])
    r3 = torch.tensor([1.0, 0.5, 2.0], dtype=D)
    out = {}
    for f in (
        "policy_evaluation",
        "q_values",
        "advantages",
        "expected_return",
        "discounted_occupancy",
    ):
        out[f] = (getattr(rl, f), {"mdp": mdp, "policy": pol})
    for f in ("softmax_policy_gradient", "softmax_policy_fisher", "natural_policy_gradient"):
        out[f] = (getattr(rl, f), {"mdp": mdp, "logits": lg})
    out["npg_step"] = (rl.npg_step, {"mdp": mdp, "policy": pol, "lr": 0.7})
    out["value_iteration"] = (rl.value_iteration, {"mdp": mdp, "tol": 1e-10, "max_iter": 1000})
    out["policy_iterates"] = (rl.policy_iterates, {"mdp": mdp, "logits": lg, "lr": 0.7, "steps": 3})
    for f in (
        "lqr_second_moment",
        "lqr_return",
        "lqr_gradient",
        "lqr_fisher",
        "lqr_natural_gradient",
    ):
        out[f] = (getattr(rl, f), {"lqr": lqr, "gain": 1.0, "std": 0.3})
    out["lqr_gain_value"] = (rl.lqr_gain_value, {"lqr": lqr, "gain": 1.0})
    out["lqr_optimal_gain"] = (rl.lqr_optimal_gain, {"lqr": lqr})
    out["riccati_iteration"] = (rl.riccati_iteration, {"lqr": lqr, "steps": 5})
    out["returns_to_go"] = (rl.returns_to_go, {"rewards": r3, "episode_end": flags, "gamma": 0.9})
    out["gae"] = (
        rl.gae,
        {
            "rewards": r3,
            "values": r3 / 2,
            "next_values": r3 / 3,
            "terminated": flags,
            "episode_end": flags,
            "gamma": 0.9,
            "lam": 0.9,
        },
    )
    return out


_RL_BASES = _rl_bases()


@pytest.mark.parametrize("name", sorted(_RL_BASES))
def test_bad_input_is_named(name):
    """The in-domain call works; NaN, a string or a wrong shape in any argument raises naming it."""
    fn, base = _RL_BASES[name]
    fn(**base)
    for arg, value in base.items():
        bads = ["abc", None]
        if isinstance(value, float):
            bads.append(math.nan)
        if isinstance(value, torch.Tensor):
            bads.append(torch.ones(5, 3, 1, dtype=D))
            if value.dtype == D:
                bads.append(torch.full_like(value, math.nan))
        for bad in bads:
            with pytest.raises((ValueError, TypeError)) as info:
                fn(**{**base, arg: bad})
            msg = str(info.value).lower()
            assert arg.replace("_", " ") in msg.replace("_", " "), (arg, bad, msg)
