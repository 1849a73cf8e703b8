"""Sweep specs for ``coevo bench``: parse, validate, expand into trials.

A spec is a TOML file (or a preset shipped in :mod:`coevo.bench.presets`)::

    name = "mine"
    trials = 5                  # trials per combination; trial i runs with run.seed = seed_start + i
    seed_start = 1
    purpose = "headline"        # optional: "tuning" (chooses defaults) or "headline" (reports them)
    generations = 50            # the budget (optional; else base.run.generations)
    baseline = { operator = "none" }   # each combination is tested against this one of its mode

    [base.data]                 # config sections applied to every trial
    n_dims = 200

    [sweep]                     # optional axes, crossed with every listed combination
    "train.learning_rate" = [1e-5, 1e-4]

    [[combination]]             # optional list; mode / operator / schedule, or any section.key
    mode = "coevolution"
    operator = "random"
    schedule = "exponential"
    prune.probability = 0.5

    [[combination]]             # an operator's or schedule's parameter: section.table.name
    operator = "conjunctive"
    prune.params.threshold = 0.2

Combinations are the listed ``[[combination]]`` tables (or one empty table) crossed with every
``[sweep]`` axis. Every combination's config is built and its operator and schedule resolved
here, so a bad spec fails with one line naming the key before any trial runs or any file is
written.

``purpose`` keeps tuning and reporting apart (docs/benchmarking.md, "Tuning seeds and headline
seeds"): a "tuning" spec chooses a default or a lever on validation loss, a "headline" spec
reports test loss on held-out seeds, and :func:`seed_overlap_warning` says when a headline spec
runs a seed a known tuning spec (:func:`tuning_specs`) tuned on. Left out, nothing is checked.
"""

from __future__ import annotations

import itertools
import re
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coevo import config as config_module
from coevo.config import Config, _toml_value
from coevo.errors import ConfigError, UserError

SHORTHANDS = {"mode": "run.mode", "operator": "prune.operator", "schedule": "prune.schedule"}
"""Spec keys that name the three axes of a benchmark without their config section."""

LABELS = ("name", "preset")
"""Combination keys that are not config keys: ``name`` labels a combination in tables and names its
directory; ``preset`` starts it from a run preset (``coevo run --preset``) applied after [base]."""

AXES = ("run.mode", "prune.operator", "prune.schedule")
"""Every combination is described by these, whether or not the spec varies them."""

TOP_KEYS = ("name", "trials", "seed_start", "purpose", "generations", "baseline", "base", "sweep", "combination")
PURPOSES = ("tuning", "headline")
"""Values of the spec key ``purpose``: a tuning spec chooses defaults, a headline spec reports them."""
HEADLINE_SEEDS = range(101, 111)
"""The held-out seeds headline specs run (seed_start = 101, trials = 10); tuning specs use 1-5."""
SECTIONS = tuple(config_module.to_dict(Config()))


@dataclass(frozen=True)
class Combination:
    """One cell of the sweep: a config minus the seed."""

    index: int
    """Position in the spec (ties in the report are broken by it)."""
    id: str
    """Directory-safe and unique: ``trials/<id>/seed-<n>``."""
    label: str
    """Short human name for tables and figures, unique within its mode."""
    settings: dict[str, Any]
    """mode, operator, schedule and every key the sweep varies, as ``section.key`` -> value."""
    overrides: dict[str, Any]
    """What the spec sets for this combination on top of [base] (the label shows these)."""
    config: dict[str, dict[str, Any]] = field(repr=False)
    """The full resolved config (``run.seed`` is replaced per trial)."""

    @property
    def mode(self) -> str:
        return self.settings["run.mode"]


@dataclass(frozen=True)
class Trial:
    """One run: a combination with its own seed. Plain data, cheap to ship to a worker."""

    combination: Combination
    index: int
    seed: int

    @property
    def key(self) -> tuple[str, int]:
        return (self.combination.id, self.seed)

    @property
    def run_dir(self) -> Path:
        """Relative to the bench directory."""
        return Path("trials") / self.combination.id / f"seed-{self.seed}"

    def config(self) -> dict[str, dict[str, Any]]:
        cfg = {section: dict(values) for section, values in self.combination.config.items()}
        cfg["run"]["seed"] = self.seed
        return cfg


@dataclass(frozen=True)
class Spec:
    name: str
    trials: int
    seed_start: int
    base: dict[str, dict[str, Any]]
    """The full resolved base config (defaults, then [base], then ``generations``)."""
    sweep: dict[str, list[Any]]
    listed: tuple[dict[str, Any], ...]
    baseline: dict[str, Any]
    combinations: tuple[Combination, ...]
    purpose: str | None = None
    """"tuning", "headline" or None (see :data:`PURPOSES`); not part of :meth:`identity`."""

    @property
    def seeds(self) -> range:
        """The seeds its trials run: ``seed_start ... seed_start + trials - 1``."""
        return range(self.seed_start, self.seed_start + self.trials)

    def expand(self) -> list[Trial]:
        """Every trial, combination-major, seeds ``seed_start ... seed_start + trials - 1``."""
        return [Trial(c, i, self.seed_start + i) for c in self.combinations for i in range(self.trials)]

    def identity(self) -> dict[str, Any]:
        """What fixes the trials' results; a bench directory holds one identity. ``trials`` may
        grow and ``baseline`` change without touching finished trials, so they are left out."""
        return {"seed_start": self.seed_start, "base": self.base, "sweep": self.sweep, "combination": list(self.listed)}

    def dumps(self) -> str:
        """The resolved spec as TOML; :func:`parse` reads it back to an equal spec."""
        lines = ["# coevo bench spec, resolved: every config key of [base] is written out",
                 f"name = {_toml_value(self.name)}", f"trials = {self.trials}", f"seed_start = {self.seed_start}"]
        if self.purpose is not None:
            lines.append(f"purpose = {_toml_value(self.purpose)}")
        lines += [f"baseline = {_inline(self.baseline)}", ""]
        for section, values in self.base.items():
            lines += config_module.toml_table(f"base.{section}", values)
        if self.sweep:
            lines.append("[sweep]")
            lines += [f"{key} = {_toml_value(values)}" for key, values in self.sweep.items()]
            lines.append("")
        for table in self.listed:
            lines.append("[[combination]]")
            lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
            lines.append("")
        return "\n".join(lines)


def _inline(flat: dict[str, Any]) -> str:
    return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in flat.items()) + " }"


RENAMED_PRESETS = {"paper": "paper-sweep"}
"""Old bench preset names that still load, with their new names. ``paper`` became ``paper-sweep``
because ``coevo run --preset paper`` names a run preset: the two kinds no longer share a name."""


def presets() -> list[str]:
    """Names of the presets shipped with coevo."""
    return config_module.shipped_names("coevo.bench.presets")


def renamed_notice(preset: str) -> str | None:
    """The one-line deprecation notice for an old preset name, or None for a current one."""
    new = RENAMED_PRESETS.get(preset)
    return None if new is None else (f"bench preset {preset!r} is now {new!r} (run and bench presets no longer "
                                     f"share a name); the old name will be removed")


def load(path: str | Path | None = None, preset: str | None = None) -> Spec:
    """Read and validate a spec file or a shipped preset (exactly one of the two)."""
    if (path is None) == (preset is None):
        raise UserError("give a spec file or --preset NAME (one of the two)")
    if preset is not None:
        if preset in RENAMED_PRESETS:
            warnings.warn(renamed_notice(preset), DeprecationWarning, stacklevel=2)
            preset = RENAMED_PRESETS[preset]
        text = config_module.shipped_text("coevo.bench.presets", preset)
        return parse(text, default_name=preset, source=f"preset {preset!r}")
    path = Path(path)
    text = config_module.read_text(path, "spec file")
    return parse(text, default_name=path.stem, source=f"spec file {path}")


def parse(text: str, default_name: str = "bench", source: str = "spec", resolve: bool = True) -> Spec:
    """Parse and validate spec text; every error is one line naming the key. ``resolve`` also
    loads each combination's operator, schedule and user data (skip it to only read a spec)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{source} is not valid TOML: {exc}") from None
    for key in raw:
        if key not in TOP_KEYS:
            raise ConfigError(f"spec key {key!r} is unknown; spec keys: {', '.join(TOP_KEYS)}")
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"spec key name must be a non-empty string, got {name!r}")
    trials = _integer(raw, "trials", None, minimum=1)
    seed_start = _integer(raw, "seed_start", 1, minimum=0)
    purpose = raw.get("purpose")
    if purpose is not None and purpose not in PURPOSES:
        raise ConfigError(f"spec key purpose must be \"tuning\" or \"headline\" (or left out), got {purpose!r}")
    base = _base(raw)
    sweep = _sweep(raw.get("sweep", {}))
    listed = _listed(raw.get("combination", []))
    combinations = _combinations(base, sweep, listed)
    baseline = _flatten("baseline", raw.get("baseline", {"operator": "none"}))
    _check_baseline(baseline, combinations)
    checked_data: list[dict] = []
    for combination in combinations if resolve else ():
        _resolve(combination, check_data=combination.config["data"] not in checked_data)
        checked_data.append(combination.config["data"])
    return Spec(name, trials, seed_start, base, sweep, tuple(listed), baseline, tuple(combinations), purpose)


def spec_dirs() -> list[Path]:
    """Where spec files of a coevo checkout lie: ``benchmarks/specs`` of the checkout coevo is
    imported from, and of the working directory (either only if it exists)."""
    import coevo

    found = []
    for root in (Path(coevo.__file__).resolve().parents[1], Path.cwd()):
        folder = (root / "benchmarks" / "specs").resolve()
        if folder.is_dir() and folder not in found:
            found.append(folder)
    return found


def tuning_specs() -> dict[str, range]:
    """Every tuning spec coevo knows about, by where it is, with its seeds: the shipped presets
    and the ``*.toml`` of :func:`spec_dirs` that say ``purpose = "tuning"``. A file that does not
    parse is not a spec this check can use, and is left out."""
    sources = [(f"preset {name!r}", lambda name=name: config_module.shipped_text("coevo.bench.presets", name))
               for name in presets()]
    sources += [(path.relative_to(folder.parents[1]).as_posix(), path.read_text)  # benchmarks/specs/NAME.toml
                for folder in spec_dirs() for path in sorted(folder.glob("*.toml"))]
    found = {}
    for where, read in sources:
        try:
            text = read()
            if tomllib.loads(text).get("purpose") != "tuning":
                continue
            found[where] = parse(text, source=where, resolve=False).seeds
        except (OSError, tomllib.TOMLDecodeError, UserError):
            continue
    return found


def seed_overlap_warning(spec: Spec, tuning: dict[str, range] | None = None) -> str | None:
    """One line when a headline spec runs seeds a tuning spec tuned on (its table would then be
    measured on the seeds its defaults were chosen on), else None. ``tuning`` defaults to
    :func:`tuning_specs`."""
    if spec.purpose != "headline":
        return None
    tuning = tuning_specs() if tuning is None else tuning
    shared = {where: sorted(set(spec.seeds) & set(seeds)) for where, seeds in tuning.items()}
    shared = {where: seeds for where, seeds in shared.items() if seeds}
    if not shared:
        return None
    seeds = sorted({s for seeds in shared.values() for s in seeds})
    return (f"headline spec {spec.name!r} runs seeds {_seed_list(seeds)}, which tuning specs used "
            f"({', '.join(shared)}); give it held-out seeds (seed_start = {HEADLINE_SEEDS[0]}, "
            f"trials = {len(HEADLINE_SEEDS)}: seeds {HEADLINE_SEEDS[0]}-{HEADLINE_SEEDS[-1]})")


def _seed_list(seeds: list[int]) -> str:
    """[1, 2, 3, 5] as "1-3, 5"."""
    runs: list[list[int]] = []
    for s in seeds:
        if runs and s == runs[-1][-1] + 1:
            runs[-1].append(s)
        else:
            runs.append([s])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def _integer(raw: dict, key: str, default: int | None, minimum: int) -> int:
    if key not in raw and default is not None:
        return default
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"spec key {key} must be an integer >= {minimum}, got {value!r}")
    return value


def _base(raw: dict) -> dict[str, dict[str, Any]]:
    base = raw.get("base", {})
    if not isinstance(base, dict):
        raise ConfigError(f"spec key base must be a table of config sections, got {base!r}")
    merged = config_module.to_dict(Config())
    for section, values in base.items():
        if section not in merged or not isinstance(values, dict):
            raise ConfigError(f"base.{section} is not a config section; sections: {', '.join(SECTIONS)}")
        merged[section].update(values)
    if "generations" in raw:
        if "generations" in base.get("run", {}):
            raise ConfigError("set the budget once: spec key generations or base.run.generations, not both")
        merged["run"]["generations"] = raw["generations"]
    try:
        return config_module.to_dict(config_module.from_dict(merged))
    except ConfigError as exc:
        raise ConfigError(f"base: {exc}") from None


def _flatten(where: str, table: Any) -> dict[str, Any]:
    """``{mode = .., prune = {probability = .., params = {threshold = ..}}, "train.lr" = ..}`` ->
    ``{"run.mode": .., "prune.probability": .., "prune.params.threshold": ..}``: a nested table
    (an operator's parameters) becomes ``section.table.name`` keys, one per parameter."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table, got {table!r}")
    flat: dict[str, Any] = {}

    def put(key: str, value: Any) -> None:
        if key in flat:
            raise ConfigError(f"{where}: {key} is given twice")
        flat[key] = value

    def put_tree(key: str, value: Any) -> None:
        if isinstance(value, dict) and key.count(".") < 2:
            for name, item in value.items():
                put_tree(f"{key}.{name}", item)
        else:
            put(key, value)

    for key, value in table.items():
        if key in LABELS:
            if not isinstance(value, str) and not (isinstance(value, list) and where == "sweep"):
                raise ConfigError(f"{where}: {key} must be a string, got {value!r}")
            put(key, value)
        elif key in SHORTHANDS:
            put(SHORTHANDS[key], value)
        elif key in SECTIONS and isinstance(value, dict) or "." in key and key.split(".", 1)[0] in SECTIONS:
            put_tree(key, value)
        else:
            raise ConfigError(f"{where}: key {key!r} is unknown; use mode, operator, schedule or a config "
                              f"section.key (e.g. prune.probability)")
    return flat


def _sweep(table: Any) -> dict[str, list[Any]]:
    sweep = _flatten("sweep", table)
    for key, values in sweep.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep.{key} must be a non-empty list of values, got {values!r}")
    return sweep


def _listed(tables: Any) -> list[dict[str, Any]]:
    if not isinstance(tables, list):
        raise ConfigError("combination must be an array of tables: write each as [[combination]]")
    return [_flatten(f"combination {i + 1}", table) for i, table in enumerate(tables)]


def _set(cfg: dict[str, dict[str, Any]], key: str, value: Any) -> None:
    """Set ``section.key`` or ``section.table.name`` (a copy of the table: ``cfg`` shares tables with the base)."""
    section, name, *inner = key.split(".")
    if not inner:
        cfg[section][name] = value
        return
    table = cfg[section].get(name, {})
    if not isinstance(table, dict) or len(inner) != 1:
        raise ConfigError(f"{key}: {section}.{name} is not a table of parameters; use section.key or "
                          f"section.table.name (e.g. prune.params.threshold)")
    cfg[section][name] = {**table, inner[0]: value}


def _get(cfg: dict[str, dict[str, Any]], key: str) -> Any:
    """The value of ``section.key`` or ``section.table.name``; None where a table lacks the name
    (a parameter this combination leaves at its default, or its operator does not take)."""
    section, name, *inner = key.split(".")
    value = cfg[section][name]
    return value.get(inner[0]) if inner else value


def _combinations(base: dict, sweep: dict[str, list], listed: list[dict[str, Any]]) -> list[Combination]:
    axes = list(sweep)
    raw: list[tuple[str, dict[str, Any]]] = []
    for i, table in enumerate(listed or [{}]):
        for values in itertools.product(*(sweep[a] for a in axes)):
            overrides = {**table, **dict(zip(axes, values))}
            if "name" in table and axes:  # a named combination crossed with the sweep: name each cell
                overrides["name"] = f"{table['name']} (" + ", ".join(f"{a}={_short(v)}" for a, v in
                                                                      zip(axes, values)) + ")"
            where = f"combination {i + 1}" if listed else "sweep"
            if axes:
                where += " with " + ", ".join(f"{a}={v!r}" for a, v in zip(axes, values))
            raw.append((where, overrides))
    varied = sorted({k for _, overrides in raw for k in overrides} - set(AXES) - {"name"})
    configs = []
    for where, overrides in raw:  # every config first: a bad key fails here, named
        cfg = {section: dict(values) for section, values in base.items()}
        if "preset" in overrides:
            try:
                preset = tomllib.loads(config_module.preset_text(overrides["preset"]))
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            for section, values in preset.items():
                cfg[section].update(values)
        try:
            for key, value in overrides.items():
                if key not in LABELS:
                    _set(cfg, key, value)
            configs.append(config_module.to_dict(config_module.from_dict(cfg)))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    built: list[tuple[str, dict, dict, dict]] = []
    for (where, overrides), cfg in zip(raw, configs):
        settings = {key: overrides.get(key, "") if key == "preset" else _get(cfg, key) for key in (*AXES, *varied)}
        built.append((where, cfg, settings, overrides))
    ids: dict[str, str] = {}
    combinations = []
    labels = _labels([(s, o) for _, _, s, o in built])
    for index, ((where, cfg, settings, overrides), label) in enumerate(zip(built, labels)):
        cid = _identifier(settings, varied, overrides.get("name"))
        if cid in ids:
            raise ConfigError(f"{where} repeats {ids[cid]} (both are {cid})")
        ids[cid] = where
        combinations.append(Combination(index, cid, label, settings, overrides, cfg))
    return combinations


def _short(value: Any) -> str:
    if isinstance(value, list):
        return "x".join(_short(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _identifier(settings: dict[str, Any], varied: list[str], name: str | None = None) -> str:
    """Directory-safe: the named combination's name, else its axes and varied settings."""
    parts = [name] if name else [_short(settings[k]) for k in AXES] + [f"{k}={_short(settings[k])}" for k in varied
                                                                       if settings[k] is not None]
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", "-".join(parts))


def _labels(combos: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[str]:
    """'random + exponential (prune.probability=0.5)': operator and schedule, then the other keys
    the spec sets; plain 'none' (no schedule) where that stays unique in its mode."""

    def extras(overrides: dict[str, Any]) -> str:
        keys = [k for k in overrides if k not in AXES and k != "name"]
        return " (" + ", ".join(f"{k}={_short(overrides[k])}" for k in keys) + ")" if keys else ""

    if any("name" in o for _, o in combos):  # named combinations: the name is the label
        return [o.get("name") or f"{s['prune.operator']} + {s['prune.schedule']}{extras(o)}" for s, o in combos]
    long = [f"{s['prune.operator']} + {s['prune.schedule']}{extras(o)}" for s, o in combos]
    short = [f"none{extras(o)}" if s["prune.operator"] == "none" else lab for (s, o), lab in zip(combos, long)]
    keys = [(s["run.mode"], lab) for (s, _), lab in zip(combos, short)]
    return [lab if keys.count(k) == 1 else full for k, lab, full in zip(keys, short, long)]


def _check_baseline(baseline: dict[str, Any], combinations: list[Combination]) -> None:
    for key in baseline:
        if key not in combinations[0].settings:
            known = ", ".join(combinations[0].settings)
            raise ConfigError(f"baseline key {key} does not vary in this sweep; name one that does: {known}")
    if not any(matches(c.settings, baseline) for c in combinations):
        raise ConfigError(f"baseline {_inline(baseline)} matches no combination of the sweep")


def matches(settings: dict[str, Any], baseline: dict[str, Any]) -> bool:
    """Whether a combination's settings are those the baseline names."""
    return all(settings.get(k) == v for k, v in baseline.items())


def _resolve(combination: Combination, check_data: bool) -> None:
    """Resolve the operator, schedule and user data of a combination, as a run would."""
    from coevo import data
    from coevo.evolution.loop import make_toolbox, prune_probability

    cfg = config_module.from_dict(combination.config)
    try:
        make_toolbox(cfg)
        prune_probability(cfg, 0, 1)
        if check_data and cfg.data.source != "binary_clustering":
            data.load(cfg.data, cfg.run.seed)
    except UserError as exc:
        raise type(exc)(f"combination {combination.label} ({cfg.run.mode}): {exc}") from None
