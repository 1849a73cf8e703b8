"""The report of a bench directory, built from its rows alone: ranked tables with a significance
test against a baseline, box plots, curves over generations and a loss-vs-kept Pareto scatter.

Statistics: for each combination, a two-sided Mann-Whitney U test (``scipy.stats.mannwhitneyu``)
of its trials' final test losses against those of its baseline, then Holm's step-down correction
over the comparisons of one mode. The report states this next to the tables.
"""

from __future__ import annotations

import json
import math
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


def smallest_p(n1: int, n2: int) -> float:
    """The smallest two-sided p an exact Mann-Whitney U test can give with these sample sizes."""
    return min(1.0, 2.0 / math.comb(n1 + n2, n1))


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
    p: float = math.nan
    p_holm: float = math.nan

    def values(self, key: str) -> np.ndarray:
        return np.array([r[key] for r in self.rows if r.get(key) is not None], dtype=float)

    @property
    def n(self) -> int:
        return len(self.rows)


def summarize(rows: Sequence[dict], baseline: dict[str, Any]) -> dict[str, list[Group]]:
    """Per mode, the combinations ranked by median test loss (then median kept fraction), each
    tested against its baseline: the combination of the same mode that matches ``baseline`` and,
    among several, shares the most settings with it."""
    from scipy.stats import mannwhitneyu

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
    for mode, members in by_mode.items():
        bases = [g for g in members if all(g.settings.get(k) == v for k, v in baseline.items())]
        for g in bases:
            g.is_baseline = True
        tested = [g for g in members if not g.is_baseline and bases]
        for g in tested:
            g.baseline = max(bases, key=lambda b: (sum(b.settings[k] == v for k, v in g.settings.items()), -b.index))
            x, y = g.values("test_loss"), g.baseline.values("test_loss")
            if len(x) and len(y):
                g.p = float(mannwhitneyu(x, y, alternative="two-sided").pvalue)
        for g, p in zip(tested, holm([g.p for g in tested])):
            g.p_holm = p
        members.sort(key=lambda g: (_median(g.values("test_loss")), _median(g.values("kept_fraction")), g.index))
    return by_mode


def _median(x: np.ndarray) -> float:
    return float(np.median(x)) if len(x) else math.inf


def _quartiles(x: np.ndarray) -> tuple[float, float, float]:
    if not len(x):
        return (math.nan,) * 3
    q1, q2, q3 = np.percentile(x, [25, 50, 75])
    return float(q2), float(q1), float(q3)


def _fmt(value: float, digits: int = 4) -> str:
    return "—" if math.isnan(value) else f"{value:.{digits}g}"


def _fmt_iqr(x: np.ndarray, digits: int) -> str:
    med, q1, q3 = _quartiles(x)
    return f"{med:.{digits}f} [{q1:.{digits}f}–{q3:.{digits}f}]" if len(x) else "—"


def table(groups: Sequence[Group], loss: str) -> list[str]:
    """One mode's ranked Markdown table."""
    lines = [f"| rank | combination | n | test {loss} median [Q1–Q3] | kept median [Q1–Q3] "
             f"| train {loss} (cells' mean) median | p vs baseline | Holm p |",
             "|---:|---|---:|---|---|---:|---:|---:|"]
    for rank, g in enumerate(groups, 1):
        if g.is_baseline:
            p, ph = "baseline", ""
        elif g.baseline is None:
            p, ph = "—", "—"
        else:
            p, ph = _fmt(g.p, 3), _fmt(g.p_holm, 3)
        lines.append(f"| {rank} | {g.label} | {g.n} | {_fmt_iqr(g.values('test_loss'), 4)} "
                     f"| {_fmt_iqr(g.values('kept_fraction'), 3)} "
                     f"| {_fmt(_quartiles(g.values('train_loss_mean'))[0])} | {p} | {ph} |")
    return lines


def write_report(out: Path, baseline: dict[str, Any] | None = None, title: str | None = None) -> Path:
    """Write ``report.md`` and ``figures/*.png`` into a bench directory from its rows."""
    out = Path(out)
    rows = read_rows(out / ROWS)
    if not rows:
        raise UserError(f"{out} has no finished trials ({ROWS} is missing or empty); nothing to report")
    baseline = dict(baseline or DEFAULT_BASELINE)
    by_mode = summarize(rows, baseline)
    figures = out / FIGURES
    figures.mkdir(exist_ok=True)
    colours = _colours([g for gs in by_mode.values() for g in gs])
    paths = [plot_boxes(by_mode, "test_loss", "final test loss (best pair)", figures / "box_test_loss.png", colours),
             plot_boxes(by_mode, "kept_fraction", "kept fraction (best pair)", figures / "box_kept.png", colours)]
    curves = {mode: plot_curves(out, groups, figures / f"curves_{mode}.png", colours) for mode, groups in by_mode.items()}
    paths.append(plot_pareto(by_mode, figures / "pareto.png", colours))

    loss = next((r["loss"].upper() for r in rows if r.get("loss")), "loss")
    seeds = sorted({r["seed"] for r in rows})
    generations = sorted({r["generations"] for r in rows if r.get("generations") is not None})
    ngroups = sum(len(gs) for gs in by_mode.values())
    lines = [f"# coevo bench: {title or out.name}", "",
             f"{len(rows)} finished trials in {ngroups} combinations; seeds {_ranges(seeds)}; "
             f"{' / '.join(map(str, generations))} generations. Rows: `{ROWS}` (one per trial, with its run "
             f"directory). Final values are those of each trial's best pair (lowest validation loss), "
             f"measured on the test split; \"train {loss} (cells' mean)\" is the mean training loss over the "
             f"cells' centres, the measure of the paper's figures.", "",
             f"Baseline: the combination of the same mode with {_describe(baseline)}.", ""]
    for mode, groups in by_mode.items():
        lines += [f"## {mode}", "", "Ranked by median test loss (ties: median kept fraction).", ""]
        lines += table(groups, loss)
        missing = [g.label for g in groups if g.baseline is None and not g.is_baseline]
        if missing:
            lines += ["", f"No baseline ({_describe(baseline)}) has finished in this mode: no p-values."]
        lines += ["", f"![curves over generations, {mode}]({FIGURES}/{curves[mode].name})" if curves[mode]
                  else "(no curves: the trials' logbook.csv files are not there)", ""]
    lines += ["## Statistics", "",
              "p vs baseline: two-sided Mann-Whitney U test (`scipy.stats.mannwhitneyu`, `method=\"auto\"`: "
              "exact for small samples without ties, else the normal approximation with tie correction) of the "
              "combination's final test losses against the baseline's, one value per trial. "
              "Holm p: Holm's step-down correction for multiple comparisons (family-wise error rate), "
              "applied within each mode's table over its comparisons with the baseline."]
    floors = {(g.n, g.baseline.n) for gs in by_mode.values() for g in gs if g.baseline is not None}
    weak = sorted(f for f in floors if smallest_p(*f) > 0.05)
    if weak:
        n1, n2 = weak[0]
        lines += ["", f"With {n1} and {n2} trials the smallest p an exact two-sided test can give is "
                      f"{smallest_p(n1, n2):.3g}: at this budget no comparison can reach p < 0.05; "
                      f"run more trials before reading significance."]
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
    heights = [max(1.5, 0.45 * len(gs) + 0.8) for gs in by_mode.values()]
    fig, axes = subplots(len(by_mode), 1, figsize=(8, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, (mode, groups) in zip(axes[:, 0], by_mode.items()):
        data = [g.values(key) for g in reversed(groups)]
        ax.boxplot(data, widths=0.6, showfliers=False, medianprops={"color": "black"}, **HORIZONTAL)
        for y, (g, x) in enumerate(zip(reversed(groups), data), 1):
            ax.scatter(x, y + rng.uniform(-0.15, 0.15, len(x)), s=14, color=colours[g.id], zorder=3)
        ax.set_yticks(range(1, len(groups) + 1), [g.label for g in reversed(groups)])
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
