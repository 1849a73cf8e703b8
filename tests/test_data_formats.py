"""data.source as a .npz archive or an IDX file (MNIST's format, plain or gzipped), and uint8
arrays scaled to [0, 1]; every file is written here, nothing is downloaded."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from coevo import config, data
from coevo.errors import DataError
from coevo.rundir import directory


def images(n: int = 30, h: int = 4, w: int = 5) -> np.ndarray:
    """n uint8 images, image i filled with the value i (so a row tells which image it is)."""
    return np.repeat(np.arange(n, dtype=np.uint8), h * w).reshape(n, h, w)


def idx_bytes(pixels: np.ndarray, magic: int = 0x803) -> bytes:
    return struct.pack(">I", magic) + struct.pack(">III", *pixels.shape) + pixels.astype(np.uint8).tobytes()


def load(path: Path, seed: int = 0, **kw) -> data.Dataset:
    return data.load(config.DataConfig(source=str(path), **kw), seed)


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_npz_rows_scaled_and_labels_split_with_the_rows(tmp_path):
    x = images(30)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(30) * 10)
    ds = load(tmp_path / "d.npz", seed=3)
    assert ds.sample_shape == (4, 5)  # a .npz keeps the array's trailing shape, as a .npy does
    for rows, labels in ((ds.train, ds.train_labels), (ds.validation, ds.validation_labels),
                         (ds.test, ds.test_labels)):
        assert rows.dtype == np.float32 and rows.min() >= 0 and rows.max() <= 1
        index = np.rint(rows[:, 0] * 255).astype(int)
        assert np.all(rows == (index / np.float32(255)).astype(np.float32)[:, None])  # every pixel of a row alike
        np.testing.assert_array_equal(labels, index * 10)
    assert sorted(np.concatenate([ds.train_labels, ds.validation_labels, ds.test_labels])) == list(range(0, 300, 10))


def test_npz_keys_images_labels_and_the_only_array(tmp_path):
    x = images(20)[:, None]  # (N, 1, H, W)
    np.savez(tmp_path / "a.npz", images=x, labels=np.arange(20))
    ds = load(tmp_path / "a.npz")
    assert ds.sample_shape == (1, 4, 5) and ds.train_labels is not None
    np.testing.assert_array_equal(np.rint(ds.train[:, 0] * 255).astype(int), ds.train_labels)
    np.savez(tmp_path / "b.npz", whatever=x)
    only = load(tmp_path / "b.npz")
    assert only.train_labels is None
    np.testing.assert_array_equal(only.train, ds.train)  # the same rows, the same split


def test_npz_split_identical_to_npy(tmp_path):
    rows = np.random.default_rng(0).random((25, 6)).astype(np.float32)
    np.save(tmp_path / "r.npy", rows)
    np.savez(tmp_path / "r.npz", x=rows)
    a, b = load(tmp_path / "r.npy", seed=7), load(tmp_path / "r.npz", seed=7)
    for split in ("train", "validation", "test"):
        assert getattr(a, split).tobytes() == getattr(b, split).tobytes()


def test_npz_with_unknown_keys_refused_naming_them(tmp_path):
    np.savez(tmp_path / "u.npz", pixels=images(10), targets=np.arange(10))
    with pytest.raises(DataError) as exc:
        load(tmp_path / "u.npz")
    message = one_line(exc)
    assert "'pixels'" in message and "'targets'" in message and "'x'" in message and "numpy.savez" in message


def test_npz_with_bad_labels_refused(tmp_path):
    np.savez(tmp_path / "l.npz", x=images(10), y=np.arange(9))
    with pytest.raises(DataError, match="labels 'y' must be 10 integers") as exc:
        load(tmp_path / "l.npz")
    one_line(exc)


def test_npz_not_a_zip_refused(tmp_path):
    (tmp_path / "z.npz").write_bytes(b"not a zip archive at all")
    with pytest.raises(DataError, match="cannot be read as npz") as exc:
        load(tmp_path / "z.npz")
    one_line(exc)


@pytest.mark.parametrize("name", ["train-images-idx3-ubyte", "digits.idx", "t10k.idx3-ubyte",
                                  "train-images-idx3-ubyte.gz", "digits.idx.gz"])
def test_idx_plain_and_gzipped(tmp_path, name):
    raw = idx_bytes(images(30, 6, 7))
    path = tmp_path / name
    path.write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    ds = load(path, seed=1)
    assert ds.sample_shape == (1, 6, 7) and ds.n_dims == 42 and ds.train_labels is None
    assert ds.train.shape[0] + ds.validation.shape[0] + ds.test.shape[0] == 30
    assert ds.train.dtype == np.float32 and ds.train.max() <= 1 and ds.train.min() >= 0
    assert sorted(np.rint(np.concatenate([ds.train, ds.validation, ds.test])[:, 0] * 255)) == list(range(30))
    assert directory.is_file_source(str(path))
    assert directory.data_shape(config.Config().replace(data__source=str(path))) == (30, 42)


def test_idx_same_split_as_npy_of_the_same_pixels(tmp_path):
    pix = images(30, 3, 3)
    (tmp_path / "p.idx").write_bytes(idx_bytes(pix))
    np.save(tmp_path / "p.npy", pix[:, None])
    a, b = load(tmp_path / "p.idx", seed=5), load(tmp_path / "p.npy", seed=5)
    assert a.sample_shape == b.sample_shape == (1, 3, 3)
    assert a.train.tobytes() == b.train.tobytes() and a.test.tobytes() == b.test.tobytes()


def test_idx_bad_magic(tmp_path):
    path = tmp_path / "bad.idx"
    path.write_bytes(idx_bytes(images(5), magic=0x0000_0902))
    with pytest.raises(DataError) as exc:
        load(path)
    message = one_line(exc)
    assert str(path) in message and "0x00000902" in message and "0x00000803" in message


def test_idx_labels_file_refused(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(struct.pack(">II", 0x801, 5) + bytes(range(5)))
    with pytest.raises(DataError, match="labels file .*images file") as exc:
        load(path)
    one_line(exc)


@pytest.mark.parametrize("cut", [2, 10, 16 + 30 * 20 - 1])
def test_idx_truncated(tmp_path, cut):
    path = tmp_path / "cut.idx"
    path.write_bytes(idx_bytes(images(30))[:cut])
    with pytest.raises(DataError, match="is truncated") as exc:
        load(path)
    message = one_line(exc)
    assert str(path) in message and "0x00000803" in message


def test_idx_gzip_truncated(tmp_path):
    path = tmp_path / "cut.idx.gz"
    path.write_bytes(gzip.compress(idx_bytes(images(30)))[:40])
    with pytest.raises(DataError, match="gzipped IDX") as exc:
        load(path)
    assert str(path) in one_line(exc)


def test_gz_of_another_format_refused(tmp_path):
    path = tmp_path / "rows.npy.gz"
    path.write_bytes(gzip.compress(b"x"))
    with pytest.raises(DataError, match="must end in") as exc:
        load(path)
    one_line(exc)


def test_uint8_npy_scaled(tmp_path):
    pix = np.array([[0, 51, 255], [255, 0, 102], [1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.uint8)
    np.save(tmp_path / "u.npy", pix)
    ds = load(tmp_path / "u.npy")
    got = np.concatenate([ds.train, ds.validation, ds.test])
    want = (pix.astype(np.float32) / np.float32(255))
    assert sorted(map(tuple, got)) == sorted(map(tuple, want))


def test_other_dtypes_keep_the_range_rule(tmp_path):
    np.save(tmp_path / "i.npy", np.arange(15, dtype=np.int16).reshape(5, 3))
    with pytest.raises(DataError, match=r"outside \[0, 1\]"):
        load(tmp_path / "i.npy")
    np.savez(tmp_path / "f.npz", x=np.full((5, 3), 2.0))
    with pytest.raises(DataError, match=r"outside \[0, 1\]"):
        load(tmp_path / "f.npz")


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no FIFOs here")
def test_check_file_refuses_a_fifo_named_like_idx(tmp_path):
    import os

    path = tmp_path / "train-images-idx3-ubyte"
    os.mkfifo(path)
    with pytest.raises(DataError, match="FIFO"):
        load(path)
    assert directory.data_shape(config.Config().replace(data__source=str(path))) is None


def test_relative_idx_path_made_absolute(tmp_path, monkeypatch):
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images(10))))
    monkeypatch.chdir(tmp_path)
    cfg = directory.with_absolute_source(config.Config().replace(data__source="train-images-idx3-ubyte.gz"))
    assert Path(cfg.data.source) == tmp_path / "train-images-idx3-ubyte.gz"
    fp = directory.data_fingerprint(cfg, load(Path(cfg.data.source)))
    assert fp["sha256"] == directory.file_sha256(tmp_path / "train-images-idx3-ubyte.gz")


def test_cli_run_on_an_idx_file(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(rng.integers(0, 256, (40, 8, 8))))
    proc = subprocess.run(
        [sys.executable, "-m", "coevo", "run", "--quiet", "--out", "r",
         "--set", "data.source=train-images-idx3-ubyte", "--set", "model.family=conv",
         "--set", "run.generations=1", "--set", "grid.cells=3"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "r" / "config.toml").exists()


def test_uint8_zeros_and_ones_stay_zeros_and_ones(tmp_path):
    """A 0/1 byte mask read as 0 and 1 before pixels were scaled: it still does."""
    bits = (np.arange(40).reshape(8, 5) % 3 == 0).astype(np.uint8)
    np.save(tmp_path / "bits.npy", bits)
    ds = load(tmp_path / "bits.npy")
    assert set(np.unique(np.concatenate([ds.train, ds.validation, ds.test]))) == {0.0, 1.0}
