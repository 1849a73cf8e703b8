"""Compact export: the compact model computes the masked pair's function, loads without coevo,
and the CLI refuses bad input with one line and no file."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from coevo import export
from coevo.cli import main
from coevo.genome import autoencoder_layouts, init_params, state_dict
from coevo.measures import compact_size


def random_pair(rng: np.random.Generator, n_dims=12, hidden=(9, 7), latent=6, keep=0.6, dead=0.3):
    """A pair with random masks, whole dead neurons (incoming row and bias cut), constant neurons
    (incoming row cut, bias alive) and neurons with no outgoing weight; inputs and outputs intact."""
    enc_l, dec_l = autoencoder_layouts(n_dims, hidden, latent)
    states = []
    for role, layout in (("encoder", enc_l), ("decoder", dec_l)):
        params = torch.as_tensor(init_params(layout, 1, rng)[0])
        mask = torch.as_tensor(rng.random(layout.size) < keep)
        views = layout.split(mask)
        for i, (wm, bm) in enumerate(views):
            out_units = role == "decoder" and i == len(views) - 1
            if out_units:
                continue
            for j in range(wm.shape[0]):
                r = rng.random()
                if r < dead / 3:
                    wm[j] = False  # constant neuron: bias only
                    bm[j] = True
                elif r < 2 * dead / 3:
                    wm[j] = False  # dead neuron
                    bm[j] = False
                elif r < dead:
                    # no outgoing weight: cut column j of the next layer
                    nxt = views[i + 1][0] if i + 1 < len(views) else None
                    if nxt is not None:
                        nxt[:, j] = False
        if role == "encoder":
            views[0][0][0, :] |= True  # every input unit keeps a weight (first neuron's row)
        params = params * mask
        states.append(state_dict(layout, params, mask))
    return states[0], states[1], enc_l, dec_l


def check(enc_state, dec_state, x):
    model = export.compact_pair(enc_state, dec_state)
    pair = export.masked_pair(enc_state, dec_state)
    return model, export.max_difference(pair, model, x)


@pytest.mark.parametrize("seed", range(40))
def test_compact_computes_the_masked_pair(seed):
    rng = np.random.default_rng(seed)
    keep = [0.05, 0.2, 0.5, 0.9][seed % 4]
    enc_state, dec_state, enc_l, dec_l = random_pair(rng, keep=keep, dead=[0.0, 0.3, 0.7][seed % 3])
    x = torch.as_tensor(rng.normal(0, 3, (256, 12)), dtype=torch.float32)  # any input, not only [0, 1]
    model, diff = check(enc_state, dec_state, x)
    assert diff <= 1e-5
    assert model.widths[0] == 12 and model.widths[-1] == 12  # no input or output unit removed
    # the same count as coevo.measures.compact_size, also when no input reaches the outputs
    assert model.parameters == int(compact_size(enc_l + dec_l, alive_of(enc_state, enc_l, dec_state, dec_l))[0])


def alive_of(enc_state, enc_l, dec_state, dec_l) -> np.ndarray:
    """(1, P) alive entries of a saved pair, encoder then decoder, as coevo.measures reads them."""
    return np.concatenate([
        np.concatenate([(state[k] * state[f"{k}_mask"] != 0).reshape(-1).numpy()
                        for i in range(len(layout.layers)) for k in (f"{2 * i}.weight", f"{2 * i}.bias")])
        for state, layout in ((enc_state, enc_l), (dec_state, dec_l))])[None]


def test_constant_and_dead_neurons_are_removed_and_folded():
    rng = np.random.default_rng(0)
    enc_l, dec_l = autoencoder_layouts(5, (4,), 3)
    enc = torch.as_tensor(init_params(enc_l, 1, rng)[0])
    dec = torch.as_tensor(init_params(dec_l, 1, rng)[0])
    em, dm = torch.ones(enc_l.size, dtype=torch.bool), torch.ones(dec_l.size, dtype=torch.bool)
    (w0, b0), (w1, b1) = enc_l.split(em)
    w0[1] = False  # hidden neuron 1: constant relu(b)
    b0[1] = True
    w1[2] = False  # latent neuron 2: dead (nothing in, no bias)
    b1[2] = False
    (d0, _), (d1, _) = dec_l.split(dm)
    d0[:, 0] = False  # latent neuron 0: no outgoing weight
    with torch.no_grad():
        enc[enc_l.offsets[0] + 4 + 1] = 0.7  # hidden neuron 1's bias
    e_state, d_state = state_dict(enc_l, enc * em, em), state_dict(dec_l, dec * dm, dm)
    model, diff = check(e_state, d_state, torch.rand(64, 5))
    assert diff <= 1e-6
    assert model.widths == [5, 3, 1, 4, 5]
    assert model.latent_index.tolist() == [1]


def test_nothing_to_remove_keeps_the_shape():
    rng = np.random.default_rng(1)
    enc_l, dec_l = autoencoder_layouts(6, (5,), 3)
    e = torch.as_tensor(init_params(enc_l, 1, rng)[0])
    d = torch.as_tensor(init_params(dec_l, 1, rng)[0])
    e_state = state_dict(enc_l, e, torch.ones(enc_l.size, dtype=torch.bool))
    d_state = state_dict(dec_l, d, torch.ones(dec_l.size, dtype=torch.bool))
    model, diff = check(e_state, d_state, torch.rand(32, 6))
    assert diff <= 1e-6 and model.widths == [6, 5, 3, 5, 6]
    assert model.parameters == enc_l.size + dec_l.size


def hand_pair(cut, n_dims=6, hidden=(5,), latent=3, seed=0):
    """A full pair whose masks ``cut(encoder views, decoder views)`` edits (views: (weight, bias)
    mask per layer)."""
    rng = np.random.default_rng(seed)
    enc_l, dec_l = autoencoder_layouts(n_dims, hidden, latent)
    e, d = (torch.as_tensor(init_params(layout, 1, rng)[0]) for layout in (enc_l, dec_l))
    em, dm = torch.ones(enc_l.size, dtype=torch.bool), torch.ones(dec_l.size, dtype=torch.bool)
    cut(enc_l.split(em), dec_l.split(dm))
    return state_dict(enc_l, e * em, em), state_dict(dec_l, d * dm, dm), enc_l, dec_l


def _off(*entries):
    def cut(enc, dec):
        for net, layer, part, index in entries:
            (enc if net == "enc" else dec)[layer][part][index] = False
    return cut


ALL = slice(None)
EDGE_CASES = {  # name: (cut, compact widths)
    "nothing cut": (_off(), [6, 5, 3, 5, 6]),
    "a hidden layer all dead": (_off(("enc", 0, 0, ALL), ("enc", 0, 1, ALL)), [6, 0, 0, 0, 6]),
    "a hidden layer all constant": (_off(("enc", 0, 0, ALL)), [6, 0, 0, 0, 6]),
    "no alive latent neuron": (_off(("enc", 1, 0, ALL), ("enc", 1, 1, ALL)), [6, 0, 0, 0, 6]),
    "constant latent neurons": (_off(("enc", 1, 0, ALL)), [6, 0, 0, 0, 6]),
    "a decoder hidden layer all constant": (_off(("dec", 0, 0, ALL)), [6, 0, 0, 0, 6]),
    "no latent neuron with an outgoing weight": (_off(("dec", 0, 0, (ALL, ALL))), [6, 0, 0, 0, 6]),
    "one neuron with only its bias": (_off(("enc", 0, 0, 2)), [6, 4, 3, 5, 6]),
    "one dead neuron": (_off(("enc", 0, 0, 2), ("enc", 0, 1, 2)), [6, 4, 3, 5, 6]),
    "an output unit with only its bias": (_off(("dec", 1, 0, 0)), [6, 5, 3, 5, 6]),
    "every output unit with only its bias": (_off(("dec", 1, 0, ALL)), [6, 0, 0, 0, 6]),
    "an input unit with no weight": (_off(("enc", 0, 0, (ALL, 0))), [6, 5, 3, 5, 6]),
    "a latent neuron with no outgoing weight": (_off(("dec", 0, 0, (ALL, 1))), [6, 5, 2, 5, 6]),
}


@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_export_keeps_what_compact_fraction_counts(case):
    """The exported parameter count is compact_fraction times the dense count, in every edge case:
    a network whose outputs no input reaches ships its output biases alone (widths of 0), no
    placeholder neuron."""
    from coevo.measures import kept_fractions

    cut, widths = EDGE_CASES[case]
    enc_state, dec_state, enc_l, dec_l = hand_pair(cut)
    x = torch.rand(64, 6, dtype=torch.float64)
    model = export.compact_pair(enc_state, dec_state)
    assert export.max_difference(export.masked_pair(enc_state, dec_state), model, x) <= 1e-6
    assert model.widths == widths
    alive = alive_of(enc_state, enc_l, dec_state, dec_l)
    fraction = kept_fractions(enc_l, alive[:, :enc_l.size], dec_l, alive[:, enc_l.size:]).compact[0]
    assert model.parameters == round(fraction * (enc_l.size + dec_l.size))
    if widths[1] == 0:
        assert model.parameters == 6  # the output biases
        assert model.latent_index.size == 0


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_a_constant_network_exports_at_the_default_size_and_runs():
    """61,670 parameters at D = 1000; with no alive latent neuron compact_fraction counts the 1,000
    output biases, and the exported model (widths of 0) has exactly those, and runs in TorchScript
    (and ONNX when installed) to the constant output."""
    from coevo.measures import kept_fractions

    enc_state, dec_state, enc_l, dec_l = hand_pair(_off(("enc", 1, 0, ALL), ("enc", 1, 1, ALL)),
                                                   n_dims=1000, hidden=(30,), latent=10)
    assert enc_l.size + dec_l.size == 61_670
    alive = alive_of(enc_state, enc_l, dec_state, dec_l)
    fraction = kept_fractions(enc_l, alive[:, :enc_l.size], dec_l, alive[:, enc_l.size:]).compact[0]
    model = export.compact_pair(enc_state, dec_state)
    assert model.parameters == round(fraction * 61_670) == 1000
    assert model.widths == [1000, 0, 0, 0, 1000]
    x = torch.rand(8, 1000)
    enc, dec = export.masked_pair(enc_state, dec_state)
    with torch.no_grad():
        expected = dec(enc(x))
    loaded = torch.jit.load(io.BytesIO(export.torchscript_bytes(model)))
    assert torch.allclose(loaded(x), expected, atol=1e-6) and loaded.encode(x).shape == (8, 0)
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(export.onnx_bytes(model), providers=["CPUExecutionProvider"])
    y, z = sess.run(["reconstruction", "latent"], {"x": x.numpy()})
    assert np.abs(y - expected.numpy()).max() <= 1e-6 and z.shape == (8, 0)


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory):
    """A tiny finished run whose pairs are strongly pruned, with saved centres."""
    out = tmp_path_factory.mktemp("export") / "run"
    from coevo import runner
    from coevo.config import load
    from tests.conftest import TINY

    cfg = load(None, TINY + ["run.generations=6", "run.save_centres=true", "prune.probability=1.0",
                             "prune.amount=0.5", "prune.target_kept=0.1", "prune.operator=conjunctive"])
    runner.start(cfg, out, quiet=True)
    return out


NO_COEVO = ("import sys; sys.modules['coevo'] = None; import json, torch; "
            "m = torch.jit.load(sys.argv[1]); x = torch.load(sys.argv[2]); "
            "y, z = m(x), m.encode(x); torch.save({'y': y, 'z': z, 'idx': m.latent_index}, sys.argv[3])")


def test_torchscript_loads_without_coevo(pruned_run, tmp_path, capsys):
    out = tmp_path / "model.pt"
    assert main(["export", str(pruned_run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "parameters" in printed and "file size" in printed and "masked" in printed
    x = torch.rand(50, 40)
    torch.save(x, tmp_path / "x.pt")
    subprocess.run([sys.executable, "-c", NO_COEVO, str(out), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                   check=True, cwd=tmp_path)
    got = torch.load(tmp_path / "y.pt", weights_only=True)
    best = torch.load(pruned_run / "best.pt", weights_only=True)
    enc, dec = export.masked_pair(best["encoder"], best["decoder"])
    with torch.no_grad():
        z = enc(x)
        assert float((got["y"] - dec(z)).abs().max()) <= 1e-5
        assert float((got["z"] - z[:, got["idx"]]).abs().max()) <= 1e-5


def test_centres_one_file_per_cell(pruned_run, tmp_path, capsys):
    assert main(["export", str(pruned_run), "--which", "centres", "--out", str(tmp_path / "c.pt")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"c-cell{k}.pt" for k in range(4)]


def test_onnx_matches_with_onnxruntime(pruned_run, tmp_path, capsys):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    assert main(["export", str(pruned_run), "--format", "onnx", "--out", str(out)]) == 0
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((30, 40), dtype=np.float32)
    y, z = sess.run(["reconstruction", "latent"], {"x": x})
    best = torch.load(pruned_run / "best.pt", weights_only=True)
    enc, dec = export.masked_pair(best["encoder"], best["decoder"])
    idx = export.compact_pair(best["encoder"], best["decoder"]).latent_index
    with torch.no_grad():
        zt = enc(torch.as_tensor(x))
        assert np.abs(y - dec(zt).numpy()).max() <= 1e-5
        assert np.abs(z - zt[:, idx].numpy()).max() <= 1e-5


@pytest.mark.parametrize("args, words", [
    (["--format", "keras"], "--format 'keras' is not allowed"),
    (["--which", "all"], "--which 'all' is not allowed"),
    (["--out", "."], "is a directory"),
])
def test_bad_options_exit_2_one_line_nothing_written(pruned_run, tmp_path, capsys, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in pruned_run.iterdir())
    assert main(["export", str(pruned_run), "--out", str(tmp_path / "m.pt"), *args]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == [] and sorted(p.name for p in pruned_run.iterdir()) == before


def test_not_a_run_exit_2(tmp_path, capsys):
    (tmp_path / "junk").mkdir()
    assert main(["export", str(tmp_path / "junk")]) == 2
    err = capsys.readouterr().err
    assert "not a coevo run directory" in err and err.count("\n") == 1
    assert list((tmp_path / "junk").iterdir()) == []


def test_missing_onnx_extra_exit_2(pruned_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert main(["export", str(pruned_run), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "coevo[export]" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_nothing_to_remove_exports_and_says_so(tmp_path, capsys):
    from coevo import runner
    from coevo.config import load
    from tests.conftest import TINY

    run = tmp_path / "run"
    runner.start(load(None, TINY + ["run.generations=1", "prune.operator=none"]), run, quiet=True)
    capsys.readouterr()
    assert main(["export", str(run)]) == 0
    out = capsys.readouterr().out
    assert "nothing to remove" in out and (run / "model.pt").exists()
    assert "40 -> 8 -> 3 -> 8 -> 40  =>  40 -> 8 -> 3 -> 8 -> 40" in out
