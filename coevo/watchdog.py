"""A watchdog for user code: a pruning operator or schedule that does not return is named, not
silent.

Every plug-in call goes through :func:`call`. One daemon thread watches the calls in progress:
after :data:`NOTICE_SECONDS` it prints one line to stderr naming the plug-in and where it is;
after ``run.plugin_timeout`` seconds (set for a run by :func:`limit`; 0 = never) it interrupts
the main thread with SIGINT, as Ctrl-C would (a real signal wakes ``time.sleep`` and other
waits, which ``_thread.interrupt_main`` alone does not), and the call raises :class:`Stalled`
naming the plug-in. Code that holds the interpreter inside one C call (a huge matrix product)
is interrupted when that call returns. Only the main thread can be interrupted: elsewhere (a
Ray worker's thread, a run started in a thread) the watchdog only prints its notice.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
import traceback
import _thread
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from coevo.errors import OperatorError, user_frame, user_frame_of

NOTICE_SECONDS = 60.0
"""A call this long prints one line saying which plug-in it is in: a minute of silence is more
than any operator or schedule of a paper-sized run needs (milliseconds), and less than a user
waits before deciding that the run hangs."""

REPEAT_SECONDS = 1.0
"""After a timeout, interrupt again this often until the call ends (user code that catches
KeyboardInterrupt and goes on)."""

_timeout = 0.0  # run.plugin_timeout of the run in progress (see limit)


class Stalled(OperatorError):
    """A plug-in call that did not return within ``run.plugin_timeout``."""


@dataclass
class _Watch:
    who: str
    thread_id: int
    started: float
    timeout: float  # 0: never interrupt
    noticed: bool = False
    fired_at: float | None = None
    previous: "_Watch | None" = field(default=None, repr=False)


_cond = threading.Condition()
_watches: dict[int, _Watch] = {}  # thread id -> its innermost call in progress
_thread_started = False


@contextlib.contextmanager
def limit(seconds: float) -> Iterator[None]:
    """Inside the block, a plug-in call in the main thread that runs longer than ``seconds``
    (0: no limit) raises :class:`Stalled`."""
    global _timeout
    previous, _timeout = _timeout, float(seconds)
    try:
        yield
    finally:
        _timeout = previous


def call(who: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` under the watchdog; ``who`` names the plug-in in its messages
    (e.g. ``operator 'mypkg.ops:prune' (prune.operator)``)."""
    watch = _start(who)
    try:
        try:
            return fn(*args, **kwargs)
        finally:
            _stop(watch)
    except KeyboardInterrupt as exc:
        if watch.fired_at is None:
            raise  # Ctrl-C: the run's own handler says what is kept
        where = user_frame(exc.__traceback__)
        raise Stalled(f"{who} did not return within run.plugin_timeout = {watch.timeout:g} s"
                      + (f" (it was at {where})" if where else "")) from exc


def _start(who: str) -> _Watch:
    global _thread_started
    ident = threading.get_ident()
    main = threading.current_thread() is threading.main_thread()
    with _cond:
        if not _thread_started:
            threading.Thread(target=_run, name="coevo-watchdog", daemon=True).start()
            _thread_started = True
        watch = _Watch(who, ident, time.monotonic(), _timeout if main else 0.0, previous=_watches.get(ident))
        _watches[ident] = watch
        _cond.notify()
    return watch


def _stop(watch: _Watch) -> None:
    with _cond:
        if watch.previous is None:
            _watches.pop(watch.thread_id, None)
        else:
            _watches[watch.thread_id] = watch.previous


def _run() -> None:
    """The watchdog thread: sleeps until the next notice or timeout is due."""
    with _cond:
        while True:
            now = time.monotonic()
            due = []
            for watch in list(_watches.values()):
                if not watch.noticed:
                    if now >= watch.started + NOTICE_SECONDS:
                        watch.noticed = True
                        _notice(watch, now)
                    else:
                        due.append(watch.started + NOTICE_SECONDS)
                if watch.timeout > 0:
                    fire = watch.started + watch.timeout if watch.fired_at is None else watch.fired_at + REPEAT_SECONDS
                    if now >= fire:
                        watch.fired_at = now
                        _interrupt_main()
                        fire = now + REPEAT_SECONDS
                    due.append(fire)
            _cond.wait(max(0.0, min(due) - now) if due else None)


def _notice(watch: _Watch, now: float) -> None:
    frame = sys._current_frames().get(watch.thread_id)
    stack = traceback.extract_stack(frame) if frame is not None else []
    where = user_frame_of(stack) or (f"{stack[-1].filename}:{stack[-1].lineno} in {stack[-1].name}" if stack else None)
    fix = ("it is stopped at run.plugin_timeout" if watch.timeout > 0 else
           "to stop such a call, set run.plugin_timeout (seconds)")
    print(f"coevo: {watch.who} has not returned for {now - watch.started:.0f} s"
          + (f" (it is at {where})" if where else "") + f"; still waiting ({fix})", file=sys.stderr, flush=True)


def _interrupt_main() -> None:
    """KeyboardInterrupt in the main thread: a real SIGINT where Python's own handler takes it."""
    if hasattr(signal, "pthread_kill") and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
    else:
        _thread.interrupt_main()
