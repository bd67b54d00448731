"""Result folders land whole and never cost a user's files (issue 11, items 3, 7 and 12): ``edge.output``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from uad_edge import EdgeError
from uad_edge.output import OutputFolder


def _write(folder: OutputFolder, files: dict[str, str], doc: dict | None = None) -> None:
    with folder.writing() as tmp:
        for rel, text in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text)
        folder.write_document(tmp, doc or {"ok": True})


def test_new_output_receives_everything_at_once(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _write(OutputFolder(out, document="scores.json"), {"overlays/a.png": "a", "overlays/b.png": "b"})
    document = json.loads((out / "scores.json").read_text())
    assert document["files"] == ["overlays/a.png", "overlays/b.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left beside it


def test_empty_existing_output_is_used(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    _write(OutputFolder(tmp_path / "out", document="scores.json"), {"x.txt": "x"})
    assert (tmp_path / "out" / "x.txt").read_text() == "x"


def test_non_empty_output_is_refused_without_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("precious")
    with pytest.raises(EdgeError, match="--overwrite"):
        OutputFolder(out, document="scores.json")
    assert (out / "mine.txt").read_text() == "precious"


def test_output_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("a file")
    with pytest.raises(EdgeError, match="not a folder"):
        OutputFolder(tmp_path / "out", document="scores.json", overwrite=True)


@pytest.mark.parametrize("where", ["same", "inside"])
def test_output_in_a_protected_folder_is_refused_even_with_overwrite(tmp_path: Path, where: str) -> None:
    inputs = tmp_path / "images"
    inputs.mkdir()
    (inputs / "part.png").write_text("input")
    out = inputs if where == "same" else inputs / "scored"
    with pytest.raises(EdgeError, match="inputs"):
        OutputFolder(out, document="scores.json", overwrite=True, protect=[inputs])
    assert (inputs / "part.png").read_text() == "input"
    assert [p.name for p in inputs.iterdir()] == ["part.png"]


def test_overwrite_replaces_only_our_files_and_drops_our_stale_ones(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _write(OutputFolder(out, document="scores.json"), {"overlays/0000_a.png": "a1", "overlays/0001_b.png": "b1"})
    (out / "notes.txt").write_text("the user's")
    (out / "overlays" / "user.png").write_text("the user's too")
    _write(OutputFolder(out, document="scores.json", overwrite=True), {"overlays/0000_c.png": "c2"},
           {"run": 2})
    assert (out / "notes.txt").read_text() == "the user's"
    assert (out / "overlays" / "user.png").read_text() == "the user's too"
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["0000_c.png", "user.png"]  # a, b were ours
    assert json.loads((out / "scores.json").read_text()) == {"run": 2, "files": ["overlays/0000_c.png"]}


def test_a_forged_previous_document_cannot_delete_outside_or_protected_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    (out / "input.png").write_text("keep too")
    (out / "scores.json").write_text(json.dumps({"files": ["../outside.txt", str(outside), "input.png"]}))
    folder = OutputFolder(out, document="scores.json", overwrite=True, protect=[out / "input.png"])
    with pytest.raises(EdgeError, match="inputs"):
        _write(folder, {"a.txt": "a"})
    assert outside.read_text() == "keep" and (out / "input.png").read_text() == "keep too"
    folder = OutputFolder(out, document="scores.json", overwrite=True)
    (out / "scores.json").write_text(json.dumps({"files": ["../outside.txt", str(outside)]}))
    _write(folder, {"a.txt": "a"})
    assert outside.read_text() == "keep"


def test_a_failure_while_writing_leaves_the_output_as_it_was(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _write(OutputFolder(out, document="scores.json"), {"a.txt": "old"})
    folder = OutputFolder(out, document="scores.json", overwrite=True)
    with pytest.raises(RuntimeError), folder.writing() as tmp:
        (tmp / "a.txt").write_text("new")
        raise RuntimeError("killed midway")
    assert (out / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(RuntimeError), OutputFolder(tmp_path / "fresh", document="d.json").writing():
        raise RuntimeError("boom")
    assert not (tmp_path / "fresh").exists()


def test_temporaries_of_killed_processes_are_removed_by_the_next_run(tmp_path: Path) -> None:
    code = ("import os, sys; from uad_edge.tempdirs import make_owned_tempdir; "
            "t = make_owned_tempdir('.out.uad-', sys.argv[1]); open(os.path.join(t, 'half.png'), 'w').close(); "
            "print(t, flush=True); os._exit(9)")  # dies without cleaning up, as a SIGKILLed run would
    child = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    stale = Path(child.stdout.strip())
    assert child.returncode == 9 and (stale / "half.png").is_file()
    users = tmp_path / ".out.uad-backup"  # our prefix, but no owner marker: not ours
    users.mkdir()
    _write(OutputFolder(tmp_path / "out", document="d.json"), {"a.txt": "a"})
    assert not stale.exists() and users.is_dir()
    assert json.loads((tmp_path / "out" / "d.json").read_text())["files"] == ["a.txt"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.txt", "d.json"]
