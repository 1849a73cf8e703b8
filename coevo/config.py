"""Typed, frozen run configuration: TOML file + ``--set section.key=value`` overrides.

Every key is declared once here, with its type and default (the paper's setting). Validation
happens in one place, :func:`validate`, and every error names the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from coevo.errors import ConfigError

AUTO_RESET_FRACTION = 0.01
"""``prune.reset_fraction = "auto"`` in a coevolution on the loss (canonical mode, two objectives: 0)."""


@dataclass(frozen=True)
class RunConfig:
    mode: Literal["coevolution", "canonical"] = "coevolution"
    """Spatial coevolution of encoder/decoder populations, or one autoencoder by gradient descent."""
    generations: int = 400
    """Generations (coevolution) or epochs (canonical)."""
    seed: int = 1
    """Master seed; every random stream of the run is derived from it."""
    engine: str = "local"
    """Where cells run: 'local' (in-process, batched) or 'ray'."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Torch device for the batched tensors."""
    backend: Literal["auto", "numba", "torch"] = "auto"
    """How the networks are trained and evaluated: 'torch' (one functional path, ``torch.func``,
    any model family, any device), 'numba' (the jitted kernels: the MLP family on the CPU only),
    or 'auto' (numba for the MLP family on the CPU, torch otherwise)."""
    checkpoint_every: int = 25
    """Write a resumable checkpoint every this many generations (0 = never)."""
    ray_address: str = ""
    """Address of an existing Ray cluster; empty starts a local Ray."""
    ray_workers: int = 2
    """Number of Ray workers (grid shards) for the ray engine."""
    threads: int = 0
    """Torch intra-op threads (0 = torch's default; the torch backend on the CPU then takes 1, its
    small per-step ops run faster alone)."""
    save_centres: bool = False
    """Also save every cell's centre pair (the ensemble) to centres.pt."""
    update: Literal["synchronous", "asynchronous"] = "synchronous"
    """'synchronous': every cell reads the previous generation's centres (cells run batched, in any
    order, on any engine). 'asynchronous': the reference's order, cells one by one in a shuffled
    order each generation (derived from the seed), each reading its neighbours' latest centres
    (local engine only)."""
    tensorboard: bool = False
    """Also write the logbook's scalars to RUN_DIR/tensorboard (needs pip install coevo[tensorboard])."""
    plugin_timeout: float = 0.0
    """Stop the run (exit 2, its checkpoints kept) when one call of a pruning operator or schedule
    has not returned after this many seconds; 0 = never (off by default: how long a call may
    take grows with the network, and a call running for a minute is named on stderr anyway)."""


@dataclass(frozen=True)
class DataConfig:
    source: str = "binary_clustering"
    """'binary_clustering', a path to a .npy, .npz, .csv or IDX file (rows in [0, 1]; uint8 pixels
    scaled by /255), 'digits'
    (scikit-learn's 8x8 digits, scaled to [0, 1]; needs scikit-learn), or 'manifold' (a
    `intrinsic_dim`-dimensional nonlinear manifold in `n_dims` dimensions, scaled to [0, 1])."""
    n_clusters: int = 10
    """Binary clustering: number of centroids K."""
    n_dims: int = 1000
    """Binary clustering and manifold: input width D."""
    rows_per_cluster: int = 100
    """Binary clustering: rows per cluster in each split."""
    noise: float = 0.05
    """Binary clustering: probability p that a bit is flipped."""
    intrinsic_dim: int = 2
    """Manifold: its dimension d (1 <= d <= n_dims)."""
    n_rows: int = 1000
    """Manifold: rows in each split (train, validation, test)."""
    validation_fraction: float = 0.2
    """User files: fraction of rows held out for validation."""
    test_fraction: float = 0.2
    """User files: fraction of rows held out for test."""
    sample_shape: tuple[int, ...] = ()
    """The shape of one sample, e.g. [1, 28, 28] for rows of 784 pixels; empty: as the source has it
    (digits (1, 8, 8), a .npy of shape (N, ...) its trailing shape, flat rows (D,))."""


@dataclass(frozen=True)
class ModelConfig:
    hidden: tuple[int, ...] = (30,)
    """Hidden widths of the encoder (the decoder mirrors them)."""
    latent: int = 10
    """Latent width."""
    loss: Literal["l1", "bce", "mse"] = "l1"
    """Reconstruction loss."""
    family: Literal["mlp", "conv"] = "mlp"
    """The built-in encoder/decoder pair: 'mlp' (Linear layers on flat rows; ``hidden``, ``latent``)
    or 'conv' (convolutions that adapt to the sample shape: Conv1d on (C, L) signals, Conv2d on
    (C, H, W) images; widths and depth in ``params``). Ignored when ``factory`` is set."""
    factory: str = ""
    """Your own pair: 'module:function' or 'path/file.py:function', called as
    ``function(input_shape, latent, **params)`` and returning ``(encoder, decoder)``, two
    ``torch.nn.Module``s; empty: the built-in ``family``."""
    params: dict[str, Any] = field(default_factory=dict)
    """Keyword parameters of the conv family or of your factory (``--set model.params.channels=[8,16]``)."""
    variational: bool = False
    """A VAE: the encoder gives 2 x latent values per sample (the means, then the log-variances;
    the built-in families widen their last layer), the decoder reads a sample z = mean + sigma * noise
    while training and the mean otherwise, and the loss adds ``train.kl_weight`` x KL. The torch backend."""


@dataclass(frozen=True)
class GridConfig:
    topology: Literal["ring", "torus"] = "ring"
    """Ring of `cells` cells, or a 2-D torus of shape `shape`."""
    cells: int = 10
    """Ring: number of cells."""
    shape: tuple[int, ...] = (10, 10)
    """Torus: rows and columns."""
    neighbourhood: Literal["von_neumann", "moore"] = "von_neumann"
    """Torus neighbourhood."""
    radius: int = 1
    """Neighbourhood radius."""


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 5
    """Mini-batch size for training and for the evaluation batch."""
    learning_rate: float = 1e-3
    """Initial learning rate of every cell (and of the canonical autoencoder). The paper's 1e-5
    needs hundreds of generations to leave the per-bit majority; see docs/reproducing.md, "Where
    the defaults leave the paper"."""
    lr_sigma: float = 1e-5
    """Std of the Gaussian learning-rate mutation (0 turns it off)."""
    lr_min: float = 1e-9
    """Lower clip of the mutated learning rate."""
    lr_max: float = 10.0
    """Upper clip of the mutated learning rate."""
    beta1: float = 0.5
    """Adam beta1."""
    beta2: float = 0.999
    """Adam beta2."""
    fresh_optimizer_each_batch: bool = False
    """Reset Adam's moments before every mini-batch (the reference's behaviour)."""
    lr_decay: bool = False
    """Canonical mode: multiply the learning rate by 0.1 every generations/4 epochs (StepLR)."""
    bce_weight: float = 0.05
    """Weight of a binary cross-entropy term added to the training loss's gradient. Under L1 a
    sigmoid output that saturates on the wrong side gets almost no gradient, and training stalls
    at the per-bit majority; this term keeps such outputs learning. Reported losses are
    model.loss alone."""
    gradient_noise: float = 0.0
    """FlipOut's gradient noise (its lambda): before each step every parameter tensor's gradient
    g gets lambda * ||g|| / sqrt(n) * N(0, 1) added, drawn per cell from the run's seed (0 = off)."""
    scale_l1: float = 0.0
    """Early-Bird's sparsity penalty on hidden neurons' scales. coevo's networks have no BatchNorm
    scale, so a neuron's scale is the L2 norm of its incoming weights and bias (a group lasso):
    its subgradient scale_l1 * w / ||w|| is added to each neuron's gradient (0 = off)."""
    scale_l1_latent: float = 0.0
    """The same penalty on the latent neurons (the encoder's last layer); the Early-Bird thesis
    presses them much harder than the rest (0 = off)."""
    kl_weight: float = 1.0
    """A VAE's (``model.variational``) weight on the KL term (beta-VAE's beta); the KL of a row is
    summed over the latent units and divided by the row's width D, as the reconstruction loss is a
    mean over the D values."""


@dataclass(frozen=True)
class PruneConfig:
    operator: str = "magnitude"
    """Pruning operator: a registered name (see `coevo operators`) or 'module:function'. The
    default ranks |w| over the whole autoencoder (its scope 'model', the encoder's scores halved):
    chosen by measured sweeps (docs/results.md); the paper's is 'random' (--preset paper)."""
    schedule: str = "gradual"
    """Pruning schedule: a registered name or 'module:function'. The default, Zhu & Gupta's cubic
    ramp to ``target_kept`` over the first 75% of the run, then training only."""
    probability: float = 1.0
    """Configured prune probability p, shaped over time by the schedule."""
    amount: float = 0.1
    """Fraction of the currently alive entries of each layer to prune (of the whole network for
    snip, of the alive neurons for snap and merge); a schedule that returns
    ``schedules.Pruning`` (geometric) sets it per generation instead."""
    cases: int = 100
    """Training rows recorded for ``context.activations`` (what VARIANCE and CONJUNCTIVE read) and
    ``context.gradients`` (what SNIP and SNAP read). A setting of the recorder, not of one
    operator: every operator that asks sees the same rows."""
    params: dict[str, Any] = field(default_factory=dict)
    """The operator's own keyword parameters (TOML ``[prune.params]``, ``--set prune.params.NAME=...``),
    checked against its signature when the run is prepared; `coevo operators` lists them."""
    schedule_params: dict[str, Any] = field(default_factory=dict)
    """The schedule's own keyword parameters (``[prune.schedule_params]``), e.g. exponential's ``k``."""
    target_kept: float = 0.1
    """Stop pruning a pair once its kept fraction (alive entries on a live path) is at or below
    this target, and never prune it past the target by more than one step (0 = no target). With
    selection.objectives ["loss", "kept"], the smallest rung of the cells' ladder of sizes."""
    reset_fraction: float | Literal["auto"] = "auto"
    """Exploration: each mutation also zeroes this fraction of the pair's alive weights (and
    their Adam moments), masks untouched, so they train again; what the reference's regrowth did
    by accident, without faking sparsity (0 = off). ``"auto"``: 0.01 in a coevolution on the loss,
    where selection drops the pairs a reset hurt (kept 0.10: 0.0544 against 0.0556 without, seeds
    1-5); 0 in canonical mode, where nothing would (the single autoencoder: 0.093 against 0.0557),
    and 0 with selection.objectives ["loss", "kept"], where it cost the front's small end (0.0648
    against 0.0563 at kept 0.10); docs/results.md."""
    grow_fraction: float = 0.0
    """Regrowth (RigL/SET): each mutation cuts this much more of the pair's alive entries and
    revives as many dead ones elsewhere, so the kept count ends where it would have but the
    topology moves; a pair at its target swaps this fraction (0 = off). coevo.evolution.regrowth."""
    grow_by: Literal["gradient", "random"] = "gradient"
    """Which dead entries regrowth revives: the largest |dL/dw| at zero on ``cases`` training rows
    (RigL's rule) or uniformly drawn (SET's)."""
    keep_inputs: bool = False
    """Protection rule 1: every input unit keeps an alive weight. Off by default: a prune may cut
    inputs that carry nothing the others do not (noisy, redundant bits). The rule costs one weight
    per input, a third of the budget at kept 0.05 on the paper's problem (D = 1000): without it
    0.127 there against 0.194, 0.0539 against 0.0544 at 0.10 (seeds 1-5, docs/results.md)."""
    regrow: bool = False
    """The reference's pruning: zero the drawn entries but keep no mask, so they train again (a
    weight reset, not pruning); the kept fraction then counts non-zero entries."""

    def reset_fraction_for(self, mode: str, objectives: typing.Sequence[str] = ("loss",)) -> float:
        """The reset fraction a run in ``mode`` selecting on ``objectives`` uses ("auto" resolved)."""
        if self.reset_fraction == "auto":
            return AUTO_RESET_FRACTION if mode == "coevolution" and tuple(objectives) == ("loss",) else 0.0
        return float(self.reset_fraction)


LEGACY_PRUNE_KEYS = {
    "threshold": ("params", "threshold", 0.1, "the conjunctive operator"),
    "variance_direction": ("params", "direction", "low", "the variance operator"),
    "exponential_k": ("schedule_params", "k", 2.0, "the exponential schedule"),
    "final_fraction": ("schedule_params", "fraction", 0.25, "the final_n schedule"),
}
"""[prune] keys that became operator or schedule parameters: old key -> (table, new name, old
default, whose). Every config.toml written before carries them: at their default they are dropped
(the parameter's default is the same value), and any other value is refused, naming the new key."""


def _drop_legacy_prune_keys(values: dict[str, Any]) -> dict[str, Any]:
    kept = dict(values)
    for old, (table, name, default, whose) in LEGACY_PRUNE_KEYS.items():
        if old in kept and kept.pop(old) != default:
            raise ConfigError(f"prune.{old} is now prune.{table}.{name}, a parameter of {whose}: "
                              f"write it under [prune.{table}] (or --set prune.{table}.{name}=...)")
    return kept


@dataclass(frozen=True)
class SelectionConfig:
    tournament_size: int = 2
    """Tournament size for selecting the pair to train."""
    solution_concept: Literal["best", "worst", "mean"] = "best"
    """How a genome's row (encoder) or column (decoder) of the loss matrix becomes its fitness."""
    pairing: Literal["encoder", "independent"] = "encoder"
    """Which decoder a cell trains with its selected encoder. "encoder" (the reference's): the
    winner's own partner, so decoder fitness is never used. "independent" (Lipizzaner's): a
    second tournament on decoder (column) fitness, so each population is selected by its own."""
    objectives: tuple[str, ...] = ("loss",)
    """What selection minimises: ["loss"], or ["loss", "kept"] for a Pareto front of (loss, size)
    models in one run (NSGA-II's crowded tournament in each neighbourhood; the cells prune
    towards sizes spread from prune.target_kept to largest_kept; see coevo.evolution.front)."""
    largest_kept: float = 0.5
    """With objectives ["loss", "kept"]: the kept target of the grid's largest rung (the smallest
    is prune.target_kept)."""


@dataclass(frozen=True)
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)

    def replace(self, **sections: Any) -> "Config":
        """Return a copy with whole sections or ``section__key`` values replaced (a table such as
        ``prune__params`` is merged key by key, as ``--set prune.params.NAME=...`` is)."""
        return from_dict(_merge(to_dict(self), _unflatten(sections)))


_SECTION_TYPES = {
    "run": RunConfig, "data": DataConfig, "model": ModelConfig, "grid": GridConfig,
    "train": TrainConfig, "prune": PruneConfig, "selection": SelectionConfig,
}


def _unflatten(sections: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in sections.items():
        if "__" in key:
            section, name = key.split("__", 1)
            out.setdefault(section, {})[name] = value
        else:
            out[key] = value
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = {k: dict(v) for k, v in base.items()}
    for section, values in extra.items():
        if section not in merged:
            raise ConfigError(f"unknown section [{section}]; known sections: {', '.join(_SECTION_TYPES)}")
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] must be a table of keys, got {values!r}")
        for key, value in values.items():
            current = merged[section].get(key)
            # a nested table (prune.params) gains keys from each layer instead of being replaced
            merged[section][key] = {**current, **value} if isinstance(current, dict) and isinstance(value, dict) else value
    return merged


def to_dict(config: Config) -> dict[str, dict[str, Any]]:
    """Plain nested dict (tuples become lists), ready for TOML or JSON."""
    out: dict[str, dict[str, Any]] = {}
    for section in _SECTION_TYPES:
        values = dataclasses.asdict(getattr(config, section))
        out[section] = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
    return out


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arm) for arm in typing.get_args(tp))
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"list of {typing.get_args(tp)[0].__name__}"
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, tp: Any, value: Any) -> Any:
    """Check one value against its declared type; return it in canonical form."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # e.g. a number or "auto": the first arm that takes it
        for arm in typing.get_args(tp):
            try:
                return _coerce(key, arm, value)
            except ConfigError:
                continue
        raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key} = {value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}")
        return value
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list of {item_tp.__name__} (e.g. [30]), got {value!r}")
        return tuple(_coerce(f"{key}[{i}]", item_tp, v) for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    if origin is dict:
        return _parameter_table(key, value)
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # a bug in coevo, not the user's


def is_checked_type(tp: Any) -> bool:
    """Whether :func:`coerce` knows ``tp`` (bool, int, float, str, a Literal, a tuple of them)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return True
    if origin in (typing.Union, types.UnionType):
        return all(is_checked_type(arm) for arm in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        return len(args) == 2 and args[1] is Ellipsis and is_checked_type(args[0])
    return tp in (bool, int, float, str)


def coerce(key: str, tp: Any, value: Any) -> Any:
    """Check a value against a type :func:`is_checked_type` knows; the ConfigError names ``key``.
    Plug-in parameters are checked this way against their annotations."""
    return _coerce(key, tp, value)


def _parameter_table(key: str, value: Any) -> dict[str, Any]:
    """A table of plug-in parameters: Python identifiers -> values config.toml can hold. Their
    meaning is checked later, against the plug-in's signature."""
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must be a table of NAME = value (TOML [{key}]), got {value!r}")
    table = {}
    for name, item in value.items():
        if not (isinstance(name, str) and name.isidentifier()):
            raise ConfigError(f"{key}: {name!r} is not a parameter name (a Python identifier)")
        table[name] = _plain_value(f"{key}.{name}", item)
    return table


def _plain_value(key: str, value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain_value(f"{key}[{i}]", v) for i, v in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    if isinstance(value, (bool, int, float, str)):
        return value
    raise ConfigError(f"{key} must be a number, string, boolean or a list of them, got {value!r}")


def from_dict(raw: dict[str, Any]) -> Config:
    """Build and validate a Config from a nested dict; unknown sections/keys are errors."""
    sections: dict[str, Any] = {}
    for section, values in raw.items():
        cls = _SECTION_TYPES.get(section)
        if cls is None:
            raise ConfigError(f"unknown section [{section}]; known sections: {', '.join(_SECTION_TYPES)}")
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] must be a table of keys, got {values!r}")
        hints = typing.get_type_hints(cls)
        if section == "prune":
            values = _drop_legacy_prune_keys(values)
        kwargs = {}
        for key, value in values.items():
            if key not in hints:
                known = ", ".join(hints)
                raise ConfigError(f"unknown key {section}.{key}; keys of [{section}]: {known}")
            kwargs[key] = _coerce(f"{section}.{key}", hints[key], value)
        sections[section] = cls(**kwargs)
    config = Config(**sections)
    validate(config)
    return config


def _check_types(c: Any) -> None:
    """Every field of every section has its declared type (a Config built in Python skips
    :func:`from_dict`, so this is where ``RunConfig(mode="foo")`` is caught)."""
    if not isinstance(c, Config):
        raise ConfigError(f"a run needs a coevo.config.Config, got {type(c).__name__}; "
                          f"build one with Config(), config.load(...) or config.from_dict(...)")
    for section, cls in _SECTION_TYPES.items():
        values = getattr(c, section)
        if not isinstance(values, cls):
            raise ConfigError(f"[{section}] must be a {cls.__name__}, got {type(values).__name__}")
        for key, tp in typing.get_type_hints(cls).items():
            _coerce(f"{section}.{key}", tp, getattr(values, key))


def validate(c: Config) -> None:
    """Types, ranges and cross-field checks; each failure names the key and the allowed values."""

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    _check_types(c)
    need(c.run.generations >= 1, f"run.generations must be >= 1, got {c.run.generations}")
    need(c.run.checkpoint_every >= 0, f"run.checkpoint_every must be >= 0 (0 = never), got {c.run.checkpoint_every}")
    need(c.run.plugin_timeout >= 0, f"run.plugin_timeout must be >= 0 seconds (0 = never), got {c.run.plugin_timeout}")
    need(c.run.engine in ("local", "ray"), f"run.engine = {c.run.engine!r} is not allowed; choose one of: local, ray")
    need(c.run.ray_workers >= 1, f"run.ray_workers must be >= 1, got {c.run.ray_workers}")
    need(c.run.update == "synchronous" or c.run.engine == "local",
         "run.update = 'asynchronous' runs on the local engine only (cells wait on each other); "
         "use run.engine = 'local' or run.update = 'synchronous'")
    need(c.run.threads >= 0, f"run.threads must be >= 0 (0 = torch default), got {c.run.threads}")
    need(c.data.n_clusters >= 1, f"data.n_clusters must be >= 1, got {c.data.n_clusters}")
    need(c.data.n_dims >= 1, f"data.n_dims must be >= 1, got {c.data.n_dims}")
    need(c.data.rows_per_cluster >= 1, f"data.rows_per_cluster must be >= 1, got {c.data.rows_per_cluster}")
    need(c.data.n_rows >= 1, f"data.n_rows must be >= 1, got {c.data.n_rows}")
    need(c.data.intrinsic_dim >= 1 and (c.data.source != "manifold" or c.data.intrinsic_dim <= c.data.n_dims),
         f"data.intrinsic_dim must be in [1, data.n_dims = {c.data.n_dims}], got {c.data.intrinsic_dim}")
    need(0.0 <= c.data.noise <= 1.0, f"data.noise must be in [0, 1], got {c.data.noise}")
    for key in ("validation_fraction", "test_fraction"):
        value = getattr(c.data, key)
        need(0.0 < value < 1.0, f"data.{key} must be in (0, 1), got {value}")
    need(c.data.validation_fraction + c.data.test_fraction < 1.0,
         "data.validation_fraction + data.test_fraction must leave rows for training (sum < 1)")
    need(len(c.model.hidden) >= 1 and all(h >= 1 for h in c.model.hidden),
         f"model.hidden must be a non-empty list of widths >= 1, got {list(c.model.hidden)}")
    need(c.model.latent >= 1, f"model.latent must be >= 1, got {c.model.latent}")
    family = "a factory" if c.model.factory else f"model.family = {c.model.family!r}"
    need(c.run.backend != "numba" or (c.model.family == "mlp" and not c.model.factory),
         f"run.backend = 'numba' trains the MLP family only, and this run has {family}; "
         f"use run.backend = 'torch' (or 'auto')")
    need(c.run.backend != "numba" or not c.model.variational,
         "model.variational = true trains on the torch backend; use run.backend = 'torch' (or 'auto')")
    need(c.train.kl_weight >= 0 and math.isfinite(c.train.kl_weight),
         f"train.kl_weight must be a finite number >= 0, got {c.train.kl_weight}")
    need(c.run.backend != "numba" or c.run.device == "cpu",
         "run.backend = 'numba' runs on the CPU only; use run.backend = 'torch' (or 'auto') with run.device = 'cuda'")
    need(all(isinstance(n, int) and n >= 1 for n in c.data.sample_shape),
         f"data.sample_shape must be a list of sizes >= 1 (e.g. [1, 28, 28]), got {list(c.data.sample_shape)}")
    need(c.grid.cells >= 1, f"grid.cells must be >= 1, got {c.grid.cells}")
    need(c.grid.radius >= 0, f"grid.radius must be >= 0, got {c.grid.radius}")
    if c.grid.topology == "ring":
        need(2 * c.grid.radius + 1 <= c.grid.cells,
             f"grid.radius = {c.grid.radius} is too large for a ring of {c.grid.cells} cells; "
             f"use radius <= {(c.grid.cells - 1) // 2}")
    else:
        need(len(c.grid.shape) == 2 and all(n >= 1 for n in c.grid.shape),
             f"grid.shape must be [rows, columns] with both >= 1, got {list(c.grid.shape)}")
        need(2 * c.grid.radius + 1 <= min(c.grid.shape),
             f"grid.radius = {c.grid.radius} is too large for a {c.grid.shape[0]}x{c.grid.shape[1]} torus; "
             f"use radius <= {(min(c.grid.shape) - 1) // 2}")
    need(c.train.batch_size >= 1, f"train.batch_size must be >= 1, got {c.train.batch_size}")
    need(c.train.learning_rate > 0, f"train.learning_rate must be > 0, got {c.train.learning_rate}")
    need(c.train.lr_sigma >= 0, f"train.lr_sigma must be >= 0, got {c.train.lr_sigma}")
    need(0 < c.train.lr_min <= c.train.lr_max,
         f"train.lr_min and train.lr_max must satisfy 0 < lr_min <= lr_max, got {c.train.lr_min}, {c.train.lr_max}")
    need(c.run.mode != "coevolution" or c.train.lr_sigma == 0 or c.train.lr_min <= c.train.learning_rate <= c.train.lr_max,
         f"train.learning_rate = {c.train.learning_rate} is outside [train.lr_min, train.lr_max] = "
         f"[{c.train.lr_min}, {c.train.lr_max}], so the learning-rate mutation would clip it at once; "
         f"change one of them (or set train.lr_sigma = 0)")
    need(c.train.bce_weight >= 0, f"train.bce_weight must be >= 0 (0 = off), got {c.train.bce_weight}")
    for key in ("gradient_noise", "scale_l1", "scale_l1_latent"):
        value = getattr(c.train, key)
        need(value >= 0 and math.isfinite(value), f"train.{key} must be a finite number >= 0 (0 = off), got {value}")
    for key in ("beta1", "beta2"):
        value = getattr(c.train, key)
        need(0.0 <= value < 1.0, f"train.{key} must be in [0, 1), got {value}")
    need(0.0 <= c.prune.probability <= 1.0, f"prune.probability must be in [0, 1], got {c.prune.probability}")
    need(0.0 <= c.prune.amount <= 1.0, f"prune.amount must be in [0, 1], got {c.prune.amount}")
    need(0.0 <= c.prune.target_kept < 1.0, f"prune.target_kept must be in [0, 1) (0 = no target), got {c.prune.target_kept}")
    need(c.prune.schedule != "gradual" or c.prune.target_kept > 0,
         "prune.schedule = 'gradual' prunes towards prune.target_kept, which is 0; set it (e.g. "
         "--set prune.target_kept=0.1) or use the polynomial schedule")
    need(c.prune.reset_fraction == "auto" or 0.0 <= c.prune.reset_fraction <= 1.0,
         f"prune.reset_fraction must be in [0, 1] or \"auto\", got {c.prune.reset_fraction}")
    need(c.prune.cases >= 1, f"prune.cases must be >= 1, got {c.prune.cases}")
    need(0.0 <= c.prune.grow_fraction < 1.0, f"prune.grow_fraction must be in [0, 1) (0 = no regrowth), "
                                             f"got {c.prune.grow_fraction}")
    need(not (c.prune.regrow and c.prune.grow_fraction > 0),
         "prune.grow_fraction revives masked entries, and prune.regrow keeps no mask: unset one of them")
    need(c.selection.tournament_size >= 1,
         f"selection.tournament_size must be >= 1, got {c.selection.tournament_size}")
    need(c.selection.pairing in ("encoder", "independent"),
         f"selection.pairing = {c.selection.pairing!r} is not allowed; choose one of: encoder, independent")
    objectives = tuple(c.selection.objectives)
    need(objectives in (("loss",), ("loss", "kept")),
         f"selection.objectives = {list(objectives)} is not allowed; choose [\"loss\"] or [\"loss\", \"kept\"]")
    if "kept" in objectives:
        need(c.run.mode == "coevolution",
             "selection.objectives = [\"loss\", \"kept\"] selects among the grid's pairs; canonical mode trains "
             "one autoencoder and has nothing to select: use run.mode = 'coevolution' or objectives [\"loss\"]")
        need(0.0 < c.prune.target_kept < c.selection.largest_kept < 1.0,
             f"with objectives [\"loss\", \"kept\"] the cells prune towards sizes from prune.target_kept to "
             f"selection.largest_kept: they must satisfy 0 < target_kept < largest_kept < 1, got "
             f"{c.prune.target_kept} and {c.selection.largest_kept}")
        need(not c.prune.regrow, "selection.objectives = [\"loss\", \"kept\"] needs masks that persist; "
             "unset prune.regrow")


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse ``section.key=value``; the value is read as TOML, else taken as a plain string.
    ``section.table.name=value`` (e.g. ``prune.params.threshold=0.2``) sets one entry of a nested
    table: it comes back as ``(section, table, {name: value})``."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r} must look like section.key=value")
    path, raw = text.split("=", 1)
    parts = path.strip().split(".")
    if len(parts) not in (2, 3) or not all(parts):
        raise ConfigError(f"--set {text!r}: the key must be section.key (e.g. run.generations=20) "
                          f"or section.table.name (e.g. prune.params.threshold=0.2)")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    if len(parts) == 3:
        return parts[0], parts[1], {parts[2]: value}
    return parts[0], parts[1], value


def read_text(path: str | Path, what: str) -> str:
    """A user's text file, or a one-line ConfigError naming ``what`` it was meant to be."""
    path = Path(path)
    try:
        return path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc}") from None


def shipped_names(package: str) -> list[str]:
    """Names of the TOML files shipped in ``package`` (run presets, bench presets)."""
    return sorted(p.name[: -len(".toml")] for p in resources.files(package).iterdir() if p.name.endswith(".toml"))


def shipped_text(package: str, name: str) -> str:
    """The text of ``package``'s shipped ``name.toml``, or a ConfigError listing the known names."""
    names = shipped_names(package)
    if name not in names:
        raise ConfigError(f"--preset {name!r} is unknown; presets: {', '.join(names)}")
    return resources.files(package).joinpath(f"{name}.toml").read_text()


def presets() -> list[str]:
    """Names of the run presets shipped in :mod:`coevo.presets`."""
    return shipped_names("coevo.presets")


def preset_text(name: str) -> str:
    """The TOML text of a shipped run preset, or a ConfigError listing the known ones."""
    return shipped_text("coevo.presets", name)


def _toml_table(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from None


def load(path: str | Path | None = None, overrides: typing.Sequence[str] = (), preset: str | None = None) -> Config:
    """Load defaults <- preset <- TOML file <- overrides, then validate."""
    raw: dict[str, Any] = to_dict(Config())
    if preset is not None:
        raw = _merge(raw, _toml_table(preset_text(preset), f"preset {preset}"))
    if path is not None:
        raw = _merge(raw, _toml_table(read_text(path, "config file"), f"config file {path}"))
    for text in overrides:
        section, key, value = parse_override(text)
        raw = _merge(raw, {section: {key: value}})
    return from_dict(raw)


def dumps(config: Config) -> str:
    """The resolved configuration as TOML text (every key, seed included); :func:`load` reads it
    back to an equal Config."""
    lines: list[str] = []
    for section, values in to_dict(config).items():
        lines += toml_table(section, values)
    return "\n".join(lines)


def toml_table(name: str, values: dict[str, Any]) -> list[str]:
    """``[name]`` and its keys as TOML lines, then each nested table as ``[name.key]``."""
    lines = [f"[{name}]"]
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in values.items() if not isinstance(v, dict)]
    lines.append("")
    for key, value in values.items():
        if isinstance(value, dict):
            lines += toml_table(f"{name}.{_toml_key(key)}", value)
    return lines


def _toml_key(key: str) -> str:
    return key if key and all(ch.isalnum() or ch in "_-" for ch in key) and key.isascii() else _toml_value(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")

