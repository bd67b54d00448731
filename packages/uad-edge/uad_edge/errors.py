"""The edge runtime's error type: a :class:`~uad_plugins.errors.UadError` (that module is standard library only, so
the runtime stays torch-free)."""

from __future__ import annotations

from uad_plugins.errors import UadError

__all__ = ["EdgeError"]


class EdgeError(UadError):
    """A bundle or an input the runtime cannot use; the message says what and what to do (CLI exit status 2)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
