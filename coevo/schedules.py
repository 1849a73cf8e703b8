"""Pruning schedules: pure functions p_sched(t, T, p, s, **params) -> probability.

t is the 0-based generation, T the last generation index, p the configured probability and
s the sub-population size. A schedule may instead return :class:`Pruning`: a probability and
this generation's ``amount``, which then replaces ``prune.amount``, or the fraction ``kept`` each
pruned pair should keep, from which each pair's own amount follows (``geometric`` does, to follow
SNIP-it's cumulative sparsity steps: a pair that missed a step catches up at the next, and
``polynomial``, Zhu & Gupta's cubic ramp to a final sparsity), or the ``progress`` towards
``prune.target_kept`` (``gradual``: the same ramp, ending at whatever target is set). A
schedule's own settings are keyword parameters with defaults
(``exponential``'s ``k``, ``final_n``'s ``fraction``), set in ``[prune.schedule_params]`` and
checked against its signature before a run starts. Register your own with
``@schedules.register("name")`` or name it by import path
(``prune.schedule = "mypkg.sched:my_schedule"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

from coevo.registry import Registry


@dataclass(frozen=True)
class Pruning:
    """What a schedule may return instead of a bare probability: the probability of pruning a
    pair this generation, and either the fraction ``amount`` each mutation then prunes (``None``:
    the configured ``prune.amount``) or ``kept``, the fraction of its entries each pruned pair's
    masks should keep: a pair whose masks keep a fraction f now prunes the amount 1 - kept / f
    (nothing if f <= kept), so pairs that missed earlier steps catch up. ``prune.target_kept``
    (a live kept fraction) still caps the amount, as it caps ``prune.amount``."""

    probability: float
    amount: float | None = None
    kept: float | None = None
    progress: float | None = None
    """Instead of ``kept``: the fraction of the way from keeping everything to ``prune.target_kept``
    (0: nothing pruned, 1: at the target), so one schedule serves every target (``gradual``)."""

    def kept_goal(self, target: float) -> float | None:
        """The fraction of its entries a pair whose target is ``target`` should keep after this
        step: ``kept``, or where ``progress`` has got to on the way to ``target``, or None (no goal)."""
        return self.kept if self.progress is None else 1.0 - self.progress * (1.0 - target)

    @staticmethod
    def of(value: "float | Pruning") -> "Pruning":
        """A schedule's return value as a :class:`Pruning` (a bare float is the probability)."""
        return value if isinstance(value, Pruning) else Pruning(float(value))


class Schedule(Protocol):
    def __call__(self, t: int, T: int, p: float, s: int, **params: Any) -> float | Pruning: ...


registry: Registry[Schedule] = Registry("schedule", "prune.schedule", "coevo.schedules",
                                        params_key="prune.schedule_params", contract=("t", "T", "p", "s"))
register = registry.register


def _progress(t: int, T: int) -> float:
    return t / T if T > 0 else 1.0


@register("fixed")
def fixed(t: int, T: int, p: float, s: int) -> float:
    """p at every generation."""
    return p


@register("increase")
def increase(t: int, T: int, p: float, s: int) -> float:
    """p * t / T: rises linearly from 0 to p."""
    return p * _progress(t, T)


@register("decrease")
def decrease(t: int, T: int, p: float, s: int) -> float:
    """p * (1 - t / T): falls linearly from p to 0."""
    return p * (1.0 - _progress(t, T))


@register("population")
def population(t: int, T: int, p: float, s: int) -> float:
    """p * t / (T * s): increase, divided by the sub-population size."""
    return p * _progress(t, T) / s


@register("exponential")
def exponential(t: int, T: int, p: float, s: int, *, k: float = 2.0) -> float:
    """p * (1 - exp(-k t / T)): saturating rise at rate k."""
    if not k > 0:
        raise ValueError(f"prune.schedule_params.k must be > 0, got {k}")
    return p * (1.0 - math.exp(-k * _progress(t, T)))


@register("final_n")
def final_n(t: int, T: int, p: float, s: int, *, fraction: float = 0.25) -> float:
    """p during the final fraction of the run (t >= (1 - fraction) T), else 0."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"prune.schedule_params.fraction must be in [0, 1], got {fraction}")
    return p if t >= (1.0 - fraction) * T else 0.0


@register("prune_after")
def prune_after(t: int, T: int, p: float, s: int) -> float:
    """p only at the last generation (t = T)."""
    return p if t == T else 0.0


@register("every")
def every(t: int, T: int, p: float, s: int, *, k: int = 50) -> float:
    """p every k-th generation (t = k-1, 2k-1, ...), never the last: FlipOut's schedule.

    With ``prune.amount = 0.5`` and p = 1 it halves the remaining weights every k epochs."""
    if not (isinstance(k, int) and k >= 1):
        raise ValueError(f"prune.schedule_params.k must be an integer >= 1, got {k}")
    return p if (t + 1) % k == 0 and t < T else 0.0


def geometric_targets(target: float, steps: int) -> list[float]:
    """SNIP-it's cumulative sparsities k_i = target - (target - 0.5) * 0.5 ** i for the first
    ``steps - 1`` steps, then ``target`` itself. For 0.98 and 7 steps: 0.5, 0.74, 0.86, 0.92,
    0.95, 0.965, 0.98."""
    return [target - (target - 0.5) * 0.5**i for i in range(steps - 1)] + [target]


def geometric_generations(T: int, steps: int, delay: float) -> list[int]:
    """The generation of each step: evenly spaced over the generations after the first ``delay``
    fraction of the run (0..T), the first at the start of that span and the last one spacing
    before its end, so every step is followed by training."""
    n = T + 1
    start = math.floor(delay * n)
    return [start + (i * (n - start)) // steps for i in range(steps)]


@register("geometric")
def geometric(t: int, T: int, p: float, s: int, *, target: float = 0.98, steps: int = 7,
              delay: float = 0.0) -> float | Pruning:
    """SNIP-it's steps to sparsity `target`: p at `steps` evenly spaced generations, each to its cumulative kept fraction."""
    if not 0.5 <= target < 1.0:
        raise ValueError(f"prune.schedule_params.target is the final sparsity: it must be in [0.5, 1), got {target}")
    if steps < 1:
        raise ValueError(f"prune.schedule_params.steps must be >= 1, got {steps}")
    if not 0.0 <= delay < 1.0:
        raise ValueError(f"prune.schedule_params.delay must be in [0, 1), got {delay}")
    here = [i for i, g in enumerate(geometric_generations(T, steps, delay)) if g == t]
    if not here:
        return 0.0
    return Pruning(p, kept=1.0 - geometric_targets(target, steps)[here[-1]])


def polynomial_sparsity(t: int, T: int, *, final_sparsity: float = 0.9, initial_sparsity: float = 0.0,
                        start: float = 0.0, end: float = 0.75) -> float:
    """Zhu & Gupta's target sparsity s_t = s_f + (s_i - s_f) (1 - (t - t0) / (t1 - t0))^3, s_i
    before t0 and s_f from t1 on, with t0 = round(start T) and t1 = round(end T): the cube prunes
    fast while many weights are redundant and slowly as few are left."""
    t0, t1 = round(start * T), round(end * T)
    if t < t0:
        return initial_sparsity
    if t >= t1:  # also when rounding puts t0 and t1 on one generation
        return final_sparsity
    return final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - (t - t0) / (t1 - t0)) ** 3


def _ramp_step(t: int, T: int, start: float, end: float, every: int) -> bool:
    """Whether the cubic ramp (polynomial, gradual) prunes at t: at t0 = round(start T), every
    `every` generations after it, and at t1 = round(end T); the parameters checked first."""
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(f"prune.schedule_params.start and end are fractions of the run: they must satisfy "
                         f"0 <= start < end <= 1, got {start} and {end}")
    if not (isinstance(every, int) and every >= 1):
        raise ValueError(f"prune.schedule_params.every must be an integer >= 1, got {every}")
    t0, t1 = round(start * T), round(end * T)
    return t0 <= t <= t1 and (t == t1 or (t - t0) % every == 0)


@register("polynomial")
def polynomial(t: int, T: int, p: float, s: int, *, final_sparsity: float = 0.9, initial_sparsity: float = 0.0,
               start: float = 0.0, end: float = 0.75, every: int = 1) -> float | Pruning:
    """Zhu & Gupta's gradual pruning: p every `every` generations from start to end (fractions of the run), each to the cubic target's kept fraction."""
    if not 0.0 <= initial_sparsity <= final_sparsity < 1.0:
        raise ValueError(f"prune.schedule_params.initial_sparsity and final_sparsity must satisfy "
                         f"0 <= initial_sparsity <= final_sparsity < 1, got {initial_sparsity} and {final_sparsity}")
    if not _ramp_step(t, T, start, end, every):
        return 0.0  # idle, as geometric between its steps: the masks hold the last target, the networks train
    sparsity = polynomial_sparsity(t, T, final_sparsity=final_sparsity, initial_sparsity=initial_sparsity,
                                   start=start, end=end)
    return Pruning(p, kept=1.0 - sparsity) if sparsity > 0 else 0.0


@register("gradual")
def gradual(t: int, T: int, p: float, s: int, *, start: float = 0.0, end: float = 0.75,
            every: int = 1) -> float | Pruning:
    """Zhu & Gupta's cubic ramp to prune.target_kept: p every `every` generations from start to end (fractions of the run), each pair pruned to the ramp's kept fraction, then training only."""
    if not _ramp_step(t, T, start, end, every):
        return 0.0
    progress = polynomial_sparsity(t, T, final_sparsity=1.0, initial_sparsity=0.0, start=start, end=end)
    return Pruning(p, progress=progress) if progress > 0 else 0.0
