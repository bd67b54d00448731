"""The error types of the edge runtime (standard library only).

:class:`UadError` is the base of every error meant for the user, in ``uad_edge`` and in the full ``uad_plugins``
package alike: ``uad_plugins.errors`` re-exports this very class and derives its other kinds from it, so an
:class:`EdgeError` is a ``uad_plugins.errors.UadError`` and every ``except UadError`` there catches it. Its message
is one block that says what was asked, what went wrong and what to do; ``uad-edge`` and ``uad`` print it without a
traceback and exit with status 2.
"""

from __future__ import annotations

__all__ = ["EdgeError", "UadError"]


class UadError(Exception):
    """Base class for every error meant for the user (exit status 2 in the CLI)."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message.rstrip()
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        """The full message block: the error, then the hint on how to fix it."""
        return self.message if not self.hint else f"{self.message}\n{self.hint}"


class EdgeError(UadError):
    """A bundle or an input the runtime cannot use; the message says what and what to do (CLI exit status 2)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
