"""``FeatureCache``: the frozen-backbone features of training images, computed once per run and served again.

Opt-in (``UadEngine(feature_cache="memory" | "disk")``, ``uad fit --feature_cache``), for models whose training
reads only frozen features of unaugmented, pre-processed images (``supports_feature_cache``; see
:mod:`uad_plugins.protocols`). Epochs 2..N then skip the backbone; the data loader still decodes the images.

* **Keys.** An entry is keyed by the model's *feature signature* (:func:`feature_signature`: its class, the frozen
  modules' structure and weights, the pre-processor's transform, set by :meth:`FeatureCache.bind`) and by the image
  file's identity (resolved path, size, ``mtime_ns``, ``ctime_ns``, inode): a changed, touched or replaced file
  misses, and another model never reads these features.
* **Values.** The feature tensors of one image (batch dimension dropped), on the CPU. Their *layout* (shapes and
  dtype) is learnt from the first batch computed in the run, and every entry served is checked against it.
* ``memory``: a dict that never holds more tensor bytes than the budget; once full, new entries are not stored
  (one log line says so) and those images are computed every epoch.
* ``disk``: one ``.npy`` file per image in a folder (all tensors flattened into one array), written whole (a
  temporary file renamed into place), counted against the same budget. A file is read back only through
  :func:`uad_edge.files.read_npy` (header checked against the file size, never unpickled) after its header
  matches the layout: an unreadable, truncated or foreign entry is a miss, never a crash, and is left where it is.
  :meth:`FeatureCache.close` removes only the files this cache wrote, and only when asked to (a folder inside the
  run); nothing else in the folder is ever deleted.

Only training reads the cache (``UadModule.frozen_features``): validation, test, predict and export compute.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from uad_edge.atomic import atomic_path
from uad_edge.files import npy_header, read_npy
from uad_plugins.errors import ConfigError, UadError

__all__ = ["DEFAULT_BUDGET_MB", "MODES", "FeatureCache", "Features", "check_cache_options",
           "deterministic_transform", "feature_signature", "file_identity"]

logger = logging.getLogger("uad_plugins")

#: the cache's modes
MODES: tuple[str, ...] = ("memory", "disk")
#: byte budget (MiB) when none is given
DEFAULT_BUDGET_MB = 2048.0
#: what a frozen feature function returns: one tensor or a list of tensors, each ``[B, ...]``
Features = torch.Tensor | list[torch.Tensor]
#: numpy has no bfloat16: such features are stored as float32 (exactly) and cast back
_STORED_AS = {torch.float32: np.float32, torch.float16: np.float16, torch.float64: np.float64,
              torch.bfloat16: np.float32}


def feature_signature(*parts: Any, modules: Sequence[nn.Module] = ()) -> str:
    """A hex digest of ``parts`` (their ``repr``) and of ``modules``: class, structure (``repr``) and the bytes of
    every parameter and buffer. Two models share cached features only when their signatures are equal."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(repr(part).encode())
        digest.update(b"\0")
    for module in modules:
        digest.update(f"{type(module).__module__}.{type(module).__qualname__}\0{module!r}\0".encode())
        for name, tensor in module.state_dict().items():
            flat = tensor.detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"{name}\0{flat.dtype}\0{tuple(tensor.shape)}\0".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def file_identity(path: str | os.PathLike[str]) -> tuple[str, int, int, int, int] | None:
    """``(resolved path, size, mtime_ns, ctime_ns, inode)`` of a regular file; ``None`` when it cannot be had
    (such an image is computed, never cached)."""
    try:
        resolved = os.path.realpath(path)
        info = os.stat(resolved)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return resolved, int(info.st_size), int(info.st_mtime_ns), int(info.st_ctime_ns), int(info.st_ino)


class FeatureCache:
    """Frozen features of training images by file identity, in memory or on disk, within a byte budget.

    Args:
        mode: ``"memory"`` or ``"disk"``.
        budget_mb: the most bytes (MiB) of features it stores (memory: tensor bytes; disk: file bytes).
        folder: where ``disk`` entries live (required for ``disk``; created when missing).
        remove_on_close: ``disk`` only: :meth:`close` removes the files this cache wrote (a folder inside the run);
            ``False`` keeps them for later runs.
        context: what else the features depend on (the engine's precision and the data's deterministic
            augmentations); part of every key.

    Raises:
        ConfigError: an unknown mode, a budget that is not a positive number, or ``disk`` without a folder.
    """

    def __init__(self, mode: str = "memory", *, budget_mb: float = DEFAULT_BUDGET_MB,
                 folder: str | os.PathLike[str] | None = None, remove_on_close: bool = False,
                 context: str = "") -> None:
        check_cache_options(mode, budget_mb)
        if mode == "disk" and folder is None:
            raise ConfigError("the disk feature cache needs a folder.", hint="Give feature_cache_dir.")
        self.mode = mode
        self.budget_bytes = int(float(budget_mb) * 2**20)
        self.folder = Path(folder) if mode == "disk" and folder is not None else None
        self.remove_on_close = bool(remove_on_close)
        self.context = str(context)
        self._signature: str | None = None
        self._layout: list[tuple[tuple[int, ...], torch.dtype]] | None = None
        self._single = False  # compute returns one tensor (not a list)
        self._memory: dict[str, list[torch.Tensor]] = {}
        self._written: list[Path] = []  # files this cache created (the only ones close() may remove)
        self._made_folder = False
        self._stored_bytes = 0
        self._full = False
        self._said: set[str] = set()
        self.hits = self.misses = self.rejected = 0

    # ------------------------------------------------------------------ binding
    def bind(self, signature: str) -> None:
        """Serve the features of the model whose :func:`feature_signature` this is (a new signature starts an
        empty layout: entries of another model are never read)."""
        if signature != self._signature:
            self._signature = str(signature)
            self._layout = None
            self._single = False
            self._memory.clear()

    @property
    def signature(self) -> str | None:
        """The bound feature signature (``None`` before :meth:`bind`)."""
        return self._signature

    # ------------------------------------------------------------------ serving
    def features(self, images: torch.Tensor, paths: Sequence[str] | None,
                 compute: Callable[[torch.Tensor], Features]) -> Features:
        """What ``compute(images)`` returns, with the rows of images found in the cache served from it and only the
        others computed (and stored while the budget lasts).

        Args:
            images: the pre-processed batch ``[B, ...]``.
            paths: the image file of each row (``batch.image_path``); ``None``: everything is computed.
            compute: the frozen feature function (a tensor or a list of tensors, each ``[B, ...]``).
        """
        if self._signature is None:
            raise RuntimeError("FeatureCache.bind(signature) must be called before features().")
        count = int(images.shape[0])
        if paths is None or len(paths) != count:
            self._say_once("paths", "feature cache: the batches carry no image paths (batch.image_path), so "
                                    "features are computed every epoch.")
            return compute(images)
        keys = [self._key(path) for path in paths]
        if self.mode == "disk" and self._layout is None and any(k is not None and self._on_disk(k) for k in keys):
            self._learn_layout(compute(images[:1]))  # one image tells what a valid entry holds
        found: dict[int, list[torch.Tensor]] = {}
        for index, key in enumerate(keys):
            entry = self._lookup(key) if key is not None else None
            if entry is not None:
                found[index] = entry
        missing = [i for i in range(count) if i not in found]
        self.hits += len(found)
        self.misses += len(missing)
        result: Features | None = None
        computed: list[torch.Tensor] = []
        if missing:
            result = compute(images if len(missing) == count else images[missing])
            computed = [result] if isinstance(result, torch.Tensor) else list(result)
            if self._layout is None:
                self._learn_layout(result)
            self._store_all(keys, missing, computed)
            if len(missing) == count:  # nothing was cached: exactly what compute gave
                return result
        assert self._layout is not None  # entries are only found once the layout is known
        rows = sorted(found)
        out = []
        for layer, (shape, dtype) in enumerate(self._layout):
            device = computed[layer].device if computed else images.device
            tensor = torch.empty((count, *shape), dtype=dtype, device=device)
            tensor[rows] = torch.stack([found[i][layer] for i in rows]).to(device, non_blocking=True)
            if computed:
                tensor[missing] = computed[layer]
            out.append(tensor)
        return out[0] if self._single else out

    def _key(self, path: str) -> str | None:
        identity = file_identity(path)
        if identity is None:
            return None
        return hashlib.sha256(f"{self._signature}\0{self.context}\0{identity!r}".encode()).hexdigest()

    def _lookup(self, key: str) -> list[torch.Tensor] | None:
        if self.mode == "memory":
            entry = self._memory.get(key)
            return entry if entry is not None and self._fits_layout(entry) else None
        return self._read(key) if self._layout is not None else None

    def _fits_layout(self, entry: Sequence[torch.Tensor]) -> bool:
        layout = self._layout
        return layout is not None and len(entry) == len(layout) and all(
            tuple(t.shape) == shape and t.dtype == dtype for t, (shape, dtype) in zip(entry, layout, strict=True))

    def _learn_layout(self, result: Features) -> None:
        """The shapes and dtype every entry must have, and whether ``compute`` returns one tensor or a list."""
        self._single = isinstance(result, torch.Tensor)
        self._layout = _layout_of([result] if self._single else list(result))

    # ------------------------------------------------------------------ storing
    def _store_all(self, keys: Sequence[str | None], rows: Sequence[int], computed: list[torch.Tensor]) -> None:
        if _layout_of(computed) != self._layout:
            self._say_once("layout", "feature cache: a batch's features differ in shape or dtype from the first "
                                     "batch's; they are not stored.")
            return
        for position, row in enumerate(rows):
            key = keys[row]
            if key is None or self._full:
                continue
            entry = [t[position].detach().to("cpu", copy=True) for t in computed]
            self._store(key, entry)

    def _store(self, key: str, entry: list[torch.Tensor]) -> None:
        size = sum(t.numel() * t.element_size() for t in entry)
        if self.mode == "memory":
            if self._stored_bytes + size > self.budget_bytes:
                self._budget_full(size)
                return
            self._memory[key] = entry
            self._stored_bytes += size
            return
        self._write(key, entry)

    def _budget_full(self, entry_bytes: int) -> None:
        self._full = True
        logger.info("feature cache: its %.0f MiB budget is full after %d images (%d bytes each); the other images "
                    "are computed every epoch (raise feature_cache_budget_mb to cache them).",
                    self.budget_bytes / 2**20, self.entries, entry_bytes)

    # ------------------------------------------------------------------ disk
    def _path(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{key}.npy"

    def _on_disk(self, key: str) -> bool:
        return self._path(key).is_file()

    def _expected(self) -> tuple[int, np.dtype] | None:
        """Element count and numpy dtype of a valid disk entry (``None``: tensors of mixed dtypes)."""
        assert self._layout is not None
        dtypes = {dtype for _, dtype in self._layout}
        if len(dtypes) != 1 or next(iter(dtypes)) not in _STORED_AS:
            return None
        count = sum(int(np.prod(shape, dtype=np.int64)) for shape, _ in self._layout)
        return count, np.dtype(_STORED_AS[next(iter(dtypes))])

    def _read(self, key: str) -> list[torch.Tensor] | None:
        path = self._path(key)
        expected = self._expected()
        if expected is None or not path.is_file():
            return None
        count, dtype = expected
        try:
            shape, fortran, stored = npy_header(path, kinds="f", error=ConfigError)
            if shape != (count,) or stored != dtype or fortran:
                raise ConfigError(f"{path} holds {stored} values of shape {shape}, not {dtype} of shape ({count},)")
            flat = torch.from_numpy(read_npy(path, kinds="f", error=ConfigError))
        except (UadError, OSError, ValueError) as exc:
            self.rejected += 1
            self._say_once("rejected", f"feature cache: an entry could not be used and was computed again ({exc}); "
                                       "such files are left where they are.")
            return None
        assert self._layout is not None
        entry, start = [], 0
        for shape, torch_dtype in self._layout:
            size = int(np.prod(shape, dtype=np.int64))
            entry.append(flat[start:start + size].reshape(shape).to(torch_dtype))
            start += size
        return entry

    def _write(self, key: str, entry: list[torch.Tensor]) -> None:
        assert self.folder is not None
        path = self._path(key)
        expected = self._expected()
        if expected is None:
            self._say_once("dtypes", "feature cache: features of mixed dtypes are not written to disk.")
            return
        if path.exists():  # unreadable or foreign (a readable one was a hit): not ours to replace
            return
        array = torch.cat([t.reshape(-1) for t in entry]).numpy().astype(expected[1], copy=False) \
            if entry[0].dtype != torch.bfloat16 else torch.cat([t.reshape(-1).float() for t in entry]).numpy()
        size = array.nbytes + 128  # the .npy header is 128 bytes for a 1-D array
        if self._stored_bytes + size > self.budget_bytes:
            self._budget_full(size)
            return
        try:
            if not self.folder.is_dir():
                self.folder.mkdir(parents=True, exist_ok=True)
                self._made_folder = True
            with atomic_path(path, suffix=".npy") as tmp:
                np.save(tmp, array, allow_pickle=False)
        except OSError as exc:
            self._full = True
            logger.warning("feature cache: writing %s failed (%s); nothing more is written, the other images are "
                           "computed every epoch.", path, exc)
            return
        self._written.append(path)
        self._stored_bytes += path.stat().st_size

    # ------------------------------------------------------------------ reporting
    @property
    def entries(self) -> int:
        """Images stored by this cache in this run."""
        return len(self._memory) if self.mode == "memory" else len(self._written)

    @property
    def stored_bytes(self) -> int:
        """Bytes stored by this cache in this run (never above :attr:`budget_bytes`)."""
        return self._stored_bytes

    def stats(self) -> dict[str, Any]:
        """Counters for the log and ``metrics.json``."""
        stats: dict[str, Any] = {"mode": self.mode, "hits": self.hits, "misses": self.misses,
                                 "entries": self.entries, "stored_mb": round(self._stored_bytes / 2**20, 2),
                                 "budget_mb": round(self.budget_bytes / 2**20, 2), "budget_full": self._full}
        if self.mode == "disk":
            stats.update(folder=str(self.folder), rejected=self.rejected)
        return stats

    def close(self) -> None:
        """Forget the memory entries; ``disk`` with ``remove_on_close``: remove the files this cache wrote (and
        its folder if it made it and it is empty). No other file is ever removed."""
        self._memory.clear()
        if self.mode == "memory":
            self._stored_bytes = 0
        if self.mode == "disk" and self.remove_on_close:
            for path in self._written:
                path.unlink(missing_ok=True)
            self._written.clear()
            self._stored_bytes = 0
            if self._made_folder and self.folder is not None:
                try:
                    self.folder.rmdir()
                except OSError:
                    pass  # not empty: someone else's files

    def _say_once(self, topic: str, message: str) -> None:
        if topic not in self._said:
            self._said.add(topic)
            logger.warning(message)


def _layout_of(tensors: Sequence[torch.Tensor]) -> list[tuple[tuple[int, ...], torch.dtype]]:
    return [(tuple(int(d) for d in t.shape[1:]), t.dtype) for t in tensors]


def check_cache_options(mode: Any, budget_mb: Any) -> None:
    """Raise ConfigError for a mode that is not one of :data:`MODES` or a budget that is not a positive number."""
    if mode not in MODES:
        raise ConfigError(f"feature_cache must be one of {', '.join(MODES)} (or unset), got {mode!r}.",
                          hint="memory keeps features in RAM within feature_cache_budget_mb; disk writes them to "
                               "feature_cache_dir (default: a folder in the run).")
    if isinstance(budget_mb, bool) or not isinstance(budget_mb, int | float) or not budget_mb > 0 \
            or budget_mb == float("inf"):
        raise ConfigError(f"feature_cache_budget_mb must be a positive number of MiB, got {budget_mb!r}.",
                          hint=f"The default is {DEFAULT_BUDGET_MB:.0f}.")


#: torchvision transforms that give the same output for the same input every time
_DETERMINISTIC = ("Resize", "CenterCrop", "Normalize", "ToDtype", "ToImage", "ToPureTensor", "Grayscale",
                  "ConvertImageDtype", "Identity")


def deterministic_transform(transform: Any) -> bool:
    """Whether a torchvision transform (``Compose`` and its kin looked into) only resizes, crops the centre,
    normalises or converts, so a file's features are the same every epoch."""
    inner = getattr(transform, "transforms", None)
    if isinstance(inner, list | tuple) and type(transform).__name__ == "Compose":
        return all(deterministic_transform(t) for t in inner)
    return type(transform).__name__ in _DETERMINISTIC and type(transform).__module__.startswith("torchvision.")
