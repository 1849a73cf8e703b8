"""Models: an encoder and a decoder are ``torch.nn.Module``s, used as stateless templates.

A run names its pair by a :class:`ModelRef` (a built-in family or a user's factory, the sample
shape, the latent width, the parameters): small, hashable and picklable, so that a checkpoint or a
Ray worker can rebuild the same templates. :func:`coevo.model.graph.trace` turns the pair into two
:class:`~coevo.genome.Layout`s (what a unit is in every parameter, how units chain); genomes stay
flat rows of parameters with masks (:mod:`coevo.population`), and
:mod:`coevo.training.functional` runs them through the templates with ``torch.func``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from coevo.errors import ConfigError
from coevo.model.families import FAMILIES

Factory = Callable[..., tuple[nn.Module, nn.Module]]


def _frozen(value: Any) -> Any:
    """Lists and dicts as tuples, so a parameter set can be hashed."""
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def _thawed(value: Any) -> Any:
    return list(_thawed(v) for v in value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class ModelRef:
    """Which pair a run trains: ``source`` is a family name ('mlp', 'conv') or a factory
    ('module:function' or 'path/file.py:function'); ``input_shape`` one sample's shape."""

    source: str
    input_shape: tuple[int, ...]
    latent: int
    params: tuple = ()
    variational: bool = False
    """A VAE: the encoder returns 2 x latent values (means, then log-variances)."""

    @property
    def kwargs(self) -> dict[str, Any]:
        return {k: _thawed(v) for k, v in self.params}

    @property
    def is_factory(self) -> bool:
        return self.source not in FAMILIES

    @property
    def what(self) -> str:
        return f"model.factory {self.source!r}" if self.is_factory else f"model.family {self.source!r}"


@dataclass(frozen=True)
class ModelPart:
    """One side of a pair: a :class:`ModelRef` and a role ('encoder' or 'decoder')."""

    ref: ModelRef
    role: str

    def template(self) -> nn.Module:
        enc, dec = templates(self.ref)
        return enc if self.role == "encoder" else dec


def ref_of(config, sample_shape: Sequence[int]) -> ModelRef:
    """The :class:`ModelRef` of a config (``model.factory`` over ``model.family``); the MLP
    family takes ``model.hidden`` and sees flat rows."""
    model = config.model
    shape = tuple(int(n) for n in sample_shape)
    vae = bool(model.variational)
    if model.factory:
        return ModelRef(model.factory, shape, int(model.latent), _frozen(dict(model.params)), vae)
    if model.family == "mlp":
        if model.params:
            raise ConfigError(f"model.params {sorted(model.params)} are for the conv family or a factory; the mlp "
                              f"family takes model.hidden and model.latent")
        params = {"hidden": list(model.hidden), **({"variational": True} if vae else {})}
        return ModelRef("mlp", (math.prod(shape),), int(model.latent), _frozen(params), vae)
    params = {**dict(model.params), **({"variational": True} if vae else {})}
    return ModelRef(model.family, shape, int(model.latent), _frozen(params), vae)


def resolve_factory(path: str | Factory) -> Factory:
    """A factory from 'module:function' or 'path/file.py:function' (or the callable itself)."""
    if callable(path):
        return path
    if path in _FACTORIES:
        return _FACTORIES[path]
    if path in FAMILIES:
        return FAMILIES[path]
    target, sep, attr = str(path).rpartition(":")
    if not sep or not target or not attr:
        raise ConfigError(f"model.factory = {path!r} must be 'module:function' or 'path/file.py:function'")
    try:
        if target.endswith(".py"):
            file = Path(target)
            if not file.is_file():
                raise ConfigError(f"model.factory = {path!r}: file {target} does not exist")
            name = f"coevo_factory_{abs(hash(str(file.resolve())))}"
            module = sys.modules.get(name)
            if module is None:
                spec = importlib.util.spec_from_file_location(name, file)
                module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
                sys.modules[name] = module
                try:
                    spec.loader.exec_module(module)  # type: ignore[union-attr]
                except BaseException:
                    del sys.modules[name]
                    raise
        else:
            module = importlib.import_module(target)
    except ConfigError:
        raise
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a syntax error, anything raised at import, sys.exit() included
        raise ConfigError(f"model.factory = {path!r}: importing {target} raised {_failure(exc)}") from exc
    item = getattr(module, attr, None)
    if not callable(item):
        raise ConfigError(f"model.factory = {path!r}: {target} has no function {attr!r}")
    return item


def _failure(exc: BaseException) -> str:
    """The plug-in error's one line, where in the user's file it was raised (coevo.registry.failure)."""
    from coevo.registry import failure

    return failure(exc).splitlines()[0]


def build_pair(ref: ModelRef, factory: Factory | None = None) -> tuple[nn.Module, nn.Module]:
    """Call the family or factory once: ``factory(input_shape, latent, **params)``, checked to
    return two modules (a fresh initialisation from torch's current random state)."""
    fn = factory or resolve_factory(ref.source)
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        try:
            signature.bind(tuple(ref.input_shape), ref.latent, **ref.kwargs)
        except TypeError as exc:
            takes = [p for p in signature.parameters][2:]
            if not ref.is_factory:  # the built-in families' own switch is model.variational, not a model.params key
                takes = [p for p in takes if p != "variational"]
            raise ConfigError(f"{ref.what} cannot be called as f(input_shape, latent, **model.params) with model.params "
                              f"{sorted(ref.kwargs)} ({exc}); it takes {takes or 'no model.params'}") from None
    try:
        made = fn(tuple(ref.input_shape), ref.latent, **ref.kwargs)
    except ConfigError:
        raise
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        raise ConfigError(f"{ref.what} raised {_failure(exc)}") from exc
    if not (isinstance(made, (tuple, list)) and len(made) == 2 and all(isinstance(m, nn.Module) for m in made)):
        got = type(made).__name__ if not isinstance(made, (tuple, list)) else \
            f"{len(made)} items ({', '.join(type(m).__name__ for m in made)})"
        raise ConfigError(f"{ref.what} must return (encoder, decoder), two torch.nn.Module, and returned {got}")
    return made[0], made[1]


_FACTORIES: dict[str, Factory] = {}
"""Callables handed to the Python API (``factory=my_function``), by the name a ModelRef carries."""


def register_factory(factory: Factory) -> str:
    """Make a Python callable usable as ``model.factory`` in this process (the Python API's
    ``factory=callable``); returns the name to put there. Ray workers need an importable path."""
    name = f"{getattr(factory, '__module__', '?')}:{getattr(factory, '__qualname__', repr(factory))}"
    _FACTORIES[name] = factory
    return name


@functools.lru_cache(maxsize=16)
def templates(ref: ModelRef) -> tuple[nn.Module, nn.Module]:
    """The pair's modules as templates for ``torch.func.functional_call`` (their own parameter
    values are never used): built once per process and reference."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        enc, dec = build_pair(ref)
    for module in (enc, dec):
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
    return enc, dec


def init_rows(ref: ModelRef, layouts, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` fresh (encoder, decoder) initialisations as flat rows: the factory called once
    per cell under ``torch.manual_seed`` derived from the run's ``seed``."""
    from coevo.model.graph import flatten_parameters

    enc_rows = np.empty((count, layouts[0].size), dtype=np.float32)
    dec_rows = np.empty((count, layouts[1].size), dtype=np.float32)
    factory = resolve_factory(ref.source)
    for k in range(count):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(np.random.SeedSequence([seed, 0x1417, k]).generate_state(1)[0]))
            enc, dec = build_pair(ref, factory)
        enc_rows[k] = flatten_parameters(enc, layouts[0])
        dec_rows[k] = flatten_parameters(dec, layouts[1])
    return enc_rows, dec_rows
