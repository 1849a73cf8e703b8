"""The engine interface."""

from __future__ import annotations

from typing import Any, Callable, Protocol

import numpy as np
import torch

from coevo.population import Stack
from coevo.evolution.variation import CellData
from coevo.measures import KeptFractions
from coevo.schedules import Pruning


class Engine(Protocol):
    """Runs the cells' work of a generation and holds the cells' centres between generations
    (in this process, or resident on remote workers). The generation loop keeps selection,
    learning rates and the logbook; it reads the centres only through :meth:`centres`."""

    def start(self, shared: CellData, neighbours: np.ndarray) -> None:
        """Ship what never changes during a run (data, config, topology) to where cells run."""

    def load(self, enc: Stack, dec: Stack) -> None:
        """The centres the engine holds from now on (a fresh population or a checkpoint's)."""

    def evaluate(self, generation: int) -> torch.Tensor:
        """Loss matrices (cells, s, s) of every cell's sub-population of the held centres."""

    def vary(self, enc_parents: np.ndarray, dec_parents: np.ndarray, lr: np.ndarray,
             prune_probability: float | Pruning,
             generation: int, mutate: Callable[..., Any], operator_name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Train (and maybe prune) every cell's selected pair: cell k trains the encoder of cell
        ``enc_parents[k]`` with the decoder of cell ``dec_parents[k]``. The trained pairs become
        the held centres; returns each cell's training loss, whether it was pruned, and which of the
        operator's declared events it reported (bool, cells x events)."""

    def measure(self, data: torch.Tensor, loss: str) -> tuple[np.ndarray, KeptFractions]:
        """Each held centre pair's loss on ``data`` (the logbook's validation pass) and its kept
        fractions, in cell order."""

    def centres(self) -> tuple[Stack, Stack]:
        """The held centres (whole genomes), fetched to this process if they live elsewhere.
        Treat them as read-only."""

    def close(self) -> None:
        """Release workers."""
