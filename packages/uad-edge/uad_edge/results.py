"""Results that grow as they come (``uad infer --format jsonl|csv``): one row per input, appended a chunk at a time.

* Each chunk's rows are appended with one ``write`` then ``fsync`` (SIGINT held meanwhile), so a row is either all
  there or not at all; should a crash still tear the last line, :meth:`ResultsFile.resume` drops it (the file is
  cut back to its last complete row) and those inputs are scored again.
* The output folder holds ``scores.jsonl`` or ``scores.csv``, ``infer.json`` (the run: bundle, its manifest
  checksum, format, resize; written first) and ``overlays/`` when heatmaps are written.
* A non-empty folder is refused unless ``resume`` (continue the run there: same bundle, format and resize) or
  ``overwrite`` (start again: only ``infer.json``, the results file and the overlays its rows name are removed).

Standard library only (the edge runtime imports it).
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from uad_edge.atomic import write_json_atomic
from uad_edge.errors import EdgeError

__all__ = ["COLUMNS", "FORMATS", "RUN_DOCUMENT", "ResultsFile", "open_results"]

#: one row per input, in this order (CSV header; JSON Lines keys)
COLUMNS = ("image", "pred_score", "pred_label", "raw_score", "heatmap", "error")
FORMATS = ("jsonl", "csv")
RUN_DOCUMENT = "infer.json"


@contextmanager
def _sigint_held() -> Iterator[None]:
    """Delay SIGINT (Ctrl-C) until the block ends (main thread, POSIX); elsewhere a no-op."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def _csv_value(column: str, cell: str) -> Any:
    if cell == "":
        return None
    if column == "pred_label":
        return cell == "true"
    if column in ("pred_score", "raw_score"):
        return float(cell)
    return cell


class ResultsFile:
    """``scores.jsonl`` (one JSON object per line) or ``scores.csv`` (a header, then one row per line)."""

    def __init__(self, path: str | os.PathLike[str], fmt: str) -> None:
        if fmt not in FORMATS:
            raise EdgeError(f"unknown results format {fmt!r}.", hint=f"Use one of {', '.join(FORMATS)}.")
        self.path = Path(path)
        self.format = fmt

    def encode(self, rows: Sequence[dict[str, Any]]) -> bytes:
        """The rows as lines of this format (every column, in :data:`COLUMNS` order)."""
        if self.format == "jsonl":
            return "".join(json.dumps({c: row.get(c) for c in COLUMNS}) + "\n" for row in rows).encode("utf-8")
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerows([_csv_cell(row.get(c)) for c in COLUMNS] for row in rows)
        return buffer.getvalue().encode("utf-8")

    def create(self) -> None:
        """A new file (refused if one is there), with the CSV header."""
        with open(self.path, "xb") as fh:
            if self.format == "csv":
                fh.write((",".join(COLUMNS) + "\n").encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append ``rows`` with one write, then fsync (SIGINT held until both are done)."""
        if not rows:
            return
        data = self.encode(rows)
        with _sigint_held():
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            try:
                view = memoryview(data)
                while view:  # one write for a regular file; the loop only guards against a short write
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)

    def _complete_length(self, data: bytes) -> int:
        """Bytes of ``data`` that hold whole rows (a torn last line is left out)."""
        end = data.rfind(b"\n") + 1
        if self.format == "jsonl":
            return end
        quotes, complete, offset = 0, 0, 0
        for line in data[:end].splitlines(keepends=True):  # a quoted cell may hold a newline
            quotes += line.count(b'"')
            offset += len(line)
            if quotes % 2 == 0:
                complete = offset
        return complete

    def resume(self) -> list[dict[str, Any]]:
        """The rows already written; a torn last line is cut off the file first."""
        data = self.path.read_bytes()
        keep = self._complete_length(data)
        if keep < len(data):
            with _sigint_held(), open(self.path, "r+b") as fh:
                fh.truncate(keep)
                fh.flush()
                os.fsync(fh.fileno())
        text = data[:keep].decode("utf-8", errors="replace")
        if self.format == "jsonl":
            rows = []
            for number, line in enumerate(text.splitlines(), 1):
                try:
                    row = json.loads(line)
                except ValueError:
                    row = None
                if not isinstance(row, dict) or not isinstance(row.get("image"), str):
                    raise EdgeError(f"{self.path}: line {number} is not a result row of uad infer.",
                                    hint="The file was changed by something else: use another --output, or "
                                         "--overwrite to start again.")
                rows.append(row)
            return rows
        records = list(csv.reader(io.StringIO(text, newline="")))
        if not records:  # killed before the header landed
            self.path.write_bytes((",".join(COLUMNS) + "\n").encode("utf-8"))
            return []
        if tuple(records[0]) != COLUMNS or any(len(r) != len(COLUMNS) for r in records[1:]):
            raise EdgeError(f"{self.path} is not a results file of uad infer (columns {', '.join(COLUMNS)}).",
                            hint="Use another --output, or --overwrite to start again.")
        return [{c: _csv_value(c, cell) for c, cell in zip(COLUMNS, r)} for r in records[1:]]


def _safe_file(folder: Path, item: Any) -> Path | None:
    """``folder / item`` when ``item`` is a plain relative path to a regular file inside ``folder``."""
    if not isinstance(item, str) or not item or "\\" in item:
        return None
    pure = PurePosixPath(item)
    if pure.is_absolute() or ".." in pure.parts:
        return None
    target = folder / item
    if target.is_symlink() or not target.is_file():
        return None
    return target if folder.resolve() in target.resolve().parents else None


def _previous_run(folder: Path) -> dict[str, Any] | None:
    try:
        run = json.loads((folder / RUN_DOCUMENT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return run if isinstance(run, dict) and run.get("command") == "uad infer" else None


def _remove_previous(folder: Path, protect: Sequence[Path]) -> None:
    """``--overwrite``: remove what the previous streaming run wrote (its run document, results, overlays)."""
    run = _previous_run(folder)
    if run is None:
        return
    for fmt in FORMATS:
        results = _safe_file(folder, f"scores.{fmt}")
        if results is None:
            continue
        try:
            rows = ResultsFile(results, fmt).resume()
        except EdgeError:
            rows = []
        for row in rows:
            heatmap = _safe_file(folder, row.get("heatmap"))
            if heatmap is not None and not any(heatmap.resolve() == p for p in protect):
                heatmap.unlink()
        results.unlink()
    (folder / RUN_DOCUMENT).unlink(missing_ok=True)


def open_results(folder: str | os.PathLike[str], fmt: str, run: dict[str, Any], *, resume: bool = False,
                 overwrite: bool = False, protect: Sequence[str | os.PathLike[str]] = ()
                 ) -> tuple[ResultsFile, list[dict[str, Any]]]:
    """The results file in ``folder`` and the rows it already holds (non-empty only with ``resume``).

    ``run`` describes this run (``bundle``, ``manifest_sha256``, ``format``, ``resize``...); ``resume`` requires the
    previous run to match it on those keys. ``protect``: paths the output may not be or lie in (the bundle, inputs).
    """
    from uad_edge.output import OutputFolder

    path = Path(folder)
    if resume and overwrite:
        raise EdgeError("uad infer: --resume and --overwrite exclude each other.",
                        hint="--resume continues the run in --output; --overwrite starts it again.")
    # the rules of every result folder: not a file, not (inside) the bundle or an input folder
    OutputFolder(path, document=RUN_DOCUMENT, overwrite=True, protect=protect, what="uad infer")
    protected = [Path(p).resolve() for p in protect]
    results = ResultsFile(path / f"scores.{fmt}", fmt)
    run = {"command": "uad infer", **run, "format": fmt, "columns": list(COLUMNS)}
    if path.is_dir() and any(path.iterdir()):
        previous = _previous_run(path)
        if resume:
            if previous is None:
                raise EdgeError(f"uad infer --resume: --output {path} holds no streaming run of uad infer "
                                f"({RUN_DOCUMENT} is missing).", hint="Choose the folder of the run to continue, "
                                                                      "or a new --output.")
            changed = [k for k in ("manifest_sha256", "format", "resize") if previous.get(k) != run.get(k)]
            if changed:
                raise EdgeError(f"uad infer --resume: the run in {path} differs in {', '.join(changed)} "
                                f"({', '.join(f'{k}={previous.get(k)!r}' for k in changed)}).",
                                hint="Resume with the same bundle, --format and --resize, or use another --output.")
            if results.path.is_file():
                return results, results.resume()
            results.create()
            return results, []
        if not overwrite:
            raise EdgeError(f"uad infer: --output {path} already exists and is not empty.",
                            hint="Pass --resume to continue the run there, --overwrite to start it again (only "
                                 f"{RUN_DOCUMENT}, scores.{fmt} and the overlays it lists are replaced), or choose "
                                 "another --output.")
        _remove_previous(path, protected)
        if results.path.exists():
            raise EdgeError(f"uad infer: --output {path} holds a {results.path.name} that uad infer did not write.",
                            hint="Choose another --output; nothing was changed.")
    path.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path / RUN_DOCUMENT, run)
    results.create()
    return results, []
