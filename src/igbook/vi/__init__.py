r"""Natural-gradient variational inference and the Bayesian learning rule.

``igbook.vi.conjugate``, ``igbook.vi.vmp``, ``igbook.vi.svi``, ``igbook.vi.cvi``
    NGVI on exponential-family posteriors: Bayes as addition of natural parameters, VMP, SVI, CVI.
``igbook.vi.blr``
    The Bayesian learning rule for Gaussian posteriors (full and diagonal).

Import what you need from the submodules, e.g. ``from igbook.vi.blr import ...``.
"""
