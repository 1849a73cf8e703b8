"""Every data source knows the shape of one sample, while its rows stay flat (N, D) float32 and its
splits stay byte-identical to the flat-only loader."""

import hashlib
import re

import numpy as np
import pytest

from coevo import config, data
from coevo.errors import DataError


def digest(ds: data.Dataset) -> str:
    """A hash of the three splits and their labels: any change in the split or the rows shows."""
    h = hashlib.sha256()
    for a in (ds.train, ds.validation, ds.test):
        h.update(str(a.shape).encode())
        h.update(str(a.dtype).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    for a in (ds.train_labels, ds.validation_labels, ds.test_labels):
        if a is not None:
            h.update(np.asarray(a, dtype=np.int64).tobytes())
    return h.hexdigest()


# computed with the loader before sample shapes existed (commit 0c899c4's coevo/data.py)
BC_DIGEST = "6f644b329f021077fed80a32173771b4862f73f9029947adc353d374b7cba8ff"
DIGITS_DIGEST = "f8c84ef5970c6c58ea3a4550031d22af28a135b1b7b6ec7d007ec8664ff148de"
NPY_DIGEST = "644c7e441e830357a412144d999336dc11830f7f85603b0623f4caec0f5e5d47"


def all_rows(ds: data.Dataset) -> np.ndarray:
    return np.concatenate([ds.train, ds.validation, ds.test])


@pytest.mark.parametrize("override", [(), (5, 8)])
def test_binary_clustering_is_flat_and_its_split_unchanged(override):
    ds = data.load(config.DataConfig(n_dims=40, n_clusters=3, rows_per_cluster=7, sample_shape=override), 3)
    assert digest(ds) == BC_DIGEST
    assert ds.shape == (override or (40,)) and ds.train.shape == (21, 40)


def test_manifold_is_flat():
    ds = data.load(config.DataConfig(source="manifold", n_dims=12, n_rows=20), 0)
    assert ds.sample_shape is None and ds.shape == (12,)


@pytest.mark.parametrize("override", [(), (64,), (2, 4, 8)])
def test_digits_are_one_channel_of_8x8_with_rows_unchanged(override):
    sklearn = pytest.importorskip("sklearn.datasets")
    ds = data.load(config.DataConfig(source="digits", sample_shape=override), 5)
    assert digest(ds) == DIGITS_DIGEST  # the split, whatever data.sample_shape says
    assert ds.shape == (override or (1, 8, 8)) and ds.n_dims == 64 and ds.train.dtype == np.float32
    # a row viewed with the shape is the image, pixel for pixel (row-major)
    images = (sklearn.load_digits().images / 16.0).astype(np.float32)
    row = ds.train[0]
    match = [i for i in range(len(images)) if np.array_equal(images[i].reshape(-1), row)]
    assert match and np.array_equal(row.reshape(1, 8, 8)[0], images[match[0]])


def test_a_2d_npy_split_is_unchanged(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(11).random((41, 30)))
    ds = data.load(config.DataConfig(source=str(tmp_path / "x.npy")), 2)
    assert digest(ds) == NPY_DIGEST and ds.shape == (30,)


def test_csv_rows_are_flat(tmp_path):
    np.savetxt(tmp_path / "x.csv", np.random.default_rng(0).random((10, 6)), delimiter=",")
    assert data.load(config.DataConfig(source=str(tmp_path / "x.csv")), 0).shape == (6,)


@pytest.mark.parametrize("trailing", [(5, 6), (1, 4, 4), (2, 3, 2, 2)])
def test_an_nd_npy_keeps_its_sample_shape_and_flattens_row_major(tmp_path, trailing):
    samples = np.random.default_rng(1).random((30, *trailing))
    np.save(tmp_path / "x.npy", samples)
    ds = data.load(config.DataConfig(source=str(tmp_path / "x.npy")), 4)
    assert ds.shape == trailing and ds.n_dims == int(np.prod(trailing))
    rows = all_rows(ds)
    assert rows.shape == (30, np.prod(trailing)) and rows.dtype == np.float32
    # the same permutation as the flat file of the same rows: row k is sample k flattened C-order
    flat = samples.reshape(30, -1)
    np.save(tmp_path / "flat.npy", flat)
    twin = data.load(config.DataConfig(source=str(tmp_path / "flat.npy")), 4)
    assert np.array_equal(all_rows(twin), rows)
    for k in range(30):
        (hit,) = np.flatnonzero((rows == flat[k].astype(np.float32)).all(axis=1))
        np.testing.assert_array_equal(rows[hit].reshape(trailing), samples[k].astype(np.float32))


def test_a_fortran_ordered_npy_is_flattened_in_c_order(tmp_path):
    samples = np.random.default_rng(2).random((6, 3, 4))
    np.save(tmp_path / "f.npy", np.asfortranarray(samples))
    ds = data.load(config.DataConfig(source=str(tmp_path / "f.npy"), validation_fraction=0.2, test_fraction=0.2), 0)
    expected = {tuple(s.astype(np.float32).reshape(-1)) for s in samples}
    assert {tuple(r) for r in all_rows(ds)} == expected


def test_sample_shape_overrides_an_npy(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(3).random((20, 5, 6)))
    plain = data.load(config.DataConfig(source=str(tmp_path / "x.npy")), 0)
    ds = data.load(config.DataConfig(source=str(tmp_path / "x.npy"), sample_shape=(1, 6, 5)), 0)
    assert ds.shape == (1, 6, 5) and digest(ds) == digest(plain)


@pytest.mark.parametrize("source", ["npy", "digits", "binary_clustering"])
def test_a_wrong_sample_shape_names_both_numbers_and_the_fix(tmp_path, source):
    if source == "npy":
        np.save(tmp_path / "x.npy", np.random.default_rng(3).random((20, 700)))
        source, width = str(tmp_path / "x.npy"), 700
    elif source == "digits":
        pytest.importorskip("sklearn")
        width = 64
    else:
        width = 1000
    cfg = config.DataConfig(source=source, sample_shape=(1, 28, 28))
    with pytest.raises(DataError) as err:
        data.load(cfg, 0)
    message = str(err.value)
    assert "\n" not in message
    assert message == (f"data.sample_shape = [1, 28, 28] holds 784 values but each row of {source} has {width}; "
                       f"set data.sample_shape to a shape of {width} values or leave it empty")


def test_a_sample_shape_from_the_config_file_applies(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(3).random((20, 12)))
    cfg = config.load(None, [f"data.source={tmp_path / 'x.npy'}", "data.sample_shape=[3, 4]"])
    assert data.load(cfg.data, 0).shape == (3, 4)


@pytest.mark.parametrize("content", [np.array([0.1, 0.2, 0.3]), np.array(0.5)])
def test_a_1d_or_0d_npy_is_refused_in_one_line(tmp_path, content):
    np.save(tmp_path / "x.npy", content)
    with pytest.raises(DataError, match=re.escape("must hold a 2-D array of at least 3 rows")) as err:
        data.load(config.DataConfig(source=str(tmp_path / "x.npy")), 0)
    assert "\n" not in str(err.value) and f"got shape {content.shape}" in str(err.value)


@pytest.mark.parametrize("shape", [(2, 4, 4), (5, 0, 3)])
def test_an_nd_npy_of_too_few_samples_or_no_values_is_refused(tmp_path, shape):
    np.save(tmp_path / "x.npy", np.zeros(shape))
    with pytest.raises(DataError, match=re.escape(f"got shape {shape}")):
        data.load(config.DataConfig(source=str(tmp_path / "x.npy")), 0)


def test_values_outside_the_unit_interval_in_a_3d_npy_are_refused(tmp_path):
    samples = np.random.default_rng(4).random((10, 3, 3))
    samples[7, 2, 1] = 1.5
    np.save(tmp_path / "x.npy", samples)
    with pytest.raises(DataError, match=re.escape("outside [0, 1]")):
        data.load(config.DataConfig(source=str(tmp_path / "x.npy")), 0)


def test_a_nan_in_a_3d_npy_is_named_by_its_row(tmp_path):
    samples = np.random.default_rng(4).random((10, 3, 3))
    samples[7, 2, 1] = np.nan
    np.save(tmp_path / "x.npy", samples)
    with pytest.raises(DataError, match=re.escape("(first in row 7)")):
        data.load(config.DataConfig(source=str(tmp_path / "x.npy")), 0)


def test_a_bool_3d_npy_is_read_as_zeros_and_ones(tmp_path):
    samples = np.random.default_rng(5).random((12, 2, 3)) < 0.5
    np.save(tmp_path / "x.npy", samples)
    ds = data.load(config.DataConfig(source=str(tmp_path / "x.npy")), 0)
    assert ds.shape == (2, 3) and all_rows(ds).dtype == np.float32
    assert sorted(map(tuple, all_rows(ds))) == sorted(map(tuple, samples.reshape(12, -1).astype(np.float32)))


def test_a_csv_keeps_its_2d_messages(tmp_path):
    (tmp_path / "x.csv").write_text("0.1,0.2\n0.3,0.4\n")
    with pytest.raises(DataError, match=r"must hold a 2-D array of at least 3 rows, got shape \(2, 2\)$"):
        data.load(config.DataConfig(source=str(tmp_path / "x.csv")), 0)


def test_the_dataset_checks_its_sample_shape():
    rows = np.zeros((4, 12), dtype=np.float32)
    assert data.Dataset(rows, rows, rows).shape == (12,)
    assert data.Dataset(rows, rows, rows, sample_shape=[3, 4]).shape == (3, 4)  # a list becomes a tuple
    assert data.Dataset(rows, rows, rows, None, None, None, None, (2, 2, 3)).shape == (2, 2, 3)
    for bad in [(5, 5), (12, 0), ()]:
        with pytest.raises(ValueError, match="sample_shape"):
            data.Dataset(rows, rows, rows, sample_shape=bad)
