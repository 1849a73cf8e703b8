"""Shared fixtures: a tiny problem that runs in well under a second per generation."""

from __future__ import annotations

import pytest

from coevo import config

TINY = [
    "run.generations=3",
    "run.checkpoint_every=1",
    "data.n_dims=40",
    "data.n_clusters=3",
    "data.rows_per_cluster=10",
    "model.hidden=[8]",
    "model.latent=3",
    "grid.cells=4",
    "train.batch_size=5",
    "train.learning_rate=0.001",
    "prune.schedule=fixed",
]


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


@pytest.fixture
def tiny_config() -> config.Config:
    return config.load(None, TINY)
