"""Data: the paper's binary clustering problem, user arrays (.npy/.csv/.npz/IDX), shipped real data,
and manifolds of known intrinsic dimension.

Everything is generated or read locally; nothing is downloaded at run time. Rows stay flat
float32 (N, D) everywhere; a dataset also records the shape of one sample, so that a model that
wants images (a conv autoencoder) can view a row as one.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import stat
import struct
import warnings
import zipfile
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


FILE_FORMATS = ".npy, .csv, .npz or IDX"
"""The kinds of data file ``data.source`` may name, as the error messages list them."""

NOT_REGULAR = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
               stat.S_IFSOCK: "a socket"}


def check_file(path: Path) -> None:
    """Refuse, before anything opens it, a data file that is missing or not a regular file (after
    symlinks): a FIFO with no writer would block the open, and /dev/zero is one endless line."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError(f"data file {path} does not exist; set data.source to an existing {FILE_FORMATS} file") from None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):  # a folder is the loader's to accept or refuse
        return
    what = NOT_REGULAR.get(stat.S_IFMT(mode), "not a regular file")
    link = f" (a link to {os.path.realpath(path)})" if os.path.islink(path) else ""
    raise DataError(f"data file {path}{link} is {what}, not a regular file; set data.source to a {FILE_FORMATS} "
                    f"file (copy the rows into one)")


def _load_csv(path: Path, skiprows: int = 0) -> np.ndarray:
    with warnings.catch_warnings():  # an empty file: numpy's warning, then our one line
        warnings.filterwarnings("ignore", message="loadtxt: input contained no data")
        return np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2, skiprows=skiprows)


def file_format(path: Path) -> str | None:
    """'npy', 'csv', 'npz' or 'idx' (plain or gzipped) by the file's name; None for any other name.
    An IDX file is named like MNIST's (``train-images-idx3-ubyte``) or ends in ``.idx``, either
    optionally followed by ``.gz``."""
    name = path.name.lower()
    base = name[:-3] if name.endswith(".gz") else name
    if re.search(r"(^|[.-])idx\d+-ubyte$", base) or base.endswith((".idx", ".ubyte", "-ubyte")):
        return "idx"
    if base != name:
        return None  # only IDX files are read gzipped
    return {".npy": "npy", ".csv": "csv", ".npz": "npz"}.get(path.suffix.lower())


IDX_IMAGES = 0x00000803
"""The magic of an IDX file of uint8 images (N, H, W), big-endian, as MNIST ships them."""
IDX_LABELS = 0x00000801
"""The magic of an IDX file of uint8 labels (N,)."""


def _open_idx(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def idx_header(path: Path) -> tuple[int, int, int] | None:
    """(N, H, W) from an IDX images file's first 16 bytes; None where they are not such a header."""
    with _open_idx(path) as fh:
        head = fh.read(16)
    if len(head) < 16 or struct.unpack(">I", head[:4])[0] != IDX_IMAGES:
        return None
    return struct.unpack(">III", head[4:16])


def _read_idx(path: Path) -> np.ndarray:
    """The uint8 images (N, H, W) of an IDX file (plain or gzipped), parsed with numpy."""
    expected = "an IDX images file (magic 0x00000803: uint8 images, N x H x W, as MNIST's train-images-idx3-ubyte)"
    try:
        with _open_idx(path) as fh:
            data = fh.read()
    except (OSError, EOFError, zipfile.BadZipFile) as exc:  # a damaged or cut-off .gz
        raise DataError(f"data file {path} cannot be read as gzipped IDX: {str(exc).splitlines()[0] or type(exc).__name__}; "
                        f"expected {expected} compressed with gzip") from None
    if len(data) < 4:
        raise DataError(f"data file {path} is truncated: {len(data)} bytes, too few for the 4-byte magic of {expected}")
    magic = struct.unpack(">I", data[:4])[0]
    if magic == IDX_LABELS:
        raise DataError(f"data file {path} is an IDX labels file (magic 0x00000801), not images; set data.source to "
                        f"the images file next to it (its name has 'images' and 'idx3')")
    if magic != IDX_IMAGES:
        raise DataError(f"data file {path} has magic 0x{magic:08x}, not {expected}")
    if len(data) < 16:
        raise DataError(f"data file {path} is truncated: {len(data)} bytes, too few for the 12-byte dimensions "
                        f"(N, H, W) after the magic of {expected}")
    n, h, w = struct.unpack(">III", data[4:16])
    size = n * h * w
    if len(data) - 16 != size:
        what = "is truncated" if len(data) - 16 < size else "has bytes beyond its images"
        raise DataError(f"data file {path} {what}: its header promises {n} x {h} x {w} = {size} bytes of pixels "
                        f"after the 16-byte header, and it holds {len(data) - 16}; expected {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, h, w)


MNIST_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
               "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
"""The files of a folder in MNIST's raw layout (Fashion-MNIST's too), each plain or .gz, with '-idx'
or '.idx' (torchvision's and the original site's names)."""


def mnist_files(folder: Path) -> dict[str, Path | None]:
    """The MNIST-layout files a folder holds, by role (None where one is missing)."""
    found: dict[str, Path | None] = {}
    for role, base in MNIST_FILES.items():
        names = [name + suffix for name in (base, base.replace("-idx", ".idx")) for suffix in ("", ".gz")]
        found[role] = next((folder / n for n in names if (folder / n).is_file()), None)
    return found


def _read_idx_labels(path: Path, count: int) -> np.ndarray:
    """The uint8 labels (N,) of an IDX labels file, checked to be ``count`` of them."""
    with _open_idx(path) as fh:
        data = fh.read()
    if len(data) < 8 or struct.unpack(">I", data[:4])[0] != IDX_LABELS:
        raise DataError(f"data file {path} is not an IDX labels file (magic 0x00000801, then N, then N bytes)")
    n = struct.unpack(">I", data[4:8])[0]
    if n != count or len(data) - 8 != n:
        raise DataError(f"data file {path} holds {len(data) - 8} labels (header: {n}) for {count} images; "
                        f"put the labels file of the same split beside its images, or remove it")
    return np.frombuffer(data, dtype=np.uint8, offset=8).astype(np.int64)


def _mnist_folder(folder: Path, cfg: DataConfig, rng: np.random.Generator) -> Dataset:
    """A folder in MNIST's raw IDX layout: the official test split is the test split, validation is
    ``data.validation_fraction`` of the training images (a seeded draw), labels kept where present."""
    files = mnist_files(folder)
    if files["train_images"] is None or files["test_images"] is None:
        held = sorted(p.name for p in folder.iterdir())[:6]
        raise DataError(f"data folder {folder} must hold MNIST's IDX files train-images-idx3-ubyte and "
                        f"t10k-images-idx3-ubyte (plain or .gz, labels beside them optional); it holds {held or 'nothing'}")
    train, test = _read_idx(files["train_images"]), _read_idx(files["test_images"])
    if train.shape[1:] != test.shape[1:]:
        raise DataError(f"data folder {folder}: training images are {train.shape[1]}x{train.shape[2]} and test images "
                        f"{test.shape[1]}x{test.shape[2]}; both splits must have one size")
    if train.shape[0] < 2 or test.shape[0] < 1:
        raise DataError(f"data folder {folder} holds {train.shape[0]} training and {test.shape[0]} test images; it "
                        f"needs at least 2 training images (one for validation) and 1 test image")
    labels = [None, None]
    if files["train_labels"] is not None and files["test_labels"] is not None:
        labels = [_read_idx_labels(files["train_labels"], train.shape[0]),
                  _read_idx_labels(files["test_labels"], test.shape[0])]
    scale = (lambda a: a.reshape(a.shape[0], -1).astype(np.float32) / np.float32(255))  # noqa: E731
    order = rng.permutation(train.shape[0])
    n_val = min(max(1, int(round(cfg.validation_fraction * train.shape[0]))), train.shape[0] - 1)
    val, keep = order[:n_val], order[n_val:]
    rows = scale(train)
    pick = (lambda idx: None if labels[0] is None else labels[0][idx])  # noqa: E731
    return Dataset(rows[keep], rows[val], scale(test), pick(keep), pick(val), labels[1],
                   sample_shape=(1, *train.shape[1:]))


NPZ_ROWS = ("x", "images")
NPZ_LABELS = ("y", "labels")


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The array of a .npz archive (key 'x', else 'images', else its only array) and its labels
    (key 'y', else 'labels'), if any."""
    with np.load(path, allow_pickle=False) as archive:
        keys = list(archive.files)
        key = next((k for k in NPZ_ROWS if k in keys), keys[0] if len(keys) == 1 else None)
        if key is None:
            found = ", ".join(repr(k) for k in keys) if keys else "no arrays"
            raise DataError(f"data file {path} holds {found}, and coevo reads the rows from key 'x' (or 'images', or "
                            f"the archive's only array) and labels from 'y' (or 'labels'); re-save it with "
                            f"numpy.savez({path.name!r}, x=rows, y=labels)")
        rows = archive[key]
        label_key = next((k for k in NPZ_LABELS if k in keys and k != key), None)
        labels = archive[label_key] if label_key is not None else None
    if labels is not None:
        n = rows.shape[0] if rows.ndim else 0
        integral = (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.bool_) or
                    (np.issubdtype(labels.dtype, np.floating) and labels.size and np.all(np.isfinite(labels))
                     and np.all(labels == np.round(labels))))
        if labels.shape != (n,) or not integral:
            raise DataError(f"data file {path}: its labels {label_key!r} must be {n} integers, one per row of "
                            f"{key!r}, got shape {labels.shape} of dtype {labels.dtype}; fix or drop {label_key!r}")
        labels = labels.astype(np.int64)
    return rows, labels


def _read_rows(path: Path) -> tuple[np.ndarray, tuple[int, ...]]:
    """The rows of a user file, flattened row-major to (N, D) float32, and the shape of one sample
    (see ``_read_file``, which also returns a .npz archive's labels)."""
    rows, sample_shape, _ = _read_file(path)
    return rows, sample_shape


def _read_file(path: Path) -> tuple[np.ndarray, tuple[int, ...], np.ndarray | None]:
    """The rows of a user file, flattened row-major to (N, D) float32, the shape of one sample and
    the labels where the file holds them: a .npy or .npz of shape (N, ...) keeps its trailing
    shape (an image set stays images), IDX images (N, H, W) are one channel (1, H, W), a .csv is
    flat. uint8 values above 1 (pixels) are scaled to [0, 1] by /255; 0/1 bytes and any other dtype must lie in [0, 1] already."""
    check_file(path)
    kind = file_format(path)
    suffix = path.suffix.lower()
    labels = None
    try:
        if kind == "npy":
            rows = np.load(path, allow_pickle=False)
        elif kind == "csv":
            rows = _load_csv(path)
        elif kind == "npz":
            rows, labels = _read_npz(path)
        elif kind == "idx":
            rows = _read_idx(path)
            rows = rows.reshape(rows.shape[0], 1, *rows.shape[1:])
        else:
            raise DataError(f"data file {path} must end in .npy, .csv or .npz, or be an IDX file (a name like "
                            f"train-images-idx3-ubyte, or ending in .idx; either optionally .gz)")
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        if kind == "csv" and isinstance(exc, ValueError) and _numbers_after_first_line(path):
            first = path.read_text(errors="replace").splitlines()[0][:60]
            raise DataError(f"data file {path} cannot be read as csv: its first line {first!r} is a header row, and "
                            f"coevo reads numbers only; remove the header row (tail -n +2 {path.name} > rows.csv)") from None
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"data file {path} cannot be read as {kind or suffix[1:]}: {message}") from None
    shaped = kind in ("npy", "npz", "idx")
    if rows.ndim < 2 or rows.shape[0] < 3 or math.prod(rows.shape[1:]) < 1 or (not shaped and rows.ndim != 2):
        samples = ", or an array (N, ...) of N >= 3 samples" if shaped else ""
        raise DataError(f"data file {path} must hold a 2-D array of at least 3 rows{samples}, got shape {rows.shape}")
    sample_shape = tuple(int(n) for n in rows.shape[1:])
    rows = rows.reshape(rows.shape[0], -1)  # row-major (C order): every check below names a row
    if rows.dtype == np.bool_:  # True and False are the values 1 and 0
        rows = rows.astype(np.float32)
    elif rows.dtype == np.uint8 and rows.max(initial=0) > 1:  # bytes (pixels): 0..255 scaled to [0, 1]
        rows = rows.astype(np.float32) / np.float32(255)  # (0/1 bytes stay 0 and 1, as they always read)
    if not np.issubdtype(rows.dtype, np.number) or np.issubdtype(rows.dtype, np.complexfloating):
        raise DataError(f"data file {path} must hold real numbers, got dtype {rows.dtype}")
    if not np.all(np.isfinite(rows)):
        bad = int(np.argwhere(~np.isfinite(rows))[0][0])
        raise DataError(f"data file {path} holds NaN or infinite values (first in row {bad}); clean them first")
    if rows.min() < 0 or rows.max() > 1:
        raise DataError(
            f"data file {path} holds values outside [0, 1] (min {rows.min():g}, max {rows.max():g}); "
            "scale the rows to [0, 1] first (uint8 values alone are scaled by /255)"
        )
    return rows.astype(np.float32), sample_shape, labels


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
    elif Path(cfg.source).is_dir():  # a folder in MNIST's raw layout: its own train / test split
        check_file(Path(cfg.source))
        ds = _mnist_folder(Path(cfg.source), cfg, rng)
    else:
        rows, sample_shape, labels = _read_file(Path(cfg.source))
        ds = _split(rows, labels, cfg, rng, sample_shape)
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
