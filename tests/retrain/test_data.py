"""Dataset loaders, the spec parser, fitting data to a model, and the train/val split.

Every test writes its own tiny files (IDX gz, CIFAR pickle batches, npz) into tmp_path.
"""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from odimo.ir.errors import DataError
from odimo.retrain.data import (
    CIFAR10_TEST_BATCH,
    CIFAR10_TRAIN_BATCHES,
    FASHION_MNIST_FILES,
    Dataset,
    fit_to_model,
    load_dataset,
    make_synthetic,
    split_train_val,
)

N_TRAIN, N_TEST = 6, 4


# ---------------------------------------------------------------------------------------- writers


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_fashion_mnist(
    folder: Path, compress: bool = True, train_labels: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    if train_labels is None:
        train_labels = np.arange(N_TRAIN, dtype=np.uint8) % 10
    arrays = {
        "x_train": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        "y_train": train_labels,
        "x_test": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        "y_test": np.arange(N_TEST, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for key, stem in FASHION_MNIST_FILES.items():
        data = _idx_bytes(arrays[key])
        if compress:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return arrays


def _write_cifar(folder: Path, per_batch: int = 2) -> np.ndarray:
    """Batches like the originals: a dict with bytes keys, uint8 rows of 3072 (R, G, B planes)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for name in (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        with (folder / name).open("wb") as f:
            pickle.dump({b"batch_label": b"x", b"data": data, b"labels": labels}, f, protocol=2)
        rows.append(data)
    return np.concatenate(rows)


class _RunsCode:
    """Unpickling this calls os.getcwd: harmless, but a loader must refuse any global it calls."""

    def __reduce__(self) -> tuple:
        return (os.getcwd, ())


# ---------------------------------------------------------------------------------- Fashion-MNIST


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
def test_fashion_mnist_loads_idx_and_pads_to_32x32(tmp_path: Path, compress: bool) -> None:
    arrays = _write_fashion_mnist(tmp_path, compress)
    data = load_dataset(f"fashion-mnist:{tmp_path}")
    assert data.x_train.shape == (N_TRAIN, 1, 32, 32) and data.x_test.shape == (N_TEST, 1, 32, 32)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    np.testing.assert_array_equal(data.x_train[:, 0, 2:30, 2:30] * 255, arrays["x_train"])
    assert not data.x_train[:, :, :2].any() and not data.x_train[:, :, :, 30:].any()
    np.testing.assert_array_equal(data.y_test, arrays["y_test"])
    assert data.num_classes == 10 and data.input_shape == (1, 32, 32)


def test_fashion_mnist_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    _write_fashion_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz") as info:
        load_dataset(f"fashion-mnist:{tmp_path}")
    assert info.value.code == "E140"


def test_fashion_mnist_idx_with_too_few_bytes_names_the_file(tmp_path: Path) -> None:
    _write_fashion_mnist(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-1]))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz holds 3 bytes"):
        load_dataset(f"fashion-mnist:{tmp_path}")


def test_fashion_mnist_wrong_magic_names_the_file(tmp_path: Path) -> None:
    _write_fashion_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"PK\x03\x04 not idx"))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz is not an IDX file"):
        load_dataset(f"fashion-mnist:{tmp_path}")


def test_fashion_mnist_missing_file_and_folder(tmp_path: Path) -> None:
    _write_fashion_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="train-labels-idx1-ubyte"):
        load_dataset(f"fashion-mnist:{tmp_path}")
    with pytest.raises(DataError, match="folder not found"):
        load_dataset(f"fashion-mnist:{tmp_path / 'nowhere'}")


def test_fashion_mnist_image_and_label_counts_must_agree(tmp_path: Path) -> None:
    _write_fashion_mnist(tmp_path, train_labels=np.zeros(N_TRAIN - 1, np.uint8))
    with pytest.raises(DataError, match="do not pair up"):
        load_dataset(f"fashion-mnist:{tmp_path}")


def test_fashion_mnist_label_out_of_range(tmp_path: Path) -> None:
    _write_fashion_mnist(tmp_path, train_labels=np.full(N_TRAIN, 10, np.uint8))
    with pytest.raises(DataError, match=r"train labels span \[10, 10\]"):
        load_dataset(f"fashion-mnist:{tmp_path}")


# ------------------------------------------------------------------------------------------ CIFAR


@pytest.mark.parametrize("parent", [False, True], ids=["batches-folder", "parent-folder"])
def test_cifar10_loads_pickle_batches(tmp_path: Path, parent: bool) -> None:
    rows = _write_cifar(tmp_path / "cifar-10-batches-py")
    data = load_dataset(f"cifar10:{tmp_path if parent else tmp_path / 'cifar-10-batches-py'}")
    assert data.x_train.shape == (10, 3, 32, 32) and data.x_test.shape == (2, 3, 32, 32)
    # Row layout: 1024 red, then 1024 green, then 1024 blue values, each plane row-major.
    assert data.x_train[0, 1, 0, 5] == np.float32(rows[0, 1024 + 5] / 255)
    assert data.y_train.dtype == np.int64 and data.num_classes == 10


def test_cifar10_missing_batch_is_named(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3 not found"):
        load_dataset(f"cifar10:{tmp_path}")


def test_cifar10_corrupt_or_truncated_batch_is_named(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    (tmp_path / "test_batch").write_bytes((tmp_path / "test_batch").read_bytes()[:50])
    with pytest.raises(DataError, match="cannot unpickle CIFAR-10 batch test_batch"):
        load_dataset(f"cifar10:{tmp_path}")


def test_cifar10_batch_with_wrong_row_size(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    with (tmp_path / "data_batch_2").open("wb") as f:
        pickle.dump({b"data": np.zeros((2, 784), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DataError, match=r"data_batch_2 has data uint8 \(2, 784\)"):
        load_dataset(f"cifar10:{tmp_path}")


def test_cifar10_pickle_calling_code_is_refused(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    with (tmp_path / "data_batch_1").open("wb") as f:
        pickle.dump({b"data": _RunsCode(), b"labels": []}, f)
    with pytest.raises(DataError, match="posix.getcwd' is not allowed|os.getcwd' is not allowed"):
        load_dataset(f"cifar10:{tmp_path}")


# -------------------------------------------------------------------------------------------- npz


def test_npz_uint8_images_without_channel_axis_and_without_test_part(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.full((5, 28, 28), 255, np.uint8), y=np.array([0, 1, 2, 3, 4]))
    data = load_dataset(f"npz:{path}")
    assert data.x_train.shape == (5, 1, 28, 28) and data.x_train.max() == 1.0
    assert data.x_test.shape == (0, 1, 28, 28) and data.y_test.shape == (0,)
    assert data.num_classes == 5 and data.name == "d"


def test_npz_float_images_with_test_part_and_num_classes(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    x = np.random.default_rng(0).random((4, 3, 8, 8))
    np.savez(path, x=x, y=np.zeros(4, np.int32), x_test=x[:2], y_test=np.ones(2, np.int64),
             num_classes=np.array(7))  # fmt: skip
    data = load_dataset(f"npz:{path}")
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert data.x_test.shape == (2, 3, 8, 8) and data.num_classes == 7


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((2, 1, 4, 4))}, r"needs 'x' and 'y'"),
        ({"x": np.full((2, 1, 4, 4), 2.0), "y": np.zeros(2, int)}, r"span \[2, 2\], not \[0, 1\]"),
        ({"x": np.zeros((2, 1, 4, 4)), "y": np.zeros(2)}, r"labels are float64, not integers"),
        ({"x": np.zeros((2, 1, 4, 4)), "y": np.zeros(3, int)}, r"labels have shape \(3,\)"),
        ({"x": np.zeros((2, 4)), "y": np.zeros(2, int)}, r"images have shape \(2, 4\)"),
        ({"x": np.zeros((2, 1, 4, 4)), "y": np.zeros(2, int), "x_test": np.zeros((1, 1, 4, 4))},
         "only one of 'x_test' and 'y_test'"),
        ({"x": np.zeros((2, 1, 4, 4)), "y": np.zeros(2, int), "x_test": np.zeros((1, 1, 5, 5)),
          "y_test": np.zeros(1, int)}, r"x_test images \(1, 5, 5\) differ"),
        ({"x": np.zeros((2, 1, 4, 4)), "y": np.array([0, 3]), "num_classes": np.array(3)},
         r"train labels span \[0, 3\], outside \[0, 3\)"),
    ],
    ids=["no-y", "float-range", "float-labels", "count", "rank", "half-test", "test-shape",
         "label"],
)  # fmt: skip
def test_npz_malformed_arrays_name_the_file(tmp_path: Path, arrays: dict, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message) as info:
        load_dataset(f"npz:{path}")
    assert "bad.npz" in str(info.value)


def test_npz_corrupt_or_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.npz"
    np.savez(path, x=np.zeros((2, 1, 4, 4)), y=np.zeros(2, int))
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError, match="cannot read broken.npz"):
        load_dataset(f"npz:{path}")
    with pytest.raises(DataError, match="not found"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")


# -------------------------------------------------------------------------------- synthetic, spec


def test_synthetic_is_seeded_and_shaped() -> None:
    a = load_dataset("synthetic", input_shape=(1, 8, 8), num_classes=3, seed=4)
    b = load_dataset("synthetic", input_shape=(1, 8, 8), num_classes=3, seed=4)
    c = load_dataset("synthetic", input_shape=(1, 8, 8), num_classes=3, seed=5)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)
    assert a.x_train.shape[1:] == (1, 8, 8) and a.x_train.dtype == np.float32
    assert 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0
    assert a.y_train.max() < 3 and a.num_classes == 3 and len(a.y_test) > 0


def test_synthetic_rejects_empty_sizes() -> None:
    with pytest.raises(DataError, match="positive sizes"):
        make_synthetic((1, 8, 8), num_classes=0)


@pytest.mark.parametrize(
    ("spec", "message"),
    [("imagenet:/data", "unknown dataset spec"), ("cifar10", "names no path"),
     ("npz:", "names no path"), ("synthetic:3x32x32", "unknown dataset spec")],
)  # fmt: skip
def test_bad_specs_say_what_is_accepted(spec: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_dataset(spec)


# -------------------------------------------------------------------------------------- fitting


def _dataset(shape: tuple[int, int, int], labels: tuple[int, ...] = (0, 1, 2)) -> Dataset:
    x = np.random.default_rng(0).random((len(labels), *shape), dtype=np.float32)
    y = np.array(labels, np.int64)
    return Dataset("tiny", x, y, x[:1], y[:1], num_classes=max(labels) + 1)


def test_fit_returns_the_same_dataset_when_it_already_fits() -> None:
    data = _dataset((3, 32, 32))
    assert fit_to_model(data, (3, 32, 32), 10) is data


def test_fit_repeats_grey_images_across_three_channels_and_pads_28_to_32() -> None:
    data = _dataset((1, 28, 28))
    fitted = fit_to_model(data, (3, 32, 32), 10)
    assert fitted.x_train.shape == (3, 3, 32, 32) and fitted.x_test.shape == (1, 3, 32, 32)
    for c in range(3):
        np.testing.assert_array_equal(fitted.x_train[:, c, 2:30, 2:30], data.x_train[:, 0])
    assert fitted.x_train[:, :, [0, 1, 30, 31]].sum() == 0
    assert fitted.num_classes == 10


@pytest.mark.parametrize(
    ("data_shape", "model_shape", "message"),
    [
        ((3, 32, 32), (1, 32, 32), r"data has 3 channel\(s\), the model takes 1"),
        ((2, 32, 32), (3, 32, 32), r"data has 2 channel\(s\), the model takes 3"),
        ((1, 32, 32), (1, 28, 28), "data images are 32x32, the model takes 28x28"),
        ((1, 24, 24), (1, 32, 32), "data images are 24x24, the model takes 32x32"),
        ((1, 31, 31), (1, 32, 32), "data images are 31x31, the model takes 32x32"),
    ],
)
def test_fit_refuses_other_shapes_naming_both(data_shape: tuple, model_shape: tuple, message: str) -> None:
    with pytest.raises(DataError, match=message) as info:
        fit_to_model(_dataset(data_shape), model_shape, 10)
    assert str(data_shape) in info.value.where and str(model_shape) in info.value.where


def test_fit_refuses_labels_beyond_the_model_outputs() -> None:
    with pytest.raises(DataError, match="data has label 2 .3 classes., the model has 2 outputs"):
        fit_to_model(_dataset((1, 32, 32)), (1, 32, 32), 2)


# ---------------------------------------------------------------------------------------- split


def test_split_is_90_10_seeded_disjoint_and_complete() -> None:
    data = make_synthetic((1, 4, 4), 10, n_train=100, n_test=1, seed=0)
    split = split_train_val(data, seed=3)
    assert len(split.y_train) == 90 and len(split.y_val) == 10
    again = split_train_val(data, seed=3)
    np.testing.assert_array_equal(split.x_val, again.x_val)
    other = split_train_val(data, seed=4)
    assert not np.array_equal(split.x_val, other.x_val)
    rows = np.concatenate([split.x_train, split.x_val]).reshape(100, -1)
    assert len(np.unique(rows, axis=0)) == 100
    assert sorted(map(tuple, rows)) == sorted(map(tuple, data.x_train.reshape(100, -1)))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_split_rejects_fractions_outside_0_1(fraction: float) -> None:
    with pytest.raises(DataError, match="val_fraction"):
        split_train_val(make_synthetic((1, 4, 4), 2, n_train=10), val_fraction=fraction)
