"""Real datasets, ready for torch, never downloaded.

Digits, breast cancer, wine and iris are bundled with scikit-learn (:func:`load`): standardized
with statistics of the *training* split only, split with a seeded permutation (stratified by
class), float64 tensors (``float32`` on request). Fashion-MNIST (:func:`load_fashion_mnist`) is
read from the standard IDX files of Debian's ``dataset-fashion-mnist`` package or of a directory
the user names; when they are absent the error says how to get them.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from igbook._validation import check_choice

__all__ = [
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "Dataset",
    "FashionMNISTNotFoundError",
    "IDXFormatError",
    "fashion_mnist_directory",
    "load",
    "load_fashion_mnist",
    "read_idx",
]

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
        """Number of inputs per example (the product of the trailing dimensions)."""
        return int(np.prod(self.x_train.shape[1:]))


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


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST from the standard IDX files (never downloaded)
# ---------------------------------------------------------------------------------------------

#: Environment variable naming a directory that holds the four Fashion-MNIST IDX files.
FASHION_MNIST_ENV = "IGBOOK_FASHION_MNIST"
#: Where Debian's ``dataset-fashion-mnist`` package installs the files.
FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
#: The ten class names, in label order (Xiao et al., 2017).
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FASHION_FILES = {
    "x_train": ("train-images-idx3-ubyte", (60000, 28, 28)),
    "y_train": ("train-labels-idx1-ubyte", (60000,)),
    "x_test": ("t10k-images-idx3-ubyte", (10000, 28, 28)),
    "y_test": ("t10k-labels-idx1-ubyte", (10000,)),
}
_FASHION_HELP = (
    "Fashion-MNIST is never downloaded by igbook. Install it with "
    "`sudo apt install dataset-fashion-mnist` (Debian/Ubuntu; files in "
    f"{FASHION_MNIST_SYSTEM_DIR}), or put the four IDX files (train-images-idx3-ubyte.gz, "
    "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) from "
    "https://github.com/zalandoresearch/fashion-mnist (data/fashion) into a directory and pass "
    f"it as `directory=` or set the environment variable {FASHION_MNIST_ENV}."
)
# IDX type codes (third byte of the magic number) -> numpy big-endian dtype.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class IDXFormatError(ValueError):
    """An IDX file whose magic number, header or length is not what the format requires."""


class FashionMNISTNotFoundError(FileNotFoundError):
    """The Fashion-MNIST IDX files are not where igbook looked; the message says how to get them."""


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (LeCun et al.'s MNIST format), gzip-compressed or plain.

    The file is a 4-byte magic number ``0x00 0x00 t d`` (``t`` the element type, ``0x08`` for
    ``uint8``; ``d`` the number of dimensions), ``d`` big-endian ``uint32`` sizes, then the
    elements in C order :cite:`lecun1998gradient`. A file that starts with the gzip magic
    ``1f 8b`` is decompressed first.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    numpy.ndarray
        The array, with the header's shape and dtype (native byte order).

    Raises
    ------
    IDXFormatError
        Bad magic number, unknown type code, truncated header, or a payload whose length is not
        the product of the sizes times the element size.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise IDXFormatError(f"{path}: corrupt gzip stream ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise IDXFormatError(f"{path}: not an IDX file (magic number must start with 0x00 0x00)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise IDXFormatError(f"{path}: unknown IDX element type 0x{code:02x}")
    if ndim == 0:
        raise IDXFormatError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXFormatError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise IDXFormatError(
            f"{path}: IDX payload has {len(raw) - header} bytes, the header {shape} of "
            f"{dtype} needs {expected}"
        )
    out = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return out.astype(dtype.newbyteorder("="), copy=True)


def _idx_file(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (directory / name).is_file():
            return directory / name
    return None


def fashion_mnist_directory(directory: str | os.PathLike[str] | None = None) -> Path:
    """The directory Fashion-MNIST is read from.

    Looked up in this order: ``directory``; the environment variable ``IGBOOK_FASHION_MNIST``;
    ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``). A candidate
    counts only if all four IDX files (``.gz`` or plain) are in it.

    Raises
    ------
    FashionMNISTNotFoundError
        No candidate holds the four files; the message says how to get them.
    """
    if directory is not None:
        candidates = [("directory", Path(directory))]
    else:
        candidates = []
        if os.environ.get(FASHION_MNIST_ENV):
            candidates.append((FASHION_MNIST_ENV, Path(os.environ[FASHION_MNIST_ENV])))
        candidates.append(("the system directory", Path(FASHION_MNIST_SYSTEM_DIR)))
    looked = []
    for origin, cand in candidates:
        missing = [s for s, _ in _FASHION_FILES.values() if _idx_file(cand, s) is None]
        if not missing:
            return cand
        looked.append(f"{origin} {cand} (missing {', '.join(missing)})")
    raise FashionMNISTNotFoundError(
        "Fashion-MNIST not found: looked in " + "; ".join(looked) + ". " + _FASHION_HELP
    )


def load_fashion_mnist(
    directory: str | os.PathLike[str] | None = None,
    *,
    scale: str = "unit",
    flatten: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Dataset:
    r"""Fashion-MNIST :cite:`xiao2017fashion` from the standard IDX files, as torch tensors.

    60000 training and 10000 test images of 28 x 28 grey levels, ten balanced classes
    (:data:`FASHION_MNIST_CLASSES`; 6000 and 1000 per class), in the files' order (no
    shuffling). Nothing is downloaded: the files come from ``directory``, the environment
    variable ``IGBOOK_FASHION_MNIST`` or Debian's ``dataset-fashion-mnist``
    (see :func:`fashion_mnist_directory`).

    Parameters
    ----------
    directory
        A directory holding the four IDX files (gzip or plain); ``None`` searches as above.
    scale
        ``"unit"``: :math:`x = u / 255 \in [0, 1]` for the stored bytes :math:`u`.
        ``"standardize"``: :math:`x = (u/255 - m)/s` with the *training* set's scalar pixel mean
        :math:`m` and standard deviation :math:`s` (about 0.2860 and 0.3530), one pair for all
        pixels so that the always-dark border stays finite.
    flatten
        ``False``: images of shape ``(N, 1, 28, 28)`` (channels first, for convolutions);
        ``True``: rows of shape ``(N, 784)``.
    dtype
        ``torch.float32`` (default: the data set is 188 MB in float32) or ``torch.float64``.

    Returns
    -------
    Dataset
        With ``num_classes = 10`` and scalar ``feature_mean``/``feature_std`` (0 and 1 under
        ``"unit"``), so that ``x * feature_std + feature_mean`` is :math:`u/255`.

    Raises
    ------
    FashionMNISTNotFoundError
        The files are absent (the message says how to get them).
    IDXFormatError
        A file is corrupt or has the wrong shape.
    """
    check_choice(scale, "scale", ("unit", "standardize"))
    if not isinstance(flatten, bool):
        raise TypeError(f"flatten must be a bool, got {type(flatten).__name__}")
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    root = fashion_mnist_directory(directory)
    arrays = {}
    for key, (stem, shape) in _FASHION_FILES.items():
        path = _idx_file(root, stem)
        arr = read_idx(path)  # type: ignore[arg-type]
        if arr.shape != shape or arr.dtype != np.uint8:
            raise IDXFormatError(
                f"{path}: expected uint8 of shape {shape}, got {arr.dtype} of shape {arr.shape}"
            )
        if key.startswith("y") and int(arr.max()) > 9:
            raise IDXFormatError(f"{path}: labels must lie in 0..9, found {int(arr.max())}")
        arrays[key] = arr
    train_u = arrays["x_train"].astype(np.float64) / 255.0
    if scale == "standardize":
        mean, std = float(train_u.mean()), float(train_u.std())
    else:
        mean, std = 0.0, 1.0
    del train_u

    def images(u: np.ndarray) -> Tensor:
        x = torch.from_numpy(u).to(dtype).div_(255.0)
        if scale == "standardize":
            x.sub_(mean).div_(std)
        return x.reshape(len(u), -1) if flatten else x.unsqueeze(1)

    return Dataset(
        name="fashion_mnist",
        x_train=images(arrays["x_train"]),
        y_train=torch.from_numpy(arrays["y_train"].astype(np.int64)),
        x_test=images(arrays["x_test"]),
        y_test=torch.from_numpy(arrays["y_test"].astype(np.int64)),
        num_classes=10,
        feature_mean=torch.tensor(mean, dtype=dtype),
        feature_std=torch.tensor(std, dtype=dtype),
    )
