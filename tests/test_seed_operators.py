"""Issue 11: the seed papers' operators (snip, snap, merge), context.gradients, Network.fold_neuron
and the geometric schedule, each checked against a direct computation."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from coevo import config, operators, runner, schedules
from coevo.config import PruneConfig
from coevo.errors import OperatorError
from coevo.evolution.context import pair_context
from coevo.population import Stack
from coevo.genome import Decoder, Encoder, Layer, Network, autoencoder_layouts, init_params
from coevo.observers import Observer
from coevo.operators.base import LayerGradients, PruneContext
from coevo.operators.merge import merge_prune, merge_saliency
from coevo.operators.snap import snap_prune, snap_scores
from coevo.operators.snip import snip_prune, snip_scores

from conftest import TINY

D, HIDDEN, LATENT, CASES = 12, [7], 3, 9


def pair(seed: int = 0, alive: float = 0.8) -> tuple[Stack, Stack, torch.Tensor]:
    """One encoder/decoder pair (D -> 7 -> 3 -> 7 -> D), partly pruned, and binary rows."""
    rng = np.random.default_rng(seed)
    enc_l, dec_l = autoencoder_layouts(D, HIDDEN, LATENT)
    enc = Stack.fresh(enc_l, init_params(enc_l, 1, rng) * 2)
    dec = Stack.fresh(dec_l, init_params(dec_l, 1, rng) * 2)
    for stack in (enc, dec):
        stack.mask &= torch.as_tensor(rng.random(stack.mask.shape) < alive)
        for wm, bm in stack.layout.split(stack.mask[0]):
            wm[:, 0] = True  # every input and output unit keeps an entry
            bm[:] = True  # and every neuron is alive
        stack.params.mul_(stack.mask)  # pruned weights are stored as exact zeros, as in a run
    x = torch.as_tensor(rng.random((CASES, D)) < 0.5, dtype=torch.float32)
    return enc, dec, x


def context_of(enc: Stack, dec: Stack, x: torch.Tensor, loss: str = "l1") -> PruneContext:
    return pair_context(enc, dec, 0, 0, PruneConfig(cases=CASES), loss, lambda: x)


def autograd_reference(enc: Stack, dec: Stack, x: torch.Tensor, loss: str) -> dict[str, list[dict]]:
    """dL/dW, dL/db of torch.nn.Linear layers holding the masked weights, and dL/dc from the
    pre-activations' gradients (sum over cases of delta * z), with torch's own loss functions."""
    out = {}
    h = x.double()
    linears = {}
    for role, stack in (("encoder", enc), ("decoder", dec)):
        mods = []
        for spec, (w, b), (wm, bm) in zip(stack.layout.layers, stack.layout.split(stack.params[0]),
                                          stack.layout.split(stack.mask[0])):
            lin = torch.nn.Linear(spec.fan_in, spec.fan_out).double()
            with torch.no_grad():
                lin.weight.copy_(w * wm)
                lin.bias.copy_(b * bm)
            mods.append((lin, spec.activation))
        linears[role] = mods
    zs = []
    for role in ("encoder", "decoder"):
        for lin, act in linears[role]:
            z = lin(h)
            z.retain_grad()
            zs.append(z)
            h = torch.relu(z) if act == "relu" else torch.sigmoid(z)
    target = x.double()
    if loss == "l1":
        value = F.l1_loss(h, target)
    elif loss == "mse":
        value = F.mse_loss(h, target)
    else:
        value = F.binary_cross_entropy(h, target)
    value.backward()
    k = 0
    for role in ("encoder", "decoder"):
        out[role] = []
        for lin, _ in linears[role]:
            z = zs[k]
            out[role].append({"weight": lin.weight.grad.numpy(), "bias": lin.bias.grad.numpy(),
                              "gate": (z.grad * z).sum(dim=0).detach().numpy(), "loss": float(value.detach())})
            k += 1
    return out


# ---------------------------------------------------------------- context.gradients

@pytest.mark.parametrize("loss", ["l1", "mse", "bce"])
def test_context_gradients_equal_autograd_of_the_masked_pair(loss):
    enc, dec, x = pair(1)
    ctx = context_of(enc, dec, x, loss)
    ref = autograd_reference(enc, dec, x, loss)
    for role, cls, stack in (("encoder", Encoder, enc), ("decoder", Decoder, dec)):
        grads = ctx.gradients(stack.network(0, cls))
        assert len(grads) == len(stack.layout.layers)
        for g, r in zip(grads, ref[role]):
            assert isinstance(g, LayerGradients)
            np.testing.assert_allclose(g.weight, r["weight"], rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(g.bias, r["bias"], rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(g.gate, r["gate"], rtol=1e-9, atol=1e-12)
            assert g.loss == pytest.approx(r["loss"], rel=1e-12)
            assert not g.weight.flags.writeable


def test_gradients_are_computed_once_for_both_networks_and_only_when_asked():
    enc, dec, x = pair(2)
    calls = []
    ctx = pair_context(enc, dec, 0, 0, PruneConfig(), "l1", lambda: calls.append(1) or x)
    net = enc.network(0, Encoder)
    operators.registry.get("random")(net, 0.5, np.random.default_rng(0), ctx)
    assert calls == []  # random asks for nothing
    ctx.gradients(net)
    ctx.gradients(dec.network(0, Decoder))
    ctx.activations(net)  # the same rows: drawn once
    assert calls == [1]
    with pytest.raises(RuntimeError, match="no gradient recorder"):
        PruneContext(0, PruneConfig()).gradients(net)


def test_gate_gradient_is_the_sum_of_weight_times_gradient():
    # d L / d c_j = sum_i w_ji dL/dw_ji + b_j dL/db_j: the gate is the neuron's total |g * w| before abs
    enc, dec, x = pair(3)
    for cls, stack in ((Encoder, enc), (Decoder, dec)):
        net = stack.network(0, cls)
        for layer, g in zip(net.layers, context_of(enc, dec, x).gradients(net)):
            direct = (g.weight * layer.weight).sum(axis=1) + g.bias * layer.bias
            np.testing.assert_allclose(g.gate, direct, rtol=1e-5, atol=1e-9)


# ---------------------------------------------------------------- SNIP

def plain(net: Network) -> Network:
    """The same layers without unit flags: ranking alone, no spared unit entries."""
    return Network([Layer(l.weight, l.bias, l.weight_mask.copy(), l.bias_mask.copy()) for l in net.layers])


def grads_context(grads: list[LayerGradients]) -> PruneContext:
    return PruneContext(0, PruneConfig(), record_gradients=lambda: {"network": grads})


def test_snip_scores_equal_autograd():
    enc, dec, x = pair(4)
    ref = autograd_reference(enc, dec, x, "l1")
    ctx = context_of(enc, dec, x)
    for role, cls, stack in (("encoder", Encoder, enc), ("decoder", Decoder, dec)):
        net = stack.network(0, cls)
        for (sw, sb), layer, r in zip(snip_scores(net, ctx.gradients(net)), net.layers, ref[role]):
            np.testing.assert_allclose(sw, np.abs(r["weight"] * layer.weight * layer.weight_mask) / r["loss"], rtol=1e-6)
            np.testing.assert_allclose(sb, np.abs(r["bias"] * layer.bias * layer.bias_mask) / r["loss"], rtol=1e-6)


@pytest.mark.parametrize("amount", [0.1, 0.3, 0.6])
def test_snip_prunes_exactly_the_lowest_scoring_entries_globally(amount):
    enc, dec, x = pair(5, alive=0.9)
    for cls, stack in ((Encoder, enc), (Decoder, dec)):
        grads = context_of(enc, dec, x).gradients(stack.network(0, cls))
        net = plain(stack.network(0, cls))
        scores = np.concatenate([np.concatenate([sw.ravel(), sb]) for sw, sb in snip_scores(net, grads)])
        before = np.concatenate([np.concatenate([l.weight_mask.ravel(), l.bias_mask]) for l in net.layers])
        snip_prune(net, amount, np.random.default_rng(0), grads_context(grads))
        after = np.concatenate([np.concatenate([l.weight_mask.ravel(), l.bias_mask]) for l in net.layers])
        pruned, kept = scores[before & ~after], scores[after]
        assert np.floor(amount * before.sum()) <= pruned.size <= np.ceil(amount * before.sum())
        # the lowest, ranked across layers (not per layer), but for the protected input -> output
        # path: at most one entry per layer may be kept below what went
        assert (kept < pruned.max()).sum() <= len(net.layers)
        assert not np.any(after & ~before)


def test_snip_breaks_ties_at_random():
    lay = Layer(np.ones((4, 3)), np.ones(4), np.ones((4, 3), bool), np.zeros(4, bool))
    grads = [LayerGradients(np.ones((4, 3)), np.zeros(4), np.zeros(4), 1.0)]
    seen = set()
    for seed in range(20):
        net = Network([Layer(lay.weight, lay.bias, lay.weight_mask.copy(), lay.bias_mask.copy())])
        snip_prune(net, 0.25, np.random.default_rng(seed), grads_context(grads))
        seen |= set(np.flatnonzero(~net.layers[0].weight_mask))
    assert seen == set(range(12))


# ---------------------------------------------------------------- SNAP

def test_snap_scores_equal_autograd():
    enc, dec, x = pair(6)
    ref = autograd_reference(enc, dec, x, "mse")
    ctx = context_of(enc, dec, x, "mse")
    for role, cls, stack in (("encoder", Encoder, enc), ("decoder", Decoder, dec)):
        net = stack.network(0, cls)
        for s, r in zip(snap_scores(net, ctx.gradients(net)), ref[role]):
            np.testing.assert_allclose(s, np.abs(r["gate"]) / r["loss"], rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("amount", [0.2, 0.5])
def test_snap_prunes_the_lowest_scoring_neurons_across_layers(amount):
    enc, dec, x = pair(7, alive=0.95)
    ctx = context_of(enc, dec, x)
    for cls, stack in ((Encoder, enc), (Decoder, dec)):
        net = stack.network(0, cls)
        grads = ctx.gradients(net)
        scores = snap_scores(net, grads)
        layers = [i for i, l in enumerate(net.layers) if not l.output_units]
        before = [net.layers[i].alive_neurons().copy() for i in layers]
        snap_prune(net, amount, np.random.default_rng(1), ctx)
        # every bias was alive: a pruned neuron lost its bias (and every weight but, in encoder
        # layer 0, an input's spared last one)
        after = [net.layers[i].bias_mask.copy() for i in layers]
        gone = np.concatenate([b & ~a for b, a in zip(before, after)])
        stay = np.concatenate([a for a in after])
        flat = np.concatenate([scores[i] for i in layers])
        n_alive = sum(b.sum() for b in before)
        assert np.floor(amount * n_alive) <= gone.sum() <= np.ceil(amount * n_alive)
        assert (flat[stay] < flat[gone].max()).sum() <= len(layers)  # the lowest, but for the protected path
        if cls is Decoder:  # the output units stay; they lose only the weights from cut neurons
            last, old = net.layers[-1], stack.network(0, cls).layers[-1]
            cut = before[-1] & ~after[-1]
            assert np.array_equal(last.bias_mask, old.bias_mask)
            assert np.array_equal(last.weight_mask[:, ~cut], old.weight_mask[:, ~cut])
            assert not last.weight_mask[:, cut].any()


# ---------------------------------------------------------------- rules at amount 1

@pytest.mark.parametrize("name", ["snip", "snap", "merge"])
def test_amount_one_keeps_a_neuron_per_layer_and_every_unit(name):
    op = operators.registry.get(name)
    for seed in range(4):
        enc, dec, x = pair(10 + seed)
        for _ in range(3):  # repeated mutations, each checked by the contract as a run does
            ctx = context_of(enc, dec, x)
            for cls, stack in ((Encoder, enc), (Decoder, dec)):
                net = stack.network(0, cls)
                op(net, 1.0, np.random.default_rng(seed), ctx)
                stack.store_masks(0, net, name)
                assert all(l.alive_neurons().sum() >= 1 for l in net.layers)
            for stack in (enc, dec):
                stack.apply_masks()
        if name == "snap":  # every prunable layer is down to its best neuron
            for cls, stack in ((Encoder, enc), (Decoder, dec)):
                net = stack.network(0, cls)
                for l in net.layers:
                    if not l.output_units and not l.input_units:
                        assert l.alive_neurons().sum() == 1


# ---------------------------------------------------------------- MERGE and fold_neuron

def small_net(seed: int, width: int = 6, fan_in: int = 5, out: int = 4, dead: float = 0.25) -> Network:
    rng = np.random.default_rng(seed)
    first = Layer(rng.normal(size=(width, fan_in)), rng.normal(size=width),
                  rng.random((width, fan_in)) > dead, rng.random(width) > dead)
    second = Layer(rng.normal(size=(out, width)), rng.normal(size=out),
                   rng.random((out, width)) > dead, np.ones(out, bool))
    for l in (first, second):
        l.weight = np.where(l.weight_mask, l.weight, 0.0)
        l.bias = np.where(l.bias_mask, l.bias, 0.0)
    first.weight_mask[:, 0] = True  # every neuron alive
    return Network([first, second])


def next_preactivation(net: Network, x: np.ndarray) -> np.ndarray:
    first, second = net.layers
    h = np.maximum(x @ (first.weight * first.weight_mask).T + first.bias * first.bias_mask, 0.0)
    return h @ (second.weight * second.weight_mask).T  # the bias is untouched by a fold


def test_fold_neuron_moves_outgoing_weights_onto_alive_entries_only():
    net = small_net(0)
    first, second = net.layers
    w_before, m_before = second.weight.copy(), second.weight_mask.copy()
    net.fold_neuron(0, 2, 4)
    assert not first.weight_mask[2].any() and not first.bias_mask[2]
    live = m_before[:, 4]
    expected = w_before.copy()
    expected[:, 4] += np.where(live & m_before[:, 2], w_before[:, 2], 0.0)
    np.testing.assert_array_equal(second.weight, expected)
    np.testing.assert_array_equal(second.weight_mask, m_before)  # masks never revive
    np.testing.assert_array_equal(net.weight_edits[1], np.eye(6, dtype=bool)[4][None, :] & live[:, None])
    for bad in ((1, 0, 1), (0, 2, 3), (0, 3, 3), (0, 9, 1)):  # last layer, dead source, itself, out of range
        with pytest.raises(ValueError, match="fold_neuron"):
            net.fold_neuron(*bad)


def test_merge_changes_the_function_by_no_more_than_its_saliency():
    """For a ReLU layer and a linear next layer, folding j into i moves the next pre-activations
    by dy_k = a_kj (h_i - h_j) where i's entry is alive and -a_kj h_j where it is not; with
    |h_i - h_j| <= ||W_i - W_j|| ||(x, 1)|| and |h_j| <= ||W_j|| ||(x, 1)|| (ReLU is 1-Lipschitz,
    Cauchy-Schwarz), ||dy||^2 <= n s_ij ||(x, 1)||^2. Float64 throughout: the tolerance is rounding."""
    rng = np.random.default_rng(0)
    checked = 0
    for seed in range(6):
        net = small_net(seed)
        s = merge_saliency(net, 0)
        n = net.layers[1].weight.shape[0]
        x = rng.normal(size=(200, 5)) * rng.choice([0.1, 1.0, 10.0], size=(200, 1))
        y = next_preactivation(net, x)
        bound = n * (np.square(x).sum(axis=1) + 1.0)
        for into, source in zip(*np.nonzero(np.isfinite(s))):
            folded = small_net(seed)
            folded.fold_neuron(0, int(source), int(into))
            dy2 = np.square(next_preactivation(folded, x) - y).sum(axis=1)
            assert np.all(dy2 <= bound * s[into, source] * (1 + 1e-9) + 1e-12)
            checked += 1
    assert checked > 100


def test_merge_folds_a_duplicate_neuron_without_changing_the_function():
    net = small_net(1, dead=0.0)
    first = net.layers[0]
    first.weight[3], first.bias[3] = first.weight[1], first.bias[1]  # neuron 3 duplicates neuron 1
    s = merge_saliency(net, 0)
    assert s[1, 3] == pytest.approx(0.0, abs=1e-12) and np.sort(s.ravel())[2] > 1e-6
    x = np.random.default_rng(0).normal(size=(50, 5))
    y = next_preactivation(net, x)
    merge_prune(net, 1 / 6, np.random.default_rng(0), PruneContext(0, PruneConfig()))  # exactly one merge
    assert net.layers[0].alive_neurons().sum() == 5 and not net.layers[0].alive_neurons()[[1, 3]].all()
    np.testing.assert_allclose(next_preactivation(net, x), y, atol=1e-12)


def test_merge_never_touches_the_latent_layer_or_the_outputs_and_keeps_inputs():
    enc, dec, x = pair(20)
    for cls, stack in ((Encoder, enc), (Decoder, dec)):
        net = stack.network(0, cls)
        last = net.layers[-1].weight_mask.copy(), net.layers[-1].bias_mask.copy()
        merge_prune(net, 1.0, np.random.default_rng(0), context_of(enc, dec, x))
        assert np.array_equal(net.layers[-1].weight_mask, last[0]) and np.array_equal(net.layers[-1].bias_mask, last[1])
        assert set(net.weight_edits) <= {len(net.layers) - 1}
        if cls is Encoder:
            assert net.layers[0].weight_mask.any(axis=0).all()


def test_store_writes_back_folded_weights_and_refuses_any_other_weight_edit():
    enc, dec, x = pair(21, alive=1.0)
    net = enc.network(0, Encoder)
    merge_prune(net, 0.5, np.random.default_rng(0), context_of(enc, dec, x))
    assert net.weight_edits
    enc.store_masks(0, net, "merge")
    (w0, b0), (w1, b1) = enc.layout.split(enc.params[0].numpy())
    np.testing.assert_array_equal(w1, net.layers[1].weight)
    np.testing.assert_array_equal(w0, net.layers[0].weight)
    # an operator that writes a weight itself is refused, even next to a fold
    net = enc.network(0, Encoder)
    alive = np.flatnonzero(net.layers[0].alive_neurons())
    net.fold_neuron(0, int(alive[0]), int(alive[1]))
    w = net.layers[0].weight.copy()
    w[0, 0] += 1.0
    net.layers[0].weight = w
    with pytest.raises(OperatorError, match="changed weights of layer 0 that no Network.fold_neuron or fold_input touched"):
        enc.store_masks(0, net, "sneaky")


# ---------------------------------------------------------------- geometric schedule

def test_geometric_targets_are_snip_its():
    assert schedules.geometric_targets(0.98, 7) == pytest.approx([0.5, 0.74, 0.86, 0.92, 0.95, 0.965, 0.98])


def test_geometric_steps_compound_to_the_targets():
    T, p = 399, 0.8
    fired = [(t, schedules.geometric(t, T, p, 3)) for t in range(T + 1)]
    steps = [(t, r) for t, r in fired if isinstance(r, schedules.Pruning)]
    assert [t for t, _ in steps] == schedules.geometric_generations(T, 7, 0.0) == [0, 57, 114, 171, 228, 285, 342]
    assert all(r == 0.0 for t, r in fired if not isinstance(r, schedules.Pruning))
    assert all(r.probability == p and r.amount is None for _, r in steps)
    assert [1.0 - r.kept for _, r in steps] == pytest.approx([0.5, 0.74, 0.86, 0.92, 0.95, 0.965, 0.98])
    # a delay moves the first step; too few generations put several steps in one: the last one's target
    assert schedules.geometric_generations(99, 4, 0.5) == [50, 62, 75, 87]
    joint = [schedules.geometric(t, 2, 1.0, 1, steps=7) for t in range(3)]
    assert min(r.kept for r in joint) == pytest.approx(0.02)
    with pytest.raises(ValueError, match="target"):
        schedules.geometric(0, 10, 0.5, 1, target=0.3)


def test_geometric_sets_the_amount_of_a_run(tmp_path):
    """End to end in canonical mode: probability 1, no target cap, the mask sparsity follows k_i."""
    cfg = config.load(None, TINY + ["run.mode=canonical", "run.generations=8", "prune.operator=snip",
                                    "prune.schedule=geometric", "prune.probability=1", "prune.target_kept=0",
                                    "prune.schedule_params.steps=4", "prune.schedule_params.target=0.8"])
    rows = []

    class Rows(Observer):
        def on_generation(self, row, state):
            rows.append((row["prune_probability"], row["mask_kept_mean"]))

    runner.start(cfg, out=tmp_path / "run", quiet=True, observers=[Rows()])
    k = schedules.geometric_targets(0.8, 4)
    assert [p for p, _ in rows] == [1.0, 0, 1.0, 0, 1.0, 0, 1.0, 0]
    sparsity = [1 - kept for _, kept in rows[::2]]
    np.testing.assert_allclose(sparsity, k, atol=0.01)  # stochastic rounding and the per-layer floors


def test_a_pair_that_missed_geometric_steps_catches_up():
    """With p < 1 a pair skips steps at random; whenever it is pruned it goes to that step's
    cumulative target, whatever it missed before (the masks' kept fraction, canonical mode)."""
    k = schedules.geometric_targets(0.8, 4)
    for seed in range(1, 20):
        cfg = config.load(None, TINY + ["run.mode=canonical", "run.generations=8", "prune.operator=snip",
                                        "prune.schedule=geometric", "prune.probability=0.5", "prune.target_kept=0",
                                        "prune.schedule_params.steps=4", "prune.schedule_params.target=0.8",
                                        f"run.seed={seed}"])
        rows = []

        class Rows(Observer):
            def on_generation(self, row, state):
                rows.append((row["pruned_cells"], row["mask_kept_mean"]))

        with tempfile.TemporaryDirectory() as tmp:
            runner.start(cfg, out=Path(tmp) / "run", quiet=True, observers=[Rows()])
        pruned = [bool(n) for n, _ in rows[::2]]
        if not any(pruned[i] and not all(pruned[:i]) for i in range(1, 4)):
            continue  # this seed missed no step before a pruned one: try the next
        for i, (was_pruned, (_, kept)) in enumerate(zip(pruned, rows[::2])):
            if was_pruned:
                assert 1 - kept == pytest.approx(k[i], abs=0.01)
        return
    pytest.fail("no seed in 1..19 missed a step and was pruned at a later one")


# ---------------------------------------------------------------- runs: masks stay zero

@pytest.mark.parametrize("mode", ["coevolution", "canonical"])
@pytest.mark.parametrize("name", ["snip", "snap", "merge"])
def test_runs_with_each_operator_keep_pruned_weights_zero(tmp_path, name, mode):
    cfg = config.load(None, TINY + [f"run.mode={mode}", f"prune.operator={name}", "prune.probability=1",
                                    "prune.amount=0.3", "prune.cases=7", "run.generations=4"])
    seen = []

    class ZeroCheck(Observer):
        def on_generation(self, row, state):
            for stack in (state.encoders, state.decoders):
                assert torch.all(stack.params[~stack.mask] == 0)
                assert torch.all(stack.exp_avg[~stack.mask] == 0)
            seen.append(float(state.encoders.mask.float().mean()))

    runner.start(cfg, out=tmp_path / "run", quiet=True, observers=[ZeroCheck()])
    assert len(seen) == 4 and seen[-1] < seen[0] < 1.0


# ---------------------------------------------------------------- the docs' gradient operator

def test_the_readme_gradient_operator_runs(tmp_path, monkeypatch):
    """The criterion example of docs/operators.md (my_taylor.py) runs as shipped."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "docs" / "operators.md").read_text()
    code = re.search(r"```python\n(# file: my_taylor.py\n.*?)```", readme, re.S).group(1)
    (tmp_path / "my_taylor.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = config.load(None, TINY + ["prune.operator=my_taylor:taylor", "prune.probability=1", "prune.amount=0.3",
                                    "prune.params.normalise=false"])
    kept = []

    class Kept(Observer):
        def on_generation(self, row, state):
            kept.append(row["mask_kept_mean"])

    runner.start(cfg, out=tmp_path / "run", quiet=True, observers=[Kept()])
    assert kept[-1] < kept[0] < 1.0


def test_lowest_capped_honours_caps_and_breaks_ties_at_random():
    from coevo.operators.kernels import lowest_capped

    groups = np.array([0, 0, 1, 1], dtype=np.int64)
    caps = np.array([1, 2], dtype=np.int64)
    got = lowest_capped(np.array([1.0, 2.0, 5.0, 6.0]), groups, caps, 3, np.random.default_rng(0))
    assert sorted(got) == [0, 2, 3]  # group 0 gives one (its cap), group 1 the rest
    assert list(lowest_capped(np.array([3.0, 1.0, 2.0, 0.5]), groups, np.array([2, 2]), 2,
                              np.random.default_rng(0))) == [3, 1]
    picks = {int(lowest_capped(np.zeros(5), np.zeros(5, dtype=np.int64), np.array([5]), 1,
                               np.random.default_rng(s))[0]) for s in range(40)}
    assert picks == set(range(5))
    slow = {int(lowest_capped(np.zeros(4), groups, np.array([0, 1]), 2, np.random.default_rng(s))[0])
            for s in range(40)}  # the cap binds: only group 1, one of its two tied entries
    assert slow == {2, 3}
    assert lowest_capped(np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), 3,
                         np.random.default_rng(0)).size == 0


def test_a_context_first_asked_in_the_decoders_call_sees_the_pair_before_the_mutation():
    enc, dec, x = pair(22)
    before = context_of(enc, dec, x)
    grads, acts = before.gradients(dec.network(0, Decoder)), before.activations(dec.network(0, Decoder))
    ctx = context_of(enc, dec, x)  # made before the mutation, asked only after the encoder's is stored
    net = enc.network(0, Encoder)
    operators.registry.get("random")(net, 0.5, np.random.default_rng(0), ctx)
    enc.store_masks(0, net, "random")
    enc.apply_masks()
    for a, b in zip(ctx.gradients(dec.network(0, Decoder)), grads):
        np.testing.assert_array_equal(a.weight, b.weight)
    for a, b in zip(ctx.activations(dec.network(0, Decoder)), acts):
        np.testing.assert_array_equal(a, b)
    changed = context_of(enc, dec, x).gradients(dec.network(0, Decoder))  # a fresh context sees the pruning
    assert not np.array_equal(changed[0].weight, grads[0].weight)
