"""What a run is set up from: the data on the device, the network layouts, fresh genomes."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from coevo import data as data_module
from coevo import operators
from coevo.config import Config
from coevo.errors import ConfigError
from coevo.evolution.population import Stack
from coevo.genome import Layout, autoencoder_layouts, init_params

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

    @property
    def device(self) -> str:
        return self.config.run.device

    def fresh_stacks(self, count: int) -> tuple[Stack, Stack]:
        """``count`` encoders and ``count`` decoders, each initialised independently, with the
        flip counters and operator memory the pruning operator declared it needs."""
        rng = np.random.default_rng([self.config.run.seed, INIT])
        needs = operator_needs(self.config)
        return tuple(Stack.fresh(layout, init_params(layout, count, rng), self.device, flips=needs.flips,
                                 memory=needs.memory_size(layout))
                     for layout in (self.enc_layout, self.dec_layout))  # type: ignore[return-value]


def operator_needs(config: Config) -> "operators.Needs":
    """What the configured pruning operator declared it needs (``coevo.operators.needs``)."""
    return operators.needs_of(operators.registry.lookup(config.prune.operator))


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
    random.seed(config.run.seed)
    dataset = data_module.load(config.data, config.run.seed)
    enc, dec = autoencoder_layouts(dataset.n_dims, config.model.hidden, config.model.latent)
    dev = config.run.device
    as_t = lambda a: torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32), device=dev)  # noqa: E731
    return Problem(config, dataset, as_t(dataset.train), as_t(dataset.validation), as_t(dataset.test), enc, dec)
