"""Load run of ``uad serve``: requests/s and p50/p95 latency with 1, 4 and 16 concurrent clients (not a test, not in
CI; bounded: ``--seconds`` per endpoint and client count).

The server runs as ``uad serve BUNDLE --port 0`` in a child process (its own interpreter, as in production); the
clients are threads here with one httpx connection each, sending back-to-back requests for ``--seconds``:

- ``infer``: ``POST /v2/models/NAME/infer`` with one FP32 tensor ``[1, 3, H, W]`` as JSON (all outputs back);
- ``score``: ``POST /v2/models/NAME/score?resize=true`` with a PNG file (score, label and heatmap PNG back).

Exact command used for docs/deploy.md (a tiny PBAS bundle, 64x64; build one with tests/export/conftest.py's
settings or any ``uad export`` output)::

    nice -n 5 python tools/serve_load.py RUN/bundle_fp32 --image IMAGE.png --seconds 8 --clients 1 4 16

Prints one Markdown table and, with ``--json PATH``, writes the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np


def _start(bundle: str, infer_requests: int | None) -> tuple[subprocess.Popen, str, str]:
    cmd = [sys.executable, "-m", "uad_plugins", "serve", bundle, "--port", "0"]
    if infer_requests:
        cmd += ["--infer_requests", str(infer_requests)]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = child.stdout.readline()
    if not line.startswith("serving "):
        child.kill()
        raise SystemExit(f"the server did not start: {line}{child.stderr.read()}")
    name = line.split()[1]
    url = line.split(" on ", 1)[1].split()[0]
    return child, url, name


def _load(url: str, path: str, body: bytes, headers: dict[str, str], clients: int, seconds: float) -> dict:
    import httpx

    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    stop = time.perf_counter() + seconds

    def client(i: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            while time.perf_counter() < stop:
                start = time.perf_counter()
                answer = http.post(path, content=body, headers=headers)
                latencies[i].append(time.perf_counter() - start)
                errors[i] += answer.status_code != 200

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    times = np.asarray([x for per in latencies for x in per]) * 1000
    return {"clients": clients, "requests": int(times.size), "errors": int(sum(errors)),
            "requests_per_s": round(times.size / elapsed, 1), "p50_ms": round(float(np.percentile(times, 50)), 2),
            "p95_ms": round(float(np.percentile(times, 95)), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--image", required=True, help="a PNG/JPEG for the score endpoint")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--infer_requests", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    manifest = json.loads((Path(args.bundle) / "manifest.json").read_text())
    height, width = manifest["input"]["height"], manifest["input"]["width"]
    x = np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32)
    tensor = json.dumps({"inputs": [{"name": "input", "shape": [1, 3, height, width], "datatype": "FP32",
                                     "data": x.reshape(-1).tolist()}]}).encode()
    child, url, name = _start(args.bundle, args.infer_requests)
    rows = []
    try:
        endpoints = {"infer": (f"/v2/models/{name}/infer", tensor, {"content-type": "application/json"}),
                     "score": (f"/v2/models/{name}/score?resize=true", Path(args.image).read_bytes(), {})}
        for endpoint, (path, body, headers) in endpoints.items():
            _load(url, path, body, headers, 1, 1.0)  # warm-up
            for clients in args.clients:
                rows.append({"endpoint": endpoint, **_load(url, path, body, headers, clients, args.seconds)})
    finally:
        child.send_signal(2)
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
    print(f"bundle {args.bundle} ({height}x{width}, {manifest.get('precision')}), {os.cpu_count()} logical CPUs, "
          f"load average at the end {os.getloadavg()[0]:.1f}")
    print("| endpoint | clients | requests/s | p50 ms | p95 ms | requests | errors |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['endpoint']} | {r['clients']} | {r['requests_per_s']} | {r['p50_ms']} | {r['p95_ms']} | "
              f"{r['requests']} | {r['errors']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
