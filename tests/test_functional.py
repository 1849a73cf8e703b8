"""The functional model path: any module pair traced into units, trained by torch.func, held to
the Numba kernels on an MLP, pruned under the pair's protection rules on convolutions."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from coevo import config as C
from coevo.errors import ConfigError
from coevo.evolution.loop import coevolve
from coevo.population import Stack
from coevo.evolution.problem import build
from coevo.genome import Decoder, Encoder
from coevo.measures import live_entries, stack_kept_fractions
from coevo.model import ModelRef, build_pair, init_rows
from coevo.model.graph import flatten_parameters, trace
from coevo.operators import selector
from coevo.operators.protection import pair_connected, partner_reach
from coevo.training import functional as F

CONV = ModelRef("conv", (1, 8, 8), 6, ())


def small_mlp(backend: str, operator: str, generations: int = 5) -> C.Config:
    return C.from_dict({"run": {"generations": generations, "seed": 5, "backend": backend, "checkpoint_every": 0},
                        "data": {"n_dims": 60, "rows_per_cluster": 10}, "model": {"hidden": [12], "latent": 4},
                        "grid": {"cells": 4}, "prune": {"operator": operator, "target_kept": 0.3}})


@pytest.mark.parametrize("operator", ["random", "magnitude", "variance"])
def test_torch_backend_equals_numba_on_the_mlp(operator):
    """Same masks after the same mutations, parameters within float32 rounding, over generations."""
    states = {b: coevolve(build(small_mlp(b, operator))) for b in ("numba", "torch")}
    a, b = states["numba"], states["torch"]
    assert b.encoders.layout.model is not None and a.encoders.layout.model is None  # two different paths ran
    assert torch.equal(a.encoders.mask, b.encoders.mask) and torch.equal(a.decoders.mask, b.decoders.mask)
    assert not a.encoders.mask.all()  # pruning happened
    assert torch.allclose(a.encoders.params, b.encoders.params, atol=1e-5)
    assert torch.allclose(a.decoders.params, b.decoders.params, atol=1e-5)


def test_trace_links_flatten_and_unflatten():
    enc, dec = trace(CONV)
    assert [s.kernel for s in enc.layers] == [(3, 3), (3, 3), ()]
    assert enc.layers[-1].spread == 4  # 16 channels of 2x2 flattened into 64 features
    assert dec.layers[1].gather == 4 and dec.layers[1].transposed  # 64 features unflattened into 16 channels
    assert dec.layers[-1].fan_out == 1  # one output channel
    # flat rows hold the module's values: the functional forward is the module's
    e, d = build_pair(CONV)
    x = torch.rand(3, 64)
    rows = [torch.as_tensor(flatten_parameters(m, lay)) for m, lay in ((e, enc), (d, dec))]
    with torch.no_grad():
        want = d(e(x.view(3, 1, 8, 8))).reshape(3, -1)
    assert torch.allclose(F.reconstruct(enc, dec, rows[0], rows[1], x), want, atol=1e-6)


def conv_stacks(n: int = 3) -> tuple[Stack, Stack]:
    layouts = trace(CONV)
    e, d = init_rows(CONV, layouts, n, seed=1)
    return Stack.fresh(layouts[0], e), Stack.fresh(layouts[1], d)


def test_vmapped_pair_losses_equal_a_loop_over_modules():
    enc, dec = conv_stacks(3)
    batches = torch.rand(3, 4, 64)
    neighbours = np.array([[0, 1, 2], [1, 2, 0], [2, 0, 1]])
    got = F.pair_losses(enc, dec, neighbours, batches, "l1")
    for k in range(3):
        for i in range(3):
            for j in range(3):
                out = F.reconstruct(enc.layout, dec.layout, enc.params[neighbours[k, i]], dec.params[neighbours[k, j]],
                                    batches[k])
                assert abs(float((out - batches[k]).abs().mean()) - float(got[k, i, j])) < 1e-6


def test_training_keeps_masked_entries_zero_and_lowers_the_loss():
    enc, dec = conv_stacks(2)
    for stack in (enc, dec):
        stack.mask[:, ::3] = False
        stack.apply_masks()
    data = torch.rand(40, 64).round()
    orders = np.stack([np.random.default_rng(k).permutation(40) for k in range(2)])
    before = F.centre_losses(enc, dec, data, "l1")
    new_enc, new_dec, _ = F.train_pairs(enc, dec, np.arange(2), np.arange(2), data, orders, np.full(2, 0.01), 5,
                                        "l1", 0.9, 0.999)
    for stack in (new_enc, new_dec):
        assert bool((stack.params[~stack.mask] == 0).all())
        assert bool((stack.exp_avg[~stack.mask] == 0).all())
    assert bool((F.centre_losses(new_enc, new_dec, data, "l1") < before).all())


def test_gradients_match_autograd_on_the_module():
    enc, dec = conv_stacks(1)
    x = torch.rand(5, 64)
    grads = F.pair_gradients(enc.layout, dec.layout, enc.params[0], dec.params[0], enc.mask[0], dec.mask[0], x, "mse")
    e, d = build_pair(CONV)
    for module, layout, row in ((e, enc.layout, enc.params[0]), (d, dec.layout, dec.params[0])):
        module.double()
        for spec, (w, b) in zip(layout.layers, layout.split(row)):
            layer = module.get_submodule(spec.name)
            weight = w.reshape(spec.fan_out, spec.channels, *spec.kernel) if spec.kernel else w
            layer.weight.data = (weight.transpose(0, 1) if spec.transposed else weight).double().clone()
            layer.bias.data = b.double().clone()
    out = d(e(x.double().view(5, 1, 8, 8))).reshape(5, -1)
    ((out - x.double()) ** 2).mean().backward()
    conv0 = e.get_submodule("0").weight.grad.reshape(8, 9).numpy()
    assert np.allclose(grads["encoder"][0].weight, conv0, atol=1e-10)
    last = d.get_submodule(dec.layout.layers[-1].name)
    assert np.allclose(grads["decoder"][-1].bias, last.bias.grad.numpy(), atol=1e-10)


def test_protection_keeps_a_conv_pair_connected_at_any_amount():
    """Channel cuts and weight cuts on convolutions, Flatten and Unflatten: the pair stays connected."""
    enc, dec = conv_stacks(1)
    rng = np.random.default_rng(0)
    for unit in ("neuron", "weight", "neuron", "weight"):
        for cls, stack, other in ((Encoder, enc, dec), (Decoder, dec, enc)):
            net = stack.network(0, cls)  # its partner's side of the latent layer, as coevo sets it
            net.partner_reach = partner_reach(cls.role, other.layout.unit_masks(other.layout.split(other.mask[0].numpy())))
            selector.prune(net, None, 0.95, rng, unit=unit)
            stack.store_masks(0, net, "test", partner=net.partner_reach)
        enc.apply_masks(), dec.apply_masks()
        masks = [s.layout.unit_masks(s.layout.split(s.mask[0].numpy())) for s in (enc, dec)]
        assert pair_connected(*masks)
    kept = stack_kept_fractions(enc, dec)
    assert 0 < kept.kept[0] < 0.2 and kept.latent[0] >= 1
    last_w, last_b = dec.layout.split(dec.mask[0].numpy())[-1]
    assert (last_w.any(axis=1) | last_b).all()  # the output channel keeps an entry


def test_live_entries_drop_what_a_cut_channel_leaves():
    """A conv channel with no alive incoming weight and no bias: its outgoing kernels stop counting."""
    enc, dec = conv_stacks(1)
    alive = np.concatenate([enc.mask.numpy(), dec.mask.numpy()], axis=1)
    layout = enc.layout + dec.layout
    (w0, b0), (w1, _b1) = layout.split(alive)[:2]
    w0[0, 3] = False
    b0[0, 3] = False
    live = live_entries(layout, alive)
    (lw0, _), (lw1, _) = layout.split(live)[:2]
    channel = layout.layers[1].taps  # columns of input channel 3 of the second convolution
    assert not lw0[0, 3].any() and not lw1[0][:, 3 * channel:4 * channel].any()
    assert lw1[0][:, :3 * channel].all()


def test_a_conv_run_prunes_to_its_target_with_exact_zeros(tmp_path):
    cfg = C.from_dict({"run": {"generations": 4, "seed": 2, "checkpoint_every": 0},
                       "data": {"source": "digits"}, "model": {"family": "conv"},
                       "grid": {"cells": 3}, "prune": {"target_kept": 0.2}})
    problem = build(cfg)
    assert problem.enc_layout.model.ref.input_shape == (1, 8, 8)
    state = coevolve(problem)
    kept = stack_kept_fractions(state.encoders, state.decoders)
    assert kept.kept.max() <= 0.21 and kept.kept.min() >= 0.19
    for stack in (state.encoders, state.decoders):
        assert bool((stack.params[~stack.mask] == 0).all())


def test_conv1d_on_signals():
    ref = ModelRef("conv", (2, 30), 4, (("channels", (4, 8)),))
    enc, dec = trace(ref)
    assert [len(s.kernel) for s in enc.layers[:-1]] == [1, 1]
    e, d = init_rows(ref, (enc, dec), 2, 0)
    out = F.reconstruct(enc, dec, torch.as_tensor(e[0]), torch.as_tensor(d[0]), torch.rand(3, 60))
    assert out.shape == (3, 60)


FACTORY = """
import torch
from torch import nn

def pooled(input_shape, latent, width=4):
    c, h, w = input_shape
    enc = nn.Sequential(nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(width * h * w // 4, latent), nn.ReLU())
    dec = nn.Sequential(nn.Linear(latent, width * h * w // 4), nn.ReLU(), nn.Unflatten(1, (width, h // 2, w // 2)),
                        nn.Upsample(scale_factor=2), nn.Conv2d(width, c, 3, padding=1), nn.Sigmoid())
    return enc, dec

def two_channels(input_shape, latent):
    enc, dec = pooled(input_shape, latent)
    dec[4] = nn.Conv2d(4, 2, 3, padding=1)
    return enc, dec

def one(input_shape, latent):
    return nn.Linear(3, 3)

def batchnorm(input_shape, latent):
    enc, dec = pooled(input_shape, latent)
    enc.insert(1, nn.BatchNorm2d(4))
    return enc, dec

def raises(input_shape, latent):
    raise ValueError("no such width")

def wrong_latent(input_shape, latent):
    enc, dec = pooled(input_shape, latent)
    dec[0] = nn.Linear(latent + 1, 64)
    return enc, dec
"""


def test_a_factory_with_pooling_and_upsampling_runs(tmp_path):
    path = tmp_path / "models.py"
    path.write_text(FACTORY)
    cfg = C.from_dict({"run": {"generations": 2, "seed": 1, "checkpoint_every": 0}, "data": {"source": "digits"},
                       "model": {"factory": f"{path}:pooled", "params": {"width": 3}, "latent": 5},
                       "grid": {"cells": 3}, "prune": {"target_kept": 0.5, "operator": "variance"}})
    problem = build(cfg)
    assert [s.name for s in problem.enc_layout.layers] == ["0", "4"] and problem.dec_layout.layers[1].taps == 9
    state = coevolve(problem)
    assert stack_kept_fractions(state.encoders, state.decoders).kept.max() < 0.9


@pytest.mark.parametrize("function, words", [
    ("two_channels", "decoder returns (N, 2, 8, 8) for an input of (N, 1, 8, 8)"),
    ("one", "must return (encoder, decoder)"),
    ("batchnorm", "BatchNorm2d"),
    ("wrong_latent", "the decoder raised RuntimeError"),
    ("raises", "raised ValueError: no such width (at "),
])
def test_bad_factories_fail_in_one_line_before_anything_is_written(tmp_path, function, words):
    path = tmp_path / "models.py"
    path.write_text(FACTORY)
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "coevo", "run", "--set", "data.source=digits",
                           "--set", f"model.factory={path}:{function}", "--set", "run.generations=1",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert words in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_numba_backend_refuses_a_conv_model():
    with pytest.raises(ConfigError, match="run.backend = 'numba' trains the MLP family only"):
        C.from_dict({"model": {"family": "conv"}, "run": {"backend": "numba"}})


def test_conv_on_flat_rows_says_how_to_give_a_shape():
    cfg = C.from_dict({"model": {"family": "conv"}, "data": {"n_dims": 64}})
    with pytest.raises(ConfigError, match=r"data.sample_shape"):
        build(cfg)


def test_merge_is_refused_on_convolutions():
    cfg = C.from_dict({"model": {"family": "conv"}, "data": {"source": "digits"}, "prune": {"operator": "merge"}})
    with pytest.raises(ConfigError, match="operator merge needs Linear layers"):
        build(cfg)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_conv_on_cuda_matches_cpu():  # pragma: no cover - runs where a GPU is
    enc, dec = conv_stacks(2)
    x = torch.rand(6, 64)
    cpu = F.centre_losses(enc, dec, x, "l1")
    gpu = F.centre_losses(enc.map(lambda t: t.cuda()), dec.map(lambda t: t.cuda()), x.cuda(), "l1").cpu()
    assert torch.allclose(cpu, gpu, atol=1e-5)


def test_the_models_page_factory_runs_as_written(tmp_path):
    import re
    from pathlib import Path

    page = (Path(__file__).parent.parent / "docs" / "models.md").read_text()
    code = re.search(r"```python\n(# file: my_models.py\n.*?)```", page, re.S).group(1)
    (tmp_path / "my_models.py").write_text(code)
    cfg = C.from_dict({"run": {"generations": 2, "checkpoint_every": 0}, "data": {"source": "digits"},
                       "model": {"factory": f"{tmp_path / 'my_models.py'}:pooled", "params": {"width": 6}, "latent": 8},
                       "grid": {"cells": 3}, "prune": {"target_kept": 0.3}})
    state = coevolve(build(cfg))
    assert stack_kept_fractions(state.encoders, state.decoders).kept.max() < 1.0


def test_the_pruning_controller_is_a_pure_function_of_the_pair():
    from coevo.config import PruneConfig
    from coevo.evolution.variation import plan_pair
    from coevo.schedules import Pruning

    settings = PruneConfig(amount=0.1, target_kept=0.2)
    assert plan_pair(settings, Pruning(1.0), 0.2, 0.5, 0.6, 0.001).amount == pytest.approx(0.1)  # far: the amount
    near = plan_pair(settings, Pruning(1.0), 0.2, 0.22, 0.25, 0.001)
    assert near.amount == pytest.approx(0.02 / 0.25) and near.floor == pytest.approx(0.199)  # only the live excess
    assert plan_pair(settings, Pruning(1.0), 0.2, 0.2, 0.21, 0.001) is None  # at rest
    swap = plan_pair(PruneConfig(amount=0.1, target_kept=0.2, grow_fraction=0.1), Pruning(1.0), 0.2, 0.19, 0.2, 0.001)
    assert swap.amount == 0.0 and swap.floor == pytest.approx(0.189)  # regrowth swaps at rest, no lower than now
    goal = plan_pair(PruneConfig(amount=0.1, target_kept=0.0), Pruning(1.0, kept=0.5), 0.0, 0.8, 0.8, 0.001)
    assert goal.amount == pytest.approx(1 - 0.5 / 0.8) and goal.floor is None  # the schedule's kept fraction


def test_a_relative_factory_file_is_recorded_absolute(tmp_path, monkeypatch):
    """So the run directory resumes and exports from any working directory."""
    from coevo.rundir.directory import with_absolute_source

    (tmp_path / "models.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    cfg = with_absolute_source(C.from_dict({"model": {"factory": "models.py:pooled"}}))
    assert cfg.model.factory == f"{tmp_path / 'models.py'}:pooled"
    assert with_absolute_source(C.from_dict({"model": {"factory": "json:loads"}})).model.factory == "json:loads"


def test_a_parameter_shared_by_two_layers_is_refused():
    def tied(input_shape, latent):
        enc = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, latent), nn.ReLU())
        enc[2].weight = enc[0].weight if latent == 64 else enc[2].weight
        dec = nn.Sequential(nn.Linear(latent, 64), nn.Sigmoid())
        dec[0].weight = nn.Parameter(dec[0].weight.detach().clone())
        enc[0].bias = enc[2].bias if latent == 64 else enc[0].bias
        return enc, dec

    from coevo.model import register_factory
    with pytest.raises(ConfigError, match="is shared with"):
        trace(ModelRef(register_factory(tied), (64,), 64, ()))


def test_image_runs_draw_their_reconstructions(tmp_path):
    from coevo import runner

    digits = C.from_dict({"run": {"generations": 2, "checkpoint_every": 0}, "data": {"source": "digits"},
                          "grid": {"cells": 3}, "prune": {"target_kept": 0.5}})
    flat = C.from_dict({"run": {"generations": 2, "checkpoint_every": 0},
                        "data": {"n_dims": 40, "n_clusters": 3, "rows_per_cluster": 10},
                        "model": {"hidden": [8], "latent": 3}, "grid": {"cells": 3}})
    image_dir = runner.start(digits, out=tmp_path / "digits", quiet=True)
    flat_dir = runner.start(flat, out=tmp_path / "flat", quiet=True)
    picture = image_dir / "plots" / "test_reconstructions.png"
    assert picture.stat().st_size > 1000 and picture.read_bytes()[:4] == b"\x89PNG"
    assert not (flat_dir / "plots" / "test_reconstructions.png").exists()  # flat rows are no pictures


def test_analyze_reads_a_conv_run(tmp_path):
    from coevo import runner
    from coevo.analysis import analyze

    try:
        from coevo.analysis import _extras
        _extras()
    except Exception as exc:  # pragma: no cover - the analysis extra is part of the test install
        pytest.skip(f"coevo[analysis] is not installed: {exc}")
    cfg = C.from_dict({"run": {"generations": 2, "checkpoint_every": 0}, "data": {"source": "digits"},
                       "model": {"family": "conv", "params": {"channels": [4]}, "latent": 6}, "grid": {"cells": 3},
                       "prune": {"target_kept": 0.5}})
    run_dir = runner.start(cfg, out=tmp_path / "conv", quiet=True)
    result = analyze(run_dir)
    assert result["latent_width"] == 6 and 0 <= result["latent_alive"] <= result["latent_on_path"] <= 6
    assert (run_dir / "plots" / "latent_pca.png").exists()


def test_a_misspelt_model_param_names_what_the_family_takes():
    with pytest.raises(ConfigError, match=r"model.params \['chanels'\].*it takes \['channels', 'kernel', 'stride'\]"):
        build(C.from_dict({"model": {"family": "conv", "params": {"chanels": [4]}}, "data": {"source": "digits"}}))


def test_a_conv_vae_reports_its_kl_and_resumes_its_noise(tmp_path):
    """model.variational: means and log-variances, a seeded sample per cell, the KL reported apart."""
    from coevo import runner

    cfg = C.from_dict({"run": {"generations": 3, "seed": 4, "checkpoint_every": 1}, "data": {"source": "digits"},
                       "model": {"family": "conv", "variational": True, "latent": 4, "params": {"channels": [4]}},
                       "grid": {"cells": 3}, "prune": {"target_kept": 0.5}})
    problem = build(cfg)
    assert problem.enc_layout.layers[-1].fan_out == 8 and problem.dec_layout.layers[0].halves == 2
    a = coevolve(build(cfg))
    b = coevolve(build(cfg))
    assert torch.equal(a.encoders.params, b.encoders.params)  # the noise is the run's, not the global generator's
    run_dir = runner.start(cfg, out=tmp_path / "vae", quiet=True)
    import json
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test_kl"] > 0 and summary["test_loss"] < 0.5
    kept = stack_kept_fractions(a.encoders, a.decoders)
    assert kept.kept.max() <= 0.52 and 1 <= kept.latent.max() <= 4  # a unit: its mean and its log-variance
    for stack in (a.encoders, a.decoders):
        assert bool((stack.params[~stack.mask] == 0).all())


@pytest.mark.parametrize("operator", ["variance", "snip"])
def test_an_mlp_vae_takes_the_functional_context(operator):
    """Its encoder gives means and log-variances: the plain MLP's numpy context cannot run it."""
    cfg = C.from_dict({"run": {"generations": 2, "backend": "torch", "checkpoint_every": 0},
                       "data": {"source": "digits"}, "model": {"variational": True, "latent": 4},
                       "grid": {"cells": 3}, "prune": {"operator": operator, "target_kept": 0.6}})
    state = coevolve(build(cfg))
    assert stack_kept_fractions(state.encoders, state.decoders).kept.max() <= 0.61
