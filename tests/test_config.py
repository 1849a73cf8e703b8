import re

import pytest

from coevo import config
from coevo.errors import ConfigError


def test_defaults_are_the_paper_setting_except_measured_choices():
    c = config.Config()
    assert (c.grid.topology, c.grid.cells, c.grid.radius) == ("ring", 10, 1)
    assert (c.data.n_clusters, c.data.n_dims, c.data.rows_per_cluster, c.data.noise) == (10, 1000, 100, 0.05)
    assert (c.model.hidden, c.model.latent, c.model.loss) == ((30,), 10, "l1")
    assert (c.train.batch_size, c.train.lr_sigma) == (5, 1e-5)
    assert c.run.generations == 400
    # the pruning: chosen by the compression sweeps of issue 19 (docs/results.md, "Compression")
    assert (c.prune.operator, c.prune.schedule, c.prune.probability, c.prune.target_kept) == ("magnitude", "gradual", 1.0, 0.1)
    assert c.prune.params == {}  # magnitude's own defaults: scope model, encoder_scale 0.5
    assert c.train.fresh_optimizer_each_batch is False
    assert (c.run.update, c.prune.regrow, c.prune.reset_fraction) == ("synchronous", False, "auto")
    # where the defaults leave the paper (docs/results.md, "Quality"): chosen by benchmarks/quality.py
    assert (c.train.learning_rate, c.train.bce_weight) == (1e-3, 0.05)
    paper = config.load(None, [], preset="paper")
    assert (paper.train.learning_rate, paper.train.bce_weight, paper.prune.target_kept) == (1e-5, 0.0, 0.0)
    assert (paper.prune.operator, paper.prune.schedule, paper.prune.probability, paper.prune.amount) == \
        ("random", "exponential", 0.5, 0.1)


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


def test_plugin_parameter_tables_merge_and_round_trip(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[prune]\noperator = "my.ops:f"\n[prune.params]\nlevel = 3\nname = "x"\n'
                    '[prune.schedule_params]\nk = 1.5\n')
    c = config.load(path, ["prune.params.level=4", "prune.params.sizes=[1, 2]",
                           "prune.schedule_params.on=true"])
    assert c.prune.params == {"level": 4, "name": "x", "sizes": [1, 2]}  # --set adds and overrides keys
    assert c.prune.schedule_params == {"k": 1.5, "on": True}
    text = config.dumps(c)
    assert "[prune.params]\nlevel = 4\nname = \"x\"\nsizes = [1, 2]\n" in text
    path.write_text(text)
    assert config.load(path) == c
    assert config.Config().replace(prune__params={"a": 1}).prune.params == {"a": 1}
    assert config.load(path, ["prune.params.level=5"]).prune.params["level"] == 5


def test_keys_that_became_parameters():
    """Every config.toml written before holds them: at their old default they are dropped, any
    other value names the key to use now."""
    old = ["prune.threshold=0.1", 'prune.variance_direction="low"', "prune.exponential_k=2", "prune.final_fraction=0.25"]
    assert config.load(None, old) == config.Config()
    for override, new in (("prune.threshold=0.3", "prune.params.threshold"),
                          ('prune.variance_direction="high"', "prune.params.direction"),
                          ("prune.exponential_k=3", "prune.schedule_params.k"),
                          ("prune.final_fraction=0.5", "prune.schedule_params.fraction")):
        with pytest.raises(ConfigError, match=f"is now {new}"):
            config.load(None, [override])


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
    ("prune.grow_fraction=1", "prune.grow_fraction must be in [0, 1)"),
    ("prune.grow_by=best", "prune.grow_by = 'best' is not allowed; choose one of: gradient, random"),
    ("prune.keep_inputs=maybe", "prune.keep_inputs must be true or false"),
    ("train.batch_size=0", "train.batch_size must be >= 1"),
    ("train.learning_rate=0", "train.learning_rate must be > 0"),
    ("train.learning_rate=-1e-3", "train.learning_rate must be > 0"),
    ("run.mode=evolve", "run.mode = 'evolve' is not allowed; choose one of: coevolution, canonical"),
    ("model.loss=huber", "choose one of: l1, bce, mse"),
    ("model.hidden=30", "model.hidden must be a list of int"),
    ("train.lr_decay=1", "train.lr_decay must be true or false"),
    ("run", "must look like section.key=value"),
    ("prune.params.a.b=1", "the key must be section.key"),
    ("prune.params={a = {b = 1}}", "prune.params.a must be a number, string, boolean or a list of them"),
    ("prune.params.x=nan", "prune.params.x must be a finite number"),
    ('prune.params={"not a name" = 1}', "'not a name' is not a parameter name"),
    ("prune.params=3", "prune.params must be a table"),
    ("run.seed.x=1", "run.seed must be an integer"),
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


def test_reset_fraction_auto_is_on_in_coevolution_on_the_loss_only(tmp_path):
    """The exploration mutation helps only where selection can drop the pairs it hurt."""
    assert config.Config().prune.reset_fraction_for("coevolution") == config.AUTO_RESET_FRACTION == 0.01
    canonical = config.load(None, ["run.mode=canonical"])
    assert canonical.prune.reset_fraction == "auto" and canonical.prune.reset_fraction_for("canonical") == 0.0
    explicit = config.load(None, ["run.mode=canonical", "prune.reset_fraction=0.02"])
    assert explicit.prune.reset_fraction_for("canonical") == 0.02
    front = config.load(None, ['selection.objectives=["loss", "kept"]'])
    assert front.prune.reset_fraction_for(front.run.mode, front.selection.objectives) == 0.0
    path = tmp_path / "config.toml"
    path.write_text(config.dumps(config.Config()))
    assert config.load(path).prune.reset_fraction == "auto"  # config.toml round trip
    for bad, message in (("sometimes", "prune.reset_fraction must be float or 'auto'"),
                         ("1.5", "prune.reset_fraction must be in [0, 1]")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            config.load(None, [f"prune.reset_fraction={bad}"])
