"""FLIPOUT and EARLY_BIRD: their criteria against direct computations, their state through a run."""

import json

import numpy as np
import pytest
import torch

from coevo import config, operators, runner
from coevo.cli import main
from coevo.config import PruneConfig
from coevo.errors import OperatorError
from coevo.population import Stack
from coevo.genome import Decoder, Encoder, autoencoder_layouts, init_params
from coevo.measures import live_entries
from coevo.operators.base import PruneContext
from coevo.operators.early_bird import WINDOW, neuron_scales
from coevo.operators.flipout import flipout_scores
from conftest import TINY


def _net(cls=Encoder, flips=True, seed=0, pruned=0.3, memory=0, layout=None):
    rng = np.random.default_rng(seed)
    layout = layout or autoencoder_layouts(40, [12], 5)[0 if cls is Encoder else 1]
    stack = Stack.fresh(layout, init_params(layout, 1, rng), flips=flips, memory=memory)
    stack.mask &= torch.as_tensor(rng.random(stack.mask.shape) > pruned)
    if cls is Encoder:  # every input unit keeps a weight
        for w, _ in layout.split(stack.mask[0])[:1]:
            w[0, :] = True
    else:  # every output unit keeps its bias
        layout.split(stack.mask[0])[-1][1][:] = True
    stack.apply_masks()
    if flips:
        stack.flips += torch.as_tensor(rng.integers(0, 6, stack.flips.shape), dtype=torch.float32) * stack.mask
    return stack, stack.network(0, cls)


def _context():
    return PruneContext(3, PruneConfig(), declared_events=("early_bird",))


@pytest.mark.parametrize("cls", [Encoder, Decoder])
def test_flipout_prunes_exactly_the_lowest_scores(cls):
    stack, net = _net(cls)
    before = [l.weight_mask.copy() for l in net.layers]
    biases = [l.bias_mask.copy() for l in net.layers]
    scores = [flipout_scores(l.weight, l.weight_flips) for l in net.layers]
    alive = sum(int(m.sum()) for m in before)
    operators.registry.get("flipout")(net, 0.4, np.random.default_rng(1), _context())
    stack.store_masks(0, net, "flipout")  # the contract holds: no unit cut, no layer emptied
    cut = [b & ~l.weight_mask for b, l in zip(before, net.layers)]
    n_cut = sum(int(c.sum()) for c in cut)
    assert abs(n_cut - 0.4 * alive) <= 1  # global: the amount is of all the network's alive weights
    highest_cut = max(s[c].max() for s, c in zip(scores, cut) if c.any())
    survivors = np.concatenate([s[l.weight_mask & b] for s, l, b in zip(scores, net.layers, before)])
    # every survivor scores at least as high as any pruned weight, except the few spared ones
    # (one entry of each input/output unit, the best weight of each layer)
    spared = int((survivors < highest_cut).sum())
    units = net.layers[0].weight.shape[1] if cls is Encoder else net.layers[-1].weight.shape[0]
    assert spared <= units
    assert all((l.bias_mask == b).all() for l, b in zip(net.layers, biases))  # include_bias=False: biases stay


def test_flipout_counts_flips_against_magnitude():
    """Two weights of equal magnitude: the one that flipped more goes first."""
    stack, net = _net(Decoder, pruned=0.0)
    layer = net.layers[0]
    flips = np.zeros_like(layer.weight_flips)
    flips[0, 0] = 9.0
    weight = np.full_like(layer.weight, 0.5)
    weight[1, 1] = 0.1
    for other in net.layers:
        other.weight_flips = np.zeros_like(other.weight)
        other.weight = np.ones_like(other.weight)
    layer.weight, layer.weight_flips = weight, flips
    operators.registry.get("flipout")(net, 2 / sum(l.weight.size for l in net.layers), np.random.default_rng(0),
                                      _context())
    assert not layer.weight_mask[0, 0] and not layer.weight_mask[1, 1]  # 0.25/10 and 0.01/1: the two lowest
    assert layer.weight_mask.sum() == layer.weight.size - 2


def test_flipout_never_empties_a_layer():
    stack, net = _net(Encoder)
    operators.registry.get("flipout")(net, 1.0, np.random.default_rng(0), _context())
    stack.store_masks(0, net, "flipout")
    assert all(l.weight_mask.any() for l in net.layers)


def test_flipout_without_flip_counts_is_a_clear_error():
    _, net = _net(Encoder, flips=False)
    with pytest.raises(ValueError, match="sign-flip counts"):
        operators.registry.get("flipout")(net, 0.5, np.random.default_rng(0), _context())


def _early_bird_call(stack, cls, amount=0.3, seed=0, context=None):
    net = stack.network(0, cls)
    context = context or _context()
    operators.registry.get("early_bird")(net, amount, np.random.default_rng(seed), context)
    stack.store_masks(0, net, "early_bird")
    return context


@pytest.mark.parametrize("cls", [Encoder, Decoder])
def test_early_bird_cuts_the_lowest_scale_neurons_once_the_masks_agree(cls):
    size = operators.needs_of(operators.registry.lookup("early_bird")).memory_size
    stack, net = _net(cls, flips=False, memory=size(autoencoder_layouts(40, [12], 5)[0 if cls is Encoder else 1]))
    scales = neuron_scales(net)
    before = stack.mask.clone()
    for call in range(WINDOW - 1):  # the same weights each time: the same candidate mask
        context = _early_bird_call(stack, cls)
        assert torch.equal(stack.mask, before) and not context.events
        assert stack.memory[0, 0] == call + 1
    context = _early_bird_call(stack, cls)
    assert context.events == {"early_bird"}
    assert stack.memory[0, 0] == 0  # the next ticket starts a new history
    after = stack.network(0, cls)
    prunable = range(len(after.layers) - (cls is Decoder))
    cut = [np.flatnonzero(net.layers[i].alive_neurons() & ~after.layers[i].alive_neurons()) for i in prunable]
    alive = sum(int(net.layers[i].alive_neurons().sum()) for i in prunable)
    assert 0 < sum(len(c) for c in cut) <= round(0.3 * alive) + 1
    for i, c in zip(prunable, cut):
        kept = np.flatnonzero(after.layers[i].alive_neurons())
        assert len(kept) >= 1 and len(c) <= 0.8 * net.layers[i].alive_neurons().sum()
        assert not after.layers[i].weight_mask[c].any() and not after.layers[i].bias_mask[c].any()
    # the threshold is global and each layer's cut a prefix of its scale order: within a layer,
    # every cut neuron scores below every kept one (bar neurons kept for an input unit)
    for i, c in zip(prunable, cut):
        if len(c) and not (cls is Encoder and i == 0):
            kept = np.flatnonzero(after.layers[i].alive_neurons())
            assert scales[i][c].max() <= scales[i][kept].min()


def test_an_early_bird_decoder_whose_masks_differ_does_not_fire():
    # the decoder's 1,000 output units are never cut; compared with the rest, they made every
    # decoder's candidate masks agree within 0.012 (< distance 0.1) and fire on its 5th call
    size = operators.needs_of(operators.registry.lookup("early_bird")).memory_size
    layout = autoencoder_layouts(1000, [30], 10)[1]
    stack, _ = _net(Decoder, flips=False, memory=size(layout), layout=layout)
    for call in range(3 * WINDOW):  # new weights every call: candidate masks that disagree
        rng = np.random.default_rng(100 + call)
        with torch.no_grad():
            stack.params[0] = torch.as_tensor(rng.normal(size=stack.params.shape[1]), dtype=stack.params.dtype)
            stack.params[0] *= stack.mask[0]
        context = _early_bird_call(stack, Decoder, seed=call)
        assert not context.events, f"fired on call {call}"
    net = stack.network(0, Decoder)
    assert all(l.alive_neurons().all() for l in net.layers)


def test_an_undeclared_event_is_an_operator_error():
    with pytest.raises(OperatorError, match="was not declared"):
        PruneContext(0, PruneConfig()).event("early_bird")


@pytest.mark.parametrize("operator, extra", [
    ("flipout", ["prune.amount=0.5", "prune.schedule=every", "prune.schedule_params.k=2", "train.gradient_noise=1.0"]),
    ("early_bird", ["prune.amount=0.3", "prune.probability=1.0", "train.scale_l1=1e-4",
                    "train.scale_l1_latent=1e-3"]),
])
@pytest.mark.parametrize("mode", ["coevolution", "canonical"])
def test_masks_stay_zero_and_state_reaches_the_summary(tmp_path, operator, extra, mode):
    cfg = config.load(None, TINY + ["run.generations=8", f"run.mode={mode}", f"prune.operator={operator}",
                                    "prune.target_kept=0", "run.save_centres=true"] + extra)
    run_dir = runner.start(cfg, tmp_path / "run", quiet=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    centres = torch.load(run_dir / "centres.pt")
    for net in centres["encoders"] + centres["decoders"]:
        for name, value in net.items():
            if name.endswith("weight") or name.endswith("bias"):
                assert torch.all(value[~net[name + "_mask"]] == 0), name
    assert summary["kept_fraction"] < 0.99
    assert 1 <= summary["latent_alive"] <= 3
    if operator == "early_bird":
        first = summary["early_bird_generation"]  # p = 1: called every generation, WINDOW masks at the earliest
        assert WINDOW - 1 <= first <= 7
        rows = (run_dir / "logbook.csv").read_text().splitlines()
        header = rows[0].split(",")
        column = [int(r.split(",")[header.index("early_bird_generation")]) for r in rows[1:]]
        assert column == [-1] * first + [first] * (8 - first)
    else:
        assert "early_bird_generation" not in summary


def test_an_operator_that_replaces_its_memory_is_refused():
    stack, net = _net(Encoder, memory=3)
    net.memory = [1.0, 2.0]
    with pytest.raises(OperatorError, match="net.memory"):
        stack.store_masks(0, net, "mine")


def test_live_latent_count_follows_cut_latent_neurons():
    from coevo.measures import stack_kept_fractions

    rng = np.random.default_rng(0)
    enc_l, dec_l = autoencoder_layouts(20, [8], 4)
    enc = Stack.fresh(enc_l, init_params(enc_l, 2, rng))
    dec = Stack.fresh(dec_l, init_params(dec_l, 2, rng))
    w, b = enc_l.split(enc.mask[1])[-1]
    w[:2] = False  # two latent neurons of pair 1 lose their weights; their biases make them constants
    assert list(stack_kept_fractions(enc, dec).latent) == [4, 2]
    assert live_entries(enc_l + dec_l, np.ones((1, enc_l.size + dec_l.size), bool)).all()
