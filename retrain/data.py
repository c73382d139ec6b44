"""Datasets for retraining, as in-memory numpy arrays.

Every loader returns a `Dataset`: images float32 NCHW in [0, 1] and labels int64, with a train and a
test part. Sources, selected by a spec string (`load_dataset`):

    fashion-mnist            Debian's /usr/share/datasets/fashion-mnist (IDX files, gzipped or not)
    fashion-mnist:/dir       the same four files in another folder
    cifar10:/dir             the `cifar-10-batches-py` pickles (the folder itself or its parent)
    npz:/file.npz            arrays x, y and optionally x_test, y_test (and a scalar num_classes)
    synthetic                seeded random images, for smoke runs

Fashion-MNIST is zero-padded from 28x28 to 32x32 on load, the usual way to feed it to CIFAR-sized
networks. Anything a user can get wrong (missing, corrupt or truncated files, wrong shapes, labels
out of range) raises `DataError` (E140) naming the file.
"""

from __future__ import annotations

import gzip
import pickle
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from odimo.ir.errors import DataError
from odimo.ir.resources import available_memory, human_bytes

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
# A 28x28 map grows to 32x32: at most this many zero pixels are added per side by `fit_to_model`.
MAX_PAD_PER_SIDE = 2


@dataclass(frozen=True)
class Dataset:
    """Images `x_*` (N, C, H, W) float32 in [0, 1] and labels `y_*` (N,) int64 in [0, num_classes).

    `x_test` may have zero rows (an .npz without a test part).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)


@dataclass(frozen=True)
class TrainValSplit:
    """The training part of a `Dataset` cut into train and validation (method.md §4)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


# ---------------------------------------------------------------------------------------------- IDX


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            return gzip.decompress(raw)
        return raw
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"cannot read {path.name}: {exc}",
            str(path),
            "re-download the file; a .gz file must be a complete gzip stream",
        ) from exc


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format, gzipped or not) of unsigned bytes as a uint8 array."""
    data = _read_maybe_gzip(path)
    fix = "re-download the file; it must be an IDX file of unsigned bytes (magic 0x0000080N)"
    if len(data) < 4 or data[0:3] != b"\x00\x00\x08" or data[3] == 0:
        raise DataError(f"{path.name} is not an IDX file of unsigned bytes", str(path), fix)
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path.name} is truncated inside its header", str(path), fix)
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise DataError(
            f"{path.name} holds {len(data) - header} bytes of data, its header {dims} needs {expected}",
            str(path),
            fix,
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"Fashion-MNIST file {stem}(.gz) not found",
        str(folder),
        "point fashion-mnist:/path at a folder with the four IDX files, or install Debian's fashion-mnist data package",
    )


def load_fashion_mnist(folder: Path | str = FASHION_MNIST_DIR) -> Dataset:
    """Fashion-MNIST from a folder of the four IDX files, zero-padded to 1x32x32."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(
            "Fashion-MNIST folder not found",
            str(folder),
            "install Debian's fashion-mnist data package or pass fashion-mnist:/path/to/folder",
        )
    arrays = {key: read_idx(_find_idx(folder, stem)) for key, stem in FASHION_MNIST_FILES.items()}
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        source = folder / FASHION_MNIST_FILES[f"x_{part}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(
                f"Fashion-MNIST {part} images {x.shape} and labels {y.shape} do not pair up",
                str(source),
                "images must be (N, H, W) and labels (N,) with the same N",
            )
    x_train = _to_float(arrays["x_train"][:, None])
    x_test = _to_float(arrays["x_test"][:, None])
    y_train = arrays["y_train"].astype(np.int64)
    y_test = arrays["y_test"].astype(np.int64)
    dataset = Dataset(
        "fashion-mnist",
        _pad_to(x_train, 32, 32),
        y_train,
        _pad_to(x_test, 32, 32),
        y_test,
        num_classes=10,
    )
    _check_labels(dataset, str(folder))
    return dataset


# ------------------------------------------------------------------------------------------- CIFAR


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batch format (a dict of numpy arrays and lists) and nothing else, so a
    hostile file cannot run code. `_codecs.encode` is how Python 3 writes bytes at protocol 2."""

    _ALLOWED = {
        ("_codecs", "encode"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    fix = "re-extract cifar-10-python.tar.gz; each batch is a pickled dict with 'data' and 'labels'"
    try:
        with path.open("rb") as f:
            batch = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except FileNotFoundError as exc:
        raise DataError(f"CIFAR-10 batch {path.name} not found", str(path), fix) from exc
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as exc:
        raise DataError(f"cannot unpickle CIFAR-10 batch {path.name}: {exc}", str(path), fix) from exc
    if not isinstance(batch, dict):
        raise DataError(f"CIFAR-10 batch {path.name} is not a dict", str(path), fix)
    data = batch.get("data", batch.get(b"data"))
    labels = batch.get("labels", batch.get(b"labels"))
    if data is None or labels is None:
        raise DataError(f"CIFAR-10 batch {path.name} lacks 'data' or 'labels'", str(path), fix)
    data = np.asarray(data)
    labels = np.asarray(labels)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"CIFAR-10 batch {path.name} has data {data.dtype} {data.shape}, expected uint8 (N, 3072)",
            str(path),
            fix,
        )
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu":
        raise DataError(
            f"CIFAR-10 batch {path.name} has {labels.shape} labels for {len(data)} images",
            str(path),
            fix,
        )
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_cifar10(folder: Path | str) -> Dataset:
    """CIFAR-10 from the python-pickle batches (`data_batch_1..5`, `test_batch`), 3x32x32."""
    folder = Path(folder)
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    if not folder.is_dir():
        raise DataError(
            "CIFAR-10 folder not found",
            str(folder),
            "pass cifar10:/path to the extracted cifar-10-batches-py folder",
        )
    train = [_read_cifar_batch(folder / name) for name in CIFAR10_TRAIN_BATCHES]
    x_test, y_test = _read_cifar_batch(folder / CIFAR10_TEST_BATCH)
    dataset = Dataset(
        "cifar10",
        _to_float(np.concatenate([x for x, _ in train])),
        np.concatenate([y for _, y in train]),
        _to_float(x_test),
        y_test,
        num_classes=10,
    )
    _check_labels(dataset, str(folder))
    return dataset


# --------------------------------------------------------------------------------------------- npz


def load_npz(path: Path | str) -> Dataset:
    """Arrays `x`, `y` (train) and optional `x_test`, `y_test` from an .npz file.

    Images are (N, C, H, W) or (N, H, W) (one channel), uint8 (scaled by 1/255) or float already in
    [0, 1]; labels are integers. `num_classes` is the scalar array of that name if present, else the
    largest label + 1. Without a test part, `x_test`/`y_test` have zero rows.
    """
    path = Path(path)
    fix = "save the arrays with np.savez(path, x=..., y=..., x_test=..., y_test=...)"
    _require_memory_for(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except FileNotFoundError as exc:
        raise DataError(".npz file not found", str(path), "pass npz:/path/to/file.npz") from exc
    except (OSError, ValueError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read {path.name} as .npz: {exc}", str(path), fix) from exc
    if "x" not in arrays or "y" not in arrays:
        raise DataError(f"{path.name} has arrays {sorted(arrays)}, needs 'x' and 'y'", str(path), fix)
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{path.name} has only one of 'x_test' and 'y_test'", str(path), fix)
    x_train, y_train = _npz_pair(arrays["x"], arrays["y"], ("x", "y"), path)
    if "x_test" in arrays:
        x_test, y_test = _npz_pair(arrays["x_test"], arrays["y_test"], ("x_test", "y_test"), path)
        if x_test.shape[1:] != x_train.shape[1:]:
            raise DataError(
                f"{path.name}: x_test images {x_test.shape[1:]} differ from x images {x_train.shape[1:]}",
                str(path),
                "store train and test images at the same (C, H, W)",
            )
    else:
        x_test = np.zeros((0, *x_train.shape[1:]), np.float32)
        y_test = np.zeros((0,), np.int64)
    if "num_classes" in arrays:
        num_classes_array = arrays["num_classes"]
        if num_classes_array.shape != () or num_classes_array.dtype.kind not in "iu":
            raise DataError(f"{path.name}: 'num_classes' must be an integer scalar", str(path), fix)
        num_classes = int(num_classes_array)
    else:
        num_classes = int(max(y_train.max(initial=-1), y_test.max(initial=-1))) + 1
    dataset = Dataset(path.stem, x_train, y_train, x_test, y_test, num_classes)
    _check_labels(dataset, str(path))
    return dataset


def _npz_pair(x: np.ndarray, y: np.ndarray, keys: tuple[str, str], path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one part; each problem names the array that holds it."""
    x_where, y_where = (f"{path} (array '{key}')" for key in keys)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[0] == 0:
        raise DataError(
            f"images have shape {x.shape}, expected (N, C, H, W) or (N, H, W) with N > 0",
            x_where,
            "store images channels-first",
        )
    if y.dtype.kind not in "iu":
        raise DataError(
            f"labels are {y.dtype}, not integers",
            y_where,
            "store labels as class indices, e.g. y.astype(np.int64)",
        )
    if y.shape != (len(x),):
        raise DataError(
            f"labels have shape {y.shape} for {len(x)} images",
            y_where,
            "store labels as a 1-D integer array, one per image",
        )
    if x.dtype == np.uint8:
        return _to_float(x), y.astype(np.int64)
    if x.dtype.kind != "f":
        raise DataError(f"images have dtype {x.dtype}", x_where, "store images as uint8 or float")
    x = x.astype(np.float32)
    finite = np.isfinite(x)
    if not finite.all():
        nan, inf = int(np.isnan(x).sum()), int((~finite).sum() - np.isnan(x).sum())
        raise DataError(
            f"images hold {nan:,} NaN and {inf:,} Inf pixel values",
            x_where,
            "replace them (np.nan_to_num) or drop those images",
        )
    if x.min() < 0.0 or x.max() > 1.0:
        raise DataError(
            f"float images span [{x.min():.4g}, {x.max():.4g}], not [0, 1]",
            x_where,
            "store unnormalised images scaled to [0, 1] (or as uint8)",
        )
    return x, y.astype(np.int64)


def npz_declared_bytes(path: Path) -> int:
    """What loading `path` will allocate: each array's size as its .npy header declares it (uint8
    images become float32), read without decompressing any data."""
    total = 0
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            if not member.endswith(".npy"):
                continue
            with archive.open(member) as stream:
                version = np.lib.format.read_magic(stream)
                read_header = np.lib.format.read_array_header_1_0
                if version != (1, 0):
                    read_header = np.lib.format.read_array_header_2_0
                shape, _, dtype = read_header(stream, max_header_size=1 << 20)
            total += int(np.prod(shape, dtype=object)) * max(dtype.itemsize, 4)
    return total


def _require_memory_for(path: Path) -> None:
    """Refuse an .npz whose arrays could not be held twice (the file's and the float copy)."""
    try:
        declared = npz_declared_bytes(path)
    except (OSError, ValueError, EOFError, zlib.error, zipfile.BadZipFile):
        return  # not a readable archive: np.load below says so, naming the file
    budget = available_memory() // 2
    if declared > budget:
        raise DataError(
            f"the arrays declare {human_bytes(declared)}, more than the {human_bytes(budget)} this machine can hold",
            str(path),
            "use a subset of the data (np.savez with fewer images) or a machine with more memory",
        )


def check_data_spec(spec: str) -> None:
    """`spec` names a source that exists (the files themselves are read when training starts)."""
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    usage = "use fashion-mnist[:/dir], cifar10:/dir, npz:/file.npz or synthetic"
    if kind not in ("fashion-mnist", "cifar10", "npz", "synthetic") or (kind == "synthetic" and arg):
        raise DataError(f"unknown dataset spec '{spec}'", f"--data {spec}", usage)
    if kind in ("cifar10", "npz") and not arg:
        raise DataError(f"'{spec}' names no path", f"--data {spec}", f"write {kind}:/path")
    if kind == "npz":
        if not Path(arg).is_file():
            raise DataError(".npz file not found", arg, "pass npz:/path/to/file.npz")
        _require_memory_for(Path(arg))
    if kind == "fashion-mnist" and not Path(arg or FASHION_MNIST_DIR).is_dir():
        raise DataError(
            "Fashion-MNIST folder not found",
            arg or str(FASHION_MNIST_DIR),
            "install Debian's fashion-mnist data package, pass fashion-mnist:/path or use --data synthetic",
        )
    if kind == "cifar10" and not Path(arg).is_dir():
        raise DataError(
            "CIFAR-10 folder not found", arg, "pass cifar10:/path to the extracted cifar-10-batches-py folder"
        )


# --------------------------------------------------------------------------------------- synthetic


def make_synthetic(
    input_shape: tuple[int, int, int] = (3, 32, 32),
    num_classes: int = 10,
    n_train: int = 512,
    n_test: int = 128,
    seed: int = 0,
) -> Dataset:
    """Seeded random images for smoke runs: each class has its own fixed pattern, blended 50/50 with
    uniform noise, so a network can learn it in a few steps."""
    if num_classes < 1 or n_train < 1 or n_test < 0 or min(input_shape) < 1:
        raise DataError(
            f"synthetic data needs positive sizes, got shape {input_shape}, {num_classes} classes, "
            f"{n_train}/{n_test} images",
            "synthetic",
            "pass a (C, H, W) shape and counts >= 1",
        )
    rng = np.random.default_rng(seed)
    patterns = rng.random((num_classes, *input_shape), dtype=np.float32)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, num_classes, size=n, dtype=np.int64)
        noise = rng.random((n, *input_shape), dtype=np.float32)
        return (0.5 * patterns[y] + 0.5 * noise).astype(np.float32), y

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    return Dataset("synthetic", x_train, y_train, x_test, y_test, num_classes)


# -------------------------------------------------------------------------------------------- spec


def load_dataset(
    spec: str,
    *,
    input_shape: tuple[int, int, int] = (3, 32, 32),
    num_classes: int = 10,
    seed: int = 0,
) -> Dataset:
    """The dataset named by `spec` (see the module docstring).

    `input_shape`, `num_classes` and `seed` only shape `synthetic` data; real data keeps its own
    shape until `fit_to_model`.
    """
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "fashion-mnist":
        return load_fashion_mnist(arg or FASHION_MNIST_DIR)
    if kind in ("cifar10", "npz") and not arg:
        raise DataError(f"'{spec}' names no path", spec, f"write {kind}:/path")
    if kind == "cifar10":
        return load_cifar10(arg)
    if kind == "npz":
        return load_npz(arg)
    if kind == "synthetic" and not arg:
        return make_synthetic(input_shape, num_classes, seed=seed)
    raise DataError(
        f"unknown dataset spec '{spec}'",
        spec,
        "use fashion-mnist[:/dir], cifar10:/dir, npz:/file.npz or synthetic",
    )


# ----------------------------------------------------------------------------------------- fitting


def fit_to_model(dataset: Dataset, input_shape: tuple[int, int, int], num_classes: int) -> Dataset:
    """The dataset adapted to a model taking (C, H, W) = `input_shape` with `num_classes` outputs.

    Adaptations, the only ones made:
    - 1-channel images fed to a 3-channel model are repeated across the 3 channels (grey as RGB);
    - images smaller than the model's map by an even amount of at most 2 * MAX_PAD_PER_SIDE pixels
      per axis (28x28 into 32x32) are zero-padded equally on each side.
    Any other shape difference, or a label >= `num_classes`, raises DataError. A model with more
    outputs than the data has classes is fine. Returns `dataset` itself when nothing changes.
    """
    c, h, w = dataset.input_shape
    mc, mh, mw = input_shape
    where = f"dataset '{dataset.name}' {dataset.input_shape} into model input {tuple(input_shape)}"
    if c != mc and not (c == 1 and mc == 3):
        raise DataError(
            f"data has {c} channel(s), the model takes {mc}",
            where,
            "use data with the model's channel count (only 1 -> 3 is adapted), or export the model "
            f"with {c} input channel(s)",
        )
    pad_h, pad_w = mh - h, mw - w
    if not all(0 <= p <= 2 * MAX_PAD_PER_SIDE and p % 2 == 0 for p in (pad_h, pad_w)):
        raise DataError(
            f"data images are {h}x{w}, the model takes {mh}x{mw}",
            where,
            f"resize the data to {mh}x{mw} (only zero-padding by up to {MAX_PAD_PER_SIDE} pixels "
            "per side is done automatically), or export the model for the data's size",
        )
    top_label = int(max(dataset.y_train.max(initial=-1), dataset.y_test.max(initial=-1)))
    if top_label >= num_classes:
        raise DataError(
            f"data has label {top_label} ({dataset.num_classes} classes), the model has {num_classes} outputs",
            where,
            "use a model with at least as many outputs as the data has classes",
        )
    if (c, h, w) == (mc, mh, mw):
        return dataset

    def adapt(x: np.ndarray) -> np.ndarray:
        if c != mc:
            x = np.repeat(x, mc, axis=1)
        return _pad_to(x, mh, mw)

    return replace(
        dataset,
        x_train=adapt(dataset.x_train),
        x_test=adapt(dataset.x_test),
        num_classes=max(dataset.num_classes, num_classes),
    )


def split_train_val(dataset: Dataset, val_fraction: float = 0.1, seed: int = 0) -> TrainValSplit:
    """A seeded random split of the training part (90/10 by default, method.md §4).

    The same seed and data always give the same split; at least one image stays on each side.
    """
    n = len(dataset.y_train)
    if not 0.0 < val_fraction < 1.0 or n < 2:
        raise DataError(
            f"cannot split {n} training images with val_fraction={val_fraction}",
            f"dataset '{dataset.name}'",
            "use 0 < val_fraction < 1 and at least 2 training images",
        )
    n_val = min(max(1, int(round(n * val_fraction))), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    return TrainValSplit(dataset.x_train[train], dataset.y_train[train], dataset.x_train[val], dataset.y_train[val])


# ----------------------------------------------------------------------------------------- helpers


def _to_float(x: np.ndarray) -> np.ndarray:
    return (x.astype(np.float32) / np.float32(255.0)).astype(np.float32)


def _pad_to(x: np.ndarray, h: int, w: int) -> np.ndarray:
    pad_h, pad_w = h - x.shape[2], w - x.shape[3]
    if pad_h == 0 and pad_w == 0:
        return x
    widths = ((0, 0), (0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2))
    return np.pad(x, widths)


def _check_labels(dataset: Dataset, where: str) -> None:
    for part, y in (("train", dataset.y_train), ("test", dataset.y_test)):
        if len(y) and (y.min() < 0 or y.max() >= dataset.num_classes):
            raise DataError(
                f"{part} labels span [{y.min()}, {y.max()}], outside [0, {dataset.num_classes})",
                where,
                "labels must be class indices 0..num_classes-1",
            )
