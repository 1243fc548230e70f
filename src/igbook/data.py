"""Small real datasets that ship inside scikit-learn, ready for torch.

Nothing is downloaded: digits, breast cancer, wine and iris are bundled with scikit-learn.
Every loader standardizes features with statistics of the *training* split only, splits with a
seeded permutation (stratified by class), and returns float64 tensors (``float32`` on request).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["Dataset", "load", "DATASETS"]

DATASETS = ("digits", "breast_cancer", "wine", "iris")


@dataclass(frozen=True)
class Dataset:
    """A standardized train/test split. ``y`` holds integer class labels (``torch.long``)."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    feature_mean: Tensor
    feature_std: Tensor

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])


def _raw(name: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets as skd

    loaders = {
        "digits": skd.load_digits,
        "breast_cancer": skd.load_breast_cancer,
        "wine": skd.load_wine,
        "iris": skd.load_iris,
    }
    bunch = loaders[name]()
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)


def load(
    name: str,
    *,
    test_fraction: float = 0.25,
    seed: int = 0,
    standardize: bool = True,
    dtype: torch.dtype = torch.float64,
) -> Dataset:
    """Load a bundled dataset as a seeded, stratified, standardized train/test split.

    Parameters
    ----------
    name
        One of ``"digits"`` (1797 x 64, 10 classes), ``"breast_cancer"`` (569 x 30, 2),
        ``"wine"`` (178 x 13, 3), ``"iris"`` (150 x 4, 3).
    test_fraction
        Fraction of each class held out, in [0, 1). ``0`` gives an empty test set.
    seed
        Seed of the split permutation.
    standardize
        Subtract the training mean and divide by the training standard deviation (constant
        features, such as the always-blank pixels of digits, are left at zero).
    """
    if name not in DATASETS:
        raise ValueError(f"name must be one of {DATASETS}, got {name!r}")
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must lie in [0, 1), got {test_fraction}")
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    x, y = _raw(name)
    rng = np.random.default_rng(seed)
    test_idx: list[int] = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        # test_fraction is not converted to float, so round() may return a numpy/torch scalar
        test_idx.extend(idx[: int(round(test_fraction * len(idx)))].tolist())  # noqa: RUF046
    test_mask = np.zeros(len(y), dtype=bool)
    test_mask[test_idx] = True
    train = np.flatnonzero(~test_mask)
    rng.shuffle(train)
    test = np.flatnonzero(test_mask)
    rng.shuffle(test)
    mean = x[train].mean(0)
    std = x[train].std(0)
    std = np.where(std > 0, std, 1.0)
    if standardize:
        x = (x - mean) / std
    t = lambda a: torch.as_tensor(a, dtype=dtype)  # noqa: E731
    return Dataset(
        name=name,
        x_train=t(x[train]),
        y_train=torch.as_tensor(y[train]),
        x_test=t(x[test]),
        y_test=torch.as_tensor(y[test]),
        num_classes=int(y.max() + 1),
        feature_mean=t(mean),
        feature_std=t(std),
    )
