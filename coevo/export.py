"""Compact dense export of a pruned autoencoder: TorchScript (and ONNX with ``coevo[export]``).

A pruned pair is a dense network whose masked entries are zero. The compact model removes the
neurons that cannot matter and computes the same function (up to float32 rounding):

1. Multiply every weight and bias by its mask (an entry is alive when its mask is set and its
   value is not exactly zero, as in :mod:`coevo.measures`).
2. Forward, layer by layer: a neuron is *varying* when an alive weight from a kept (varying)
   unit feeds it; input units always vary. A hidden neuron that does not vary outputs a
   constant, ``act(b_j)`` with ``b_j`` its bias plus what constant neurons upstream feed it;
   that constant times its outgoing weights is folded into the next layer's bias and the
   neuron is removed.
3. Backward, from the outputs: a varying neuron with no alive weight into a kept neuron of the
   next layer is dropped (which can leave the neurons feeding it without an outgoing weight:
   the backward sweep sees them next).

Removing a neuron in step 3 never changes what a kept neuron receives, and step 2 depends only
on what lies upstream, so the two sweeps reach the fixed point that repeated removal would. The
parameter count equals :func:`coevo.measures.compact_size` (``compact_fraction`` times the
dense count). Input units (the encoder's first layer's columns) and output units (the decoder's
last layer's rows) are never removed.

A hidden layer may be left with no neuron: then no input reaches the outputs, which are the
constants their biases hold, and every hidden layer is empty (a later one keeps nothing that an
input drives, an earlier one nothing that reaches an output). The compact model keeps those widths of 0 and
ships the output biases alone, which is what ``compact_fraction`` counts: a placeholder neuron
would carry only zeros (and its incoming weights would keep upstream neurons that reach nothing,
e.g. widths 12-4-2-1-1-1-12 for 12-0-0-0-0-0-12), and TorchScript and ONNX (onnxruntime) both
run a Linear / Gemm with 0 inputs or outputs.

The latent layer is one of the hidden layers: ``encode(x)`` of the compact model returns only
the latent neurons that survive, which are the masked encoder's codes at ``latent_index``
(stored in the model); the removed ones are constant or reach no output.
"""

from __future__ import annotations

import copy
import io
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from coevo.errors import UserError

FORMATS = ("torchscript", "onnx")
WHICH = ("best", "centres", "front")


@dataclass(frozen=True)
class DenseLayer:
    weight: np.ndarray  # (out, in) float32
    bias: np.ndarray  # (out,) float32
    activation: str  # 'relu' or 'sigmoid'


@dataclass(frozen=True)
class Compact:
    """A compacted autoencoder: encoder and decoder layers, and which original units survive."""

    encoder: list[DenseLayer]
    decoder: list[DenseLayer]
    kept: list[np.ndarray]  # per interface (input, hidden..., latent, ..., output): original indices kept
    latent_index: np.ndarray  # original indices of the latent neurons that encode() returns

    @property
    def parameters(self) -> int:
        return sum(l.weight.size + l.bias.size for l in self.encoder + self.decoder)

    @property
    def widths(self) -> list[int]:
        return [int(k.size) for k in self.kept]


def _act(x: np.ndarray, activation: str) -> np.ndarray:
    return np.maximum(x, 0.0) if activation == "relu" else 1.0 / (1.0 + np.exp(-x))


def network_layers(state: dict[str, torch.Tensor], output: str = "relu") -> list[tuple[np.ndarray, ...]]:
    """A saved network (:func:`coevo.genome.state_dict` names) as (weight, bias, weight_mask,
    bias_mask, activation) per layer; without masks, every non-zero entry counts as alive."""
    n_layers = len([k for k in state if k.endswith(".weight")])
    layers = []
    for i in range(n_layers):
        w = state[f"{2 * i}.weight"].detach().cpu().numpy().astype(np.float32)
        b = state[f"{2 * i}.bias"].detach().cpu().numpy().astype(np.float32)
        wm = state.get(f"{2 * i}.weight_mask")
        bm = state.get(f"{2 * i}.bias_mask")
        wm = np.ones(w.shape, bool) if wm is None else wm.cpu().numpy().astype(bool)
        bm = np.ones(b.shape, bool) if bm is None else bm.cpu().numpy().astype(bool)
        act = output if i == n_layers - 1 else "relu"
        layers.append((w, b, wm, bm, act))
    return layers


def compact(layers: Sequence[tuple], n_encoder: int) -> Compact:
    """Compact a chain of layers ``(weight, bias, weight_mask, bias_mask, activation)``; the first
    ``n_encoder`` layers are the encoder (its last layer's outputs are the latent codes)."""
    ws, bs, acts = [], [], []
    for w, b, wm, bm, act in layers:
        wm = np.asarray(wm, bool) & (np.asarray(w) != 0)
        bm = np.asarray(bm, bool) & (np.asarray(b) != 0)
        ws.append(np.where(wm, w, 0).astype(np.float64))
        bs.append(np.where(bm, b, 0).astype(np.float64))
        acts.append(act)
    n = len(ws)
    if not 1 <= n_encoder < n:
        raise ValueError(f"n_encoder must be in [1, {n - 1}], got {n_encoder}")

    # forward: which units vary; fold constant hidden units into the next layer's bias
    varying = [np.ones(ws[0].shape[1], bool)]
    const = [np.zeros(ws[0].shape[1])]  # value of each unit that does not vary (0 where it varies)
    for i in range(n):
        bs[i] = bs[i] + ws[i][:, ~varying[i]] @ const[i][~varying[i]]
        ws[i][:, ~varying[i]] = 0.0
        out_varying = (ws[i][:, varying[i]] != 0).any(axis=1)
        if i == n - 1:
            out_varying = np.ones_like(out_varying)  # output units always stay
        varying.append(out_varying)
        const.append(np.where(out_varying, 0.0, _act(bs[i], acts[i])))

    # backward: drop varying units with no alive weight into a kept unit of the next layer (a
    # hidden layer may end empty: the outputs are then their biases, see the module docstring)
    kept = list(varying)
    for i in range(n - 1, 0, -1):  # interface i sits between layer i - 1 and layer i
        kept[i] = varying[i] & (ws[i][kept[i + 1]] != 0).any(axis=0)

    dense = []
    for i in range(n):
        w = ws[i][np.ix_(kept[i + 1], kept[i])]
        dense.append(DenseLayer(w.astype(np.float32), bs[i][kept[i + 1]].astype(np.float32), acts[i]))
    index = [np.flatnonzero(k) for k in kept]
    return Compact(dense[:n_encoder], dense[n_encoder:], index, index[n_encoder])


def compact_pair(encoder: dict[str, torch.Tensor], decoder: dict[str, torch.Tensor]) -> Compact:
    """Compact a saved encoder-decoder pair (``best.pt``'s ``encoder`` and ``decoder``)."""
    enc = network_layers(encoder, "relu")
    dec = network_layers(decoder, "sigmoid")
    return compact(enc + dec, len(enc))


def masked_pair(encoder: dict[str, torch.Tensor], decoder: dict[str, torch.Tensor]) -> tuple[torch.nn.Module, ...]:
    """The pair as plain torch modules with every weight multiplied by its mask."""
    from coevo.genome import to_module

    def masked(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for k, v in state.items():
            if not k.endswith("_mask"):
                m = state.get(f"{k}_mask")
                out[k] = v * m.to(v.dtype) if m is not None else v
        return out

    return to_module(masked(encoder)), to_module(masked(decoder), output="sigmoid")


class CompactAutoencoder(torch.nn.Module):
    """The compact model: ``model(x)`` reconstructs, ``model.encode(x)`` gives the surviving
    latent codes (original indices in the buffer ``latent_index``), ``model.decode(z)`` maps
    such codes back."""

    def __init__(self, model: Compact) -> None:
        super().__init__()
        self.encoder = _sequential(model.encoder)
        self.decoder = _sequential(model.decoder)
        self.register_buffer("latent_index", torch.as_tensor(model.latent_index, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    @torch.jit.export
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    @torch.jit.export
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


def _sequential(layers: Sequence[DenseLayer]) -> torch.nn.Sequential:
    mods: list[torch.nn.Module] = []
    for layer in layers:
        with warnings.catch_warnings():  # a layer of width 0 (a constant network): nothing to initialise
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors", category=UserWarning)
            lin = torch.nn.Linear(layer.weight.shape[1], layer.weight.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(layer.weight))
            lin.bias.copy_(torch.as_tensor(layer.bias))
        mods += [lin, torch.nn.ReLU() if layer.activation == "relu" else torch.nn.Sigmoid()]
    return torch.nn.Sequential(*mods).eval()


def torchscript_bytes(model: Compact) -> bytes:
    """The compact model as a TorchScript archive (``torch.jit.load`` reads it; coevo not needed)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():  # torch 2.9+ deprecates TorchScript; torch.jit.load still reads it
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
        torch.jit.save(torch.jit.script(CompactAutoencoder(model).eval()), buf)
    return buf.getvalue()


def _onnx():
    try:
        import onnx
    except ImportError:
        raise UserError("--format onnx needs onnx: pip install 'coevo[export]'") from None
    return onnx


def onnx_bytes(model: Compact) -> bytes:
    """The compact model as an ONNX graph (Gemm, Relu, Sigmoid), built with ``onnx.helper``:
    input ``x`` (batch, D), outputs ``reconstruction`` (batch, D) and ``latent`` (batch, kept
    latent neurons; their original indices are in the metadata key ``latent_index``)."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    name = "x"
    layers = model.encoder + model.decoder
    for i, layer in enumerate(layers):
        w, b = f"w{i}", f"b{i}"
        inits += [numpy_helper.from_array(layer.weight, w), numpy_helper.from_array(layer.bias, b)]
        nodes.append(helper.make_node("Gemm", [name, w, b], [f"z{i}"], transB=1))
        last_encoder = i == len(model.encoder) - 1
        out = "latent" if last_encoder else "reconstruction" if i == len(layers) - 1 else f"a{i}"
        nodes.append(helper.make_node("Relu" if layer.activation == "relu" else "Sigmoid", [f"z{i}"], [out]))
        name = out
    d_in = layers[0].weight.shape[1]
    d_lat = model.encoder[-1].weight.shape[0]
    graph = helper.make_graph(
        nodes, "coevo_compact_autoencoder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", d_in])],
        [helper.make_tensor_value_info("reconstruction", TensorProto.FLOAT, ["batch", layers[-1].weight.shape[0]]),
         helper.make_tensor_value_info("latent", TensorProto.FLOAT, ["batch", d_lat])],
        inits)
    proto = helper.make_model(graph, producer_name="coevo", opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8  # readable by onnxruntime >= 1.14
    helper.set_model_props(proto, {"latent_index": ",".join(str(int(j)) for j in model.latent_index)})
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def max_difference(pair: tuple[torch.nn.Module, torch.nn.Module], model: Compact, x: torch.Tensor) -> float:
    """Max abs difference between the masked pair and the compact model, on reconstructions and
    on the surviving latent codes, computed in ``x``'s dtype (float64: the maths alone; float32:
    also the different summation order of the smaller matrix products)."""
    enc, dec = (copy.deepcopy(m).to(x.dtype) for m in pair)
    comp = CompactAutoencoder(model).to(x.dtype)
    with torch.no_grad():
        z = enc(x)
        zc = comp.encode(x)
        return max(float((dec(z) - comp.decoder(zc)).abs().max()),
                   float((z[:, comp.latent_index] - zc).abs().max()) if zc.numel() else 0.0)


def time_pair(first, second, x: torch.Tensor, repeats: int = 50) -> tuple[float, float]:
    """Median seconds of ``first(x)`` and of ``second(x)``, no grad, timed alternately, each going
    first in every other round (after two warm-up calls each), so that a busy machine and the
    call order slow both alike."""
    with torch.no_grad():
        for _ in range(2):
            first(x)
            second(x)
        times: tuple[list[float], list[float]] = ([], [])
        for i in range(repeats):
            pairs = ((first, times[0]), (second, times[1]))
            for fn, out in pairs[i % 2:] + pairs[: i % 2]:  # each goes first in turn
                t0 = time.perf_counter()
                fn(x)
                out.append(time.perf_counter() - t0)
    return float(np.median(times[0])), float(np.median(times[1]))


@dataclass(frozen=True)
class Exported:
    path: Path
    parameters_before: int
    parameters_after: int
    widths_before: list[int]
    widths_after: list[int]
    bytes: int
    max_difference: float
    seconds_masked: float
    seconds_compact: float
    batch: int


def _pairs(run_dir: Path, which: str) -> list[tuple[dict, dict]]:
    from coevo.report import read_summary

    read_summary(run_dir)  # a finished run directory, or a one-line UserError
    if which == "best":
        path = run_dir / "best.pt"
        if not path.exists():
            raise UserError(f"{run_dir} has no best.pt")
        saved = _load(path, run_dir)
        return [(saved["encoder"], saved["decoder"])]
    if which == "front":
        path = run_dir / "front.pt"
        if not path.exists():
            raise UserError(f"{run_dir} has no front.pt: only a run with selection.objectives = "
                            f"[\"loss\", \"kept\"] has a front; use --which best")
        saved = _load(path, run_dir)
        return list(zip(saved["encoders"], saved["decoders"]))
    path = run_dir / "centres.pt"
    if not path.exists():
        raise UserError(f"{run_dir} has no centres.pt: the run did not save its centres "
                        f"(set run.save_centres = true), use --which best")
    saved = _load(path, run_dir)
    return list(zip(saved["encoders"], saved["decoders"]))


def _load(path: Path, run_dir: Path) -> dict:
    from coevo.rundir.directory import torch_load

    return torch_load(path, "saved by the run", run_dir,
                      f"`coevo resume {run_dir}` writes it again from the newest checkpoint", weights_only=True)


def default_out(run_dir: Path, fmt: str) -> Path:
    return Path(run_dir) / ("model.pt" if fmt == "torchscript" else "model.onnx")


def export(run_dir: str | Path, out: str | Path | None = None, fmt: str = "torchscript", which: str = "best",
           batch: int = 1000, repeats: int = 50, seed: int = 0) -> list[Exported]:
    """Compact the best pair (or every centre pair) of a finished run and write it in ``fmt``.

    ``--which centres`` writes one file per cell, ``STEM-cellK.SUFFIX``; ``--which front`` one per
    point of a multi-objective run's front, ``STEM-frontK.SUFFIX``, smallest first. Everything is checked and
    built in memory first and each file is written atomically, so a refused export writes nothing.
    Each compact model is checked against its masked pair on ``batch`` uniform random rows
    (max abs difference <= 1e-6 in float64, else RuntimeError: a bug) and both are timed on them."""
    from coevo.rundir import directory as rundir
    from coevo.rundir.checkpoint import atomic_write_bytes

    run_dir = Path(run_dir)
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is not allowed; choose one of: {', '.join(FORMATS)}")
    if which not in WHICH:
        raise UserError(f"--which {which!r} is not allowed; choose one of: {', '.join(WHICH)}")
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    if fmt == "onnx":
        _onnx()
    pairs = _pairs(run_dir, which)
    out = Path(out) if out is not None else default_out(run_dir, fmt)
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give a file name (e.g. {out / default_out(run_dir, fmt).name})")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: the directory {out.parent} does not exist")
    tag = "front" if which == "front" else "cell"  # the front's points, smallest first
    paths = [out] if which == "best" else [out.with_name(f"{out.stem}-{tag}{k}{out.suffix}") for k in range(len(pairs))]
    rundir.remove_dead_temporaries(run_dir, *paths)  # a killed export's .model.pt.tmpPID
    writer = torchscript_bytes if fmt == "torchscript" else onnx_bytes
    gen = torch.Generator().manual_seed(seed)
    results, payloads = [], []
    for (enc_state, dec_state), path in zip(pairs, paths):
        model = compact_pair(enc_state, dec_state)
        pair = masked_pair(enc_state, dec_state)
        d_in = model.encoder[0].weight.shape[1]
        x = torch.rand(batch, d_in, generator=gen)
        # the same function: exact up to the float32 rounding of folded biases, checked in float64;
        # in float32 the smaller products also sum in another order (reported, ~1e-6 to 1e-4)
        exact = max_difference(pair, model, x.double())
        if exact > 1e-6:
            raise RuntimeError(f"compact model differs from the masked pair by {exact:.3g} in float64 "
                               f"(a bug in coevo.export; please report it)")
        diff = max_difference(pair, model, x)
        comp = CompactAutoencoder(model)
        enc, dec = pair
        t_masked, t_compact = time_pair(lambda v: dec(enc(v)), comp, x, repeats)
        payload = writer(model)
        before = [int(enc[0].weight.shape[1])] + [int(m.weight.shape[0]) for m in list(enc) + list(dec)
                                                   if isinstance(m, torch.nn.Linear)]
        n_before = sum(p.numel() for p in list(enc.parameters()) + list(dec.parameters()))
        payloads.append(payload)
        results.append(Exported(path, n_before, model.parameters, before, model.widths, len(payload), diff,
                                t_masked, t_compact, batch))
    for path, payload in zip(paths, payloads):
        atomic_write_bytes(path, payload)
    _note_derived(run_dir, paths)
    return results


def _note_derived(run_dir: Path, paths: Sequence[Path]) -> None:
    """Record which best pair the files inside the run directory came from (coevo.rundir.directory)."""
    import json

    from coevo.rundir import directory as rundir

    try:
        pair = json.loads((run_dir / "summary.json").read_text()).get("best_pair")
    except (OSError, ValueError):
        pair = None
    if isinstance(pair, str):
        rundir.record_derived(run_dir, paths, pair)


def format_exported(results: Sequence[Exported]) -> str:
    lines = []
    for r in results:
        lines.append(f"{r.path}")
        lines.append(f"  parameters  {r.parameters_before:,} -> {r.parameters_after:,} "
                     f"({r.parameters_after / r.parameters_before:.3f} of the dense pair)")
        lines.append(f"  widths      {' -> '.join(map(str, r.widths_before))}  =>  {' -> '.join(map(str, r.widths_after))}")
        lines.append(f"  file size   {r.bytes:,} bytes")
        lines.append(f"  max |compact - masked| on {r.batch} random rows: {r.max_difference:.2e}")
        lines.append(f"  inference on a batch of {r.batch}: masked {r.seconds_masked * 1e3:.3f} ms, "
                     f"compact {r.seconds_compact * 1e3:.3f} ms ({r.seconds_masked / r.seconds_compact:.2f}x)")
        if r.widths_before == r.widths_after:
            lines.append("  nothing to remove: every neuron is on a live path; exported the masked pair as it is")
    return "\n".join(lines)
