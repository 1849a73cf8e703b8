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


def _regrow_pair(overrides: list[str]):
    """A fresh problem's stacks, cell 0 as (encoder, decoder) Networks, and a context with ``cfg.prune``."""
    from coevo.evolution.problem import build
    from coevo.genome import Decoder, Encoder
    from coevo.operators.base import PruneContext

    cfg = config.load(None, overrides)
    enc, dec = build(cfg).fresh_stacks(1)
    nets = [enc.network(0, Encoder, keep_inputs=cfg.prune.keep_inputs),
            dec.network(0, Decoder, keep_inputs=cfg.prune.keep_inputs)]
    return nets, PruneContext(generation=0, settings=cfg.prune)


REFERENCE_NETS = ["data.n_dims=200", "model.hidden=[2]", "model.latent=2"]  # 2 weights per input: protection shows


def test_regrow_random_prune_is_the_references_per_tensor_draw():
    """prune.regrow: torch's random_unstructured + prune.remove on every tensor, so each weight and
    each bias tensor loses exactly round(amount * size) entries, drawn among all of them (no
    protection rule: an input may lose both its weights), and the draw is uniform."""
    from coevo.operators.random_pruning import random_prune

    nets, context = _regrow_pair(REFERENCE_NETS + ["prune.regrow=true"])
    rng = np.random.default_rng(5)
    hits = {id(layer): np.zeros(layer.weight_mask.shape) for net in nets for layer in net.layers}
    inputs_lost, trials = 0, 300
    for _ in range(trials):
        for net in nets:
            for layer in net.layers:
                layer.weight_mask[...] = True
                layer.bias_mask[...] = True
            random_prune(net, 0.5, rng, context)
            for layer in net.layers:
                for mask in (layer.weight_mask, layer.bias_mask):
                    assert int((~mask).sum()) == round(0.5 * mask.size)  # per tensor, not pooled, not stochastic
                hits[id(layer)] += ~layer.weight_mask
        inputs_lost += int((~nets[0].layers[0].weight_mask.any(axis=0)).sum())  # the selector protects one each
    assert inputs_lost > 0.15 * 200 * trials  # about a quarter of the inputs lose both weights each time
    for freq in hits.values():
        assert np.allclose(freq / trials, 0.5, atol=0.12)  # every entry equally likely, the spared ones too
    # without regrow the selector and its protection rules are unchanged
    nets, context = _regrow_pair(REFERENCE_NETS + ["prune.keep_inputs=true"])
    random_prune(nets[0], 0.5, rng, context)
    assert nets[0].layers[0].weight_mask.any(axis=0).all()


def test_regrow_draws_among_zero_weights_too_and_keeps_no_mask(tiny_overrides):
    """In a run: with the reference's regrowth a prune draws among every entry, the already-zero
    ones included (zeroing a zero changes nothing), and no mask survives the mutation."""
    from coevo.evolution.loop import make_toolbox
    from coevo.evolution.problem import build
    from coevo.evolution.variation import CellData, vary_cells

    cfg = config.load(None, tiny_overrides + ["prune.operator=random", "prune.probability=1", "prune.amount=0.2",
                                              "prune.regrow=true", "prune.target_kept=0", "prune.reset_fraction=0",
                                              "train.learning_rate=1e-9"])
    problem = build(cfg)
    enc, dec = problem.fresh_stacks(4)
    zero = torch.as_tensor(np.random.default_rng(0).random(enc.params.shape) < 0.5)
    enc.params.masked_fill_(zero, 0.0)  # half of every encoder already zero, masks alive (as after earlier prunes)
    cells = np.arange(4)
    v = vary_cells(enc, dec, cells, cells, cells, np.full(4, 1e-9), 1.0, 0, CellData(problem.train, cfg),
                   make_toolbox(cfg).mutate, "random")
    assert v.pruned.all() and bool(v.encoders.mask.all()) and bool(v.decoders.mask.all())
    newly = (v.encoders.params == 0) & ~zero  # training moves every weight (Adam's step): exact zeros are the prune's
    # drawn among every entry, 0.2 of the non-zero half goes; a draw of amount x size among the non-zero
    # entries only would take 0.4 of them
    share = float(newly.sum()) / float((~zero).sum())
    assert 0.15 < share < 0.25


def test_reference_preset_pins_the_references_pruning(tmp_path, capsys):
    """The semantics the paper's numbers depend on: regrowth with the reference's per-tensor draw,
    no protection rule, no exploration reset, no target, the exponential schedule at p 0.5."""
    ref = config.load(None, [], preset="reference")
    assert (ref.prune.regrow, ref.prune.keep_inputs, ref.prune.target_kept, ref.prune.grow_fraction) == \
        (True, False, 0.0, 0.0)
    assert ref.prune.reset_fraction_for(ref.run.mode, ref.selection.objectives) == 0.0
    assert (ref.prune.schedule, ref.prune.probability, ref.prune.amount, ref.train.bce_weight) == \
        ("exponential", 0.5, 0.1, 0.0)
