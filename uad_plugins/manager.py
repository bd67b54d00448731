"""The plugin manager: finds plugins and registers them with pluggy, isolating every failure.

Load order: the built-ins (:data:`BUILTIN_PLUGINS`), then installed entry points of the group
``uad_plugins``, then local plugin files (``--plugin-file PATH.py``). One try/except per plugin: a plugin that
fails is unregistered again, recorded as a :class:`PluginFailure`, and the rest keeps working.

What counts as a failure: everything plugin code raises (importing its module, its hooks, its ``dir()`` and
attributes while it is registered), ``SystemExit`` and ``GeneratorExit`` included: a plugin that calls
``sys.exit()`` is recorded as failed ("called sys.exit(0)") and cannot end the command or the interpreter.
Only ``KeyboardInterrupt`` (the user's Ctrl-C) is never isolated.

Plugin names are first come, first served, and the load order above decides: a plugin whose name is already
taken (by a plugin that loaded, or that failed to load from another provider) is refused before any of its code
runs. The plugin that holds the name keeps its status; the refused one is recorded as failed under the key
``NAME@DISTRIBUTION`` (for example ``pbas@uad-rival``: an entry point named like the built-in ``pbas``), with its
own distribution and version and the name of the plugin it clashes with. Loading the same plugin again from the
same provider is a no-op.

Environment switches:
    UAD_LOAD_PLUGINS      comma list: load only these external plugins ('' loads none).
    UAD_DISABLE_PLUGINS   comma list: skip these plugins (built-ins included).
    UAD_PLUGINS_STRICT=1  raise on the first plugin that fails to load.
    UAD_TRACE_PLUGINS=1   print every hook call to stderr.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.metadata as metadata
import importlib.util
import os
import sys
import traceback
import types
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pluggy

import uad_plugins.hookspecs as hookspecs
from uad_plugins.errors import PluginLoadError
from uad_plugins.version import __version__

__all__ = ["BUILTIN_PLUGINS", "SOURCE_RANK", "PluginFailure", "PluginFailures", "PluginRecord", "UadPluginManager",
           "describe_error", "get_plugin_manager", "reset_plugin_manager", "using_plugin_manager"]

ENTRY_POINT_GROUP = hookspecs.PROJECT

#: the built-in plugins: each listed module is registered exactly like a third-party entry point
BUILTIN_PLUGINS: tuple[str, ...] = (
    "uad_plugins.plugins.standard_metrics.hooks",
    "uad_plugins.plugins.perlin.hooks",
    "uad_plugins.plugins.pbas.hooks",
    "uad_plugins.plugins.uniad.hooks",
    "uad_plugins.plugins.onenip.hooks",
    "uad_plugins.plugins.cutpaste.hooks",
    "uad_plugins.plugins.perlin_texture.hooks",
    "uad_plugins.plugins.hetnet.hooks",
    "uad_plugins.plugins.gaussian_feature_noise.hooks",
    "uad_plugins.plugins.pradot.hooks",
    "uad_plugins.plugins.fader.hooks",
    "uad_plugins.plugins.pnas3d.hooks",
    "uad_plugins.plugins.pointcloud_metrics.hooks",
    "uad_plugins.plugins.mmae_ecg.hooks",
    "uad_plugins.plugins.signal_baselines.hooks",
    "uad_plugins.plugins.ecg_anomaly.hooks",
    "uad_plugins.plugins.signal_metrics.hooks",
)

#: how plugin sources rank wherever one must win or come first (listing, name clashes): lower ranks first
SOURCE_RANK: dict[str, int] = {"builtin": 0, "entrypoint": 1, "local": 2}


@dataclass
class PluginRecord:
    """A plugin that loaded: its name, module and where it came from."""

    name: str
    module: str
    source: str  # builtin | entrypoint | local
    distribution: str
    version: str
    entry_point: str | None = None
    order: int = 0  # 1, 2, ... in the order plugins were registered (0: unknown)


@dataclass
class PluginFailure:
    """A plugin that failed to load or whose hook failed: kept for ``uad plugins list/show``.

    ``name`` is the plugin name, or ``NAME@DISTRIBUTION`` when the plugin was refused because another plugin
    already holds ``NAME``; ``clashes_with`` then is ``NAME``.
    """

    name: str
    source: str
    distribution: str
    version: str
    entry_point: str | None
    error: str
    traceback: str = field(repr=False, default="")
    clashes_with: str | None = None

    @property
    def summary(self) -> str:
        return self.error.splitlines()[0] if self.error else "unknown error"


class PluginFailures(dict):
    """``UadPluginManager.failures``: failure key (``name`` or ``name@distribution``) -> :class:`PluginFailure`.

    ``failures[name]`` for a name with no failure of its own falls back to the newest plugin refused for
    clashing with ``name``, so a caller that loaded ``pbas.py`` finds why it failed under ``pbas``. ``get``,
    ``in`` and iteration see only the real keys: a plugin that holds the name is never reported as failed.
    """

    def __missing__(self, key: str) -> PluginFailure:
        for failure in reversed(list(self.values())):
            if failure.clashes_with == key:
                return failure
        raise KeyError(key)


def describe_error(exc: BaseException) -> str:
    """One line for an error raised by plugin code; ``sys.exit(N)`` is named as such."""
    if isinstance(exc, SystemExit):
        code = "" if exc.code is None else repr(exc.code)
        return f"SystemExit: the plugin called sys.exit({code})"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _env_list(var: str) -> list[str] | None:
    value = os.environ.get(var)
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _env_flag(var: str) -> bool:
    return os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}


def _own_version() -> str:
    try:
        return metadata.version("uad_plugins")
    except metadata.PackageNotFoundError:
        return __version__


class UadPluginManager(pluggy.PluginManager):
    """pluggy manager for the project ``uad_plugins`` with recorded provenance and failures."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}  # plugin name -> how it was loaded
        self.failures: PluginFailures = PluginFailures()  # failure key -> why it failed (see PluginFailures)
        self.disabled: list[str] = []  # names skipped through UAD_DISABLE_PLUGINS / UAD_LOAD_PLUGINS
        self.strict = _env_flag("UAD_PLUGINS_STRICT")
        self.generation = 0  # bumped on every (un)registration; the registry caches per generation
        self._registered = 0  # last PluginRecord.order handed out
        if _env_flag("UAD_TRACE_PLUGINS"):
            self.trace.root.setwriter(lambda msg: sys.stderr.write(f"[uad trace] {msg}"))
            self.enable_tracing()

    # ------------------------------------------------------------------ registration
    def parse_hookimpl_opts(self, plugin: object, name: str):
        """Only ``uad_*`` attributes can be hooks (so helper functions never become hooks by accident)."""
        if not name.startswith("uad_"):
            return None
        return super().parse_hookimpl_opts(plugin, name)

    def register(self, plugin: object, name: str | None = None) -> str | None:
        result = super().register(plugin, name)
        self.generation += 1
        return result

    def unregister(self, plugin: object | None = None, name: str | None = None) -> object | None:
        result = super().unregister(plugin, name)
        self.generation += 1
        return result

    def load_rank(self, name: str | None) -> tuple[int, int]:
        """Sort key of a registered plugin: source (builtin < entrypoint < local < unknown), then load order.

        The registry orders hook implementations by this key, never by pluggy's internal order (which differs
        between calling and listing, and which ``tryfirst``/``trylast`` change).
        """
        record = self.records.get(name) if name else None
        if record is None:
            return (len(SOURCE_RANK), 0)
        return (SOURCE_RANK.get(record.source, len(SOURCE_RANK)), record.order)

    def add_plugin(self, plugin: object, *, name: str, source: str, distribution: str, version: str,
                   entry_point: str | None = None) -> bool:
        """Register one plugin object, validating its hooks; on failure roll back and record why.

        Returns True when ``plugin`` is registered under ``name`` (also when it already was). A ``name`` held by
        another plugin is refused (see the module docstring); the holder is left untouched.
        """
        if self.get_plugin(name) is plugin and name in self.records:
            return True
        holder = self._holder(name, source, distribution, plugin)
        if holder is not None:
            self._refuse(name, source, distribution, version, entry_point, holder)
            return False
        try:
            self._check_hook_names(plugin, name)
            self.register(plugin, name=name)
            self.check_pending()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - plugin code: SystemExit/GeneratorExit are isolated too
            if self.get_plugin(name) is plugin:
                self.unregister(name=name)
            self._fail(name, source, distribution, version, entry_point, exc)
            return False
        module = getattr(plugin, "__name__", type(plugin).__name__)
        self._registered += 1
        self.records[name] = PluginRecord(name, module, source, distribution, version, entry_point,
                                          order=self._registered)
        self.failures.pop(name, None)
        return True

    def _check_hook_names(self, plugin: object, name: str) -> None:
        known = {n for n in dir(hookspecs) if n.startswith("uad_")}
        for attr in dir(plugin):
            if attr.startswith("uad_register") and attr not in known and callable(getattr(plugin, attr)):
                from uad_plugins.errors import close_matches

                guess = close_matches(attr, known, n=1)
                hint = f" (did you mean '{guess[0]}'?)" if guess else ""
                raise PluginLoadError(f"plugin {name}: unknown hook '{attr}'{hint}")

    def _holder(self, name: str, source: str, distribution: str, plugin: object | None = None) -> str | None:
        """Who already holds the plugin ``name``, if that is not this provider; None when the name is free.

        A plugin that loaded holds its name; so does one that failed to load (from another provider), so that a
        broken built-in's name cannot be taken over by a third-party package.
        """
        record = self.records.get(name)
        if record is not None:
            registered = self.get_plugin(name)
            if (record.source, record.distribution) != (source, distribution) or (
                    plugin is not None and registered is not None and registered is not plugin):
                return f"the {record.source} plugin '{name}' ({record.distribution} {record.version})"
            return None
        failure = self.failures.get(name)  # a real key only: get() never falls back
        if failure is not None and (failure.source, failure.distribution) != (source, distribution):
            return (f"the {failure.source} plugin '{name}' ({failure.distribution} {failure.version}, "
                    "which failed to load)")
        if self.get_plugin(name) is not None or self.is_blocked(name):
            return f"a plugin registered as '{name}' directly with pluggy"
        return None

    def _refuse(self, name: str, source: str, distribution: str, version: str, entry_point: str | None,
                holder: str) -> None:
        """Record a plugin refused because ``holder`` already has its name (nothing of it was run)."""
        subject = {"entrypoint": f"the entry point '{entry_point or name}' of {distribution} {version}",
                   "local": f"the plugin file {distribution}"}.get(
            source, f"the {source} plugin '{name}' ({distribution} {version})")
        hint = {"entrypoint": f"Rename the entry point in {distribution}'s pyproject.toml, or skip the package with "
                              f"UAD_DISABLE_PLUGINS={distribution}.",
                "local": "Rename the file: a plugin file's name (without .py) is its plugin name."}
        error = PluginLoadError(
            f"plugin name '{name}' is already taken by {holder}; {subject} was not loaded.",
            hint=hint.get(source, "Plugin names must be unique."))
        self._fail(name, source, distribution, version, entry_point, error, clashes_with=name)

    def _fail(self, name: str, source: str, distribution: str, version: str, entry_point: str | None,
              exc: BaseException, *, clashes_with: str | None = None) -> None:
        key = name if clashes_with is None else f"{name}@{distribution}"
        failure = PluginFailure(key, source, distribution, version, entry_point,
                                describe_error(exc), "".join(traceback.format_exception(exc)), clashes_with)
        self.failures[key] = failure
        if self.strict:
            raise PluginLoadError(
                f"plugin {key} ({distribution} {version}) failed to load: {failure.error}",
                hint="UAD_PLUGINS_STRICT=1 is set; unset it to skip broken plugins.",
            ) from exc

    # ------------------------------------------------------------------ loading
    def load_builtins(self, modules: Sequence[str] | None = None) -> None:
        """Register the built-in plugins (a module path each)."""
        if modules is None:
            modules = BUILTIN_PLUGINS
        blocked = set(_env_list("UAD_DISABLE_PLUGINS") or [])
        version = _own_version()
        for module_path in modules:
            name = _builtin_name(module_path)
            if name in blocked:
                self.disabled.append(name)
                continue
            if self._already_loaded(name, "builtin", "uad_plugins"):
                continue
            holder = self._holder(name, "builtin", "uad_plugins")
            if holder is not None:
                self._refuse(name, "builtin", "uad_plugins", version, None, holder)
                continue
            try:
                module = importlib.import_module(module_path)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - plugin code: SystemExit/GeneratorExit are isolated too
                self._fail(name, "builtin", "uad_plugins", version, None, exc)
                continue
            self.add_plugin(module, name=name, source="builtin", distribution="uad_plugins", version=version)

    def load_entrypoints(self, entry_points: Iterable[metadata.EntryPoint] | None = None) -> None:
        """Register every installed entry point of the group ``uad_plugins``, one try/except each.

        An entry point whose name is already taken (a built-in of that name, or another package's entry point
        loaded before it) is not imported; it is recorded as ``NAME@DISTRIBUTION`` (see the module docstring).
        """
        if entry_points is None:
            entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
        allow = _env_list("UAD_LOAD_PLUGINS")
        blocked = set(_env_list("UAD_DISABLE_PLUGINS") or [])
        for ep in entry_points:
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else "unknown"
            version = dist.version if dist is not None else "?"
            names = {ep.name, dist_name}
            if (allow is not None and not names & set(allow)) or names & blocked:
                taken = ep.name in self.disabled or self._holder(ep.name, "entrypoint", dist_name) is not None
                self.disabled.append(f"{ep.name}@{dist_name}" if taken else ep.name)
                continue
            if self._already_loaded(ep.name, "entrypoint", dist_name):
                continue
            entry_point = f"{ep.name} = {ep.value}"
            holder = self._holder(ep.name, "entrypoint", dist_name)
            if holder is not None:
                self._refuse(ep.name, "entrypoint", dist_name, version, entry_point, holder)
                continue
            try:
                plugin = ep.load()
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - plugin code: SystemExit/GeneratorExit are isolated too
                self._fail(ep.name, "entrypoint", dist_name, version, entry_point, exc)
                continue
            self.add_plugin(plugin, name=ep.name, source="entrypoint", distribution=dist_name, version=version,
                            entry_point=entry_point)

    def load_plugin_file(self, path: str | os.PathLike[str]) -> bool:
        """Register a local ``.py`` file as a plugin (``--plugin-file``), named after the file's stem.

        Loading the same file twice is a no-op; a file whose stem names another plugin (``pbas.py``) is refused
        without being run and recorded as ``STEM@PATH``.
        """
        file = Path(path).expanduser().resolve()
        name = file.stem
        if self._already_loaded(name, "local", str(file)):
            return True
        holder = self._holder(name, "local", str(file))
        if holder is not None:
            self._refuse(name, "local", str(file), "-", None, holder)
            return False
        if not file.is_file():
            self._fail(name, "local", str(file), "-", None, FileNotFoundError(f"no such plugin file: {file}"))
            return False
        module_name = f"uad_local_plugin_{name}"
        try:
            spec = importlib.util.spec_from_file_location(module_name, file)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
        except KeyboardInterrupt:
            sys.modules.pop(module_name, None)
            raise
        except BaseException as exc:  # noqa: BLE001 - plugin code: SystemExit/GeneratorExit are isolated too
            sys.modules.pop(module_name, None)
            self._fail(name, "local", str(file), "-", None, exc)
            return False
        return self.add_plugin(module, name=name, source="local", distribution=str(file), version="-")

    def _already_loaded(self, name: str, source: str, distribution: str) -> bool:
        record = self.records.get(name)
        return (record is not None and (record.source, record.distribution) == (source, distribution)
                and self.get_plugin(name) is not None)


def _builtin_name(module_path: str) -> str:
    """``uad_plugins.plugins.pbas.hooks`` -> ``pbas``."""
    parts = module_path.split(".")
    return parts[-2] if parts[-1] == "hooks" and len(parts) > 1 else parts[-1]


_overrides: list[UadPluginManager] = []  # innermost `using_plugin_manager` last


@functools.lru_cache(maxsize=1)
def _default_manager() -> UadPluginManager:
    pm = UadPluginManager()
    pm.load_builtins()
    pm.load_entrypoints()
    for path in _env_list("UAD_PLUGIN_FILES") or []:
        pm.load_plugin_file(path)
    return pm


def get_plugin_manager() -> UadPluginManager:
    """The process-wide manager, built on first use (never at import).

    It loads the built-ins, then entry points, then the files in ``UAD_PLUGIN_FILES`` (a comma list).
    """
    return _overrides[-1] if _overrides else _default_manager()


@contextlib.contextmanager
def using_plugin_manager(pm: UadPluginManager) -> Iterator[UadPluginManager]:
    """Make ``pm`` the manager every lookup uses inside the ``with`` block (tests, embedding)."""
    _overrides.append(pm)
    try:
        yield pm
    finally:
        _overrides.remove(pm)


def reset_plugin_manager() -> None:
    """Forget the cached manager (after installing or removing a plugin in-process)."""
    _default_manager.cache_clear()


def module_from_hooks(name: str, **hooks: object) -> types.ModuleType:
    """Build an in-memory plugin module from hook functions (handy in tests and notebooks)."""
    module = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        setattr(module, hook_name, hookspecs.hookimpl(fn))
    return module
