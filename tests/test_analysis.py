"""coevo analyze and the manifold data source."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from coevo import config, data
from coevo.cli import main
from coevo.errors import ConfigError


def test_manifold_is_seeded_scaled_and_split():
    cfg = config.DataConfig(source="manifold", intrinsic_dim=3, n_dims=20, n_rows=200)
    a, b = data.load(cfg, 1), data.load(cfg, 1)
    assert a.train.shape == a.validation.shape == a.test.shape == (200, 20)
    assert np.array_equal(a.train, b.train) and not np.array_equal(a.train, data.load(cfg, 2).train)
    rows = np.concatenate([a.train, a.validation, a.test])
    assert rows.min() == 0.0 and rows.max() == 1.0 and rows.dtype == np.float32
    assert a.test_labels is None
    # the data span more than d linear directions (nonlinear) but lie on a d-dimensional set
    s = np.linalg.svd(rows - rows.mean(0), compute_uv=False)
    assert (s / s[0] > 0.05).sum() > 3


def test_manifold_intrinsic_dim_checked():
    with pytest.raises(ConfigError, match="data.intrinsic_dim"):
        config.load(None, ["data.source=manifold", "data.n_dims=4", "data.intrinsic_dim=5"])
    config.load(None, ["data.n_dims=4", "data.intrinsic_dim=5"])  # other sources ignore it


def test_manifold_estimates_near_d():
    pytest.importorskip("skdim")
    from coevo.analysis import id_estimates

    ds = data.load(config.DataConfig(source="manifold", intrinsic_dim=3, n_dims=20, n_rows=1000), 1)
    est = id_estimates(ds.train)
    assert sum(abs(v - 3) <= 1 for v in est.values()) >= 2, est


MANIFOLD = ["data.source=manifold", "data.intrinsic_dim=3", "data.n_dims=20", "data.n_rows=300",
            "model.hidden=[16]", "model.latent=6", "run.generations=3", "grid.cells=4", "train.batch_size=10",
            "prune.schedule=fixed", "run.checkpoint_every=0"]


def _run(tmp_path_factory, name, overrides):
    from coevo import runner

    out = tmp_path_factory.mktemp(name) / "run"
    runner.start(config.load(None, overrides), out, quiet=True)
    return out


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    from tests.conftest import TINY

    return _run(tmp_path_factory, "default", TINY)


@pytest.fixture(scope="module")
def manifold_run(tmp_path_factory):
    return _run(tmp_path_factory, "manifold", MANIFOLD)


def test_analyze_default_run(default_run, capsys):
    pytest.importorskip("skdim")
    pytest.importorskip("sklearn")
    assert main(["analyze", str(default_run)]) == 0
    assert "latent_alive" in capsys.readouterr().out
    result = json.loads((default_run / "analysis.json").read_text())
    assert 0 <= result["latent_alive"] <= result["latent_on_path"] <= 3
    assert set(result["id_estimates"]) == {"TwoNN", "MLE", "lPCA"}
    assert 0 <= result["nmi"] <= 1 and -1 <= result["ari"] <= 1 and result["clusters"] == 3
    for fig in ("latent_pca.png", "latent_alive.png"):
        assert (default_run / "plots" / fig).stat().st_size > 1000
    assert "latent_alive_best" in (default_run / "logbook.csv").read_text().splitlines()[0]


def test_analyze_manifold_run(manifold_run, capsys):
    pytest.importorskip("skdim")
    assert main(["analyze", str(manifold_run)]) == 0
    result = json.loads((manifold_run / "analysis.json").read_text())
    assert result["intrinsic_dim"] == 3 and result["nmi"] is None
    assert sum(abs(v - 3) <= 1 for v in result["id_estimates"].values()) >= 2, result["id_estimates"]
    assert (manifold_run / "plots" / "latent_pca.png").exists()


def test_analyze_digits_draws_reconstructions(tmp_path_factory, capsys):
    pytest.importorskip("skdim")
    run = _run(tmp_path_factory, "digits", ["data.source=digits", "run.generations=2", "grid.cells=4",
                                             "train.batch_size=20", "run.checkpoint_every=0"])
    assert main(["analyze", str(run)]) == 0
    result = json.loads((run / "analysis.json").read_text())
    assert result["clusters"] == 10 and result["nmi"] is not None
    assert (run / "plots" / "reconstructions.png").stat().st_size > 1000


def _listing(path):
    return sorted((str(p.relative_to(path)), p.stat().st_mtime_ns) for p in path.rglob("*"))


def test_analyze_not_a_run(tmp_path, capsys):
    pytest.importorskip("skdim")
    assert main(["analyze", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a coevo run directory" in err and err.count("\n") == 1
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("missing", ["skdim", "sklearn"])
def test_analyze_missing_extra(manifold_run, capsys, monkeypatch, missing):
    before = _listing(manifold_run)
    monkeypatch.setitem(sys.modules, missing, None)
    assert main(["analyze", str(manifold_run)]) == 2
    err = capsys.readouterr().err
    assert "coevo[analysis]" in err and err.count("\n") == 1
    assert _listing(manifold_run) == before


def test_greedy_folds_fold_a_copied_latent_neuron_first_and_for_free():
    """Column 3 copies column 1 and column 2 is an affine function of column 0: both fold at no
    cost, before any independent column; the losses are those of decoding the refit codes."""
    from coevo.analysis import greedy_folds

    rng = np.random.default_rng(0)
    codes = rng.random((50, 5))
    codes[:, 3] = codes[:, 1]
    codes[:, 2] = 0.5 + 2.0 * codes[:, 0]
    w = rng.normal(size=(5, 7))
    target = codes @ w

    def loss_of(out):
        return float(np.abs(out - target).mean())

    order, losses = greedy_folds(codes, [0, 1, 2, 3, 4], lambda z: z @ w, loss_of)
    assert len(order) == 4 and len(losses) == 4 and len(set(order)) == 4
    assert set(order[:2]) in ({1, 2}, {3, 2}, {1, 0}, {3, 0})  # one of each redundant pair
    assert losses[0] == pytest.approx(0.0, abs=1e-9) and losses[1] == pytest.approx(0.0, abs=1e-9)
    assert losses[2] > 1e-3  # then only independent columns are left
    # the reported loss is the loss of the codes the folds leave, recomputed directly
    kept = [j for j in range(5) if j not in order[:3]]
    z = codes.copy()
    for j in order[:3]:
        others = [k for k in range(5) if k not in order[:order.index(j) + 1]]
        design = np.concatenate([np.ones((50, 1)), z[:, others]], axis=1)
        z[:, j] = design @ np.linalg.lstsq(design, z[:, j], rcond=None)[0]
    assert loss_of(z @ w) == pytest.approx(losses[2], rel=1e-9) and len(kept) == 2


def test_analyze_reports_the_latent_neurons_the_decoder_needs(default_run, capsys):
    pytest.importorskip("skdim")
    assert main(["analyze", str(default_run), "--fold-tolerance", "0.5"]) == 0
    assert "latent_needed" in capsys.readouterr().out
    result = json.loads((default_run / "analysis.json").read_text())
    alive = result["latent_alive"]
    assert len(result["latent_fold_losses"]) == max(alive, 1) and result["latent_fold_tolerance"] == 0.5
    assert (1 if alive else 0) <= result["latent_needed"] <= alive
    losses = result["latent_fold_losses"]
    folded = alive - result["latent_needed"]  # every fold made is within the tolerance, the next is not
    assert all(v <= losses[0] * 1.5 for v in losses[1:folded + 1])
    assert folded == len(losses) - 1 or losses[folded + 1] > losses[0] * 1.5
    if alive > 1:
        assert (default_run / "plots" / "latent_folds.png").stat().st_size > 1000
    assert main(["analyze", str(default_run), "--fold-tolerance", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--fold-tolerance" in err and err.count("\n") == 1
