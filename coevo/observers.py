"""Observers: the loop never prints or writes; it calls these at the start and after each
generation (progress bar, logbook file, checkpoints, DEAP logbook)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Protocol

from deap import tools

from coevo import checkpoint
from coevo.checkpoint import RunState
from coevo.config import Config


class Observer(Protocol):
    def on_start(self, config: Config, state: RunState) -> None: ...

    def on_generation(self, row: dict, state: RunState) -> None: ...


class LogbookRecorder:
    """Keeps every row in a DEAP ``tools.Logbook``."""

    def __init__(self) -> None:
        self.logbook = tools.Logbook()

    def on_start(self, config: Config, state: RunState) -> None:
        pass

    def on_generation(self, row: dict, state: RunState) -> None:
        self.logbook.record(**row)


class CsvLogbook:
    """Appends one row per generation to ``logbook.csv`` and flushes it, so a crash loses nothing
    that was recorded. On resume, rows past the checkpoint are dropped first."""

    def __init__(self, path: Path, keep_rows: int | None = None) -> None:
        self.path = Path(path)
        self.keep_rows = keep_rows
        self._file = None
        self._writer: csv.DictWriter | None = None

    def on_start(self, config: Config, state: RunState) -> None:
        if self.keep_rows is not None and self.path.exists():
            with open(self.path, newline="") as fh:
                lines = fh.read().splitlines(keepends=True)
            kept = lines[: 1 + self.keep_rows]
            checkpoint.atomic_write_bytes(self.path, "".join(kept).encode())
            self._header = lines[0].strip().split(",") if lines else None
        else:
            self._header = None

    def on_generation(self, row: dict, state: RunState) -> None:
        if self._writer is None:
            new = not self.path.exists() or self.path.stat().st_size == 0
            self._file = open(self.path, "a", newline="")
            fields = self._header or list(row)
            self._writer = csv.DictWriter(self._file, fieldnames=fields, extrasaction="ignore")
            if new:
                self._writer.writeheader()
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class Checkpointer:
    """Saves a checkpoint every ``every`` generations and after the last one."""

    def __init__(self, run_dir: Path, every: int, last_generation: int) -> None:
        self.run_dir = Path(run_dir)
        self.every = every
        self.last = last_generation
        self.rows = 0

    def on_start(self, config: Config, state: RunState) -> None:
        self.rows = state.generation

    def on_generation(self, row: dict, state: RunState) -> None:
        self.rows += 1
        if self.every and (state.generation % self.every == 0 or state.generation == self.last):
            checkpoint.save(self.run_dir, state, self.rows)


class ProgressBar:
    """A tqdm bar with the current best validation loss and kept fraction."""

    def __init__(self, total: int, description: str) -> None:
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self.total = total
        self.description = description
        self.bar = None

    def on_start(self, config: Config, state: RunState) -> None:
        self.bar = self._tqdm(total=self.total, initial=state.generation, desc=self.description, unit="gen",
                              dynamic_ncols=True)

    def on_generation(self, row: dict, state: RunState) -> None:
        assert self.bar is not None
        val = row["validation_loss_best"]
        self.bar.set_postfix(val=f"{val:.4f}" if math.isfinite(val) else val, kept=f"{row['kept_best']:.3f}",
                             refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
