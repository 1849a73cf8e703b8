"""Figures and summaries of a run directory (matplotlib, no display needed).

Figures are drawn on Agg canvases directly, never through pyplot: coevo does not switch the
caller's matplotlib backend, and in a notebook nothing it draws is displayed or kept open.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from coevo.errors import UserError


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] | None = None,
             **kwargs: Any) -> tuple[Figure, Any]:
    """``pyplot.subplots`` without pyplot: a figure drawn by Agg and its axes. Nothing to close:
    pyplot never learns of the figure, so it is freed with its last reference."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def read_logbook(run_dir: Path) -> dict[str, np.ndarray]:
    """``logbook.csv`` as columns of floats."""
    path = Path(run_dir) / "logbook.csv"
    if not path.exists():
        raise UserError(f"{run_dir} is not a coevo run directory: {path.name} is missing")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise UserError(f"{path} has no generations yet")
    try:
        columns = {k: np.array([float(r[k]) if r[k] not in ("", None) else np.nan for r in rows]) for k in rows[0]}
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(f"{path} is damaged ({exc}); `coevo resume {run_dir}` rebuilds it from the newest "
                        f"checkpoint") from None
    if "generation" not in columns:
        raise UserError(f"{path} is damaged (no generation column); `coevo resume {run_dir}` rebuilds it "
                        f"from the newest checkpoint")
    return columns


def plot_run(run_dir: Path) -> list[Path]:
    """Write loss, kept-fraction and learning-rate figures to ``run_dir/plots``."""
    run_dir = Path(run_dir)
    log = read_logbook(run_dir)
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    g = log["generation"]
    loss_name = _loss_name(run_dir)
    paths = []

    fig, ax = subplots(figsize=(7, 4))
    ax.fill_between(g, log["train_loss_min"], log["train_loss_max"], alpha=0.25, label="train, cells min-max")
    ax.plot(g, log["train_loss_median"], label="train, median cell")
    ax.plot(g, log["validation_loss_best"], label="validation, best cell")
    ax.set(xlabel="generation", ylabel=f"{loss_name} loss", title="Loss of the cells' centre pairs")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    paths.append(_save(fig, out / "loss.png"))

    fig, ax = subplots(figsize=(7, 4))
    ax.plot(g, log["kept_encoder"], label="encoders (mean over cells)")
    ax.plot(g, log["kept_decoder"], label="decoders (mean over cells)")
    ax.plot(g, log["kept_best"], "--", label="best pair")
    ax.set(xlabel="generation", ylabel="kept fraction", title="Alive weights / all weights", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend()
    paths.append(_save(fig, out / "kept.png"))

    fig, ax = subplots(figsize=(7, 4))
    ax.fill_between(g, log["lr_min"], log["lr_max"], alpha=0.25, label="cells min-max")
    ax.plot(g, log["lr_median"], label="median")
    ax.set(xlabel="generation", ylabel="learning rate", title="Learning rates")
    ax.grid(alpha=0.3)
    ax.legend()
    paths.append(_save(fig, out / "learning_rate.png"))
    return paths


def plot_front(path: Path, summary: dict) -> Path:
    """A multi-objective run's front: test loss against live kept fraction, one point per pair,
    with the loss floor and the mean-row baseline where the summary has them."""
    points = summary["front"]
    kept = [p["kept_fraction"] for p in points]
    test = [p["test_loss"] for p in points]
    fig, ax = subplots(figsize=(7, 4))
    ax.plot(kept, test, "o-", label="front (test loss)")
    for key, style, label in (("test_loss_floor", ":", "floor (noise rate)"),
                              ("test_loss_baseline", "--", "baseline (per-bit mean)")):
        if summary.get(key) is not None:
            ax.axhline(summary[key], linestyle=style, color="grey", label=label)
    ax.set(xlabel="live kept fraction", ylabel=f"test {summary.get('loss', 'reconstruction').upper()} loss",
           title=f"Pareto front: {len(points)} pairs, non-dominated on validation")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    path.parent.mkdir(exist_ok=True)
    return _save(fig, path)


def format_front(summary: dict) -> str:
    """The front as a table, smallest pair first (empty for a run without one)."""
    points = summary.get("front")
    if not points:
        return ""
    lines = [f"front: {len(points)} pairs, non-dominated by validation loss and live kept fraction",
             f"{'kept':>7}  {'compact':>7}  {'validation':>10}  {'test':>8}  {'generation':>10}  {'cell':>4}"]
    for p in points:
        lines.append(f"{p['kept_fraction']:7.4f}  {p['compact_fraction']:7.4f}  {p['validation_loss']:10.5f}  "
                     f"{p['test_loss']:8.5f}  {p['generation']:10d}  {p['cell']:4d}")
    return "\n".join(lines)


def _loss_name(run_dir: Path) -> str:
    """The run's loss (from config.toml) for axis labels; 'reconstruction' if unknown."""
    try:
        import tomllib

        return tomllib.loads((run_dir / "config.toml").read_text())["model"]["loss"].upper()
    except (OSError, KeyError, ValueError):
        return "reconstruction"


def image_shape(sample_shape) -> tuple[int, int, int] | None:
    """(channels, height, width) of samples that are images (1 or 3 channels, or a bare (H, W)),
    else None: signals and flat rows have nothing to draw as a picture."""
    shape = tuple(int(n) for n in sample_shape)
    if len(shape) == 2 and min(shape) > 1:
        return (1, *shape)
    if len(shape) == 3 and shape[0] in (1, 3) and min(shape[1:]) > 1:
        return shape  # type: ignore[return-value]
    return None


def plot_reconstructions(path: Path, originals: np.ndarray, reconstructions: np.ndarray,
                         shape: tuple[int, int, int], title: str = "") -> Path:
    """A grid of test images (top row) over the best pair's reconstructions (bottom row): where
    people would rather look than read a loss."""
    n = len(originals)
    fig, axes = subplots(2, n, figsize=(1.2 * n, 2.8), squeeze=False)
    for row, images in enumerate((originals, reconstructions)):
        for k in range(n):
            ax = axes[row][k]
            image = np.clip(images[k].reshape(shape), 0.0, 1.0)
            if shape[0] == 1:
                ax.imshow(image[0], cmap="gray", vmin=0.0, vmax=1.0)
            else:
                ax.imshow(np.moveaxis(image, 0, -1))
            ax.set_xticks([]), ax.set_yticks([])
        axes[row][0].set_ylabel("test" if row == 0 else "output")
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def read_summary(run_dir: Path) -> dict:
    """A finished run's summary.json; a missing directory or one that is no run is a UserError."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    if not (run_dir / "config.toml").exists():
        raise UserError(f"{run_dir} is not a coevo run directory (no config.toml)")
    path = run_dir / "summary.json"
    if not path.exists():
        raise UserError(f"{run_dir} has no summary.json (the run did not finish; try `coevo resume {run_dir}`)")
    try:
        summary = json.loads(path.read_text())
        if not isinstance(summary, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is damaged ({exc}); `coevo resume {run_dir}` writes it again from the "
                        f"newest checkpoint") from None
    return summary


def stale_files(run_dir: Path, summary: dict) -> list[str]:
    """Files derived from an earlier best pair than the summary's (see :mod:`coevo.rundir.directory`)."""
    from coevo.rundir import directory as rundir

    return rundir.stale_derived(Path(run_dir), summary.get("best_pair"))


def quality_warnings(summary: dict) -> list[str]:
    """What a reader of the summary must not miss: a best pair no better than the constant model
    that predicts each dimension's training majority (or mean) has learnt nothing about rows."""
    test, baseline = summary.get("test_loss"), summary.get("test_loss_baseline")
    if not isinstance(test, float) or not isinstance(baseline, float) or test < baseline:
        return []
    return [f"the best pair's test loss {test:.4g} is no better than the baseline {baseline:.4g} (predicting "
            f"each dimension's training majority): it learnt nothing about individual rows; run more "
            f"generations (run.generations), prune less (prune.target_kept) or check the data"]


def format_summary(summary: dict) -> str:
    """The summary as aligned ``key  value`` lines (n/a where a value does not apply), then its
    warnings and the front."""
    keys = ["mode", "operator", "schedule", "generations", "seed", "test_loss", "test_loss_floor",
            "test_loss_baseline", "validation_loss", "train_loss", "kept_fraction", "kept_fraction_encoder",
            "kept_fraction_decoder", "mask_kept_fraction", "compact_fraction", "seconds_per_generation",
            "wall_seconds"]
    if "test_kl" in summary:  # a VAE: its KL beside the reconstruction
        keys.insert(keys.index("test_loss_floor"), "test_kl")
    width = max(map(len, keys))
    lines = []
    for k in keys:
        v = summary.get(k)
        lines.append(f"{k:<{width}}  {v:.6g}" if isinstance(v, float) else f"{k:<{width}}  {'n/a' if v is None else v}")
    warnings = summary["warnings"] if "warnings" in summary else quality_warnings(summary)  # older runs have none
    lines += [f"warning: {w}" for w in warnings]
    if summary.get("front"):
        lines.append(format_front(summary))
    return "\n".join(lines)
