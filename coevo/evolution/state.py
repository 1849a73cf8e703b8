"""Where a run stands: :class:`RunState`, what the loop advances and a checkpoint stores
(:mod:`coevo.rundir.checkpoint` writes and reads it)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from coevo.evolution.front import Front
from coevo.population import Stack


class RunState:
    """Where a run stands: generations completed, every cell's centre pair, learning rates and
    the loop time spent so far, and when each operator event first happened.

    The centres may live in an engine rather than here (the ray engine keeps them on its
    workers): after :meth:`centres_in`, ``encoders`` and ``decoders`` are fetched from it on
    first read (a checkpoint, the summary, an observer that looks at weights) and then kept
    until the next :meth:`centres_in`. Reading them is all a caller needs to know."""

    def __init__(self, generation: int, encoders: Stack, decoders: Stack, lr: np.ndarray,
                 wall_seconds: float = 0.0, events: dict[str, int] | None = None, front: Front | None = None) -> None:
        self.generation = generation  # generations completed
        self.front = front  # the Pareto front archive of a multi-objective run (coevo.evolution.front), else None
        self.lr = lr  # (cells,) learning rate of each cell
        self.wall_seconds = wall_seconds  # loop time spent so far
        self.events = dict(events or {})  # first generation each operator event happened in any cell
        self._centres: tuple[Stack, Stack] | None = (encoders, decoders)
        self._fetch: Callable[[], tuple[Stack, Stack]] | None = None

    def centres_in(self, fetch: Callable[[], tuple[Stack, Stack]]) -> None:
        """The centres are now what ``fetch()`` returns; it is called on first read, if ever."""
        self._centres, self._fetch = None, fetch

    def set_centres(self, encoders: Stack, decoders: Stack) -> None:
        self._centres, self._fetch = (encoders, decoders), None

    def _held(self) -> tuple[Stack, Stack]:
        if self._centres is None:
            assert self._fetch is not None
            self._centres = self._fetch()
        return self._centres

    @property
    def encoders(self) -> Stack:
        return self._held()[0]

    @encoders.setter
    def encoders(self, value: Stack) -> None:
        self.set_centres(value, self._held()[1])

    @property
    def decoders(self) -> Stack:
        return self._held()[1]

    @decoders.setter
    def decoders(self, value: Stack) -> None:
        self.set_centres(self._held()[0], value)
