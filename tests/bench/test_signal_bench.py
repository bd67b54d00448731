"""``uad bench`` with signal models: recipes with signal datamodules load and are checked, a tiny MMAE-ECG recipe runs
end to end (eager vs OpenVINO), and the report shows signal quality columns.

Benchmarks are not tests: no number is judged here beyond being well formed, except that eager and OpenVINO FP32
rank the same test windows alike (both on raw scores).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from uad_plugins.cli.main import main
from uad_plugins.data.signals import make_synthetic_signal_folder

torch.set_num_threads(2)

REPO = Path(__file__).resolve().parents[2]
MITBIH = REPO.parent / "shared" / "data" / "ecg" / "mitbih_subset"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SIGNAL_QUALITY = {"sample_AUROC", "sample_AP", "point_AUROC"}
TINY_MMAE = {"n_leads": 1, "length": 64, "segment_len": 8, "local_segment_len": 4, "local_segments": 2,
             "embed_dim": 16, "depth": 1, "num_heads": 2, "decoder_dim": 16, "decoder_heads": 2}


def _recipe(root: Path, **changes: object) -> dict:
    recipe = {
        "name": "tiny_signal",
        "models": [{"name": "mmae_ecg", "model": "plugin:mmae_ecg", "init_args": dict(TINY_MMAE),
                    "trainer": {"max_epochs": 2}}],
        "data": [{"class_path": "SignalFolder",
                  "init_args": {"root": str(root), "normal_dir": "train/good", "normal_test_dir": "test/good",
                                "abnormal_dir": "test/bad", "mask_dir": "ground_truth/bad", "train_batch_size": 8}}],
        "trainer": {"num_sanity_val_steps": 0},
        "precisions": ["fp32", "int8"],
        "batch_sizes": [1, 2],
        "timing": {"warmup": 1, "iterations": 2},
        "export": {"parity_samples": 8, "calibration_samples": 16, "max_metric_drop": 1.0, "timeout_s": 300},
        "seed": 0,
        "threads": 2,
    }
    recipe.update(changes)
    return recipe


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_shipped_signal_recipe_loads() -> None:
    from uad_plugins.bench.recipe import load_recipe, resolve_references

    recipe = load_recipe(REPO / "configs" / "bench" / "mmae_ecg_mitbih.yaml", cwd=REPO)
    (data,) = recipe.data
    assert data.class_path == "uad_plugins.data.signals.MitBihBeats"
    assert data.init_args["root"] == str((REPO / "../shared/data/ecg/mitbih_subset").resolve())
    assert recipe.precisions == ("fp32", "fp16", "int8") and recipe.batch_sizes == (1, 8)
    assert recipe.models[0].model == "plugin:mmae_ecg" and recipe.models[0].init_args["length"] == 256
    if (MITBIH / "100.npz").is_file():
        resolve_references(recipe)  # classes import, the root exists, model and data modalities agree


@pytest.mark.parametrize(("change", "expected"), [
    ({"data": [{"class_path": "UadDemo", "init_args": {"category": "washer"}}]},
     "holds image data, but model(s) 'mmae_ecg' take signal data"),
    ({"models": [{"name": "mmae_ecg", "model": "plugin:mmae_ecg", "image_size": 64}]},
     "'image_size' and 'backbone_weights' are for image models"),
])
def test_signal_recipe_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict, expected: str) -> None:
    root = make_synthetic_signal_folder(tmp_path / "data", length=64, n_train=2, per_file=4)
    recipe = _write(tmp_path / "bad.yaml", _recipe(root, **change))
    code = main(["bench", "--recipe", str(recipe), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_report_has_signal_columns_without_running(tmp_path: Path) -> None:
    from uad_plugins.bench.report import render_markdown, write_report

    image = {"model": "pbas", "reference": False, "data": "D", "category": "c", "backend": "torch-eager",
             "status": "ok", "quality": {"image_AUROC": 0.9}, "latency": {"1": {"p50_ms": 2.0, "p95_ms": 3.0}},
             "memory": {}, "export": None}
    signal = {**image, "model": "mmae_ecg", "data": "MitBihBeats", "category": "", "modality": "signal",
              "backend": "openvino-int8", "quality": {"sample_AUROC": 0.8, "sample_AP": 0.7, "point_AUROC": None},
              "export": {"parity": {"mode": "metrics", "passed": True,
                                    "metrics": {"sample_AUROC": {"drop": 0.004}, "point_AUROC": {"drop": -0.01}}}}}
    text = render_markdown({"recipe": {"name": "r", "batch_sizes": [1]}, "rows": [signal]})
    assert "| model | data | backend | sample AUROC | sample AP | point AUROC | time to model | p50 ms bs1 |" in text
    assert "| mmae_ecg | MitBihBeats | openvino-int8 | 0.800 | 0.700 | — | — | 2.0 |" in text
    trained = {**signal, "training": {"fit_seconds": 61.4, "steps": 300}, "memory": {"fit_peak_rss_mb": 2150.0}}
    assert "| 0.800 | 0.700 | — | 61 s · 300 steps · 2.1 GB | 2.0 |" in render_markdown(
        {"recipe": {"name": "r", "batch_sizes": [1]}, "rows": [trained]})
    assert "window/s bs1" in text and "GFLOPs/window" in text and "image AUROC" not in text
    assert "pass: sample AUROC -0.40 pt, point AUROC +1.00 pt" in text
    files = write_report({"recipe": {"name": "r", "batch_sizes": [1]}, "rows": [image, signal]}, tmp_path)
    mixed = files["markdown"].read_text(encoding="utf-8")
    assert "### image models" in mixed and "### signal models" in mixed and "GFLOPs/input" in mixed
    assert "| pbas | D/c | torch-eager | 0.900 |" in mixed
    assert all((tmp_path / name).read_bytes()[:8] == PNG_MAGIC
               for name in ("accuracy_vs_latency.png", "latency_by_backend.png"))


@pytest.mark.slow
def test_tiny_signal_recipe_runs_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_synthetic_signal_folder(tmp_path / "data", length=64)
    recipe = _write(tmp_path / "tiny.yaml", _recipe(root))
    out = tmp_path / "bench"
    code = main(["bench", "--recipe", str(recipe), "--output", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0, stdout[-3000:]
    assert "[bench] 1/1 mmae_ecg on SignalFolder: fitting" in stdout
    assert "torch-eager: sample AUROC" in stdout

    report = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    assert report["complete"] is True
    rows = report["rows"]
    assert [r["backend"] for r in rows] == ["torch-eager", "openvino-fp32", "openvino-int8"]
    for row in rows:
        assert row["modality"] == "signal" and set(row["quality"]) == SIGNAL_QUALITY
        if row["status"] != "ok":  # an INT8 export may fail; it must say why
            assert row["backend"] == "openvino-int8" and row["error"]
            continue
        assert all(0.0 <= row["quality"][k] <= 1.0 for k in SIGNAL_QUALITY)  # the synthetic test set has masks
        assert set(row["latency"]) == {"1", "2"}
        assert all(0 < t["p50_ms"] <= t["p95_ms"] for t in row["latency"].values())
        assert row["flops_per_image"] > 0 and row["parameters"] > 0 and row["input_size"] == [1, 64]
        assert row["memory"]["inference_peak_rss_mb"] > 0
        if row["backend"] != "torch-eager":
            assert row["export"]["parity"]["passed"] is True
            assert row["quality_source"] == "bundle raw_score/raw_map on the test windows"
    eager, fp32 = rows[0], rows[1]
    assert fp32["status"] == "ok"
    # both rank raw scores of the same windows: FP32 agrees with eager (UadEngine.test) up to float noise
    for key in SIGNAL_QUALITY:
        assert fp32["quality"][key] == pytest.approx(eager["quality"][key], abs=0.02), key
        assert eager["quality_resized_inputs"][key] == pytest.approx(eager["quality"][key], abs=0.02), key
    manifest = json.loads((Path(fp32["export"]["bundle"]) / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["modality"] == "signal" and manifest["preprocessing"]["data"]["datamodule"] == "SignalFolder"
    if rows[2]["status"] == "ok":
        assert set(rows[2]["export"]["parity"]["metrics"]) == {"sample_AUROC", "point_AUROC"}

    markdown = (out / "bench.md").read_text(encoding="utf-8")
    header = "| model | data | backend | sample AUROC | sample AP | point AUROC | time to model | p50 ms bs1 |"
    assert header in markdown
    assert "| mmae_ecg | SignalFolder | openvino-fp32 |" in markdown and "window/s bs2" in markdown
    for name in ("accuracy_vs_latency.png", "latency_by_backend.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC


def test_protocol_recipe_loads_with_baselines_and_smoothed_point_auroc() -> None:
    from uad_plugins.bench.recipe import load_recipe, resolve_references
    from uad_plugins.bench.runner import metrics_for

    recipe = load_recipe(REPO / "configs" / "bench" / "mmae_ecg_protocol.yaml", cwd=REPO)
    record, minmax = recipe.data  # the scaling chosen on validation data, and ECGAD's
    assert {record.class_path, minmax.class_path} == {"uad_plugins.data.signals.MitBihWindows"}
    assert (record.name, record.init_args["normalize"]) == ("mitbih_record", "record")
    assert (minmax.name, minmax.init_args["normalize"]) == ("mitbih_ecgad_minmax", "minmax")
    assert {k: v for k, v in minmax.init_args.items() if k != "normalize"} == \
        {k: v for k, v in record.init_args.items() if k != "normalize"}  # otherwise the same protocol
    assert [m.model for m in recipe.models] == ["plugin:mmae_ecg", "plugin:mmae_ecg", "plugin:signal_mean_distance",
                                                "plugin:signal_std", "plugin:signal_nearest"]
    assert recipe.models[1].init_args == {"single_scale": True}
    fields = metrics_for("signal", recipe.metrics)
    assert fields["point_AUROC"] == "plugin:ecg_point_auroc" and fields["sample_AUROC"] == "plugin:signal_auroc"
    assert recipe.to_dict()["metrics"] == {"point_AUROC": "plugin:ecg_point_auroc"}
    from uad_plugins import create_metric

    assert create_metric("plugin:ecg_point_auroc").sigma == 11.0
    if (MITBIH / "100.npz").is_file():
        resolve_references(recipe)
