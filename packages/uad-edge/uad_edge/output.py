"""Result folders that land whole, and never at the cost of a user's files (``uad infer``, ``uad predict``).

* The results are written into a temporary sibling folder first; a failure leaves the output as it was.
* A missing or empty output folder then receives them by one rename.
* A non-empty output folder is refused unless ``overwrite`` is given. With it, only the files this command writes
  are replaced, and the files that the previous run listed in its document (``scores.json``,
  ``predictions.json``: key ``files``) are removed first, so old and new results never mix. Anything else in the
  folder stays. The document is moved last: it always describes what is there.
* The output may not be, or lie inside, a protected path (the bundle, an input folder), and no protected file
  (an input) is ever replaced or removed.
* A temporary folder left by a killed process (``.<name>.uad-*``, see ``edge.tempdirs``) is removed by the next
  run once that process is gone.

Standard library only (the edge runtime imports it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from uad_edge.atomic import publish_folder
from uad_edge.errors import EdgeError
from uad_edge.tempdirs import OWNER_MARKER, make_owned_tempdir

__all__ = ["OutputFolder"]

def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


class OutputFolder:
    """The output folder of one command run; see the module docstring for the rules.

    Args:
        path: the output folder.
        document: the JSON document the command writes last (it lists the other files under ``files``).
        overwrite: allow a non-empty output (replacing only this command's files).
        protect: paths never written, replaced or removed (inputs, the bundle); the output may not lie in one.
        what: the command, for messages (``uad infer``).
    """

    def __init__(self, path: str | os.PathLike[str], *, document: str, overwrite: bool = False,
                 protect: Sequence[str | os.PathLike[str]] = (), what: str = "this command") -> None:
        self.path = Path(path)
        self.document = document
        self.overwrite = overwrite
        self.what = what
        self.protect = [Path(p).resolve() for p in protect]
        self._check()

    # ------------------------------------------------------------------ checks
    def _check(self) -> None:
        out = self.path.resolve()
        for protected in self.protect:
            if _inside(out, protected) and (protected.is_dir() or out == protected):
                raise EdgeError(f"{self.what}: --output {self.path} is, or lies inside, {protected}, which is one "
                                "of the command's inputs.", hint="Choose an output folder outside the inputs and the "
                                                                 "bundle.")
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_dir()):
            raise EdgeError(f"{self.what}: --output {self.path} exists and is not a folder.",
                            hint="Choose a folder path for --output; nothing was written.")
        if self.path.is_dir() and any(self.path.iterdir()) and not self.overwrite:
            raise EdgeError(f"{self.what}: --output {self.path} already exists and is not empty.",
                            hint="Choose another --output, or pass --overwrite to replace the files this command "
                                 f"writes there ({self.document} and what it lists); nothing else is touched.")

    def _previous_files(self) -> list[str]:
        """Files the previous run listed in its document (safe relative paths of regular files only)."""
        try:
            listed = json.loads((self.path / self.document).read_text(encoding="utf-8")).get("files")
        except (OSError, ValueError, AttributeError):
            return []
        out = []
        for item in listed if isinstance(listed, list) else []:
            if isinstance(item, str) and _safe_relative(item):
                target = self.path / item
                if target.is_file() and not target.is_symlink() and _inside(target.resolve(), self.path.resolve()):
                    out.append(item)
        return out

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def writing(self) -> Iterator[Path]:
        """A temporary folder to fill; committed to the output when the block ends without an error."""
        parent = self.path.parent
        parent.mkdir(parents=True, exist_ok=True)
        tmp = make_owned_tempdir(f".{self.path.name}.uad-", parent)  # removes those of killed runs first
        try:
            yield tmp
            (tmp / OWNER_MARKER).unlink(missing_ok=True)
            self._commit(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def write_document(self, tmp: Path, document: dict[str, Any]) -> None:
        """Write the JSON document into ``tmp``, listing every other file already there under ``files``."""
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        document = {**document, "files": [f for f in files if f not in (self.document, OWNER_MARKER)]}
        (tmp / self.document).write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")

    def _commit(self, tmp: Path) -> None:
        if not (tmp / self.document).is_file():
            raise EdgeError(f"{self.what}: internal error, {self.document} was not written.")
        tmp.chmod(0o755)  # mkdtemp makes it private; results are meant to be shared
        existed = self.path.exists()
        try:
            publish_folder(tmp, self.path)
            return
        except OSError:
            if not existed:
                raise
        self._merge(tmp)  # a non-empty output (overwrite)

    def _merge(self, tmp: Path) -> None:
        """Replace this command's files in a non-empty output (``overwrite``), checking everything first."""
        new = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        previous = [f for f in self._previous_files() if f not in new]
        root = self.path.resolve()
        for rel in [*new, *previous]:
            target = (self.path / rel).resolve()
            if not _inside(target, root) or any(_inside(target, p) for p in self.protect):
                raise EdgeError(f"{self.what}: writing {rel} in --output {self.path} would replace one of the "
                                "command's inputs.", hint="Choose an output folder outside the inputs; nothing "
                                                          "was changed.")
            if rel in new and target.is_dir():
                raise EdgeError(f"{self.what}: --output {self.path} holds a folder {rel} where a result file goes.",
                                hint="Choose another --output; nothing was changed.")
        for rel in previous:
            (self.path / rel).unlink(missing_ok=True)
        for rel in sorted(new, key=lambda f: f == self.document):  # the document last
            target = self.path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / rel, target)
        for rel in previous:  # folders the previous run made and that are now empty
            for folder in (self.path / rel).parents:
                if folder == self.path or not _inside(folder, self.path):
                    break
                with contextlib.suppress(OSError):
                    folder.rmdir()


def _safe_relative(item: str) -> bool:
    pure = PurePosixPath(item)
    return bool(item) and "\\" not in item and not pure.is_absolute() and ".." not in pure.parts
