"""The one error a request can cause: an HTTP status (4xx) and a message, answered as ``{"error": message}``."""

from __future__ import annotations

__all__ = ["RequestError"]


class RequestError(Exception):
    """A request the server refuses: ``status`` (400, 404, 413, 415, 422) and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
