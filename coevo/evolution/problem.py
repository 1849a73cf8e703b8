"""What a run is set up from: the data on the device, the network layouts, fresh genomes."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from coevo import data as data_module
from coevo import model, operators
from coevo.config import Config
from coevo.errors import ConfigError
from coevo.population import Stack
from coevo.genome import LayerSpec, Layout, autoencoder_layouts, init_params

INIT = 0x1417


@dataclass
class Problem:
    config: Config
    dataset: data_module.Dataset
    train: torch.Tensor
    validation: torch.Tensor
    test: torch.Tensor
    enc_layout: Layout
    dec_layout: Layout
    expected_peak_bytes: int | None = None
    """The memory check's expectation of the run's peak resident memory (coevo.rundir.check_memory)."""

    @property
    def device(self) -> str:
        return self.config.run.device

    def fresh_stacks(self, count: int) -> tuple[Stack, Stack]:
        """``count`` encoders and ``count`` decoders, each initialised independently, with the
        flip counters and operator memory the pruning operator declared it needs. The MLP family
        draws its values as ``torch.nn.Linear`` would, from numpy (the same on either backend);
        other models from their factory, called once per cell under a seed derived from the run's."""
        needs = operator_needs(self.config)
        layouts = (self.enc_layout, self.dec_layout)
        ref = self.enc_layout.model.ref if self.enc_layout.model is not None else None
        if ref is None or ref.source == "mlp":
            rng = np.random.default_rng([self.config.run.seed, INIT])
            rows = [init_params(layout, count, rng) for layout in layouts]
        else:
            rows = list(model.init_rows(ref, layouts, count, self.config.run.seed))
        return tuple(Stack.fresh(layout, r, self.device, flips=needs.flips, memory=needs.memory_size(layout))
                     for layout, r in zip(layouts, rows))  # type: ignore[return-value]


def operator_needs(config: Config) -> "operators.Needs":
    """What the configured pruning operator declared it needs (``coevo.operators.needs``)."""
    return operators.needs_of(operators.registry.lookup(config.prune.operator))


def backend_of(config: Config) -> str:
    """'numba' or 'torch': ``run.backend``, with 'auto' taking the Numba kernels for the MLP family on the CPU."""
    if config.run.backend != "auto":
        return config.run.backend
    mlp = config.model.family == "mlp" and not config.model.factory and not config.model.variational
    return "numba" if mlp and config.run.device == "cpu" else "torch"


def dataset_shape(dataset: data_module.Dataset) -> tuple[int, ...]:
    return tuple(getattr(dataset, "shape", (dataset.n_dims,)))


def layouts_for(config: Config, sample_shape: tuple[int, ...]) -> tuple[Layout, Layout]:
    """The run's two layouts. On the Numba backend, plain MLP layouts (as every run before the
    torch path); otherwise layouts that carry the model (:mod:`coevo.model`), traced from the
    pair, so the functional path can rebuild it anywhere. The MLP family on the torch backend keeps
    the plain layers' activations (its operators' fast numpy context still applies)."""
    width = int(np.prod(sample_shape))
    if backend_of(config) == "numba":
        return autoencoder_layouts(width, config.model.hidden, config.model.latent)
    ref = model.ref_of(config, sample_shape)
    if ref.source == "mlp" and not ref.variational:
        plain = autoencoder_layouts(width, config.model.hidden, config.model.latent)
        return tuple(Layout(tuple(LayerSpec(s.fan_in, s.fan_out, s.activation, name=str(2 * i))
                                  for i, s in enumerate(layout.layers)), model=model.ModelPart(ref, role))
                     for layout, role in zip(plain, ("encoder", "decoder")))  # type: ignore[return-value]
    from coevo.model.graph import trace

    return trace(ref)


def check_operator_fits(config: Config, enc: Layout, dec: Layout) -> None:
    """Refuse, before the run starts, an operator that needs Linear layers on a model with convolutions."""
    if not operator_needs(config).linear:
        return
    conv = next((s for s in enc.layers + dec.layers if s.kernel), None)
    if conv is not None:
        what = enc.model.ref.what if enc.model is not None else "this model"
        kind = f"ConvTranspose{len(conv.kernel)}d" if conv.transposed else f"Conv{len(conv.kernel)}d"
        raise ConfigError(f"operator {config.prune.operator} needs Linear layers; {what} has {kind} ({conv.name!r}): "
                          f"choose another prune.operator (magnitude, random, variance, snip, ...)")


def check_device(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device = 'cuda' but no CUDA GPU is visible to torch; use run.device = 'cpu'")


def build(config: Config) -> Problem:
    """Load the data and derive layouts; seeds python's ``random`` for DEAP's selection."""
    check_device(config.run.device)
    # Adam's moments decay towards float32 denormals, which are ~10x slower on x86; flushing
    # them to zero changes no result above 1e-38 and keeps the kernels at full speed.
    torch.set_flush_denormal(True)
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    elif backend_of(config) == "torch" and config.run.device == "cpu":
        # the functional path's ops are small (a few ms a step): sharing them costs more than it gives,
        # and on a loaded machine many times more (benchmarks/results/functional.md: 1.1 against 18 s a generation)
        torch.set_num_threads(1)
    random.seed(config.run.seed)
    dataset = data_module.load(config.data, config.run.seed)
    enc, dec = layouts_for(config, dataset_shape(dataset))
    check_operator_fits(config, enc, dec)
    dev = config.run.device
    as_t = lambda a: torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32), device=dev)  # noqa: E731
    return Problem(config, dataset, as_t(dataset.train), as_t(dataset.validation), as_t(dataset.test), enc, dec)
