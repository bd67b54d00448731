"""The real entry-point path: pip-install the example and the broken plugin packages, then drive `uad`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {"uad-example-model": REPO / "entrypoints" / "uad-example-model",
            "uad-example-extras": REPO / "entrypoints" / "uad-example-extras",
            "uad-broken-plugin": REPO / "entrypoints" / "uad-broken-plugin"}
UAD = [sys.executable, "-m", "uad_plugins"]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Install both packages for real (a wheel build, no editable shortcut), remove them afterwards.

    They are built from copies, so the build leaves nothing in the repository.
    """
    import shutil

    copies = tmp_path_factory.mktemp("packages")
    sources = [shutil.copytree(p, copies / p.name) for p in PACKAGES.values()]
    result = _pip("install", "--no-deps", "--no-build-isolation", "--no-index", "-q", *[str(p) for p in sources])
    assert result.returncode == 0, result.stdout + result.stderr
    yield
    _pip("uninstall", "-y", "-q", *PACKAGES)


def uad(*args: str, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*UAD, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_list_shows_example_ok_and_broken_failed(installed) -> None:
    result = uad("plugins", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["plugin"]: r for r in json.loads(result.stdout)}
    example, broken = rows["example"], rows["broken"]
    assert example["status"] == "ok" and example["source"] == "entrypoint"
    assert example["distribution"] == "uad-example-model" and example["version"] == "0.1.0"
    assert example["components"] == [{"name": "example", "kind": "model", "reference": "plugin:example",
                                      "summary": example["components"][0]["summary"],
                                      "tags": ["image", "exportable"]}]
    extras = rows["example_extras"]
    assert extras["status"] == "ok" and extras["distribution"] == "uad-example-extras"
    assert [(c["kind"], c["reference"]) for c in extras["components"]] == [
        ("synthesizer", "plugin:scratch"), ("metric", "plugin:image_tpr_at_fpr")]
    assert broken["status"] == "error" and "ModuleNotFoundError" in broken["error"]
    assert rows["perlin"]["status"] == "ok"  # everything else still works


def test_show_broken_with_traceback(installed) -> None:
    result = uad("plugins", "show", "broken", "--traceback")
    assert result.returncode == 0
    assert "status:      error" in result.stdout and "Traceback" in result.stdout
    assert "uad_dependency_that_does_not_exist" in result.stdout


def test_switches(installed) -> None:
    strict = uad("plugins", "list", env={"UAD_PLUGINS_STRICT": "1"})
    assert strict.returncode == 2 and "broken" in strict.stderr and "UAD_PLUGINS_STRICT" in strict.stderr
    disabled = uad("plugins", "list", "--json", env={"UAD_DISABLE_PLUGINS": "broken"})
    rows = {r["plugin"]: r for r in json.loads(disabled.stdout)}
    assert rows["broken"]["status"] == "disabled" and rows["example"]["status"] == "ok"
    none = uad("plugins", "list", "--json", env={"UAD_LOAD_PLUGINS": ""})
    rows = {r["plugin"]: r for r in json.loads(none.stdout)}
    assert rows["example"]["status"] == rows["broken"]["status"] == "disabled"
    assert rows["perlin"]["status"] == "ok"


def test_fit_example_from_the_cli(installed, tmp_path: Path) -> None:
    # a third-party metric and a third-party validation synthesizer, from another package, in the same run
    result = uad("fit", "--model", "plugin:example", "--model.image_size", "64", "--trainer.max_epochs", "1",
                 "--trainer.enable_progress_bar", "false", "--default_root_dir", str(tmp_path),
                 "--heatmaps", "false", "--metrics", "plugin:image_auroc", "plugin:image_tpr_at_fpr",
                 "--validation_synthesizer", "plugin:scratch")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    run_dir = next(tmp_path.glob("example/UadDemo/*/v0"))
    plugins = json.loads((run_dir / "plugins.json").read_text())
    model = next(c for c in plugins["components"] if c["kind"] == "model")
    assert model["requirement"] == "uad-example-model==0.1.0" and model["source"] == "entrypoint"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["image_AUROC"] <= 1.0 and metrics["epochs"] == 1
    assert 0.0 <= metrics["test"]["image_TPR@FPR"] <= 1.0
    assert metrics["validation"]["synthesizer"] == "plugin:scratch"
    requirements = {c["reference"]: c.get("requirement") for c in plugins["components"]}
    assert requirements["plugin:scratch"] == requirements["plugin:image_tpr_at_fpr"] == "uad-example-extras==0.1.0"
    assert (run_dir / "weights" / "lightning" / "model.ckpt").is_file()


@pytest.mark.parametrize(("package", "passed"), [("uad-example-model", 2), ("uad-example-extras", 4)])
def test_example_package_own_tests_use_the_conformance_kit(installed, package: str, passed: int) -> None:
    tests = PACKAGES[package] / "tests"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)],
                            capture_output=True, text=True, timeout=600, cwd=tests)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert f"{passed} passed" in result.stdout


def test_third_party_synthesizer_from_the_cli(installed, tmp_path: Path) -> None:
    from uad_plugins.testing import make_synthetic_image_dataset

    images = make_synthetic_image_dataset(tmp_path / "data") / "synthetic" / "train" / "good"
    result = uad("synth", "--synthesizer", "plugin:scratch", "--synthesizer.width", "[2, 2]", "--input", str(images),
                 "--output", str(tmp_path / "out"), "--seed", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["synthesizer"]["distribution"] == "uad-example-extras"
    assert manifest["options"] == {"width": [2, 2]} and len(manifest["items"]) == len(list(images.glob("*.png")))
    bad = uad("synth", "--synthesizer", "plugin:scratch", "--synthesizer.contrast", "[0.9, 0.1]", "--input",
              str(images), "--output", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "scratch: contrast must be" in bad.stderr and "Traceback" not in bad.stderr
