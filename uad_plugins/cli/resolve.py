"""Turn ``plugin:<name>`` references in argv and YAML into what jsonargparse understands.

``--model plugin:pbas`` becomes ``--model '{"class_path": "uad_plugins.plugins.pbas.model.Pbas", "init_args":
{<packaged defaults>}}'`` at the same place in argv, so every ``--model.<option>`` the user gives afterwards
overrides a packaged default. In a ``--config`` YAML, ``model: plugin:pbas`` or ``model: {class_path: plugin:pbas,
init_args: {...}}`` is rewritten the same way, the user's ``init_args`` layered over the defaults. A dotted class
path passes through unchanged; a bare registered name is an error that suggests ``plugin:<name>``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from uad_plugins.errors import ConfigError
from uad_plugins.registry import get_registry
from uad_plugins.specs import ComponentSpec

__all__ = ["NormalisedArgs", "normalise_argv"]

#: flag -> component kind
FLAG_KINDS = {"--model": "model", "--synthesizer": "synthesizer"}


class NormalisedArgs:
    """The rewritten argv plus the specs that were resolved on the way (flag -> spec)."""

    def __init__(self, argv: list[str], specs: dict[str, ComponentSpec], has: set[str]) -> None:
        self.argv = argv
        self.specs = specs
        self.has = has  # top-level keys the user gave (model, data, ...), from argv or config


def _component_json(spec: ComponentSpec, user_init_args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    spec.load()  # import now: jsonargparse resolves only classes it can import, and errors read better here
    return {"class_path": spec.class_path, "init_args": {**spec.default_init_args(), **dict(user_init_args or {})}}


def _resolve_value(kind: str, value: str, flag: str, specs: dict[str, ComponentSpec]) -> str | None:
    spec = get_registry().resolve(kind, value, flag=flag)
    if spec is None:
        return None
    specs[flag] = spec
    return json.dumps(_component_json(spec))


def _normalise_config(text_or_path: str, specs: dict[str, ComponentSpec], has: set[str]) -> str:
    import yaml

    path = Path(text_or_path)
    try:
        is_file = path.is_file()
    except OSError:
        is_file = False
    if is_file:
        text = path.read_text(encoding="utf-8")
    elif "\n" in text_or_path or ":" in text_or_path:
        text = text_or_path
    else:
        raise ConfigError(f"config file not found: {text_or_path}", hint="Pass --config PATH.yaml.")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {text_or_path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config {text_or_path} must be a mapping of options, got {type(data).__name__}.")
    has.update(data)
    for key, kind in (("model", "model"), ("synthesizer", "synthesizer")):
        value = data.get(key)
        if isinstance(value, str):
            value = {"class_path": value}
        if isinstance(value, dict) and isinstance(value.get("class_path"), str):
            flag = f"--{key}"
            spec = get_registry().resolve(kind, value["class_path"], flag=f"{key}: in {text_or_path}")
            if spec is not None:
                specs[flag] = spec
                data[key] = _component_json(spec, value.get("init_args"))
    if isinstance(data.get("metrics"), list):
        for ref in data["metrics"]:
            get_registry().resolve("metric", str(ref), flag="metrics: in config")
    return yaml.safe_dump(data, sort_keys=False)


def normalise_argv(argv: list[str]) -> NormalisedArgs:
    """Rewrite plugin references in ``argv`` (and in any ``--config``); see the module docstring."""
    out: list[str] = []
    specs: dict[str, ComponentSpec] = {}
    has: set[str] = set()
    i = 0
    while i < len(argv):
        arg = argv[i]
        flag, eq, inline = arg.partition("=")
        takes_value = flag in FLAG_KINDS or flag in ("--config", "-c", "--metrics")
        if takes_value and not eq and i + 1 >= len(argv):
            out.append(arg)
            break
        if flag.startswith("--") and "." not in flag and flag != "--config":
            has.add(flag[2:])
        if flag in FLAG_KINDS:
            value = inline if eq else argv[i + 1]
            i += 1 if eq else 2
            resolved = _resolve_value(FLAG_KINDS[flag], value, flag, specs)
            out += [flag, resolved if resolved is not None else value]
            continue
        if flag.endswith(".help") and flag[:-5] in FLAG_KINDS:  # --model.help plugin:pbas
            value = inline if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            i += 1 if eq else 2
            spec = get_registry().resolve(FLAG_KINDS[flag[:-5]], value, flag=flag[:-5])
            if spec is not None:
                spec.load()
                value = spec.class_path
            out += [flag, value]
            continue
        if flag in ("--config", "-c"):
            value = inline if eq else argv[i + 1]
            i += 1 if eq else 2
            out += [flag, _normalise_config(value, specs, has)]
            continue
        if flag == "--metrics":
            values = [inline] if eq else []
            j = i + 1
            while not eq and j < len(argv) and not argv[j].startswith("-"):
                values.append(argv[j])
                j += 1
            i = j if not eq else i + 1
            refs = [v for value in values for v in _split_list(value)]
            for ref in refs:
                get_registry().resolve("metric", ref, flag="--metrics")
            out += ["--metrics", json.dumps(refs)]
            continue
        out.append(arg)
        i += 1
    return NormalisedArgs(out, specs, has)


def _split_list(value: str) -> list[str]:
    value = value.strip()
    if value.startswith("["):
        try:
            return [str(v) for v in json.loads(value)]
        except json.JSONDecodeError:
            value = value.strip("[]")
    return [v.strip().strip("'\"") for v in value.split(",") if v.strip()]
