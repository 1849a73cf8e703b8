"""The report of a bench directory, built from its rows alone: per mode the best combination and
how sure we are, ranked tables, every pair of combinations tested, box plots, curves over
generations and a loss-vs-kept Pareto scatter.

Statistics. Trial i of every combination of one mode runs with the same seed, hence, where their
``data`` config sections match, the same data and initial population: a matched design, so two
such combinations are compared by a two-sided Wilcoxon signed-rank test on their per-seed
differences (seeds present in both). Across modes, or when the data differ (a sweep over
``data.*`` keys), the trials are not matched, and a Mann-Whitney U test compares the two samples;
so it does when fewer than ``MIN_PAIRS`` seeds are in both. Each comparison says which
(:data:`PAIRED`, :data:`DATA_DIFFER`, ...). Every pair of combinations (within
each mode, and each of one mode against each of another) is tested on test loss and on kept
fraction, each with its Vargha-Delaney A12 (paired: the share of seeds where A > B, ties half) and
median difference, and Holm's step-down correction runs over that whole family. The report warns
when the design cannot reach significance after the correction, and says how many trials would.
"""

from __future__ import annotations

import itertools
import json
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import matplotlib
import numpy as np
from matplotlib.ticker import MaxNLocator

from coevo.errors import UserError
from coevo.report import subplots  # Agg figures outside pyplot: the caller's backend is left alone

# matplotlib 3.10 renamed boxplot's vert=False
HORIZONTAL = {"orientation": "horizontal"} if tuple(map(int, matplotlib.__version__.split(".")[:2])) >= (3, 10) \
    else {"vert": False}
ROWS = "rows.jsonl"
REPORT = "report.md"
FIGURES = "figures"
DEFAULT_BASELINE = {"prune.operator": "none"}
CURVES = (("validation_loss_best", "validation loss, best pair"),
          ("train_loss_median", "training loss, median cell"),
          ("kept_best", "kept fraction, best pair"))
MEASURES = ("test_loss", "kept_fraction")
"""The row keys every pair of combinations is tested on."""
ALPHA = 0.05
"""The family-wise error rate the report's warning and bold Holm p-values refer to."""
MIN_PAIRS = 3
"""Fewer seeds in common than this and two combinations of one mode are compared unpaired, on
all their trials: a signed-rank test on two pairs cannot go below p = 0.5."""
EXACT_LIMIT = 50
"""scipy's exact p-values up to this many values per sample (exact Mann-Whitney on 400 + 400 takes a minute)."""
PERMUTATION_LIMIT = 200_000
"""Exact permutation p-values (for ties and zero differences) up to this many permutations."""
WILCOXON = "Wilcoxon signed-rank"
MANN_WHITNEY = "Mann-Whitney U"
PAIRED = "paired by seed"
DATA_DIFFER = "unpaired: data differ"
MODES_DIFFER = "unpaired: modes differ"
FEW_SEEDS = "unpaired: too few shared seeds"
"""Why a comparison is paired or not, as the report's pairs table says it."""


def read_rows(path: Path) -> list[dict]:
    """Rows of a rows.jsonl file (none if it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise UserError(f"{path} line {number} is not a JSON row; remove it to go on") from None
    return rows


# ---------------------------------------------------------------------------------------------
# statistics


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (controls the family-wise error rate over the family).

    Sorted ascending, p_(j) becomes max over i <= j of min(1, (m - i + 1) p_(i)). NaN entries
    are not comparisons: they stay NaN and do not count in m.
    """
    tested = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    m = len(tested)
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(tested, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def a12(x: Sequence[float], y: Sequence[float]) -> float:
    """Vargha-Delaney A12 = P(X > Y) + 0.5 P(X = Y), over every pair of one value from each sample.

    0.5 is no effect, 1 every x above every y, 0 every x below. Unlike a p-value it says how large
    the effect is and does not grow with the number of trials. NaN if a sample is empty.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if not len(x) or not len(y):
        return math.nan
    return float(np.mean(x[:, None] > y[None, :]) + 0.5 * np.mean(x[:, None] == y[None, :]))


def a12_paired(x: Sequence[float], y: Sequence[float]) -> float:
    """Paired A = P(X > Y) + 0.5 P(X = Y) within matched pairs (x[i] and y[i] share a seed): the
    share of seeds where x wins, ties half. The effect size that goes with the signed-rank test:
    the unpaired :func:`a12` also compares x of one seed with y of another, which a matched design
    does not (x = [1, 2, 3, 4], y = [0.5, 1.5, 2.5, 10]: paired 0.75, unpaired 0.5625).
    NaN if there are no pairs."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"a12_paired needs matched samples of one length, got {len(x)} and {len(y)}")
    if not len(x):
        return math.nan
    return float(np.mean(x > y) + 0.5 * np.mean(x == y))


def attach_data(rows: Sequence[dict], bench: Path) -> list[dict]:
    """The rows, each with ``data``: its trial's data config section. Rows written before rows
    recorded it take it from their run directory's config.toml (a copy; the file is unchanged);
    without either they stay as they are and :func:`data_identity` falls back on their settings."""
    from coevo import config as config_module

    out = []
    for row in rows:
        path = Path(bench) / row.get("run_dir", "") / "config.toml"
        if "data" not in row and row.get("run_dir") and path.is_file():
            row = {**row, "data": config_module.to_dict(config_module.load(path))["data"]}
        out.append(row)
    return out


def data_identity(row: dict) -> tuple[str, Any]:
    """What, with the seed, decides a trial's data: its ``data`` config section (recorded in the
    row, or attached by :func:`attach_data`), else the ``data.*`` keys and run preset its sweep
    varies (the rest of the data config is the spec's [base], shared by every combination)."""
    if "data" in row:
        return "config", row["data"]
    settings = row.get("settings") or {}
    return "settings", {k: v for k, v in settings.items() if k.startswith("data.") or k == "preset"}


def data_difference(x_runs: dict, y_runs: dict) -> str | None:
    """The first seed both sides ran whose two runs had different data (as a phrase naming the
    seed and the first differing key), or None when every shared seed's data match."""
    for seed in sorted(set(x_runs) & set(y_runs)):
        (kind_x, x), (kind_y, y) = data_identity(x_runs[seed]), data_identity(y_runs[seed])
        if (kind_x, x) == (kind_y, y):
            continue
        if kind_x != kind_y:  # one recorded its data config, the other only its settings
            return f"seed {seed} (one side's data config is unknown)"
        key = next(k for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k))
        name = key if kind_x == "settings" else f"data.{key}"
        return f"seed {seed} ({name}: {x.get(key)!r} against {y.get(key)!r})"
    return None


def write_table(out: Path, stem: str, text: str, data: Any) -> None:
    """Print a benchmark's markdown table and keep it, with its data, as ``out/STEM.md`` and
    ``out/STEM.json`` (the files benchmarks/results holds)."""
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(text + "\n")
    (out / f"{stem}.json").write_text(json.dumps(data, indent=1) + "\n")


def median_iqr(values: Sequence[float]) -> list[float] | None:
    """[median, Q1, Q3] of the values, the benchmark tables' "median [Q1-Q3]"; None if there are none."""
    if not len(values):
        return None
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    return [float(med), float(q1), float(q3)]


def paired_comparison(x_runs: dict, y_runs: dict, key: str = "test_loss") -> dict[str, float]:
    """Two sides' rows keyed by seed, compared on the seeds both ran: the median difference
    (x - y), :func:`a12_paired` and :func:`wilcoxon_p` of ``key``; empty if no seed is shared.
    A seed's two runs must have had the same data (:func:`data_difference`), else pairing them
    means nothing: a UserError says which seed and key differ."""
    seeds = sorted(set(x_runs) & set(y_runs))
    if not seeds:
        return {}
    differ = data_difference(x_runs, y_runs)
    if differ is not None:
        raise UserError(f"cannot pair runs by seed: the two sides' runs of {differ} had different data; "
                        f"compare runs of the same data config")
    x = [x_runs[s][key] for s in seeds]
    y = [y_runs[s][key] for s in seeds]
    return {"difference": float(np.median(np.subtract(x, y))), "a12": a12_paired(x, y), "wilcoxon_p": wilcoxon_p(x, y)}


def wilcoxon_p(x: Sequence[float], y: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p of paired samples (x[i] and y[i] share a seed).

    Zero differences are ranked, then their ranks dropped (Pratt): a pair that did not move weighs
    against an effect instead of vanishing. All differences zero: p = 1. Without zero or tied
    differences, scipy's exact distribution; with them, the exact distribution of the same
    statistic over all 2^n sign flips (the normal approximation is far off at a few pairs:
    0.046 for four equal differences, where no exact test goes below 0.125); beyond
    ``PERMUTATION_LIMIT`` flips, the normal approximation.
    """
    from scipy.stats import wilcoxon

    d = np.asarray(x, dtype=float) - np.asarray(y, dtype=float)
    if not len(d):
        return math.nan
    if np.all(d == 0):
        return 1.0
    if len(d) <= EXACT_LIMIT and np.all(d != 0) and len(np.unique(np.abs(d))) == len(d):
        return float(wilcoxon(d, zero_method="pratt", alternative="two-sided", method="exact").pvalue)
    if 2 ** len(d) <= PERMUTATION_LIMIT:
        return signed_rank_permutation_p(d)
    return float(wilcoxon(d, zero_method="pratt", alternative="two-sided", method="approx").pvalue)


def mann_whitney_p(x: Sequence[float], y: Sequence[float]) -> float:
    """Two-sided Mann-Whitney U p of independent samples.

    Every value equal: p = 1. Without ties, scipy's exact distribution (up to ``EXACT_LIMIT``
    values per sample); with ties, the exact distribution of the same statistic over all
    C(n1 + n2, n1) splits of the pooled values; beyond ``PERMUTATION_LIMIT`` splits, the normal
    approximation with tie and continuity corrections.
    """
    from scipy.stats import mannwhitneyu

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if not len(x) or not len(y):
        return math.nan
    pooled = np.concatenate([x, y])
    if np.all(pooled == pooled[0]):
        return 1.0
    if max(len(x), len(y)) <= EXACT_LIMIT and len(np.unique(pooled)) == len(pooled):
        return float(mannwhitneyu(x, y, alternative="two-sided", method="exact").pvalue)
    if math.comb(len(pooled), len(x)) <= PERMUTATION_LIMIT:
        return rank_sum_permutation_p(x, y)
    return float(mannwhitneyu(x, y, alternative="two-sided", method="asymptotic").pvalue)


def signed_rank_permutation_p(d: Sequence[float]) -> float:
    """Exact two-sided p of the Pratt signed-rank statistic (sum of the midranks of |d| over the
    positive d, zeros ranked but contributing nothing) over all 2^n sign flips of d."""
    from scipy.stats import rankdata

    d = np.asarray(d, dtype=float)
    ranks = rankdata(np.abs(d))
    ranks[d == 0] = 0.0
    flips = (np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1
    return _two_sided(flips @ ranks, float(ranks[d > 0].sum()))


def rank_sum_permutation_p(x: Sequence[float], y: Sequence[float]) -> float:
    """Exact two-sided p of the rank sum of x (midranks in the pooled sample; U plus a constant)
    over all C(n1 + n2, n1) ways to split the pooled values into samples of these sizes."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([np.asarray(x, dtype=float), np.asarray(y, dtype=float)]))
    splits = np.array(list(itertools.combinations(range(len(ranks)), len(x))))
    return _two_sided(ranks[splits].sum(axis=1), float(ranks[: len(x)].sum()))


def _two_sided(null: np.ndarray, observed: float) -> float:
    """Twice the smaller tail of ``observed`` in an enumerated null distribution, at most 1.
    (Rank sums are multiples of 0.5, so the tolerance only absorbs summation order.)"""
    tol = 1e-9 * max(1.0, abs(observed))
    return float(min(1.0, 2 * min(np.mean(null >= observed - tol), np.mean(null <= observed + tol))))


def smallest_p(n1: int, n2: int) -> float:
    """The smallest two-sided p an exact Mann-Whitney U test can give with these sample sizes:
    the two most extreme of the C(n1 + n2, n1) equally likely rank splittings."""
    return min(1.0, 2.0 / math.comb(n1 + n2, n1))


def smallest_p_paired(n: int) -> float:
    """The smallest two-sided p an exact signed-rank test can give on n pairs: all differences of
    one sign, 2 of the 2^n equally likely sign patterns."""
    return min(1.0, 2.0 / 2 ** n)


def trials_needed(paired: bool, family: int, alpha: float = ALPHA) -> int:
    """The fewest trials per combination (all finishing) with which Holm's first step can go below
    ``alpha``: family size times the exact test's smallest p."""
    for n in range(1, 10_000):
        if family * (smallest_p_paired(n) if paired else smallest_p(n, n)) < alpha:
            return n
    raise ValueError(f"no trial count below 10000 suffices for a family of {family}")


@dataclass
class Group:
    """The trials of one combination."""

    id: str
    label: str
    mode: str
    index: int
    settings: dict[str, Any]
    rows: list[dict] = field(default_factory=list)
    baseline: "Group | None" = None
    is_baseline: bool = False

    def values(self, key: str) -> np.ndarray:
        return np.array([r[key] for r in self.rows if r.get(key) is not None], dtype=float)

    def by_seed(self, key: str) -> dict[int, float]:
        return {r["seed"]: float(r[key]) for r in self.rows if r.get(key) is not None}

    @property
    def n(self) -> int:
        return len(self.rows)


@dataclass
class Comparison:
    """One test of combination ``a`` against ``b`` on one measure (a row key)."""

    a: Group
    b: Group
    measure: str
    paired: bool
    n_a: int
    """Values of ``a`` tested: the pairs when paired."""
    n_b: int
    difference: float
    """Median of the differences a - b: per seed when paired; else over every pair of one value
    from each sample (the Hodges-Lehmann shift, the estimate that goes with Mann-Whitney U)."""
    a12: float
    """P(a > b) + 0.5 P(a = b) over the values tested: within matched pairs when paired
    (:func:`a12_paired`), else over every pair of one value from each sample (:func:`a12`)."""
    p: float
    p_holm: float = math.nan
    pairing: str = ""
    """Why paired or not: :data:`PAIRED`, :data:`DATA_DIFFER`, :data:`MODES_DIFFER` or :data:`FEW_SEEDS`."""

    @property
    def test(self) -> str:
        return WILCOXON if self.paired else MANN_WHITNEY

    @property
    def floor(self) -> float:
        """The smallest p the exact test can give with these sample sizes."""
        return smallest_p_paired(self.n_a) if self.paired else smallest_p(self.n_a, self.n_b)

    def seen_from(self, g: Group) -> "Comparison":
        """This comparison with ``g`` as ``a`` (difference negated, A12 mirrored when swapped)."""
        if g is self.a:
            return self
        if g is not self.b:
            raise ValueError(f"{g.label} is not in this comparison")
        return Comparison(self.b, self.a, self.measure, self.paired, self.n_b, self.n_a, -self.difference,
                          1.0 - self.a12, self.p, self.p_holm, self.pairing)


def compare(a: Group, b: Group, measure: str, matched: bool) -> Comparison:
    """Test ``a`` against ``b`` on ``measure``: signed-rank on the seeds both have when the trials
    are ``matched`` (same mode), every shared seed's two trials had the same data
    (:func:`data_difference`) and at least ``MIN_PAIRS`` seeds are shared, with the paired A12;
    else Mann-Whitney U on all trials of each, with the unpaired A12."""
    pairing = MODES_DIFFER
    if matched:
        rows_a = {r["seed"]: r for r in a.rows}
        rows_b = {r["seed"]: r for r in b.rows}
        xa, xb = a.by_seed(measure), b.by_seed(measure)
        seeds = sorted(xa.keys() & xb.keys())
        if data_difference(rows_a, rows_b) is not None:
            pairing = DATA_DIFFER
        elif len(seeds) < MIN_PAIRS:
            pairing = FEW_SEEDS
        else:
            x, y = np.array([xa[s] for s in seeds]), np.array([xb[s] for s in seeds])
            return Comparison(a, b, measure, True, len(x), len(y), float(np.median(x - y)), a12_paired(x, y),
                              wilcoxon_p(x, y), pairing=PAIRED)
    x, y = a.values(measure), b.values(measure)
    shift = float(np.median(x[:, None] - y[None, :])) if len(x) and len(y) else math.nan
    return Comparison(a, b, measure, False, len(x), len(y), shift, a12(x, y), mann_whitney_p(x, y), pairing=pairing)


def summarize(rows: Sequence[dict], baseline: dict[str, Any]) -> dict[str, list[Group]]:
    """Per mode, the combinations ranked by median test loss (then median kept fraction, then
    position in the spec). Each gets its baseline: the combination of the same mode that matches
    ``baseline`` and, among several, shares the most settings with it."""
    groups: dict[str, Group] = {}
    for row in rows:
        g = groups.get(row["combination"])
        if g is None:
            g = groups[row["combination"]] = Group(row["combination"], row["label"], row["mode"],
                                                   row["combination_index"], row["settings"])
        g.rows.append(row)
    by_mode: dict[str, list[Group]] = {}
    for g in sorted(groups.values(), key=lambda g: g.index):
        by_mode.setdefault(g.mode, []).append(g)
    for members in by_mode.values():
        bases = [g for g in members if all(g.settings.get(k) == v for k, v in baseline.items())]
        for g in bases:
            g.is_baseline = True
        for g in members:
            if not g.is_baseline and bases:
                g.baseline = max(bases, key=lambda b: (sum(b.settings.get(k) == v for k, v in g.settings.items()),
                                                       -b.index))
        members.sort(key=lambda g: (_median(g.values("test_loss")), _median(g.values("kept_fraction")), g.index))
    return by_mode


def pairs(by_mode: dict[str, list[Group]]) -> list[tuple[Group, Group]]:
    """Every pair of combinations: within each mode in rank order, then each combination of one
    mode against each of every later mode."""
    modes = list(by_mode)
    within = [(a, b) for gs in by_mode.values() for i, a in enumerate(gs) for b in gs[i + 1:]]
    across = [(a, b) for i, mode in enumerate(modes) for other in modes[i + 1:]
              for a in by_mode[mode] for b in by_mode[other]]
    return within + across


def compare_all(by_mode: dict[str, list[Group]]) -> list[Comparison]:
    """Every pair on every measure, with Holm's correction over that whole family."""
    comparisons = [compare(a, b, measure, matched=a.mode == b.mode) for a, b in pairs(by_mode) for measure in MEASURES]
    for c, p in zip(comparisons, holm([c.p for c in comparisons])):
        c.p_holm = p
    return comparisons


def design_warning(comparisons: Sequence[Comparison], alpha: float = ALPHA) -> str | None:
    """A warning when the trials are too few for Holm-corrected significance, else None.

    Holm multiplies the family's smallest p by the family size m, so if m times the smallest p any
    comparison's exact test can give is >= alpha, nothing can be significant. Short of that, a
    comparison whose own smallest p times m is >= alpha can only pass behind smaller p-values.
    """
    tested = [c for c in comparisons if not math.isnan(c.p)]
    m = len(tested)
    if not m:
        return None
    short = [c for c in tested if m * c.floor >= alpha]
    if not short:
        return None
    needed = max(trials_needed(paired, m, alpha) for paired in {c.paired for c in tested})
    best = min(tested, key=lambda c: c.floor)
    if m * best.floor >= alpha:
        return (f"No comparison can reach Holm p < {alpha:g}. The family has m = {m} comparisons; the smallest "
                f"p an exact test can give here is {best.floor:.3g} ({best.test}, {_n(best)}), and Holm's first "
                f"step multiplies it by m: {m} × {best.floor:.3g} = {m * best.floor:.3g}. About {needed} trials "
                f"per combination would let every comparison reach it; until then read the medians and A12, "
                f"not significance.")
    kinds = sorted({f"{c.test}, {_n(c)}" for c in short})
    return (f"{len(short)} of the m = {m} comparisons ({'; '.join(kinds)}) have an exact smallest p that, "
            f"multiplied by m, is >= {alpha:g}: they can reach Holm p < {alpha:g} only behind smaller p-values. "
            f"About {needed} trials per combination would lift this.")


def _n(c: Comparison) -> str:
    return f"{c.n_a} pairs" if c.paired else f"{c.n_a} + {c.n_b}"


def _median(x: np.ndarray) -> float:
    return float(np.median(x)) if len(x) else math.inf


def _quartiles(x: np.ndarray) -> tuple[float, float, float]:
    if not len(x):
        return (math.nan,) * 3
    q1, q2, q3 = np.percentile(x, [25, 50, 75])
    return float(q2), float(q1), float(q3)


# ---------------------------------------------------------------------------------------------
# the report


def _fmt(value: float, digits: int = 4) -> str:
    return "—" if math.isnan(value) else f"{value:.{digits}g}"


def _fmt_diff(value: float) -> str:
    if math.isnan(value):
        return "—"
    return "0" if value == 0 else f"{value:+.3g}".replace("-", "−")


def _fmt_a12(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}"


def _fmt_p(value: float, bold: bool = False) -> str:
    text = _fmt(value, 3)
    return f"**{text}**" if bold and value < ALPHA else text


def _fmt_iqr(x: np.ndarray, digits: int) -> str:
    med, q1, q3 = _quartiles(x)
    return f"{med:.{digits}f} [{q1:.{digits}f}–{q3:.{digits}f}]" if len(x) else "—"


class Lookup:
    """The comparisons by pair and measure, either way round."""

    def __init__(self, comparisons: Sequence[Comparison]):
        self._by = {(c.a.id, c.b.id, c.measure): c for c in comparisons}

    def get(self, g: Group, h: Group, measure: str) -> Comparison | None:
        c = self._by.get((g.id, h.id, measure)) or self._by.get((h.id, g.id, measure))
        return c.seen_from(g) if c is not None else None


def lead(groups: Sequence[Group], lookup: Lookup, loss: str) -> list[str]:
    """One mode's opening lines: the best combination, against its baseline and the runner-up."""
    best = groups[0]
    lines = [f"**Best: {best.label}**: median test {loss} {_fmt_iqr(best.values('test_loss'), 4)}, "
             f"kept {_fmt_iqr(best.values('kept_fraction'), 3)} (median [Q1–Q3] over {best.n} trials)."]
    rivals: list[tuple[str, Group]] = []
    if best.baseline is not None:
        rivals.append(("baseline", best.baseline))
    if len(groups) > 1:
        if groups[1] is best.baseline:
            rivals = [("baseline, runner-up", groups[1])]
        else:
            rivals.append(("runner-up", groups[1]))
    if best.is_baseline:
        lines[0] += " It is the baseline."
    if not rivals:
        return lines
    lines += ["", f"| best against | test {loss}: median difference | A12 | Holm p | kept: median difference "
                  f"| A12 | Holm p | test, n, pairing |",
              "|---|---:|---:|---:|---:|---:|---:|---|"]
    for role, other in rivals:
        loss_c, kept_c = lookup.get(best, other, "test_loss"), lookup.get(best, other, "kept_fraction")
        cells = []
        for c in (loss_c, kept_c):
            cells += ["—"] * 3 if c is None else [_fmt_diff(c.difference), _fmt_a12(c.a12), _fmt_p(c.p_holm, True)]
        test = f"{loss_c.test}, {_n(loss_c)}, {loss_c.pairing}" if loss_c is not None else "—"
        lines.append(f"| {role}: {other.label} | {' | '.join(cells)} | {test} |")
    return lines


def table(groups: Sequence[Group], lookup: Lookup, loss: str) -> list[str]:
    """One mode's ranked Markdown table."""
    mask = any(r.get("mask_kept_fraction") is not None for g in groups for r in g.rows)
    head = (f"| rank | combination | n | test {loss} median [Q1–Q3] | kept median [Q1–Q3] "
            + ("| mask kept median [Q1–Q3] " if mask else "")
            + f"| train {loss} (cells' mean) median | test {loss} vs baseline: A12 | Holm p |")
    lines = [head, "|---:|---|---:|---|---|" + ("---|" if mask else "") + "---:|---:|---:|"]
    for rank, g in enumerate(groups, 1):
        c = lookup.get(g, g.baseline, "test_loss") if g.baseline is not None else None
        if g.is_baseline:
            versus = "baseline | "
        elif c is None:
            versus = "— | —"
        else:
            versus = f"{_fmt_a12(c.a12)} | {_fmt_p(c.p_holm, True)}"
        lines.append(f"| {rank} | {g.label} | {g.n} | {_fmt_iqr(g.values('test_loss'), 4)} "
                     f"| {_fmt_iqr(g.values('kept_fraction'), 3)} "
                     + (f"| {_fmt_iqr(g.values('mask_kept_fraction'), 3)} " if mask else "")
                     + f"| {_fmt(_quartiles(g.values('train_loss_mean'))[0])} | {versus} |")
    return lines


def pairs_table(comparisons: Sequence[Comparison], loss: str) -> list[str]:
    """Every comparison, one row per pair and measure."""
    names = {"test_loss": f"test {loss}", "kept_fraction": "kept"}
    lines = ["| A | B | measure | test | n | median difference A − B | A12 | p | Holm p | pairing |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---|"]
    for c in comparisons:
        a, b = ((c.a.label, c.b.label) if c.a.mode == c.b.mode
                else (f"{c.a.mode}: {c.a.label}", f"{c.b.mode}: {c.b.label}"))
        lines.append(f"| {a} | {b} | {names.get(c.measure, c.measure)} | {c.test} | {_n(c)} "
                     f"| {_fmt_diff(c.difference)} | {_fmt_a12(c.a12)} | {_fmt_p(c.p)} | {_fmt_p(c.p_holm, True)} "
                     f"| {c.pairing} |")
    return lines


def write_report(out: Path, baseline: dict[str, Any] | None = None, title: str | None = None) -> Path:
    """Write ``report.md`` and ``figures/*.png`` into a bench directory from its rows."""
    out = Path(out)
    rows = read_rows(out / ROWS)
    if not rows:
        raise UserError(f"{out} has no finished trials ({ROWS} is missing or empty); nothing to report")
    rows = attach_data(rows, out)
    baseline = dict(baseline or DEFAULT_BASELINE)
    by_mode = summarize(rows, baseline)
    comparisons = compare_all(by_mode)
    lookup = Lookup(comparisons)
    figures = out / FIGURES
    figures.mkdir(exist_ok=True)
    colours = _colours([g for gs in by_mode.values() for g in gs])
    paths = [plot_boxes(by_mode, "test_loss", "final test loss (best pair)", figures / "box_test_loss.png", colours),
             plot_boxes(by_mode, "kept_fraction", "kept fraction (best pair)", figures / "box_kept.png", colours)]
    curves = {mode: plot_curves(out, groups, figures / f"curves_{mode}.png", colours)
              for mode, groups in by_mode.items()}
    paths.append(plot_pareto(by_mode, figures / "pareto.png", colours))

    loss = next((r["loss"].upper() for r in rows if r.get("loss")), "loss")
    seeds = sorted({r["seed"] for r in rows})
    generations = sorted({r["generations"] for r in rows if r.get("generations") is not None})
    ngroups = sum(len(gs) for gs in by_mode.values())
    m = sum(not math.isnan(c.p) for c in comparisons)
    lines = [f"# coevo bench: {title or out.name}", "",
             f"{len(rows)} finished trials in {ngroups} combinations; seeds {_ranges(seeds)}; "
             f"{' / '.join(map(str, generations))} generations. Rows: `{ROWS}` (one per trial, with its run "
             f"directory). Final values are those of each trial's best pair (lowest validation loss), "
             f"measured on the test split; \"train {loss} (cells' mean)\" is the mean training loss over the "
             f"cells' centres, the measure of the paper's figures.", "",
             f"Baseline: the combination of the same mode with {_describe(baseline)}. Lower test {loss} is "
             f"better. A12 = P(A > B) + ½ P(A = B), A being the first combination named (in each mode's first "
             f"table, the best): below 0.5 A's test {loss} tends to be lower; for paired comparisons "
             f"({WILCOXON}) A12 is the share of seeds where A > B, ties half. Holm p is "
             f"corrected over all {m} comparisons of this report (every pair, test {loss} and kept fraction); "
             f"bold: below {ALPHA:g}. Method: [Statistics](#statistics).", ""]
    warning = design_warning(comparisons)
    if warning:
        lines += [f"> **Too few trials for significance.** {warning}", ""]
    for mode, groups in by_mode.items():
        lines += [f"## {mode}", ""]
        lines += lead(groups, lookup, loss)
        lines += ["", "Ranked by median test loss (ties: median kept fraction).", ""]
        lines += table(groups, lookup, loss)
        if not any(g.is_baseline for g in groups):
            lines += ["", f"No baseline ({_describe(baseline)}) has finished in this mode."]
        lines += ["", f"![curves over generations, {mode}]({FIGURES}/{curves[mode].name})" if curves[mode]
                  else "(no curves: the trials' logbook.csv files are not there)", ""]
    modes = list(by_mode)
    if len(modes) > 1:
        lines += ["## Best of each mode", "",
                  f"| A | B | test {loss}: median difference A − B | A12 | Holm p | kept: median difference | A12 "
                  f"| Holm p |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        for i, mode in enumerate(modes):
            for other in modes[i + 1:]:
                a, b = by_mode[mode][0], by_mode[other][0]
                cells = []
                for measure in MEASURES:
                    c = lookup.get(a, b, measure)
                    cells += ["—"] * 3 if c is None else [_fmt_diff(c.difference), _fmt_a12(c.a12),
                                                          _fmt_p(c.p_holm, True)]
                lines.append(f"| {mode}: {a.label} | {other}: {b.label} | {' | '.join(cells)} |")
        lines.append("")
    lines += ["## All pairs", "",
              "Within a mode A is the better ranked; across modes A is of the first mode.", ""]
    lines += pairs_table(comparisons, loss) if comparisons else ["(one combination: nothing to compare)"]
    lines += ["", "## Statistics", "",
              f"- **Matched trials, paired test.** Trial i of every combination runs with seed `seed_start + i`, "
              f"so two combinations of one mode whose data configs (the `data` section of each trial's "
              f"config) are the same share each trial's data and initial population. They are "
              f"compared by a two-sided {WILCOXON} test (`scipy.stats.wilcoxon`) on the per-seed differences "
              f"A − B, over the seeds both have finished (pairing: \"{PAIRED}\"). Zero differences are kept "
              f"in the ranking and then dropped (`zero_method=\"pratt\"`); all differences zero gives p = 1.",
              f"- **Unmatched trials, unpaired test.** Across modes the trials do not share a population "
              f"(\"{MODES_DIFFER}\"), and combinations whose data configs differ, as in a sweep over `data.*` "
              f"keys, do not share their data (\"{DATA_DIFFER}\"): two such combinations are compared by a "
              f"two-sided {MANN_WHITNEY} test (`scipy.stats.mannwhitneyu`) on all trials of each; so are two "
              f"that share fewer than {MIN_PAIRS} seeds (\"{FEW_SEEDS}\"). The pairs table's last column says "
              f"which. All values equal gives p = 1.",
              f"- **Exact p-values.** Without ties or zero differences, scipy's exact distributions (up to "
              f"{EXACT_LIMIT} values per sample). With them, the exact distribution of the same rank statistic "
              f"over every sign flip of the differences (paired) or every split of the pooled trials "
              f"(unpaired), up to {PERMUTATION_LIMIT:,} of them; beyond that, the normal approximation.",
              "- **Effect size.** Median difference: the median of the per-seed differences A − B (paired), or "
              "of all differences between one trial of A and one of B (unpaired, the Hodges-Lehmann shift). "
              "Vargha-Delaney A12 = P(A > B) + ½ P(A = B) over the values tested: 0.5 is no effect, 0 or 1 "
              "complete separation. For paired comparisons A12 is the share of seeds where A > B, ties half "
              "(within each seed's pair, as the signed-rank test compares them); unpaired, it is over every "
              "pair of one trial of A and one of B (Mann-Whitney U / (n1 n2)). For test loss below 0.5 "
              "favours A; for kept fraction below 0.5 means A keeps less (prunes more).",
              f"- **Multiple comparisons.** Every pair of combinations (within each mode, and each combination "
              f"of one mode against each of another) is tested on test {loss} and on kept fraction: m = {m} "
              f"tests. Holm's step-down correction runs over that whole family (family-wise error rate "
              f"{ALPHA:g}). With n pairs an exact signed-rank test cannot give p below 2 / 2^n, and Mann-Whitney "
              f"on n1 + n2 trials not below 2 / C(n1 + n2, n1); Holm multiplies the smallest p by m, so few "
              f"trials and many combinations may leave nothing able to pass: the report then warns above."]
    lines += ["", "## Figures", ""]
    lines += [f"![{p.stem}]({FIGURES}/{p.name})" for p in paths]
    lines += ["", "- box plots: final test loss and kept fraction per combination, one point per trial;",
              "- curves: median over trials with the interquartile band;",
              "- Pareto: test loss vs kept fraction, one small point per trial and a large one per combination "
              "(medians); the outlined combinations are not beaten on both by any other.", ""]
    path = out / REPORT
    tmp = out / f".{REPORT}.tmp"
    tmp.write_text("\n".join(lines))
    tmp.replace(path)
    return path


def _describe(baseline: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {v!r}" for k, v in baseline.items())


def _ranges(values: Sequence[int]) -> str:
    if not values:
        return "none"
    if list(values) == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}–{values[-1]}" if len(values) > 1 else str(values[0])
    return ", ".join(map(str, values))


def _colours(groups: Sequence[Group]) -> dict[str, Any]:
    cmap = matplotlib.colormaps["tab10" if len(groups) <= 10 else "tab20"]
    return {g.id: cmap(i % cmap.N) for i, g in enumerate(sorted(groups, key=lambda g: g.index))}


def plot_boxes(by_mode: dict[str, list[Group]], key: str, title: str, path: Path, colours: dict) -> Path:
    """One panel per mode, one horizontal box per combination (best rank on top), trials as points."""
    rng = np.random.default_rng(0)  # jitter only
    labels = {g.id: textwrap.fill(g.label, 48) for gs in by_mode.values() for g in gs}  # long settings wrap
    lines = max(label.count("\n") + 1 for label in labels.values())
    heights = [max(1.5, (0.3 + 0.15 * lines) * len(gs) + 0.8) for gs in by_mode.values()]
    fig, axes = subplots(len(by_mode), 1, figsize=(8, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, (mode, groups) in zip(axes[:, 0], by_mode.items()):
        data = [g.values(key) for g in reversed(groups)]
        ax.boxplot(data, widths=0.6, showfliers=False, medianprops={"color": "black"}, **HORIZONTAL)
        for y, (g, x) in enumerate(zip(reversed(groups), data), 1):
            ax.scatter(x, y + rng.uniform(-0.15, 0.15, len(x)), s=14, color=colours[g.id], zorder=3)
        ax.set_yticks(range(1, len(groups) + 1), [labels[g.id] for g in reversed(groups)], fontsize=8)
        ax.set_title(f"{mode}: {title}", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _logbook_curves(out: Path, group: Group, column: str) -> list[np.ndarray]:
    from coevo.report import read_logbook

    curves = []
    for row in group.rows:
        try:
            log = read_logbook(out / row["run_dir"])
        except UserError:
            continue
        if column in log:
            curves.append(log[column])
    return curves


def plot_curves(out: Path, groups: Sequence[Group], path: Path, colours: dict) -> Path | None:
    """Validation loss, training loss and kept fraction over generations: per combination the
    median over its trials and the interquartile band (over the trials that reached each generation)."""
    fig, axes = subplots(1, len(CURVES), figsize=(5 * len(CURVES), 4))
    drawn = False
    for ax, (column, name) in zip(axes, CURVES):
        for g in sorted(groups, key=lambda g: g.index):
            curves = _logbook_curves(out, g, column)
            if not curves:
                continue
            drawn = True
            length = max(len(c) for c in curves)
            stacked = np.full((len(curves), length), np.nan)
            for i, c in enumerate(curves):
                stacked[i, : len(c)] = c
            q1, med, q3 = np.nanpercentile(stacked, [25, 50, 75], axis=0)
            x = np.arange(length)
            ax.plot(x, med, color=colours[g.id], label=g.label)
            ax.fill_between(x, q1, q3, color=colours[g.id], alpha=0.2, linewidth=0)
        ax.set(xlabel="generation", title=name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if not drawn:
        return None
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{groups[0].mode}: median over trials, interquartile band", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (both minimised)."""
    front = []
    for i, (a, b) in enumerate(points):
        dominated = any(c <= a and d <= b and (c < a or d < b) for j, (c, d) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def plot_pareto(by_mode: dict[str, list[Group]], path: Path, colours: dict) -> Path:
    """Test loss vs kept fraction: trials small, combination medians large, the front outlined."""
    markers = dict(zip(by_mode, "osD^v<>"))
    groups = [g for gs in by_mode.values() for g in gs]
    medians = [(_median(g.values("test_loss")), _median(g.values("kept_fraction"))) for g in groups]
    front = set(pareto_front(medians))
    fig, ax = subplots(figsize=(8, 5.5))
    for i, g in enumerate(groups):
        ax.scatter(g.values("kept_fraction"), g.values("test_loss"), s=12, alpha=0.4, color=colours[g.id],
                   marker=markers[g.mode])
        ax.scatter(medians[i][1], medians[i][0], s=110, color=colours[g.id], marker=markers[g.mode],
                   edgecolors="black" if i in front else "none", linewidths=1.8,
                   label=f"{g.mode}: {g.label}", zorder=3)
    line = sorted((medians[i][1], medians[i][0]) for i in front)  # (kept, loss), kept ascending
    ax.step([k for k, _ in line], [loss for _, loss in line], where="post", color="black", alpha=0.5, lw=1,
            label="Pareto front (medians)")
    ax.set(xlabel="kept fraction (best pair)", ylabel="test loss (best pair)",
           title="Loss vs kept fraction: lower left is better")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
