"""Criteria: a score per weight or per neuron, and nothing else. Registering one makes it an
operator that takes ``scope``, ``unit``, ``max_layer_fraction``, ``reduce`` and
``encoder_scale`` from config and hands the scores to the one selector
(:mod:`coevo.operators.selector`), protection rules included. A criterion is a plain function::

    @coevo.operators.criterion("abs_gradient", scope="global")
    def abs_gradient(net, context, rng, *, power: float = 1.0):
        '''|dL/dw|^power: prune what the loss does not feel.'''
        return [EntryScores(np.abs(g.weight) ** power, np.abs(g.bias) ** power)
                for g in context.gradients(net)]

It returns, per layer, :class:`~coevo.operators.selector.EntryScores` (per entry), a 1-D array
(per neuron), or ``None`` for the whole network (no preference: uniform). Lower scores are pruned
first; +inf never. Its own settings are keyword parameters after ``(net, context, rng)``, checked
like an operator's (``--set prune.params.power=2``); ``scope`` and ``unit`` come for free
(``--set prune.params.unit=neuron``), with the defaults given to the decorator. ``units`` limits
the units a criterion makes sense for (a neuron-only score, say); ``@needs`` on the criterion
function carries over to its operator.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any, Callable, Literal

import numpy as np

from coevo.genome import Network
from coevo.operators.base import PruneContext, needs_of, register
from coevo.operators.selector import EntryScores, Scores, check_settings, model_shares, prune

SELECTOR_PARAMETERS = ("scope", "unit", "max_layer_fraction", "reduce", "encoder_scale")

CriterionFunction = Callable[..., Scores]


def criterion(name: str, *, scope: str = "layer", unit: str = "weight", units: tuple[str, ...] = ("weight", "neuron"),
              encoder_scale: float = 1.0) -> Callable[[CriterionFunction], type]:
    """Decorator: register ``fn(net, context, rng, **settings) -> scores`` as the operator ``name``
    (see the module's docstring). Returns the operator class, so that an import path
    (``prune.operator = "my_module:fn"``) names the operator too; the function stays reachable
    as its ``criterion`` attribute."""
    check_settings(scope, unit, 1.0)
    if unit not in units:
        raise ValueError(f"criterion {name!r}: its default unit {unit!r} is not among its units {units}")

    def add(fn: CriterionFunction) -> type:
        operator = criterion_operator(name, fn, scope=scope, unit=unit, units=units, encoder_scale=encoder_scale)
        register(name)(operator)
        return operator

    return add


def criterion_operator(name: str, fn: CriterionFunction, *, scope: str = "layer", unit: str = "weight",
                       units: tuple[str, ...] = ("weight", "neuron"), encoder_scale: float = 1.0) -> type:
    """The operator class for criterion ``fn``: its constructor takes the selector's settings and
    the criterion's own (checked when a run is prepared, before anything is written); its
    instances prune."""
    own = _own_parameters(fn)
    clash = [p.name for p in own if p.name in SELECTOR_PARAMETERS]
    if clash:
        raise ValueError(f"criterion {name!r}: parameter {clash[0]!r} is the selector's; rename it")

    def __init__(self, **settings: Any) -> None:
        selector = {k: settings.pop(k) for k in SELECTOR_PARAMETERS if k in settings}
        self.scope = selector.get("scope", scope)
        self.unit = selector.get("unit", unit)
        self.max_layer_fraction = float(selector.get("max_layer_fraction", 1.0))
        self.reduce = selector.get("reduce", "l2")
        self.encoder_scale = float(selector.get("encoder_scale", encoder_scale))
        check_settings(self.scope, self.unit, self.max_layer_fraction, self.reduce)
        if self.unit not in units:
            raise ValueError(f"operator {name!r} scores {' and '.join(units)}s only: unit must be one of {list(units)}")
        if not (self.encoder_scale > 0 and np.isfinite(self.encoder_scale)):
            raise ValueError(f"encoder_scale must be > 0, got {self.encoder_scale}")
        if self.scope != "model" and "encoder_scale" in selector and self.encoder_scale != 1.0:
            raise ValueError("encoder_scale weighs the encoder's scores against the decoder's: it needs scope 'model'")
        self.settings = settings

    def __call__(self, net: Network, amount: float, rng: np.random.Generator, context: PruneContext) -> Network:
        scores = fn(net, context, rng, **self.settings)
        scope = self.scope
        if scope == "model" and not (context.holds_pair and net.role in ("encoder", "decoder")):
            scope = "global"  # a network pruned on its own: the model is this network
        if scope == "model":  # the encoder's call splits the amount for both; the decoder's reads its share
            key = f"{name}:model_shares"
            if key not in context.shared:
                context.shared[key] = self._shares(net, scores, amount, rng, context)
            amount, scope = context.shared[key][net.role], "global"
        return prune(net, scores, amount, rng, scope=scope, unit=self.unit,
                     max_layer_fraction=self.max_layer_fraction, reduce=self.reduce)

    def _shares(self, net: Network, scores: Scores, amount: float, rng: np.random.Generator,
                context: PruneContext) -> dict[str, float]:
        """Scope ``model``: both networks' shares of ``amount``, the encoder's scores times
        ``encoder_scale`` (below 1 the encoder gives more: its inputs are redundant, while every
        output unit needs its own weights). Meant for scores >= 0 (magnitudes, saliencies): a
        factor below 1 raises a negative score."""
        partner = context.partner(net)
        scored = [(net, scores), (partner, fn(partner, context, rng, **self.settings))]
        scored = [(member, [_scaled(s, self.encoder_scale) for s in member_scores])
                  if member.role == "encoder" and member_scores is not None and self.encoder_scale != 1.0
                  else (member, member_scores) for member, member_scores in scored]
        shares = model_shares(scored, amount, rng, self.unit, self.reduce)
        return {net.role: shares[0], partner.role: shares[1]}

    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    keyword = inspect.Parameter.KEYWORD_ONLY
    selector_params = [
        inspect.Parameter("scope", keyword, default=scope, annotation=Literal["layer", "global", "model"]),
        inspect.Parameter("unit", keyword, default=unit, annotation=Literal[tuple(units)]),  # type: ignore[misc]
        inspect.Parameter("max_layer_fraction", keyword, default=1.0, annotation=float),
    ]
    if "neuron" in units:  # how entry scores become a neuron's
        selector_params.append(inspect.Parameter("reduce", keyword, default="l2", annotation=Literal["l2", "l1", "max"]))
    selector_params.append(inspect.Parameter("encoder_scale", keyword, default=encoder_scale, annotation=float))
    params = [self_param, *selector_params, *[p.replace(kind=keyword) for p in own]]
    __init__.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    hints = _hints(fn)
    __init__.__annotations__ = {p.name: hints.get(p.name, p.annotation) for p in params[1:]
                                if hints.get(p.name, p.annotation) is not inspect.Parameter.empty}
    __init__.__annotations__["return"] = None
    doc = (fn.__doc__ or f"criterion {name!r}").strip()
    cls = type(f"{name}_operator", (), {"__init__": __init__, "__call__": __call__, "_shares": _shares,
                                        "__doc__": doc, "__module__": fn.__module__, "criterion": staticmethod(fn)})
    declared = needs_of(fn)
    if declared != needs_of(None):
        cls.coevo_needs = declared  # type: ignore[attr-defined]
    return cls


def _scaled(scores: Any, factor: float) -> Any:
    """One layer's scores times ``factor`` (entry or neuron scores)."""
    if isinstance(scores, EntryScores):
        return EntryScores(scores.weight * factor, None if scores.bias is None else scores.bias * factor)
    return np.asarray(scores, dtype=np.float64) * factor


def _own_parameters(fn: CriterionFunction) -> list[inspect.Parameter]:
    """The criterion's settings: its keyword parameters after (net, context, rng)."""
    params = list(inspect.signature(fn).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][:3]
    if len(positional) < 3:
        raise TypeError(f"a criterion takes (net, context, rng, *, settings...); {fn.__qualname__} takes "
                        f"{[p.name for p in params]}")
    rest = [p for p in params if p not in positional]
    if any(p.kind is p.VAR_KEYWORD for p in rest):
        raise TypeError(f"criterion {fn.__qualname__}: name its settings; **kwargs would swallow misspelt ones")
    return [p for p in rest if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _hints(fn: CriterionFunction) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:
        return {}
