"""Data: the paper's binary clustering problem, user arrays (.npy/.csv), shipped real data, and
manifolds of known intrinsic dimension.

Everything is generated or read locally; nothing is downloaded at run time. Rows stay flat
float32 (N, D) everywhere; a dataset also records the shape of one sample, so that a model that
wants images (a conv autoencoder) can view a row as one.
"""

from __future__ import annotations

import math
import os
import stat
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from coevo.config import DataConfig
from coevo.errors import DataError


@dataclass(frozen=True)
class Dataset:
    """Three splits of flat rows in [0, 1] (float32), with cluster labels where known, and the
    shape of one sample (``None``: flat, ``(n_dims,)``), so that a conv model can view a row as an
    image without the rows themselves ever leaving their (N, D) layout."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    train_labels: np.ndarray | None = None
    validation_labels: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    centroids: np.ndarray | None = None
    sample_shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        """Refuse a sample shape that does not hold exactly one row: a view of the rows with it
        would fail (or silently mix samples) much later, inside a model."""
        if self.sample_shape is None:
            return
        shape = tuple(int(n) for n in self.sample_shape)
        object.__setattr__(self, "sample_shape", shape)  # a list from a config becomes a tuple
        if not shape or any(n < 1 for n in shape) or math.prod(shape) != self.n_dims:
            raise ValueError(f"Dataset.sample_shape {shape} holds {math.prod(shape)} values but each row has "
                             f"{self.n_dims}; give a shape of sizes >= 1 whose product is {self.n_dims}, or None")

    @property
    def n_dims(self) -> int:
        return int(self.train.shape[1])

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one sample; ``prod(shape) == n_dims`` always."""
        return self.sample_shape if self.sample_shape is not None else (self.n_dims,)


def binary_clustering(
    n_clusters: int, n_dims: int, rows_per_cluster: int, noise: float, rng: np.random.Generator
) -> Dataset:
    """The paper's binary clustering problem: K centroids in {0,1}^D with P(bit=1)=0.75; rows
    flip each bit with probability p.

    The three splits share the centroids and draw their own noise.
    """
    centroids = (rng.random((n_clusters, n_dims)) < 0.75).astype(np.float32)
    labels = np.repeat(np.arange(n_clusters), rows_per_cluster)

    def split() -> tuple[np.ndarray, np.ndarray]:
        order = rng.permutation(labels.size)
        rows = centroids[labels[order]]
        flips = rng.random(rows.shape) < noise
        return np.abs(rows - flips).astype(np.float32), labels[order]

    (train, ytr), (val, yva), (test, yte) = split(), split(), split()
    return Dataset(train, val, test, ytr, yva, yte, centroids)


def manifold(intrinsic_dim: int, n_dims: int, n_rows: int, rng: np.random.Generator) -> Dataset:
    """A ``d``-dimensional nonlinear manifold in ``D`` dimensions: t ~ U[0, 1]^d mapped by D
    random Fourier features, x_k = sin(w_k . t + phi_k) with w_k ~ N(0, (pi / sqrt(d))^2 I_d),
    so each coordinate bends through about half a period over the cube; then every coordinate
    is min-max scaled to [0, 1] by the training split's range (validation and test rows clipped
    to [0, 1]), so that nothing about the held-out rows leaks into the data a model trains on.
    For D >= 2d + 1 such a random smooth map is generically an embedding, and its Jacobian has
    rank d almost everywhere, so the data's intrinsic dimension is d. No noise. Train,
    validation and test draw ``n_rows`` points each."""
    omega = rng.normal(0.0, np.pi / np.sqrt(intrinsic_dim), size=(intrinsic_dim, n_dims))
    phase = rng.uniform(0.0, 2 * np.pi, size=n_dims)
    t = rng.random((3 * n_rows, intrinsic_dim))
    train, val, test = np.split(np.sin(t @ omega + phase), 3)
    low, high = train.min(axis=0), train.max(axis=0)
    span = np.where(high > low, high - low, 1.0)

    def scale(rows: np.ndarray) -> np.ndarray:
        return ((rows - low) / span).clip(0.0, 1.0).astype(np.float32)

    return Dataset(scale(train), scale(val), scale(test))


NOT_REGULAR = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
               stat.S_IFSOCK: "a socket"}


def check_file(path: Path) -> None:
    """Refuse, before anything opens it, a data file that is missing or not a regular file (after
    symlinks): a FIFO with no writer would block the open, and /dev/zero is one endless line."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError(f"data file {path} does not exist; set data.source to an existing .npy or .csv file") from None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):  # a folder is the loader's to accept or refuse
        return
    what = NOT_REGULAR.get(stat.S_IFMT(mode), "not a regular file")
    link = f" (a link to {os.path.realpath(path)})" if os.path.islink(path) else ""
    raise DataError(f"data file {path}{link} is {what}, not a regular file; set data.source to a .npy or .csv "
                    f"file (copy the rows into one)")


def _load_csv(path: Path, skiprows: int = 0) -> np.ndarray:
    with warnings.catch_warnings():  # an empty file: numpy's warning, then our one line
        warnings.filterwarnings("ignore", message="loadtxt: input contained no data")
        return np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2, skiprows=skiprows)


def _read_rows(path: Path) -> tuple[np.ndarray, tuple[int, ...]]:
    """The rows of a user file, flattened row-major to (N, D) float32, and the shape of one sample:
    a .npy of shape (N, ...) keeps its trailing shape (an image set stays images), a .csv is flat."""
    check_file(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            rows = np.load(path, allow_pickle=False)
        elif suffix == ".csv":
            rows = _load_csv(path)
        else:
            raise DataError(f"data file {path} must end in .npy or .csv")
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        if suffix == ".csv" and isinstance(exc, ValueError) and _numbers_after_first_line(path):
            first = path.read_text(errors="replace").splitlines()[0][:60]
            raise DataError(f"data file {path} cannot be read as csv: its first line {first!r} is a header row, and "
                            f"coevo reads numbers only; remove the header row (tail -n +2 {path.name} > rows.csv)") from None
        raise DataError(f"data file {path} cannot be read as {suffix[1:]}: {str(exc).splitlines()[0]}") from None
    if rows.ndim < 2 or rows.shape[0] < 3 or math.prod(rows.shape[1:]) < 1 or (suffix != ".npy" and rows.ndim != 2):
        samples = ", or an array (N, ...) of N >= 3 samples" if suffix == ".npy" else ""
        raise DataError(f"data file {path} must hold a 2-D array of at least 3 rows{samples}, got shape {rows.shape}")
    sample_shape = tuple(int(n) for n in rows.shape[1:])
    rows = rows.reshape(rows.shape[0], -1)  # row-major (C order): every check below names a row
    if rows.dtype == np.bool_:  # True and False are the values 1 and 0
        rows = rows.astype(np.float32)
    if not np.issubdtype(rows.dtype, np.number) or np.issubdtype(rows.dtype, np.complexfloating):
        raise DataError(f"data file {path} must hold real numbers, got dtype {rows.dtype}")
    if not np.all(np.isfinite(rows)):
        bad = int(np.argwhere(~np.isfinite(rows))[0][0])
        raise DataError(f"data file {path} holds NaN or infinite values (first in row {bad}); clean them first")
    if rows.min() < 0 or rows.max() > 1:
        raise DataError(
            f"data file {path} holds values outside [0, 1] (min {rows.min():g}, max {rows.max():g}); "
            "scale the rows to [0, 1] first"
        )
    return rows.astype(np.float32), sample_shape


def _numbers_after_first_line(path: Path) -> bool:
    """Whether a CSV that failed to parse parses without its first line: then that line is a header."""
    try:
        return _load_csv(path, skiprows=1).size > 0
    except (OSError, ValueError):
        return False


def _split(rows: np.ndarray, labels: np.ndarray | None, cfg: DataConfig, rng: np.random.Generator,
           sample_shape: tuple[int, ...] | None = None) -> Dataset:
    order = rng.permutation(rows.shape[0])
    n_val = max(1, int(round(cfg.validation_fraction * rows.shape[0])))
    n_test = max(1, int(round(cfg.test_fraction * rows.shape[0])))
    if n_val + n_test >= rows.shape[0]:
        raise DataError(f"{rows.shape[0]} rows are too few to split into train/validation/test")
    val, test, train = np.split(order, [n_val, n_val + n_test])
    lab = (lambda idx: labels[idx]) if labels is not None else (lambda idx: None)
    return Dataset(rows[train], rows[val], rows[test], lab(train), lab(val), lab(test), sample_shape=sample_shape)


DIGITS_SHAPE = (1, 8, 8)
"""One channel of 8x8 pixels; the rows are those pixels row-major, as scikit-learn flattens them."""


def _digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("data.source = 'digits' needs scikit-learn: pip install scikit-learn") from None
    bunch = load_digits()
    return (bunch.data / 16.0).astype(np.float32), bunch.target


def load(cfg: DataConfig, seed: int) -> Dataset:
    """Build the dataset named by ``cfg.source``; deterministic in ``seed``."""
    rng = np.random.default_rng([seed, 0xDA7A])
    if cfg.source == "binary_clustering":
        ds = binary_clustering(cfg.n_clusters, cfg.n_dims, cfg.rows_per_cluster, cfg.noise, rng)
    elif cfg.source == "manifold":
        ds = manifold(cfg.intrinsic_dim, cfg.n_dims, cfg.n_rows, rng)
    elif cfg.source == "digits":
        rows, labels = _digits()
        ds = _split(rows, labels, cfg, rng, DIGITS_SHAPE)
    else:
        rows, sample_shape = _read_rows(Path(cfg.source))
        ds = _split(rows, None, cfg, rng, sample_shape)
    return _with_sample_shape(ds, cfg)


def _with_sample_shape(ds: Dataset, cfg: DataConfig) -> Dataset:
    """Apply ``data.sample_shape`` after the split, so that the split never depends on it."""
    if not cfg.sample_shape:
        return ds
    shape = tuple(cfg.sample_shape)
    if math.prod(shape) != ds.n_dims:
        raise DataError(f"data.sample_shape = {list(shape)} holds {math.prod(shape)} values but each row of "
                        f"{cfg.source} has {ds.n_dims}; set data.sample_shape to a shape of {ds.n_dims} values "
                        f"or leave it empty")
    return replace(ds, sample_shape=shape)
