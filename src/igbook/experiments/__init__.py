r"""Experiment set-ups shared by a chapter, its tests and its benchmark.

These modules are not the library: they build the data, networks and training runs of the
book's experiments and hold their tuned hyperparameters as named constants, so that a chapter,
its tests and ``benchmarks/`` run the same experiment. They import the library; the library
never imports them.

:mod:`igbook.experiments.models`
    :func:`~igbook.experiments.models.mlp`, the one network builder (seeded, tanh or ReLU).
:mod:`igbook.experiments.kunstner`
    The data sets of :cite:t:`kunstner2019limitations` (the empirical-Fisher section).
:mod:`igbook.experiments.blr`
    Bayesian linear regression, the gap regression and IVON against AdamW on digits (the
    Bayesian learning rule chapter, ``benchmarks/bench_ivon.py``).
:mod:`igbook.experiments.kfac_autoencoder`
    The digits autoencoder trained with SGD, Adam, K-FAC and exact natural gradient (the K-FAC
    chapter, ``benchmarks/bench_kfac.py``).
:mod:`igbook.experiments.optimizer_race`
    The small network with an exact Fisher and the race of SGD, Adam, K-FAC, Shampoo, SOAP,
    Muon and IVON on the digits autoencoder and classifier (the optimizer-geometry chapter,
    ``benchmarks/bench_optimizer_race.py``).
:mod:`igbook.experiments.policy_gradient`
    Tabular MDPs, the LQR and the CartPole protocol of the policy-gradient chapter
    (``benchmarks/bench_policy_gradient.py``).
:mod:`igbook.experiments.laplace`
    The MAP networks of the Laplace chapter (the gap regression, breast-cancer and digits
    classifiers), the polynomial linear model and the 2-D logistic regression with its exact
    posterior by quadrature (``benchmarks/bench_laplace.py``).
:mod:`igbook.experiments.continual`
    The continual-learning protocol and tuned hyperparameters (the continual-learning chapter,
    ``benchmarks/bench_continual.py``).
:mod:`igbook.experiments.fashion_mnist`
    The Fashion-MNIST benchmarks: the deep autoencoder of Martens and Grosse with K-FAC, SGD
    and Adam, IVON against AdamW on a small CNN, and permuted Fashion-MNIST for every
    continual-learning method (``benchmarks/bench_fashion_mnist.py``).
"""
