"""`uad export` (FP32, FP16, INT8), the parity gate, the bundle, the edge runtime and `uad infer`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(2)
pytestmark = pytest.mark.slow


def _demo_images(n: int = 3) -> list[Path]:
    from uad_plugins.data import default_demo_root

    return sorted((default_demo_root() / "washer" / "test").rglob("*.png"))[:n]


def test_fp32_bundle_contents_and_parity(bundle: Path) -> None:
    assert sorted(p.name for p in bundle.iterdir()) == ["manifest.json", "model.bin", "model.xml", "parity.json"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["format"] == "uad-bundle" and manifest["precision"] == "fp32"
    assert manifest["component"]["reference"] == "plugin:pbas"
    assert manifest["input"]["height"] == 64 and manifest["input"]["dynamic_batch"] is True
    assert manifest["parity"]["passed"] and manifest["parity"]["max_score_diff"] <= 1e-3
    assert manifest["parity"]["max_map_diff"] <= 1e-2
    assert set(manifest["files"]) == {"model.xml", "model.bin", "parity.json"}
    assert manifest["postprocessing"]["in_graph"] and not manifest["postprocessing"]["refitted_after_quantization"]
    parity = json.loads((bundle / "parity.json").read_text())
    assert len(parity["per_sample"]) == parity["samples"] > 0


def test_edge_matches_eager_and_takes_any_batch(bundle: Path, checkpoint: Path) -> None:
    from uad_edge import load_bundle
    from uad_plugins.engine import load_model_from_checkpoint

    edge = load_bundle(bundle)
    model = load_model_from_checkpoint(checkpoint).eval()
    x = torch.rand(5, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eager = model(x)
    from uad_plugins.export.graph import RawExportModule

    with torch.no_grad():
        raw_score, raw_map = RawExportModule(model).eval()(x)
    for n in (1, 5):
        out = edge.predict(x[:n].numpy(), batch_size=n)
        assert out.anomaly_map.shape == (n, 64, 64)
        assert np.abs(out.pred_score - eager.pred_score[:n].numpy()).max() < 1e-3
        # raw outputs too (the clipped pred_score cannot rank inputs outside the validation range)
        assert out.raw_score.shape == (n,) and out.raw_map.shape == (n, 64, 64)
        assert np.abs(out.raw_score - raw_score[:n].numpy()).max() < 1e-3 * max(1.0, float(raw_score.abs().max()))
        assert np.abs(out.raw_map - raw_map[:n].squeeze(1).numpy()).max() < 1e-3 * max(1.0, float(raw_map.abs().max()))
    assert "raw_score" in out.records()[0]


def test_infer_cli_writes_scores_and_overlays(bundle: Path, tmp_path: Path, uad) -> None:
    images = _demo_images()
    code, _, err = uad("infer", bundle, *images, "--output", tmp_path / "out")
    assert code == 2 and "expects 64x64" in err and "--resize" in err and not (tmp_path / "out").exists()
    code, _out, err = uad("infer", bundle, *images, "--output", tmp_path / "out", "--resize")
    assert code == 0, err
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert [p["image"] for p in scores["predictions"]] == [str(p) for p in images]
    assert len(list((tmp_path / "out" / "overlays").glob("*.png"))) == len(images)


def test_edge_runtime_never_imports_torch(bundle: Path, tmp_path: Path, block_torch: str) -> None:
    """The edge path runs in a process where `import torch` fails."""
    code = block_torch + textwrap.dedent(f"""
        from uad_edge import load_bundle
        import numpy as np
        result = load_bundle({str(bundle)!r}).predict(np.zeros((2, 3, 64, 64), dtype=np.float32))
        from uad_plugins.cli.main import main
        rc = main(['infer', {str(bundle)!r}, {str(_demo_images(1)[0])!r}, '--output', {str(tmp_path / 'o')!r},
                   '--resize'])
        assert rc == 0, rc
        assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'anomalib', 'lightning')]
        print('OK', result.pred_score.shape)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK (2,)" in result.stdout


def test_fp16_and_int8_exports(checkpoint: Path, tmp_path: Path, uad) -> None:
    code, _, err = uad("export", "--ckpt_path", checkpoint, "--precision", "fp16", "--output", tmp_path / "fp16")
    assert code == 0, err
    assert json.loads((tmp_path / "fp16" / "manifest.json").read_text())["parity"]["passed"]
    # a tiny random-weight model: allow any drop, the point here is the mechanism (re-fit, metrics, loading)
    code, _out, err = uad("export", "--ckpt_path", checkpoint, "--precision", "int8", "--output", tmp_path / "int8",
                         "--max_metric_drop", "1", "--calibration_samples", "8")
    assert code == 0, err
    manifest = json.loads((tmp_path / "int8" / "manifest.json").read_text())
    assert manifest["postprocessing"]["refitted_after_quantization"] is True
    assert manifest["parity"]["mode"] == "metrics" and "image_AUROC" in manifest["parity"]["metrics"]
    from uad_edge import load_bundle

    assert load_bundle(tmp_path / "int8").predict(np.zeros((1, 3, 64, 64), np.float32)).pred_score.shape == (1,)


def test_failed_parity_leaves_nothing(checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from uad_plugins.cli.main import main
    from uad_plugins.export import parity

    monkeypatch.setitem(parity.TOLERANCES, "fp32", {"score": -1.0, "map": -1.0})
    code = main(["export", "--ckpt_path", str(checkpoint), "--output", str(tmp_path / "b")])
    assert code == 2
    assert list(tmp_path.iterdir()) == []  # no bundle, no temporary folder


def test_export_errors(checkpoint: Path, bundle: Path, tmp_path: Path, uad) -> None:
    code, _, err = uad("export", "--ckpt_path", checkpoint, "--output", bundle)
    assert code == 2 and "already exists" in err
    code, _, err = uad("export", "--ckpt_path", checkpoint, "--model", "plugin:perlin", "--output", tmp_path / "x")
    assert code == 2 and "is a synthesizer" in err
    garbage = tmp_path / "g.ckpt"
    garbage.write_bytes(b"nope")
    code, _, err = uad("export", "--ckpt_path", garbage, "--output", tmp_path / "y")
    assert code == 2 and "cannot be read" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_checkpoint_of_another_model_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    from uad_plugins.engine import load_model_from_checkpoint
    from uad_plugins.errors import ConfigError

    with pytest.raises(ConfigError, match=r"holds a uad_plugins\.plugins\.pbas\.model\.Pbas"):
        load_model_from_checkpoint(checkpoint, expected_class_path="some_pkg.models.Other")


def test_empty_calibration_set_is_an_error(checkpoint: Path) -> None:
    from uad_plugins.errors import DataError
    from uad_plugins.export import take_samples

    with pytest.raises(DataError, match="empty"):
        take_samples([], (64, 64), 8, source="calibration")


def test_bad_bundles_and_inputs(bundle: Path, tmp_path: Path, uad) -> None:
    import shutil

    from uad_edge import EdgeError, load_bundle

    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    (broken / "model.bin").write_bytes((broken / "model.bin").read_bytes()[:-10])
    code, _, err = uad("infer", broken, *_demo_images(1), "--output", tmp_path / "o1", "--resize")
    assert code == 2 and "model.bin is corrupt" in err and not (tmp_path / "o1").exists()
    (broken / "model.xml").unlink()
    code, _, err = uad("infer", broken, *_demo_images(1), "--output", tmp_path / "o2")
    assert code == 2 and "missing model.xml" in err
    edge = load_bundle(bundle)
    with pytest.raises(EdgeError, match="3 channels"):
        edge.predict(np.zeros((1, 64, 64, 4), np.uint8))
    with pytest.raises(EdgeError, match="expects 64x64"):
        edge.predict(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(EdgeError, match="NaN"):
        edge.predict(np.full((1, 3, 64, 64), np.nan, np.float32))
    bad_image = tmp_path / "bad.png"
    bad_image.write_bytes(b"not an image")
    code, _, err = uad("infer", bundle, bad_image, "--output", tmp_path / "o3")
    assert code == 2 and "cannot be read as an image" in err


def test_infer_never_deletes_what_it_did_not_write(bundle: Path, tmp_path: Path) -> None:
    """Issue 11, item 3: `uad infer --output DIR` once wiped the inputs, an unrelated folder and the bundle."""
    import shutil

    def infer(*argv) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "uad_plugins.cli.main", "infer", *map(str, argv)],
                              capture_output=True, text=True, timeout=300)

    def snapshot(folder: Path) -> dict[str, bytes]:
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    images = tmp_path / "images"
    images.mkdir()
    for file in _demo_images(3):
        shutil.copy(file, images / f"{file.parent.name}_{file.name}")
    local_bundle = tmp_path / "bundle"
    shutil.copytree(bundle, local_bundle)
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    (unrelated / "thesis.txt").write_text("years of work")
    kept = {folder: snapshot(folder) for folder in (images, local_bundle, unrelated)}
    for output, extra in ((images, ["--overwrite"]), (images / "scored", ["--overwrite"]), (local_bundle, []),
                          (local_bundle, ["--overwrite"]), (unrelated, [])):
        result = infer(local_bundle, images, "--output", output, "--resize", *extra)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert {folder: snapshot(folder) for folder in kept} == kept
    # --overwrite into a folder with other files: only our files change, the user's stay
    result = infer(local_bundle, images, "--output", unrelated, "--resize", "--overwrite")
    assert result.returncode == 0, result.stderr
    assert (unrelated / "thesis.txt").read_text() == "years of work"
    scores = json.loads((unrelated / "scores.json").read_text())
    assert len(scores["predictions"]) == 3 and len(scores["files"]) == 3
    # a rerun on fewer inputs leaves no overlay of the first run behind
    result = infer(local_bundle, sorted(images.iterdir())[0], "--output", unrelated, "--resize", "--overwrite")
    assert result.returncode == 0, result.stderr
    assert len(list((unrelated / "overlays").iterdir())) == 1
    assert sorted(p.name for p in unrelated.iterdir()) == ["overlays", "scores.json", "thesis.txt"]
    assert {folder: snapshot(folder) for folder in (images, local_bundle)} == \
        {folder: kept[folder] for folder in (images, local_bundle)}
    # the output is a file: refused
    result = infer(local_bundle, images, "--output", unrelated / "thesis.txt", "--resize", "--overwrite")
    assert result.returncode == 2 and (unrelated / "thesis.txt").read_text() == "years of work"


def test_export_overwrite_replaces_a_bundle_and_nothing_else(checkpoint: Path, bundle: Path, tmp_path: Path,
                                                             uad) -> None:
    """--overwrite once removed whatever folder --output named; now only a bundle is ever replaced."""
    import shutil

    precious = tmp_path / "my_images"
    precious.mkdir()
    (precious / "part.png").write_bytes(b"irreplaceable")
    not_a_bundle = tmp_path / "lookalike"
    shutil.copytree(bundle, not_a_bundle)
    (not_a_bundle / "notes.txt").write_text("mine")
    for target in (precious, not_a_bundle):
        code, _, err = uad("export", "--ckpt_path", checkpoint, "--output", target, "--overwrite")
        assert code == 2 and "only replaces a bundle" in err, err
    assert (precious / "part.png").read_bytes() == b"irreplaceable" and (not_a_bundle / "notes.txt").is_file()
    replaced = tmp_path / "replaced"
    shutil.copytree(bundle, replaced)
    before = (replaced / "manifest.json").read_text()
    code, _, err = uad("export", "--ckpt_path", checkpoint, "--output", replaced, "--overwrite")
    assert code == 0, err
    assert (replaced / "manifest.json").read_text() != before  # a new export (its own time stamp)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lookalike", "my_images", "replaced"]
