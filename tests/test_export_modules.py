"""Export of module models (the conv family, a user's factory): dense with masked zeros, the same
function as the run's functional forward, loadable without coevo; refusals in one line."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from coevo import export
from coevo.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")

TINY_DIGITS = ["data.source=digits", "grid.cells=4", "run.generations=2", "prune.target_kept=0.2",
               "train.batch_size=50", "run.save_centres=true"]

FACTORY = textwrap.dedent("""
    from torch import nn


    def pair(input_shape, latent, width=4):
        c, h, w = input_shape
        enc = nn.Sequential(nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                            nn.Linear(width * (h // 2) * (w // 2), latent), nn.ReLU())
        dec = nn.Sequential(nn.Linear(latent, width * (h // 2) * (w // 2)), nn.ReLU(),
                            nn.Unflatten(1, (width, h // 2, w // 2)), nn.Upsample(scale_factor=2),
                            nn.Conv2d(width, c, 3, padding=1), nn.Sigmoid())
        return enc, dec
""")


def _run(out, overrides):
    from coevo import runner
    from coevo.config import load

    runner.start(load(None, TINY_DIGITS + overrides), out, quiet=True)
    return out


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("conv") / "run", ["model.family=conv", "model.params.channels=[4,8]"])


@pytest.fixture(scope="module")
def factory_run(tmp_path_factory):
    where = tmp_path_factory.mktemp("factory")
    (where / "pair.py").write_text(FACTORY)
    return _run(where / "run", [f"model.factory={where / 'pair.py'}:pair"])


def _functional(run_dir, state):
    """The run's own forward of a saved pair on its validation rows: flat (B, D) in and out."""
    from coevo import data
    from coevo.config import load
    from coevo.model import ref_of
    from coevo.model.graph import flatten_parameters, trace
    from coevo.training.functional import reconstruct

    cfg = load(run_dir / "config.toml")
    ds = data.load(cfg.data, cfg.run.seed)
    ref = ref_of(cfg, ds.shape)
    model = export.module_model(state["encoder"], state["decoder"], ref)
    enc_l, dec_l = trace(ref, (model.encoder, model.decoder))
    x = torch.as_tensor(ds.validation[:40])
    rows = [torch.as_tensor(flatten_parameters(m, l)) for m, l in ((model.encoder, enc_l), (model.decoder, dec_l))]
    with torch.no_grad():
        return x, reconstruct(enc_l, dec_l, *rows, x), ds.shape


def test_conv_torchscript_is_the_runs_forward_with_masked_zeros(conv_run, tmp_path, capsys):
    out = tmp_path / "model.pt"
    assert main(["export", str(conv_run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "model.family 'conv'" in printed and "dense" in printed and "validation rows" in printed
    best = torch.load(conv_run / "best.pt", weights_only=True)
    x, expected, shape = _functional(conv_run, best)
    assert shape == (1, 8, 8)
    m = torch.jit.load(str(out))
    with torch.no_grad():
        y = m(x.reshape(-1, *shape))
        assert y.shape == (40, 1, 8, 8)
        assert float((y.reshape(40, -1) - expected).abs().max()) <= 1e-5
        z = m.encode(x.reshape(-1, *shape))
        assert z.shape == (40, 10) and torch.equal(m.decode(z), y)
    # dense: every parameter of the module, each masked entry an exact zero
    params = dict(m.named_parameters())
    for role in ("encoder", "decoder"):
        for key, mask in best[role].items():
            if key.endswith("_mask"):
                value = params[f"{role}.{key[:-5]}"]
                assert value.shape == mask.shape and bool((value[~mask] == 0).all())
    assert not bool(best["encoder"]["0.weight_mask"].all())  # the run did prune


def test_centres_export_one_file_per_cell(conv_run, tmp_path, capsys):
    assert main(["export", str(conv_run), "--which", "centres", "--out", str(tmp_path / "c.pt")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"c-cell{k}.pt" for k in range(4)]


# -I leaves the current directory and PYTHONPATH out of sys.path; coevo's editable install would
# still import, so the import is blocked too (as tests/test_export.py does)
NO_COEVO = ("import sys; sys.modules['coevo'] = None; import torch; "
            "print([tuple(torch.jit.load(f)(torch.rand(3, 1, 8, 8)).shape) for f in sys.argv[1:]])")


def test_torchscript_loads_without_coevo(conv_run, factory_run, tmp_path, capsys):
    files = [tmp_path / "conv.pt", tmp_path / "factory.pt"]
    for run, out in zip((conv_run, factory_run), files):
        assert main(["export", str(run), "--out", str(out)]) == 0
    src = factory_run.parent / "pair.py"
    src.rename(factory_run.parent / "gone.py")  # the archive holds the modules' code: no factory file needed
    try:
        done = subprocess.run([sys.executable, "-I", "-c", NO_COEVO, *map(str, files)], cwd=tmp_path,
                              capture_output=True, text=True, check=True)
    finally:
        (factory_run.parent / "gone.py").rename(src)
    assert done.stdout.strip() == "[(3, 1, 8, 8), (3, 1, 8, 8)]"


def test_factory_with_pooling_and_upsampling_exports(factory_run, tmp_path, capsys):
    out = tmp_path / "model.pt"
    [result] = export.export(factory_run, out)
    assert result.kind == "dense" and result.max_difference <= 1e-5 and out.exists()
    assert "model.factory" in result.model and result.notes == ()  # scripted, not traced
    x, expected, shape = _functional(factory_run, torch.load(factory_run / "best.pt", weights_only=True))
    m = torch.jit.load(str(out))
    with torch.no_grad():
        assert float((m(x.reshape(-1, *shape)).reshape(len(x), -1) - expected).abs().max()) <= 1e-5


def test_a_factory_that_moved_is_one_line_naming_model_factory(factory_run, tmp_path, capsys):
    src = factory_run.parent / "pair.py"
    src.rename(factory_run.parent / "moved.py")
    try:
        assert main(["export", str(factory_run), "--out", str(tmp_path / "m.pt")]) == 2
    finally:
        (factory_run.parent / "moved.py").rename(src)
    err = capsys.readouterr().err
    assert "model.factory" in err and "config.toml" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_a_difference_from_the_runs_forward_is_refused(conv_run, tmp_path, capsys, monkeypatch):
    real = export._run_exported

    def off(*args):
        y, note = real(*args)
        return y + 1e-3, note

    monkeypatch.setattr(export, "_run_exported", off)
    assert main(["export", str(conv_run), "--out", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err
    assert "differs from the run's forward" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


class _Reshape(torch.nn.Module):
    def __init__(self, *shape):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        try:  # TorchScript compiles no try block
            return x.reshape(x.shape[0], *self.shape)
        except RuntimeError:
            raise


def test_unscriptable_modules_are_traced_and_say_so():
    enc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5), torch.nn.ReLU())
    dec = torch.nn.Sequential(torch.nn.Linear(5, 64), _Reshape(1, 8, 8), torch.nn.Sigmoid())
    model = export.ModuleAutoencoder(enc, dec, (1, 8, 8)).eval()
    payload, note = export.module_torchscript(model, torch.rand(2, 1, 8, 8))
    assert "torch.jit.script failed" in note and "traced" in note
    m = torch.jit.load(io.BytesIO(payload))
    x = torch.rand(7, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(m(x), model(x)) and torch.allclose(m.decode(m.encode(x)), model(x))


def test_onnx_matches_with_onnxruntime(conv_run, factory_run, tmp_path, capsys):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    for run in (conv_run, factory_run):
        out = tmp_path / f"{run.parent.name}.onnx"
        assert main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 0
        x, expected, shape = _functional(run, torch.load(run / "best.pt", weights_only=True))
        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        for rows in (x[:3], x):  # a dynamic batch axis
            y, z = sess.run(["reconstruction", "latent"], {"x": rows.reshape(-1, *shape).numpy()})
            assert y.shape == (len(rows), *shape) and z.shape[0] == len(rows)
            assert np.abs(y.reshape(len(rows), -1) - expected[: len(rows)].numpy()).max() <= 1e-5


def test_an_mlp_family_run_on_the_torch_backend_exports_compact(tmp_path, capsys):
    from coevo import runner
    from coevo.config import load
    from tests.conftest import TINY

    run = tmp_path / "run"
    runner.start(load(None, TINY + ["run.generations=1", "run.backend=torch"]), run, quiet=True)
    [result] = export.export(run, tmp_path / "m.pt")
    assert result.kind == "compact" and result.widths_before[0] == 40
