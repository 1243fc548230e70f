"""Fashion-MNIST from IDX files: the parser on small synthetic files, and the real data set.

The tests that need the real files (Debian's ``dataset-fashion-mnist``) skip when it is absent,
except under ``CI=true``, where its absence is a failure (``.ci/run`` installs it).
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import pytest
import torch

from igbook import data
from igbook.data import (
    FASHION_MNIST_CLASSES,
    FashionMNISTNotFoundError,
    IDXFormatError,
    fashion_mnist_directory,
    load_fashion_mnist,
    read_idx,
)

IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.tobytes()


def _write(path, payload: bytes, compress: bool) -> None:
    path.write_bytes(gzip.compress(payload) if compress else payload)


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_roundtrip_uint8(tmp_path, compress):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(5, 3, 4), dtype=np.uint8)
    f = tmp_path / ("a.idx.gz" if compress else "a.idx")
    _write(f, _idx_bytes(arr), compress)
    out = read_idx(f)
    assert out.dtype == np.uint8 and out.shape == (5, 3, 4)
    np.testing.assert_array_equal(out, arr)


def test_read_idx_big_endian_int32(tmp_path):
    arr = np.array([[1, -2], [70000, 3]], dtype=">i4")
    f = tmp_path / "b.idx"
    _write(f, _idx_bytes(arr, code=0x0C), compress=False)
    out = read_idx(f)
    assert out.dtype == np.dtype(np.int32)
    np.testing.assert_array_equal(out, [[1, -2], [70000, 3]])


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"\x01\x00\x08\x01" + struct.pack(">I", 2) + b"\x00\x01", "magic number"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 2) + b"\x00\x01", "element type"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated IDX header"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 3) + b"\x00\x01", "payload has 2 bytes"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 1) + b"\x00\x01", "payload has 2 bytes"),
        (b"\x00\x00", "magic number"),
    ],
)
def test_read_idx_rejects_corrupt_files(tmp_path, payload, match):
    f = tmp_path / "bad.idx"
    _write(f, payload, compress=False)
    with pytest.raises(IDXFormatError, match=match):
        read_idx(f)


def test_read_idx_rejects_corrupt_gzip(tmp_path):
    good = gzip.compress(_idx_bytes(np.arange(100, dtype=np.uint8)))
    f = tmp_path / "bad.idx.gz"
    f.write_bytes(good[: len(good) // 2])
    with pytest.raises(IDXFormatError, match="corrupt gzip"):
        read_idx(f)
    assert issubclass(IDXFormatError, ValueError)


def _fake_fashion(directory, n_train=20, n_test=10, compress=True, image_shape=(28, 28)):
    rng = np.random.default_rng(1)
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, *image_shape), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, *image_shape), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for stem, arr in files.items():
        _write(directory / (stem + (".gz" if compress else "")), _idx_bytes(arr), compress)
    return files


def test_missing_files_error_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "nowhere"))
    monkeypatch.delenv(data.FASHION_MNIST_ENV, raising=False)
    with pytest.raises(FashionMNISTNotFoundError) as info:
        load_fashion_mnist()
    msg = str(info.value)
    assert "apt install dataset-fashion-mnist" in msg
    assert "zalandoresearch/fashion-mnist" in msg
    assert data.FASHION_MNIST_ENV in msg
    assert "never downloaded" in msg
    # a user directory with only some of the files: the missing ones are named
    _fake_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FashionMNISTNotFoundError, match="missing t10k-labels-idx1-ubyte"):
        load_fashion_mnist(tmp_path)
    assert issubclass(FashionMNISTNotFoundError, FileNotFoundError)


def test_wrong_shapes_are_rejected(tmp_path):
    # parsable IDX files that are not Fashion-MNIST: the loader checks the expected shapes
    _fake_fashion(tmp_path, image_shape=(28, 27))
    with pytest.raises(IDXFormatError, match="expected uint8 of shape"):
        load_fashion_mnist(tmp_path)


def test_environment_variable_and_plain_files(tmp_path, monkeypatch):
    # the loader checks the real sizes, so a synthetic set can only test the lookup order
    _fake_fashion(tmp_path, compress=False)
    monkeypatch.setenv(data.FASHION_MNIST_ENV, str(tmp_path))
    assert fashion_mnist_directory() == tmp_path
    other = tmp_path / "given"
    other.mkdir()
    _fake_fashion(other)
    assert fashion_mnist_directory(other) == other


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="scale"):
        load_fashion_mnist(tmp_path, scale="minmax")
    with pytest.raises(TypeError, match="flatten"):
        load_fashion_mnist(tmp_path, flatten=1)
    with pytest.raises(TypeError, match="dtype"):
        load_fashion_mnist(tmp_path, dtype=torch.int64)


# --- the real data set -------------------------------------------------------------------


def _real_directory():
    try:
        return fashion_mnist_directory()
    except FashionMNISTNotFoundError as exc:
        if IN_CI:
            pytest.fail(f"Fashion-MNIST is required when CI=true: {exc}", pytrace=False)
        pytest.skip("Fashion-MNIST not installed (apt install dataset-fashion-mnist)")


@pytest.fixture(scope="module")
def fashion():
    _real_directory()
    return load_fashion_mnist(flatten=True)


def test_real_shapes_and_labels(fashion):
    assert fashion.x_train.shape == (60000, 784) and fashion.x_test.shape == (10000, 784)
    assert fashion.x_train.dtype == torch.float32 and fashion.num_features == 784
    assert fashion.num_classes == len(FASHION_MNIST_CLASSES) == 10
    assert torch.bincount(fashion.y_train, minlength=10).tolist() == [6000] * 10
    assert torch.bincount(fashion.y_test, minlength=10).tolist() == [1000] * 10
    assert float(fashion.x_train.min()) >= 0.0 and float(fashion.x_train.max()) <= 1.0
    # the bytes are whole multiples of 1/255 with both ends attained
    assert float(fashion.x_train.min()) == 0.0 and float(fashion.x_train.max()) == 1.0


def test_real_pixel_statistics(fashion):
    # the published normalization constants of Fashion-MNIST's training set (mean 0.2860,
    # std 0.3530 of u/255, quoted to 4 digits): agreement to 1e-4
    x = fashion.x_train.double()
    assert abs(float(x.mean()) - 0.2860) < 1e-4
    assert abs(float(x.std(unbiased=False)) - 0.3530) < 1e-4
    # the first training label of the published file is 9 (ankle boot), the first test label 9
    assert int(fashion.y_train[0]) == 9 and int(fashion.y_test[0]) == 9


def test_real_standardized_and_image_shapes():
    _real_directory()
    d = load_fashion_mnist(scale="standardize", dtype=torch.float64)
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    # the training set is standardized by its own scalar mean and std (to float64 rounding)
    assert abs(float(d.x_train.mean())) < 1e-10
    assert abs(float(d.x_train.std(unbiased=False)) - 1.0) < 1e-10
    assert abs(float(d.feature_mean) - 0.2860) < 1e-4
    # undoing the scaling gives the bytes back: u/255 exactly to float64 rounding
    u = d.x_test * d.feature_std + d.feature_mean
    assert torch.allclose(u * 255, (u * 255).round(), atol=1e-9)
