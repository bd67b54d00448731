"""Score many images on Ray Data: ``map_batches`` over the edge runtime, one compiled model per actor.

    import ray
    from uad_plugins.scale import score_folder_with_ray
    ray.init()                                   # or ray.init(address="auto") on a cluster
    rows = score_folder_with_ray("RUN/bundle_fp32", ["shots/"], num_actors=2, output="scores.jsonl")

* The driver reads and verifies the bundle's manifest once (a missing or altered bundle, or a signal bundle, fails
  here, before any actor starts) and lists the images as ``uad infer`` does for files and folders.
* :class:`BundleScorer` is the callable class Ray Data runs in each actor: ``__init__`` loads and compiles the
  bundle once (``num_threads`` OpenVINO threads, pinned to the manifest checksum the driver read), ``__call__``
  decodes and scores one batch of paths in the actor. A file that cannot be scored gets a row with ``error`` set
  (the runtime's message, as in ``uad infer --format jsonl``), not a failed job.
* Rows come back in input order with the columns of ``uad infer --format jsonl --no_overlays``
  (:data:`COLUMNS`); ``output`` writes them as JSON Lines.

Imports the edge runtime by its public names, numpy, and ``ray``/``pyarrow`` (``pip install 'uad_plugins[ray]'``)
lazily inside functions: importing this module needs neither, and never imports torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uad_plugins.edge import EdgeError, list_images, load_bundle, read_manifest

if TYPE_CHECKING:
    import numpy as np
    import ray.data

__all__ = ["COLUMNS", "BundleScorer", "score_folder_with_ray", "scoring_dataset"]

#: one row per input, in this order: the columns of ``uad infer --format jsonl`` (``heatmap`` is always empty here)
COLUMNS = ("image", "pred_score", "pred_label", "raw_score", "heatmap", "error")

_INSTALL_HINT = "Install Ray Data: pip install 'uad_plugins[ray]' (or pip install 'ray[data]')."


def _one_line(text: str) -> str:
    return " ".join(text.split())


class BundleScorer:
    """One actor's model: the bundle compiled once (``device``, ``num_threads`` OpenVINO threads) and a call that
    scores a batch of image paths. Ray Data builds it in each actor from ``fn_constructor_kwargs``; it works the
    same without Ray (``BundleScorer(bundle).score(paths)``)."""

    def __init__(self, bundle: str | Path, *, resize: bool = False, num_threads: int | None = 1, device: str = "CPU",
                 expected_manifest_sha256: str | None = None) -> None:
        self.model = load_bundle(bundle, device=device, num_threads=num_threads,
                                 expected_manifest_sha256=expected_manifest_sha256)
        if self.model.modality != "image":
            raise EdgeError(f"bundle {bundle} is a {self.model.modality} bundle; Ray batch scoring reads image files.",
                            hint="Score signal windows with load_bundle(...).predict.")
        self.resize = resize

    def _score_one(self, path: str) -> dict[str, Any]:
        try:
            return self.model.predict([path], resize=self.resize).records()[0]
        except EdgeError as exc:
            return {"image": path, "error": _one_line(exc.message)}
        except Exception as exc:  # noqa: BLE001 - a decoder's own error (e.g. a decompression bomb): this file only
            return {"image": path, "error": _one_line(f"{path} cannot be read as an image ({type(exc).__name__}: "
                                                      f"{exc}).")}

    def score(self, paths: Sequence[str]) -> list[dict[str, Any]]:
        """One row per path (``image``, ``pred_score``, ``pred_label``, ``raw_score`` or ``error``), in order: the
        batch is decoded and scored in one inference call; if any file in it fails, each is scored alone so that
        only the bad ones get an error row."""
        paths = [str(p) for p in paths]
        if not paths:
            return []
        try:
            return self.model.predict(paths, resize=self.resize, batch_size=len(paths)).records()
        except Exception:  # noqa: BLE001 - some file of the batch is bad: find which, file by file
            return [self._score_one(path) for path in paths]

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        """Ray Data's entry point: a batch with columns ``index`` and ``image`` -> a table with ``index`` and
        :data:`COLUMNS` (nulls where a value does not apply)."""
        import pyarrow as pa

        rows = self.score([str(p) for p in batch["image"]])
        return pa.table({
            "index": pa.array([int(i) for i in batch["index"]], pa.int64()),
            "image": pa.array([r["image"] for r in rows], pa.string()),
            "pred_score": pa.array([r.get("pred_score") for r in rows], pa.float64()),
            "pred_label": pa.array([r.get("pred_label") for r in rows], pa.bool_()),
            "raw_score": pa.array([r.get("raw_score") for r in rows], pa.float64()),
            "heatmap": pa.array([None] * len(rows), pa.string()),
            "error": pa.array([r.get("error") for r in rows], pa.string()),
        })


def _import_ray_data() -> Any:
    try:
        import ray.data
    except ImportError as exc:
        raise EdgeError(f"Ray Data is not installed ({exc}).", hint=_INSTALL_HINT) from exc
    return ray.data


def scoring_dataset(bundle: str | Path, paths: Sequence[str | Path], *, num_actors: int = 2,
                    threads_per_actor: int = 1, batch_size: int = 8, resize: bool = False,
                    device: str = "CPU") -> ray.data.Dataset:
    """A lazy Ray Dataset of one row per path (``index`` = position in ``paths``, then :data:`COLUMNS`), scored by
    ``num_actors`` :class:`BundleScorer` actors of ``threads_per_actor`` CPUs (and OpenVINO threads) each, on
    batches of ``batch_size`` paths. Nothing runs until the dataset is consumed (``take_all``, ``iter_rows``,
    ``write_parquet``...). The paths must be readable where the actors run (the same machine, or a shared file
    system on a cluster); a missing one gets an error row."""
    for name, value in (("num_actors", num_actors), ("threads_per_actor", threads_per_actor),
                        ("batch_size", batch_size)):
        if int(value) < 1:
            raise EdgeError(f"{name} must be at least 1, got {value}.")
    if not paths:
        raise EdgeError("no images given.", hint="Give image files or folders of images.")
    manifest = read_manifest(bundle)  # verified once here: a bad bundle fails before any actor starts
    modality = manifest.get("modality") or "image"
    if modality != "image":
        raise EdgeError(f"bundle {bundle} is a {modality} bundle; Ray batch scoring reads image files.",
                        hint="Score signal windows with load_bundle(...).predict.")
    data = _import_ray_data()
    items = [{"index": i, "image": str(p)} for i, p in enumerate(paths)]
    return data.from_items(items).map_batches(
        BundleScorer,
        fn_constructor_kwargs={"bundle": str(Path(bundle).resolve()), "resize": bool(resize),
                               "num_threads": int(threads_per_actor), "device": device,
                               # every actor compiles exactly the bundle the driver checked
                               "expected_manifest_sha256": manifest.get("manifest_sha256")},
        batch_size=int(batch_size), batch_format="numpy",
        compute=data.ActorPoolStrategy(size=int(num_actors)), num_cpus=int(threads_per_actor))


def _plain(column: str, value: Any) -> Any:
    """A row value as a JSON-ready Python value (Ray may hand back numpy scalars)."""
    if value is None:
        return None
    if column in ("pred_score", "raw_score"):
        return float(value)
    if column == "pred_label":
        return bool(value)
    return str(value)


def score_folder_with_ray(bundle: str | Path, inputs: str | Path | Sequence[str | Path], *, num_actors: int = 2,
                          threads_per_actor: int = 1, batch_size: int = 8, resize: bool = False, device: str = "CPU",
                          output: str | Path | None = None) -> list[dict[str, Any]]:
    """Score the images in ``inputs`` (files, or folders searched recursively, as ``uad infer`` reads them) on Ray
    Data with :func:`scoring_dataset`, and return one row per image in input order (:data:`COLUMNS`). ``output``:
    a new ``.jsonl`` file to write the rows to (written whole at the end; an existing file is refused before
    anything runs). Uses the Ray instance this process is connected to, or starts a local one (Ray's default)."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    out = Path(output) if output is not None else None
    if out is not None and (out.exists() or out.is_symlink()):
        raise EdgeError(f"output {out} already exists.", hint="Choose a new file name, or remove the old one.")
    paths = [str(p) for p in list_images(inputs)]
    if not paths:
        raise EdgeError(f"no images found in {' '.join(map(str, inputs))}.",
                        hint="Give image files or folders with .png/.jpg/.jpeg/.bmp/.tif images.")
    dataset = scoring_dataset(bundle, paths, num_actors=num_actors, threads_per_actor=threads_per_actor,
                              batch_size=batch_size, resize=resize, device=device)
    rows = [{c: _plain(c, row.get(c)) for c in COLUMNS}
            for row in sorted(dataset.take_all(), key=lambda r: int(r["index"]))]
    if [r["image"] for r in rows] != paths:  # one row per input, none lost or repeated
        raise EdgeError(f"Ray returned {len(rows)} row(s) for {len(paths)} input(s).")
    if out is not None:
        tmp = out.with_name(f".{out.name}.part")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        if out.exists():
            tmp.unlink()
            raise EdgeError(f"output {out} appeared while scoring; the rows were not written.",
                            hint="Choose a new file name.")
        os.replace(tmp, out)
    return rows
