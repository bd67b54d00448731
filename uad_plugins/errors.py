"""Error types of uad_plugins.

Every error a user can cause is a :class:`UadError`. Its message is one block that says what was asked,
what went wrong and what to do; the CLI prints it without a traceback and exits with status 2.
:class:`UadError` itself is defined by the torch-free edge runtime (``uad_edge.errors``, a separate distribution that
imports nothing of uad_plugins) and re-exported here, so that its ``EdgeError`` is a :class:`UadError` too. This
module imports the standard library and ``uad_edge.errors`` only.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from uad_edge.errors import UadError

__all__ = [
    "BadReferenceError",
    "ComponentConflictError",
    "ComponentLoadError",
    "ConfigError",
    "DataError",
    "InvalidSpecError",
    "PluginLoadError",
    "UadError",
    "UnknownComponentError",
    "WeightsError",
    "WrongKindError",
    "close_matches",
]


class UnknownComponentError(UadError, KeyError):
    """A `plugin:<name>` reference that no plugin provides."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.render()


class BadReferenceError(UadError, ValueError):
    """A malformed reference: bare registered name, unknown scheme, bad syntax."""


class WrongKindError(UadError, ValueError):
    """The name exists, but as another kind (a synthesizer given to --model)."""


class ComponentConflictError(UadError):
    """Two plugins provide the same name for the same kind."""


class PluginLoadError(UadError):
    """A plugin failed to load (raised only in strict mode or when the plugin is explicitly asked for)."""


class ComponentLoadError(UadError):
    """A registered component whose target cannot be imported or has the wrong base class."""


class InvalidSpecError(UadError, ValueError):
    """A spec record with an invalid field."""


class DataError(UadError):
    """Unusable input data: empty folder, corrupt or wrong-shaped image, NaN in a signal."""


class WeightsError(UadError):
    """Backbone weights that cannot be had: offline hub, missing file, mismatching keys."""


class ConfigError(UadError, ValueError):
    """An invalid model, data or trainer setting."""


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Names from `candidates` that look like `word` (for 'did you mean' hints)."""
    return difflib.get_close_matches(word, sorted(set(candidates)), n=n, cutoff=0.6)
