"""Input validation for image datasets, with errors that say which file is wrong and what to do.

Image modes: grey-scale (``L``, ``1``), palette (``P``), grey+alpha (``LA``), ``RGBA``, ``CMYK`` and 16-bit
grey-scale (``I;16``, ``I``) images are accepted and converted to 8-bit RGB by :func:`read_rgb_image`; alpha is
dropped (as anomalib's own loader does) and 16-bit values are scaled to 8 bits. Note that anomalib's loader
(``read_image``: ``PIL convert("RGB")``) clips 16-bit grey-scale images instead of scaling them, so the dataset
checks log a warning for such files.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from uad_edge.files import find_files, path_problem
from uad_plugins.errors import ConfigError, DataError, UadError

if TYPE_CHECKING:
    from pandas import DataFrame

__all__ = [
    "IMAGE_CHECKS",
    "MIN_SIDE",
    "check_datamodule",
    "check_dataset_samples",
    "check_image_file",
    "prepare_datamodule",
    "read_rgb_image",
]

logger = logging.getLogger(__name__)

#: how much of each image the pre-run check reads: its header (plus the format's end marker, so a truncated PNG or
#: JPEG is decoded to be sure), or the whole image decoded
IMAGE_CHECKS = ("header", "full")
#: how far from a file's end the PNG/JPEG end marker is looked for (cameras may append a few bytes after it)
_END_WINDOW = 4096
#: the smallest accepted image side in pixels
MIN_SIDE = 32
#: how many problems a dataset error lists before it just counts the rest
MAX_LISTED = 10

_HINTS = {
    "missing": "Check the path, restore the file, or remove it from the dataset.",
    "corrupt": "The file is corrupt, truncated or not an image: remove it or replace it with a valid image "
               "(PNG, JPEG, BMP, TIFF).",
    "small": f"Remove the file or replace it with a larger image; both sides must be at least {MIN_SIDE} px.",
    "mask": "Give every anomalous image a mask of the same size (0 = normal, 255 = anomalous), or remove the image.",
}
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
#: what PIL raises for corrupt, truncated or foreign files
_PIL_ERRORS = (OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError, EOFError, ZeroDivisionError,
               struct.error, Image.DecompressionBombError)


@dataclass(frozen=True)
class _Probe:
    """What opening one file found."""

    size: tuple[int, int] | None
    mode: str | None
    problem: str | None = None
    kind: str | None = None


def check_mode(image_check: str) -> bool:
    """True for a full decode, False for the header check; a clear error for anything else."""
    if image_check not in IMAGE_CHECKS:
        raise ConfigError(f"image_check must be one of {', '.join(IMAGE_CHECKS)}, got {image_check!r}.",
                          hint="header (the default) reads each file's header; full decodes every image.")
    return image_check == "full"


def _ends_whole(path: Path, image_format: str | None) -> bool:
    """False where a PNG or JPEG lacks its end marker near the end of the file (a cut-off copy, typically)."""
    marker = {"PNG": b"IEND", "JPEG": b"\xff\xd9"}.get(image_format or "")
    if marker is None:
        return True
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - _END_WINDOW))
        return marker in fh.read()


def _probe(path: str | Path, role: str, full: bool = True) -> _Probe:
    """Open one image file and read its header (``full``: verify and decode it whole); never raises for data
    problems. Without ``full``, a PNG or JPEG whose end marker is missing is decoded whole to be sure."""
    path = Path(path)
    problem = path_problem(path)  # a symbolic-link loop, a broken link, a pipe: named, never opened
    if problem is not None:
        return _Probe(None, None, f"{role} file {path} {problem}", "missing")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                size, mode = im.size, im.mode
                decode = full or not _ends_whole(path, im.format)
                if decode:
                    im.verify()  # checks structure and checksums without decoding
            if decode:
                with Image.open(path) as im:  # verify() leaves the image unusable: reopen and decode it fully
                    im.load()
    except _PIL_ERRORS as err:
        return _Probe(None, None, f"{role} file {path} cannot be read as an image ({type(err).__name__}: {err})",
                      "corrupt")
    width, height = size
    if width < MIN_SIDE or height < MIN_SIDE:
        return _Probe(size, mode, f"{role} file {path} is odd-sized: {width}x{height} px, both sides must be at least "
                                  f"{MIN_SIDE} px", "small")
    return _Probe(size, mode)


def check_image_file(path: str | Path, *, role: str = "image", image_check: str = "header") -> tuple[int, int]:
    """Check that ``path`` is a readable image at least ``MIN_SIDE`` px a side; return ``(width, height)``.
    ``image_check``: see :func:`check_dataset_samples`.

    Raises:
        DataError: the file is missing, corrupt, truncated, not an image, or too small.
    """
    probe = _probe(path, role, check_mode(image_check))
    if probe.problem is not None:
        raise DataError(f"Checking {role} file failed: {probe.problem}.", hint=_HINTS[probe.kind or "corrupt"])
    assert probe.size is not None
    return probe.size


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def list_image_files(path: str | Path, *, suffixes: Sequence[str] = IMAGE_SUFFIXES,
                     hidden: bool = False) -> list[Path]:
    """The image files at ``path``: the file itself, or every image under a folder (recursive, sorted; names
    starting with ``.`` are skipped unless ``hidden``; ``suffixes``: the image extensions looked for).

    Raises DataError when ``path`` does not exist, and for a symbolic-link loop, a broken link or a pipe with an
    image extension under it, or a folder that cannot be listed (named, never skipped); an existing folder without
    images gives an empty list.
    """
    target = Path(path)
    if not target.is_dir() and not target.is_file():
        raise DataError(f"{target} {path_problem(target) or 'cannot be read'}.",
                        hint="Give an image file or a folder of images.")
    if target.is_file():
        return [target]
    return find_files(target, suffixes, hidden=hidden, error=DataError)


def _to_rgb_array(im: Image.Image) -> np.ndarray:
    """Convert any PIL image to an 8-bit RGB array ``[H, W, 3]`` (16-bit and float values are scaled)."""
    if im.mode in _SIXTEEN_BIT or im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        if im.mode == "F" and arr.size and np.nanmax(arr) <= 1.0:
            arr = arr * 255.0
        elif im.mode != "F" or (arr.size and np.nanmax(arr) > 255.0):
            arr = arr / 257.0  # 16-bit range 0..65535 -> 0..255
        grey = np.clip(np.rint(np.nan_to_num(arr)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def read_rgb_image(path: str | Path) -> np.ndarray:
    """Read an image file as an 8-bit RGB array ``[H, W, 3]``.

    Grey-scale, palette, grey+alpha, RGBA, CMYK and 16-bit images are converted to RGB (alpha is dropped,
    16-bit values are scaled to 8 bits).

    Raises:
        DataError: the file is missing, corrupt, truncated, not an image, or smaller than ``MIN_SIDE`` px a side.
    """
    path = Path(path)
    problem = path_problem(path)
    if problem is not None:
        raise DataError(f"Reading image failed: image file {path} {problem}.", hint=_HINTS["missing"])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                array = _to_rgb_array(im)
    except _PIL_ERRORS as err:
        raise DataError(
            f"Reading image failed: image file {path} cannot be read as an image ({type(err).__name__}: {err}).",
            hint=_HINTS["corrupt"]) from err
    height, width = array.shape[:2]
    if width < MIN_SIDE or height < MIN_SIDE:
        raise DataError(f"Reading image failed: image file {path} is odd-sized: {width}x{height} px, both sides must "
                        f"be at least {MIN_SIDE} px.", hint=_HINTS["small"])
    return array


def _has_value(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return str(value).strip() not in ("", "nan", "None", "<NA>")


def _probe_all(paths: Sequence[str], role: str, cache: dict[tuple[str, str], _Probe],
               full: bool = False) -> list[_Probe]:
    todo = sorted({p for p in paths if (p, role) not in cache})
    if todo:
        workers = max(1, min(8, os.cpu_count() or 1, len(todo)))
        with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL decoding releases the GIL
            for path, probe in zip(todo, pool.map(lambda p: _probe(p, role, full), todo)):
                cache[(path, role)] = probe
    return [cache[(p, role)] for p in paths]


def check_dataset_samples(samples: DataFrame, *, split_name: str, dataset_root: str | None,
                          image_check: str = "header", _cache: dict[tuple[str, str], _Probe] | None = None) -> None:
    """Check every image (and mask, where a row has a ``mask_path``) of an anomalib ``samples`` table: readable,
    large enough, masks the size of their images. ``image_check``: ``"header"`` reads each file's header (and
    decodes a PNG/JPEG whose end marker is missing), ``"full"`` decodes every file.

    All problems are collected and raised together as one :class:`DataError` that lists the first
    ``MAX_LISTED`` of them and counts the rest.
    """
    cache = _cache if _cache is not None else {}
    where = f" in {dataset_root}" if dataset_root else ""
    if "image_path" not in samples.columns:
        raise DataError(f"Checking the {split_name} images{where} failed: the samples table has no 'image_path' "
                        f"column (columns: {list(samples.columns)}).",
                        hint="Use an anomalib dataset, or give the samples table an 'image_path' column.")
    images = [str(p) for p in samples["image_path"]]
    masks_col = samples["mask_path"] if "mask_path" in samples.columns else [None] * len(images)
    masks = [str(m) if _has_value(m) else None for m in masks_col]
    full = check_mode(image_check)
    image_probes = _probe_all(images, "image", cache, full)
    mask_paths = [m for m in masks if m is not None]
    mask_probes = dict(zip(mask_paths, _probe_all(mask_paths, "mask", cache, full)))

    problems: list[str] = []
    kinds: set[str] = set()
    sixteen_bit: list[str] = []
    for image, probe, mask in zip(images, image_probes, masks):
        if probe.problem is not None:
            problems.append(probe.problem)
            kinds.add(probe.kind or "corrupt")
            continue
        if probe.mode in _SIXTEEN_BIT:
            sixteen_bit.append(image)
        if mask is None:
            continue
        mprobe = mask_probes[mask]
        if mprobe.problem is not None:
            problems.append(f"{mprobe.problem} (the mask of image {image})")
            kinds.add("mask")
        elif mprobe.size != probe.size:
            (iw, ih), (mw, mh) = probe.size or (0, 0), mprobe.size or (0, 0)
            problems.append(f"mask file {mask} is {mw}x{mh} px but its image {image} is {iw}x{ih} px")
            kinds.add("mask")
    if sixteen_bit:
        logger.warning("%d %s image(s)%s are 16-bit grey-scale (e.g. %s); anomalib's loader clips them to 8 bits, "
                       "convert them to 8-bit PNG for correct results.", len(sixteen_bit), split_name, where,
                       sixteen_bit[0])
    if not problems:
        return
    listed = "\n".join(f"  - {p}" for p in problems[:MAX_LISTED])
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    hint = " ".join(_HINTS[k] for k in ("missing", "corrupt", "small", "mask") if k in kinds)
    raise DataError(f"Checking the {split_name} images{where} found {len(problems)} problem(s) "
                    f"in {len(images)} sample(s):\n{listed}{more}", hint=hint)


def _location(datamodule: Any) -> str:
    """Where a datamodule reads its data from, for messages."""
    root = getattr(datamodule, "root", None)
    normal_dir = getattr(datamodule, "normal_dir", None)
    if normal_dir is not None:
        dirs = [normal_dir] if isinstance(normal_dir, (str, Path)) else list(normal_dir)
        return ", ".join(str(_resolve(d, root)) for d in dirs)
    category = getattr(datamodule, "category", "") or ""
    if root is not None:
        return str(Path(root) / category) if category else str(root)
    return type(datamodule).__name__


def _dataset_location(datamodule: Any) -> str:
    """The whole dataset's place, for the progress line: a Folder's root (all its directories are under it) or,
    without one, :func:`_location`."""
    root = getattr(datamodule, "root", None)
    if getattr(datamodule, "normal_dir", None) is not None and root is not None:
        return str(Path(root).expanduser())
    return _location(datamodule)


def _expected_layout(datamodule: Any) -> str:
    if getattr(datamodule, "normal_dir", None) is not None:
        return ("Expected layout (anomalib Folder): <root>/<normal_dir>/*.png|*.jpg|... with the normal training "
                "images; optionally <root>/<abnormal_dir>/ and <root>/<mask_dir>/ with masks named like the images.")
    return ("Expected layout (MVTec AD): <root>/<category>/train/good/*.png (normal training images), "
            "<root>/<category>/test/good/*.png, <root>/<category>/test/<defect>/*.png and "
            "<root>/<category>/ground_truth/<defect>/<name>_mask.png.")


def check_datamodule(datamodule: Any, image_check: str = "header") -> dict[str, int]:
    """Check the files of every set-up split (train, val, test) of an anomalib datamodule; return the counts.
    ``image_check``: see :func:`check_dataset_samples`.

    Raises:
        DataError: the datamodule is not set up, has no training images, or has unusable files.
    """
    where = _location(datamodule)
    if getattr(datamodule, "train_data", None) is None:
        raise DataError(f"Checking the dataset in {where} failed: the datamodule has no training set.",
                        hint="Set it up first: uad_plugins.data.prepare_datamodule(datamodule).")
    check_mode(image_check)
    counts: dict[str, int] = {}
    cache: dict[tuple[str, str], _Probe] = {}
    tables = []
    for split in ("train", "test", "val"):  # test before val: val is often made from test
        dataset = getattr(datamodule, f"{split}_data", None)
        if dataset is None:
            continue
        try:
            samples = dataset.samples
        except RuntimeError:
            continue
        if split == "train" and len(samples) == 0:
            raise DataError(f"Checking the dataset failed: no training images found in {where}.",
                            hint=_expected_layout(datamodule))
        tables.append((split, samples))
    total = sum(len(samples) for _, samples in tables)
    how = "decoding every image" if image_check == "full" else "headers; --image_check full decodes every image"
    per_split = ", ".join(f"{split} {len(samples)}" for split, samples in tables)
    logger.info("Checking %d image(s) (%s) of %s (%s) ...", total, per_split, _dataset_location(datamodule), how)
    started = time.perf_counter()
    for split, samples in tables:
        check_dataset_samples(samples, split_name=split, dataset_root=where, image_check=image_check, _cache=cache)
        counts[split] = len(samples)
    logger.info("Checked %d image(s) in %.1f s.", total, time.perf_counter() - started)
    return {split: counts[split] for split in ("train", "val", "test") if split in counts}


def _resolve(path: str | Path, root: str | Path | None) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() or root is None else Path(root).expanduser() / path


def _as_list(value: Any) -> list[str | Path]:
    if value is None:
        return []
    if isinstance(value, (str, Path)):
        return [value]
    return list(value)


def _check_folder_dirs(datamodule: Any) -> None:
    """Missing or empty folders of an anomalib ``Folder`` datamodule -> DataError."""
    from anomalib.data.utils.path import IMG_EXTENSIONS

    root = getattr(datamodule, "root", None)
    extensions = tuple(e.lower() for e in (getattr(datamodule, "extensions", None) or IMG_EXTENSIONS))
    normal_dirs = _as_list(datamodule.normal_dir)
    if not normal_dirs:
        raise DataError(f"Setting up the {datamodule.name} dataset failed: no normal_dir was given.",
                        hint="Pass the folder of normal training images as --data.normal_dir.")
    for name in ("normal_dir", "abnormal_dir", "normal_test_dir", "mask_dir"):
        for folder in _as_list(getattr(datamodule, name, None)):
            path = _resolve(folder, root)
            if not path.is_dir():
                raise DataError(f"Setting up the {datamodule.name} dataset failed: {name} {path} does not exist "
                                f"or is not a folder.", hint=f"Create it or fix --data.{name} (and --data.root).")
            try:  # anomalib lists every file with these extensions, hidden ones included, and fails on a bad link
                files = find_files(path, extensions, hidden=True, error=DataError)
            except DataError as err:
                raise DataError(f"Setting up the {datamodule.name} dataset failed: in the {name} folder {path}: "
                                f"{err.message}", hint=err.hint) from None
            if name == "normal_dir" and not files:
                raise DataError(f"Setting up the {datamodule.name} dataset failed: the normal_dir folder {path} is "
                                f"empty: it holds no image files ({', '.join(sorted(set(extensions)))}).",
                                hint="Put the normal training images there, or point --data.normal_dir at the "
                                     "folder that holds them.")


def _prepare_without_download(datamodule: Any) -> None:
    """Call ``prepare_data`` only where it cannot download; a missing dataset folder is a DataError."""
    from lightning.pytorch.core.datamodule import LightningDataModule

    from uad_plugins.data.demo import UadDemo

    if isinstance(datamodule, UadDemo):
        datamodule.prepare_data()
        return
    overrides = type(datamodule).prepare_data is not LightningDataModule.prepare_data
    root = getattr(datamodule, "root", None)
    if overrides and root is not None:  # anomalib's dataset modules download when the folder is missing
        category = getattr(datamodule, "category", "") or ""
        candidates = [Path(root) / category]
        split_root = getattr(datamodule, "split_root", None)
        if split_root is not None:
            candidates.append(Path(split_root) / category)
        if not any(c.is_dir() for c in candidates):
            raise DataError(
                f"Setting up the {datamodule.name} dataset failed: dataset not found at {candidates[0]}; "
                "uad_plugins never downloads data.",
                hint="Put the MVTec-layout folder there (<root>/<category>/train/good/...) or pass --data.root "
                     "(and --data.category); or use the embedded demo data (UadDemo).")
    datamodule.prepare_data()


def _trainer_fn(stage: Any) -> Any:
    from lightning.pytorch.trainer.states import TrainerFn

    if stage is None:
        return TrainerFn.FITTING
    if isinstance(stage, TrainerFn):
        return stage
    aliases = {"train": "fit", "fitting": "fit", "val": "validate", "validation": "validate", "testing": "test"}
    value = str(stage).lower()
    try:
        return TrainerFn(aliases.get(value, value))
    except ValueError:
        raise ConfigError(f"prepare_datamodule: unknown stage {stage!r}.",
                          hint=f"Use one of: {', '.join(f.value for f in TrainerFn)}.") from None


def prepare_datamodule(datamodule: Any, stage: str | None = "fit", image_check: str = "header") -> dict[str, int]:
    """Set up an anomalib image datamodule safely and check its files; return the sample counts per split.
    ``image_check``: ``"header"`` (default) or ``"full"``, see :func:`check_dataset_samples`.

    Never downloads (a missing dataset folder is a DataError), turns anomalib's layout errors into
    DataErrors, and sets up with a ``TrainerFn`` stage so that the Trainer does not redo the splits.
    """
    from anomalib.data.datamodules.image.folder import Folder
    from anomalib.data.errors import MisMatchError

    fn = _trainer_fn(stage)
    check_mode(image_check)
    _prepare_without_download(datamodule)
    if isinstance(datamodule, Folder):
        _check_folder_dirs(datamodule)
    try:
        datamodule.setup(fn)
    except UadError:
        raise
    except (FileNotFoundError, NotADirectoryError, ValueError, RuntimeError, MisMatchError) as err:
        raise DataError(f"Setting up the {datamodule.name} dataset from {_location(datamodule)} failed: "
                        f"{type(err).__name__}: {' '.join(str(err).split())}",
                        hint=_expected_layout(datamodule)) from err
    return check_datamodule(datamodule, image_check)
