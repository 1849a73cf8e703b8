import re

import numpy as np
import pytest

from coevo import config, data
from coevo.errors import DataError


def test_binary_clustering_matches_spec():
    ds = data.binary_clustering(10, 2000, 100, 0.05, np.random.default_rng(0))
    assert ds.train.shape == ds.validation.shape == ds.test.shape == (1000, 2000)
    assert ds.train.dtype == np.float32
    assert set(np.unique(ds.train)) <= {0.0, 1.0}
    assert abs(ds.centroids.mean() - 0.75) < 0.01
    flips = np.abs(ds.train - ds.centroids[ds.train_labels]).mean()
    assert abs(flips - 0.05) < 0.005
    # splits share centroids but draw their own noise (the test split is not repeated rows)
    assert not np.array_equal(ds.train, ds.test)
    assert len(np.unique(ds.test, axis=0)) == 1000
    assert np.bincount(ds.test_labels).tolist() == [100] * 10


def test_load_is_seeded():
    cfg = config.DataConfig(n_dims=50, n_clusters=3, rows_per_cluster=5)
    a, b, c = data.load(cfg, 1), data.load(cfg, 1), data.load(cfg, 2)
    assert np.array_equal(a.train, b.train) and not np.array_equal(a.train, c.train)


def test_user_files(tmp_path):
    rows = np.random.default_rng(0).random((50, 7))
    np.save(tmp_path / "x.npy", rows)
    np.savetxt(tmp_path / "x.csv", rows, delimiter=",")
    for name in ("x.npy", "x.csv"):
        ds = data.load(config.DataConfig(source=str(tmp_path / name)), 0)
        assert ds.train.shape[1] == 7 and ds.train.shape[0] + ds.validation.shape[0] + ds.test.shape[0] == 50


@pytest.mark.parametrize("content, fragment", [
    (np.array([[0.1, np.nan], [0.2, 0.3], [0.1, 0.1]]), "NaN"),
    (np.array([[0.1, 2.0], [0.2, 0.3], [0.1, 0.1]]), "outside [0, 1]"),
    (np.array([0.1, 0.2, 0.3]), "2-D array"),
])
def test_bad_user_data(tmp_path, content, fragment):
    np.save(tmp_path / "bad.npy", content)
    with pytest.raises(DataError, match=re.escape(fragment)):
        data.load(config.DataConfig(source=str(tmp_path / "bad.npy")), 0)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        data.load(config.DataConfig(source=str(tmp_path / "nope.npy")), 0)
    (tmp_path / "junk.npy").write_bytes(b"not a numpy file")
    with pytest.raises(DataError, match="cannot be read"):
        data.load(config.DataConfig(source=str(tmp_path / "junk.npy")), 0)
    (tmp_path / "junk.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="cannot be read"):
        data.load(config.DataConfig(source=str(tmp_path / "junk.csv")), 0)


def test_a_csv_header_row_is_named_with_its_fix(tmp_path):
    (tmp_path / "header.csv").write_text("pixel_0,pixel_1\n0,1\n1,0.5\n0.25,0\n")
    with pytest.raises(DataError, match=r"first line 'pixel_0,pixel_1' is a header row.*remove the header row"):
        data.load(config.DataConfig(source=str(tmp_path / "header.csv")), 0)
    (tmp_path / "bad.csv").write_text("0,1\n1,x\n0.25,0\n")  # a bad value further down is no header
    with pytest.raises(DataError, match="cannot be read") as bad:
        data.load(config.DataConfig(source=str(tmp_path / "bad.csv")), 0)
    assert "is a header row" not in str(bad.value)

def test_manifold_scaling_uses_the_training_split_only():
    n_rows, d, dims = 50, 2, 30
    ds = data.manifold(d, dims, n_rows, np.random.default_rng(7))
    # the same draws, unscaled: the three splits in order, as data.manifold makes them
    rng = np.random.default_rng(7)
    omega = rng.normal(0.0, np.pi / np.sqrt(d), size=(d, dims))
    phase = rng.uniform(0.0, 2 * np.pi, size=dims)
    raw = np.split(np.sin(rng.random((3 * n_rows, d)) @ omega + phase), 3)
    low, high = raw[0].min(axis=0), raw[0].max(axis=0)
    for scaled, rows in zip((ds.train, ds.validation, ds.test), raw):
        np.testing.assert_allclose(scaled, ((rows - low) / (high - low)).clip(0, 1), atol=1e-6)
    # every training column spans [0, 1] exactly; held-out extremes beyond the training range
    # (there are some at 50 rows) are clipped, not folded into the scale
    assert np.all(ds.train.min(axis=0) == 0.0) and np.all(ds.train.max(axis=0) == 1.0)
    held_out = np.concatenate(raw[1:])
    assert (held_out.min(axis=0) < low).any() or (held_out.max(axis=0) > high).any()
    assert 0.0 <= min(ds.validation.min(), ds.test.min()) and max(ds.validation.max(), ds.test.max()) <= 1.0

def test_digits_ship_with_scikit_learn_and_train(tmp_path):
    pytest.importorskip("sklearn")
    ds = data.load(config.DataConfig(source="digits"), 0)
    assert ds.n_dims == 64 and 0.0 <= ds.train.min() and ds.train.max() <= 1.0
    assert ds.train.shape[0] + ds.validation.shape[0] + ds.test.shape[0] == 1797
    assert set(np.unique(ds.train_labels)) == set(range(10))

    from coevo.cli import main

    out = tmp_path / "digits"
    args = ["run", "--quiet", "--out", str(out), "--set", "data.source=digits", "--set", "run.generations=2",
            "--set", "grid.cells=3", "--set", "model.hidden=[16]", "--set", "train.learning_rate=0.001"]
    assert main(args) == 0
    assert (out / "summary.json").exists()


# ---------------------------------------------------------------- files coevo must not open (issue 32)

@pytest.mark.parametrize("kind", ["fifo", "link_to_dev_zero"])
def test_a_data_source_that_is_not_a_regular_file_is_refused_before_it_is_opened(tmp_path, kind, capsys):
    import os
    import threading

    from coevo.cli import main

    path = tmp_path / "rows.csv"
    if kind == "fifo":
        os.mkfifo(path)  # no writer: opening it would block for ever
        what = "is a FIFO (named pipe), not a regular file"
    else:
        path.symlink_to("/dev/zero")  # one endless line
        what = "(a link to /dev/zero) is a character device, not a regular file"
    result = {}
    worker = threading.Thread(target=lambda: result.update(code=main(
        ["run", "--quiet", "--out", str(tmp_path / "run"), "--set", f"data.source={path}"])), daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the run hangs on the data file"
    err = capsys.readouterr().err
    assert result["code"] == 2 and err.count("\n") == 1 and f"data file {path} {what}" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text", ["", "\n\n\n", "# a comment\n# another\n"])
def test_an_empty_csv_is_one_line_without_numpys_warning(tmp_path, text):
    import warnings

    path = tmp_path / "rows.csv"
    path.write_text(text)
    cfg = config.load(None, [f"data.source={path}"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "input contained no data" would fail here
        with pytest.raises(DataError, match="must hold a 2-D array of at least 3 rows"):
            data.load(cfg.data, seed=0)


def test_a_bool_npy_is_read_as_zeros_and_ones(tmp_path):
    rows = np.random.default_rng(0).random((20, 5)) < 0.5
    np.save(tmp_path / "rows.npy", rows)
    ds = data.load(config.load(None, [f"data.source={tmp_path / 'rows.npy'}"]).data, seed=0)
    loaded = np.concatenate([ds.train, ds.validation, ds.test])
    assert loaded.dtype == np.float32 and set(np.unique(loaded)) == {0.0, 1.0}
    assert sorted(map(tuple, loaded)) == sorted(map(tuple, rows.astype(np.float32)))
