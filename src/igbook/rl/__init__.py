r"""Reinforcement learning with the policy's Fisher: exact tabular and LQR cases, PG/NPG/TRPO/PPO.

:mod:`igbook.rl.tabular`
    finite MDPs solved exactly (evaluation, value iteration, occupancy), softmax policies with
    the exact policy gradient and Fisher, NPG as multiplicative weights (soft policy iteration).
:mod:`igbook.rl.lqr`
    a scalar discounted LQR with a linear-Gaussian policy: return, gradient, Fisher and the
    optimal gain in closed form.
:mod:`igbook.rl.policies`
    categorical and Gaussian policy networks; their Fisher-vector products from the curvature
    core (:class:`igbook.fisher.CurvatureOperator`).
:mod:`igbook.rl.updates`
    PG, NPG and TRPO steps (conjugate gradient from :mod:`igbook.natgrad`) and PPO's clipped loss.
:mod:`igbook.rl.rollouts`, :mod:`igbook.rl.training`
    seeded `gymnasium` rollouts, returns-to-go, GAE, and one actor-critic loop for the four methods.
"""

from igbook.rl.lqr import (
    ScalarLQR,
    lqr_fisher,
    lqr_gain_value,
    lqr_gradient,
    lqr_natural_gradient,
    lqr_optimal_gain,
    lqr_return,
    lqr_second_moment,
    riccati_iteration,
)
from igbook.rl.policies import (
    CategoricalPolicy,
    GaussianPolicy,
    categorical_kl,
    policy_fisher,
    policy_parameters,
)
from igbook.rl.rollouts import Rollout, collect_rollout, gae, returns_to_go
from igbook.rl.tabular import (
    TabularMDP,
    advantages,
    discounted_occupancy,
    expected_return,
    natural_policy_gradient,
    npg_step,
    policy_evaluation,
    policy_iterates,
    q_values,
    random_mdp,
    softmax_policy,
    softmax_policy_fisher,
    softmax_policy_gradient,
    two_state_mdp,
    value_iteration,
)
from igbook.rl.training import METHODS, TrainConfig, TrainResult, evaluate_policy, train_policy
from igbook.rl.updates import (
    PolicyStep,
    npg_step_network,
    pg_step,
    ppo_clip_loss,
    surrogate_gradient,
    trpo_step,
)

__all__ = [
    "TabularMDP",
    "random_mdp",
    "two_state_mdp",
    "policy_evaluation",
    "q_values",
    "advantages",
    "expected_return",
    "discounted_occupancy",
    "value_iteration",
    "softmax_policy",
    "softmax_policy_gradient",
    "softmax_policy_fisher",
    "natural_policy_gradient",
    "npg_step",
    "policy_iterates",
    "ScalarLQR",
    "lqr_second_moment",
    "lqr_return",
    "lqr_gradient",
    "lqr_fisher",
    "lqr_natural_gradient",
    "lqr_gain_value",
    "lqr_optimal_gain",
    "riccati_iteration",
    "CategoricalPolicy",
    "GaussianPolicy",
    "policy_fisher",
    "policy_parameters",
    "categorical_kl",
    "PolicyStep",
    "surrogate_gradient",
    "pg_step",
    "npg_step_network",
    "trpo_step",
    "ppo_clip_loss",
    "Rollout",
    "collect_rollout",
    "returns_to_go",
    "gae",
    "METHODS",
    "TrainConfig",
    "TrainResult",
    "train_policy",
    "evaluate_policy",
]
