"""The pruning core: criteria x scope x unit through one selector, and the protection rules
(every input keeps a weight, every output a weight or bias, one input -> output path stays)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from coevo import operators
from coevo.cli import main
from coevo.config import PruneConfig
from coevo.errors import OperatorError
from coevo.population import Stack
from coevo.genome import Decoder, Encoder, Layer, Network, autoencoder_layouts, init_params, unit_flags
from coevo.operators import EntryScores, PruneContext
from coevo.operators.protection import connected, masks_of, on_path, violation
from tests.conftest import TINY


def network(role: str, widths: list[int], seed: int = 0, keep: float = 1.0) -> Network:
    """A random network of ``role`` with masks keeping about ``keep`` of the weights (every input
    and output unit kept, so the rules hold to begin with)."""
    rng = np.random.default_rng(seed)
    layers = []
    n = len(widths) - 1
    for k, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        wm = rng.random((b, a)) < keep
        layers.append(Layer(rng.normal(size=(b, a)).astype(np.float32), rng.normal(size=b).astype(np.float32),
                            wm, np.ones(b, bool), **unit_flags(role, k, n)))
    if role == "encoder":
        layers[0].weight_mask[0] = True
    cls = Encoder if role == "encoder" else Decoder
    net = cls(layers)
    assert connected(masks_of(net))
    return net


def ctx() -> PruneContext:
    return PruneContext(0, PruneConfig())


def snapshot(net: Network) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(l.weight_mask.copy(), l.bias_mask.copy()) for l in net.layers]


SETTINGS = [{"scope": s, "unit": u} for s in ("layer", "global") for u in ("weight", "neuron")]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda d: f"{d['scope']}-{d['unit']}")
@pytest.mark.parametrize("name", ["random", "magnitude"])
@pytest.mark.parametrize("role", ["encoder", "decoder"])
def test_amount_one_again_and_again_keeps_every_rule(name, settings, role):
    # amount 1 asks for everything: what stays is exactly what the rules protect
    widths = [40, 12, 6, 3] if role == "encoder" else [3, 6, 12, 40]
    op = operators.registry.get(name, settings)
    for seed in range(3):
        net = network(role, widths, seed, keep=0.7)
        for call in range(4):
            old = snapshot(net)
            op(net, 1.0, np.random.default_rng(call), ctx())
            assert violation(role, old, masks_of(net)) is None
            assert connected(masks_of(net))
            assert all(l.weight_mask.any() for l in net.layers)  # no layer without an alive weight
        if settings["unit"] == "weight":  # down to one path between the edge layers
            assert all(p.sum() == 1 for p in on_path(masks_of(net))[1:-1])


def test_store_masks_refuses_a_layer_left_with_only_biases():
    # a 6 -> 3 decoder layer with every weight masked passed the old check: its neurons kept their
    # biases, so they counted as alive, and the decoder computed a constant
    enc_l, dec_l = autoencoder_layouts(12, [6], 3)
    stack = Stack.fresh(dec_l, init_params(dec_l, 1, np.random.default_rng(0)))
    net = stack.network(0, Decoder)
    net.layers[0].weight_mask[:] = False  # 3 -> 6: no weight left
    with pytest.raises(OperatorError, match="no path of alive weights"):
        stack.store_masks(0, net, "cutter")
    net = stack.network(0, Decoder)
    net.layers[1].weight_mask[:] = False  # 6 -> 12: the outputs keep their biases, but no path is left
    with pytest.raises(OperatorError, match="broke a protection rule of the decoder"):
        stack.store_masks(0, net, "cutter")


def test_magnitude_weight_scopes_prune_the_lowest():
    for scope in ("layer", "global"):
        net = network("encoder", [30, 10, 4], seed=1)
        net.layers[1].weight = net.layers[1].weight * 3  # larger: a global ranking spares this layer
        before = [np.abs(l.weight) for l in net.layers]
        operators.registry.get("magnitude", {"scope": scope, "include_bias": False})(
            net, 0.5, np.random.default_rng(0), ctx())
        gone = [b[~l.weight_mask] for b, l in zip(before, net.layers)]
        kept = [b[l.weight_mask] for b, l in zip(before, net.layers)]
        if scope == "layer":  # half of each layer, the lowest, bar the protected path and input units
            for g, k, l in zip(gone, kept, net.layers):
                assert abs(g.size - 0.5 * l.weight_mask.size) <= 1
                assert (k < g.max()).sum() <= (30 + 1 if l.input_units else 1)
        else:  # half of the network, ranked together: the layers lose different shares
            g, k = np.concatenate(gone), np.concatenate(kept)
            assert abs(g.size - 0.5 * sum(l.weight_mask.size for l in net.layers)) <= 1
            assert (k < g.max()).sum() <= 30 + len(net.layers)
            shares = [x.size / (x.size + y.size) for x, y in zip(gone, kept)]
            assert shares[0] > 0.53 and shares[1] < 0.3


def test_magnitude_neuron_unit_cuts_the_lowest_norms_with_their_outgoing_weights():
    net = network("decoder", [4, 16, 8, 20], seed=2)
    norms = [np.sqrt((l.weight.astype(np.float64) ** 2).sum(axis=1) + l.bias.astype(np.float64) ** 2)
             for l in net.layers]
    operators.registry.get("magnitude", {"unit": "neuron", "scope": "layer"})(net, 0.25, np.random.default_rng(0), ctx())
    for i in (0, 1):  # 4 of 16, 2 of 8: the lowest L2 norms of incoming weights and bias
        cut = ~net.layers[i].alive_neurons()
        assert cut.sum() == {0: 4, 1: 2}[i]
        assert norms[i][cut].max() < norms[i][~cut].min()
        assert not net.layers[i + 1].weight_mask[:, cut].any()  # their outgoing weights went too
    assert net.layers[2].alive_neurons().all()  # output units are never cut


def test_a_structured_cut_removes_first_layer_neurons_at_d_1000():
    # before, every input's spared weight was spread over the first layer's neurons: a "cut"
    # neuron kept 17-45 weights and stayed alive (snap cut 7 neurons: 30 of 30 stayed alive)
    enc_l, _ = autoencoder_layouts(1000, [30], 10)
    for name, settings in (("magnitude", {"unit": "neuron", "scope": "layer"}), ("random", {"unit": "neuron"})):
        stack = Stack.fresh(enc_l, init_params(enc_l, 1, np.random.default_rng(3)))
        net = stack.network(0, Encoder)
        operators.registry.get(name, settings)(net, 0.3, np.random.default_rng(0), ctx())
        stack.store_masks(0, net, name)
        after = stack.network(0, Encoder)
        assert after.layers[0].alive_neurons().sum() == 21  # 30 - round(0.3 * 30)
        assert after.layers[0].weight_mask.any(axis=0).all()  # every input still has a weight


def test_a_first_layer_neuron_holding_an_inputs_last_weight_stays():
    net = network("encoder", [6, 4, 2], seed=4)
    first = net.layers[0]
    first.weight_mask[:, 5] = False
    first.weight_mask[0, 5] = True  # input 5's only weight goes into neuron 0
    scores = [np.array([-1.0, 0, 0, 0]), np.zeros(2)]  # neuron 0 scores lowest
    cut = operators.select_neurons(net, scores, 1.0, np.random.default_rng(0), scope="layer")
    assert not cut[0][0] and cut[0][1:].sum() >= 1


def test_global_scope_caps_each_layer():
    net = network("encoder", [50, 20, 5], seed=5)
    scores = [EntryScores(np.zeros((20, 50)), np.zeros(20)), EntryScores(np.ones((5, 20)), np.ones(5))]
    alive = [l.alive for l in net.layers]
    operators.select_and_prune(net, scores, 0.5, np.random.default_rng(0), scope="global", max_layer_fraction=0.3)
    for l, a in zip(net.layers, alive):
        assert a - l.alive <= np.floor(0.3 * a)
    assert alive[1] - net.layers[1].alive > 0  # the cap sent the rest of the budget to the next layer


def test_a_user_criterion_gets_scope_and_unit_for_free():
    @operators.criterion("test_abs_bias_criterion", scope="global")
    def by_bias(net, context, rng, *, power: float = 1.0):
        """|b|^power per neuron."""
        return [np.abs(l.bias.astype(np.float64)) ** power for l in net.layers]

    op = operators.registry.get("test_abs_bias_criterion", {"unit": "neuron", "power": 2})
    assert op.scope == "global" and op.unit == "neuron" and op.settings == {"power": 2.0}
    net = network("encoder", [20, 10, 4], seed=6)
    bias = [np.abs(l.bias) for l in net.layers]
    op(net, 0.3, np.random.default_rng(0), ctx())
    cut = np.concatenate([~l.alive_neurons() for l in net.layers])
    flat = np.concatenate(bias)
    assert cut.sum() == round(0.3 * 14) and flat[cut].max() < flat[~cut].min()
    from coevo.errors import ConfigError
    with pytest.raises(ConfigError, match="prune.params.powr is not a parameter"):
        operators.registry.get("test_abs_bias_criterion", {"powr": 2})


@pytest.mark.parametrize("params", [["prune.params.scope=global"], ["prune.params.unit=neuron"]])
def test_magnitude_runs_and_masks_stay_zero(tmp_path, capsys, params):
    args = TINY + ["run.generations=4", "prune.operator=magnitude", "prune.probability=1", "prune.amount=0.3",
                   "prune.target_kept=0.2", "run.save_centres=true", *params]
    assert main(["run", "--quiet", "--out", str(tmp_path / "run"), *[x for o in args for x in ("--set", o)]]) == 0
    capsys.readouterr()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["kept_fraction"] < 0.6
    centres = torch.load(tmp_path / "run" / "centres.pt")
    for net in centres["encoders"] + centres["decoders"]:
        for name, value in net.items():
            if name.endswith("weight") or name.endswith("bias"):
                assert torch.all(value[~net[name + "_mask"]] == 0), name


def test_a_neuron_unit_run_exports_a_narrower_first_layer(tmp_path, capsys):
    args = ["data.n_dims=1000", "data.n_clusters=3", "data.rows_per_cluster=10", "grid.cells=3",
            "run.generations=4", "prune.operator=magnitude", "prune.params.unit=neuron", "prune.probability=1",
            "prune.amount=0.3", "prune.target_kept=0", "prune.schedule=fixed"]
    run = tmp_path / "run"
    assert main(["run", "--quiet", "--out", str(run), *[x for o in args for x in ("--set", o)]]) == 0
    assert main(["export", str(run), "--out", str(tmp_path / "model.pt")]) == 0
    capsys.readouterr()
    model = torch.jit.load(str(tmp_path / "model.pt"))
    first = [m for m in model.modules() if isinstance(m, torch.nn.Linear) or m.original_name == "Linear"][0]
    assert first.weight.shape[1] == 1000 and first.weight.shape[0] < 30


def test_the_readme_criterion_works_as_written(tmp_path, monkeypatch, capsys):
    """docs/operators.md, "The pruning core": my_taylor.py, named by import path, per layer and globally."""
    import re
    import sys
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "operators.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if b.startswith("# file: my_taylor.py"))
    (tmp_path / "my_taylor.py").write_text(block)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_taylor", raising=False)
    try:
        for extra in ([], ["prune.params.scope=global", "prune.params.normalise=false"]):
            args = TINY + ["prune.operator=my_taylor:taylor", "prune.probability=1", "prune.amount=0.3",
                           "prune.target_kept=0", *extra]
            out = tmp_path / f"run{len(extra)}"
            assert main(["run", "--quiet", "--out", str(out), *[x for o in args for x in ("--set", o)]]) == 0, \
                capsys.readouterr().err
            summary = json.loads((out / "summary.json").read_text())
            assert summary["compact_fraction"] < 0.9  # whole neurons went
        assert "taylor" in operators.registry.names()  # importing it registered the name too
    finally:
        operators.registry._items.pop("taylor", None)
        monkeypatch.delitem(sys.modules, "my_taylor", raising=False)


def test_the_baseline_preset_is_canonical_model_magnitude_on_the_polynomial_schedule(tmp_path, capsys):
    args = ["run.generations=8", "data.n_dims=40", "data.n_clusters=3", "data.rows_per_cluster=10",
            "model.hidden=[8]", "model.latent=3"]
    assert main(["run", "--preset", "baseline", "--quiet", "--out", str(tmp_path / "run"),
                 *[x for o in args for x in ("--set", o)]]) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["mode"] == "canonical" and summary["operator"] == "magnitude"
    assert summary["mask_kept_fraction"] == pytest.approx(0.2, abs=0.01)  # the schedule's 80% sparsity
