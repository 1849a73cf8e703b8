"""The engine interface."""

from __future__ import annotations

from typing import Any, Callable, Protocol

import numpy as np
import torch

from coevo.cells import CellData, Variation
from coevo.population import Stack
from coevo.schedules import Pruning


class Engine(Protocol):
    def start(self, shared: CellData, neighbours: np.ndarray) -> None:
        """Ship what never changes during a run (data, config, topology) to where cells run."""

    def evaluate(self, enc: Stack, dec: Stack, generation: int) -> torch.Tensor:
        """Loss matrices (cells, s, s) of every cell's sub-population."""

    def vary(self, enc: Stack, dec: Stack, enc_parents: np.ndarray, dec_parents: np.ndarray, lr: np.ndarray,
             prune_probability: float | Pruning, generation: int, mutate: Callable[..., Any], operator_name: str) -> Variation:
        """Trained (maybe pruned) new centres of every cell, in cell order: cell k trains the
        encoder of cell ``enc_parents[k]`` with the decoder of cell ``dec_parents[k]``."""

    def close(self) -> None:
        """Release workers."""
