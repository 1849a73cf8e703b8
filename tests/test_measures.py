"""Kept fractions that count only live entries (coevo.measures), and the unit rule of the contract."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from coevo.cli import main
from coevo.config import PruneConfig
from coevo.errors import OperatorError
from coevo.population import Stack
from coevo.genome import Decoder, Encoder, LayerSpec, Layout, autoencoder_layouts, init_params
from coevo.measures import compact_size, kept_fractions, live_entries
from coevo.operators import sparing_units
from coevo.operators.base import PruneContext
from coevo.operators.conjunctive import Conjunctive
from coevo.operators.random_pruning import random_prune


def _graph_count(layers: list[tuple[np.ndarray, np.ndarray]]) -> tuple[int, int]:
    """Live entries of a chain of (weight alive, bias alive) layers by explicit graph search:
    nodes are (layer boundary, unit); a weight is live when a path of alive weights from an input
    unit runs through it to an output unit, a bias when its unit lies on such a path or is an
    output unit. Returns (live entries, all entries)."""
    edges: dict[tuple, list[tuple]] = {}
    starts = {(0, j) for j in range(layers[0][0].shape[1])}
    for l, (w, b) in enumerate(layers):
        for i, j in zip(*np.nonzero(w)):
            edges.setdefault((l, int(j)), []).append((l + 1, int(i)))

    def closure(seeds, step):
        seen, todo = set(seeds), list(seeds)
        while todo:
            for nxt in step(todo.pop()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reverse: dict[tuple, list[tuple]] = {}
    for src, dsts in edges.items():
        for dst in dsts:
            reverse.setdefault(dst, []).append(src)
    last = len(layers)
    reached = closure(starts, lambda n: edges.get(n, []))
    useful = closure({(last, i) for i in range(layers[-1][0].shape[0])}, lambda n: reverse.get(n, []))
    live = total = 0
    for l, (w, b) in enumerate(layers):
        total += w.size + b.size
        live += sum((l, int(j)) in reached and (l + 1, int(i)) in useful for i, j in zip(*np.nonzero(w)))
        live += sum((l + 1, int(i)) in useful and ((l + 1, int(i)) in reached or l + 1 == last)
                    for i in np.flatnonzero(b))
    return live, total


def test_live_entries_on_a_hand_made_chain():
    # 3 inputs -> 2 hidden -> 2 outputs. Hidden 1 has no incoming weight and no bias: nothing
    # reaches it, so its outgoing weight is dead. Hidden 0 reaches output 0 only.
    w1 = np.array([[1, 1, 0], [0, 0, 0]], bool)
    b1 = np.array([0, 0], bool)
    w2 = np.array([[1, 1], [0, 0]], bool)
    b2 = np.array([0, 1], bool)
    layout = Layout((LayerSpec(3, 2, "relu"), LayerSpec(2, 2, "sigmoid")))
    alive = np.concatenate([w1.ravel(), b1, w2.ravel(), b2])[None]
    live = live_entries(layout, alive)
    (lw1, lb1), (lw2, lb2) = layout.split(live[0])
    assert lw1.tolist() == [[True, True, False], [False, False, False]]
    assert lw2.tolist() == [[True, False], [False, False]]  # hidden 1 is reached by nothing
    assert lb2.tolist() == [False, True]
    assert live.sum() == 4 and alive.sum() == 5
    # compact: hidden 1 is removed; inputs and outputs stay: 3x1 + 1 + 1x2 + 2
    assert compact_size(layout, alive).tolist() == [3 * 1 + 1 + 1 * 2 + 2]


def test_constant_neurons_fold_into_the_next_bias():
    layout = Layout((LayerSpec(2, 2, "relu"), LayerSpec(2, 1, "sigmoid")))
    # hidden 0 driven by input 0; hidden 1 only by its bias (a constant the output bias could hold):
    # not on an input -> output path, so its bias and outgoing weight do not count, and compact folds it
    alive = np.array([[1, 0, 0, 0, 0, 1, 1, 1, 1]], bool)
    assert live_entries(layout, alive).sum() == 3  # w[0,0], hidden 0's outgoing weight, the output bias
    assert compact_size(layout, alive).tolist() == [2 * 1 + 1 + 1 * 1 + 1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_live_count_equals_a_graph_search_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    enc_l, dec_l = autoencoder_layouts(12, [5], 3)
    enc_alive = rng.random((2, enc_l.size)) < 0.35
    dec_alive = rng.random((2, dec_l.size)) < 0.35
    got = kept_fractions(enc_l, enc_alive, dec_l, dec_alive)
    for k in range(2):
        layers = [(w, b) for w, b in enc_l.split(enc_alive[k])] + [(w, b) for w, b in dec_l.split(dec_alive[k])]
        live, total = _graph_count(layers)
        assert got.kept[k] == pytest.approx(live / total)
        assert got.mask_kept[k] == pytest.approx((enc_alive[k].sum() + dec_alive[k].sum()) / total)
        assert got.kept[k] <= got.mask_kept[k] and got.compact[k] > 0


def test_summary_kept_fraction_equals_an_independent_count_from_best_pt(tmp_path, tiny_overrides, capsys):
    out = tmp_path / "run"
    sets = tiny_overrides + ["prune.operator=conjunctive", "prune.probability=1", "prune.amount=0.5",
                             "run.generations=4"]
    assert main(["run", "--quiet", "--out", str(out), *[x for o in sets for x in ("--set", o)]]) == 0
    summary = json.loads((out / "summary.json").read_text())
    model = torch.load(out / "best.pt", weights_only=True)
    layers = []
    for part in ("encoder", "decoder"):
        net = model[part]
        for i in range(len([n for n in net if n.endswith(".weight")])):
            w, b = net[f"{2 * i}.weight"], net[f"{2 * i}.bias"]
            layers.append(((net[f"{2 * i}.weight_mask"] & (w != 0)).numpy(),
                           (net[f"{2 * i}.bias_mask"] & (b != 0)).numpy()))
    live, total = _graph_count(layers)
    assert summary["kept_fraction"] == pytest.approx(live / total)
    mask_alive = sum(int(t.sum()) for net in model.values() for n, t in net.items() if n.endswith("_mask"))
    assert summary["mask_kept_fraction"] == pytest.approx(mask_alive / total)
    assert summary["kept_fraction"] < summary["mask_kept_fraction"]  # conjunctive leaves dead weight
    assert 0 < summary["compact_fraction"] <= summary["mask_kept_fraction"]


def _pair(n_dims=30, seed=0):
    enc_l, dec_l = autoencoder_layouts(n_dims, [6], 3)
    rng = np.random.default_rng(seed)
    return (Stack.fresh(enc_l, init_params(enc_l, 1, rng)), Stack.fresh(dec_l, init_params(dec_l, 1, rng)))


@pytest.mark.parametrize("operator", [random_prune, Conjunctive(threshold=0.5)], ids=["random", "conjunctive"])
def test_builtin_operators_never_cut_an_input_or_output_unit(operator):
    enc, dec = _pair()
    rng = np.random.default_rng(3)
    acts_rng = np.random.default_rng(4)
    record = lambda: {"encoder": [acts_rng.random((20, 6)), acts_rng.random((20, 3))],  # noqa: E731
                      "decoder": [acts_rng.random((20, 6)), acts_rng.random((20, 30))]}
    for _ in range(40):  # prune hard, many times: without sparing, units would be cut
        context = PruneContext(0, PruneConfig(), record)
        for stack, cls in ((enc, Encoder), (dec, Decoder)):
            net = stack.network(0, cls)
            operator(net, 0.6, rng, context)
            stack.store_masks(0, net, "test")  # raises if a unit were cut
    (w_in, _), = enc.layout.split(enc.mask[0].numpy())[:1]
    assert w_in.any(axis=0).all()
    w_out, b_out = dec.layout.split(dec.mask[0].numpy())[-1]
    assert (w_out.any(axis=1) | b_out).all()
    assert enc.mask.float().mean() < 0.5  # it did prune


def test_the_contract_refuses_an_operator_that_cuts_an_output_unit():
    enc, dec = _pair()
    net = dec.network(0, Decoder)
    net.layers[-1].weight_mask[7, :] = False
    net.layers[-1].bias_mask[7] = False
    with pytest.raises(OperatorError, match="output unit 7"):
        dec.store_masks(0, net, "cutter")
    net = enc.network(0, Encoder)
    net.layers[0].weight_mask[:, 4] = False
    with pytest.raises(OperatorError, match="input unit 4"):
        enc.store_masks(0, net, "cutter")


def test_sparing_units_hides_one_entry_per_unit_and_gives_it_back():
    enc, dec = _pair()
    layer = dec.network(0, Decoder).layers[-1]
    before = layer.weight_mask.sum() + layer.bias_mask.sum()
    with sparing_units(layer, np.random.default_rng(0)):
        hidden = before - (layer.weight_mask.sum() + layer.bias_mask.sum())
        layer.weight_mask[:] = False  # an operator that prunes everything it sees
        layer.bias_mask[:] = False
    assert hidden == 30  # one per output unit
    assert ((layer.weight_mask.sum(axis=1) + layer.bias_mask) == 1).all()
