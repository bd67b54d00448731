"""What ``uad infer`` scores: files, folders, glob patterns and file lists (``@list.txt`` / ``--list FILE``).

A folder is searched recursively and a glob (``'shots/**/*.png'``, quoted so the shell leaves it alone) is expanded
here; both keep image files only and must find at least one. A list file holds one path per line (blank lines and
lines starting with ``#`` skipped; relative paths are taken from the current folder, as on the command line); its
entries are not checked here: a missing one becomes an error row, not a failed run. Standard library only.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

from uad_edge.errors import EdgeError
from uad_edge.files import path_problem
from uad_edge.runtime import IMAGE_SUFFIXES, list_images

__all__ = ["expand_inputs", "read_list"]


def read_list(path: str | os.PathLike[str]) -> list[str]:
    """The paths in a list file (one a line; blank and ``#`` lines skipped); ``-`` is not accepted."""
    problem = path_problem(path)
    if problem:
        raise EdgeError(f"list file {path} {problem}.", hint="Give a text file with one image path a line.")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgeError(f"list file {path} cannot be read as UTF-8 text ({exc}).",
                        hint="Give a text file with one image path a line.") from exc
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def _glob(pattern: str) -> list[str]:
    found = sorted(p for p in glob.glob(pattern, recursive=True)
                   if Path(p).suffix.lower() in IMAGE_SUFFIXES and Path(p).is_file())
    if not found:
        raise EdgeError(f"the pattern {pattern} matches no image file.",
                        hint="Check the pattern (quote it so the shell does not expand it), or give folders.")
    return found


def expand_inputs(inputs: Sequence[str], lists: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """``(paths, protected)``: every input as a path string in order, and the paths the output must not touch
    (folders, files and list files given by name)."""
    paths: list[str] = []
    protected: list[str] = []
    for item in [*inputs, *(f"@{name}" for name in lists)]:
        if item.startswith("@") and not Path(item).exists():
            paths.extend(read_list(item[1:]))
            protected.append(item[1:])
        elif Path(item).exists() or path_problem(item) != "does not exist" or not glob.has_magic(item):
            paths.extend(str(p) for p in list_images([item]))  # a real path (or its error)
            protected.append(item)
        else:
            paths.extend(_glob(item))
    return paths, protected
