"""Point-cloud items and batches, following anomalib's dataclass conventions (``ImageItem``/``ImageBatch``).

Same field names as anomalib where the meaning is the same (``gt_label``, ``gt_mask``, ``pred_score``,
``pred_label``, ``anomaly_map``, ``pred_mask``), with per-point instead of per-pixel maps:

=============== ================ ====================================================================
field           batch shape      meaning
=============== ================ ====================================================================
``points``      ``[B, N, 3]``    coordinates (float)
``valid``       ``[B, N]``       bool; False for invalid points (``(0, 0, 0)``) and padding
``gt_label``    ``[B]``          bool, the cloud is anomalous
``gt_mask``     ``[B, N]``       bool, the point is anomalous
``pred_score``  ``[B]``          float, cloud-level score
``pred_label``  ``[B]``          bool
``anomaly_map`` ``[B, N]``       float, per-point scores
``pred_mask``   ``[B, N]``       bool
``grid_shape``  ``(H, W)``       organised clouds only (``N == H * W``, row-major)
``cloud_path``  ``list[str]``    where each cloud came from
=============== ================ ====================================================================

Organised inputs may be given as ``[B, H, W, 3]`` points and ``[B, H, W]`` maps: they are flattened and
``grid_shape`` is set. Values are torch tensors (numpy arrays are converted); torch is imported only when a
batch is built, so importing this module stays light.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from uad_plugins.errors import DataError

if TYPE_CHECKING:
    import torch

__all__ = ["PointCloudBatch", "PointCloudItem"]

_PER_POINT = ("valid", "gt_mask", "anomaly_map", "pred_mask")
_PER_CLOUD = ("gt_label", "pred_score", "pred_label")
_BOOL = ("valid", "gt_mask", "pred_mask", "gt_label", "pred_label")


def _tensor(value: Any, name: str, *, boolean: bool) -> torch.Tensor:
    import numpy as np
    import torch

    tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
    if boolean:
        return tensor.bool()
    if not tensor.is_floating_point():
        tensor = tensor.float()
    return tensor


class _Fields:
    """Validation shared by items and batches (``lead`` = the batch dimensions: () or (B,))."""

    lead: tuple[str, ...] = ()

    points: Any
    grid_shape: tuple[int, int] | None

    def _validate(self) -> None:
        nlead = len(self.lead)
        grid = self.grid_shape
        if self.points is not None:
            pts = _tensor(self.points, "points", boolean=False)
            if pts.ndim == nlead + 3 and pts.shape[-1] == 3:  # organised [.., H, W, 3]
                grid = grid or (int(pts.shape[-3]), int(pts.shape[-2]))
                pts = pts.reshape(*pts.shape[:nlead], -1, 3)
            if pts.ndim != nlead + 2 or pts.shape[-1] != 3:
                raise DataError(f"{type(self).__name__}.points has shape {tuple(pts.shape)}; expected "
                                f"{self._shape('N, 3')} or {self._shape('H, W, 3')}.")
            self.points = pts
        n_points = None if self.points is None else int(self.points.shape[-2])
        for name in _PER_POINT:
            value = getattr(self, name)
            if value is None:
                continue
            value = _tensor(value, name, boolean=name in _BOOL)
            if value.ndim == nlead + 3 and value.shape[nlead] == 1:  # anomalib-style [.., 1, H, W]
                value = value.squeeze(nlead)
            if value.ndim == nlead + 2:  # organised [.., H, W]
                grid = grid or (int(value.shape[-2]), int(value.shape[-1]))
                value = value.reshape(*value.shape[:nlead], -1)
            if value.ndim != nlead + 1:
                raise DataError(f"{type(self).__name__}.{name} has shape {tuple(value.shape)}; expected "
                                f"{self._shape('N')} (one value per point) or {self._shape('H, W')}.")
            if n_points is None:
                n_points = int(value.shape[-1])
            if value.shape[-1] != n_points:
                raise DataError(f"{type(self).__name__}.{name} has {value.shape[-1]} points per cloud, "
                                f"other fields have {n_points}.")
            setattr(self, name, value)
        for name in _PER_CLOUD:
            value = getattr(self, name)
            if value is not None:
                value = _tensor(value, name, boolean=name in _BOOL).reshape(-1 if nlead else ())
                setattr(self, name, value)
        if self.points is not None and self.valid is None:
            pts = self.points
            self.valid = (pts != 0).any(dim=-1) & pts.isfinite().all(dim=-1)
        if grid is not None:
            grid = (int(grid[0]), int(grid[1]))
            if n_points is not None and grid[0] * grid[1] != n_points:
                raise DataError(f"{type(self).__name__}: grid_shape {grid} does not match {n_points} points.")
        self.grid_shape = grid

    def _shape(self, tail: str) -> str:
        return "[" + ", ".join([*self.lead, tail]) + "]"

    def update(self, in_place: bool = True, **changes: Any) -> Any:
        """Replace fields (and validate again), in place or on a copy, as anomalib's ``UpdateMixin``."""
        if not in_place:
            return replace(self, **changes)  # type: ignore[type-var]
        for name, value in changes.items():
            setattr(self, name, value)
        self._validate()
        return self


@dataclass
class PointCloudItem(_Fields):
    """One point cloud and what is known or predicted about it (see the module docstring for shapes)."""

    points: Any = None
    valid: Any = None
    gt_label: Any = None
    gt_mask: Any = None
    pred_score: Any = None
    pred_label: Any = None
    anomaly_map: Any = None
    pred_mask: Any = None
    grid_shape: tuple[int, int] | None = None
    cloud_path: str | None = None

    def __post_init__(self) -> None:
        self._validate()


@dataclass
class PointCloudBatch(_Fields):
    """A batch of point clouds: ``[B, N, ...]`` tensors, padding marked invalid (see the module docstring).

    Example:
        >>> batch = PointCloudBatch(points=torch.rand(2, 64, 64, 3), gt_mask=torch.zeros(2, 64, 64, dtype=bool),
        ...                         anomaly_map=torch.rand(2, 64, 64))   # doctest: +SKIP
        >>> batch.points.shape, batch.grid_shape   # doctest: +SKIP
        (torch.Size([2, 4096, 3]), (64, 64))
    """

    lead = ("B",)

    points: Any = None
    valid: Any = None
    gt_label: Any = None
    gt_mask: Any = None
    pred_score: Any = None
    pred_label: Any = None
    anomaly_map: Any = None
    pred_mask: Any = None
    grid_shape: tuple[int, int] | None = None
    cloud_path: list[str] | None = None

    def __post_init__(self) -> None:
        self._validate()
        sizes = {name: int(getattr(self, name).shape[0]) for name in ("points", *_PER_POINT, *_PER_CLOUD)
                 if getattr(self, name) is not None}
        if self.cloud_path is not None:
            sizes["cloud_path"] = len(self.cloud_path)
        if len(set(sizes.values())) > 1:
            raise DataError(f"PointCloudBatch fields disagree on the batch size: {sizes}.")

    @property
    def batch_size(self) -> int:
        """Number of clouds."""
        for name in ("points", *_PER_POINT, *_PER_CLOUD):
            value = getattr(self, name)
            if value is not None:
                return int(value.shape[0])
        if self.cloud_path is not None:
            return len(self.cloud_path)
        raise AttributeError("Cannot determine the batch size: the batch has no fields set.")

    def __len__(self) -> int:
        return self.batch_size

    def __iter__(self) -> Iterator[PointCloudItem]:
        yield from self.items

    @property
    def items(self) -> list[PointCloudItem]:
        """The clouds as items (padding included; ``valid`` marks it)."""
        out = []
        for i in range(self.batch_size):
            values = {f.name: getattr(self, f.name) for f in fields(self)}
            kwargs = {k: (v[i] if v is not None and k not in ("grid_shape",) else v) for k, v in values.items()}
            out.append(PointCloudItem(**kwargs))
        return out

    @classmethod
    def collate(cls, items: Sequence[PointCloudItem]) -> PointCloudBatch:
        """Stack items into a batch; clouds of different sizes are padded with invalid points.

        Organised items keep their ``grid_shape`` only when all share it (then no padding is needed).
        """
        import torch

        if not items:
            raise DataError("cannot collate an empty list of point clouds.")
        sizes = [_n_points(item) for item in items]
        n = max(sizes)
        grids = {item.grid_shape for item in items}
        grid = grids.pop() if len(grids) == 1 else None
        out: dict[str, Any] = {"grid_shape": grid if len(set(sizes)) == 1 else None}
        for name in ("points", *_PER_POINT):
            values = [getattr(item, name) for item in items]
            if all(v is None for v in values):
                continue
            if any(v is None for v in values):
                raise DataError(f"cannot collate: some items have {name}, others do not.")
            padded = []
            for v in values:
                pad = n - v.shape[0]
                if pad:
                    v = torch.cat([v, torch.zeros((pad, *v.shape[1:]), dtype=v.dtype)])
                padded.append(v)
            out[name] = torch.stack(padded)
        for name in _PER_CLOUD:
            values = [getattr(item, name) for item in items]
            if all(v is None for v in values):
                continue
            if any(v is None for v in values):
                raise DataError(f"cannot collate: some items have {name}, others do not.")
            out[name] = torch.stack(values)
        paths = [item.cloud_path for item in items]
        out["cloud_path"] = None if all(p is None for p in paths) else [str(p) for p in paths]
        if "valid" not in out:
            out["valid"] = torch.stack([torch.arange(n) < s for s in sizes])
        else:
            out["valid"] &= torch.stack([torch.arange(n) < s for s in sizes])
        return cls(**out)


def _n_points(item: PointCloudItem) -> int:
    for name in ("points", *_PER_POINT):
        value = getattr(item, name)
        if value is not None:
            return int(value.shape[0])
    raise DataError("a point-cloud item needs points or a per-point field to be batched.")
