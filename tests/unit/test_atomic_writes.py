"""The one atomic-write door (`uad_plugins.edge.atomic`): a file lands whole or not at all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uad_plugins.edge.atomic import atomic_open, atomic_path, write_json_atomic, write_text_atomic


def test_text_and_json_land_whole(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "out.json"
    assert write_json_atomic(target, {"b": 1, "a": Path("x")}) == target
    assert json.loads(target.read_text(encoding="utf-8")) == {"b": 1, "a": "x"}
    write_text_atomic(target, "ünïcode\n")
    assert target.read_text(encoding="utf-8") == "ünïcode\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "scores.csv"
    target.write_text("old\n", encoding="utf-8")
    with pytest.raises(RuntimeError, match="disk full"), atomic_open(target, "w") as fh:
        fh.write("half a new fi")
        raise RuntimeError("disk full")
    assert target.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.csv"]


def test_atomic_path_keeps_the_suffix_a_writer_needs(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    target = tmp_path / "arrays.npz"
    with atomic_path(target, suffix=".npz") as tmp:
        assert tmp.suffix == ".npz" and tmp.parent == tmp_path and not target.exists()
        np.savez_compressed(tmp, a=np.arange(3))
    assert np.load(target)["a"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["arrays.npz"]


def test_atomic_open_only_writes_new_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode must be 'w' or 'wb'"), atomic_open(tmp_path / "x", "a"):
        pass
    assert list(tmp_path.iterdir()) == []
