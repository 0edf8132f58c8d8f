"""Methods by name, as timm does models: ``@register_method`` / ``create_method`` / ``list_methods``.

Third-party packages add methods without touching this one through the entry point group
``jocor_plugin.methods``: the entry point names a module whose ``@register_method`` classes
register on import, or a ``Method`` class, registered under the entry point's name.
"""
from __future__ import annotations

import inspect
import logging
from importlib.metadata import entry_points
from typing import Any, Callable

from ..core.errors import did_you_mean
from .base import Method

__all__ = ["register_method", "create_method", "list_methods", "method_class", "describe_method",
           "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "jocor_plugin.methods"
logger = logging.getLogger(__name__)

_METHODS: dict[str, type[Method]] = {}
_entry_points_loaded = False


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator that makes a method selectable in recipes as ``method.name=<name>``."""

    def wrap(cls: type[Method]) -> type[Method]:
        if name in _METHODS and _METHODS[name] is not cls:
            raise ValueError(f"A method named '{name}' is already registered ({_METHODS[name]}).")
        _METHODS[name] = cls
        return cls

    return wrap


def _load_entry_points() -> None:
    """Import the installed packages' methods, once, on the first lookup (not at import time,
    so a slow or broken plugin costs nothing until methods are listed or chosen)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()
        except Exception as err:  # a broken plugin must not take the built-in methods down with it
            logger.warning("Skipping method plugin %r (%s): %s: %s", ep.name, ep.value,
                           type(err).__name__, err)
            continue
        if inspect.isclass(loaded) and issubclass(loaded, Method) and loaded not in _METHODS.values():
            register_method(ep.name)(loaded)


def list_methods() -> list[str]:
    """Names of the registered methods, including installed plugins'."""
    _load_entry_points()
    return sorted(_METHODS)


def method_class(name: str) -> type[Method]:
    """The class registered as ``name`` (KeyError with a suggestion if there is none)."""
    _load_entry_points()
    if name not in _METHODS:
        raise KeyError(f"Unknown method '{name}'.{did_you_mean(name, _METHODS)} Registered: {', '.join(list_methods())}.")
    return _METHODS[name]


def create_method(name: str, **kwargs: Any) -> Method:
    """Build a registered method; ``kwargs`` go to its constructor."""
    return method_class(name)(**kwargs)


def _format_parameter(p: inspect.Parameter) -> str:
    # annotations are strings under `from __future__ import annotations`: show them unquoted
    ann = p.annotation if isinstance(p.annotation, str) else inspect.formatannotation(p.annotation)
    text = p.name if p.annotation is inspect.Parameter.empty else f"{p.name}: {ann}"
    return text if p.default is inspect.Parameter.empty else f"{text} = {p.default!r}"


def describe_method(name: str) -> str:
    """'name: one-line description (constructor arguments)'."""
    cls = method_class(name)
    doc = (inspect.getdoc(cls) or "").splitlines()
    params = []
    if cls.__init__ is not object.__init__:  # object's own (*args, **kwargs) means "no arguments"
        params = [_format_parameter(p) for p in inspect.signature(cls.__init__).parameters.values()
                  if p.name != "self"]
    return f"{name}: {doc[0] if doc else ''} ({', '.join(params) or 'no arguments'})"
