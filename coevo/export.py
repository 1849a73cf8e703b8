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

Module models
-------------
A run of any other pair of torch modules (``model.family = "conv"`` or a ``model.factory``; an
MLP-family run exports as above whatever its backend) exports *dense*: the run's own modules, built
again from the family or factory (:func:`coevo.model.build_pair`), with the saved parameters
multiplied by their masks, so every pruned entry ships as an exact zero; no dead channel or
neuron is removed (the compact Linear-chain export above is the MLP family's alone). The model,
:class:`ModuleAutoencoder`, maps ``x`` of shape (N, *sample shape) to its reconstruction of the
same shape, with ``encode(x)`` and ``decode(z)``; TorchScript scripts it, or, where
``torch.jit.script`` cannot compile the user's modules, traces it on an example batch (the result
says so). ONNX exports its forward with ``torch.onnx.export`` (outputs ``reconstruction`` and
``latent``, a dynamic batch axis). Each exported file is run on validation rows and compared with
the run's functional forward (:func:`coevo.training.functional.reconstruct`); a difference above
1e-4 is refused.
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


def masked_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A saved network's parameters (no ``NAME_mask`` keys), each multiplied by its mask."""
    out = {}
    for k, v in state.items():
        if not k.endswith("_mask"):
            m = state.get(f"{k}_mask")
            out[k] = v * m.to(v.dtype) if m is not None else v
    return out


def masked_pair(encoder: dict[str, torch.Tensor], decoder: dict[str, torch.Tensor]) -> tuple[torch.nn.Module, ...]:
    """The pair as plain torch modules with every weight multiplied by its mask."""
    from coevo.genome import to_module

    return to_module(masked_state(encoder)), to_module(masked_state(decoder), output="sigmoid")


class _Pair(torch.nn.Module):
    """An exported autoencoder's interface: ``encoder`` then ``decoder``, and each alone."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    @torch.jit.export
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    @torch.jit.export
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


class CompactAutoencoder(_Pair):
    """The compact model: ``model(x)`` reconstructs, ``model.encode(x)`` gives the surviving
    latent codes (original indices in the buffer ``latent_index``), ``model.decode(z)`` maps
    such codes back."""

    def __init__(self, model: Compact) -> None:
        super().__init__()
        self.encoder = _sequential(model.encoder)
        self.decoder = _sequential(model.decoder)
        self.register_buffer("latent_index", torch.as_tensor(model.latent_index, dtype=torch.long))



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


# ------------------------------------------------------------------ module models (dense)

CHECK_ROWS = 64
"""How many validation rows each exported module model is run on against the run's forward."""
TOLERANCE = 1e-4
"""The largest max abs difference from the run's forward that an exported module model may show."""


class ModuleAutoencoder(_Pair):
    """A module model's pair, dense with masked zeros: ``model(x)`` maps (N, *sample shape) to its
    reconstruction of that shape, ``encode(x)`` gives the latent codes, ``decode(z)`` maps them
    back; the buffer ``sample_shape`` holds one sample's shape."""

    def __init__(self, encoder: torch.nn.Module, decoder: torch.nn.Module, sample_shape: Sequence[int]) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.register_buffer("sample_shape", torch.as_tensor([int(n) for n in sample_shape], dtype=torch.long))



class _Traceable(torch.nn.Module):
    """A :class:`ModuleAutoencoder`'s methods without ``@torch.jit.export`` (which
    ``torch.jit.trace_module`` would script, and fail on, again)."""

    def __init__(self, model: ModuleAutoencoder) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.decoder = model.decoder
        self.register_buffer("sample_shape", model.sample_shape.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


class _OnnxGraph(torch.nn.Module):
    """What ONNX exports of a :class:`ModuleAutoencoder`: (reconstruction, latent), the encoder run once."""

    def __init__(self, model: ModuleAutoencoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.model.encoder(x)
        return self.model.decoder(z), z


def is_module_model(model_config) -> bool:
    """Whether a run's ``[model]`` (a :class:`coevo.config.ModelConfig`, or the TOML table as a
    dict) names a module model: a factory, or a family other than the MLP."""
    get = model_config.get if isinstance(model_config, dict) else lambda k, d: getattr(model_config, k, d)
    return bool(get("factory", "")) or get("family", "mlp") != "mlp"


def _run_is_module_model(run_dir: Path) -> bool:
    """Read from the run's config.toml's ``[model]`` table alone, so that an MLP run exports as it
    always has (whatever else its config holds); no config.toml: an MLP run of an older coevo."""
    import tomllib

    path = run_dir / "config.toml"
    if not path.is_file():
        return False
    try:
        table = tomllib.loads(path.read_text()).get("model", {})
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} cannot be read ({exc}); coevo export needs the run's config") from None
    return is_module_model(table if isinstance(table, dict) else {})


def _factory_of(ref, run_dir: Path):
    """The family or factory of ``ref``, or a one-line UserError naming model.factory and the fix."""
    from coevo.errors import ConfigError
    from coevo.model import resolve_factory

    try:
        return resolve_factory(ref.source)
    except ConfigError as exc:
        if not ref.is_factory:
            raise
        raise UserError(f"{exc}; coevo export rebuilds the run's modules from model.factory: put the factory back "
                        f"where the run found it (relative paths are from the directory you run coevo in) or set "
                        f"model.factory in {run_dir / 'config.toml'} to where it is now") from None


def _module_states(net: torch.nn.Module, state: dict[str, torch.Tensor], role: str, what: str,
                   run_dir: Path) -> None:
    """Load a saved network (masks applied) into ``net``, or a one-line UserError."""
    params = masked_state(state)
    own = net.state_dict()
    missing = sorted(set(own) - set(params))
    extra = sorted(set(params) - set(own))
    wrong = sorted(k for k in set(own) & set(params) if tuple(own[k].shape) != tuple(params[k].shape))
    if missing or extra or wrong:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}" if extra else
                  f"{wrong[0]} is {tuple(params[wrong[0]].shape)} saved, {tuple(own[wrong[0]].shape)} built")
        raise UserError(f"{run_dir}: the saved {role} does not fit the {role} that {what} builds now ({detail}); "
                        f"restore the family or factory and model.params the run used")
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in params.items()})
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)


def module_model(enc_state: dict[str, torch.Tensor], dec_state: dict[str, torch.Tensor], ref, factory=None,
                 run_dir: Path = Path(".")) -> ModuleAutoencoder:
    """A saved module-model pair as a :class:`ModuleAutoencoder` (masks applied)."""
    from coevo.model import build_pair

    with torch.random.fork_rng(devices=[]):  # the values are replaced: leave torch's random state alone
        torch.manual_seed(0)
        enc, dec = build_pair(ref, factory)
    _module_states(enc, enc_state, "encoder", ref.what, run_dir)
    _module_states(dec, dec_state, "decoder", ref.what, run_dir)
    if getattr(ref, "variational", False):  # a VAE exports its deterministic path: the decoder reads the means
        enc = torch.nn.Sequential(enc, Means(ref.latent))
    return ModuleAutoencoder(enc, dec, ref.input_shape).eval()


def _raw_encoder(model: "ModuleAutoencoder") -> torch.nn.Module:
    enc = model.encoder
    return enc[0] if isinstance(enc, torch.nn.Sequential) and len(enc) == 2 and isinstance(enc[1], Means) else enc


class Means(torch.nn.Module):
    """A VAE encoder's means: the first ``latent`` of its 2 x latent outputs."""

    def __init__(self, latent: int) -> None:
        super().__init__()
        self.latent = int(latent)

    def forward(self, stats: torch.Tensor) -> torch.Tensor:
        return stats[:, :self.latent]


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"


def module_torchscript(model: ModuleAutoencoder, example: torch.Tensor) -> tuple[bytes, str]:
    """The model as a TorchScript archive, scripted, or traced on ``example`` (forward, encode and
    decode) where scripting fails; and a note saying which (empty when scripted)."""
    buf = io.BytesIO()
    note = ""
    with warnings.catch_warnings():  # torch 2.9+ deprecates TorchScript; torch.jit.load still reads it
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
        try:
            compiled = torch.jit.script(model)
        except Exception as exc:  # a user's module TorchScript cannot compile
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            with torch.no_grad():
                z = model.encode(example)
                try:
                    compiled = torch.jit.trace_module(_Traceable(model).eval(),
                                                      {"forward": example, "encode": example, "decode": z})
                except Exception as exc2:
                    raise UserError(f"{_shape_note(model)}: torch.jit.script failed ({_reason(exc)}) and so did "
                                    f"torch.jit.trace ({_reason(exc2)}); try --format onnx") from None
            note = (f"torch.jit.script failed ({_reason(exc)}): traced on an example batch of "
                    f"{example.shape[0]} instead (control flow that depends on the input is frozen)")
        torch.jit.save(compiled, buf)
    return buf.getvalue(), note


def _shape_note(model: ModuleAutoencoder) -> str:
    return f"the pair on samples of shape {tuple(int(n) for n in model.sample_shape)}"


def module_onnx(model: ModuleAutoencoder, example: torch.Tensor) -> bytes:
    """The model's forward as an ONNX graph (``torch.onnx.export``): input ``x`` (batch, *sample
    shape), outputs ``reconstruction`` (batch, *sample shape) and ``latent`` (batch, ...); the
    sample shape is in the metadata key ``sample_shape``."""
    onnx = _onnx()
    from onnx import helper

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # the TorchScript-based exporter
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        try:
            # the TorchScript-based exporter needs onnx alone (coevo[export]), not onnxscript
            torch.onnx.export(_OnnxGraph(model).eval(), (example,), buf, dynamo=False, input_names=["x"],
                              output_names=["reconstruction", "latent"], opset_version=17,
                              dynamic_axes={"x": {0: "batch"}, "reconstruction": {0: "batch"}, "latent": {0: "batch"}})
        except Exception as exc:
            raise UserError(f"{_shape_note(model)}: torch.onnx.export failed ({_reason(exc)}); try --format "
                            f"torchscript") from None
    proto = onnx.load_from_string(buf.getvalue())
    helper.set_model_props(proto, {"sample_shape": ",".join(str(int(n)) for n in model.sample_shape)})
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _run_exported(payload: bytes, fmt: str, model: ModuleAutoencoder, x: torch.Tensor) -> tuple[torch.Tensor, str]:
    """Reconstructions of ``x`` by the exported file itself (TorchScript: torch.jit.load; ONNX:
    onnxruntime, or the exported torch module where onnxruntime is not installed, said in the note)."""
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
            loaded = torch.jit.load(io.BytesIO(payload))
        with torch.no_grad():
            return loaded(x), ""
    try:
        import onnxruntime as ort
    except ImportError:
        with torch.no_grad():
            return model(x), "onnxruntime is not installed: checked the torch module that was exported, not the file"
    sess = ort.InferenceSession(payload, providers=["CPUExecutionProvider"])
    (y,) = sess.run(["reconstruction"], {"x": x.numpy()})
    return torch.as_tensor(y), ""


def _module_exports(run_dir: Path, pairs: Sequence[tuple[dict, dict]], paths: Sequence[Path], fmt: str,
                    rows: int = CHECK_ROWS) -> tuple[list["Exported"], list[bytes]]:
    """Build, export and check every pair of a module-model run (nothing written)."""
    from coevo import config as config_module
    from coevo import data as data_module
    from coevo.evolution.problem import dataset_shape
    from coevo.model import ref_of
    from coevo.model.graph import flatten_parameters, trace
    from coevo.training.functional import reconstruct

    config = config_module.load(run_dir / "config.toml")
    dataset = data_module.load(config.data, config.run.seed)
    shape = dataset_shape(dataset)
    ref = ref_of(config, shape)
    factory = _factory_of(ref, run_dir)
    val = dataset.validation if len(dataset.validation) else dataset.test
    x_flat = torch.as_tensor(np.ascontiguousarray(val[:rows], dtype=np.float32))
    x = x_flat.reshape(x_flat.shape[0], *shape)
    results, payloads = [], []
    layouts = None
    for (enc_state, dec_state), path in zip(pairs, paths):
        model = module_model(enc_state, dec_state, ref, factory, run_dir)
        raw = _raw_encoder(model)  # a VAE's own encoder, without the means it exports
        if layouts is None:
            layouts = trace(ref, (raw, model.decoder))
        enc_l, dec_l = layouts
        enc_row = torch.as_tensor(flatten_parameters(raw, enc_l))
        dec_row = torch.as_tensor(flatten_parameters(model.decoder, dec_l))
        with torch.no_grad():
            expected = reconstruct(enc_l, dec_l, enc_row, dec_row, x_flat)
        example = x[: min(2, len(x))]
        if fmt == "torchscript":
            payload, note = module_torchscript(model, example)
        else:
            payload, note = module_onnx(model, example), ""
        try:
            got, check_note = _run_exported(payload, fmt, model, x)
        except Exception as exc:
            raise UserError(f"{path.name}: the exported {fmt} model raised {_reason(exc)} on {len(x)} validation rows "
                            f"of shape {tuple(shape)}") from None
        if tuple(got.shape) != tuple(x.shape):
            raise UserError(f"{path.name}: the exported {fmt} model returns shape {tuple(got.shape)} for an input of "
                            f"{tuple(x.shape)}; it must return the input's shape")
        diff = float((got.reshape(len(x), -1).float() - expected).abs().max()) if len(x) else 0.0
        if not diff <= TOLERANCE:
            raise UserError(f"{path.name}: the exported {fmt} model differs from the run's forward by {diff:.3g} on "
                            f"{len(x)} validation rows (more than {TOLERANCE:g}); nothing written")
        params = [p for p in model.parameters()]
        n_dense = sum(p.numel() for p in params)
        n_alive = sum(int((p != 0).sum()) for p in params)
        units = [int(shape[0])] + [int(s.fan_out) for s in enc_l.layers + dec_l.layers]
        notes = tuple(n for n in (note, check_note) if n)
        payloads.append(payload)
        results.append(Exported(path, n_dense, n_dense, units, units, len(payload), diff, 0.0, 0.0, len(x),
                                kind="dense", model=ref.what, alive=n_alive, notes=notes))
    return results, payloads


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
    kind: str = "compact"  # 'compact' (the MLP family) or 'dense' (a module model, masked zeros kept)
    model: str = ""  # a module model: which family or factory
    alive: int | None = None  # a module model: its non-zero parameters
    notes: tuple[str, ...] = ()


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
    (max abs difference <= 1e-6 in float64, else RuntimeError: a bug) and both are timed on them.

    A module model (``model.family`` other than 'mlp', or a ``model.factory``) exports dense with
    masked zeros (see the module docstring); each file is checked on ``CHECK_ROWS`` validation rows
    against the run's functional forward (``batch``, ``repeats`` and ``seed`` do not apply)."""
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
    if _run_is_module_model(run_dir):
        results, payloads = _module_exports(run_dir, pairs, paths, fmt)
        for path, payload in zip(paths, payloads):
            atomic_write_bytes(path, payload)
        _note_derived(run_dir, paths)
        return results
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
        if r.kind == "dense":
            lines += _format_dense(r)
            continue
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


def _format_dense(r: Exported) -> list[str]:
    alive = f", {r.alive:,} of them non-zero ({r.alive / r.parameters_before:.3f})" if r.alive is not None else ""
    lines = [f"{r.path}",
             f"  model       {r.model}: exported dense, masked entries kept as zeros (no channel removed)",
             f"  parameters  {r.parameters_before:,}{alive}",
             f"  units       {' -> '.join(map(str, r.widths_before))}  (input channels, then each layer's outputs)",
             f"  file size   {r.bytes:,} bytes",
             f"  max |exported - run's forward| on {r.batch} validation rows: {r.max_difference:.2e}"]
    lines += [f"  note        {n}" for n in r.notes]
    return lines
