r"""Natural-gradient variational inference and the Bayesian learning rule.

:mod:`igbook.vi.conjugate`
    the NGVI step and conjugate models (Beta-Bernoulli, Gamma-Poisson, Bayesian linear
    regression, Normal-Gamma): Bayes' rule as addition of natural parameters.
:mod:`igbook.vi.vmp`
    variational message passing on the mean-field Normal-Gamma model.
:mod:`igbook.vi.svi`
    stochastic VI with minibatches and Robbins-Monro steps; a Gaussian mixture with local variables.
:mod:`igbook.vi.cvi`
    conjugate-computation VI for Bayesian logistic regression, and VI by Euclidean gradients.
``igbook.vi.blr``
    The Bayesian learning rule for Gaussian posteriors (full and diagonal).

Import what you need from the submodules, e.g. ``from igbook.vi.blr import ...``.
"""
