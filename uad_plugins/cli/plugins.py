"""``uad plugins list|show``: what is installed, who provides it, and what failed. Never imports torch."""

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


def _plugin_rows(reg: Registry) -> list[dict[str, Any]]:
    provides: dict[str, list[ComponentSpec]] = {}
    for spec in reg.list():
        provides.setdefault(spec.plugin or "?", []).append(spec)
    rows = []
    for rec in reg.pm.records.values():
        failure = reg.failures().get(rec.name)
        rows.append({
            "plugin": rec.name, "distribution": rec.distribution, "version": rec.version, "source": rec.source,
            "status": "error" if failure else "ok", "error": failure.summary if failure else None,
            "entry_point": rec.entry_point,
            "components": [{"name": s.name, "kind": s.kind, "reference": s.reference, "summary": s.summary,
                            "tags": list(s.tags)} for s in provides.get(rec.name, [])],
        })
    for failure in reg.failures().values():
        if failure.name not in reg.pm.records:
            rows.append({"plugin": failure.name, "distribution": failure.distribution, "version": failure.version,
                         "source": failure.source, "status": "error", "error": failure.summary,
                         "entry_point": failure.entry_point, "components": []})
    for name in reg.pm.disabled:
        rows.append({"plugin": name, "distribution": None, "version": None, "source": None, "status": "disabled",
                     "error": None, "entry_point": None, "components": []})
    return sorted(rows, key=lambda r: (r["source"] != "builtin", r["plugin"]))


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def _list(args: argparse.Namespace, reg: Registry) -> int:
    if args.kind or args.pattern:
        specs = reg.list(args.kind, args.pattern)
        if args.json:
            print(json.dumps([s.to_dict() for s in specs], indent=2))
            return 0
        rows = [[s.name, s.kind, s.plugin or "?", s.version or "?", ",".join(s.tags), s.summary] for s in specs]
        print(_table(["name", "kind", "plugin", "version", "tags", "summary"], rows) if rows
              else f"no {args.kind or 'component'}s match {args.pattern or '*'}")
        _warn_failures(reg)
        return 0
    rows = _plugin_rows(reg)
    if args.errors:
        rows = [r for r in rows if r["status"] == "error"]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [[r["plugin"], r["version"] or "-", r["source"] or "-", r["status"],
              r["error"] if r["status"] == "error" else " ".join(f"{c['kind']}:{c['name']}" for c in r["components"])]
             for r in rows]
    print(_table(["plugin", "version", "source", "status", "provides"], table))
    return 0


def _warn_failures(reg: Registry) -> None:
    failed = reg.failures()
    if failed:
        names = ", ".join(failed)
        print(f"note: {len(failed)} plugin(s) failed to load: {names} (see 'uad plugins list --errors').",
              file=sys.stderr)


def _show(args: argparse.Namespace, reg: Registry) -> int:
    rows = {r["plugin"]: r for r in _plugin_rows(reg)}
    failure = reg.failures().get(args.name)
    if args.kind is None and args.name in rows:
        row = rows[args.name]
        specs = [s for s in reg.list() if s.plugin == args.name]
        if args.json:
            print(json.dumps({**row, "components": [s.to_dict() for s in specs],
                              "traceback": failure.traceback if failure else None}, indent=2))
            return 0
        print(f"plugin:      {row['plugin']}")
        print(f"status:      {row['status']}")
        print(f"source:      {row['source']}")
        print(f"provided by: {row['distribution']} {row['version']}")
        if row["entry_point"]:
            print(f"entry point: {row['entry_point']}")
        if failure:
            print(f"error:       {failure.error}")
            if args.traceback:
                print("\n" + failure.traceback.rstrip())
            else:
                print("             (add --traceback for the full stack)")
        for spec in specs:
            print()
            _print_spec(spec)
        return 0
    kinds = [args.kind] if args.kind else list(KINDS)
    found = [s for k in kinds for s in reg.list(k) if s.name == args.name or args.name in s.aliases]
    if not found:
        known = list(rows) + [s.name for s in reg.list()]
        guesses = close_matches(args.name, known)
        raise UnknownComponentError(
            f"no plugin or component named '{args.name}'.",
            hint=(f"Did you mean: {', '.join(guesses)}? " if guesses else "") + "See 'uad plugins list'.")
    for i, spec in enumerate(found):
        if args.json:
            print(json.dumps({**spec.to_dict(), "defaults": spec.default_init_args()}, indent=2))
            continue
        if i:
            print()
        _print_spec(spec)
    return 0


def _print_spec(spec: ComponentSpec) -> None:
    import yaml

    print(f"{spec.kind}: {spec.name}" + (f" (aliases: {', '.join(spec.aliases)})" if spec.aliases else ""))
    print(f"  use as:     {'--metrics' if spec.kind == 'metric' else '--' + spec.kind} {spec.reference}")
    print(f"  summary:    {spec.summary}")
    print(f"  target:     {spec.target}")
    print(f"  provider:   {spec.provider}")
    for label in ("tags", "paper", "homepage", "license"):
        value = getattr(spec, label)
        if value:
            print(f"  {label + ':':<11} {', '.join(value) if isinstance(value, tuple) else value}")
    try:
        defaults = spec.default_init_args()
    except UadError as exc:
        print(f"  defaults:   unreadable ({exc.message})")
        return
    if defaults:
        print("  defaults:")
        for line in yaml.safe_dump(defaults, sort_keys=False).splitlines():
            print(f"    {line}")


def run_plugins(args: argparse.Namespace) -> int:
    """Entry point of ``uad plugins``."""
    reg = get_registry()
    return _list(args, reg) if args.action == "list" else _show(args, reg)
