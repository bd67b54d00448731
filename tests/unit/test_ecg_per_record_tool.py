"""tools/ecg_per_record.py: pooled vs within-record AUROC (the check of the MIT-BIH protocol's reading)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

MITBIH = Path(__file__).resolve().parents[3] / "shared" / "data" / "ecg" / "mitbih_subset"


@pytest.fixture(scope="module")
def tool(import_tool):
    return import_tool("ecg_per_record")


def test_within_record_ranking_can_be_perfect_while_the_pooled_one_is_inverted(tool) -> None:
    """Two patients: each ranks its PVC windows above its own clean ones, but the PVC-rich patient's scores sit
    lower overall, so the pooled AUROC falls below chance: the reading the tool exists to check."""
    scores = np.array([1.0, 1.1, 1.2, 1.3, 10.0, 11.0, 11.5, 12.0])
    labels = np.array([0, 1, 1, 1, 0, 0, 0, 1])
    records = ["119"] * 4 + ["116"] * 4
    result = tool.per_record(scores, labels, records)
    assert result["records"]["119"]["auroc"] == 1.0 and result["records"]["116"]["auroc"] == 1.0
    assert result["pooled_auroc"] < 0.5
    assert (result["records"]["119"]["windows"], result["records"]["119"]["pvc_windows"]) == (4, 3)
    assert result["records"]["119"]["median_score"] == pytest.approx(1.15)
    assert result["pooled_auroc"] == pytest.approx(7 / 16)  # 3 PVCs of 119 beat one clean window each, 116's all 4


def test_auroc_counts_ties_half_and_needs_both_classes(tool) -> None:
    assert tool.auroc(np.array([1.0, 1.0]), np.array([0, 1])) == 0.5
    assert tool.auroc(np.array([0.1, 0.9, 0.5]), np.array([0, 1, 0])) == 1.0
    assert tool.auroc(np.array([1.0, 2.0]), np.array([1, 1])) is None


@pytest.mark.skipif(not MITBIH.is_dir(), reason="needs ../shared/data/ecg/mitbih_subset")
def test_a_baseline_is_scored_per_test_record(tool, tmp_path: Path) -> None:
    torch.set_num_threads(2)
    out = tmp_path / "rows.json"
    assert tool.main(["--models", "plugin:signal_std", "--json", str(out)]) == 0
    import json

    result = json.loads(out.read_text())["plugin:signal_std"]
    assert set(result["records"]) == {"106", "116", "119", "200"}
    assert sum(row["windows"] for row in result["records"].values()) == 720  # every 10-s test window once
    assert 0.0 <= result["pooled_auroc"] <= 1.0
    assert tool.datamodule().normalize == "record" and tool.datamodule("mitbih_ecgad_minmax").normalize == "minmax"
