"""`uad fit --ckpt_path RUN/.../model.ckpt` continues that run: the same folder (no new vN), the same honest
validation split, the run's data when --data is left out; settings that would change the run are refused (issue 17)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)
pytestmark = pytest.mark.slow


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_continues_the_same_run_folder(uad, tiny_pbas, quiet, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    code, _, err = uad("fit", *tiny_pbas, *quiet, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
                       "--data.category", "washer", "--heatmaps", "false", "--default_root_dir", root)
    assert code == 0, err
    run = root / "pbas" / "UadDemo" / "washer" / "v0"
    ckpt = run / "weights" / "lightning" / "model.ckpt"
    validation = _digest(run / "validation")

    # the run's data is used when --data is left out (the demo default would be another category)
    code, _, err = uad("fit", *tiny_pbas, *quiet, "--trainer.max_epochs", "2", "--trainer.limit_train_batches",
                       "2", "--heatmaps", "false", "--default_root_dir", root, "--ckpt_path", ckpt)
    assert code == 0, err
    assert sorted(p.name for p in run.parent.iterdir()) == ["latest", "v0"]  # no v1
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["epochs"] == 2 and metrics["resumed_from"] == str(ckpt.resolve())
    assert metrics["validation"]["dir"] == str(run / "validation")
    assert _digest(run / "validation") == validation  # the same honest validation split
    assert [p.name for p in (run / "weights" / "lightning").iterdir()] == ["model.ckpt"]


@pytest.mark.parametrize(("extra", "needle"), [
    (["--seed_everything", "5"], "whose seed is 0"),
    (["--validation_ratio", "0.3"], "whose validation ratio is 0.2"),
    (["--data.category", "tile"], "whose data is"),
])
def test_resume_with_settings_that_would_change_the_run_exits_2(extra: list[str], needle: str, uad, tiny_pbas,
                                                                 quiet, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    code, _, err = uad("fit", *tiny_pbas, *quiet, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
                       "--data.category", "washer", "--heatmaps", "false", "--test", "false",
                       "--default_root_dir", root)
    assert code == 0, err
    run = root / "pbas" / "UadDemo" / "washer" / "v0"
    before = _digest(run)
    code, _, err = uad("fit", *tiny_pbas, *quiet, "--trainer.max_epochs", "2", "--ckpt_path",
                       run / "weights" / "lightning" / "model.ckpt", "--default_root_dir", root, *extra)
    assert code == 2 and needle in err and "Traceback" not in err, err
    assert _digest(run) == before  # nothing of the run was touched
    assert sorted(p.name for p in run.parent.iterdir()) == ["latest", "v0"]
