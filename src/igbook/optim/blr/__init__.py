r"""Bayesian-learning-rule optimizers: VON, VOGN, Vadam and IVON.

Each optimizer keeps a *diagonal Gaussian posterior* :math:`q(\theta) = \mathcal{N}(m,
\operatorname{diag}(\sigma^2))` over the parameters it is given. The mean :math:`m` lives in
the parameters themselves (so ``model(x)`` evaluates the network at the posterior mean); the
curvature that sets :math:`\sigma^2` lives in the optimizer state. All four are the diagonal
Gaussian Bayesian learning rule (:mod:`igbook.vi.blr`, :cite:`khan2023bayesian`) applied to

.. math::

    \bar\ell(\theta) = N\,\hat f(\theta) + \tfrac{\lambda}{2}\|\theta\|^2,

with :math:`\hat f` the *average* negative log-likelihood of a minibatch (what the closure
returns), :math:`N` the training-set size and :math:`\lambda` the prior precision. They differ
in how they estimate the expected Hessian and in what extra approximations they make:

- :class:`VON` :cite:`khan2018fast`: the diagonal of :math:`\nabla^2\hat f(\theta)` at the sampled
  weights (exact or Hutchinson);
- :class:`VOGN` :cite:`khan2018fast,osawa2019practical`: :math:`\frac1M\sum_i g_i(\theta)^2`, per-example
  gradients from :mod:`igbook.fisher` (empirical, Monte Carlo or exact Fisher, GGN:
  ``fisher_type``);
- :class:`Vadam` :cite:`khan2018fast`: :math:`\hat g(\theta)^2` of the minibatch gradient, with Adam's
  square root and momentum;
- :class:`IVON` :cite:`shen2024variational`: :math:`\hat g\odot(\theta - m)/\sigma^2` (the
  reparameterization/Price estimator), with momentum and a positivity correction.

Parameterizations follow the papers. VON, VOGN and Vadam take ``data_size`` :math:`N` and
``prior_precision`` :math:`\lambda` and keep :math:`s` (the curvature of the *average* loss):
:math:`\sigma^2 = 1/(N s + \lambda)`. IVON takes the effective sample size ``ess``
:math:`\approx N` and ``weight_decay`` :math:`\delta`: :math:`\sigma^2 = 1/(\text{ess}\,(h +
\delta))`, so its prior precision is :math:`\text{ess}\cdot\delta`.

How to train
------------
*IVON and Vadam* accept either a closure (``optimizer.step(closure)``, where the closure zeroes
nothing special, evaluates the loss, calls ``backward()`` and returns the loss; the optimizer
samples the weights before each of its ``mc_samples`` calls) or gradients collected by hand
inside :meth:`VariationalOptimizer.sampled_params` (``train=True``), one block per Monte Carlo sample, followed by
``optimizer.step()``. *VON* needs second derivatives: its closure returns the loss **without**
calling ``backward()``. *VOGN* needs per-example gradients or a Fisher diagonal: its closure is
a :class:`PerExampleClosure`, which holds a likelihood of :mod:`igbook.fisher.likelihoods`.

Sampling
--------
:meth:`VariationalOptimizer.sampled_params` (also :func:`igbook.optim.sampling.sampled_params`) replaces every
parameter by a posterior sample for the duration of a ``with`` block and **always** restores
the means on exit, also when the block raises (the reference IVON code leaves the sampled
weights in the model in that case). Every optimizer takes ``seed`` or ``generator`` and saves
its generator state in ``state_dict()``, so seeded runs and resumed runs are reproducible.

Failures
--------
A step never poisons the model (``igbook._safety``): a gradient or a Monte Carlo
statistic that is not finite raises :class:`FloatingPointError` naming the parameter before
anything is written (``nonfinite="skip"`` skips such steps instead, counting them in
``skipped_steps``), and a closure that raises on any of its samples leaves the parameters, the
optimizer state and the generator exactly as before the call. Parameters that receive no
gradient (``.grad is None`` in every sample; for VON a loss that does not depend on them, for
VOGN ``requires_grad=False``) are not moved, as in ``torch.optim``; ``move_without_grad=True``
updates them as with a zero gradient (the prior then pulls their means towards 0 and their
curvature decays towards the prior's, the reading of the reference ``ivon-opt`` code).

Modules
-------
``igbook.optim.blr.base`` (:class:`VariationalOptimizer`: sampling, Monte Carlo averages,
failures, state), ``igbook.optim.blr.ivon``, ``igbook.optim.blr.vadam``,
``igbook.optim.blr.newton`` (VON, VOGN) and ``igbook.optim.blr.closures``
(:class:`PerExampleClosure`). Every name is importable from here.
"""

from igbook.optim.blr.base import VariationalOptimizer
from igbook.optim.blr.closures import LIKELIHOODS, PerExampleClosure
from igbook.optim.blr.ivon import IVON
from igbook.optim.blr.newton import VOGN, VOGN_FISHER_TYPES, VON
from igbook.optim.blr.vadam import Vadam

__all__ = [
    "VariationalOptimizer",
    "VON",
    "VOGN",
    "Vadam",
    "IVON",
    "PerExampleClosure",
    "LIKELIHOODS",
    "VOGN_FISHER_TYPES",
]

# the public home of these classes is this package (documentation, pickling, API listings)
for _cls in (VariationalOptimizer, VON, VOGN, Vadam, IVON, PerExampleClosure):
    _cls.__module__ = __name__
del _cls
