"""The reference's semantics as options (regrowth, asynchronous cells), a pruning target, the
exploration reset, run presets, and losses in context (floor and baseline)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from coevo import config
from coevo.cli import main
from coevo.measures import baseline_loss, loss_floor


def run(tmp_path, name, overrides, capsys) -> dict:
    out = tmp_path / name
    assert main(["run", "--quiet", "--out", str(out), *[x for o in overrides for x in ("--set", o)]]) == 0, \
        capsys.readouterr().err
    capsys.readouterr()
    return json.loads((out / "summary.json").read_text()) | {"dir": out}


def best_pair(summary: dict) -> dict:
    return torch.load(summary["dir"] / "best.pt", weights_only=True)


PRUNE_HARD = ["prune.operator=random", "prune.probability=1", "prune.amount=0.3", "run.generations=6",
              "prune.target_kept=0"]


def test_regrow_zeroes_entries_but_keeps_no_mask(tmp_path, tiny_overrides, capsys):
    summary = run(tmp_path, "regrow", tiny_overrides + PRUNE_HARD + ["prune.regrow=true"], capsys)
    model = best_pair(summary)
    masks = [t for net in model.values() for n, t in net.items() if n.endswith("_mask")]
    assert all(bool(m.all()) for m in masks)  # no mask is kept
    values = [t for net in model.values() for n, t in net.items() if not n.endswith("_mask")]
    nonzero = sum(int((v != 0).sum()) for v in values) / sum(v.numel() for v in values)
    assert summary["mask_kept_fraction"] == pytest.approx(nonzero)  # kept counts non-zero entries
    assert 0.4 < nonzero < 0.85  # 30% of every layer zeroed in the last generation, earlier zeros trained again
    persistent = run(tmp_path, "persistent", tiny_overrides + PRUNE_HARD, capsys)
    assert persistent["mask_kept_fraction"] < 0.3 < nonzero  # about 0.7^6 (plus spared units) when masks persist


def test_target_kept_stops_pruning_at_the_target(tmp_path, tiny_overrides, capsys):
    summary = run(tmp_path, "target", tiny_overrides + PRUNE_HARD + ["prune.target_kept=0.5"], capsys)
    assert 0.4 <= summary["kept_fraction_mean"] <= 0.55
    assert summary["kept_fraction"] <= 0.55


def test_reset_fraction_zeroes_alive_weights_and_leaves_masks(tiny_overrides):
    from coevo.evolution.loop import make_toolbox
    from coevo.evolution.problem import build
    from coevo.evolution.variation import vary_cells, CellData

    cfg = config.load(None, tiny_overrides + ["prune.probability=1", "prune.amount=0.0", "prune.reset_fraction=0.5"])
    problem = build(cfg)
    enc, dec = problem.fresh_stacks(4)
    cells = np.arange(4)
    v = vary_cells(enc, dec, cells, cells, cells, np.full(4, 1e-3), 1.0, 0, CellData(problem.train, cfg),
                   make_toolbox(cfg).mutate, "random")
    assert v.pruned.all() and bool(v.encoders.mask.all()) and bool(v.decoders.mask.all())
    zero = float((v.encoders.params == 0).float().mean())
    assert 0.4 < zero < 0.6
    assert torch.all(v.encoders.exp_avg[v.encoders.params == 0] == 0)


def test_asynchronous_updates_are_reproducible_and_differ_from_synchronous(tmp_path, tiny_overrides, capsys):
    async_ = tiny_overrides + ["run.update=asynchronous", "run.generations=4"]
    a = run(tmp_path, "a", async_, capsys)
    b = run(tmp_path, "b", async_, capsys)
    sync = run(tmp_path, "s", tiny_overrides + ["run.generations=4"], capsys)
    strip = lambda s: {k: v for k, v in s.items() if k not in ("dir", "wall_seconds", "seconds_per_generation")}  # noqa: E731
    assert strip(a) == strip(b)
    assert a["test_loss_cells"] != sync["test_loss_cells"]


def test_asynchronous_cells_read_their_neighbours_latest_centres(tiny_config):
    """Cell by cell: a cell visited later sees the centres written earlier in the generation."""
    from coevo.engines import LocalEngine
    from coevo.evolution import topology
    from coevo.evolution.loop import asynchronous_generation, make_toolbox
    from coevo.evolution.problem import build
    from coevo.evolution.state import RunState
    from coevo.evolution.variation import CellData
    import random

    cfg = tiny_config.replace(run__update="asynchronous")
    problem = build(cfg)
    neighbours = topology.neighbourhoods(cfg.grid)
    enc, dec = problem.fresh_stacks(len(neighbours))
    state = RunState(0, enc, dec, np.full(len(neighbours), 1e-3))
    engine = LocalEngine()
    engine.start(CellData(problem.train, cfg), neighbours)
    engine.load(enc, dec)
    seen = []
    evaluate = engine.evaluate

    def spy(gen, cells=None):
        seen.append(engine.enc.params.clone())
        return evaluate(gen, cells=cells)

    engine.evaluate = spy
    random.seed(0)
    asynchronous_generation(state, neighbours, engine, make_toolbox(cfg), cfg, 0, 0.0)
    assert len(seen) == len(neighbours)
    assert torch.equal(seen[0], enc.params)  # the first cell sees the old centres
    assert not torch.equal(seen[-1], enc.params)  # the last sees centres replaced before it
    assert not torch.equal(engine.centres()[0].params, enc.params)
    assert torch.equal(state.encoders.params, enc.params)  # the engine wrote its own copy, not the caller's


def test_asynchronous_on_ray_is_refused_in_one_line(capsys):
    assert main(["run", "--set", "run.update=asynchronous", "--set", "run.engine=ray"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "local engine only" in err


@pytest.mark.parametrize("key, value, words", [("prune.target_kept", "1.5", "prune.target_kept must be in [0, 1)"),
                                                ("prune.reset_fraction", "-0.1", "prune.reset_fraction must be in"),
                                                ("run.update", '"sometimes"', "choose one of: synchronous"),
                                                ("prune.regrow", "3", "prune.regrow must be true or false"),
                                                ("train.bce_weight", "-1", "train.bce_weight must be >= 0")])
def test_bad_values_of_the_new_keys_are_one_line_errors(tmp_path, key, value, words, capsys):
    out = tmp_path / "never"
    assert main(["run", "--out", str(out), "--set", f"{key}={value}"]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
    assert not out.exists()


def test_presets_set_the_reference_semantics_and_yield_to_set(capsys):
    ref = config.load(None, ["train.learning_rate=0.01"], preset="reference")
    assert (ref.run.update, ref.prune.regrow, ref.train.fresh_optimizer_each_batch) == ("asynchronous", True, True)
    assert (ref.prune.operator, ref.prune.schedule, ref.prune.probability, ref.prune.amount) == \
        ("random", "exponential", 0.5, 0.1)
    assert ref.train.learning_rate == 0.01  # --set wins over the preset
    paper = config.load(None, [], preset="paper")
    assert (paper.prune.regrow, paper.run.update, paper.train.learning_rate, paper.train.bce_weight) == \
        (False, "synchronous", 1e-5, 0.0)
    canonical = config.load(None, [], preset="reference-canonical")
    assert canonical.run.mode == "canonical" and canonical.train.lr_decay
    assert main(["run", "--preset", "nope"]) == 2
    assert "presets: baseline, paper, reference, reference-canonical" in capsys.readouterr().err
    assert main(["operators"]) == 0
    assert "reference-canonical" in capsys.readouterr().out


def test_loss_floor_and_baseline():
    train = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # majority bits: 1, 0
    test = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    assert baseline_loss(train, test, "l1") == pytest.approx(0.5)  # [1,0] misses one bit of each row
    real = torch.tensor([[0.2, 0.4], [0.4, 0.8]])  # not binary: predict the means 0.3, 0.6
    assert baseline_loss(real, real, "l1") == pytest.approx(0.15)
    assert loss_floor(config.load(None, ["data.noise=0.07"])) == 0.07
    assert loss_floor(config.load(None, ["model.loss=bce"])) is None


def test_summary_puts_the_loss_in_context(tmp_path, tiny_overrides, capsys):
    summary = run(tmp_path, "ctx", tiny_overrides, capsys)
    assert summary["test_loss_floor"] == 0.05
    assert summary["test_loss_floor"] < summary["test_loss_baseline"] < 0.5
    assert main(["report", str(summary["dir"])]) == 0
    assert "test_loss_baseline" in capsys.readouterr().out
