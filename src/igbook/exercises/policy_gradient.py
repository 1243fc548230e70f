r"""Self-checks for the exercises of the policy-gradient chapter."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from igbook.exercises._core import Feedback, compare, need_function, run_reader
from igbook.fisher import CategoricalLikelihood
from igbook.rl import TabularMDP, npg_step

__all__ = ["check_softmax_fisher", "check_bandit_npg_step", "check_trpo_step"]

D = torch.float64
_PROBS = (
    torch.tensor([0.2, 0.3, 0.5], dtype=D),
    torch.tensor([0.7, 0.1, 0.1, 0.1], dtype=D),
    torch.tensor([0.5, 0.5], dtype=D),
)


def check_softmax_fisher(fisher: Callable[[Tensor], Tensor]) -> Feedback:
    r"""Check ``fisher(p)``: the Fisher of a softmax policy in one state, in its logits, given the probabilities ``p``.

    Expected: :math:`\operatorname{diag}(p) - pp^\top` (the categorical output Fisher of
    :class:`igbook.fisher.CategoricalLikelihood`).
    """
    if (bad := need_function(fisher, "p -> Fisher matrix (K, K)")) is not None:
        return bad
    for p in _PROBS:
        where = f"at p={[round(float(v), 2) for v in p]}"
        out = run_reader(fisher, p.clone(), where=where)
        if isinstance(out, Feedback):
            return out
        expected = CategoricalLikelihood().output_fisher(torch.log(p)[None])[0]
        fb = compare(
            out,
            expected,
            what="the Fisher matrix",
            where=where,
            rtol=1e-6,
            mistakes=[
                (
                    torch.diag(p),
                    (
                        "You kept diag(p) only: the score is e_a - p, so its covariance also has the "
                        "- p p^T term."
                    ),
                ),
                (
                    torch.diag(1 / p),
                    (
                        "diag(1/p) is the Fisher in the probabilities themselves; the policy is "
                        "parameterized by its logits."
                    ),
                ),
                (
                    torch.outer(p, p),
                    "p p^T alone is the outer product of the mean score's offset, not the covariance.",
                ),
            ],
            hint="The score of log softmax(theta)_a is e_a - p; average its outer product over a ~ p.",
        )
        if not fb:
            return fb
    return Feedback(
        True,
        "Right: F = diag(p) - p p^T, singular along the all-ones direction (adding a constant to "
        "every logit leaves the policy unchanged).",
    )


def check_bandit_npg_step(
    new_probs: object, *, probs: tuple[float, float], rewards: tuple[float, float], lr: float
) -> Feedback:
    r"""Check the policy after one exact NPG step on a two-armed bandit.

    The bandit is a one-state MDP with :math:`\gamma = 0`; the natural gradient of
    :math:`V = \pi^\top r` in the logits is the advantage :math:`r - \pi^\top r` (plus a constant),
    so :math:`\pi_+ \propto \pi\,e^{\eta r}` (:func:`igbook.rl.npg_step`).
    """
    p = torch.tensor(probs, dtype=D)
    r = torch.tensor(rewards, dtype=D)
    mdp = TabularMDP(torch.ones(1, 2, 1, dtype=D), r[None], torch.ones(1, dtype=D), 0.0)
    expected = npg_step(mdp, p[None], lr)[0]
    adv = r - p @ r
    additive = p + lr * adv
    vanilla = torch.softmax(torch.log(p) + lr * p * adv, -1)
    fb = compare(
        new_probs,
        expected,
        what="the new action probabilities",
        rtol=1e-6,
        mistakes=[
            (
                vanilla,
                (
                    "That is the vanilla policy-gradient step (theta + lr * p * A): the natural "
                    "gradient drops the factor p, giving theta + lr * A."
                ),
            ),
            (
                additive,
                (
                    "You added lr * A to the probabilities; NPG moves the logits, so the "
                    "probabilities are multiplied by exp(lr * A) and renormalized."
                ),
            ),
            (
                p * torch.exp(lr * r),
                "Renormalize: the new probabilities must sum to 1.",
            ),
        ],
        hint="Write the logits theta = log p, add lr times the natural gradient, take softmax.",
    )
    if not fb:
        return fb
    return Feedback(True, "Right: one NPG step multiplies each probability by exp(lr * reward).")


def check_trpo_step(step: object, *, grad: Tensor, fisher: Tensor, max_kl: float) -> Feedback:
    r"""Check a TRPO step :math:`\beta F^{-1}g` with :math:`\tfrac12\beta^2 g^\top F^{-1}g = \delta`.

    Expected: :math:`\sqrt{2\delta/(g^\top F^{-1}g)}\,F^{-1}g` (:func:`igbook.natgrad.trust_region_step_size`
    along the natural direction) :cite:`schulman2015trust`.
    """
    g = torch.as_tensor(grad, dtype=D)
    f = torch.as_tensor(fisher, dtype=D)
    x = torch.linalg.solve(f, g)
    quad = g @ x
    expected = torch.sqrt(2 * max_kl / quad) * x
    fb = compare(
        step,
        expected,
        what="the TRPO step",
        rtol=1e-6,
        mistakes=[
            (
                torch.sqrt(max_kl / quad) * x,
                "The KL is one half of the quadratic form: 1/2 beta^2 g^T F^{-1} g = delta.",
            ),
            (
                (2 * max_kl / quad) * x,
                "Solve for beta, not beta^2: take the square root.",
            ),
            (
                torch.sqrt(2 * max_kl / (g @ f @ g)) * g,
                "That step follows the gradient g; TRPO follows the natural direction F^{-1} g.",
            ),
        ],
        hint="Find x = F^{-1} g, then the beta with 1/2 beta^2 x^T F x = delta.",
    )
    if not fb:
        return fb
    return Feedback(True, "Right: the step spends exactly the KL budget, to second order.")
