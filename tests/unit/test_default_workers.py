"""Data-loader workers default to the cores available; a user's own value is kept (issue 12)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uad_plugins.cli.resolve import normalise_argv
from uad_plugins.factory import available_cores, create_datamodule, with_default_workers


class _Data:
    def __init__(self, root: str = ".", num_workers: int = 8) -> None:
        self.root, self.num_workers = root, num_workers


def test_default_is_capped_at_the_cores(monkeypatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    assert available_cores() == 2
    assert with_default_workers(_Data, {"root": "x"}) == {"root": "x", "num_workers": 2}
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(32)))
    assert with_default_workers(_Data, {})["num_workers"] == 8  # never more than the class's own default


def test_a_given_value_is_kept(monkeypatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
    assert with_default_workers(_Data, {"num_workers": 6})["num_workers"] == 6
    assert with_default_workers(dict, {}) == {}  # a class without the option is left alone


def test_the_datamodule_door_applies_it(tmp_path: Path) -> None:
    data = create_datamodule("Folder", name="x", root=str(tmp_path), normal_dir="good")
    assert data.num_workers == min(8, available_cores())
    data = create_datamodule({"class_path": "Folder", "init_args": {"name": "x", "root": str(tmp_path),
                                                                    "normal_dir": "good", "num_workers": 5}})
    assert data.num_workers == 5


@pytest.mark.parametrize("argv", [
    ["--data.num_workers", "3"],
    ["--data.init_args.num_workers=3"],
    ["--data", json.dumps({"class_path": "Folder", "init_args": {"num_workers": 3}})],
])
def test_cli_knows_which_data_options_the_user_gave(argv: list[str]) -> None:
    assert "num_workers" in normalise_argv(["--data", "Folder", *argv]).data_keys


def test_cli_reads_data_options_from_config_files(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  class_path: Folder\n  init_args:\n    root: x\n    num_workers: 4\n")
    assert {"root", "num_workers"} <= normalise_argv(["--config", str(config)]).data_keys
    config.write_text("data:\n  class_path: Folder\n  init_args:\n    root: x\n")
    assert "num_workers" not in normalise_argv(["--config", str(config)]).data_keys


def test_cli_fit_leaves_unset_workers_to_the_door(tmp_path: Path) -> None:
    from uad_plugins.cli.train import _parse, _user_data

    folder = ["--model", "plugin:pbas", "--data", "Folder", "--data.name", "x", "--data.root", str(tmp_path),
              "--data.normal_dir", "good"]
    _, cfg, norm = _parse("fit", folder)
    assert "num_workers" not in _user_data(cfg, norm)["init_args"]
    _, cfg, norm = _parse("fit", [*folder, "--data.num_workers", "8"])
    assert _user_data(cfg, norm)["init_args"]["num_workers"] == 8
