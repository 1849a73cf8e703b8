"""Numba's compiles, seen and timed, so that a first run says why it is slow and its timings
leave the compile out.

coevo's kernels are compiled on a machine's first run (``cache=True`` keeps them after that).
Numba announces every real compile (not a load from its cache) as a ``numba:compile`` event;
one listener, registered once per process, announces the first with a line on stderr and adds
up the outermost compiles' seconds. The generation loops subtract what :func:`seconds` grew by
during a generation from the generation's time, and the progress bar moves its clock on by it.
The listener is process-wide because Numba's compiles are: a compile serves the whole process.
(Ray workers compile in their own processes, which this does not see.)
"""

from __future__ import annotations

import sys
import time

from numba.core import event

MESSAGE = "coevo: compiling kernels (once per machine)..."


class _Watch(event.Listener):
    def __init__(self) -> None:
        self.seconds = 0.0
        self.announced = False
        self._depth = 0
        self._t0 = 0.0

    def on_start(self, ev: event.Event) -> None:
        if self._depth == 0:
            if not self.announced:
                self.announced = True
                _announce(MESSAGE)
            self._t0 = time.perf_counter()
        self._depth += 1

    def on_end(self, ev: event.Event) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.seconds += time.perf_counter() - self._t0


def _announce(line: str) -> None:
    try:  # above a running progress bar rather than through it
        from tqdm.auto import tqdm

        tqdm.write(line, file=sys.stderr)
    except Exception:  # noqa: BLE001 - a message must never stop a run
        print(line, file=sys.stderr, flush=True)


_WATCH = _Watch()
event.register("numba:compile", _WATCH)


def seconds() -> float:
    """Seconds this process has spent compiling Numba kernels so far (outermost compiles)."""
    return _WATCH.seconds
