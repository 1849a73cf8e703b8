"""Engines decide where cells run; the generation loop does not know which one it has.

An engine maps the per-cell functions of :mod:`coevo.evolution.variation` over the grid and holds the cells'
centres between generations: ``evaluate`` returns every cell's loss matrix, ``vary`` trains (and
maybe prunes) every cell's selected pair into its new centre, ``measure`` gives the logbook's
per-cell values, and ``centres`` hands the centres over when something reads them.
"""

from __future__ import annotations

from coevo.config import Config
from coevo.engines.base import Engine
from coevo.engines.local import LocalEngine
from coevo.errors import ConfigError


def make_engine(config: Config) -> Engine:
    """The engine named by ``run.engine``."""
    if config.run.engine == "local":
        return LocalEngine()
    if config.run.engine == "ray":
        try:
            from coevo.engines.ray_engine import RayEngine
        except ImportError as exc:
            raise ConfigError(
                f"run.engine = 'ray' needs Ray, which is not installed ({exc}); "
                "install it with: pip install 'coevo[ray]'"
            ) from None
        return RayEngine(config.run.ray_address, config.run.ray_workers)
    raise ConfigError(f"run.engine = {config.run.engine!r} is unknown; choose one of: local, ray")


__all__ = ["Engine", "LocalEngine", "make_engine"]
