"""The distribution's version, in one place: ``packages/uad-edge/pyproject.toml`` reads it (setuptools ``attr:``),
and uad_plugins' pyproject pins ``uad-edge==`` this (a test checks that they agree). Standard library only."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
