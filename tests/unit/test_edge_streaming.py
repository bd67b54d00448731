"""Streaming edge inference (issue 16): predict_iter equals predict, keeps input order, records bad inputs, and holds
a bounded number of decoded images; the results file (JSON Lines / CSV) appends whole rows and drops a torn one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from uad_edge import EdgeError
from uad_edge.inputs import expand_inputs
from uad_edge.results import COLUMNS, ResultsFile


def _pngs(folder: Path, n: int, size: int = 64, seed: int = 0) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img_{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


# ------------------------------------------------------------------------------------------------ results file (fast)
ROWS = [{"image": "a.png", "pred_score": 0.25, "pred_label": False, "raw_score": 1.5, "heatmap": "overlays/a.png"},
        {"image": 'odd "name",\nwith newline.png', "pred_score": 0.75, "pred_label": True, "raw_score": 2.0},
        {"image": "bad.png", "pred_score": None, "pred_label": None, "error": "bad.png cannot be read as an image."}]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_results_file_round_trip_and_torn_line(tmp_path: Path, fmt: str) -> None:
    results = ResultsFile(tmp_path / f"scores.{fmt}", fmt)
    results.create()
    results.append(ROWS[:2])
    results.append(ROWS[2:])
    full = [{c: row.get(c) for c in COLUMNS} for row in ROWS]
    assert results.resume() == full
    whole = results.path.read_bytes()
    results.append(ROWS[:1])
    with open(results.path, "r+b") as fh:  # a kill in the middle of the last row
        fh.truncate(len(whole) + 7)
    assert results.resume() == full  # the torn row is dropped ...
    assert results.path.read_bytes() == whole  # ... and cut off the file
    if fmt == "csv":
        assert results.path.read_text().splitlines()[0] == ",".join(COLUMNS)
    else:
        assert all(json.loads(line) for line in results.path.read_text().splitlines())


def test_results_file_refuses_a_foreign_file(tmp_path: Path) -> None:
    (tmp_path / "scores.jsonl").write_text('{"image": "a.png"}\nnot json\n{"image": "b.png"}\n')
    with pytest.raises(EdgeError, match="line 2 is not a result row"):
        ResultsFile(tmp_path / "scores.jsonl", "jsonl").resume()
    (tmp_path / "scores.csv").write_text("name,score\na,1\n")
    with pytest.raises(EdgeError, match="not a results file"):
        ResultsFile(tmp_path / "scores.csv", "csv").resume()


def test_inputs_from_globs_and_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("a/1.png", "a/b/2.jpg", "a/notes.txt", "c/3.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "list.txt").write_text("# mine\nc/3.png\n\nmissing.png\n")
    paths, protected = expand_inputs(["a/**/*", "@list.txt", "c"], ["list.txt"])
    assert paths == ["a/1.png", "a/b/2.jpg", "c/3.png", "missing.png", "c/3.png", "c/3.png", "missing.png"]
    assert protected == ["list.txt", "c", "list.txt"]
    with pytest.raises(EdgeError, match="matches no image"):
        expand_inputs(["z/*.png"])
    with pytest.raises(EdgeError, match="does not exist"):
        expand_inputs(["nothing.png"])
    with pytest.raises(EdgeError, match=r"list file nope\.txt does not exist"):
        expand_inputs([], ["nope.txt"])


# ------------------------------------------------------------------------------------------------ runtime (slow)
@pytest.mark.slow
def test_predict_iter_equals_predict_in_order(tiny_edge_bundle: Path, tmp_path: Path) -> None:
    from uad_edge import load_bundle

    model = load_bundle(tiny_edge_bundle)
    files = _pngs(tmp_path / "imgs", 21)
    ref = model.predict(files, batch_size=8)
    for batch_size, requests in ((3, 2), (8, 1), (1, None)):
        got = list(model.predict_iter(iter(files), batch_size=batch_size, requests=requests))
        assert [r.source for r in got] == files
        assert np.abs(np.array([r.pred_score for r in got]) - ref.pred_score).max() < 1e-5
        assert np.abs(np.array([r.raw_score for r in got]) - ref.raw_score).max() < 1e-5
        assert np.abs(np.stack([r.anomaly_map for r in got]) - ref.anomaly_map).max() < 1e-5
        assert [r.pred_label for r in got] == [bool(v) for v in ref.pred_label]
    assert got[0].record() == ref.records()[0] | {"pred_score": got[0].pred_score, "raw_score": got[0].raw_score}
    assert all(r.anomaly_map is None for r in model.predict_iter(files[:3], maps=False))


@pytest.mark.slow
def test_predict_iter_bad_inputs(tiny_edge_bundle: Path, tmp_path: Path) -> None:
    from uad_edge import load_bundle

    model = load_bundle(tiny_edge_bundle)
    files = _pngs(tmp_path / "imgs", 6)
    (tmp_path / "not_image.png").write_bytes(b"not an image")
    (tmp_path / "truncated.png").write_bytes(Path(files[0]).read_bytes()[:60])
    wrong = _pngs(tmp_path / "big", 1, size=80)[0]
    sources = [files[0], str(tmp_path / "not_image.png"), files[1], str(tmp_path / "truncated.png"), files[2], wrong,
               str(tmp_path / "missing.png"), *files[3:]]
    got = list(model.predict_iter(sources, batch_size=4, on_error="record"))
    assert [r.source for r in got] == sources
    errors = {r.source: r.error for r in got if not r.ok}
    assert set(errors) == {sources[i] for i in (1, 3, 5, 6)}
    assert "cannot be read as an image" in errors[str(tmp_path / "not_image.png")]
    assert "expects 64x64" in errors[wrong] and "\n" not in errors[wrong]
    assert "not found" in errors[str(tmp_path / "missing.png")]
    ok = [r for r in got if r.ok]
    ref = model.predict([r.source for r in ok])
    assert np.abs(np.array([r.pred_score for r in ok]) - ref.pred_score).max() < 1e-5
    assert got[1].record()["error"] and got[1].record()["pred_score"] is None
    seen = []
    with pytest.raises(EdgeError, match="cannot be read as an image"):
        for result in model.predict_iter(sources, batch_size=4):
            seen.append(result.source)
    assert seen == sources[:1]  # the inputs before the bad one are yielded first


@pytest.mark.slow
def test_predict_iter_holds_a_bounded_number_of_decoded_images(tiny_edge_bundle: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted, not timed: decoded-but-not-yielded images never exceed (requests + 2) chunks, whatever N is."""
    from uad_edge import load_bundle
    from uad_edge.runtime import EdgeModel

    model = load_bundle(tiny_edge_bundle)
    files = _pngs(tmp_path / "imgs", 8)
    decoded = {"n": 0}
    load = EdgeModel._load_image

    def counting(self: EdgeModel, source: str, resize: bool) -> np.ndarray:
        decoded["n"] += 1
        return load(self, source, resize)

    monkeypatch.setattr(EdgeModel, "_load_image", counting)
    batch_size, requests = 4, 2
    for n in (40, 400):
        pulled = {"n": 0}

        def sources(count: int, counter: dict[str, int]):
            for i in range(count):
                counter["n"] += 1
                yield files[i % len(files)]

        decoded["n"], ahead, yielded = 0, 0, 0
        for _ in model.predict_iter(sources(n, pulled), batch_size=batch_size, requests=requests, maps=True):
            yielded += 1
            ahead = max(ahead, decoded["n"] - yielded, pulled["n"] - yielded)
        assert yielded == n
        assert ahead <= (requests + 2) * batch_size, (n, ahead)
