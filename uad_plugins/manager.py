"""The plugin manager: finds plugins and registers them with pluggy, isolating every failure.

Load order: the built-ins (``uad_plugins.plugins.BUILTIN_PLUGINS``), then installed entry points of the group
``uad_plugins``, then local plugin files (``--plugin-file PATH.py``). One try/except per plugin: a plugin that
fails is unregistered again, recorded as a :class:`PluginFailure`, and the rest keeps working.

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

from uad_plugins import hookspecs
from uad_plugins.errors import PluginLoadError

__all__ = ["PluginFailure", "PluginRecord", "UadPluginManager", "get_plugin_manager", "reset_plugin_manager",
           "using_plugin_manager"]

ENTRY_POINT_GROUP = hookspecs.PROJECT


@dataclass
class PluginRecord:
    """A plugin that loaded: its name, module and where it came from."""

    name: str
    module: str
    source: str  # builtin | entrypoint | local
    distribution: str
    version: str
    entry_point: str | None = None


@dataclass
class PluginFailure:
    """A plugin that failed to load or whose hook failed: kept for ``uad plugins list/show``."""

    name: str
    source: str
    distribution: str
    version: str
    entry_point: str | None
    error: str
    traceback: str = field(repr=False, default="")

    @property
    def summary(self) -> str:
        return self.error.splitlines()[0] if self.error else "unknown error"


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
        from uad_plugins import __version__

        return __version__


class UadPluginManager(pluggy.PluginManager):
    """pluggy manager for the project ``uad_plugins`` with recorded provenance and failures."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}  # plugin name -> how it was loaded
        self.failures: dict[str, PluginFailure] = {}  # plugin name -> why it failed
        self.disabled: list[str] = []  # names skipped through UAD_DISABLE_PLUGINS / UAD_LOAD_PLUGINS
        self.strict = _env_flag("UAD_PLUGINS_STRICT")
        self.generation = 0  # bumped on every (un)registration; the registry caches per generation
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

    def add_plugin(self, plugin: object, *, name: str, source: str, distribution: str, version: str,
                   entry_point: str | None = None) -> bool:
        """Register one plugin object, validating its hooks; on failure roll back and record why."""
        try:
            self._check_hook_names(plugin, name)
            self.register(plugin, name=name)
            self.check_pending()
        except Exception as exc:  # noqa: BLE001 - every failure is isolated and recorded
            if self.get_plugin(name) is not None:
                self.unregister(name=name)
            self._fail(name, source, distribution, version, entry_point, exc)
            return False
        module = getattr(plugin, "__name__", type(plugin).__name__)
        self.records[name] = PluginRecord(name, module, source, distribution, version, entry_point)
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

    def _fail(self, name: str, source: str, distribution: str, version: str, entry_point: str | None,
              exc: BaseException) -> None:
        failure = PluginFailure(name, source, distribution, version, entry_point,
                                f"{type(exc).__name__}: {exc}", "".join(traceback.format_exception(exc)))
        self.failures[name] = failure
        if self.strict:
            raise PluginLoadError(
                f"plugin {name} ({distribution} {version}) failed to load: {failure.error}",
                hint="UAD_PLUGINS_STRICT=1 is set; unset it to skip broken plugins.",
            ) from exc

    # ------------------------------------------------------------------ loading
    def load_builtins(self, modules: Sequence[str] | None = None) -> None:
        """Register the built-in plugins (a module path each)."""
        if modules is None:
            from uad_plugins.plugins import BUILTIN_PLUGINS

            modules = BUILTIN_PLUGINS
        blocked = set(_env_list("UAD_DISABLE_PLUGINS") or [])
        version = _own_version()
        for module_path in modules:
            name = _builtin_name(module_path)
            if name in blocked:
                self.disabled.append(name)
                continue
            try:
                module = importlib.import_module(module_path)
            except Exception as exc:  # noqa: BLE001
                self._fail(name, "builtin", "uad_plugins", version, None, exc)
                continue
            self.add_plugin(module, name=name, source="builtin", distribution="uad_plugins", version=version)

    def load_entrypoints(self, entry_points: Iterable[metadata.EntryPoint] | None = None) -> None:
        """Register every installed entry point of the group ``uad_plugins``, one try/except each."""
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
                self.disabled.append(ep.name)
                continue
            if ep.name in self.records:
                self._fail(ep.name, "entrypoint", dist_name, version, ep.value,
                           PluginLoadError(f"a plugin named '{ep.name}' is already registered by "
                                           f"{self.records[ep.name].distribution}"))
                continue
            try:
                plugin = ep.load()
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self._fail(ep.name, "entrypoint", dist_name, version, ep.value, exc)
                continue
            self.add_plugin(plugin, name=ep.name, source="entrypoint", distribution=dist_name, version=version,
                            entry_point=f"{ep.name} = {ep.value}")

    def load_plugin_file(self, path: str | os.PathLike[str]) -> bool:
        """Register a local ``.py`` file as a plugin (``--plugin-file``)."""
        file = Path(path).expanduser().resolve()
        name = file.stem
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
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            sys.modules.pop(module_name, None)
            self._fail(name, "local", str(file), "-", None, exc)
            return False
        return self.add_plugin(module, name=name, source="local", distribution=str(file), version="-")


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
