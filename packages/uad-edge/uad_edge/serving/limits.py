"""Request limits: body bytes (checked on ``Content-Length`` and while the body streams in, so an oversized upload is
refused before it is held in memory), batch size and image pixels."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse

from uad_edge.serving.errors import RequestError

__all__ = ["BodyLimit", "ServeLimits"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class ServeLimits:
    """``max_body_bytes`` per request (JSON or upload), ``max_batch`` tensors per infer request,
    ``max_image_pixels`` of an uploaded image (checked from its header, before decoding)."""

    max_body_bytes: int = 32 << 20
    max_batch: int = 16
    max_image_pixels: int = 50_000_000

    def __post_init__(self) -> None:
        for key in ("max_body_bytes", "max_batch", "max_image_pixels"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be at least 1, got {getattr(self, key)}")


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` answers 413 ``{"error": ...}``."""

    def __init__(self, app: Callable[..., Awaitable[None]], max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> str:
        return f"the request body is larger than the server's limit of {self.max_bytes} bytes (--max_body_mb)."

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            status = 413 if length.isdigit() else 400
            message = self._too_large() if status == 413 else "the Content-Length header is not a number."
            await JSONResponse({"error": message}, status_code=status)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:  # a chunked body without Content-Length
                    raise RequestError(413, self._too_large())
            return message

        await self.app(scope, counted, send)
