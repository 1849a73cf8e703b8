"""Old module paths of coevo's flat layout, and where each moved (issue 22's subpackages; the
stacked population came back to the ground floor, beside the genome, when the trainers began to
need it below the evolution loop).

Importing one fails at once with a message naming the new path, rather than with Python's bare
"No module named ...": :func:`install` puts a finder first on ``sys.meta_path`` that answers for
these names only. ``coevo.rundir`` is still a package (its old module is
:mod:`coevo.rundir.directory`), and ``coevo.presets`` now holds the run presets (the bench presets
are in :mod:`coevo.bench.presets`); neither can fail here."""

from __future__ import annotations

import sys

MOVED = {
    "coevo.evolve": "coevo.evolution.loop",
    "coevo.canonical": "coevo.evolution.canonical",
    "coevo.cells": "coevo.evolution.variation",
    "coevo.front": "coevo.evolution.front",
    "coevo.topology": "coevo.evolution.topology",
    "coevo.evolution.population": "coevo.population",
    "coevo.problem": "coevo.evolution.problem",
    "coevo.cpu_kernels": "coevo.training.cpu_kernels",
    "coevo.batched": "coevo.training.batched",
    "coevo.adam": "coevo.training.adam",
    "coevo.trainer_terms": "coevo.training.trainer_terms",
    "coevo.compile_watch": "coevo.training.compile_watch",
    "coevo.warmup": "coevo.training.warmup",
    "coevo.checkpoint": "coevo.rundir.checkpoint",
    "coevo.lock": "coevo.rundir.lock",
    "coevo.reaper": "coevo.rundir.reaper",
    "coevo.provenance": "coevo.rundir.provenance",
    "coevo.bench_spec": "coevo.bench.spec",
    "coevo.bench_report": "coevo.bench.report",
    "coevo.run_presets": "coevo.presets",
}


def message(old: str) -> str:
    """What importing (or reaching for) the old path says."""
    extra = " (RunState is in coevo.evolution.state)" if old == "coevo.checkpoint" else ""
    return f"{old} moved to {MOVED[old]}{extra}: import {MOVED[old]} instead"


class MovedFinder:
    """A meta path finder that knows only the old paths, and raises for each."""

    @staticmethod
    def find_spec(fullname: str, path=None, target=None):
        if fullname in MOVED or fullname.rpartition(".")[0] in MOVED:
            old = fullname if fullname in MOVED else fullname.rpartition(".")[0]
            # not ModuleNotFoundError(name=fullname): `from coevo import evolve` would swallow that one
            # and say only "cannot import name 'evolve'"
            raise ModuleNotFoundError(message(old))
        return None


def install() -> None:
    if not any(isinstance(f, MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedFinder())


def attribute(name: str) -> AttributeError:
    """For ``coevo.evolve`` reached as an attribute of the package."""
    old = f"coevo.{name}"
    if old in MOVED:
        return AttributeError(message(old))
    return AttributeError(f"module 'coevo' has no attribute {name!r}")
