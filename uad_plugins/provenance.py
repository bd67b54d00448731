"""Where a built component comes from: the spec behind an object, as ``plugins.json``, checkpoints and bundle
manifests record it.

Nothing is stored on the objects themselves: the spec is found from the reference the caller built the object
from, or else from the object's class (the one spec whose target it is).
"""

from __future__ import annotations

import importlib.metadata as md
from typing import Any

from uad_plugins.errors import UadError
from uad_plugins.registry import get_registry, parse_reference
from uad_plugins.specs import ComponentSpec

__all__ = ["class_path_of", "component_record", "spec_of"]


def class_path_of(obj: Any) -> str:
    """``package.module.Class`` of an object (or of a class)."""
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def spec_of(obj: Any, kind: str, reference: str | ComponentSpec | None = None) -> ComponentSpec | None:
    """The registered spec ``obj`` was built from: ``reference`` (a spec already resolved, or a ``plugin:<name>``)
    when its class is the object's, else the one spec whose target is the object's class; ``None`` when neither
    says.

    Best effort: a renamed or unloadable plugin gives ``None``, never an error.
    """
    cls = obj if isinstance(obj, type) else type(obj)
    registry = get_registry()
    try:
        spec = reference if isinstance(reference, ComponentSpec) else None
        if isinstance(reference, str) and parse_reference(reference)[0] is not None:
            spec = registry.resolve(kind, reference)
        if spec is not None:
            if spec.kind == kind and spec.class_path in (class_path_of(cls), _target_path(cls, spec)):
                return spec
        return registry.spec_for_class(kind, cls)
    except UadError:
        return None


def _target_path(cls: type, spec: ComponentSpec) -> str | None:
    """``spec.class_path`` when the spec's target re-exports ``cls`` under another module (anomalib's metrics)."""
    import sys

    module_name, _, attr = spec.target.partition(":")
    obj: Any = sys.modules.get(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part, None)
    return spec.class_path if obj is cls else None


def component_record(obj: Any, kind: str, reference: str | ComponentSpec | None = None) -> dict[str, Any]:
    """What plugins.json says about one component: reference, class and the distribution that provided it."""
    spec = spec_of(obj, kind, reference)
    record: dict[str, Any] = {"kind": kind, "class_path": class_path_of(obj)}
    if spec is not None:
        record.update(reference=spec.reference, name=spec.name, plugin=spec.plugin, source=spec.source,
                      distribution=spec.distribution, version=spec.version,
                      requirement=f"{spec.distribution}=={spec.version}")
    else:
        top = type(obj).__module__.split(".")[0]
        record.update(reference=record["class_path"], distribution=top, version=_dist_version(top))
    return record


def _dist_version(top_module: str) -> str | None:
    for name in (top_module, top_module.replace("_", "-")):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            continue
    return None
