"""Observers: the loop never prints or writes; it calls these at the start and after each
generation (progress bar, logbook file, checkpoints, DEAP logbook, TensorBoard).

:class:`Observer` is also the public extension point: subclass it, override the hooks you
need, and pass instances to ``coevo.runner.start(config, observers=[...])``.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from deap import tools

from coevo.config import Config
from coevo.errors import UserError
from coevo.evolution.state import RunState
from coevo.rundir import checkpoint
from coevo.training import compile_watch

TENSORBOARD_MISSING = "the TensorBoard observer needs the tensorboard package: pip install coevo[tensorboard]"


class Observer:
    """Hooks a run calls; every one does nothing unless overridden.

    Order of calls: ``on_start`` once (also on resume, with the checkpoint's state), then
    ``on_generation`` after every generation, then ``on_end`` once with the summary after
    summary.json is written, and ``close`` always last, also when the run fails. Treat
    ``row``, ``state`` and ``summary`` as read-only: other observers see the same objects.
    """

    def on_start(self, config: Config, state: RunState) -> None:
        """Before the first generation this process runs (``state.generation`` done so far)."""

    def on_generation(self, row: dict, state: RunState) -> None:
        """After each generation: ``row`` is the logbook row (the columns of logbook.csv)."""

    def on_end(self, summary: dict) -> None:
        """After a finished run: ``summary`` is what summary.json holds."""

    def close(self) -> None:
        """Release files or connections; called after the run, whether it finished or failed."""


class LogbookRecorder(Observer):
    """Keeps every row in a DEAP ``tools.Logbook``."""

    def __init__(self) -> None:
        self.logbook = tools.Logbook()

    def on_start(self, config: Config, state: RunState) -> None:
        pass

    def on_generation(self, row: dict, state: RunState) -> None:
        self.logbook.record(**row)


class CsvLogbook(Observer):
    """Appends one row per generation to ``logbook.csv`` and flushes it, so a crash loses nothing
    that was recorded. It also keeps the text it wrote, which each checkpoint stores.

    ``text`` is the logbook the run continues (a checkpoint's, which the file already holds:
    :func:`coevo.rundir.directory.restore_logbook`); None for a new run."""

    def __init__(self, path: Path, text: str | None = None) -> None:
        self.path = Path(path)
        self._chunks: list[str] = [text] if text else []
        self._header = next(csv.reader(io.StringIO(text))) if text else None
        self._file = None

    def text(self) -> str:
        """The logbook as written so far: header and one line per generation."""
        return "".join(self._chunks)

    def on_start(self, config: Config, state: RunState) -> None:
        pass

    def on_generation(self, row: dict, state: RunState) -> None:
        buf = io.StringIO()
        if self._header is None:
            self._header = list(row)
            csv.DictWriter(buf, fieldnames=self._header).writeheader()
        csv.DictWriter(buf, fieldnames=self._header, extrasaction="ignore").writerow(row)
        chunk = buf.getvalue()
        if self._file is None:
            self._file = open(self.path, "a", newline="")
        self._file.write(chunk)
        self._file.flush()
        self._chunks.append(chunk)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class Checkpointer(Observer):
    """Saves a checkpoint when the run starts from scratch (generation 0), every ``every``
    generations and after the last one, each with the logbook's text so far and ``meta``."""

    def __init__(self, run_dir: Path, every: int, last_generation: int, logbook: CsvLogbook | None = None,
                 meta: dict | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.every = every
        self.last = last_generation
        self.rows = 0
        self.logbook = logbook
        self.meta = meta

    def _save(self, state: RunState) -> None:
        text = self.logbook.text() if self.logbook is not None else None
        checkpoint.save(self.run_dir, state, self.rows, text, self.meta)

    def on_start(self, config: Config, state: RunState) -> None:
        self.rows = state.generation
        if self.every and state.generation == 0 and not any((self.run_dir / checkpoint.CHECKPOINT_DIR).glob("gen_*.pt")):
            self._save(state)  # a run stopped before its first generation ends can be resumed

    def on_generation(self, row: dict, state: RunState) -> None:
        self.rows += 1
        if self.every and (state.generation % self.every == 0 or state.generation == self.last):
            self._save(state)


class ProgressBar(Observer):
    """A tqdm bar with the current best validation loss and kept fraction."""

    def __init__(self, total: int, description: str) -> None:
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self.total = total
        self.description = description
        self.bar = None
        self._compiled = 0.0

    def on_start(self, config: Config, state: RunState) -> None:
        self.bar = self._tqdm(total=self.total, initial=state.generation, desc=self.description, unit="gen",
                              dynamic_ncols=True)
        self._compiled = compile_watch.seconds()

    def on_generation(self, row: dict, state: RunState) -> None:
        assert self.bar is not None
        # a first run's kernel compile stays out of the rate and the ETA: the bar's clock moves on by it
        compiled, self._compiled = compile_watch.seconds() - self._compiled, compile_watch.seconds()
        if compiled > 0:
            self.bar.start_t += compiled
            self.bar.last_print_t += compiled
        val = row["validation_loss_best"]
        self.bar.set_postfix(val=f"{val:.4f}" if math.isfinite(val) else val, kept=f"{row['kept_best']:.3f}",
                             refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class TensorBoard(Observer):
    """The logbook's scalars as TensorBoard events in ``log_dir``: one scalar per logbook
    column (same name), at step = generation. On resume, events past the checkpoint are
    purged, so the curves hold every generation once. Needs ``pip install coevo[tensorboard]``."""

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch raises ImportError when the tensorboard package is absent
            raise UserError(TENSORBOARD_MISSING) from None
        self._writer_class = SummaryWriter
        self.log_dir = Path(log_dir)
        self.writer = None

    def on_start(self, config: Config, state: RunState) -> None:
        self.writer = self._writer_class(str(self.log_dir), purge_step=state.generation or None)

    def on_generation(self, row: dict, state: RunState) -> None:
        assert self.writer is not None, "on_start was not called"
        step = int(row["generation"])
        for key, value in row.items():
            if key != "generation" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, global_step=step)

    def on_end(self, summary: dict) -> None:
        if self.writer is not None:
            for key in ("test_loss", "validation_loss", "kept_fraction"):
                if isinstance(summary.get(key), (int, float)):
                    self.writer.add_scalar(f"final/{key}", summary[key], global_step=summary["generations"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
