"""The slim install: ``pip install packages/uad-edge`` into a fresh virtual environment (openvino, numpy and pillow
from the registry; no torch, lightning or anomalib), then a real bundle scored with its ``uad-edge infer`` console
script, equal to the runtime's scores in this process. Skipped when the package registry cannot be reached."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
EDGE = REPO / "packages" / "uad-edge"
#: never in the slim environment
HEAVY = {"torch", "torchvision", "lightning", "pytorch-lightning", "anomalib", "uad-plugins", "uad_plugins"}
#: what pip prints when it cannot reach a package index (its retries and the final failure)
UNREACHABLE = ("NewConnectionError", "ConnectTimeout", "ConnectTimeoutError", "ReadTimeoutError",
               "Temporary failure in name resolution", "Network is unreachable", "Max retries exceeded",
               "ProxyError", "Failed to establish a new connection")
#: the slim environment's site-packages must stay well below a torch install (torch alone is several hundred MB)
MAX_SITE_PACKAGES_MB = 400

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _env() -> dict[str, str]:
    """This process's environment without what would let the fresh environment see this one's packages."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, "PYTHONNOUSERSITE": "1"}


def _bin(venv: Path, name: str) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin") / name


def _run(*argv: object, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run outside the repository (``python -c`` would otherwise import uad_plugins from the current folder)."""
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, env=_env(), cwd=cwd)


@pytest.fixture(scope="module")
def slim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with ``packages/uad-edge`` installed for real (a wheel built from a copy: nothing is written into
    the repository), and nothing else."""
    root = tmp_path_factory.mktemp("slim")
    source = shutil.copytree(EDGE, root / "uad-edge",
                             ignore=shutil.ignore_patterns("*.egg-info", "build", "dist", "__pycache__"))
    venv = root / "venv"
    made = _run(sys.executable, "-m", "venv", venv, cwd=root)
    assert made.returncode == 0, made.stderr
    try:
        result = _run(_bin(venv, "python"), "-m", "pip", "install", "--disable-pip-version-check", source,
                      cwd=root, timeout=600)
    except subprocess.TimeoutExpired:
        pytest.skip("pip install packages/uad-edge took over 600 s: the package registry is unreachable or too slow")
    if result.returncode != 0:
        output = result.stdout + result.stderr
        if any(word in output for word in UNREACHABLE):
            pytest.skip("the package registry cannot be reached: " + output.strip().splitlines()[-1][:300])
        pytest.fail("pip install packages/uad-edge failed:\n" + output[-4000:])
    return venv


def _site_packages(venv: Path) -> Path:
    return next(venv.glob("lib/python3*/site-packages")) if os.name != "nt" else venv / "Lib" / "site-packages"


def test_slim_install_has_no_torch(slim: Path) -> None:
    listed = _run(_bin(slim, "python"), "-m", "pip", "list", "--format", "json", cwd=slim)
    assert listed.returncode == 0, listed.stderr
    names = {row["name"].lower().replace("_", "-") for row in json.loads(listed.stdout)}
    assert not names & {n.replace("_", "-") for n in HEAVY}, sorted(names)
    assert {"uad-edge", "openvino", "numpy", "pillow"} <= names, sorted(names)
    assert not names & {"fastapi", "uvicorn"}, "the server comes only with the serve extra"
    probe = _run(_bin(slim, "python"), "-c", "import uad_edge, sys; print(uad_edge.__file__); "
                 "import importlib.util as u; print([m for m in ('torch', 'uad_plugins', 'lightning', 'anomalib') "
                 "if u.find_spec(m)])", cwd=slim)
    assert probe.returncode == 0, probe.stderr
    where, found = probe.stdout.splitlines()
    assert Path(where).resolve().is_relative_to(slim.resolve()) and found == "[]", probe.stdout
    size = sum(f.stat().st_size for f in _site_packages(slim).rglob("*") if f.is_file() and not f.is_symlink())
    print(f"slim site-packages: {size / 2**20:.0f} MiB; {sorted(names)}")
    assert size < MAX_SITE_PACKAGES_MB * 2**20


def test_uad_edge_infer_scores_a_real_bundle(slim: Path, tiny_edge_bundle: Path, tmp_path: Path) -> None:
    from PIL import Image

    from uad_edge import load_bundle

    rng = np.random.default_rng(3)
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(5):  # another size than the bundle's: --resize
        Image.fromarray(rng.integers(0, 256, (80, 72, 3), dtype=np.uint8)).save(images / f"p_{i}.png")
    result = _run(_bin(slim, "uad-edge"), "infer", tiny_edge_bundle, images, "--output", tmp_path / "out", "--resize",
                  cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads((tmp_path / "out" / "scores.json").read_text())
    scored = {Path(p["image"]).name: p["pred_score"] for p in document["predictions"]}
    files = sorted(images.glob("*.png"))
    want = load_bundle(tiny_edge_bundle).predict([str(f) for f in files], resize=True).pred_score
    assert [scored[f.name] for f in files] == pytest.approx(want.tolist(), rel=1e-5, abs=1e-6)
    assert len(list((tmp_path / "out" / "overlays").glob("*.png"))) == len(files)

    streamed = _run(_bin(slim, "uad-edge"), "infer", tiny_edge_bundle, images, "--output", tmp_path / "rows",
                    "--resize", "--format", "jsonl", "--quiet", cwd=tmp_path)
    assert streamed.returncode == 0, streamed.stderr
    assert len((tmp_path / "rows" / "scores.jsonl").read_text().splitlines()) == len(files)


def test_uad_edge_errors_are_one_block(slim: Path, tiny_edge_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    missing = _run(_bin(slim, "uad-edge"), "infer", tmp_path / "no_bundle", tmp_path / "imgs", "--output",
                   tmp_path / "o", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.startswith("error: bundle not found")
    assert "Traceback" not in missing.stderr
    # the server needs the serve extra, and says so before anything listens
    server = _run(_bin(slim, "uad-edge"), "serve", tiny_edge_bundle, "--port", "0", cwd=tmp_path)
    assert server.returncode == 2 and "uad-edge[serve]" in server.stderr and "Traceback" not in server.stderr
    version = _run(_bin(slim, "uad-edge"), "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("uad-edge ")
