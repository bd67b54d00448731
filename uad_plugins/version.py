"""The package version, in one place: ``pyproject.toml`` reads it (setuptools ``attr:``) and the code imports it.

Standard library only, and nothing else of ``uad_plugins``: any module may import it.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
