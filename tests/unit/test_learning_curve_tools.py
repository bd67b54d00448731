"""tools/learning_curve.py and tools/unified_paper_gpu.py: tiny CPU runs (--quick) on the demo data, and the plan
the GPU command would run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def tools(import_tool) -> tuple:
    return import_tool("learning_curve"), import_tool("unified_paper_gpu")


def test_auroc_on_raw_scores(tools: tuple) -> None:
    curve, _ = tools
    assert curve.auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert curve.auroc([5.0, 5.0], [0, 1]) == 0.5  # ties count half
    assert curve.auroc([1.0, 2.0], [1, 1]) is None  # one class only: undefined


@pytest.mark.slow
def test_quick_curve_checkpoints_validation_rows_and_last_test_with_onenip_maps(tools: tuple, tmp_path: Path) -> None:
    curve, _ = tools
    assert curve.main(["--quick", "--model", "plugin:onenip", "--output", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "curve.json").read_text())
    assert result["epochs_done"] == 2 and [row["epoch"] for row in result["validation"]] == [1, 2]
    assert all(Path(row["checkpoint"]).is_file() and row["in_fit_validation"] for row in result["validation"])
    assert result["validation_statistics_fitted"] is True
    assert result["test_last"]["epoch"] == 2  # the test split is scored for the last checkpoint only
    keys = {"pixel_AUROC", "pixel_AUROC_reconstruction", "pixel_AUROC_refiner", "pixel_AUROC_fused"}
    assert keys <= set(result["test_last"]) and keys <= set(result["validation"][-1])
    test = result["test_last"]
    assert test["pixel_AUROC_fused"] == test["pixel_AUROC"]  # the fused map is the model's map
    assert test["image_AUROC_fused"] == test["image_AUROC"]  # and its pooled maximum the model's score
    keys |= {"image_AUROC_reconstruction", "image_AUROC_refiner"}
    assert all(isinstance(test[k], float) and 0 <= test[k] <= 1 for k in keys)



def test_a_fit_without_any_validation_pass_says_its_validation_statistics_are_void(
        tools: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A time cap (here: checkpoints every 5 epochs, 2 epochs run) can end the fit before any validation loop, so
    OneNIP's fusion scale keeps its initial value; the curve says so instead of reporting a fused map as if fitted."""
    curve, _ = tools
    assert curve.main(["--quick", "--model", "plugin:onenip", "--every", "5", "--output", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "curve.json").read_text())
    assert result["validation_statistics_fitted"] is False
    assert not any(row["in_fit_validation"] for row in result["validation"])
    assert "never fitted" in capsys.readouterr().out


def test_gpu_plan_is_the_papers_protocol(tools: tuple) -> None:
    _, gpu = tools
    runs = gpu.plan(quick=False)
    assert [r["name"] for r in runs] == ["uniad_bottle", "uniad_demo", "onenip_bottle", "onenip_demo"]
    for run in runs:
        assert run["epochs"] == 1000 and run["every"] == 25
        assert run["data"]["init_args"]["train_batch_size"] == 64
        assert run["model_args"] == {"backbone": "tf_efficientnet_lite0", "pretrained": True, "image_size": 224}
    assert runs[0]["data"]["init_args"]["category"] == "bottle"
    assert runs[1]["data"] == {"class_path": "UnifiedUadDemo", "init_args": {
        "categories": "all", "train_batch_size": 64, "eval_batch_size": 32, "num_workers": 8}}
    assert gpu._time_cap(0.7 * 9 * 60 / 4) == "00:00:01:34"


@pytest.mark.slow
def test_gpu_command_runs_tiny_on_cpu(tools: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, gpu = tools
    monkeypatch.setattr(gpu, "MODELS", ("plugin:uniad",))  # one tiny run keeps this test short
    assert gpu.main(["--quick", "--output", str(tmp_path)]) == 0
    summary = (tmp_path / "summary.md").read_text()
    assert "| uniad_quick | 1 |" in summary
    assert (tmp_path / "uniad_quick" / "curve.json").is_file()
