"""A folder in MNIST's raw IDX layout as data.source: its own test split, labels beside the images."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys

import numpy as np
import pytest

from coevo import config as C
from coevo.data import load
from coevo.errors import DataError
from coevo.rundir.directory import source_digest


def idx_images(images: np.ndarray) -> bytes:
    return struct.pack(">IIII", 0x803, *images.shape) + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 0x801, labels.size) + labels.astype(np.uint8).tobytes()


def mnist_folder(path, n_train=60, n_test=20, size=28, gz_labels=True):
    rng = np.random.default_rng(0)
    path.mkdir()
    train = rng.integers(0, 256, (n_train, size, size))
    test = rng.integers(0, 256, (n_test, size, size))
    (path / "train-images-idx3-ubyte").write_bytes(idx_images(train))
    (path / "t10k-images-idx3-ubyte").write_bytes(idx_images(test))
    write = (lambda p, b: p.with_name(p.name + ".gz").write_bytes(gzip.compress(b))) if gz_labels else \
        (lambda p, b: p.write_bytes(b))
    write(path / "train-labels-idx1-ubyte", idx_labels(np.arange(n_train) % 10))
    write(path / "t10k-labels-idx1-ubyte", idx_labels(np.arange(n_test) % 10))
    return train, test


def test_the_official_test_split_is_the_test_split(tmp_path):
    train, test = mnist_folder(tmp_path / "mnist")
    ds = load(C.from_dict({"data": {"source": str(tmp_path / "mnist")}}).data, seed=3)
    assert ds.shape == (1, 28, 28)
    assert ds.test.shape == (20, 784) and ds.train.shape[0] + ds.validation.shape[0] == 60
    np.testing.assert_array_equal(ds.test, test.reshape(20, -1).astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.test_labels, np.arange(20) % 10)
    # every training row keeps its own label through the seeded validation draw
    rows = np.concatenate([ds.train, ds.validation])
    labels = np.concatenate([ds.train_labels, ds.validation_labels])
    pixels = np.rint(rows * 255).astype(int)
    index = [int(np.flatnonzero((train.reshape(60, -1) == r).all(axis=1))[0]) for r in pixels]
    np.testing.assert_array_equal(labels, np.array(index) % 10)
    again = load(C.from_dict({"data": {"source": str(tmp_path / "mnist")}}).data, seed=3)
    assert again.train.tobytes() == ds.train.tobytes()  # reproducible


def test_a_folder_without_the_images_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"must hold MNIST's IDX files .* it holds \['notes.txt'\]"):
        load(C.from_dict({"data": {"source": str(tmp_path / "empty")}}).data, seed=1)


def test_labels_of_another_split_are_refused(tmp_path):
    mnist_folder(tmp_path / "m", gz_labels=False)
    (tmp_path / "m" / "t10k-labels-idx1-ubyte").write_bytes(idx_labels(np.arange(7)))
    with pytest.raises(DataError, match="holds 7 labels .* for 20 images"):
        load(C.from_dict({"data": {"source": str(tmp_path / "m")}}).data, seed=1)


def test_the_folder_fingerprint_follows_its_files(tmp_path):
    mnist_folder(tmp_path / "m")
    size, sha = source_digest(tmp_path / "m")
    assert size > 60 * 784
    (tmp_path / "m" / "notes.txt").write_text("not data")  # files coevo does not read do not count
    assert source_digest(tmp_path / "m") == (size, sha)
    images = tmp_path / "m" / "t10k-images-idx3-ubyte"
    data = bytearray(images.read_bytes())
    data[-1] ^= 1
    images.write_bytes(bytes(data))
    assert source_digest(tmp_path / "m")[1] != sha


def test_a_conv_run_on_an_mnist_folder(tmp_path):
    mnist_folder(tmp_path / "mnist")
    proc = subprocess.run([sys.executable, "-m", "coevo", "run", "--quiet", "--set", f"data.source={tmp_path / 'mnist'}",
                           "--set", "model.family=conv", "--set", "run.generations=1", "--set", "grid.cells=3",
                           "--set", "model.params.channels=[4]", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "plots" / "test_reconstructions.png").exists()
