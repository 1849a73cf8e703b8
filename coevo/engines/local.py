"""The default engine: every cell in this process, in one batched call."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from coevo.population import Stack
from coevo.evolution.variation import CellData, centre_measures, evaluate_cells, vary_cells
from coevo.measures import KeptFractions
from coevo.schedules import Pruning


class LocalEngine:
    def start(self, shared: CellData, neighbours: np.ndarray) -> None:
        self.shared = shared
        self.neighbours = neighbours
        self.cells = np.arange(neighbours.shape[0])

    def load(self, enc: Stack, dec: Stack) -> None:
        self.enc, self.dec = enc, dec
        self._lent = True  # the caller holds these: copy before writing rows in place

    def evaluate(self, generation: int, cells: np.ndarray | None = None) -> torch.Tensor:
        """Every cell's loss matrix, or only ``cells``' (asynchronous updates go cell by cell)."""
        cells = self.cells if cells is None else cells
        return evaluate_cells(self.enc, self.dec, self.neighbours, cells, generation, self.shared)

    def vary(self, enc_parents: np.ndarray, dec_parents: np.ndarray, lr: np.ndarray,
             prune_probability: float | Pruning,
             generation: int, mutate: Callable[..., Any], operator_name: str,
             cells: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """New centres of every cell, or only of ``cells`` (the parents and ``lr`` then match
        them; the other cells keep theirs)."""
        v = vary_cells(self.enc, self.dec, enc_parents, dec_parents, self.cells if cells is None else cells, lr,
                       prune_probability, generation, self.shared, mutate, operator_name)
        if cells is None:
            self.enc, self.dec, self._lent = v.encoders, v.decoders, False
        else:
            if self._lent:
                self.enc, self.dec, self._lent = self.enc[:], self.dec[:], False
            for i, k in enumerate(cells):
                self.enc.put(int(k), v.encoders, i)
                self.dec.put(int(k), v.decoders, i)
        return v.train_loss, v.pruned, v.events

    def measure(self, data: torch.Tensor, loss: str) -> tuple[np.ndarray, KeptFractions]:
        return centre_measures(self.enc, self.dec, data, loss, self.shared.config.prune.regrow)

    def centres(self) -> tuple[Stack, Stack]:
        self._lent = True
        return self.enc, self.dec

    def close(self) -> None:
        pass
