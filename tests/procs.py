"""Processes seen through /proc (psutil is not a dependency): for tests that kill a driver and
check that nothing it started lives on."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

PROC = Path("/proc")


def alive(pid: int) -> bool:
    """Running, not a zombie (an orphan's zombie waits for a reaper that may never come here).

    Every thread counts: a killed process's main thread can be a zombie while another thread
    is still exiting, and the process's open files (its flocks) go only with the last one."""
    try:
        tasks = list((PROC / str(pid) / "task").iterdir())
    except OSError:
        return False
    for task in tasks:
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        if stat.rpartition(")")[2].split()[0] not in ("Z", "X"):
            return True
    return False


def tagged(tag: str) -> list[int]:
    """Live processes whose environment holds COEVO_TEST_TAG=tag (inherited by everything a
    driver starts, also by processes that were reparented)."""
    needle = f"COEVO_TEST_TAG={tag}".encode()
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def still_running(processes: dict[int, int]) -> list[int]:
    """Which of ``processes`` (pid -> start time, see coevo.rundir.reaper.descendants) still run."""
    from coevo.rundir.reaper import start_time

    return [pid for pid, started in processes.items() if alive(pid) and start_time(pid) == started]


def children(pid: int) -> list[int]:
    """Live direct children of ``pid``."""
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def wait_for(condition: Callable[[], object], timeout_s: float, what: str, poll_s: float = 0.1) -> object:
    """Poll ``condition`` until it is truthy; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(poll_s)


def tagged_env(tag: str) -> dict[str, str]:
    env = dict(os.environ)
    env["COEVO_TEST_TAG"] = tag
    return env
