"""`--layout ovms`: OVMS's model repository written from a bundle, and the KServe v2 request OVMS documents for the
same model (`POST /v2/models/{name}/versions/{version}/infer`, `inputs: [{name, shape, datatype, data}]`) answered
by `uad serve` exactly as the repository's model.xml computes it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_layout_from_a_bundle(bundle: Path, tmp_path: Path) -> None:
    from uad_edge import EdgeError
    from uad_edge.ovms import OVMS_MANIFEST, write_ovms_layout

    repo = tmp_path / "repo"
    first = write_ovms_layout(bundle, repo, name="washer")
    assert first.path == repo / "washer" / "1" and first.version == 1
    assert sorted(p.name for p in first.path.iterdir()) == ["model.bin", "model.xml", OVMS_MANIFEST]
    for name in ("model.xml", "model.bin"):
        assert (first.path / name).read_bytes() == (bundle / name).read_bytes()
    manifest = json.loads((first.path / OVMS_MANIFEST).read_text())
    assert manifest["inference_precision_hint"] == "f32" and "image_threshold" in manifest["postprocessing"]
    assert "--plugin_config '{\"INFERENCE_PRECISION_HINT\":\"f32\"}'" in first.command()
    assert f"--model_path {repo / 'washer'} --model_name washer" in first.command()
    assert write_ovms_layout(bundle, repo, name="washer").version == 2  # never over a version: the next one
    before = sorted(str(p.relative_to(repo)) for p in repo.rglob("*"))
    with pytest.raises(EdgeError, match="never overwritten"):
        write_ovms_layout(bundle, repo, name="washer", version=1)
    (repo / "afile").write_text("mine")
    with pytest.raises(EdgeError, match="not a folder"):
        write_ovms_layout(bundle, repo, name="afile")
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    (broken / "model.bin").write_bytes((broken / "model.bin").read_bytes()[:-4])
    with pytest.raises(EdgeError, match="corrupt"):
        write_ovms_layout(broken, repo, name="washer")
    assert sorted(str(p.relative_to(repo)) for p in repo.rglob("*")) == sorted([*before, "afile"])  # no temp left
    assert write_ovms_layout(bundle, repo).name == bundle.name  # the default name, as for uad serve


def test_ovms_request_format_is_served(bundle: Path, tmp_path: Path) -> None:
    import httpx
    import openvino as ov

    from uad_edge.ovms import write_ovms_layout
    from uad_edge.serving import load_app
    from uad_edge.serving.kserve import datatype_of
    from uad_edge.serving.server import running

    ovms = write_ovms_layout(bundle, tmp_path / "repo", name="washer")
    compiled = ov.Core().compile_model(ovms.path / "model.xml", "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = np.random.default_rng(3).random((2, 3, 64, 64), dtype=np.float32)
    direct = compiled(x)
    # the request as OVMS's KServe REST documentation writes it: model name and version in the URL, one input
    # named as the model's input, FP32, its shape, the values flat in row-major order
    request = {"id": "ovms-1", "inputs": [{"name": compiled.inputs[0].get_any_name(), "shape": [2, 3, 64, 64],
                                           "datatype": "FP32", "data": x.reshape(-1).tolist()}]}
    app, name = load_app(bundle, name=ovms.name)
    with running(app, timeout=60) as url, httpx.Client(base_url=url, timeout=60) as client:
        meta = client.get(f"/v2/models/{name}/versions/{ovms.version}").json()
        answer = client.post(f"/v2/models/{name}/versions/{ovms.version}/infer", json=request)
    assert meta["inputs"][0]["name"] == compiled.inputs[0].get_any_name()
    assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == \
        [(p.get_any_name(), datatype_of(p)) for p in compiled.outputs]
    assert answer.status_code == 200 and answer.json()["id"] == "ovms-1"
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    for port in compiled.outputs:
        got = outputs[port.get_any_name()]
        want = np.asarray(direct[port])
        assert got["shape"] == list(want.shape)
        np.testing.assert_allclose(np.asarray(got["data"], dtype=np.float64).reshape(want.shape),
                                   want.astype(np.float64), rtol=1e-5, atol=1e-6)


def test_export_layout_ovms(checkpoint: Path, tmp_path: Path, uad) -> None:
    (tmp_path / "taken").write_text("a file")
    code, _, err = uad("export", "--ckpt_path", checkpoint, "--output", tmp_path / "b0", "--layout", "ovms",
                       "--ovms_repo", tmp_path / "taken")
    assert code == 2 and "not a folder" in err and not (tmp_path / "b0").exists()
    code, out, err = uad("export", "--ckpt_path", checkpoint, "--output", tmp_path / "run" / "bundle_fp32",
                         "--layout", "ovms")
    assert code == 0, err
    version = tmp_path / "run" / "ovms" / "bundle_fp32" / "1"
    assert (version / "model.xml").read_bytes() == (tmp_path / "run" / "bundle_fp32" / "model.xml").read_bytes()
    assert "ovms --model_path" in out and "INFERENCE_PRECISION_HINT" in out
