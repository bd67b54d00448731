"""``uad serve``: a KServe v2 (Open Inference Protocol) HTTP server over one bundle, torch-free.

It needs the edge runtime (openvino, numpy, pillow) plus fastapi and uvicorn (``pip install 'uad-edge[serve]'``),
never torch: it imports only ``uad_edge``.

    from uad_edge.serving import load_app, serve
    serve("RUN/bundle_fp32", host="127.0.0.1", port=8000)     # blocks; Ctrl-C stops it
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uad_edge.errors import UadError

__all__ = ["DEFAULT_PORT", "load_app", "model_name_of", "serve"]

DEFAULT_PORT = 8000
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def model_name_of(bundle: str | Path, name: str | None = None) -> str:
    """The served model's name: ``name``, else the bundle folder's name; a name that does not fit in a URL path
    segment is a :class:`UadError`."""
    chosen = name if name is not None else Path(bundle).resolve().name
    if not _NAME.fullmatch(chosen):
        raise UadError(f"model name {chosen!r} cannot be used in a URL.",
                       hint="Pass --name with letters, digits, '_', '.' or '-' (at most 128 characters).")
    return chosen


def load_app(bundle: str | Path, *, name: str | None = None, device: str = "CPU", infer_requests: int | None = None,
             limits: Any = None) -> tuple[Any, str]:
    """Load and verify ``bundle`` (sha256, format version: an :class:`~uad_edge.EdgeError` otherwise) and
    build the application; returns ``(app, model name)``."""
    from uad_edge import load_bundle
    from uad_edge.serving.app import create_app

    served = model_name_of(bundle, name)
    if infer_requests is not None and infer_requests < 1:
        raise UadError(f"--infer_requests must be at least 1, got {infer_requests}.")
    model = load_bundle(bundle, device=device)
    return create_app(model, name=served, limits=limits, infer_requests=infer_requests), served


def serve(bundle: str | Path, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT, name: str | None = None,
          device: str = "CPU", infer_requests: int | None = None, limits: Any = None, log_level: str = "warning",
          announce: Callable[[str], None] = print) -> None:
    """Load ``bundle``, listen on ``host:port`` and serve until interrupted; everything that can fail (the bundle,
    the name, the port) fails before the first request, as a :class:`UadError`."""
    from uad_edge.serving.server import bind, run

    app, served = load_app(bundle, name=name, device=device, infer_requests=infer_requests, limits=limits)
    sock = bind(host, port)
    bound = sock.getsockname()
    announce(f"serving {served} ({Path(bundle)}) on http://{host}:{bound[1]}  "
             f"[KServe v2: /v2/models/{served}/infer, image upload: /v2/models/{served}/score; Ctrl-C stops]")
    run(app, sock, log_level=log_level)
