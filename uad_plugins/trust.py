"""Settings someone else wrote (a checkpoint's model, data and synthesizer blocks): checked before anything runs.

A checkpoint that loads with ``torch.load(weights_only=True)`` holds only plain data, but plain data can still
*name* code: ``{"class_path": "subprocess.Popen", "init_args": {"args": [...]}}``. While :func:`untrusted` is
active, every class path the factory meets is

1. accepted only when it names a registered component of the asked kind, or lies under one of that kind's allowed
   module prefixes (:data:`ALLOWED_PREFIXES`) -- checked *before* the module is imported;
2. imported and checked to derive from the kind's base class *before* it is called;
3. given only plain data (str, numbers, bool, None, lists, string-keyed mappings) whose names its signature takes.

Anything else is an :class:`UntrustedSettingError` (exit status 2) naming the field and where it came from.
Installed plugins are trusted code: a registered ``plugin:<name>`` is built as usual. This module is light: it
imports the registry (never torch) and imports a checked class only after the checks above.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import inspect
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

from uad_plugins.errors import ConfigError
from uad_plugins.imports import import_object
from uad_plugins.specs import SPEC_TYPES

__all__ = ["ALLOWED_PREFIXES", "BASE_CLASSES", "UntrustedSettingError", "as_plain", "check_init_args", "checked_class",
           "is_bookkeeping_key", "is_untrusted", "option_names", "untrusted", "untrusted_origin"]

#: module prefixes whose classes a stored setting may name, per kind (registered components are always allowed)
ALLOWED_PREFIXES: dict[str, tuple[str, ...]] = {
    "model": ("anomalib.models.",),
    "data": ("anomalib.data.", "uad_plugins.data."),
    "synthesizer": (),
    "metric": ("anomalib.metrics.",),
    "transform": ("torchvision.transforms.",),
}
#: the class every stored class path of a kind must derive from (the registered kinds: their spec's base class)
BASE_CLASSES: dict[str, str] = {
    **{kind: spec_type.base_class for kind, spec_type in SPEC_TYPES.items()},
    "data": "anomalib.data:AnomalibDataModule",
    "transform": "torch.nn:Module",
}
_NOUNS = {"data": "datamodule"}
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")
_MAX_DEPTH = 16
_MAX_ITEMS = 100_000
_MAX_TEXT = 1 << 20

_origin: contextvars.ContextVar[str | None] = contextvars.ContextVar("uad_untrusted_origin", default=None)


class UntrustedSettingError(ConfigError):
    """A stored setting (checkpoint) that names code or data we will not run or use."""


@contextlib.contextmanager
def untrusted(origin: str) -> Iterator[None]:
    """Inside the block, the factory checks every class path and init arg as coming from ``origin``
    (e.g. ``"checkpoint results/.../model.ckpt"``)."""
    token = _origin.set(origin)
    try:
        yield
    finally:
        _origin.reset(token)


def untrusted_origin() -> str | None:
    """Where the settings being built come from, or ``None`` when the caller (a user) is trusted."""
    return _origin.get()


def is_untrusted() -> bool:
    """True inside :func:`untrusted`."""
    return _origin.get() is not None


def _refuse(field: str, origin: str | None, what: str) -> UntrustedSettingError:
    source = origin or "stored settings"
    return UntrustedSettingError(
        f"{source}: field '{field}' {what}; nothing was imported or run.",
        hint="The file was not written by 'uad fit', was edited, or needs a component that is not installed. "
             "Use a checkpoint you trust, or pass the setting yourself on the command line (e.g. --data ...).")


def _registered_class_paths(kind: str) -> set[str]:
    if kind not in ("model", "synthesizer", "metric"):
        return set()
    from uad_plugins.registry import get_registry

    return {spec.class_path for spec in get_registry().list(kind)}


def checked_class(kind: str, class_path: Any, *, field: str, origin: str | None = None) -> type:
    """The class a stored ``class_path`` names, imported only after it is known to be allowed for ``kind``.

    Raises :class:`UntrustedSettingError` when the path is malformed, not registered and not under an allowed
    prefix, cannot be imported, or does not derive from the kind's base class.
    """
    origin = origin or untrusted_origin()
    if not isinstance(class_path, str) or not _DOTTED.match(class_path):
        raise _refuse(field, origin, f"is not a dotted class path ({str(class_path)[:80]!r})")
    allowed = class_path in _registered_class_paths(kind) or any(
        class_path.startswith(prefix) for prefix in ALLOWED_PREFIXES[kind])
    noun = _NOUNS.get(kind, kind)
    if not allowed:
        where = (f"only registered {noun}s and classes under {', '.join(ALLOWED_PREFIXES[kind])} are allowed"
                 if ALLOWED_PREFIXES[kind] else f"only registered {noun}s are allowed")
        raise _refuse(field, origin, f"names '{class_path}', which is not an allowed {noun} ({where})")
    try:
        cls = import_object(class_path)
    except (ImportError, AttributeError) as exc:
        raise _refuse(field, origin, f"names '{class_path}', which cannot be imported ({exc})") from exc
    base = import_object(BASE_CLASSES[kind])
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise _refuse(field, origin, f"names '{class_path}', which is not a {noun} (it does not derive from "
                                     f"{BASE_CLASSES[kind]})")
    return cls


def check_plain(value: Any, *, field: str, origin: str | None = None, depth: int = 0,
                components: bool = True) -> None:
    """Plain data only: str, int, float, bool, None, lists/tuples and string-keyed mappings, of bounded size.

    With ``components``, a mapping with a ``class_path`` key is a nested component to be built: allowed only for
    torchvision transforms, checked like a top-level class (see :func:`checked_class`). Without, it is just data
    (records that are only read, never built).
    """
    origin = origin or untrusted_origin()
    if depth > _MAX_DEPTH:
        raise _refuse(field, origin, f"is nested deeper than {_MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, int, float)):
        return
    if isinstance(value, str):
        if len(value) > _MAX_TEXT:
            raise _refuse(field, origin, f"holds a string of {len(value)} characters")
        return
    if isinstance(value, (list, tuple)):
        if len(value) > _MAX_ITEMS:
            raise _refuse(field, origin, f"holds a list of {len(value)} items")
        for i, item in enumerate(value):
            check_plain(item, field=f"{field}[{i}]", origin=origin, depth=depth + 1, components=components)
        return
    if isinstance(value, Mapping):
        if len(value) > _MAX_ITEMS:
            raise _refuse(field, origin, f"holds a mapping of {len(value)} keys")
        for key in value:
            if not isinstance(key, str):
                raise _refuse(field, origin, f"has a non-string key {key!r:.40}")
        if components and "class_path" in value:
            if not set(value) <= {"class_path", "init_args"}:
                raise _refuse(field, origin, f"mixes a class_path with other keys {sorted(value)}")
            cls = checked_class("transform", value["class_path"], field=f"{field}.class_path", origin=origin)
            check_init_args(cls, value.get("init_args") or {}, field=f"{field}.init_args", origin=origin,
                            depth=depth + 1)
            return
        for key, item in value.items():
            check_plain(item, field=f"{field}.{key}", origin=origin, depth=depth + 1, components=components)
        return
    raise _refuse(field, origin, f"holds a {type(value).__name__}, not plain data")


def is_bookkeeping_key(key: Any) -> bool:
    """A dunder key (``__path__``): a config parser's bookkeeping, never a setting to record."""
    return isinstance(key, str) and key.startswith("__") and key.endswith("__")


def as_plain(value: Any, *, field: str) -> Any:
    """A copy of ``value`` as plain data, the only kind a checkpoint may hold (see :func:`check_plain`): paths
    become strings, enums their values, tuples lists; dunder keys (a config parser's bookkeeping, e.g.
    jsonargparse's ``__path__``) are dropped. Anything else is a :class:`ConfigError` naming ``field``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, enum.Enum):
        return as_plain(value.value, field=field)
    if isinstance(value, (list, tuple)):
        return [as_plain(item, field=f"{field}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{field} has a non-string key {key!r:.40}; it cannot be recorded in a checkpoint.",
                                  hint="Use string keys.")
            if not is_bookkeeping_key(key):
                out[key] = as_plain(item, field=f"{field}.{key}")
        return out
    raise ConfigError(f"{field} holds a {type(value).__name__}, which cannot be recorded in a checkpoint (plain data "
                      "only: strings, numbers, booleans, None, lists and string-keyed mappings).",
                      hint="Pass the value as a string or number.")


def option_names(cls: type) -> tuple[set[str], bool]:
    """Keyword options of ``cls``: a constructor that passes ``**kwargs`` on adds its parents' options; only a
    chain that ends in ``**kwargs`` with no parent to take them accepts any name."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is object:
            return names, True
        if "__init__" not in vars(klass):
            continue
        try:
            params = inspect.signature(klass.__init__).parameters
        except (TypeError, ValueError):
            return names, True
        names |= {n for n, p in params.items() if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD,
                                                                               p.KEYWORD_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return names, False
    return names, True


def check_init_args(cls: type, init_args: Any, *, field: str, origin: str | None = None,
                    depth: int = 0) -> dict[str, Any]:
    """``init_args`` for ``cls`` from stored settings: a mapping of plain data whose names ``cls`` takes."""
    origin = origin or untrusted_origin()
    if not isinstance(init_args, Mapping):
        raise _refuse(field, origin, f"is a {type(init_args).__name__}, not a mapping of options")
    names, takes_any = option_names(cls)
    for key, value in init_args.items():
        if not isinstance(key, str) or (not takes_any and key not in names):
            raise _refuse(f"{field}.{key}", origin, f"is not an option of {cls.__name__} "
                                                   f"(its options: {', '.join(sorted(names)) or 'none'})")
        check_plain(value, field=f"{field}.{key}", origin=origin, depth=depth + 1)
    return dict(init_args)
