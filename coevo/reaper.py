"""A local Ray that dies with the coevo process that started it.

``ray.init()`` ties its GCS and raylet to the driver, and the workers follow the raylet, but
Ray's dashboard and runtime-env agents, once their raylet is gone, spend up to 60 s trying to
report that to the dead GCS before they exit. :func:`init_local_ray` therefore starts a small
watchdog first (``python -m coevo.reaper TOKEN``, in its own session so that Ctrl-C does not
reach it) and marks every process of the new Ray with ``COEVO_RAY_OWNER=TOKEN`` in its
environment (inherited: Ray's processes keep the environment they were started with). When the
driver ends cleanly it says so and the watchdog just exits; when the driver dies (SIGKILL
included) the watchdog's stdin reaches end-of-file and it SIGKILLs every process of the user
that carries the token. Linux only (it reads /proc); elsewhere the agents exit on their own.
"""

from __future__ import annotations

import os
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
            [sys.executable, "-m", "coevo.reaper", token], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
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


def reap(token: str, settle_s: float = 5.0) -> None:
    """SIGKILL every marked process, again until none has been seen for a moment."""
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        pids = marked(token)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.2)


def main(argv: list[str]) -> int:
    token = argv[0]
    said = sys.stdin.buffer.read()  # until the driver closes it, or dies
    if said != DONE:
        reap(token)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
