"""The default engine: every cell in this process, in one batched call."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from coevo.cells import CellData, Variation, evaluate_cells, vary_cells
from coevo.population import Stack
from coevo.schedules import Pruning


class LocalEngine:
    def start(self, shared: CellData, neighbours: np.ndarray) -> None:
        self.shared = shared
        self.neighbours = neighbours
        self.cells = np.arange(neighbours.shape[0])

    def evaluate(self, enc: Stack, dec: Stack, generation: int, cells: np.ndarray | None = None) -> torch.Tensor:
        """Every cell's loss matrix, or only ``cells``' (asynchronous updates go cell by cell)."""
        cells = self.cells if cells is None else cells
        return evaluate_cells(enc, dec, self.neighbours, cells, generation, self.shared)

    def vary(self, enc: Stack, dec: Stack, enc_parents: np.ndarray, dec_parents: np.ndarray, lr: np.ndarray,
             prune_probability: float | Pruning, generation: int, mutate: Callable[..., Any], operator_name: str,
             cells: np.ndarray | None = None) -> Variation:
        """New centres of every cell, or only of ``cells`` (the parents and ``lr`` then match them)."""
        cells = self.cells if cells is None else cells
        return vary_cells(enc, dec, enc_parents, dec_parents, cells, lr, prune_probability, generation, self.shared,
                          mutate, operator_name)

    def close(self) -> None:
        pass
