"""A typed name -> callable registry: decorator, 'module:attr' import paths, entry points; and the
checks every plug-in gets: its parameters against its signature, and its hands off the global
random generators.

Used for pruning operators (group ``coevo.operators``) and schedules (``coevo.schedules``).
Refuses name collisions; an unknown name fails with the list of known ones.

A plug-in's own settings (``prune.params``, ``prune.schedule_params``) are keyword parameters:
those of a function after the contract's positional arguments (``net, amount, rng, context``),
or those of a class's constructor. They are checked by name, required-ness and annotation
(bool, int, float, str, Literal, tuple) before a run starts, as DEAP binds ``**kw`` in
``toolbox.register``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import random
import typing
from importlib import metadata
from typing import Any, Callable, Generic, Iterator, Mapping, TypeVar

import numpy as np
import torch

from coevo import config as config_module
from coevo import watchdog
from coevo.errors import ConfigError, OperatorError, user_frame

T = TypeVar("T", bound=Callable)

_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class Registry(Generic[T]):
    """Plug-ins of one kind. ``contract`` names the positional arguments every call gets (a
    function's parameters after them are its settings); ``params_key`` is where those settings
    live in the config."""

    def __init__(self, kind: str, config_key: str, entry_point_group: str, params_key: str,
                 contract: tuple[str, ...]) -> None:
        self.kind = kind
        self.config_key = config_key
        self.entry_point_group = entry_point_group
        self.params_key = params_key
        self.contract = contract
        self._items: dict[str, T] = {}
        self._entry_points_loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@registry.register("name")``."""

        def add(item: T) -> T:
            self.add(name, item)
            return item

        return add

    def add(self, name: str, item: T) -> None:
        if not callable(item):
            raise TypeError(f"{self.kind} {name!r} must be callable, got {item!r}")
        existing = self._items.get(name)
        if existing is not None and existing is not item:
            raise ValueError(f"{self.kind} {name!r} is already registered ({_describe(existing)})")
        self._items[name] = item

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in metadata.entry_points(group=self.entry_point_group):
            if ep.name in self._items:
                continue
            try:
                self.add(ep.name, ep.load())
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # a broken plug-in must not break coevo; report when named
                self._items.setdefault(ep.name, _broken(self.kind, ep.name, ep.value, exc))

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        self._load_entry_points()
        for name in sorted(self._items):
            yield name, self._items[name]

    def lookup(self, name: str) -> T:
        """The registered (or imported, for 'package.module:attribute') function or class, as is."""
        if ":" in name:
            return self._import(name)
        self._load_entry_points()
        if name not in self._items:
            raise ConfigError(
                f"{self.config_key} = {name!r} is unknown; known {self.kind}s: {', '.join(self.names())} "
                f"(or give an import path 'module:function')"
            )
        item = self._items[name]
        load_error = getattr(item, "load_error", None)
        if load_error is not None:
            raise ConfigError(f"{self.config_key} = {name!r}: {load_error}")
        return item

    def resolve(self, name: str, params: Mapping[str, Any] | None = None) -> tuple[T, dict[str, Any]]:
        """``(callable, keyword arguments for every call)``, with ``params`` checked against the
        plug-in's signature. A function gets its parameters at each call (bind them with
        ``toolbox.register``, the DEAP way); a class gets them once, in its constructor, and its
        instance is the callable (then no call arguments are left). The callable is
        :class:`Watched`: a call that does not return is named (:mod:`coevo.watchdog`)."""
        item, checked = self._resolve(name, params)
        return Watched(item, self._who(name)), checked  # type: ignore[return-value]

    def _resolve(self, name: str, params: Mapping[str, Any] | None) -> tuple[T, dict[str, Any]]:
        item = self.lookup(name)
        checked = self.check_params(name, item, dict(params or {}))
        if inspect.isclass(item):
            return self._instantiate(name, item, checked), {}
        return item, checked

    def _who(self, name: str) -> str:
        return f"{self.kind} {name!r} ({self.config_key})"

    def get(self, name: str, params: Mapping[str, Any] | None = None) -> T:
        """A ready-to-call plug-in: a function with ``params`` bound, or a class's instance built
        with them (with no ``params``, a class is built with no arguments)."""
        item, call_params = self._resolve(name, params)
        return functools.partial(item, **call_params) if call_params else item  # type: ignore[return-value]

    def parameters(self, item: Callable) -> tuple[list[inspect.Parameter], bool]:
        """The settings ``item`` takes from config, and whether it takes any name (``**kwargs``):
        a class's constructor parameters, or a callable's keyword parameters after the contract's
        positional arguments."""
        try:
            signature = inspect.signature(item)
        except (TypeError, ValueError):  # e.g. a builtin: nothing to check, nothing to pass
            return [], False
        params = list(signature.parameters.values())
        if not inspect.isclass(item):
            contract = [p.name for p in params if p.kind in _POSITIONAL][: len(self.contract)]
            params = [p for p in params if p.name not in contract]
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
        return [p for p in params if p.kind in _KEYWORD], takes_any

    def check_params(self, name: str, item: Callable, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` checked against ``item``'s signature and annotations; every failure is a
        one-line ConfigError naming the parameter and the accepted ones."""
        accepted, takes_any = self.parameters(item)
        by_name = {p.name: p for p in accepted}
        what = f"{self.kind} {name!r}"
        known = f"it accepts: {', '.join(by_name)}" if by_name else "it takes no parameters"
        for key in params:
            if key not in by_name and not takes_any:
                raise ConfigError(f"{self.params_key}.{key} is not a parameter of {what}; {known}")
        for p in accepted:
            if p.default is inspect.Parameter.empty and p.name not in params:
                raise ConfigError(f"{what} needs {self.params_key}.{p.name} (it has no default); {known}")
        hints = _type_hints(item)
        checked = {}
        for key, value in params.items():
            tp = hints.get(key)
            checked[key] = config_module.coerce(f"{self.params_key}.{key}", tp, value) \
                if config_module.is_checked_type(tp) else value
        return checked

    def describe_parameters(self, item: Callable) -> str:
        """``threshold: float = 0.1, level (required)`` for listings; empty when there are none."""
        if getattr(item, "load_error", None) is not None:
            return ""
        accepted, takes_any = self.parameters(item)
        hints = _type_hints(item)
        parts = []
        for p in accepted:
            tp = hints.get(p.name, p.annotation)
            text = p.name if tp is inspect.Parameter.empty else f"{p.name}: {_type_text(tp)}"
            parts.append(f"{text} (required)" if p.default is inspect.Parameter.empty else f"{text} = {p.default!r}")
        if takes_any:
            parts.append("any other name")
        return ", ".join(parts)

    def _instantiate(self, name: str, item: type, params: dict[str, Any]) -> T:
        try:
            instance = watchdog.call(self._who(name), item, **params)
        except (KeyboardInterrupt, watchdog.Stalled):
            raise
        except BaseException as exc:  # SystemExit too: the constructor's error, not the end of coevo
            call = f"{item.__qualname__}({', '.join(f'{k}={v!r}' for k, v in params.items())})"
            raise ConfigError(f"{self.config_key} = {name!r}: {call} raised {failure(exc)}") from exc
        if not callable(instance):
            raise ConfigError(f"{self.config_key} = {name!r}: instances of class {item.__qualname__} are not "
                              f"callable; give it a __call__ method")
        return instance

    def _import(self, path: str) -> T:
        module_name, _, attr = path.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            if not _is_missing(exc, module_name):  # the module was found, and an import inside it failed
                raise ConfigError(f"{self.config_key} = {path!r}: importing module {module_name!r} raised "
                                  f"{failure(exc)}") from exc
            raise ConfigError(f"{self.config_key} = {path!r}: cannot import module {module_name!r} ({exc})") from None
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a syntax error, anything raised at import, sys.exit() included
            raise ConfigError(f"{self.config_key} = {path!r}: importing module {module_name!r} raised "
                              f"{failure(exc)}") from exc
        try:
            item = getattr(module, attr)
        except AttributeError:
            raise ConfigError(f"{self.config_key} = {path!r}: module {module_name!r} has no attribute {attr!r}") from None
        if not callable(item):
            raise ConfigError(f"{self.config_key} = {path!r} is not callable")
        return item


class Watched:
    """A resolved plug-in, called under :mod:`coevo.watchdog` (named if it does not return);
    otherwise it is the plug-in: its attributes (``coevo_needs``, a partial's ``func``) are read
    through, and ``__wrapped__`` is the plug-in itself."""

    def __init__(self, item: Callable, who: str) -> None:
        self.__wrapped__ = item
        self.who = who

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return watchdog.call(self.who, self.__wrapped__, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # only for names the wrapper itself lacks
        if name in ("__wrapped__", "who"):  # while unpickling, before __init__'s attributes exist
            raise AttributeError(name)
        return getattr(self.__wrapped__, name)

    def __repr__(self) -> str:
        return f"Watched({self.__wrapped__!r})"


def failure(exc: BaseException) -> str:
    """``TYPE: MESSAGE (FILE:LINE)`` of a plug-in's exception, where in the user's code it was
    raised (a syntax error's own file and line); the traceback is for --debug."""
    if isinstance(exc, SyntaxError):
        what = f"SyntaxError: {exc.msg}"
        where = f"{exc.filename}:{exc.lineno}" if exc.filename else None
    else:
        what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        where = user_frame(exc.__traceback__)
    return f"{what} (at {where}; --debug shows the traceback)" if where else what


def _is_missing(exc: ImportError, module_name: str) -> bool:
    """Whether ``exc`` says that ``module_name`` (or a package above it) is not there, rather
    than that an import inside it failed."""
    missing = exc.name or ""
    return isinstance(exc, ModuleNotFoundError) and (module_name == missing or module_name.startswith(missing + "."))


def _type_hints(item: Callable) -> dict[str, Any]:
    """Resolved annotations of what receives the parameters (constructor, function or __call__);
    empty when they cannot be resolved, and then values pass unchecked."""
    target = item.__init__ if inspect.isclass(item) else item
    if not (inspect.isfunction(target) or inspect.ismethod(target)):
        target = getattr(type(item), "__call__", target)
    try:
        return typing.get_type_hints(target)
    except Exception:
        return {}


def _type_text(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return tp if isinstance(tp, str) else getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _describe(item: Callable) -> str:
    return f"{getattr(item, '__module__', '?')}.{getattr(item, '__qualname__', repr(item))}"


def _broken(kind: str, name: str, value: str, exc: BaseException) -> Callable:
    message = f"{kind} {name!r} from entry point {value!r} failed to load: {failure(exc)}"

    def fail(*_args, **_kwargs):
        raise ConfigError(message)

    fail.__doc__ = f"(broken plug-in: {exc})"
    fail.load_error = message  # type: ignore[attr-defined]  (get() refuses it by name, before a run starts)
    return fail


def summary(item: Callable) -> str:
    """First line of an item's docstring, for listings."""
    doc = (getattr(item, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


# ---------------------------------------------------------------- the global random generators

GLOBAL_GENERATORS = ("python's random module", "numpy's global generator (np.random)",
                     "torch's global CPU generator (torch.rand and friends)")


def _global_states() -> tuple[Any, Any, torch.Tensor]:
    # numpy's as a dict, whatever its bit generator: MT19937's key array and pos, the cached gaussian
    return random.getstate(), np.random.get_state(legacy=False), torch.random.get_rng_state()


def _same(a: Any, b: Any) -> bool:
    """Equality of nested state dicts holding numpy arrays."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    return a == b


class GlobalRandomWatch:
    """The states of python's, numpy's and torch's global CPU generators when it is made;
    :meth:`check` stops the run if any has moved since.

    A run's random numbers must all come from its seed-derived generators, or two runs with one
    seed differ: an operator or schedule that draws from (or reseeds) a global generator is
    stopped, named. A watch costs about 0.1-0.2 ms, most of it numpy's copy of its 624-word state
    (``np.random.get_state``), paid once per mutated pair and once per generation for the
    schedule: at most 11 times in a paper-setting generation of 100-200 ms. Not seen: numba's own
    generator inside jitted code, CUDA generators, and an unseeded ``np.random.default_rng()``.
    """

    def __init__(self) -> None:
        self._states = _global_states()

    def check(self, who: str, fix: str) -> None:
        """Raise an OperatorError naming ``who`` and ``fix`` if a global generator has moved."""
        (py, npy, tch), after = self._states, _global_states()
        same = (after[0] == py, _same(after[1], npy), torch.equal(after[2], tch))
        touched = [label for label, ok in zip(GLOBAL_GENERATORS, same) if not ok]
        if touched:
            raise OperatorError(f"{who} used {' and '.join(touched)}; {fix}")
