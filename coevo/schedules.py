"""Pruning schedules: pure functions p_sched(t, T, p, s, params) -> probability.

t is the 0-based generation, T the last generation index, p the configured probability and
s the sub-population size. Register your own with ``@schedules.register("name")`` or name it
by import path (``prune.schedule = "mypkg.sched:my_schedule"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from coevo.registry import Registry


@dataclass(frozen=True)
class ScheduleParams:
    k: float = 2.0
    """Rate of the exponential schedule."""
    f: float = 0.25
    """Final fraction of the run during which final_n prunes."""


class Schedule(Protocol):
    def __call__(self, t: int, T: int, p: float, s: int, params: ScheduleParams) -> float: ...


registry: Registry[Schedule] = Registry("schedule", "prune.schedule", "coevo.schedules")
register = registry.register


def _progress(t: int, T: int) -> float:
    return t / T if T > 0 else 1.0


@register("fixed")
def fixed(t: int, T: int, p: float, s: int, params: ScheduleParams) -> float:
    """p at every generation."""
    return p


@register("increase")
def increase(t: int, T: int, p: float, s: int, params: ScheduleParams) -> float:
    """p * t / T: rises linearly from 0 to p."""
    return p * _progress(t, T)


@register("decrease")
def decrease(t: int, T: int, p: float, s: int, params: ScheduleParams) -> float:
    """p * (1 - t / T): falls linearly from p to 0."""
    return p * (1.0 - _progress(t, T))


@register("population")
def population(t: int, T: int, p: float, s: int, params: ScheduleParams) -> float:
    """p * t / (T * s): increase, divided by the sub-population size."""
    return p * _progress(t, T) / s


@register("exponential")
def exponential(t: int, T: int, p: float, s: int, params: ScheduleParams) -> float:
    """p * (1 - exp(-k t / T)): saturating rise (k = prune.exponential_k)."""
    return p * (1.0 - math.exp(-params.k * _progress(t, T)))


@register("final_n")
def final_n(t: int, T: int, p: float, s: int, params: ScheduleParams) -> float:
    """p during the final fraction f of the run (t >= (1 - f) T), else 0."""
    return p if t >= (1.0 - params.f) * T else 0.0


@register("prune_after")
def prune_after(t: int, T: int, p: float, s: int, params: ScheduleParams) -> float:
    """p only at the last generation (t = T)."""
    return p if t == T else 0.0
