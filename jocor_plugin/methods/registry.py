"""Methods by name, as timm does models: ``@register_method`` / ``create_method`` / ``list_methods``."""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable

from .base import Method

__all__ = ["register_method", "create_method", "list_methods", "method_class", "describe_method"]

_METHODS: dict[str, type[Method]] = {}


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator that makes a method selectable in recipes as ``method.name=<name>``."""

    def wrap(cls: type[Method]) -> type[Method]:
        if name in _METHODS and _METHODS[name] is not cls:
            raise ValueError(f"A method named '{name}' is already registered ({_METHODS[name]}).")
        _METHODS[name] = cls
        return cls

    return wrap


def list_methods() -> list[str]:
    return sorted(_METHODS)


def method_class(name: str) -> type[Method]:
    if name not in _METHODS:
        match = difflib.get_close_matches(name, _METHODS, n=1)
        hint = f" Did you mean '{match[0]}'?" if match else ""
        raise KeyError(f"Unknown method '{name}'.{hint} Registered: {', '.join(list_methods())}.")
    return _METHODS[name]


def create_method(name: str, **kwargs: Any) -> Method:
    """Build a registered method; ``kwargs`` go to its constructor."""
    return method_class(name)(**kwargs)


def describe_method(name: str) -> str:
    """'name: one-line description (constructor arguments)'."""
    cls = method_class(name)
    doc = (inspect.getdoc(cls) or "").splitlines()
    params = [str(p) for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
    return f"{name}: {doc[0] if doc else ''} ({', '.join(params) or 'no arguments'})"
