"""One door for construction: ``create_model``, ``create_synthesizer``, ``create_metric``, ``list_components``.

The CLI and the Python API both come through here. A reference is ``plugin:<name>`` (resolved in the registry,
its packaged defaults layered under the caller's arguments), a dotted class path, or a mapping
``{"class_path": ..., "init_args": {...}}``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from uad_plugins.errors import ComponentLoadError, ConfigError
from uad_plugins.registry import get_registry
from uad_plugins.specs import SPEC_TYPES, ComponentSpec

__all__ = [
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


def resolve_component(kind: str, reference: str | Mapping[str, Any], init_args: Mapping[str, Any] | None = None,
                      *, flag: str | None = None) -> tuple[type, dict[str, Any], ComponentSpec | None]:
    """Class, merged init args (packaged defaults < mapping's init_args < ``init_args``) and spec of a reference."""
    extra: dict[str, Any] = {}
    if isinstance(reference, Mapping):
        if "class_path" not in reference:
            raise ConfigError(f"a {kind} given as a mapping needs a 'class_path' key, got {sorted(reference)}.")
        extra = dict(reference.get("init_args") or {})
        reference = str(reference["class_path"])
    spec = get_registry().resolve(kind, reference, flag=flag)
    if spec is not None:
        cls = spec.load()
        defaults = spec.default_init_args()
    else:
        cls = _import_class(kind, reference)
        defaults = {}
    merged = {**defaults, **extra, **dict(init_args or {})}
    return cls, merged, spec


def _create(kind: str, reference: str | Mapping[str, Any], init_args: dict[str, Any], flag: str) -> Any:
    cls, merged, spec = resolve_component(kind, reference, init_args, flag=flag)
    merged = {k: _instantiate_nested(v) for k, v in merged.items()}
    try:
        obj = cls(**merged)
    except TypeError as exc:
        name = spec.reference if spec else reference
        raise ConfigError(f"cannot build {kind} {name} with {sorted(merged)}: {exc}",
                          hint=f"'uad plugins show {spec.name if spec else name}' lists its options.") from exc
    if spec is not None:
        obj._uad_spec = spec  # provenance for plugins.json and export manifests
    return obj


def create_model(reference: str | Mapping[str, Any], **init_args: Any) -> Any:
    """Build a model: ``create_model("plugin:pbas", layers=["blocks.2", "blocks.4"])``."""
    return _create("model", reference, init_args, "--model")


def create_synthesizer(reference: str | Mapping[str, Any], **init_args: Any) -> Any:
    """Build a synthesizer: ``create_synthesizer("plugin:perlin", probability=1.0)``."""
    return _create("synthesizer", reference, init_args, "--synthesizer")


def create_metric(reference: str | Mapping[str, Any], **init_args: Any) -> Any:
    """Build a metric: ``create_metric("plugin:image_auroc")``."""
    return _create("metric", reference, init_args, "--metrics")


def _import_class(kind: str, dotted: str) -> type:
    module_name, _, attr = dotted.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:
        raise ComponentLoadError(f"{kind} class '{dotted}' cannot be imported: {type(exc).__name__}: {exc}",
                                 hint="Give 'plugin:<name>' or an importable 'package.module.Class'.") from exc
    base = SPEC_TYPES[kind].base_class
    if base:
        mod, _, name = base.partition(":")
        base_cls = getattr(importlib.import_module(mod), name)
        if not (isinstance(cls, type) and issubclass(cls, base_cls)):
            raise ComponentLoadError(f"'{dotted}' is not a {kind}: it does not derive from {base}.")
    return cls


def _instantiate_nested(value: Any) -> Any:
    """Build ``{"class_path": ..., "init_args": ...}`` values (as jsonargparse would) for nested components."""
    if isinstance(value, Mapping) and "class_path" in value and set(value) <= {"class_path", "init_args"}:
        module_name, _, attr = str(value["class_path"]).rpartition(".")
        cls = getattr(importlib.import_module(module_name), attr)
        args = {k: _instantiate_nested(v) for k, v in dict(value.get("init_args") or {}).items()}
        return cls(**args)
    if isinstance(value, list):
        return [_instantiate_nested(v) for v in value]
    return value
