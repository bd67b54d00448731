"""``import_object``: the object a dotted path names. Standard library only, and nothing else of ``uad_plugins``.

Two spellings:

- ``"package.module:Attr.sub"``: the module before the colon, then the attributes after it, one by one;
- ``"package.module.Attr"``: the module before the last dot, then that one attribute.

Errors are not wrapped (``ImportError``, ``AttributeError``, ``ValueError`` for an empty module name, and whatever
the imported module raises): callers wrap them in the message that fits what they were loading.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["import_object", "split_object_path"]


def split_object_path(path: str) -> tuple[str, list[str]]:
    """``"pkg.mod:A.b"`` -> ``("pkg.mod", ["A", "b"])``; ``"pkg.mod.A"`` -> ``("pkg.mod", ["A"])``."""
    if ":" in path:
        module_name, _, attrs = path.partition(":")
        return module_name, attrs.split(".")
    module_name, _, attr = path.rpartition(".")
    return module_name, [attr]


def import_object(path: str) -> Any:
    """Import the module of ``path`` and return the attribute it names (see the module docstring)."""
    module_name, attrs = split_object_path(path)
    obj: Any = importlib.import_module(module_name)
    for attr in attrs:
        obj = getattr(obj, attr)
    return obj
