"""The one atomic-write door (`uad_edge.atomic`): a file lands whole or not at all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uad_edge.atomic import (
    atomic_open,
    atomic_path,
    publish_folder,
    staged_folder,
    write_json_atomic,
    write_text_atomic,
)


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


def test_a_staged_folder_lands_whole(tmp_path: Path) -> None:
    final = tmp_path / "deep" / "out"
    with staged_folder(final) as tmp:
        assert tmp.parent == final.parent and not final.exists()
        (tmp / "a.txt").write_text("a", encoding="utf-8")
    assert [p.name for p in final.parent.iterdir()] == ["out"]
    assert (final / "a.txt").read_text(encoding="utf-8") == "a"


def test_a_failed_staged_folder_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"), staged_folder(final) as tmp:
        (tmp / "a.txt").write_text("a", encoding="utf-8")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_publish_folder_replaces_only_an_empty_folder(tmp_path: Path) -> None:
    final = tmp_path / "out"
    final.mkdir()
    tmp = tmp_path / ".out.tmp"
    tmp.mkdir()
    (tmp / "new.txt").write_text("new", encoding="utf-8")
    assert publish_folder(tmp, final) == final
    assert [p.name for p in final.iterdir()] == ["new.txt"] and not tmp.exists()
    other = tmp_path / ".out.tmp2"
    other.mkdir()
    with pytest.raises(OSError):  # final is not empty now: nothing moves
        publish_folder(other, final)
    assert other.is_dir() and [p.name for p in final.iterdir()] == ["new.txt"]
