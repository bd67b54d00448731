"""`uad serve`: the real server on 127.0.0.1 (an ephemeral port, a background thread), called with httpx: KServe v2
endpoints, the image endpoint, concurrent requests equal to `EdgeModel.predict`, every bad input a 4xx JSON error,
CLI errors (port in use, a damaged bundle) and a torch-free run of the CLI in a subprocess."""

from __future__ import annotations

import base64
import io
import json
import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytestmark = pytest.mark.slow

LIMIT = 1 << 20  # a small body limit, so the oversized-upload test stays small


def _demo_images(n: int = 3) -> list[Path]:
    from uad_plugins.data import default_demo_root

    return sorted((default_demo_root() / "washer" / "test").rglob("*.png"))[:n]


@pytest.fixture(scope="module")
def edge(bundle: Path):
    from uad_edge import load_bundle

    return load_bundle(bundle)


@pytest.fixture(scope="module")
def server(bundle: Path) -> Iterator[tuple[httpx.Client, str]]:
    """The server of the session's bundle (served as its folder's name) and a client; stopped after the module."""
    from uad_edge.serving import load_app
    from uad_edge.serving.limits import ServeLimits
    from uad_edge.serving.server import running

    app, name = load_app(bundle, limits=ServeLimits(max_body_bytes=LIMIT, max_batch=4), infer_requests=4)
    with running(app, timeout=60) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client, name


def _tensor_request(x: np.ndarray, **extra: object) -> dict:
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.reshape(-1).tolist()}], **extra}


def _outputs(answer: dict) -> dict[str, np.ndarray]:
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in answer["outputs"]}


def test_health_and_metadata(server, bundle: Path) -> None:
    client, name = server
    assert name == bundle.name
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get(f"/v2/models/{name}/ready").json() == {"name": name, "ready": True}
    meta = client.get(f"/v2/models/{name}").json()
    assert meta["name"] == name and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 64, 64]}]
    outputs = {o["name"]: o for o in meta["outputs"]}
    assert outputs["pred_score"] == {"name": "pred_score", "datatype": "FP32", "shape": [-1]}
    assert outputs["pred_label"]["datatype"] == "BOOL"
    assert outputs["anomaly_map"]["shape"] == [-1, 1, 64, 64]
    assert meta["parameters"]["score_threshold"] == 0.5
    assert client.get(f"/v2/models/{name}/versions/1").json() == meta
    for path in ("/v2/models/other", f"/v2/models/{name}/versions/2", "/nowhere"):
        answer = client.get(path)
        assert answer.status_code == 404 and set(answer.json()) == {"error"}


def test_concurrent_infer_equals_predict(server, edge) -> None:
    """16 clients at once, each its own input (some batches of 2): every answer is `EdgeModel.predict`'s."""
    client, name = server
    rng = np.random.default_rng(0)
    inputs = [rng.random((1 + i % 2, 3, 64, 64), dtype=np.float32) for i in range(32)]

    def call(x: np.ndarray) -> dict:
        answer = client.post(f"/v2/models/{name}/infer", json=_tensor_request(x, id=str(x.sum())))
        assert answer.status_code == 200, answer.text
        return answer.json()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(call, inputs))
    for x, answer in zip(inputs, answers):
        assert answer["model_name"] == name and answer["id"] == str(x.sum())
        out = _outputs(answer)
        want = edge.predict(x, batch_size=len(x))
        np.testing.assert_allclose(out["pred_score"], want.pred_score, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(out["pred_label"], want.pred_label)
        np.testing.assert_allclose(out["anomaly_map"].reshape(want.anomaly_map.shape), want.anomaly_map,
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["raw_score"], want.raw_score, rtol=1e-5, atol=1e-6)


def test_infer_nested_data_and_chosen_outputs(server, edge) -> None:
    client, name = server
    x = np.random.default_rng(1).random((1, 3, 64, 64), dtype=np.float32)
    body = {"inputs": [{"name": "input", "shape": [1, 3, 64, 64], "datatype": "FP32", "data": x.tolist()}],
            "outputs": [{"name": "pred_score"}, {"name": "pred_label"}]}
    answer = client.post(f"/v2/models/{name}/versions/1/infer", json=body).json()
    assert [o["name"] for o in answer["outputs"]] == ["pred_score", "pred_label"]
    assert answer["outputs"][0]["data"] == pytest.approx(edge.predict(x).pred_score.tolist(), rel=1e-5)


def test_score_an_uploaded_image(server, edge) -> None:
    from PIL import Image

    client, name = server
    image = _demo_images(1)[0]
    want = edge.predict([image], resize=True)
    data = image.read_bytes()
    as_form = client.post(f"/v2/models/{name}/score", params={"resize": "true"},
                          files={"file": (image.name, data, "image/png")})
    assert as_form.status_code == 200, as_form.text
    result = as_form.json()
    assert result["pred_score"] == pytest.approx(float(want.pred_score[0]), rel=1e-5, abs=1e-6)
    assert result["pred_label"] == bool(want.pred_label[0]) and result["threshold"] == 0.5
    assert result["raw_score"] == pytest.approx(float(want.raw_score[0]), rel=1e-5, abs=1e-6)
    with Image.open(io.BytesIO(base64.b64decode(result["heatmap_png"]))) as heat:
        assert heat.format == "PNG" and heat.size == (64, 64)
    raw = client.post(f"/v2/models/{name}/score?resize=1&heatmap=false", content=data)
    assert raw.json()["pred_score"] == result["pred_score"] and "heatmap_png" not in raw.json()
    png = client.post(f"/v2/models/{name}/score?resize=true", content=data, headers={"Accept": "image/png"})
    assert png.headers["content-type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert float(png.headers["x-pred-score"]) == result["pred_score"]
    assert png.headers["x-pred-label"] == str(result["pred_label"]).lower()


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 90, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def _nan_body() -> bytes:
    return json.dumps(_tensor_request(np.full((1, 3, 64, 64), np.nan, np.float32))).encode()


def _with(**fields: object) -> bytes:
    entry = {"name": "input", "shape": [1, 3, 64, 64], "datatype": "FP32", "data": [0.5] * (3 * 64 * 64)}
    entry.update(fields)
    return json.dumps({"inputs": [entry]}).encode()


BAD_INFER = {
    "not JSON": (b"{inputs: nope", 400, "not JSON"),
    "a JSON list": (b"[1, 2]", 400, "not an object"),
    "no inputs": (b"{}", 400, "exactly one tensor"),
    "wrong input name": (_with(name="image"), 400, "unknown input"),
    "wrong datatype": (_with(datatype="FP64"), 400, "send FP32"),
    "wrong shape": (_with(shape=[1, 3, 32, 32]), 400, "does not match"),
    "batch over the limit": (_with(shape=[5, 3, 64, 64]), 400, "N <= 4"),
    "too few values": (_with(data=[0.5] * 10), 400, "needs 12288"),
    "strings": (_with(data=["0.5"] * (3 * 64 * 64)), 400, "numbers only"),
    "ragged": (_with(data=[[0.5, 0.5], [0.5]]), 400, "regular array"),
    "NaN": (_nan_body(), 400, "NaN"),
    "unknown output": (json.dumps({**json.loads(_with()), "outputs": [{"name": "x"}]}).encode(), 400,
                       "unknown output"),
    "oversized": (b"[" + b"0.5," * (LIMIT // 4 + 10) + b"0.5]", 413, "limit"),
}


@pytest.mark.parametrize("case", list(BAD_INFER))
def test_bad_infer_requests_answer_4xx_json(server, case: str) -> None:
    client, name = server
    body, status, words = BAD_INFER[case]
    answer = client.post(f"/v2/models/{name}/infer", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == status, answer.text
    assert set(answer.json()) == {"error"} and words in answer.json()["error"]


BAD_UPLOADS = {
    "not an image": (b"GIF89a but not really", "", 400, "not an image"),
    "empty": (b"", "", 400, "empty"),
    "wrong size without resize": (_png(80, 60), "", 400, "?resize=true"),
    "bad flag": (_png(64, 64), "?resize=maybe", 400, "true or false"),
    "oversized": (b"\0" * (LIMIT + 1), "", 413, "limit"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_uploads_answer_4xx_json(server, case: str) -> None:
    client, name = server
    data, query, status, words = BAD_UPLOADS[case]
    answer = client.post(f"/v2/models/{name}/score{query}", content=data)
    assert answer.status_code == status, answer.text
    assert set(answer.json()) == {"error"} and words in answer.json()["error"]
    form = client.post(f"/v2/models/{name}/score", files={"other": ("a.png", _png(64, 64), "image/png")})
    assert form.status_code == 400 and "'file'" in form.json()["error"]


def test_chunked_upload_over_the_limit_is_refused(server) -> None:
    """No Content-Length: the body is counted as it streams in."""
    client, name = server

    def chunks() -> Iterator[bytes]:
        for _ in range(LIMIT // 65536 + 2):
            yield b"\0" * 65536

    answer = client.post(f"/v2/models/{name}/score", content=chunks())
    assert answer.status_code == 413 and "limit" in answer.json()["error"]


def test_cli_errors(bundle: Path, tmp_path: Path, uad) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        code, _, err = uad("serve", bundle, "--port", str(taken.getsockname()[1]))
    finally:
        taken.close()
    assert code == 2 and "cannot listen on 127.0.0.1" in err and "--port" in err and "Traceback" not in err
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    (broken / "model.bin").write_bytes((broken / "model.bin").read_bytes()[:-10])
    code, _, err = uad("serve", broken, "--port", "0")
    assert code == 2 and "model.bin is corrupt" in err
    future = tmp_path / "future"
    shutil.copytree(bundle, future)
    manifest = json.loads((future / "manifest.json").read_text())
    (future / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    code, _, err = uad("serve", future, "--port", "0")
    assert code == 2 and "format version 99" in err
    code, _, err = uad("serve", bundle, "--port", "0", "--name", "a/b")
    assert code == 2 and "cannot be used in a URL" in err


def test_cli_serves_without_torch(bundle: Path, block_torch: str) -> None:
    """`uad serve` in a process where importing torch fails: it answers, and Ctrl-C stops it with status 0."""
    code = block_torch + textwrap.dedent(f"""
        from uad_plugins.cli.main import main
        rc = main(['serve', {str(bundle)!r}, '--port', '0'])
        assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'anomalib', 'lightning')]
        print('EXIT', rc, flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        assert line.startswith("serving "), line + child.stderr.read()
        url = line.split(" on ", 1)[1].split()[0]
        name = bundle.name
        assert httpx.get(f"{url}/v2/health/ready", timeout=30).status_code == 200
        answer = httpx.post(f"{url}/v2/models/{name}/score?resize=true", content=_demo_images(1)[0].read_bytes(),
                            timeout=30)
        assert answer.status_code == 200 and 0 <= answer.json()["pred_score"] <= 1
        child.send_signal(2)  # SIGINT
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    assert child.returncode == 0 and "EXIT 0" in out, out + err
