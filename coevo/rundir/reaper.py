"""A local Ray that dies with the coevo process that started it.

``ray.init()`` ties its GCS and raylet to the driver, and the workers follow the raylet, but
Ray's dashboard and runtime-env agents, once their raylet is gone, spend up to 60 s trying to
report that to the dead GCS before they exit. :func:`init_local_ray` therefore starts a small
watchdog first (``python -m coevo.rundir.reaper TOKEN``, in its own session so that Ctrl-C does not
reach it). Every second it notes the driver's descendants (pid and start time: the agents are
the raylet's children, and are orphaned when it dies), and it finds the rest by
``COEVO_RAY_OWNER=TOKEN``, which every process of the new Ray inherits in its environment
(a process that renames itself, as Ray's agents do, may overwrite that copy, hence the
snapshots). When the driver ends cleanly it says so and the watchdog exits; when the driver
dies (SIGKILL included) the watchdog's stdin reaches end-of-file and it SIGKILLs every process
it noted that still runs, and every one that carries the token. Linux only (it reads /proc);
elsewhere the agents exit on their own, within about a minute.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

TOKEN_VAR = "COEVO_RAY_OWNER"
DONE = b"done\n"


class Watchdog:
    """The driver's end of a watchdog: :meth:`close` after a clean ``ray.shutdown()``."""

    def __init__(self, token: str) -> None:
        self.token = token
        env = {k: v for k, v in os.environ.items() if k != TOKEN_VAR}
        self.proc: subprocess.Popen | None = subprocess.Popen(
            [sys.executable, "-m", "coevo.rundir.reaper", token], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, env=env, start_new_session=True)

    def close(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.stdin.write(DONE)
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
        self.proc = None


def init_local_ray(ray: Any, **options: Any) -> Watchdog | None:
    """``ray.init(**options)`` (a new local Ray) whose processes die with this one."""
    if not Path("/proc/self/environ").exists():
        ray.init(**options)
        return None
    token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    watchdog = Watchdog(token)
    os.environ[TOKEN_VAR] = token
    try:
        ray.init(**options)
    except BaseException:
        watchdog.close()
        raise
    finally:
        del os.environ[TOKEN_VAR]
    return watchdog


def marked(token: str) -> list[int]:
    """Pids of this user's processes whose environment carries ``token``."""
    needle = f"{TOKEN_VAR}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # gone, or another user's
            continue
    return found


def start_time(pid: int) -> int | None:
    """A process's start time (clock ticks after boot): with the pid, it names one process."""
    try:
        return int((Path("/proc") / str(pid) / "stat").read_text().rpartition(")")[2].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def descendants(root: int) -> dict[int, int]:
    """Every live descendant of ``root`` (not this process), as pid -> start time."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: dict[int, int] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        started = start_time(pid)
        if pid != os.getpid() and started is not None:
            found[pid] = started
            todo += children.get(pid, [])
    return found


def reap(token: str, known: dict[int, int], settle_s: float = 3.0) -> None:
    """SIGKILL the noted processes that still run and the marked ones, a few times over."""
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        pids = [pid for pid, started in known.items() if start_time(pid) == started] + marked(token)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.2)


def main(argv: list[str], poll_s: float = 1.0) -> int:
    token = argv[0]
    driver = int(token.split("-")[0])
    known: dict[int, int] = {}
    said = b""
    stdin = sys.stdin.buffer.fileno()
    while True:  # until the driver closes our stdin, or dies
        ready, _, _ = select.select([stdin], [], [], poll_s)
        if ready:
            data = os.read(stdin, 64)
            if not data:
                break
            said += data
        else:
            known.update(descendants(driver))
    if said != DONE:
        reap(token, known)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
