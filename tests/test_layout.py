"""The package layout (issue 22): every module of the new subpackages imports, and every old path
of the flat layout fails with a message that names the new one."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from coevo._moved import MOVED

ROOT = Path(__file__).resolve().parent.parent
NEW_MODULES = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for path in (ROOT / "coevo").rglob("*.py") if "__pycache__" not in path.parts
    and path.name != "__main__.py" and path.stem != "ray_engine")  # ray_engine imports ray


@pytest.mark.parametrize("name", NEW_MODULES)
def test_every_module_imports(name):
    importlib.import_module(name)


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_an_old_path_says_where_it_moved(old, new):
    importlib.import_module(new)  # the new one exists
    with pytest.raises(ImportError, match=f"{old} moved to {new}"):
        importlib.import_module(old)
    parent, _, leaf = old.rpartition(".")
    with pytest.raises(ImportError, match=f"{old} moved to {new}"):
        exec(f"from {parent} import {leaf}", {})
    with pytest.raises(ImportError, match=f"{old} moved to {new}"):
        exec(f"import {old}.anything", {})


def test_an_old_path_reached_as_an_attribute_says_where_it_moved():
    import coevo

    with pytest.raises(AttributeError, match="coevo.evolve moved to coevo.evolution.loop"):
        coevo.evolve  # noqa: B018
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        coevo.nothing  # noqa: B018


def test_the_old_rundir_module_names_say_where_they_moved():
    from coevo.rundir import directory

    with pytest.raises(ImportError, match="coevo.rundir.check_layout moved to coevo.rundir.directory.check_layout"):
        exec("from coevo.rundir import check_layout", {})
    assert callable(directory.check_layout)
    from coevo.rundir import checkpoint, lock  # the package's own modules still import from it

    assert checkpoint.CHECKPOINT_DIR and lock.LOCK_FILE


def test_python_m_on_an_old_path_says_where_it_moved():
    proc = subprocess.run([sys.executable, "-m", "coevo.warmup"], capture_output=True, text=True)
    assert proc.returncode != 0 and "coevo.warmup moved to coevo.training.warmup" in proc.stderr


def test_the_documented_public_paths_still_import():
    from coevo import runner, schedules  # noqa: F401
    import coevo.bench
    from coevo.config import Config, PruneConfig, RunConfig  # noqa: F401
    from coevo.genome import Network, to_module  # noqa: F401
    from coevo.observers import Observer  # noqa: F401
    from coevo.operators import PruneContext, criterion, needs, select_and_prune, sparing_units  # noqa: F401

    assert coevo.bench.TrialExecutor and coevo.bench.TRIAL_LOCK_WAIT_S > 0


def test_the_presets_ship_where_they_are_looked_up():
    from coevo import config
    from coevo.bench import spec

    assert "paper" in config.presets() and "quick" in spec.presets()
    assert set(config.presets()).isdisjoint(spec.presets())
