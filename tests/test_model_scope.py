"""Scope 'model': the whole autoencoder ranked in one list (encoder and decoder together), the
encoder's scores weighed by encoder_scale."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from coevo import operators
from coevo.cli import main
from coevo.config import PruneConfig
from coevo.operators import PruneContext
from coevo.operators.protection import connected, masks_of
from coevo.operators.selector import model_shares
from tests.conftest import TINY
from tests.test_pruning_core import network


def pair(seed: int = 0):
    enc = network("encoder", [40, 12, 4], seed)
    dec = network("decoder", [4, 12, 40], seed + 1)
    return enc, dec


def context_of(enc, dec) -> PruneContext:
    """A context whose partner is a snapshot of the pair before the mutation, as coevo's is."""
    copies = {"encoder": copy.deepcopy(enc), "decoder": copy.deepcopy(dec)}
    return PruneContext(0, PruneConfig(), networks=lambda role: copies[role])


def alive(net) -> int:
    return sum(int(l.weight_mask.sum() + l.bias_mask.sum()) for l in net.layers)


def test_a_model_ranking_prunes_the_pair_s_lowest_entries_together():
    enc, dec = pair()
    for layer in dec.layers:  # the decoder's entries are larger: a joint ranking takes the encoder's first
        layer.weight = layer.weight * 4
        layer.bias = layer.bias * 4
    before = alive(enc) + alive(dec), alive(enc), alive(dec)
    op = operators.registry.get("magnitude", {"scope": "model"})
    context = context_of(enc, dec)
    rng = np.random.default_rng(0)
    op(enc, 0.4, rng, context)
    op(dec, 0.4, rng, context)
    gone_enc, gone_dec = before[1] - alive(enc), before[2] - alive(dec)
    assert abs((gone_enc + gone_dec) - 0.4 * before[0]) <= 2  # the amount is the pair's
    assert gone_enc / before[1] > 0.6 and gone_dec / before[2] < 0.2  # and lands where the scores are low
    assert connected(masks_of(enc)) and connected(masks_of(dec))


def test_shares_follow_the_joint_ranking_and_uniform_scores_split_evenly():
    enc, dec = pair(3)
    scores = [[operators.EntryScores(np.full(l.weight.shape, v), np.full(l.bias.shape, v)) for l in n.layers]
              for n, v in ((enc, 1.0), (dec, 2.0))]
    shares = model_shares([(enc, scores[0]), (dec, scores[1])], 0.3, np.random.default_rng(0))
    assert shares[1] == 0.0 and 0.3 < shares[0] < 0.7  # every lowest entry is the encoder's
    assert model_shares([(enc, None), (dec, None)], 0.3, np.random.default_rng(0)) == [0.3, 0.3]


def test_a_model_ranking_of_neurons_cuts_where_the_norms_are_low():
    enc, dec = pair(4)
    for layer in dec.layers:
        layer.weight = layer.weight * 50
    op = operators.registry.get("magnitude", {"scope": "model", "unit": "neuron", "encoder_scale": 1.0})
    context = context_of(enc, dec)
    rng = np.random.default_rng(0)
    before = [l.alive_neurons().sum() for l in enc.layers], [l.alive_neurons().sum() for l in dec.layers]
    op(enc, 0.3, rng, context)
    op(dec, 0.3, rng, context)
    cut_enc = sum(b - l.alive_neurons().sum() for b, l in zip(before[0], enc.layers))
    cut_dec = sum(b - l.alive_neurons().sum() for b, l in zip(before[1], dec.layers))
    assert cut_enc > 0 and cut_dec == 0
    assert connected(masks_of(enc)) and connected(masks_of(dec))


def test_encoder_scale_moves_the_split_towards_the_encoder():
    pruned = []
    for scale in (1.0, 0.25):
        enc, dec = pair(5)
        n_enc = alive(enc)
        op = operators.registry.get("magnitude", {"scope": "model", "encoder_scale": scale})
        context = context_of(enc, dec)
        rng = np.random.default_rng(1)
        op(enc, 0.3, rng, context)
        op(dec, 0.3, rng, context)
        pruned.append(n_enc - alive(enc))
    assert pruned[1] > pruned[0]


@pytest.mark.parametrize("params, message", [
    ({"scope": "layer", "encoder_scale": 0.5}, "needs scope 'model'"),
    ({"scope": "model", "encoder_scale": 0.0}, "encoder_scale must be > 0"),
])
def test_bad_model_settings_are_refused_with_the_fix(params, message):
    with pytest.raises(Exception, match=message):
        operators.registry.get("magnitude", params)


def test_a_model_scope_run_reaches_its_target(tmp_path, capsys):
    args = TINY + ["run.generations=6", "prune.operator=magnitude", "prune.params.scope=model",
                   "prune.params.encoder_scale=0.5", "prune.probability=1", "prune.amount=0.3", "prune.target_kept=0.4",
                   "run.save_centres=true"]
    run = tmp_path / "run"
    assert main(["run", "--quiet", "--out", str(run), *[x for o in args for x in ("--set", o)]]) == 0
    capsys.readouterr()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["kept_fraction"] <= 0.45
