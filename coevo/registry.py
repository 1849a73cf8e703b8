"""A typed name -> callable registry: decorator, 'module:attr' import paths, entry points.

Used for pruning operators (group ``coevo.operators``) and schedules (``coevo.schedules``).
Refuses name collisions; an unknown name fails with the list of known ones.
"""

from __future__ import annotations

import importlib
import inspect
from importlib import metadata
from typing import Callable, Generic, Iterator, TypeVar

from coevo.errors import ConfigError

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    def __init__(self, kind: str, config_key: str, entry_point_group: str) -> None:
        self.kind = kind
        self.config_key = config_key
        self.entry_point_group = entry_point_group
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
            except Exception as exc:  # a broken plug-in must not break coevo; report when named
                self._items.setdefault(ep.name, _broken(self.kind, ep.name, ep.value, exc))

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        self._load_entry_points()
        for name in sorted(self._items):
            yield name, self._items[name]

    def get(self, name: str) -> T:
        """Resolve a registered name, or import 'package.module:attribute'.

        A class (registered, imported or from an entry point) stands for "a small class with one
        method": it is instantiated with no arguments, once per call, and its instance is returned.
        """
        if ":" in name:
            return self._instantiate(name, self._import(name))
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
        return self._instantiate(name, item)

    def _instantiate(self, name: str, item: T) -> T:
        if not inspect.isclass(item):
            return item
        try:
            instance = item()
        except Exception as exc:
            raise ConfigError(f"{self.config_key} = {name!r}: class {item.__qualname__} must be constructible "
                              f"with no arguments ({type(exc).__name__}: {exc})") from None
        if not callable(instance):
            raise ConfigError(f"{self.config_key} = {name!r}: instances of class {item.__qualname__} are not "
                              f"callable; give it a __call__ method")
        return instance

    def _import(self, path: str) -> T:
        module_name, _, attr = path.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"{self.config_key} = {path!r}: cannot import module {module_name!r} ({exc})") from None
        try:
            item = getattr(module, attr)
        except AttributeError:
            raise ConfigError(f"{self.config_key} = {path!r}: module {module_name!r} has no attribute {attr!r}") from None
        if not callable(item):
            raise ConfigError(f"{self.config_key} = {path!r} is not callable")
        return item


def _describe(item: Callable) -> str:
    return f"{getattr(item, '__module__', '?')}.{getattr(item, '__qualname__', repr(item))}"


def _broken(kind: str, name: str, value: str, exc: Exception) -> Callable:
    message = f"{kind} {name!r} from entry point {value!r} failed to load: {exc}"

    def fail(*_args, **_kwargs):
        raise ConfigError(message)

    fail.__doc__ = f"(broken plug-in: {exc})"
    fail.load_error = message  # type: ignore[attr-defined]  (get() refuses it by name, before a run starts)
    return fail


def summary(item: Callable) -> str:
    """First line of an item's docstring, for listings."""
    doc = (getattr(item, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""
