"""Run folders: concurrent starts never clash, a failed run leaves none, ``latest`` names only complete runs
(issue 11, items 8 and 12)."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest


def _make_runs(root: str, count: int) -> list[str]:
    from uad_plugins.engine.run import new_run_dir

    return [str(new_run_dir(root, "model", "data")) for _ in range(count)]


def test_simultaneous_starts_get_distinct_versions(tmp_path: Path) -> None:
    with ProcessPoolExecutor(max_workers=6) as pool:
        made = [path for chunk in pool.map(_make_runs, [str(tmp_path)] * 6, [20] * 6) for path in chunk]
    assert len(made) == 120 and len(set(made)) == 120
    names = sorted(int(Path(p).name[1:]) for p in made)
    assert names == list(range(120))
    assert not (tmp_path / "model" / "data" / "latest").exists()  # published only when a run completes


def test_publish_points_latest_at_a_run_and_leaves_a_user_folder_alone(tmp_path: Path) -> None:
    from uad_plugins.engine.run import discard_run, new_run_dir, publish_run

    first, second = new_run_dir(tmp_path), new_run_dir(tmp_path)
    publish_run(first)
    assert (tmp_path / "latest").resolve() == first
    discard_run(second)  # a failed run: gone, and latest still names the complete one
    assert not second.exists() and (tmp_path / "latest").resolve() == first
    third = new_run_dir(tmp_path)
    publish_run(third)
    assert (tmp_path / "latest").resolve() == third and os.readlink(tmp_path / "latest") == third.name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".latest")]
    other = tmp_path / "sub"
    other.mkdir()
    (other / "latest").mkdir()  # the user's own folder called latest
    run = new_run_dir(other)
    publish_run(run)
    assert (other / "latest").is_dir() and not (other / "latest").is_symlink()


@pytest.mark.slow
def test_failed_fit_leaves_no_run_folder_and_latest_stays_on_the_complete_run(uad, tiny_pbas: list[str],
                                                                              quiet: list[str],
                                                                              tmp_path: Path) -> None:
    root = tmp_path / "runs"
    args = ["fit", *tiny_pbas, *quiet, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
            "--test", "false", "--heatmaps", "false", "--data.category", "washer", "--default_root_dir", root]
    code, _, err = uad(*args)
    assert code == 0, err
    base = root / "pbas" / "UadDemo" / "washer"
    assert (base / "latest").resolve() == base / "v0"
    # fails after its run folder was made (the validation synthesizer is of the wrong modality)
    code, _, err = uad(*args, "--validation_synthesizer", "plugin:ecg_anomaly")
    assert code == 2 and "ecg_anomaly" in err, err
    assert sorted(p.name for p in base.iterdir()) == ["latest", "v0"]
    assert (base / "latest").resolve() == base / "v0"


@pytest.mark.slow
def test_trainer_default_root_dir_is_honoured(uad, tiny_pbas: list[str], quiet: list[str], tmp_path: Path) -> None:
    args = ["fit", *tiny_pbas, *quiet, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
            "--test", "false", "--heatmaps", "false", "--data.category", "washer"]
    code, _, err = uad(*args, "--trainer.default_root_dir", tmp_path / "lightning_style")
    assert code == 0, err
    assert (tmp_path / "lightning_style" / "pbas" / "UadDemo" / "washer" / "v0" / "plugins.json").is_file()
    code, _, err = uad(*args, "--trainer.default_root_dir", tmp_path / "a", "--default_root_dir", tmp_path / "b")
    assert code == 2 and "disagree" in err, err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
