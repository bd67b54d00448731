"""The shared MVTec AD bottle (when present) loads through our checks; skipped cleanly when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

MVTEC = Path(__file__).resolve().parents[3] / "shared" / "data" / "mvtec_ad_256"

pytestmark = [pytest.mark.shared_data,
              pytest.mark.skipif(not (MVTEC / "bottle").is_dir(), reason="../shared/data/mvtec_ad_256 not present")]


def test_bottle_prepares_with_honest_validation(tmp_path: Path) -> None:
    from anomalib.data import MVTecAD

    from uad_plugins.data import apply_synthetic_validation, needs_honest_validation, prepare_datamodule
    from uad_plugins.plugins.perlin.synthesizer import PerlinSynthesizer

    dm = MVTecAD(root=MVTEC, category="bottle", num_workers=0)
    assert needs_honest_validation(dm)  # anomalib's MVTec default validates on the test set
    counts = prepare_datamodule(dm, "fit")
    assert counts["train"] == 209 and counts["test"] == 83
    info = apply_synthetic_validation(dm, PerlinSynthesizer(), ratio=0.2, seed=0, output_dir=tmp_path / "val")
    assert info["n_train"] + info["n_val_normal"] + info["n_val_anomalous"] == 209
    test_paths = set(dm.test_data.samples.image_path)
    assert test_paths.isdisjoint(set(dm.val_data.samples.image_path))  # no test image in validation
