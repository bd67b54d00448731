"""``trust.as_plain``: what the engine records in a checkpoint is plain data, or a ConfigError before any run."""

from __future__ import annotations

import enum
from pathlib import Path

import pytest

from uad_plugins.errors import ConfigError
from uad_plugins.trust import as_plain, check_plain


class Colour(enum.Enum):
    RED = "red"


def test_paths_enums_and_tuples_become_plain_and_bookkeeping_keys_are_dropped() -> None:
    record = {"class_path": "SignalFolder", "__path__": Path("/cfg/data.yaml"),
              "init_args": {"root": Path("/data"), "band": (1.0, 25.0), "mode": Colour.RED, "n": 3, "x": None}}
    plain = as_plain(record, field="data_config")
    assert plain == {"class_path": "SignalFolder",
                     "init_args": {"root": "/data", "band": [1.0, 25.0], "mode": "red", "n": 3, "x": None}}
    check_plain(plain, field="data_config", components=False)  # what the checkpoint reader accepts


@pytest.mark.parametrize("bad", [{"init_args": {"f": object()}}, {1: "a"}])
def test_anything_else_is_a_config_error_naming_the_field(bad: dict) -> None:
    with pytest.raises(ConfigError, match="data_config"):
        as_plain(bad, field="data_config")


def test_the_engine_records_plain_data_from_python_too(tmp_path: Path) -> None:
    from uad_plugins.engine.engine import UadEngine

    engine = UadEngine(default_root_dir=tmp_path, data_config={"class_path": "UadDemo",
                                                               "init_args": {"root": tmp_path / "demo"}})
    assert engine.data_config == {"class_path": "UadDemo", "init_args": {"root": str(tmp_path / "demo")}}
    with pytest.raises(ConfigError, match=r"data_config\.init_args\.f"):
        UadEngine(default_root_dir=tmp_path, data_config={"class_path": "UadDemo", "init_args": {"f": object()}})
