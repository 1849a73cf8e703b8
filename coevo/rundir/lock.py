"""One writer per directory: an advisory lock file, and workers that die with their driver.

:func:`hold` takes ``DIR/.coevo.lock`` with ``fcntl.flock``. The kernel releases the lock when
its holder exits, however it exits (SIGKILL included), so a crash never leaves a stale lock; the
file itself is removed on a clean release. A second process that wants the same directory is
refused with a :class:`DirectoryLocked` naming the live holder (its pid and host), or waits a
bounded time for it first. Locks are re-entrant within one thread of one process (the bench
worker holds a trial's directory, and :func:`coevo.runner.start` inside it takes it again).

On a cluster the directory must be on a file system every node sees; Linux's NFS client
implements ``flock`` with NFS byte-range locks, so the lock holds across nodes there too.

:func:`die_with_parent` makes a worker process exit when the process that started it dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

from coevo.errors import UserError

try:
    import fcntl
except ImportError:  # not POSIX: no locking (documented)
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".coevo.lock"
"""The lock file inside a locked directory. Not part of a run's outputs: a run directory that
ends cleanly does not have it, and readers ignore it."""

_held: dict[Path, list] = {}  # resolved directory -> [fd, thread id, depth]
_held_guard = threading.Lock()


class DirectoryLocked(UserError):
    """Another live process writes this directory."""

    def __init__(self, directory: Path, holder: str, waited_s: float = 0.0) -> None:
        self.directory, self.holder, self.waited_s = directory, holder, waited_s
        waited = f" (waited {waited_s:.0f} s)" if waited_s >= 1 else ""
        super().__init__(f"{directory} is being written by another live process ({holder}){waited}; "
                         f"a directory has one writer: wait for that process to end, or stop it")

    def __reduce__(self):  # raised in a bench worker, it crosses to the driver by pickle
        return type(self), (self.directory, self.holder, self.waited_s)


def holder_of(directory: str | Path) -> str:
    """Who holds ``directory``'s lock, as the holder wrote it ('pid N on HOST'); '' if unknown."""
    try:
        return (Path(directory) / LOCK_FILE).read_text().strip()
    except OSError:
        return ""


@contextlib.contextmanager
def hold(directory: str | Path, wait_s: float = 0.0, poll_s: float = 0.2) -> Iterator[Path]:
    """Hold ``directory``'s lock (creating the directory) for the ``with`` block.

    If another process holds it, wait up to ``wait_s`` seconds for it, then raise
    :class:`DirectoryLocked`. Taking it again in the same thread nests."""
    directory = Path(directory)
    key = directory.resolve()
    with _held_guard:
        entry = _held.get(key)
        if entry is not None and entry[1] == threading.get_ident():
            entry[2] += 1
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield directory
        finally:
            with _held_guard:
                entry[2] -= 1
        return
    if entry is not None:  # another thread of this process holds it
        raise DirectoryLocked(directory, f"pid {os.getpid()} on {socket.gethostname()}, another thread")
    fd = _acquire(directory, wait_s, poll_s)
    with _held_guard:
        _held[key] = entry = [fd, threading.get_ident(), 1]
    try:
        yield directory
    finally:
        with _held_guard:
            del _held[key]
        if fd is not None:
            # remove the file while still holding the lock: a waiter that opened the old file
            # finds, once it gets the lock, that the path no longer names it, and opens afresh
            with contextlib.suppress(OSError):
                os.unlink(key / LOCK_FILE)
            os.close(fd)


def held(directory: str | Path) -> bool:
    """Whether this process holds ``directory``'s lock."""
    return Path(directory).resolve() in _held


def _acquire(directory: Path, wait_s: float, poll_s: float) -> int | None:
    if fcntl is None:
        directory.mkdir(parents=True, exist_ok=True)
        return None
    t0 = time.monotonic()
    path = directory / LOCK_FILE
    while True:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held by a live process (BlockingIOError), or flock unsupported here
            os.close(fd)
            waited = time.monotonic() - t0
            if waited >= wait_s:
                raise DirectoryLocked(directory, holder_of(directory) or "a process that has not said who it is",
                                      waited) from None
            time.sleep(min(poll_s, max(wait_s - waited, 0.01)))
            continue
        try:  # the previous holder may have removed the file between our open and our lock
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
    return fd


def clear(directory: str | Path) -> None:
    """Remove everything in a directory this process holds, except the lock file."""
    import shutil

    for entry in Path(directory).iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def is_empty(directory: str | Path) -> bool:
    """Whether a directory holds nothing but (perhaps) its lock file."""
    return all(entry.name == LOCK_FILE for entry in Path(directory).iterdir())


PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, poll_s: float = 0.5) -> None:
    """Make this process exit (SIGKILL) when ``parent_pid``, the process that started it, dies.

    On Linux through ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, then a check that the parent did not
    die before that call took effect. The signal comes when the *thread* that started this
    process ends, so start workers from a thread that outlives them (``coevo bench`` starts its
    pool from the thread that runs the sweep). Elsewhere a daemon thread polls ``os.getppid()``.
    Meant for a pool's initializer."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            ok = libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            ok = False
        if ok:
            if os.getppid() != parent_pid:  # it died before the prctl
                os._exit(1)
            return

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(1)

    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=watch, name="coevo-parent-watch", daemon=True).start()
