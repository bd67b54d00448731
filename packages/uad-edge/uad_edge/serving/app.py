"""The FastAPI application: KServe v2 endpoints over one bundle, the image endpoint, and errors as
``{"error": "..."}`` with a 4xx status (an unexpected failure answers 500 with the same shape, never a traceback).

Routes (``{name}`` is the served model's name; ``/versions/1`` may be inserted after it, as OVMS clients do):
``GET /v2``, ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2/models/{name}``,
``GET /v2/models/{name}/ready``, ``POST /v2/models/{name}/infer`` and ``POST /v2/models/{name}/score`` (an image
file: raw bytes or multipart field ``file``; ``?resize=true``, ``?heatmap=false``; ``Accept: image/png`` answers
the heatmap PNG with the score in headers).
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from uad_edge.serving.errors import RequestError
from uad_edge.serving.images import decode_image, heatmap_png
from uad_edge.serving.kserve import model_metadata, output_tensors, parse_infer_request
from uad_edge.serving.limits import BodyLimit, ServeLimits
from uad_edge.serving.pool import InferPool
from uad_edge.version import __version__

__all__ = ["ModelService", "create_app"]

LOG = logging.getLogger("uad_edge.serving")
VERSION = "1"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass
class ModelService:
    """One loaded bundle behind the routes: its name, its pool of infer requests and the request limits."""

    model: Any
    name: str
    pool: InferPool
    limits: ServeLimits

    def check(self, name: str, version: str | None = None) -> None:
        """A 404 unless ``name`` (and ``version``) is the model served here."""
        if name != self.name:
            raise RequestError(404, f"model {name!r} is not served here; this server serves {self.name!r}.")
        if version is not None and version != VERSION:
            raise RequestError(404, f"model {name!r} has no version {version!r}; it has version {VERSION}.")

    def infer(self, body: bytes) -> dict[str, Any]:
        """A KServe v2 infer request body to its response."""
        request = parse_infer_request(body, self.model, max_batch=self.limits.max_batch)
        outputs = self.pool.run(request.batch)
        answer: dict[str, Any] = {"model_name": self.name, "model_version": VERSION}
        if request.id is not None:
            answer["id"] = request.id
        answer["outputs"] = output_tensors(self.model, outputs, request.outputs)
        return answer

    def score(self, data: bytes, *, resize: bool, heatmap: bool) -> tuple[dict[str, Any], bytes | None]:
        """An image file to its score, label and (when asked) the heatmap overlay PNG."""
        if self.model.modality != "image":
            raise RequestError(400, f"model {self.name!r} takes signal windows; use /v2/models/{self.name}/infer.")
        image = decode_image(data, self.model.input_size, resize=resize, max_pixels=self.limits.max_image_pixels)
        out = self.pool.run(image.tensor[None])
        amap = out["anomaly_map"].reshape(self.model.input_size)
        mask = out["pred_mask"].reshape(self.model.input_size)
        result: dict[str, Any] = {"model_name": self.name, "pred_score": float(out["pred_score"].reshape(-1)[0]),
                                  "pred_label": bool(out["pred_label"].reshape(-1)[0]), "threshold": 0.5}
        if "raw_score" in out:
            result["raw_score"] = float(out["raw_score"].reshape(-1)[0])
        result["height"], result["width"] = self.model.input_size
        return result, heatmap_png(image.rgb, amap, mask) if heatmap else None


def _flag(request: Request, key: str, default: bool) -> bool:
    value = request.query_params.get(key)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise RequestError(400, f"query parameter {key}={value!r} must be true or false.")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
        return _error(exc.status, exc.message)

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, f"invalid request: {exc.errors()[:3]}")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        LOG.error("unexpected failure: %s: %s", type(exc).__name__, exc)
        return _error(500, f"internal error ({type(exc).__name__}); see the server log.")


def create_app(model: Any, *, name: str, limits: ServeLimits | None = None,
               infer_requests: int | None = None) -> FastAPI:
    """The server's application for a loaded :class:`~uad_edge.runtime.EdgeModel` served as ``name``."""
    limits = limits or ServeLimits()
    service = ModelService(model=model, name=name, pool=InferPool(model, infer_requests), limits=limits)
    app = FastAPI(title="uad serve", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    _add_error_handlers(app)

    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "uad-edge", "version": __version__, "extensions": []}

    @app.get("/v2/health/live")
    async def live() -> dict[str, Any]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, Any]:
        return {"ready": True}

    @app.get("/v2/models/{model_name}")
    @app.get("/v2/models/{model_name}/versions/{version}")
    async def metadata(model_name: str, version: str | None = None) -> dict[str, Any]:
        service.check(model_name, version)
        return model_metadata(model, name, VERSION)

    @app.get("/v2/models/{model_name}/ready")
    @app.get("/v2/models/{model_name}/versions/{version}/ready")
    async def model_ready(model_name: str, version: str | None = None) -> dict[str, Any]:
        service.check(model_name, version)
        return {"name": name, "ready": True}

    @app.post("/v2/models/{model_name}/infer")
    @app.post("/v2/models/{model_name}/versions/{version}/infer")
    async def infer(model_name: str, request: Request, version: str | None = None) -> JSONResponse:
        service.check(model_name, version)
        body = await request.body()
        return JSONResponse(await run_in_threadpool(service.infer, body))

    @app.post("/v2/models/{model_name}/score")
    async def score(model_name: str, request: Request) -> Response:
        service.check(model_name)
        resize, heatmap = _flag(request, "resize", False), _flag(request, "heatmap", True)
        as_png = "image/png" in request.headers.get("accept", "")
        data = await _upload(request)
        result, png = await run_in_threadpool(service.score, data, resize=resize, heatmap=heatmap or as_png)
        if as_png:
            return Response(png, media_type="image/png", headers={
                "X-Pred-Score": repr(result["pred_score"]), "X-Pred-Label": str(result["pred_label"]).lower(),
                **({"X-Raw-Score": repr(result["raw_score"])} if "raw_score" in result else {})})
        if png is not None:
            result["heatmap_png"] = base64.b64encode(png).decode("ascii")
        return JSONResponse(result)

    return app


async def _upload(request: Request) -> bytes:
    """The image bytes: the multipart field ``file``, or the whole body."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=1, max_fields=8)
        except RequestError:
            raise
        except Exception as exc:  # a malformed multipart body is the client's error
            raise RequestError(400, f"the multipart body cannot be read ({type(exc).__name__}: {exc}).") from exc
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise RequestError(400, "the multipart form has no file field named 'file'.")
        return await upload.read()
    return await request.body()


