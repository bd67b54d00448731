"""Scale-out batch scoring on Ray Data (issue 16): the documented recipe (examples/ray_batch_infer.py, docs/deploy.md)
run against a local Ray instance started here, on real images and a corrupt file; the rows equal the edge runtime's
(and so `uad infer --format jsonl --no_overlays`'s), the corrupt file gets an error row."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# before ray is imported: the local instance listens on 127.0.0.1 only and sends no usage statistics
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "ray_batch_infer.py"
#: seconds the documented command may take once Ray is up (measured: ~5 s on 2 shared cores)
SCORING_TIMEOUT = 120


@pytest.fixture(scope="module")
def local_ray():
    """A fresh local Ray instance on loopback (2 CPUs, no dashboard), shut down at the end of the module."""
    pytest.importorskip("pyarrow")
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2,
             configure_logging=False, log_to_driver=False)
    try:
        address = ray.get_runtime_context().gcs_address
        assert address.startswith("127.0.0.1:"), f"Ray is not on loopback: {address}"
        yield address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, tiny_edge_bundle: Path) -> Path:
    """The demo washer test images (30 real 256 px PNGs: normal and defective; the bundle takes 64 px) in
    subfolders, and one truncated PNG."""
    from uad_plugins.data.demo import ensure_demo_dataset

    folder = tmp_path_factory.mktemp("ray_images") / "shots"
    shutil.copytree(ensure_demo_dataset() / "washer" / "test", folder)
    (folder / "good" / "zz_truncated.png").write_bytes((folder / "good" / "000.png").read_bytes()[:100])
    return folder


def _reference(bundle: Path, files: list[str]) -> list[dict]:
    """The edge runtime's rows for the same files: what `uad infer --format jsonl` writes (predict_iter)."""
    from uad_plugins.edge import load_bundle

    model = load_bundle(bundle)
    return [r.record() for r in model.predict_iter(files, batch_size=8, resize=True, maps=False, on_error="record")]


def test_ray_recipe_scores_equal_the_edge_runtime(images: Path, tiny_edge_bundle: Path, local_ray: str,
                                                 tmp_path: Path) -> None:
    from uad_plugins.edge import list_images, load_bundle
    from uad_plugins.scale import COLUMNS

    out = tmp_path / "scores.jsonl"
    # the documented command, joining the instance started above (without --address it starts its own)
    result = subprocess.run([sys.executable, str(EXAMPLE), str(tiny_edge_bundle), str(images), "--resize",
                             "--actors", "2", "--batch_size", "4", "--output", str(out), "--address", local_ray],
                            capture_output=True, text=True, timeout=SCORING_TIMEOUT)
    assert result.returncode == 2, result.stdout + result.stderr[-4000:]  # one error row
    assert "31 rows in" in result.stdout and "1 failed" in result.stdout

    files = [str(p) for p in list_images([images])]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(files) == 31 and [r["image"] for r in rows] == files  # every input once, in input order
    assert all(list(r) == list(COLUMNS) and r["heatmap"] is None for r in rows)

    reference = _reference(tiny_edge_bundle, files)
    bad = [i for i, r in enumerate(rows) if r["error"] is not None]
    assert [files[i] for i in bad] == [str(images / "good" / "zz_truncated.png")]
    assert rows[bad[0]]["error"] == reference[bad[0]]["error"] and "cannot be read as an image" in rows[bad[0]]["error"]
    assert rows[bad[0]]["pred_score"] is None and rows[bad[0]]["pred_label"] is None
    good = [i for i in range(len(files)) if i not in bad]
    assert all(reference[i].get("error") is None for i in good)
    for column in ("pred_score", "raw_score"):
        assert max(abs(rows[i][column] - reference[i][column]) for i in good) < 1e-5, column
    assert [rows[i]["pred_label"] for i in good] == [reference[i]["pred_label"] for i in good]
    # and predict (the synchronous path) on the good files agrees too
    prediction = load_bundle(tiny_edge_bundle).predict([files[i] for i in good], resize=True)
    assert max(abs(rows[i]["raw_score"] - float(s)) for i, s in zip(good, prediction.raw_score)) < 1e-5
    assert len({round(rows[i]["raw_score"], 4) for i in good}) > 3  # real images: the scores differ


def test_scorer_without_ray_and_checks_before_ray(images: Path, tiny_edge_bundle: Path, tmp_path: Path) -> None:
    """What each actor runs, called directly: a batch with a bad file gives an error row for that file only; a
    bad bundle, no inputs or an existing output fail before any Ray work."""
    pytest.importorskip("pyarrow")
    from uad_plugins.edge import EdgeError
    from uad_plugins.scale import COLUMNS, BundleScorer, score_folder_with_ray, scoring_dataset

    scorer = BundleScorer(tiny_edge_bundle, resize=True)
    files = [str(images / "good" / "001.png"), str(images / "good" / "zz_truncated.png"), str(tmp_path / "gone.png")]
    rows = scorer.score(files)
    assert [r["image"] for r in rows] == files
    assert rows[0].get("error") is None and rows[1]["error"] and rows[2]["error"].startswith("image not found")
    assert abs(rows[0]["raw_score"] - scorer.score(files[:1])[0]["raw_score"]) < 1e-5
    table = scorer({"index": [7, 8, 9], "image": files})
    assert table.column_names == ["index", *COLUMNS]
    assert table.column("pred_score").null_count == 2 and table.column("index").to_pylist() == [7, 8, 9]

    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgeError, match="no images found"):
        score_folder_with_ray(tiny_edge_bundle, [tmp_path / "empty"])
    (tmp_path / "taken.jsonl").write_text("")
    with pytest.raises(EdgeError, match="already exists"):
        score_folder_with_ray(tiny_edge_bundle, [images], output=tmp_path / "taken.jsonl")
    with pytest.raises(EdgeError, match="manifest"):
        scoring_dataset(tmp_path / "empty", files)
    with pytest.raises(EdgeError, match="num_actors"):
        scoring_dataset(tiny_edge_bundle, files, num_actors=0)


def test_deploy_doc_gives_the_tested_command() -> None:
    doc = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert "## Scale-out batch scoring on Ray Data" in doc
    assert "python examples/ray_batch_infer.py RUN/bundle_fp32 shots/ --resize --actors 2 --output scores.jsonl" in doc


def test_scale_imports_without_ray_or_torch(block_torch: str, tiny_edge_bundle: Path) -> None:
    """`uad_plugins.scale` imports the edge runtime by its package-level names only, and needs neither Ray nor torch
    to be imported (Ray is an optional extra); without Ray, scoring says how to install it."""
    import ast

    for path in sorted((REPO / "uad_plugins" / "scale").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("uad_plugins"):
                assert node.module in ("uad_plugins.edge", "uad_plugins.errors", "uad_plugins.scale.ray_infer"), \
                    f"{path.name}:{node.lineno} imports {node.module}"
    block = block_torch.replace("('torch', 'lightning', 'anomalib', 'torchvision')",
                                "('torch', 'lightning', 'anomalib', 'torchvision', 'ray', 'pyarrow')")
    assert "'ray'" in block
    code = block + textwrap.dedent(f"""
        import uad_plugins.scale as s
        from uad_plugins.edge import EdgeError
        try:
            s.scoring_dataset({str(tiny_edge_bundle)!r}, ["a.png"])
        except EdgeError as exc:
            assert "Ray Data is not installed" in exc.message and "uad_plugins[ray]" in exc.hint, exc.render()
            print("ok")
        """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
