import pytest

from coevo import config
from coevo.errors import ConfigError


def test_defaults_are_the_paper_setting_except_three_measured_choices():
    c = config.Config()
    assert (c.grid.topology, c.grid.cells, c.grid.radius) == ("ring", 10, 1)
    assert (c.data.n_clusters, c.data.n_dims, c.data.rows_per_cluster, c.data.noise) == (10, 1000, 100, 0.05)
    assert (c.model.hidden, c.model.latent, c.model.loss) == ((30,), 10, "l1")
    assert (c.train.batch_size, c.train.lr_sigma) == (5, 1e-5)
    assert c.run.generations == 400
    assert (c.prune.operator, c.prune.schedule, c.prune.probability, c.prune.amount) == ("random", "exponential", 0.5, 0.1)
    assert c.train.fresh_optimizer_each_batch is False
    assert (c.run.update, c.prune.regrow, c.prune.reset_fraction) == ("synchronous", False, 0.0)
    # where the defaults leave the paper (README, "Quality"): chosen by benchmarks/quality.py
    assert (c.train.learning_rate, c.train.bce_weight, c.prune.target_kept) == (1e-3, 0.05, 0.45)
    paper = config.load(None, [], preset="paper")
    assert (paper.train.learning_rate, paper.train.bce_weight, paper.prune.target_kept) == (1e-5, 0.0, 0.0)


def test_toml_file_then_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[run]\ngenerations = 7\nmode = "canonical"\n[model]\nhidden = [20, 12]\n')
    c = config.load(path, ["run.generations=9", "prune.operator=none", "train.lr_decay=true"])
    assert c.run.generations == 9 and c.run.mode == "canonical"
    assert c.model.hidden == (20, 12)
    assert c.prune.operator == "none" and c.train.lr_decay is True


def test_dumps_round_trips(tmp_path):
    c = config.load(None, ["grid.topology=torus", "grid.shape=[3, 4]", "run.seed=42"])
    path = tmp_path / "c.toml"
    path.write_text(config.dumps(c))
    assert config.load(path) == c


@pytest.mark.parametrize("override, fragment", [
    ("nosection.key=1", "unknown section [nosection]"),
    ("run.nokey=1", "unknown key run.nokey"),
    ("run.generations=ten", "run.generations must be an integer"),
    ("run.generations=1.5", "run.generations must be an integer"),
    ("run.generations=0", "run.generations must be >= 1"),
    ("grid.cells=0", "grid.cells must be >= 1"),
    ("grid.radius=5", "grid.radius = 5 is too large"),
    ("prune.amount=1.5", "prune.amount must be in [0, 1]"),
    ("prune.probability=-0.1", "prune.probability must be in [0, 1]"),
    ("train.batch_size=0", "train.batch_size must be >= 1"),
    ("train.learning_rate=0", "train.learning_rate must be > 0"),
    ("train.learning_rate=-1e-3", "train.learning_rate must be > 0"),
    ("run.mode=evolve", "run.mode = 'evolve' is not allowed; choose one of: coevolution, canonical"),
    ("model.loss=huber", "choose one of: l1, bce, mse"),
    ("model.hidden=30", "model.hidden must be a list of int"),
    ("train.lr_decay=1", "train.lr_decay must be true or false"),
    ("run", "must look like section.key=value"),
])
def test_bad_values_name_the_key(override, fragment):
    with pytest.raises(ConfigError) as err:
        config.load(None, [override])
    assert fragment in str(err.value)


def test_torus_radius_checked_against_shape():
    with pytest.raises(ConfigError, match="too large for a 3x3 torus"):
        config.load(None, ["grid.topology=torus", "grid.shape=[3, 3]", "grid.radius=2"])


def test_broken_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\ngenerations = ")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        config.load(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "missing.toml")
