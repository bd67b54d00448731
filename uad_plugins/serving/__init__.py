"""``uad serve``'s HTTP server, re-exported from ``uad_edge.serving`` (``packages/uad-edge``; fastapi and uvicorn come
with ``pip install 'uad-edge[serve]'``): ``from uad_plugins.serving import serve`` is
``from uad_edge.serving import serve``. Importing it does not import fastapi."""

from uad_edge.serving import DEFAULT_PORT, load_app, model_name_of, serve

__all__ = ["DEFAULT_PORT", "load_app", "model_name_of", "serve"]
