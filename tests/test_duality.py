"""Connections, curvature, geodesics, projections, EM, Chentsov, Jeffreys, efficiency and new distances.

Every check compares with a closed form or an independent computation (quadrature, a textbook
EM written here, a second algorithm), with a stated tolerance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from igbook import connections as cn
from igbook import distances as ds
from igbook import efficiency as ef
from igbook import projections as pj
from igbook.families import (
    Bernoulli,
    Beta,
    Categorical,
    Gamma,
    Gaussian,
    MultivariateGaussian,
    Poisson,
)
from igbook.geometry import fisher_rao_categorical, fisher_rao_gaussian, gaussian_geodesic

D = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _small_problems():  # type: ignore[no-untyped-def]
    """Float64 and one thread: every problem here is small, and two threads on 2 cores cost more than they save."""
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(D)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)


def gaussian_metric(th: torch.Tensor) -> torch.Tensor:
    return torch.diag(torch.stack([1 / th[..., 1] ** 2, 2 / th[..., 1] ** 2]))


# ------------------------------------------------------------------------------------ connections
def test_gaussian_alpha_connection_closed_form_and_quadrature() -> None:
    mu, s = 0.7, 1.3
    th = torch.tensor([mu, s])
    for alpha in (-1.0, 0.0, 0.4, 1.0):
        g = cn.alpha_connection(Gaussian, th, alpha)
        want = torch.zeros(2, 2, 2)
        want[0, 0, 1] = (1 - alpha) / s**3
        want[0, 1, 0] = want[1, 0, 0] = -(1 + alpha) / s**3
        want[1, 1, 1] = -2 * (1 + 2 * alpha) / s**3
        torch.testing.assert_close(g, want, rtol=1e-12, atol=1e-12)
        # independent: E[(d_i d_j l + (1-alpha)/2 d_i l d_j l) d_k l] by Gauss-Hermite quadrature
        z, w = np.polynomial.hermite_e.hermegauss(40)
        x = torch.tensor(mu + s * z)
        w = torch.tensor(w / math.sqrt(2 * math.pi))

        def lp(t, x=x):
            return Gaussian.log_prob_params(t, x)

        sc = torch.func.jacfwd(lp)(th)  # (n, 2)
        he = torch.func.hessian(lp)(th)  # (n, 2, 2)
        quad = torch.einsum(
            "n,nij,nk->ijk", w, he + 0.5 * (1 - alpha) * sc[:, :, None] * sc[:, None, :], sc
        )
        torch.testing.assert_close(g, quad, rtol=1e-9, atol=1e-10)


def test_levi_civita_christoffel_of_gaussian() -> None:
    th = torch.tensor([0.2, 0.8])
    s = 0.8
    gam = cn.raise_index(
        cn.levi_civita(cn.metric_function(Gaussian), th), cn.fisher_metric(Gaussian, th)
    )
    want = torch.zeros(2, 2, 2)  # [k, i, j]
    want[0, 0, 1] = want[0, 1, 0] = -1 / s
    want[1, 0, 0] = 1 / (2 * s)
    want[1, 1, 1] = -1 / s
    torch.testing.assert_close(gam, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("family", "theta"),
    [
        (Gaussian, [0.3, 1.7]),
        (Gamma, [2.5, 0.8]),
        (Beta, [1.5, 3.0]),
        (Categorical, [0.2, 0.5]),
        (Poisson, [2.0]),
    ],
)
def test_duality_cubic_tensor_and_levi_civita(family, theta) -> None:  # type: ignore[no-untyped-def]
    th = torch.tensor(theta)
    for alpha in (0.0, 0.5, -2.0):
        assert float(cn.duality_defect(family, th, alpha).abs().max()) < 1e-10
    t = cn.cubic_tensor(family, th)
    torch.testing.assert_close(
        cn.m_connection(family, th) - cn.e_connection(family, th), t, rtol=1e-10, atol=1e-10
    )
    lc = cn.levi_civita(cn.metric_function(family), th)
    torch.testing.assert_close(cn.alpha_connection(family, th, 0.0), lc, rtol=1e-10, atol=1e-10)
    # e-flat in eta, m-flat in mu
    eta = family.natural_from_params(th)
    assert float(cn.e_connection(family, eta, "natural").abs().max()) < 1e-12
    if family not in (
        Gamma,
        Beta,
    ):  # their inverse mean map is a Newton solve: first derivatives only
        assert (
            float(cn.m_connection(family, family.mean_from_natural(eta), "mean").abs().max()) < 1e-8
        )
    # the metric agrees with the closed form of igbook.families
    torch.testing.assert_close(
        cn.fisher_metric(family, th), family.from_params(th).fisher(), rtol=1e-10, atol=1e-12
    )


def test_cubic_tensor_by_monte_carlo() -> None:
    q = Gamma(2.5, 0.8)
    x = q.sample(200_000, seed=3)
    sc = torch.func.vmap(torch.func.grad(Gamma.log_prob_params), in_dims=(None, 0))(q.params, x)
    prod = sc[:, :, None, None] * sc[:, None, :, None] * sc[:, None, None, :]
    z = (prod.mean(0) - cn.cubic_tensor(Gamma, q.params)) / (prod.std(0) / math.sqrt(x.shape[0]))
    assert float(z.abs().max()) < 5


def test_brioschi_curvature() -> None:
    for th in ([0.0, 1.0], [2.0, 0.3]):
        assert abs(float(cn.gaussian_curvature(cn.metric_function(Gaussian), th)) + 0.5) < 1e-10
    # the 3-category simplex is a piece of a sphere of radius 2: K = 1/4
    assert (
        abs(float(cn.gaussian_curvature(cn.metric_function(Categorical), [0.2, 0.3])) - 0.25)
        < 1e-10
    )

    # a sphere of radius 3 in (polar, azimuth) coordinates: K = 1/9
    def sph(t):
        return torch.diag(torch.stack([torch.tensor(9.0), 9 * torch.sin(t[0]) ** 2]))

    assert abs(float(cn.gaussian_curvature(sph, [1.0, 0.5])) - 1 / 9) < 1e-10


def test_integrated_geodesic_matches_closed_form() -> None:
    ref = gaussian_geodesic(0.0, 1.0, 2.0, 0.5, num=41)
    d = float(fisher_rao_gaussian(0.0, 1.0, 2.0, 0.5))
    v0 = (
        ref[1] - ref[0]
    ) * 40  # tangent from the closed form (first-order, refined by shooting below)
    pts, vel = cn.integrate_geodesic(gaussian_metric, ref[0], v0, steps=40)
    assert float((pts - ref).abs().max()) < 0.05  # only the initial velocity is approximate

    def acc(th, v):  # type: ignore[no-untyped-def]  # closed-form Christoffel symbols of diag(1, 2)/sigma^2
        s = th[:, 1]
        return torch.stack([2 * v[:, 0] * v[:, 1] / s, (v[:, 1] ** 2 - 0.5 * v[:, 0] ** 2) / s], -1)

    torch.testing.assert_close(
        acc(ref[:1], v0[None])[0], cn.geodesic_acceleration(gaussian_metric, ref[0], v0)
    )
    geo = ds.geodesic_shooting(gaussian_metric, [0.0, 1.0], [2.0, 0.5], steps=40, acceleration=acc)
    assert abs(float(geo.length) - d) < 1e-6 * d
    assert float((geo.points - ref).abs().max()) < 1e-5
    # conserved speed along the integrated curve
    speed = torch.stack([v @ gaussian_metric(p) @ v for p, v in zip(pts, vel)])
    assert float((speed - speed[0]).abs().max()) < 1e-6 * float(speed[0])


def test_e_and_m_geodesics() -> None:
    p, q = Gaussian(0.0, 1.0), Gaussian(2.0, 0.5)
    e = cn.e_geodesic(Gaussian, p.natural, q.natural, num=5, chart="natural")
    torch.testing.assert_close(e[2], 0.5 * (p.natural + q.natural))
    m = cn.m_geodesic(Gaussian, p.params, q.params, num=5)
    torch.testing.assert_close(
        Gaussian.from_params(m[2]).mean, 0.5 * (p.mean + q.mean), rtol=1e-12, atol=1e-12
    )
    # the e-geodesic of the categorical is the normalized geometric mixture
    a, b = torch.tensor([0.2, 0.3, 0.5]), torch.tensor([0.6, 0.3, 0.1])
    mid = cn.e_geodesic(Categorical, a[:2], b[:2], num=3)[1]
    gm = torch.sqrt(a * b) / torch.sqrt(a * b).sum()
    torch.testing.assert_close(mid, gm[:2], rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------- distances
def test_gamma_beta_accelerations_match_autograd() -> None:
    for fam, acc in ((Gamma, ds.gamma_acceleration), (Beta, ds.beta_acceleration)):
        eta = fam(2.0, 3.0).natural
        v = torch.tensor([0.3, -0.7])
        want = cn.geodesic_acceleration(cn.metric_function(fam, "natural"), eta, v)
        torch.testing.assert_close(acc(eta[None], v[None])[0], want, rtol=1e-10, atol=1e-12)


def test_new_distances_metric_axioms_and_checks() -> None:
    pts = [(2.0, 1.0), (5.0, 3.0), (1.2, 0.4)]

    def gamma(*a):
        return ds.fisher_rao_gamma(*a, steps=20)

    def beta(*a):
        return ds.fisher_rao_beta(*a, steps=20)

    for f in (gamma, beta):
        d01, d12, d02 = f(*pts[0], *pts[1]), f(*pts[1], *pts[2]), f(*pts[0], *pts[2])
        assert float(f(*pts[1], *pts[0]) - d01) ** 2 < 1e-14  # symmetry
        assert float(d02) <= float(d01 + d12) + 1e-9 and float(d01) > 0  # triangle, positivity
        assert float(f(*pts[0], *pts[0])) == 0.0
        # local: d ~ sqrt(delta^T F delta)
        fam = Gamma if f is gamma else Beta
        delta = torch.tensor([1e-3, -2e-3])
        base = torch.tensor(pts[0])
        loc = torch.sqrt(delta @ fam(*pts[0]).fisher() @ delta)
        assert abs(float(f(*base, *(base + delta))) - float(loc)) < 1e-2 * float(loc)
    # Gamma: invariant under a common rescaling of the rates; Beta: under (a, b) -> (b, a)
    assert abs(float(gamma(2.0, 1.0, 5.0, 3.0) - gamma(2.0, 7.0, 5.0, 21.0))) < 1e-8
    assert abs(float(beta(2.0, 1.0, 5.0, 3.0) - beta(1.0, 2.0, 3.0, 5.0))) < 1e-8

    # an independent algorithm: energy minimization of a polyline (O(n^-2) discretization error)
    def g_ab(t):
        return (
            torch.diag(torch.exp(t))
            @ Beta.fisher_from_natural(torch.exp(t) - 1)
            @ torch.diag(torch.exp(t))
        )

    en = ds.geodesic_energy(
        g_ab,
        torch.log(torch.tensor([2.0, 1.0])),
        torch.log(torch.tensor([5.0, 3.0])),
        num=10,
        max_iter=60,
    )
    assert abs(float(en.length) - float(beta(2.0, 1.0, 5.0, 3.0))) < 1e-2


def test_gaussian_fixed_mean_distance() -> None:
    s1 = torch.tensor([[2.0, 0.3], [0.3, 0.5]])
    s2 = torch.tensor([[1.0, -0.2], [-0.2, 1.5]])
    s3 = torch.tensor([[0.7, 0.0], [0.0, 3.0]])
    d = ds.fisher_rao_gaussian_fixed_mean
    a = torch.tensor([[1.0, 2.0], [-0.5, 1.5]])
    torch.testing.assert_close(
        d(a @ s1 @ a.T, a @ s2 @ a.T), d(s1, s2), rtol=1e-12, atol=1e-12
    )  # affine invariance
    assert (
        float(d(s1, s3)) <= float(d(s1, s2) + d(s2, s3))
        and abs(float(d(s1, s2) - d(s2, s1))) < 1e-12
    )
    assert (
        abs(
            float(d(torch.eye(1), 4 * torch.eye(1)))
            - float(fisher_rao_gaussian(0.0, 1.0, 0.0, 2.0))
        )
        < 1e-12
    )

    # independent: energy-minimizing polyline for the covariance block of igbook's MultivariateGaussian Fisher
    def cov_of(t):  # type: ignore[no-untyped-def]  # params (S11, S22, S21)
        return torch.stack([torch.stack([t[0], t[2]]), torch.stack([t[2], t[1]])])

    def metric(t):  # type: ignore[no-untyped-def]  # 1/2 tr(S^-1 dS_a S^-1 dS_b)
        si = torch.linalg.inv(cov_of(t))
        basis = torch.stack([cov_of(e) for e in torch.eye(3)])
        m = si @ basis
        return 0.5 * torch.einsum("aij,bji->ab", m, m)

    th1, th2 = torch.tensor([2.0, 0.5, 0.3]), torch.tensor([1.0, 1.5, -0.2])
    full = MultivariateGaussian(torch.zeros(2), s1).fisher()
    torch.testing.assert_close(metric(th1), full[2:, 2:], rtol=1e-10, atol=1e-12)
    en = ds.geodesic_energy(metric, th1, th2, num=12)
    assert abs(float(en.length) - float(d(s1, s2))) < 1e-2 * float(d(s1, s2))


# ----------------------------------------------------------------------------------- projections
def test_alpha_divergence_limits_and_local_form() -> None:
    g = torch.Generator().manual_seed(0)
    p, q = (
        torch.softmax(torch.randn(5, generator=g), 0),
        torch.softmax(torch.randn(5, generator=g), 0),
    )
    torch.testing.assert_close(pj.alpha_divergence(p, q, -1.0), pj.kl_divergence(p, q))
    torch.testing.assert_close(
        pj.alpha_divergence(p, q, -1 + 1e-7), pj.kl_divergence(p, q), rtol=1e-5, atol=0
    )
    torch.testing.assert_close(
        pj.alpha_divergence(p, q, 0.0), 2 * ((p.sqrt() - q.sqrt()) ** 2).sum()
    )
    torch.testing.assert_close(pj.alpha_divergence(p, q, 0.3), pj.alpha_divergence(q, p, -0.3))
    dp = 1e-4 * torch.tensor([1.0, -2.0, 0.5, 0.3, 0.2])
    fisher = (dp**2 / p).sum()
    for a in (-0.5, 0.0, 0.7, 3.0):
        assert abs(float(pj.alpha_divergence(p, p + dp, a)) - 0.5 * float(fisher)) < 1e-3 * float(
            fisher
        )


def _independence_features(k: int) -> torch.Tensor:
    rows = torch.kron(torch.eye(k)[:, :-1], torch.ones(k, 1))
    cols = torch.kron(torch.ones(k, 1), torch.eye(k)[:, :-1])
    return torch.cat([rows, cols], 1)


def test_projections_and_pythagoras() -> None:
    g = torch.Generator().manual_seed(1)
    p = torch.softmax(torch.randn(9, generator=g), 0)
    f = _independence_features(3)
    proj = pj.m_projection(p, f)
    pm = p.reshape(3, 3)
    torch.testing.assert_close(
        proj.q.reshape(3, 3), torch.outer(pm.sum(1), pm.sum(0)), rtol=1e-10, atol=1e-12
    )
    # Pythagoras for every member r of the e-flat family
    for _ in range(3):
        r = torch.outer(
            torch.softmax(torch.randn(3, generator=g), 0),
            torch.softmax(torch.randn(3, generator=g), 0),
        )
        assert abs(float(pj.pythagorean_defect(p, proj.q, r.reshape(-1)))) < 1e-12
        assert float(pj.kl_divergence(p, r.reshape(-1))) > float(pj.kl_divergence(p, proj.q))
    # e-projection onto {E_q[x] = 3}: the tilt, minimal KL(q || r) among members of the linear family
    x = torch.arange(9.0)
    r = torch.softmax(torch.randn(9, generator=g), 0)
    e = pj.e_projection(r, x, 3.0)
    assert abs(float(e.q @ x) - 3.0) < 1e-10
    lin = torch.softmax(torch.randn(9, generator=g), 0)
    lin = pj.exponential_tilt(lin, x, 3.0).q  # another member of the linear family
    assert abs(float(pj.pythagorean_defect(lin, e.q, r))) < 1e-12
    assert float(pj.kl_divergence(lin, r)) >= float(pj.kl_divergence(e.q, r))


def _textbook_em(
    x: np.ndarray, w: np.ndarray, m: np.ndarray, s: np.ndarray
) -> tuple[np.ndarray, ...]:
    dens = np.array(
        [
            [
                wk / (sk * math.sqrt(2 * math.pi)) * math.exp(-0.5 * ((xi - mk) / sk) ** 2)
                for wk, mk, sk in zip(w, m, s)
            ]
            for xi in x
        ]
    )
    ll = float(np.mean(np.log(dens.sum(1))))
    r = dens / dens.sum(1, keepdims=True)
    nk = r.sum(0)
    m_new = (r * x[:, None]).sum(0) / nk
    s_new = np.sqrt((r * (x[:, None] - m_new) ** 2).sum(0) / nk)
    return r, nk / len(x), m_new, s_new, ll


def test_em_matches_textbook_em_step_by_step() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.cat([torch.randn(60, generator=g) - 2, 0.5 * torch.randn(40, generator=g) + 1])
    init = pj.MixtureParams(
        torch.tensor([0.5, 0.5]), torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 2.0])
    )
    tr = pj.em_gaussian_mixture(x, init, 8)
    w, m, s = init.weights.numpy(), init.means.numpy(), init.sigmas.numpy()
    for t in range(8):
        r, w, m, s, ll = _textbook_em(x.numpy(), w, m, s)
        np.testing.assert_allclose(tr.resp[t].numpy(), r, rtol=1e-10, atol=1e-12)
        p = tr.params[t + 1]
        np.testing.assert_allclose(
            torch.cat([p.weights, p.means, p.sigmas]).numpy(),
            np.concatenate([w, m, s]),
            rtol=1e-10,
            atol=1e-12,
        )
        assert abs(float(tr.log_likelihood[t]) - ll) < 1e-10
    assert bool(
        (tr.free_energy[1:] <= tr.free_energy[:-1] + 1e-12).all()
    )  # every half-step decreases it
    torch.testing.assert_close(tr.free_energy[::2], -tr.log_likelihood[:-1], rtol=0, atol=1e-12)
    # the E-step minimizes the free energy over responsibilities (perturbations increase it)
    r0 = tr.resp[3]
    pert = torch.softmax(torch.log(r0) + 0.1 * torch.randn(r0.shape, generator=g), -1)
    assert float(pj.em_free_energy(x, pert, tr.params[3])) > float(
        pj.em_free_energy(x, r0, tr.params[3])
    )


def test_chentsov_invariance_under_markov_embedding() -> None:
    emb = pj.markov_embedding([torch.tensor([0.3, 0.7]), [1.0], torch.tensor([0.2, 0.2, 0.6])])
    assert emb.shape == (6, 3)
    p, q = torch.tensor([0.2, 0.5, 0.3]), torch.tensor([0.4, 0.4, 0.2])
    for a in (-1.0, 0.0, 0.5):
        torch.testing.assert_close(
            pj.alpha_divergence(emb @ p, emb @ q, a), pj.alpha_divergence(p, q, a)
        )
    torch.testing.assert_close(
        fisher_rao_categorical(emb @ p, emb @ q), fisher_rao_categorical(p, q)
    )

    # pull back the Fisher metric of the 6-simplex through the embedding (usual chart, K-1 free coordinates)
    def embed_params(th):  # type: ignore[no-untyped-def]
        full = torch.cat([th, (1 - th.sum()).reshape(1)])
        return (emb @ full)[:-1]

    j = torch.func.jacfwd(embed_params)(p[:2])
    f_big = cn.fisher_metric(Categorical, embed_params(p[:2]))
    torch.testing.assert_close(
        j.T @ f_big @ j, cn.fisher_metric(Categorical, p[:2]), rtol=1e-12, atol=1e-12
    )
    # the Euclidean metric is not invariant
    assert float((j.T @ j - torch.eye(2) - 1).abs().max()) > 0.1


def test_jeffreys_density() -> None:
    # Bernoulli: 1/sqrt(p(1-p)), total mass pi = Fisher-Rao length of the family
    p = torch.linspace(1e-4, 1 - 1e-4, 9)
    dens = torch.stack([pj.jeffreys_density(Bernoulli, [float(v)]) for v in p])
    torch.testing.assert_close(dens, 1 / torch.sqrt(p * (1 - p)), rtol=1e-12, atol=0)
    # invariance: in the logit chart it transforms as a density
    eta = torch.tensor([0.7])
    dp_deta = torch.sigmoid(eta) * (1 - torch.sigmoid(eta))
    torch.testing.assert_close(
        pj.jeffreys_density(Bernoulli, eta, "natural"),
        pj.jeffreys_density(Bernoulli, torch.sigmoid(eta)) * dp_deta[0],
    )
    # Gaussian (mu, sigma): sqrt(2)/sigma^2
    assert abs(float(pj.jeffreys_density(Gaussian, [0.3, 1.7])) - math.sqrt(2) / 1.7**2) < 1e-12


# ------------------------------------------------------------------------------------- efficiency
def test_cramer_rao_and_sgd_lyapunov() -> None:
    f = Gaussian(0.0, 1.5).fisher()
    torch.testing.assert_close(ef.cramer_rao_bound(f, 10), torch.linalg.inv(f) / 10)
    torch.testing.assert_close(ef.cramer_rao_bound(f, 1, [1.0, 0.0]), torch.tensor([[1.5**2]]))
    fd = torch.diag(torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(
        ef.sgd_asymptotic_covariance(fd, 1.0), torch.diag(torch.tensor([1.0, 2 / 3]))
    )
    fg = torch.tensor([[2.0, 0.5], [0.5, 1.0]])
    s = ef.sgd_asymptotic_covariance(fg, 1.5)
    a = 1.5 * fg - 0.5 * torch.eye(2)
    torch.testing.assert_close(a @ s + s @ a, 1.5**2 * fg, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        ef.sgd_asymptotic_covariance(torch.eye(2) * 2, 0.5), torch.eye(2) / 2
    )


def test_online_natural_gradient_is_fisher_efficient() -> None:
    r, n = 1000, 200
    g = torch.Generator().manual_seed(4)
    x = 0.3 + 1.0 * torch.randn(r, n, generator=g)

    def fisher(th):
        return torch.diag_embed(torch.stack([1 / th[:, 1] ** 2, 2 / th[:, 1] ** 2], -1))

    th = ef.online_natural_gradient(ef.family_score(Gaussian), fisher, [0.0, 2.0], x)
    sc = ef.scaled_covariance(th, n)
    z = sc.z(torch.diag(torch.tensor([1.0, 0.5])))
    assert float(z.abs().max()) < 4, z
    # the mean coordinate is exactly the running mean (step 1/t, F^-1 score = x - mu)
    torch.testing.assert_close(th[:, 0], x.mean(1), rtol=0, atol=1e-12)
    # plain SGD on the mean with step c/t, c = 0.6 (F = 1): n Var -> c^2/(2c - 1) = 1.8 > 1
    mean_only = ef.family_score(
        Gaussian, lambda m: torch.stack([m[0], torch.ones_like(m[0])])
    )  # sigma = 1 known
    sgd = ef.online_sgd(mean_only, [0.0], x, lr=0.6)
    v = ef.scaled_covariance(sgd, n)
    # exact finite-n variance of the linear recursion m_{t+1} = (1 - c/t) m_t + (c/t) x_t, independently
    var = 0.0
    for t in range(1, n + 1):
        var = (1 - 0.6 / t) ** 2 * var + (0.6 / t) ** 2
    assert abs(float(v.z(n * var))) < 4
    assert (
        n * var > 1.2
    )  # above the Cramer-Rao value 1 (and still rising to its limit c^2/(2c-1) = 1.8)


# ------------------------------------------------------------------------------------- bad input
def test_bad_input_names_the_argument() -> None:
    with pytest.raises(ValueError, match="theta"):
        cn.fisher_metric(Gaussian, [0.0, -1.0])
    with pytest.raises(TypeError, match="family"):
        cn.cubic_tensor(int, [0.0])
    with pytest.raises(ValueError, match="chart"):
        cn.e_connection(Gaussian, [0.0, 1.0], chart="polar")
    with pytest.raises(ValueError, match="alpha"):
        cn.alpha_connection(Gaussian, [0.0, 1.0], float("nan"))
    with pytest.raises(ValueError, match="theta"):
        cn.gaussian_curvature(gaussian_metric, [0.0, 1.0, 2.0])
    with pytest.raises(TypeError, match="metric"):
        cn.levi_civita("not a metric", [0.0, 1.0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps"):
        cn.integrate_geodesic(gaussian_metric, [0.0, 1.0], [1.0, 0.0], steps=0)
    with pytest.raises(ValueError, match="velocity0"):
        cn.integrate_geodesic(gaussian_metric, [0.0, 1.0], [1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="alpha1"):
        ds.fisher_rao_gamma(-1.0, 1.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="beta2"):
        ds.fisher_rao_beta(1.0, 1.0, 2.0, float("nan"))
    with pytest.raises(ValueError, match="cov2"):
        ds.fisher_rao_gaussian_fixed_mean(torch.eye(2), -torch.eye(2))
    with pytest.raises(ValueError, match="theta1"):
        ds.geodesic_shooting(gaussian_metric, [0.0, 1.0], [0.0])
    with pytest.raises(ValueError, match="q"):
        pj.kl_divergence([0.5, 0.5], [0.7, 0.7])
    with pytest.raises(ValueError, match="p"):
        pj.alpha_divergence([0.5, -0.5], [0.5, 0.5], 0.0)
    with pytest.raises(ValueError, match="target"):
        pj.e_projection(torch.full((3,), 1 / 3), torch.arange(3.0), 5.0)
    with pytest.raises(ValueError, match="sigmas"):
        pj.MixtureParams([0.5, 0.5], [0.0, 1.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="weights\\[1\\]"):
        pj.markov_embedding([[0.5, 0.5], [0.5, 0.6]])
    with pytest.raises(ValueError, match="x"):
        pj.em_e_step([float("inf"), 1.0], pj.MixtureParams([0.5, 0.5], [0.0, 1.0], [1.0, 1.0]))
    with pytest.raises(ValueError, match="fisher"):
        ef.cramer_rao_bound(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
    with pytest.raises(ValueError, match="lr"):
        ef.sgd_asymptotic_covariance(torch.eye(2), 0.25)
    with pytest.raises(ValueError, match="estimates"):
        ef.scaled_covariance(torch.zeros(3, 2), 10)
    with pytest.raises(ValueError, match="data"):
        ef.online_sgd(ef.family_score(Gaussian), [0.0, 1.0], torch.zeros(5), lr=1.0)
