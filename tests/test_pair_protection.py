"""Protection over the pair, and targets that hold (issue 29).

An encoder and a decoder that are each connected can still be cut in two at the latent layer:
the encoder keeps a path to latent unit 0 only, the decoder reads latent unit 1 only, and the
pair outputs a constant. The rules, the measure and ``prune.target_kept`` all look at the pair.
"""

import csv
import json

import numpy as np
import pytest
import torch

from coevo import operators, runner
from coevo.config import Config
from coevo.errors import OperatorError
from coevo.evolution import variation
from coevo.population import Stack
from coevo.genome import Decoder, Encoder, autoencoder_layouts, init_params
from coevo.measures import kept_fractions, stack_kept_fractions
from coevo.operators import selector
from coevo.operators.protection import connected, masks_of, pair_connected, partner_reach


def _pair(n_dims: int = 6, hidden: int = 4, latent: int = 3, seed: int = 0) -> tuple[Stack, Stack]:
    enc_l, dec_l = autoencoder_layouts(n_dims, [hidden], latent)
    rng = np.random.default_rng(seed)
    return Stack.fresh(enc_l, init_params(enc_l, 1, rng)), Stack.fresh(dec_l, init_params(dec_l, 1, rng))


def _read_only_latent(dec: Stack, unit: int) -> None:
    """The decoder's first layer reads latent ``unit`` only."""
    (w, _b), _ = dec.layout.split(dec.mask[0])
    keep = w[:, unit].clone()
    w[...] = False
    w[:, unit] = keep


def _masks(stack: Stack) -> list:
    return [(w, b) for w, b in stack.layout.split(stack.mask[0].numpy())]


def test_a_pair_cut_at_the_latent_layer_counts_nothing_but_its_output_biases():
    enc, dec = _pair()
    (ew, eb), (lw, lb) = enc.layout.split(enc.mask[0])
    lw[1:] = False  # the encoder's paths end at latent 0 only
    lb[1:] = False
    _read_only_latent(dec, 1)
    assert connected(_masks(enc)) and connected(_masks(dec))  # each network alone passes
    assert not pair_connected(_masks(enc), _masks(dec))
    got = stack_kept_fractions(enc, dec)
    n_outputs = dec.layout.layers[-1].fan_out
    total = enc.layout.size + dec.layout.size
    assert got.latent[0] == 0
    assert got.kept[0] == pytest.approx(n_outputs / total)  # the constant's output biases only
    # connect them again through latent 0: the path counts
    dec.mask.fill_(True)
    _read_only_latent(dec, 0)
    assert pair_connected(_masks(enc), _masks(dec)) and stack_kept_fractions(enc, dec).latent[0] == 1


@pytest.mark.parametrize("unit", ["weight", "neuron"])
def test_the_selector_keeps_a_path_through_the_latent_unit_the_decoder_reads(unit):
    enc, dec = _pair()
    _read_only_latent(dec, 2)
    net = enc.network(0, Encoder)
    net.partner_reach = partner_reach("encoder", _masks(dec))
    assert net.partner_reach.tolist() == [False, False, True]
    # latent unit 2 scores lowest: a per-network rule would cut it first and keep 0 or 1
    scores = [np.ones(4), np.array([5.0, 5.0, -1.0])]
    selector.prune(net, scores, 0.99, np.random.default_rng(1), scope="global", unit=unit)
    new = masks_of(net)
    assert connected(new, sinks=net.partner_reach)
    assert pair_connected(new, _masks(dec))


def test_the_selector_keeps_a_path_from_the_latent_unit_the_encoder_reaches():
    enc, dec = _pair()
    (ew, eb), (lw, lb) = enc.layout.split(enc.mask[0])
    lw[[0, 2]] = False  # the encoder's inputs reach latent 1 only (its bias rows stay: a constant)
    net = dec.network(0, Decoder)
    net.partner_reach = partner_reach("decoder", _masks(enc))
    assert net.partner_reach.tolist() == [False, True, False]
    scores = [selector.EntryScores(np.where(np.arange(3)[None, :] == 1, -1.0, 1.0) * np.ones((4, 3)), None),
              selector.EntryScores(np.ones((6, 4)), None)]
    selector.prune(net, scores, 0.95, np.random.default_rng(2), scope="global", unit="weight")
    assert pair_connected(_masks(enc), masks_of(net))


def test_store_masks_refuses_an_operator_that_cuts_the_pair_in_two():
    enc, dec = _pair()
    _read_only_latent(dec, 1)
    net = enc.network(0, Encoder)
    latent = net.layers[-1]
    latent.weight_mask[1:] = False  # keeps latent 0, alone a valid encoder
    latent.bias_mask[1:] = False
    reach = partner_reach("encoder", _masks(dec))
    enc.store_masks(0, enc.network(0, Encoder), "cutter", partner=reach)  # unchanged: fine
    with pytest.raises(OperatorError, match=r"'cutter'.*cut in two at the latent layer"):
        enc.store_masks(0, net, "cutter", partner=reach)
    enc.store_masks(0, net, "cutter")  # judged alone (no partner given), it passes: the old rule


def _pair_cutter(net, amount, rng, context):
    """Per network a valid cut: the encoder keeps latent 0, the decoder reads latent 1."""
    if net.role == "encoder":
        net.layers[-1].weight_mask[1:] = False
        net.layers[-1].bias_mask[1:] = False
    else:
        keep = net.layers[0].weight_mask[:, 1].copy()
        net.layers[0].weight_mask[...] = False
        net.layers[0].weight_mask[:, 1] = keep
    return net


operators.register("test_pair_cutter")(_pair_cutter)


def test_a_users_operator_that_cuts_the_pair_fails_the_run_in_one_line(tmp_path):
    cfg = Config().replace(data__n_dims=20, data__rows_per_cluster=4, grid__cells=3, run__generations=2,
                           prune__operator="test_pair_cutter", prune__schedule="fixed", prune__probability=1.0,
                           prune__target_kept=0.0)
    with pytest.raises(OperatorError, match="test_pair_cutter.*cut in two"):
        runner.start(cfg, out=tmp_path / "run", quiet=True)


def _small(**overrides) -> Config:
    base = dict(data__n_dims=200, data__rows_per_cluster=20, grid__cells=4, run__generations=15,
                prune__schedule="fixed", prune__probability=1.0)
    base.update(overrides)
    return Config().replace(**base)


def _logbook(run_dir) -> list[dict]:
    with open(run_dir / "logbook.csv") as f:
        return list(csv.DictReader(f))


def test_snap_keeps_a_latent_unit_on_a_path_in_every_generation(tmp_path):
    # the run: at amount 0.3 with no target SNAP cut the pairs in two by generation 16
    cfg = _small(run__generations=20, prune__operator="snap", prune__amount=0.3, prune__target_kept=0.0)
    run_dir = runner.start(cfg, out=tmp_path / "snap", quiet=True)
    rows = _logbook(run_dir)
    assert float(rows[-1]["kept_mean"]) < 0.1  # it did prune hard
    assert all(float(r["latent_alive_mean"]) >= 1 for r in rows)
    assert all(float(r["latent_alive_best"]) >= 1 for r in rows)


@pytest.mark.parametrize("operator, target", [("snap", 0.3), ("magnitude", 0.02)])
def test_no_pair_ends_a_mutation_below_the_target(tmp_path, operator, target):
    # whole neurons (snap) take more entries than the amount says; the guard bisects the amount
    cfg = _small(prune__operator=operator, prune__amount=0.5, prune__target_kept=target)
    run_dir = runner.start(cfg, out=tmp_path / operator, quiet=True)
    enc_l, dec_l = autoencoder_layouts(200, list(cfg.model.hidden), cfg.model.latent)
    floor = target - variation.target_tolerance(enc_l, dec_l)
    rows = _logbook(run_dir)
    assert float(rows[-1]["kept_mean"]) < target + 0.02  # it reached the target
    assert min(float(r["kept_mean"]) for r in rows) >= floor
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["kept_fraction"] >= floor


def test_within_target_bisects_to_an_amount_that_holds_and_leaves_the_pair_as_it_was_otherwise():
    enc, dec = _pair(n_dims=40, hidden=10, latent=4)
    total = enc.layout.size + dec.layout.size
    calls = []

    def attempt(amount):  # cuts 10 entries per 0.1 of amount from the decoder's output layer weights
        calls.append(amount)
        (_, _), (w, _b) = dec.layout.split(dec.mask[0])
        flat = w.reshape(-1)
        alive = torch.nonzero(flat).flatten()
        flat[alive[: int(round(amount * 100))]] = False
        return {"cut"}

    before = stack_kept_fractions(enc, dec).kept[0]
    floor = before - 25 / total
    got = variation.within_target(attempt, 1.0, enc, dec, 0, floor)
    after = stack_kept_fractions(enc, dec).kept[0]
    assert got == {"cut"} and calls[:2] == [1.0, 0.0]
    assert floor <= after <= before - 20 / total  # the largest cut that holds, to within 1/64 of the amount
    mask = dec.mask.clone()
    assert variation.within_target(lambda a: (dec.mask.fill_(False), {"x"})[1], 0.5, enc, dec, 0, 1.0) is None
    assert torch.equal(dec.mask, mask)  # nothing holds: the pair is as it was


def test_kept_fractions_of_a_pair_agree_with_the_pair_rule_on_random_masks():
    enc_l, dec_l = autoencoder_layouts(10, [6], 3)
    rng = np.random.default_rng(4)
    for _ in range(50):
        e = rng.random((1, enc_l.size)) < 0.3
        d = rng.random((1, dec_l.size)) < 0.3
        em = [(w, b) for w, b in enc_l.split(e[0])]
        dm = [(w, b) for w, b in dec_l.split(d[0])]
        assert (kept_fractions(enc_l, e, dec_l, d).latent[0] >= 1) == pair_connected(em, dm)
