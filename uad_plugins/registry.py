"""The registry: every component spec the plugins provide, indexed per kind by name and alias.

Each hook implementation is called on its own, so every spec is stamped with the plugin that provided it and
one failing hook is isolated: whatever a hook raises, ``SystemExit`` and ``GeneratorExit`` included, becomes a
failure of that plugin (``failures()``); only ``KeyboardInterrupt`` propagates.

Order: hook implementations are called, and their specs ranked, by the manager's load rank (built-in <
entry point < local file, then load order; see ``UadPluginManager.load_rank``), never by pluggy's internal order.

Name clashes within a kind (two specs claiming one name or alias):

- ``get``/``resolve`` of the clashing name raise :class:`ComponentConflictError` naming every provider; nobody
  wins silently, so a third-party ``pbas`` can never stand in for the built-in one, nor the other way round.
- ``list`` shows one spec per name, the first by rank (so the built-in's), and with ``all_providers=True`` the
  others too; ``conflicts()`` and ``clashes_of(spec)`` say who clashes (``uad plugins list|show`` print them).
- An alias that is claimed by one spec only still resolves to that spec, even when its name clashes.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from uad_plugins.errors import (
    BadReferenceError,
    ComponentConflictError,
    PluginLoadError,
    UnknownComponentError,
    WrongKindError,
    close_matches,
)
from uad_plugins.manager import PluginFailure, UadPluginManager, describe_error, get_plugin_manager
from uad_plugins.specs import KINDS, SPEC_TYPES, ComponentSpec

__all__ = ["ANOMALIB_MODELS", "SCHEMES", "Registry", "anomalib_model_path", "get_registry", "parse_reference"]

SCHEMES = ("plugin",)
_SCHEME_RE = re.compile(r"^([A-Za-z][\w+.-]*):(.*)$")


#: where anomalib's models live: ``uad fit --model Padim`` means anomalib's Padim, as in anomalib's own CLI
ANOMALIB_MODELS = "anomalib.models"


def _squash(name: str) -> str:
    return name.replace("_", "").lower()


def anomalib_model_path(name: str) -> str | None:
    """The class path of anomalib's model called ``name`` (its class name, in any case, or anomalib's snake-case
    name: ``Padim``, ``patchcore``, ``reverse_distillation``), or ``None`` when anomalib has no such model. The path
    is the defining module's (``anomalib.models.image.padim.lightning_model.Padim``), as checkpoints record it.

    Imports ``anomalib.models`` only when asked (a bare name that is no registered plugin)."""
    if not name or not name.replace("_", "").isalnum():
        return None
    try:
        import importlib

        models = importlib.import_module(ANOMALIB_MODELS)
    except ImportError:
        return None
    wanted = _squash(name)
    for class_name in getattr(models, "__all__", ()):
        cls = getattr(models, class_name, None)
        if _squash(class_name) == wanted and isinstance(cls, type):
            return f"{cls.__module__}.{cls.__qualname__}"  # where it is defined: what checkpoints record
    return None


def parse_reference(value: str) -> tuple[str | None, str]:
    """Split ``"plugin:pbas"`` into ``("plugin", "pbas")``; a value without a scheme gives ``(None, value)``.

    A dotted class path (``pkg.mod.Class``) has no scheme. Windows drive letters are not references.
    """
    match = _SCHEME_RE.match(value.strip())
    if not match or "." in match.group(1) or len(match.group(1)) == 1:
        return None, value.strip()
    return match.group(1), match.group(2).strip()


@dataclass
class _KindIndex:
    ranked: list[ComponentSpec] = field(default_factory=list)  # every spec collected, best rank first
    specs: dict[str, ComponentSpec] = field(default_factory=dict)  # canonical name -> first spec by rank
    lookup: dict[str, ComponentSpec] = field(default_factory=dict)  # unambiguous name or alias -> its spec
    conflicts: dict[str, list[ComponentSpec]] = field(default_factory=dict)  # clashing key -> providers, by rank


class Registry:
    """All components of all kinds, built from a plugin manager."""

    def __init__(self, pm: UadPluginManager) -> None:
        self.pm = pm
        self.generation = -1
        self._index: dict[str, _KindIndex] = {}
        self.hook_failures: dict[str, PluginFailure] = {}  # plugin name -> failure in one of its hooks

    # ------------------------------------------------------------------ building
    def refresh(self) -> None:
        """Rebuild the index if plugins were (un)registered since the last build."""
        if self.generation == self.pm.generation:
            return
        self.hook_failures = {}
        self._index = {kind: self._collect(kind) for kind in KINDS}
        self.generation = self.pm.generation

    def _ranked_impls(self, kind: str) -> list:
        """The hook implementations of ``kind`` by load rank (pluggy's list order only breaks ties)."""
        impls = getattr(self.pm.hook, f"uad_register_{kind}s").get_hookimpls()
        order = sorted(range(len(impls)), key=lambda i: (self.pm.load_rank(self.pm.get_name(impls[i].plugin)), i))
        return [impls[i] for i in order]

    def _collect(self, kind: str) -> _KindIndex:
        spec_type = SPEC_TYPES[kind]
        collected: list[ComponentSpec] = []
        for impl in self._ranked_impls(kind):
            plugin_name = self.pm.get_name(impl.plugin) or "?"
            record = self.pm.records.get(plugin_name)
            try:
                items = _as_list(impl.function())
                for item in items:
                    if not isinstance(item, spec_type):
                        raise PluginLoadError(
                            f"uad_register_{kind}s returned {type(item).__name__} ({item!r:.60}); "
                            f"expected {spec_type.__name__} objects"
                        )
                specs = [
                    item.stamped(
                        plugin=plugin_name,
                        distribution=record.distribution if record else "unknown",
                        version=record.version if record else "?",
                        source=record.source if record else "unknown",
                    )
                    for item in items
                ]
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # plugin code: SystemExit/GeneratorExit are isolated too
                self.hook_failures[plugin_name] = _hook_failure(plugin_name, record, kind, exc)
                if self.pm.strict:
                    raise PluginLoadError(f"plugin {plugin_name}: {self.hook_failures[plugin_name].error}") from exc
                continue
            collected.extend(specs)
        return _build_index(collected)

    # ------------------------------------------------------------------ queries
    def list(self, kind: str | None = None, pattern: str | None = None, *,
             all_providers: bool = False) -> list[ComponentSpec]:
        """Specs sorted by kind and name; ``pattern`` is a glob on the name or an alias (``'p*'``).

        One spec per name: when plugins clash on a name, the first by load rank (a built-in before an entry point
        before a local file). ``all_providers=True`` also lists the other providers of a clashing name, right
        after the first. Either way, using a clashing name raises :class:`ComponentConflictError`.
        """
        self.refresh()
        kinds = [kind] if kind else list(KINDS)
        out: list[ComponentSpec] = []
        for k in kinds:
            self._check_kind(k)
            index = self._index[k]
            for name in sorted(index.specs):
                providers = [s for s in index.ranked if s.name == name] if all_providers else [index.specs[name]]
                for spec in providers:
                    if pattern is None or fnmatch.fnmatchcase(name, pattern) or any(
                        fnmatch.fnmatchcase(a, pattern) for a in spec.aliases
                    ):
                        out.append(spec)
        return out

    def conflicts(self) -> dict[tuple[str, str], list[ComponentSpec]]:
        """``(kind, name or alias)`` -> every spec claiming it, best load rank first."""
        self.refresh()
        return {(k, name): list(specs) for k in KINDS for name, specs in self._index[k].conflicts.items()}

    def clashes_of(self, spec: ComponentSpec) -> dict[str, list[ComponentSpec]]:
        """The names and aliases of ``spec`` (one from this registry) that other specs claim too -> all claimants."""
        self.refresh()
        return {key: list(specs) for key, specs in self._index[spec.kind].conflicts.items()
                if any(s is spec for s in specs)}

    def failures(self) -> dict[str, PluginFailure]:
        """Plugins that failed to load, plus plugins whose hooks raised."""
        self.refresh()
        return {**self.pm.failures, **self.hook_failures}

    def get(self, kind: str, name: str, *, flag: str | None = None) -> ComponentSpec:
        """The spec of ``kind`` called ``name`` (or an alias); clear errors for every way this can fail."""
        self.refresh()
        self._check_kind(kind)
        asked = f"{flag} plugin:{name}" if flag else f"plugin:{name}"
        index = self._index[kind]
        if name in index.conflicts:
            providers = index.conflicts[name]
            raise ComponentConflictError(
                f"{kind} name '{name}' (asked by {asked}) is provided by {len(providers)} plugins: "
                f"{_listing(providers)}.",
                hint=_conflict_hint(providers, flag or f"--{kind}"),
            )
        if name in index.lookup:
            return index.lookup[name]
        for other in KINDS:
            if other != kind and (name in self._index[other].lookup or name in self._index[other].conflicts):
                raise WrongKindError(
                    f"'{name}' (asked by {asked}) is a {other}, not a {kind}.",
                    hint=f"Use --{other if other != 'metric' else 'metrics'} plugin:{name}, or list the {kind}s "
                    f"with 'uad plugins list --kind {kind}'.",
                )
        raise UnknownComponentError(f"unknown {kind} '{name}' (asked by {asked}).", hint=self._unknown_hint(kind, name))

    def _unknown_hint(self, kind: str, name: str) -> str:
        known = list(self._index[kind].lookup)
        lines = []
        guesses = close_matches(name, known)
        if guesses:
            lines.append("Did you mean: " + ", ".join(f"plugin:{g}" for g in guesses) + "?")
        available = ", ".join(sorted(self._index[kind].specs)) or "none"
        lines.append(f"Available {kind}s: {available} (see 'uad plugins list --kind {kind}').")
        failed = self.failures()
        if failed:
            names = ", ".join(f"{f.name} ({f.distribution} {f.version}): {f.summary}" for f in failed.values())
            lines.append(
                f"note: {len(failed)} plugin(s) failed to load and may provide this {kind}: {names}. "
                f"Run 'uad plugins show NAME --traceback'; silence with UAD_DISABLE_PLUGINS=NAME."
            )
        return "\n".join(lines)

    def expand(self, kind: str, reference: str) -> str:
        """``reference`` with a short anomalib model name (``Padim``) written as its class path
        (``anomalib.models.image.padim.lightning_model.Padim``); anything else unchanged. A registered name keeps
        its meaning (``resolve`` then asks for ``plugin:<name>``), so a plugin can never be shadowed by an anomalib
        model or the other way round."""
        scheme, ident = parse_reference(reference)
        if kind != "model" or scheme is not None or "." in ident:
            return reference
        self.refresh()
        if ident in self._index[kind].lookup or ident in self._index[kind].conflicts:
            return reference
        return anomalib_model_path(ident) or reference

    def resolve(self, kind: str, reference: str, *, flag: str | None = None) -> ComponentSpec | None:
        """Resolve a user reference for ``kind``.

        ``plugin:<name>`` gives its spec; a dotted class path gives ``None`` (the caller passes it through);
        a bare registered name or an unknown scheme is an error with a hint. Short anomalib model names are
        written out by :meth:`expand` first (callers that pass the reference on use its result).
        """
        reference = self.expand(kind, reference)
        scheme, ident = parse_reference(reference)
        if scheme is None:
            if "." in ident:
                return None
            self.refresh()
            shown = f"{flag} {reference}" if flag else reference
            if ident in self._index[kind].lookup or ident in self._index[kind].conflicts:
                raise BadReferenceError(
                    f"'{ident}' (from {shown}) has no scheme.",
                    hint=f"Did you mean 'plugin:{ident}'? Use 'plugin:<name>' for registered components or a "
                    "dotted class path such as 'my_package.module.MyModel'.",
                )
            guesses = close_matches(ident, self._index[kind].lookup)
            hint = f"Did you mean 'plugin:{guesses[0]}'? " if guesses else ""
            also = " or an anomalib model name (Padim, Patchcore, ...)" if kind == "model" else ""
            raise BadReferenceError(
                f"'{ident}' (from {shown}) is neither 'plugin:<name>' nor a dotted class path{also}.",
                hint=hint + f"See 'uad plugins list --kind {kind}' for the registered {kind}s.",
            )
        if scheme not in SCHEMES:
            raise BadReferenceError(
                f"unknown reference scheme '{scheme}' in '{reference}'.",
                hint="Valid schemes: " + ", ".join(SCHEMES) + " (for example 'plugin:pbas').",
            )
        if not ident:
            raise BadReferenceError(f"'{reference}' names no component.", hint="Write 'plugin:<name>'.")
        return self.get(kind, ident, flag=flag)

    def spec_for_class(self, kind: str, cls: type) -> ComponentSpec | None:
        """The one spec of ``kind`` whose target is ``cls``; ``None`` when none or several are (anomalib's AUROC
        stands behind both ``image_auroc`` and ``pixel_auroc``: the class alone cannot say which).

        Only targets whose module is already imported are compared, so this never imports plugin code.
        """
        import sys

        self.refresh()
        self._check_kind(kind)
        found = []
        for spec in self._index[kind].ranked:
            module_name, _, attr = spec.target.partition(":")
            module = sys.modules.get(module_name)
            if module is None or attr.rpartition(".")[2] != cls.__name__:
                continue
            obj = module
            for part in attr.split("."):
                obj = getattr(obj, part, None)
            if obj is cls and spec not in found:
                found.append(spec)
        return found[0] if len(found) == 1 else None

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in KINDS:
            raise BadReferenceError(f"unknown component kind '{kind}'.", hint="Kinds: " + ", ".join(KINDS) + ".")


def _as_list(result: object) -> list:
    if result is None:
        return []
    if isinstance(result, ComponentSpec):
        return [result]
    if isinstance(result, (str, bytes)) or not isinstance(result, Iterable):
        return [result]
    return list(result)


def _build_index(ranked: list[ComponentSpec]) -> _KindIndex:
    """Index specs given best rank first: a key claimed by two specs or more goes to ``conflicts`` only."""
    index = _KindIndex(ranked=ranked)
    claims: dict[str, list[ComponentSpec]] = {}
    for spec in ranked:
        index.specs.setdefault(spec.name, spec)
        for key in dict.fromkeys((spec.name, *spec.aliases)):
            claims.setdefault(key, []).append(spec)
    for key, claimants in claims.items():
        if len(claimants) > 1:
            index.conflicts[key] = claimants
        else:
            index.lookup[key] = claimants[0]
    return index


def _listing(providers: list[ComponentSpec]) -> str:
    return ", ".join(s.provider for s in providers[:-1]) + f" and {providers[-1].provider}"


def _conflict_hint(providers: list[ComponentSpec], flag: str) -> str:
    """How to get out of a clash: disable the plugin that is not built in, or name a class path."""
    external = next((s for s in reversed(providers) if s.source != "builtin"), providers[-1])
    if external.source == "entrypoint":
        disable = f"disable one with UAD_DISABLE_PLUGINS={external.plugin} (or ={external.distribution})"
    elif external.source == "local":
        disable = f"drop --plugin-file {external.distribution}"
    else:
        disable = f"disable one with UAD_DISABLE_PLUGINS={external.plugin}"
    paths = " or ".join(f"{flag} {s.class_path}" for s in providers)
    return f"To use one of them, {disable}, or pass its class path directly: {paths}."


def _hook_failure(plugin_name: str, record, kind: str, exc: BaseException) -> PluginFailure:
    import traceback

    return PluginFailure(
        name=plugin_name,
        source=record.source if record else "unknown",
        distribution=record.distribution if record else "unknown",
        version=record.version if record else "?",
        entry_point=record.entry_point if record else None,
        error=f"uad_register_{kind}s failed: {describe_error(exc)}",
        traceback="".join(traceback.format_exception(exc)),
    )


def get_registry() -> Registry:
    """The registry over the current plugin manager (one per manager, rebuilt when plugins change)."""
    pm = get_plugin_manager()
    registry = getattr(pm, "_uad_registry", None)
    if registry is None:
        registry = Registry(pm)
        pm._uad_registry = registry
    return registry
