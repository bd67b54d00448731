"""One door for construction: ``create_model``, ``create_synthesizer``, ``create_metric``, ``create_datamodule``,
``list_components``.

The CLI and the Python API both come through here. A reference is ``plugin:<name>`` (resolved in the registry,
its packaged defaults layered under the caller's arguments), a dotted class path, or a mapping
``{"class_path": ..., "init_args": {...}}``. Inside :func:`uad_plugins.trust.untrusted` (settings read from a
checkpoint) a dotted class path is checked before it is imported and init args must be plain data the class takes.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Mapping
from typing import Any

from uad_plugins.errors import ComponentLoadError, ConfigError, WeightsError
from uad_plugins.imports import import_object
from uad_plugins.registry import get_registry
from uad_plugins.specs import SPEC_TYPES, ComponentSpec
from uad_plugins.trust import check_init_args, checked_class, is_untrusted

__all__ = [
    "create_datamodule",
    "create_metric",
    "create_model",
    "create_synthesizer",
    "get_spec",
    "list_components",
    "resolve_component",
]


def list_components(kind: str | None = None, pattern: str | None = None) -> list[ComponentSpec]:
    """Registered components, optionally of one ``kind`` and matching a glob ``pattern`` (``'p*'``)."""
    return get_registry().list(kind, pattern)


def get_spec(kind: str, reference: str, *, flag: str | None = None) -> ComponentSpec | None:
    """The spec a reference points to, or ``None`` for a dotted class path."""
    return get_registry().resolve(kind, reference, flag=flag)


#: what names a component: ``plugin:<name>``, a dotted class path, a ``{class_path, init_args}`` mapping, or the
#: spec a caller already resolved (the CLI resolves a name once and hands the spec on)
Reference = str | Mapping[str, Any] | ComponentSpec


def resolve_component(kind: str, reference: Reference, init_args: Mapping[str, Any] | None = None,
                      *, flag: str | None = None) -> tuple[type, dict[str, Any], ComponentSpec | None]:
    """Class, merged init args (packaged defaults < mapping's init_args < ``init_args``) and spec of a reference."""
    extra: dict[str, Any] = {}
    spec: ComponentSpec | None
    if isinstance(reference, ComponentSpec):
        if reference.kind != kind:
            raise ConfigError(f"{reference.reference} is a {reference.kind}, not a {kind}.")
        spec = reference
    else:
        if isinstance(reference, Mapping):
            if "class_path" not in reference:
                raise ConfigError(f"a {kind} given as a mapping needs a 'class_path' key, got {sorted(reference)}.")
            extra = dict(reference.get("init_args") or {})
            reference = str(reference["class_path"])
        reference = get_registry().expand(kind, reference)  # Padim: anomalib's class path
        spec = get_registry().resolve(kind, reference, flag=flag)
    if spec is not None:
        cls = spec.load()
        defaults = spec.default_init_args()
    else:
        cls = _import_class(kind, str(reference), field=flag or kind)
        defaults = {}
    given = {**extra, **dict(init_args or {})}
    if is_untrusted():
        check_init_args(cls, given, field=f"{flag or kind} init_args")
    return cls, {**defaults, **given}, spec


def _create(kind: str, reference: Reference, init_args: dict[str, Any], flag: str) -> Any:
    cls, merged, spec = resolve_component(kind, reference, init_args, flag=flag)
    merged = {k: _instantiate_nested(v, field=f"{flag}.{k}") for k, v in merged.items()}
    name = spec.reference if spec else reference
    try:
        if kind == "model" and spec is None:  # anomalib's models fetch ImageNet weights when built
            from uad_plugins.components.backbones import hub_offline_unless_reachable

            with hub_offline_unless_reachable():  # cached weights load; missing ones fail at once, not after retries
                obj = cls(**merged)
        else:
            obj = cls(**merged)
    except (TypeError, ValueError) as exc:  # options the class does not take, or values it refuses
        raise ConfigError(f"cannot build {kind} {name} with {sorted(merged)}: {exc}",
                          hint=f"'uad plugins show {spec.name if spec else name}' lists its options.") from exc
    except Exception as exc:
        if not _is_download_failure(exc):
            raise
        raise WeightsError(
            f"cannot build {kind} {name}: it downloads pretrained weights when built, and they cannot be had "
            f"offline ({type(exc).__name__}).",
            hint="Build it without them (anomalib models: --model.pre_trained false), or run once where the model "
                 "hub is reachable so the weights are cached.") from exc
    return obj


#: modules whose errors mean "a download failed" (model hubs, HTTP clients)
_DOWNLOAD_ERROR_MODULES = ("huggingface_hub", "requests", "urllib3", "urllib", "http", "socket")


def _is_download_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) is a failed download."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionError) or \
                type(current).__module__.split(".", 1)[0] in _DOWNLOAD_ERROR_MODULES:
            return True
        current = current.__cause__ or current.__context__
    return False


def create_model(reference: Reference, **init_args: Any) -> Any:
    """Build a model: ``create_model("plugin:pbas", layers=["blocks.2", "blocks.4"])``."""
    return _create("model", reference, init_args, "--model")


def create_synthesizer(reference: Reference, **init_args: Any) -> Any:
    """Build a synthesizer: ``create_synthesizer("plugin:perlin", probability=1.0)``."""
    return _create("synthesizer", reference, init_args, "--synthesizer")


def create_metric(reference: Reference, **init_args: Any) -> Any:
    """Build a metric: ``create_metric("plugin:image_auroc")``."""
    return _create("metric", reference, init_args, "--metrics")


def create_datamodule(reference: str | Mapping[str, Any], **init_args: Any) -> Any:
    """Build a datamodule: a short name (``"MVTecAD"``, ``"Folder"``, ``"UadDemo"``, ``"MitBihBeats"``), a dotted
    class path, or ``{"class_path": ..., "init_args": {...}}`` (the form a checkpoint records).

    Without a ``num_workers`` argument the datamodule gets its own default capped at the cores available."""
    extra: dict[str, Any] = {}
    if isinstance(reference, Mapping):
        if "class_path" not in reference:
            raise ConfigError(f"data given as a mapping needs a 'class_path' key, got {sorted(reference)}.")
        extra = reference.get("init_args") or {}
        if not isinstance(extra, Mapping):
            raise ConfigError(f"data init_args must be a mapping, got {type(extra).__name__}.")
        reference = reference["class_path"]
    cls = _datamodule_class(reference)
    given = {**extra, **init_args}
    if is_untrusted():
        check_init_args(cls, given, field="data.init_args")
    given = with_default_workers(cls, given)
    built = {k: _instantiate_nested(v, field=f"data.init_args.{k}") for k, v in given.items()}
    try:
        return cls(**built)
    except TypeError as exc:
        raise ConfigError(f"cannot build data {cls.__module__}.{cls.__qualname__}: {exc}",
                          hint=_options_hint(cls)) from exc


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def with_default_workers(cls: type, init_args: Mapping[str, Any]) -> dict[str, Any]:
    """``init_args`` with ``num_workers`` filled in where the caller gave none: the class's default, but never more
    than the cores available (anomalib's default of 8 oversubscribes a small machine and makes Lightning warn). A
    value the caller gave is kept as it is."""
    args = dict(init_args)
    if "num_workers" in args:
        return args
    try:
        param = inspect.signature(cls).parameters.get("num_workers")
    except (TypeError, ValueError):
        return args
    if param is None or not isinstance(param.default, int) or isinstance(param.default, bool):
        return args
    args["num_workers"] = min(param.default, available_cores())
    return args


#: where short datamodule names (``MVTecAD``, ``UadDemo``, ``MitBihBeats``) are looked up, in this order
DATAMODULE_NAMESPACES = ("anomalib.data", "uad_plugins.data", "uad_plugins.data.signals")


def _datamodule_class(reference: Any) -> type:
    if not isinstance(reference, str) or not reference.strip():
        raise ConfigError(f"data class_path must be a name or a dotted class path, got {reference!r:.80}.")
    name = reference.strip()
    if "." in name:
        if is_untrusted():
            return checked_class("data", name, field="data.class_path")
        return _import_class("data", name, field="--data")
    for namespace in DATAMODULE_NAMESPACES:
        cls = getattr(importlib.import_module(namespace), name, None)
        if isinstance(cls, type):
            return _check_base("data", name, cls)
    raise ConfigError(f"unknown datamodule '{name}'.",
                      hint="Give a datamodule name such as MVTecAD, Folder, UadDemo, MitBihBeats, PtbXl, "
                           "SignalFolder, or a dotted class path.")


def _options_hint(cls: type) -> str:
    """"Its options: a, b, c." for a class ('' when its signature cannot be read)."""
    import inspect

    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return ""
    names = [n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return f"Its options: {', '.join(names)}." if names else ""


#: base class of each kind built here (the registered kinds: their spec's base class)
_BASES = {**{kind: spec_type.base_class for kind, spec_type in SPEC_TYPES.items()},
          "data": "anomalib.data:AnomalibDataModule"}


def _import_class(kind: str, dotted: str, *, field: str | None = None) -> type:
    """The class a dotted path names, with its base class checked (checked before import when untrusted)."""
    if is_untrusted():
        return checked_class(kind, dotted, field=field or kind)
    try:
        cls = import_object(dotted)
    except Exception as exc:
        raise ComponentLoadError(f"{kind} class '{dotted}' cannot be imported: {type(exc).__name__}: {exc}",
                                 hint="Give 'plugin:<name>' or an importable 'package.module.Class'.") from exc
    return _check_base(kind, dotted, cls)


def _check_base(kind: str, dotted: str, cls: Any) -> type:
    base = _BASES.get(kind)
    if base:
        base_cls = import_object(base)
        if not (isinstance(cls, type) and issubclass(cls, base_cls)):
            raise ComponentLoadError(f"'{dotted}' is not a {kind}: it does not derive from {base}.")
    return cls


def _instantiate_nested(value: Any, *, field: str = "init_args") -> Any:
    """Build ``{"class_path": ..., "init_args": ...}`` values (as jsonargparse would) for nested components.

    Untrusted settings may only nest torchvision transforms (checked before import, see ``uad_plugins.trust``).
    """
    if isinstance(value, Mapping) and "class_path" in value and set(value) <= {"class_path", "init_args"}:
        dotted = str(value["class_path"])
        if is_untrusted():
            cls = checked_class("transform", dotted, field=f"{field}.class_path")
        else:
            cls = import_object(dotted)
        args = {k: _instantiate_nested(v, field=f"{field}.{k}") for k, v in dict(value.get("init_args") or {}).items()}
        return cls(**args)
    if isinstance(value, list):
        return [_instantiate_nested(v, field=f"{field}[{i}]") for i, v in enumerate(value)]
    return value
