"""Packaged configs cannot drift from the code: for every built-in model and synthesizer with a ``config.yaml``,
each YAML value is the class signature's default for that option (what ``plugin:<name>`` users get is what the
class documents), and the YAML names no option the class does not take."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from uad_plugins.registry import get_registry

SPECS = [spec for kind in ("model", "synthesizer") for spec in get_registry().list(kind)
         if spec.source == "builtin" and isinstance(spec.config, str)]


def _plain(value: Any) -> Any:
    """Tuples as lists (YAML has only lists), recursively, so a tuple default can equal a YAML sequence."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _same(yaml_value: Any, default: Any) -> bool:
    """Equal values; a boolean equals only a boolean (``True == 1`` does not count)."""
    if isinstance(yaml_value, bool) or isinstance(default, bool):
        return type(yaml_value) is type(default) and yaml_value == default
    if isinstance(yaml_value, list) and isinstance(default, list):
        return len(yaml_value) == len(default) and all(_same(a, b) for a, b in zip(yaml_value, default, strict=True))
    return yaml_value == default


def test_the_builtin_configs_are_found() -> None:
    names = {(spec.kind, spec.name) for spec in SPECS}
    assert {("model", "pbas"), ("model", "uniad"), ("synthesizer", "perlin")} <= names
    assert len(SPECS) >= 13


@pytest.mark.parametrize("spec", SPECS, ids=[f"{s.kind}:{s.name}" for s in SPECS])
def test_packaged_config_equals_the_signature_defaults(spec: Any) -> None:
    params = inspect.signature(spec.load().__init__).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    config = spec.default_init_args()
    assert config, f"{spec.name}: empty packaged config"
    unknown = sorted(k for k in config if k not in params and not takes_any)
    assert not unknown, f"{spec.kind} {spec.name}: config.yaml names options the class does not take: {unknown}"
    differ = {key: (value, params[key].default) for key, value in config.items() if key in params
              and not _same(_plain(value), _plain(params[key].default))}
    assert not differ, f"{spec.kind} {spec.name}: config.yaml (left) differs from the signature default: {differ}"
