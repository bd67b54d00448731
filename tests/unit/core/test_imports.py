"""The ground floor: ``import_object``, the version module, and imports that point down."""

from __future__ import annotations

import ast
import collections
import os.path
from pathlib import Path

import pytest

import uad_plugins
from uad_plugins.imports import import_object, split_object_path
from uad_plugins.version import __version__

PACKAGE = Path(uad_plugins.__file__).parent


def test_colon_path_walks_attributes() -> None:
    assert import_object("collections:OrderedDict") is collections.OrderedDict
    assert import_object("os:path.join") is os.path.join
    assert import_object("uad_plugins.specs:ModelSpec.load") is uad_plugins.ModelSpec.load


def test_dotted_path_takes_the_last_part() -> None:
    assert import_object("collections.OrderedDict") is collections.OrderedDict
    assert import_object("os.path") is os.path


def test_split_object_path() -> None:
    assert split_object_path("pkg.mod:A.b") == ("pkg.mod", ["A", "b"])
    assert split_object_path("pkg.mod.A") == ("pkg.mod", ["A"])


@pytest.mark.parametrize(("path", "error"), [
    ("uad_no_such_module.Thing", ImportError),
    ("collections.NoSuchThing", AttributeError),
    ("collections:OrderedDict.no_such_attr", AttributeError),
    ("NoDot", ValueError),  # no module part at all
])
def test_errors_are_not_wrapped(path: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        import_object(path)


def test_one_version() -> None:
    assert uad_plugins.__version__ == __version__


def _is_hook_module(path: Path) -> bool:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] == "plugins" and len(parts) == 3 and parts[2] == "hooks.py"


def test_no_module_imports_the_package_root() -> None:
    """Only the plugins' hook modules use the public ``uad_plugins`` names (as third-party plugins do)."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "__init__.py" or _is_hook_module(path):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "uad_plugins":
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
            elif isinstance(node, ast.Import) and any(alias.name == "uad_plugins" for alias in node.names):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not offenders, offenders
