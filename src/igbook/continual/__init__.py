r"""Continual learning as geometry: task streams, EWC, online EWC, SI, BGD, MESU, FOPNG, metrics.

:mod:`igbook.continual.streams`
    Permuted and split digits (task- and class-incremental), streaming and boundary-aware.
:mod:`igbook.continual.importance`
    The diagonal Fisher of a classifier (exact, Monte Carlo, empirical: the curvature core
    :func:`igbook.fisher.models.fisher_diagonal` with a likelihood; and the batched squared
    gradients), the full-Fisher quadratic form, the KL between predictive distributions, the
    EWC penalty.
:mod:`igbook.continual.methods`
    One interface (:class:`~igbook.continual.learner.ContinualLearner`) over fine-tuning, EWC,
    online EWC, SI, BGD, MESU and FOPNG, and the factory
    :func:`~igbook.continual.methods.make_learner`; the methods live
    in :mod:`igbook.continual.learner` (interface, fine-tuning),
    :mod:`igbook.continual.regularization` (EWC, online EWC, SI),
    :mod:`igbook.continual.bayesian` (BGD, MESU) and :mod:`igbook.continual.projection` (FOPNG).
:mod:`igbook.continual.runner`
    Run a learner through a stream; the accuracy matrix and timings.
:mod:`igbook.continual.metrics`
    Average accuracy, newest-task accuracy, forgetting, backward transfer.
:mod:`igbook.continual.uncertainty`
    Predictive, aleatoric and epistemic entropies; OOD-detection AUC.

The Gaussian-weight optimizers themselves are :class:`igbook.optim.MESU` and
:class:`igbook.optim.BGD`.
"""

from igbook.continual.importance import (
    FISHER_KINDS,
    batched_gradient_diagonal,
    diagonal_fisher,
    ewc_penalty,
    fisher_quadratic_form,
    named_params,
    predictive_kl,
    restrict_logits,
)
from igbook.continual.methods import (
    EWC,
    FOPNG,
    METHODS,
    SI,
    BGDLearner,
    BinaryLogits,
    ContinualLearner,
    FineTuning,
    MESULearner,
    OnlineEWC,
    fopng_direction,
    make_learner,
)
from igbook.continual.metrics import (
    average_accuracy,
    backward_transfer,
    forgetting,
    mean_std,
    newest_task_accuracy,
    summarize,
)
from igbook.continual.runner import StreamResult, evaluate, run_stream
from igbook.continual.streams import (
    Task,
    TaskStream,
    minibatches,
    ood_digits,
    permuted_digits,
    split_digits,
    stream_batches,
)
from igbook.continual.uncertainty import entropy, ood_auc, roc_auc, uncertainty_decomposition

__all__ = [
    "FISHER_KINDS",
    "batched_gradient_diagonal",
    "diagonal_fisher",
    "ewc_penalty",
    "fisher_quadratic_form",
    "named_params",
    "predictive_kl",
    "restrict_logits",
    "EWC",
    "FOPNG",
    "METHODS",
    "SI",
    "BGDLearner",
    "BinaryLogits",
    "ContinualLearner",
    "FineTuning",
    "MESULearner",
    "OnlineEWC",
    "fopng_direction",
    "make_learner",
    "average_accuracy",
    "backward_transfer",
    "forgetting",
    "mean_std",
    "newest_task_accuracy",
    "summarize",
    "StreamResult",
    "evaluate",
    "run_stream",
    "Task",
    "TaskStream",
    "minibatches",
    "ood_digits",
    "permuted_digits",
    "split_digits",
    "stream_batches",
    "entropy",
    "ood_auc",
    "roc_auc",
    "uncertainty_decomposition",
]
