"""``uad serve BUNDLE`` (and ``uad-edge serve``, the same code): serve a bundle over HTTP (KServe v2 / Open Inference
Protocol, plus an image upload endpoint); torch-free: openvino, numpy, pillow, fastapi, uvicorn
(``pip install 'uad-edge[serve]'``)."""

from __future__ import annotations

import argparse

__all__ = ["serve"]


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Serve a bundle over HTTP: KServe v2 endpoints "
                                     "(/v2/health/ready, /v2/models/NAME, /v2/models/NAME/infer) and "
                                     "/v2/models/NAME/score (an image file in, score, label and heatmap PNG out). "
                                     "No authentication or TLS: keep it on 127.0.0.1 or behind a proxy.")
    parser.add_argument("bundle", help="bundle folder written by 'uad export'")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port)")
    parser.add_argument("--name", default=None, help="model name in the URLs (default: the bundle folder's name)")
    parser.add_argument("--device", default="CPU", help="OpenVINO device (CPU, GPU, AUTO, ...)")
    parser.add_argument("--infer_requests", type=int, default=None,
                        help="OpenVINO infer requests shared by the worker threads (default: the device's optimum)")
    parser.add_argument("--max_body_mb", type=float, default=32.0, help="largest request body (JSON or upload)")
    parser.add_argument("--max_batch", type=int, default=16, help="largest batch N of one infer request")
    parser.add_argument("--log_level", default="warning", choices=["debug", "info", "warning", "error"])
    return parser


def serve(argv: list[str], prog: str = "uad serve") -> int:
    """Entry point of ``uad serve`` and ``uad-edge serve`` (``prog``, for usage and messages): parse, call
    :func:`uad_edge.serving.serve`, print."""
    from uad_edge.errors import UadError

    args = _parser(prog).parse_args(argv)
    if args.max_body_mb <= 0 or args.max_batch < 1:
        raise UadError("--max_body_mb must be positive and --max_batch at least 1.")
    try:
        from uad_edge.serving import serve as serve_bundle
        from uad_edge.serving.limits import ServeLimits
    except ImportError as exc:
        raise UadError(f"{prog} needs fastapi and uvicorn ({exc}).",
                       hint="pip install 'uad-edge[serve]' (in the uad_plugins repository: "
                            "pip install 'packages/uad-edge[serve]').") from exc
    limits = ServeLimits(max_body_bytes=int(args.max_body_mb * (1 << 20)), max_batch=args.max_batch)
    try:
        serve_bundle(args.bundle, host=args.host, port=args.port, name=args.name, device=args.device,
                     infer_requests=args.infer_requests, limits=limits, log_level=args.log_level,
                     announce=lambda line: print(line, flush=True))
    except KeyboardInterrupt:  # uvicorn shuts down gracefully on Ctrl-C, then passes the signal on: a normal stop
        pass
    print("stopped", flush=True)
    return 0
