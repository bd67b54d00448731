"""The edge runtime's error type (no import from the core: the runtime stays torch-free)."""

from __future__ import annotations

__all__ = ["EdgeError"]


class EdgeError(Exception):
    """A bundle or an input the runtime cannot use; the message says what and what to do (CLI exit status 2)."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message, self.hint = message, hint
        super().__init__(self.render())

    def render(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"
