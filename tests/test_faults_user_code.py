"""User code that breaks: a plug-in that cannot be imported, raises anything (BaseException
subclasses, sys.exit), or never returns, is one line naming it, its file and line (issue 32)."""

from __future__ import annotations

import re
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from coevo import watchdog
from coevo.cli import main
from coevo.rundir import checkpoint

SMALL = ["prune.probability=1", "run.checkpoint_every=1"]


def sets(overrides: list[str]) -> list[str]:
    return [x for o in overrides for x in ("--set", o)]


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """Write a module of user code under a unique name; returns (name, its path)."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))

    def write(source: str) -> tuple[str, Path]:
        name = f"user_code_{uuid.uuid4().hex[:8]}"
        path = folder / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        return name, path

    return write


def run(tmp_path: Path, overrides: list[str], capsys, *flags: str) -> tuple[int, str]:
    code = main([*flags, "run", "--quiet", "--out", str(tmp_path / "run"), *sets(overrides)])
    return code, capsys.readouterr().err


def one_line(err: str) -> bool:
    return err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("source, line, fragment", [
    ("def op(net, amount, rng, context)\n    return net\n", 1, "SyntaxError: expected ':'"),
    ("x = 1\nraise RuntimeError('broken at import')\n", 2, "RuntimeError: broken at import"),
    ("import not_a_module_anywhere_xyz\n", 1, "ModuleNotFoundError: No module named 'not_a_module_anywhere_xyz'"),
    ("import sys\nsys.exit(4)\n", 2, "SystemExit: 4"),
    ("class Boom(BaseException):\n    pass\nraise Boom('base')\n", 3, "Boom: base"),
])
def test_an_operator_module_that_fails_to_import_is_one_line_naming_its_file_and_line(
        tmp_path, tiny_overrides, plugin, capsys, source, line, fragment):
    name, path = plugin(source)
    overrides = tiny_overrides + [f"prune.operator={name}:op"]
    code, err = run(tmp_path, overrides, capsys)
    assert code == 2 and one_line(err), err
    assert err.startswith(f"coevo: error: prune.operator = '{name}:op': importing module '{name}' raised {fragment}")
    assert f"{path}:{line}" in err
    assert not (tmp_path / "run").exists()  # refused before anything was written
    sys.modules.pop(name, None)
    code, err = run(tmp_path, overrides, capsys, "--debug")
    assert code == 2 and "Traceback" in err and err.splitlines()[-1].startswith("coevo: error: prune.operator")


CALL_ERRORS = '''
import sys

class Boom(BaseException):
    pass

def boom(net, amount, rng, context):
    raise Boom("base boom")

def leaves(net, amount, rng, context):
    sys.exit(3)

def schedule_boom(t, T, p, s):
    if t >= 1:
        raise Boom("schedule boom")
    return 1.0

class BoomAtInit:
    def __init__(self):
        raise Boom("init boom")

    def __call__(self, net, amount, rng, context):
        return net
'''


@pytest.mark.parametrize("key, attr, fragment, line", [
    ("prune.operator", "boom", "pruning operator '{name}:boom' raised Boom: base boom", 8),
    ("prune.operator", "leaves", "pruning operator '{name}:leaves' raised SystemExit: 3", 11),
    ("prune.schedule", "schedule_boom", "pruning schedule '{name}:schedule_boom' raised Boom: schedule boom", 15),
    ("prune.operator", "BoomAtInit", "prune.operator = '{name}:BoomAtInit': BoomAtInit() raised Boom: init boom", 20),
])
def test_a_plug_in_that_raises_a_base_exception_is_one_line_naming_its_file_and_line(
        tmp_path, tiny_overrides, plugin, capsys, key, attr, fragment, line):
    name, path = plugin(CALL_ERRORS)
    code, err = run(tmp_path, tiny_overrides + SMALL + [f"{key}={name}:{attr}"], capsys)
    assert code == 2 and one_line(err), err
    assert fragment.format(name=name) in err and f"{path}:{line}" in err


# ---------------------------------------------------------------- the watchdog

HANGS = '''
import time

def sleeps(net, amount, rng, context):
    time.sleep(1000)

def spins(net, amount, rng, context):
    while True:
        pass

def sleeping_schedule(t, T, p, s):
    if t >= 1:
        time.sleep(1000)
    return 1.0

def slow_schedule(t, T, p, s):
    if t == 1:
        time.sleep(1.0)
    return 0.0
'''


@pytest.mark.parametrize("key, attr, kind, line", [
    ("prune.operator", "sleeps", "operator", 5),
    ("prune.operator", "spins", "operator", 8),
    ("prune.schedule", "sleeping_schedule", "schedule", 13),
])
def test_a_plug_in_that_never_returns_is_stopped_at_plugin_timeout_and_named(
        tmp_path, tiny_overrides, plugin, capsys, key, attr, kind, line):
    name, path = plugin(HANGS)
    t0 = time.monotonic()
    code, err = run(tmp_path, tiny_overrides + SMALL + [f"{key}={name}:{attr}", "run.plugin_timeout=0.5"], capsys)
    assert time.monotonic() - t0 < 60
    assert code == 2 and one_line(err), err
    assert f"{kind} '{name}:{attr}' ({key}) did not return within run.plugin_timeout = 0.5 s" in err
    assert f"{path}:{line}" in err
    match = re.search(r"the checkpoint of generation (\d+) is kept: `coevo resume (\S+)` continues from it", err)
    assert match and match.group(2) == str(tmp_path / "run")
    found, saved, warnings = checkpoint.read_latest(tmp_path / "run")  # kept, and whole
    assert not warnings and saved["generation"] == int(match.group(1))


def test_a_long_call_says_after_a_while_which_plug_in_it_is_in(tmp_path, tiny_overrides, plugin, capsys,
                                                                monkeypatch):
    monkeypatch.setattr(watchdog, "NOTICE_SECONDS", 0.3)  # a minute in a real run
    name, path = plugin(HANGS)
    code, err = run(tmp_path, tiny_overrides + [f"prune.schedule={name}:slow_schedule"], capsys)
    assert code == 0, err
    lines = [line for line in err.splitlines() if "has not returned" in line]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"coevo: schedule '{name}:slow_schedule' (prune.schedule) has not returned for ")
    assert f"{path}:18" in lines[0] and "run.plugin_timeout" in lines[0]


def test_the_watchdog_returns_values_and_lets_ctrl_c_through():
    with watchdog.limit(5):
        assert watchdog.call("thing 'x'", lambda a, b=0: a + b, 1, b=2) == 3

        def ctrl_c():
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt) as info:
            watchdog.call("thing 'x'", ctrl_c)
        assert not isinstance(info.value, watchdog.Stalled)
        with pytest.raises(watchdog.Stalled, match=r"^thing 'y' did not return within run.plugin_timeout = 0.2 s"):
            with watchdog.limit(0.2):
                watchdog.call("thing 'y'", time.sleep, 100)
    assert watchdog._timeout == 0 and not watchdog._watches


def test_a_negative_plugin_timeout_is_refused(tmp_path, tiny_overrides, capsys):
    code, err = run(tmp_path, tiny_overrides + ["run.plugin_timeout=-1"], capsys)
    assert code == 2 and one_line(err) and "run.plugin_timeout must be >= 0" in err
