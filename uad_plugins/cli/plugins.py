"""``uad plugins list|show``: what is installed, who provides it, and what failed. Never imports torch.

Broken plugins never change the exit status of ``list``/``show`` (0): they are rows with status ``error``, also
when their code called ``sys.exit()``. Clashes are shown on both sides: a component name two plugins provide is
listed under each provider and reported in a ``warning:`` line on stderr (and in ``"conflicts"`` with
``--json``); a plugin refused because its plugin name was taken is an ``error`` row ``NAME@DISTRIBUTION``, and
``show NAME`` of the plugin holding the name mentions it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from uad_plugins.errors import UadError, UnknownComponentError, close_matches
from uad_plugins.registry import Registry, get_registry
from uad_plugins.specs import KINDS, ComponentSpec

__all__ = ["add_plugins_parser", "run_plugins"]


def add_plugins_parser(parser: argparse.ArgumentParser) -> None:
    """Sub-commands of ``uad plugins``."""
    sub = parser.add_subparsers(dest="action", required=True, metavar="{list,show}")
    lst = sub.add_parser("list", help="list plugins and the components they provide",
                         description="List built-in and installed plugins (or, with --kind, their components).")
    lst.add_argument("pattern", nargs="?", default=None, help="glob on component names, e.g. 'p*'")
    lst.add_argument("--kind", choices=KINDS, help="one row per component of this kind")
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.add_argument("--errors", action="store_true", help="only plugins that failed to load")
    show = sub.add_parser("show", help="details of one plugin or component",
                          description="Show a plugin (or a component by name): spec, defaults, provenance, errors.")
    show.add_argument("name", help="plugin name or component name")
    show.add_argument("--kind", choices=KINDS, help="look the name up among components of this kind")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.add_argument("--traceback", action="store_true", help="show the full traceback of a failed plugin")


def _conflicts(reg: Registry, specs: list[ComponentSpec]) -> list[dict[str, Any]]:
    """The clashes ``specs`` take part in: kind, clashing name and every provider, best load rank first."""
    out: list[dict[str, Any]] = []
    for spec in specs:
        for key, providers in reg.clashes_of(spec).items():
            item = {"kind": spec.kind, "name": key, "providers": [s.provider for s in providers]}
            if item not in out:
                out.append(item)
    return out


def _plugin_rows(reg: Registry) -> list[dict[str, Any]]:
    provides: dict[str, list[ComponentSpec]] = {}
    for spec in reg.list(all_providers=True):
        provides.setdefault(spec.plugin or "?", []).append(spec)
    failures = reg.failures()
    rows = []
    for rec in reg.pm.records.values():
        failure = failures.get(rec.name)
        specs = provides.get(rec.name, [])
        rows.append({
            "plugin": rec.name, "distribution": rec.distribution, "version": rec.version, "source": rec.source,
            "status": "error" if failure else "ok", "error": failure.summary if failure else None,
            "entry_point": rec.entry_point,
            "components": [{"name": s.name, "kind": s.kind, "reference": s.reference, "summary": s.summary,
                            "tags": list(s.tags)} for s in specs],
            "conflicts": _conflicts(reg, specs),
        })
    for failure in failures.values():
        if failure.name not in reg.pm.records:
            rows.append({"plugin": failure.name, "distribution": failure.distribution, "version": failure.version,
                         "source": failure.source, "status": "error", "error": failure.summary,
                         "entry_point": failure.entry_point, "components": [], "conflicts": []})
    for name in reg.pm.disabled:
        rows.append({"plugin": name, "distribution": None, "version": None, "source": None, "status": "disabled",
                     "error": None, "entry_point": None, "components": [], "conflicts": []})
    return sorted(rows, key=lambda r: (r["source"] != "builtin", r["plugin"]))


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def _list(args: argparse.Namespace, reg: Registry) -> int:
    if args.kind or args.pattern:
        specs = reg.list(args.kind, args.pattern, all_providers=True)
        if args.json:
            print(json.dumps([s.to_dict() for s in specs], indent=2))
            return 0
        rows = [[s.name, s.kind, s.plugin or "?", s.version or "?", ",".join(s.tags), s.summary] for s in specs]
        print(_table(["name", "kind", "plugin", "version", "tags", "summary"], rows) if rows
              else f"no {args.kind or 'component'}s match {args.pattern or '*'}")
        _warn_failures(reg)
        _warn_conflicts(reg, {(s.kind, k) for s in specs for k in reg.clashes_of(s)})
        return 0
    rows = _plugin_rows(reg)
    if args.errors:
        rows = [r for r in rows if r["status"] == "error"]
    if args.json:
        print(json.dumps(rows, indent=2))
        _warn_conflicts(reg)
        return 0
    table = [[r["plugin"], r["version"] or "-", r["source"] or "-", r["status"],
              r["error"] if r["status"] == "error" else " ".join(_provided(c, r) for c in r["components"])]
             for r in rows]
    print(_table(["plugin", "version", "source", "status", "provides"], table))
    _warn_conflicts(reg)
    return 0


def _provided(component: dict[str, Any], row: dict[str, Any]) -> str:
    clash = any(c["kind"] == component["kind"] and c["name"] == component["name"] for c in row["conflicts"])
    return f"{component['kind']}:{component['name']}" + (" (conflict)" if clash else "")


def _warn_failures(reg: Registry) -> None:
    failed = reg.failures()
    if failed:
        names = ", ".join(failed)
        print(f"note: {len(failed)} plugin(s) failed to load: {names} (see 'uad plugins list --errors').",
              file=sys.stderr)


def _conflict_line(kind: str, name: str, providers: list[ComponentSpec]) -> str:
    listing = ", ".join(s.provider for s in providers[:-1]) + f" and {providers[-1].provider}"
    return (f"{kind} name '{name}' is provided by {len(providers)} plugins: {listing}; "
            f"'plugin:{name}' fails until one of them is disabled.")


def _warn_conflicts(reg: Registry, only: set[tuple[str, str]] | None = None) -> None:
    """One ``warning:`` line on stderr per clashing component name (stdout stays parseable)."""
    for (kind, name), providers in sorted(reg.conflicts().items()):
        if only is None or (kind, name) in only:
            print(f"warning: {_conflict_line(kind, name, providers)}", file=sys.stderr)


def _show(args: argparse.Namespace, reg: Registry) -> int:
    rows = {r["plugin"]: r for r in _plugin_rows(reg)}
    failures = reg.failures()
    failure = failures.get(args.name)
    if args.kind is None and args.name in rows:
        row = rows[args.name]
        specs = [s for s in reg.list(all_providers=True) if s.plugin == args.name]
        refused = [f for f in failures.values() if f.clashes_with == args.name and f.name != args.name]
        if args.json:
            print(json.dumps({**row, "components": [s.to_dict() for s in specs],
                              "traceback": failure.traceback if failure else None,
                              "refused": [{"plugin": f.name, "distribution": f.distribution, "version": f.version,
                                           "source": f.source, "entry_point": f.entry_point} for f in refused]},
                             indent=2))
            return 0
        print(f"plugin:      {row['plugin']}")
        print(f"status:      {row['status']}")
        print(f"source:      {row['source']}")
        print(f"provided by: {row['distribution']} {row['version']}")
        if row["entry_point"]:
            print(f"entry point: {row['entry_point']}")
        if failure:
            print(f"error:       {failure.error}")
            if failure.clashes_with and failure.clashes_with in rows:
                print(f"             (the name is held by: uad plugins show {failure.clashes_with})")
            if args.traceback:
                print("\n" + failure.traceback.rstrip())
            else:
                print("             (add --traceback for the full stack)")
        for other in refused:
            by = other.entry_point or other.distribution
            print(f"clash:       {other.source} plugin {by} ({other.distribution} {other.version}) also has the "
                  f"name '{args.name}' and was not loaded (uad plugins show {other.name})")
        for spec in specs:
            print()
            _print_spec(spec, reg)
        return 0
    kinds = [args.kind] if args.kind else list(KINDS)
    found = [s for k in kinds for s in reg.list(k, all_providers=True)
             if s.name == args.name or args.name in s.aliases]
    if not found:
        known = list(rows) + [s.name for s in reg.list()]
        guesses = close_matches(args.name, known)
        raise UnknownComponentError(
            f"no plugin or component named '{args.name}'.",
            hint=(f"Did you mean: {', '.join(guesses)}? " if guesses else "") + "See 'uad plugins list'.")
    for i, spec in enumerate(found):
        if args.json:
            defaults, error = _defaults(spec)
            print(json.dumps({**spec.to_dict(), "defaults": defaults, "defaults_error": error,
                              "conflicts": _conflicts(reg, [spec])}, indent=2))
            continue
        if i:
            print()
        _print_spec(spec, reg)
    return 0


def _defaults(spec: ComponentSpec) -> tuple[dict[str, Any] | None, str | None]:
    """The packaged defaults, or why they cannot be read (reading them may import the plugin's package)."""
    try:
        return spec.default_init_args(), None
    except UadError as exc:
        return None, exc.message
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - plugin code: SystemExit/GeneratorExit are isolated too
        from uad_plugins.manager import describe_error

        return None, describe_error(exc)


def _print_spec(spec: ComponentSpec, reg: Registry) -> None:
    import yaml

    print(f"{spec.kind}: {spec.name}" + (f" (aliases: {', '.join(spec.aliases)})" if spec.aliases else ""))
    print(f"  use as:     {'--metrics' if spec.kind == 'metric' else '--' + spec.kind} {spec.reference}")
    print(f"  summary:    {spec.summary}")
    print(f"  target:     {spec.target}")
    print(f"  provider:   {spec.provider}")
    for key, providers in reg.clashes_of(spec).items():
        print(f"  conflict:   {_conflict_line(spec.kind, key, providers)}")
    for label in ("tags", "paper", "homepage", "license"):
        value = getattr(spec, label)
        if value:
            print(f"  {label + ':':<11} {', '.join(value) if isinstance(value, tuple) else value}")
    defaults, error = _defaults(spec)
    if error is not None:
        print(f"  defaults:   unreadable ({error})")
        return
    if defaults:
        print("  defaults:")
        for line in yaml.safe_dump(defaults, sort_keys=False).splitlines():
            print(f"    {line}")


def run_plugins(args: argparse.Namespace) -> int:
    """Entry point of ``uad plugins``."""
    reg = get_registry()
    return _list(args, reg) if args.action == "list" else _show(args, reg)
