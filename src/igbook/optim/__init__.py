r"""``torch.optim.Optimizer`` subclasses derived from natural gradients and the Bayesian learning rule.

One module per optimizer family; each validates its hyperparameters the way ``torch.optim``
does, supports param groups, closures and ``state_dict``.
"""

# One line per optimizer module: keep the lines below in place and add yours.
# [exports:optim.blr]    VON, VOGN, Vadam, IVON, sampled_params, predictive
# [exports:optim.mesu]   MESU
# [exports:optim.bgd]    BGD
