"""Spatial topologies as index arrays, computed once.

``neighbourhood[k]`` lists the cells in cell k's sub-population, the centre k first, then its
neighbours in a fixed order. Every row has the same length s, so sub-populations stack.
"""

from __future__ import annotations

import numpy as np

from coevo.config import GridConfig


def ring(cells: int, radius: int) -> np.ndarray:
    """Ring of ``cells``: cell k sees k-r..k+r (mod cells). Shape (cells, 2r+1), centre first."""
    offsets = [0] + [o for d in range(1, radius + 1) for o in (-d, d)]
    return (np.arange(cells)[:, None] + np.array(offsets)[None, :]) % cells


def torus(rows: int, cols: int, radius: int, neighbourhood: str) -> np.ndarray:
    """2-D torus, cells numbered row-major. von Neumann: |dr|+|dc| <= r; Moore: max(|dr|,|dc|) <= r."""
    offsets = [(0, 0)]
    for dr in range(-radius, radius + 1):
        for dc in range(-radius, radius + 1):
            if (dr, dc) == (0, 0):
                continue
            dist = abs(dr) + abs(dc) if neighbourhood == "von_neumann" else max(abs(dr), abs(dc))
            if dist <= radius:
                offsets.append((dr, dc))
    r, c = np.divmod(np.arange(rows * cols), cols)
    out = np.empty((rows * cols, len(offsets)), dtype=np.int64)
    for j, (dr, dc) in enumerate(offsets):
        out[:, j] = ((r + dr) % rows) * cols + (c + dc) % cols
    return out


def neighbourhoods(grid: GridConfig) -> np.ndarray:
    """The (cells, s) neighbourhood table for a grid configuration."""
    if grid.topology == "ring":
        return ring(grid.cells, grid.radius)
    rows, cols = grid.shape
    return torus(rows, cols, grid.radius, grid.neighbourhood)
