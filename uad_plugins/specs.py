"""Spec records: what a plugin hands to the core for each component it provides.

A spec is a frozen dataclass. Authors set ``name``, ``target``, ``summary`` and the optional fields; the core
stamps the provenance fields (``plugin``, ``distribution``, ``version``, ``source``) after collection.
Nothing here imports torch: ``load()`` imports the target only when asked.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, ClassVar

from uad_plugins.errors import ComponentLoadError, InvalidSpecError
from uad_plugins.imports import import_object

__all__ = ["KINDS", "SPEC_TYPES", "ComponentSpec", "MetricSpec", "ModelSpec", "SynthesizerSpec"]

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
TARGET_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
KNOWN_TAGS = frozenset({"image", "pointcloud", "signal", "feature", "multi-class", "exportable", "provisional"})


@dataclass(frozen=True)
class ComponentSpec:
    """Fields shared by every kind of component.

    Attributes:
        name: registry key, lower snake case, explicit (never derived from a class name).
        target: ``"package.module:Class"`` imported lazily by :meth:`load`.
        summary: one line shown by ``uad plugins list``.
        config: packaged default ``init_args``: ``"package:relative/path.yaml"`` or an inline mapping.
        aliases: other names that resolve to this component.
        tags: free labels; the known ones are image, pointcloud, signal, feature, multi-class, exportable, provisional.
        paper, homepage, license: provenance.
        test_config: tiny ``init_args`` for the contract test (same forms as ``config``), layered over ``config``.
        plugin, distribution, version, source: stamped by the core (source: builtin, entrypoint or local).
    """

    kind: ClassVar[str] = "component"
    base_class: ClassVar[str] = ""

    name: str
    target: str
    summary: str = ""
    config: str | Mapping[str, Any] | None = None
    aliases: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    paper: str | None = None
    homepage: str | None = None
    license: str | None = None
    test_config: str | Mapping[str, Any] | None = None
    plugin: str | None = field(default=None, compare=False)
    distribution: str | None = field(default=None, compare=False)
    version: str | None = field(default=None, compare=False)
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for label, value in [("name", self.name), *[("alias", a) for a in self.aliases]]:
            if not isinstance(value, str) or not NAME_PATTERN.match(value):
                raise InvalidSpecError(
                    f"{self.kind} spec has an invalid {label} {value!r}: names are lower snake case "
                    f"(pattern {NAME_PATTERN.pattern}), for example 'my_model'."
                )
        if not isinstance(self.target, str) or not TARGET_PATTERN.match(self.target):
            raise InvalidSpecError(
                f"{self.kind} spec {self.name!r} has an invalid target {self.target!r}: "
                "expected 'package.module:ClassName'."
            )
        for label in ("config", "test_config"):
            value = getattr(self, label)
            if value is not None and not isinstance(value, (str, Mapping)):
                raise InvalidSpecError(
                    f"{self.kind} spec {self.name!r}: {label} must be 'package:file.yaml' or a mapping.")
            if isinstance(value, str) and ":" not in value:
                raise InvalidSpecError(
                    f"{self.kind} spec {self.name!r}: {label} {value!r} must be 'package:relative/path.yaml'.")
        object.__setattr__(self, "aliases", tuple(self.aliases))
        object.__setattr__(self, "tags", tuple(self.tags))

    # ------------------------------------------------------------------ provenance
    def stamped(self, *, plugin: str, distribution: str, version: str, source: str) -> ComponentSpec:
        """A copy of this spec with the provenance fields set by the core."""
        return dataclasses.replace(self, plugin=plugin, distribution=distribution, version=version, source=source)

    @property
    def reference(self) -> str:
        """How a user names this component: ``plugin:<name>``."""
        return f"plugin:{self.name}"

    @property
    def provider(self) -> str:
        """Human-readable provenance, e.g. ``pbas (builtin, uad_plugins 0.1.0)``."""
        dist = f"{self.distribution} {self.version}" if self.distribution else "unknown distribution"
        return f"{self.plugin} ({self.source}, {dist})"

    @property
    def class_path(self) -> str:
        """The dotted class path jsonargparse understands (``package.module.Class``)."""
        module, _, attr = self.target.partition(":")
        return f"{module}.{attr}"

    # ------------------------------------------------------------------ loading
    def load(self) -> type:
        """Import the target and check that it has the base class of its kind.

        Importing the target runs plugin code: whatever it raises, ``SystemExit`` included (a module calling
        ``sys.exit()``), becomes a :class:`ComponentLoadError`; only ``KeyboardInterrupt`` propagates.
        """
        try:
            obj: Any = import_object(self.target)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # plugin code: SystemExit/GeneratorExit are isolated too
            what = (f"importing it called sys.exit({'' if exc.code is None else repr(exc.code)})"
                    if isinstance(exc, SystemExit) else f"{type(exc).__name__}: {exc}")
            raise ComponentLoadError(
                f"{self.kind} '{self.name}' from plugin {self.provider} could not be imported from "
                f"'{self.target}': {what}",
                hint=f"Check that the plugin's dependencies are installed; 'uad plugins show {self.plugin}' "
                "gives details.",
            ) from exc
        base = import_object(self.base_class) if self.base_class else None
        if base is not None and not (isinstance(obj, type) and issubclass(obj, base)):
            raise ComponentLoadError(
                f"{self.kind} '{self.name}' from plugin {self.provider}: target {self.target} is not a subclass "
                f"of {self.base_class}.",
                hint=f"A {self.kind} target must be a class deriving from {self.base_class}.",
            )
        return obj

    def default_init_args(self) -> dict[str, Any]:
        """The packaged default ``init_args`` (empty when the spec has none)."""
        return self._read_config(self.config)

    def test_init_args(self) -> dict[str, Any]:
        """Tiny ``init_args`` for contract tests: ``test_config`` over the packaged defaults."""
        return {**self.default_init_args(), **self._read_config(self.test_config)}

    def _read_config(self, config: str | Mapping[str, Any] | None) -> dict[str, Any]:
        if config is None:
            return {}
        if isinstance(config, Mapping):
            return dict(config)
        package, _, path = config.partition(":")
        import yaml  # PyYAML: light, and only needed when defaults are read

        try:
            text = resources.files(package).joinpath(path).read_text(encoding="utf-8")
        except (ModuleNotFoundError, FileNotFoundError, OSError) as exc:
            raise ComponentLoadError(
                f"{self.kind} '{self.name}' from plugin {self.provider}: packaged config {config!r} "
                f"cannot be read: {exc}",
                hint="Plugin packages must ship their YAML as package data.",
            ) from exc
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ComponentLoadError(f"{self.kind} '{self.name}': packaged config {config!r} is not a mapping.")
        return data.get("init_args", data)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (used by ``uad plugins list --json`` and ``plugins.json``)."""
        out = {"name": self.name, "kind": self.kind}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else (
                dict(value) if isinstance(value, Mapping) else value)
        out["reference"] = self.reference
        return out


@dataclass(frozen=True)
class ModelSpec(ComponentSpec):
    """A model: a Lightning module deriving from anomalib's ``AnomalibModule``."""

    kind: ClassVar[str] = "model"
    base_class: ClassVar[str] = "anomalib.models.components:AnomalibModule"


@dataclass(frozen=True)
class SynthesizerSpec(ComponentSpec):
    """A synthesizer: makes synthetic anomalies (derives from ``uad_plugins.synth:Synthesizer``)."""

    kind: ClassVar[str] = "synthesizer"
    base_class: ClassVar[str] = "uad_plugins.synth.base:Synthesizer"


@dataclass(frozen=True)
class MetricSpec(ComponentSpec):
    """A metric: an anomalib ``AnomalibMetric`` subclass, with its default fields and prefix in ``config``."""

    kind: ClassVar[str] = "metric"
    base_class: ClassVar[str] = "anomalib.metrics:AnomalibMetric"


SPEC_TYPES: dict[str, type[ComponentSpec]] = {s.kind: s for s in (ModelSpec, SynthesizerSpec, MetricSpec)}
KINDS: tuple[str, ...] = tuple(SPEC_TYPES)
