"""``plugin:gaussian_feature_noise``: HetNet's local multivariate Gaussian noise (LMGN) on feature maps.

For every position ``(i, j)`` of a feature map the normal features are summarised by a Gaussian
``N(mu_ij, Sigma_ij + eps I)`` (the statistic PaDiM uses). A synthetic anomaly replaces the features inside a few
random boxes by samples of the Gaussian of their own position: the result looks locally plausible channel by
channel but is not the image's real feature, which is what a denoising student learns to undo.

This synthesizer works on **feature maps** ``[C, H, W]`` or ``[B, C, H, W]`` (``modality = "feature"``), not on
images, and must be fitted first (:meth:`GaussianFeatureNoise.fit`, or ``statistics=PATH`` from
:meth:`GaussianFeatureNoise.save`). ``covariance="identity"`` needs no fit (samples ``N(0, I)``, the paper's
``randn`` ablation).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from uad_plugins.errors import ConfigError, DataError
from uad_plugins.synth.base import Synthesizer

__all__ = ["COVARIANCES", "FORMAT", "GaussianFeatureNoise"]

COVARIANCES = ("full", "diagonal", "identity")
#: the ``format`` field of files written by :meth:`GaussianFeatureNoise.save`
FORMAT = "uad-gaussian-feature-noise/1"
_NAME = "gaussian_feature_noise"
_HINT = f"See 'uad plugins show {_NAME}' for the defaults."


def _pair(name: str, value: Sequence[float] | float) -> tuple[float, float]:
    """Read a ``(low, high)`` range (one number means a fixed value)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value, value)
    try:
        low, high = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ConfigError(f"{_NAME}: {name} must be a pair [low, high] of numbers, got {value!r}.",
                          hint=_HINT) from None
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ConfigError(f"{_NAME}: {name} must be an ordered range [low, high], got {list(value)}.", hint=_HINT)
    return low, high


class GaussianFeatureNoise(Synthesizer):
    """Replace random boxes of a feature map by samples of per-position Gaussians of normal features.

    Args:
        num_boxes: how many boxes per feature map, an inclusive integer range ``[low, high]`` with ``low >= 1``.
        box_size: box height and width (drawn independently) as a fraction of the map side, ``0 < low <= high <= 1``.
            A box covers the cells whose centres fall inside it, and at least the cell under its centre.
        probability: chance that a feature map gets noise at all; a map without noise gets an empty mask.
        covariance: ``full`` (multivariate, the paper's choice), ``diagonal`` (per-channel variances) or
            ``identity`` (standard normal samples, no fit needed: the paper's ``randn`` ablation).
        epsilon: ridge added to each covariance (``Sigma + epsilon * I``; 0.01 as in PaDiM).
        statistics: a file written by :meth:`save`, loaded at construction; ``None`` means :meth:`fit` first.

    Boxes are drawn in normalised map coordinates before any Gaussian sample, and the number of random draws they
    take depends only on the batch size and these settings. So **the same seed gives the same boxes, in normalised
    coordinates, for feature maps of any size or channel count**: a multi-level model calls one instance per level
    with one seed to corrupt the same image region at every level.

    Calling ``synth(features, seed=s)`` returns ``(noisy, mask)`` with ``mask`` ``[1, H, W]`` (``[B, 1, H, W]`` for
    a batch), 1 where features were replaced. Random numbers come from torch's CPU generator (forked when a seed is
    given), so results do not depend on the device of the features.
    """

    modality = "feature"

    def __init__(self, num_boxes: Sequence[int] | int = (1, 3), box_size: Sequence[float] | float = (0.1, 0.3),
                 probability: float = 1.0, covariance: str = "full", epsilon: float = 0.01,
                 statistics: str | os.PathLike[str] | None = None) -> None:
        low, high = _pair("num_boxes", num_boxes)
        if low != int(low) or high != int(high) or low < 1:
            raise ConfigError(f"{_NAME}: num_boxes must be whole numbers >= 1, got {num_boxes!r}.", hint=_HINT)
        self.num_boxes = (int(low), int(high))
        self.box_size = _pair("box_size", box_size)
        if not 0.0 < self.box_size[0] <= self.box_size[1] <= 1.0:
            raise ConfigError(f"{_NAME}: box_size must satisfy 0 < low <= high <= 1 (fractions of the map side), "
                              f"got {box_size!r}.", hint=_HINT)
        if isinstance(probability, bool) or not isinstance(probability, (int, float)) \
                or not 0.0 <= probability <= 1.0:
            raise ConfigError(f"{_NAME}: probability must be a number in [0, 1], got {probability!r}.", hint=_HINT)
        self.probability = float(probability)
        if covariance not in COVARIANCES:
            raise ConfigError(f"{_NAME}: covariance must be one of {', '.join(COVARIANCES)}, got {covariance!r}.",
                              hint="full = the paper's multivariate Gaussian; identity = N(0, I) noise.")
        self.covariance = str(covariance)
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon >= 0:
            raise ConfigError(f"{_NAME}: epsilon must be a number >= 0, got {epsilon!r}.", hint=_HINT)
        self.epsilon = float(epsilon)
        self.reset()
        if statistics is not None:
            self.load(statistics)

    # ------------------------------------------------------------------------------------------------ statistics
    def reset(self) -> GaussianFeatureNoise:
        """Forget every statistic (``fitted`` becomes False unless ``covariance="identity"``)."""
        self.count = 0
        self.shape: tuple[int, int, int] | None = None
        self._mean: torch.Tensor | None = None  # [H*W, C], float64
        self._m2: torch.Tensor | None = None  # [H*W, C, C] (full) or [H*W, C] (diagonal), float64
        self._factor: torch.Tensor | None = None  # cached square root of the covariance, float32
        self._mean32: torch.Tensor | None = None
        return self

    @property
    def fitted(self) -> bool:
        """Whether the synthesizer can sample (always for ``identity``)."""
        return self.covariance == "identity" or self.count > 0

    def partial_fit(self, features: torch.Tensor) -> GaussianFeatureNoise:
        """Add a batch of normal feature maps ``[B, C, H, W]`` (or one ``[C, H, W]``) to the statistics.

        Batches are merged exactly (Chan et al.'s parallel mean/covariance update, float64), so the result does not
        depend on how the data is split into batches. Accumulators live on the features' device.
        """
        if features.ndim == 3:
            features = features.unsqueeze(0)
        if features.ndim != 4 or features.shape[0] == 0:
            raise ConfigError(f"{_NAME}: fit expects feature maps [B, C, H, W] or [C, H, W], got shape "
                              f"{tuple(features.shape)}.")
        batch, channels, height, width = (int(s) for s in features.shape)
        if self.covariance == "identity":
            self.shape = (channels, height, width)
            return self
        if self.shape is not None and self.count > 0 and self.shape != (channels, height, width):
            raise ConfigError(f"{_NAME}: fitting on maps of shape {(channels, height, width)} after maps of shape "
                              f"{self.shape}; every map must have the same shape.",
                              hint="Fit one instance per feature level and input size.")
        x = features.detach().to(torch.float64).permute(2, 3, 0, 1).reshape(height * width, batch, channels)
        batch_mean = x.mean(dim=1)
        centred = x - batch_mean[:, None]
        if self.covariance == "full":
            scatter = torch.einsum("pbc,pbd->pcd", centred, centred)
        else:
            scatter = (centred * centred).sum(dim=1)
        if self.count == 0 or self._mean is None or self._m2 is None:
            self._mean, self._m2 = batch_mean, scatter
        else:
            mean, m2 = self._mean.to(x.device), self._m2.to(x.device)
            total = self.count + batch
            delta = batch_mean - mean
            self._mean = mean + delta * (batch / total)
            weight = self.count * batch / total
            if self.covariance == "full":
                self._m2 = m2 + scatter + torch.einsum("pc,pd->pcd", delta, delta) * weight
            else:
                self._m2 = m2 + scatter + delta * delta * weight
        self.count += batch
        self.shape = (channels, height, width)
        self._factor = self._mean32 = None
        return self

    def fit(self, features: torch.Tensor | Iterable[torch.Tensor]) -> GaussianFeatureNoise:
        """Estimate the per-position Gaussians from normal feature maps (a tensor or an iterable of batches).

        Raises:
            DataError: the iterable gave no feature map.
        """
        self.reset()
        batches = [features] if isinstance(features, torch.Tensor) else features
        for batch in batches:
            self.partial_fit(batch)
        if self.covariance != "identity" and self.count == 0:
            raise DataError(f"{_NAME}: fit got no feature maps.", hint="Pass at least one batch of normal features.")
        return self

    @property
    def mean(self) -> torch.Tensor:
        """Per-position mean ``[C, H, W]`` (zeros for ``identity``)."""
        self._require_fit()
        if self.covariance == "identity" or self._mean is None:
            channels, height, width = self.shape or (0, 0, 0)
            return torch.zeros(channels, height, width)
        channels, height, width = self.shape  # type: ignore[misc]
        return self._mean.float().T.reshape(channels, height, width)

    @property
    def covariance_matrix(self) -> torch.Tensor:
        """Per-position covariance without the ridge: ``[H*W, C, C]`` (full) or ``[H*W, C]`` variances (diagonal).

        The unbiased estimate (``/ (n - 1)``); zeros after a single map.
        """
        self._require_fit()
        if self._m2 is None:
            raise ConfigError(f"{_NAME}: covariance 'identity' has no fitted covariance.")
        return (self._m2 / max(self.count - 1, 1)).float()

    def _require_fit(self) -> None:
        if not self.fitted:
            raise ConfigError(
                f"{_NAME}: the synthesizer is not fitted. It works on feature maps [C, H, W] of a frozen backbone "
                "(modality 'feature'), not on images, and needs the per-position statistics of normal features.",
                hint="Call fit(normal_feature_maps) first, pass statistics=PATH (a file from save()), or use "
                "covariance='identity'. For image anomalies use an image synthesizer such as plugin:perlin.")

    def _square_root(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean [H*W, C], factor)`` with ``factor @ factor.T = Sigma + eps I`` (Cholesky; eigen fallback)."""
        if self._factor is not None and self._mean32 is not None:
            return self._mean32, self._factor
        assert self._mean is not None
        cov = self._m2 / max(self.count - 1, 1)  # type: ignore[operator]
        if self.covariance == "full":
            eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
            cov = cov + self.epsilon * eye
            factor, info = torch.linalg.cholesky_ex(cov)
            bad = info != 0
            if bool(bad.any()):  # not positive definite (epsilon 0, constant channels): clip the eigenvalues
                values, vectors = torch.linalg.eigh(cov[bad])
                factor[bad] = vectors * values.clamp_min(0).sqrt()[:, None, :]
        else:
            factor = (cov + self.epsilon).clamp_min(0).sqrt()
        self._mean32, self._factor = self._mean.float(), factor.float()
        return self._mean32, self._factor

    # ------------------------------------------------------------------------------------------------ files
    def state_dict(self) -> dict[str, Any]:
        """The fitted statistics as a plain dict of tensors and numbers (see :meth:`save`)."""
        self._require_fit()
        state: dict[str, Any] = {"format": FORMAT, "covariance": self.covariance, "count": self.count,
                                 "shape": list(self.shape or ())}
        if self.covariance != "identity":
            assert self._mean is not None and self._m2 is not None
            state["mean"] = self._mean.cpu()
            state["m2"] = self._m2.cpu()
        return state

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fitted statistics to ``path`` (``torch.save`` of :meth:`state_dict`); returns the path."""
        file = Path(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), file)
        return file

    def load(self, source: str | os.PathLike[str] | Mapping[str, Any]) -> GaussianFeatureNoise:
        """Load statistics from a file written by :meth:`save` (or its :meth:`state_dict`).

        Raises:
            ConfigError: missing or unreadable file, another format, or another covariance type.
        """
        if isinstance(source, Mapping):
            state: Any = source
        else:
            file = Path(source).expanduser()
            if not file.is_file():
                raise ConfigError(f"{_NAME}: statistics file {str(file)!r} not found.",
                                  hint="Give a file written by GaussianFeatureNoise.save(), or leave statistics "
                                  "unset and call fit().")
            try:
                state = torch.load(file, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise ConfigError(f"{_NAME}: statistics file {str(file)!r} could not be read: "
                                  f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(state, Mapping) or state.get("format") != FORMAT:
            raise ConfigError(f"{_NAME}: {source!r} does not hold statistics in the {FORMAT!r} format.",
                              hint="Give a file written by GaussianFeatureNoise.save().")
        if state.get("covariance") != self.covariance:
            raise ConfigError(f"{_NAME}: the statistics were fitted with covariance={state.get('covariance')!r}, "
                              f"this instance uses covariance={self.covariance!r}.",
                              hint="Use the same covariance setting, or fit again.")
        self.reset()
        self.count = int(state["count"])
        self.shape = tuple(int(s) for s in state["shape"]) or None  # type: ignore[assignment]
        if self.covariance != "identity":
            self._mean = state["mean"].to(torch.float64)
            self._m2 = state["m2"].to(torch.float64)
        return self

    # ------------------------------------------------------------------------------------------------ sampling
    def sample_regions(self, batch: int, height: int, width: int) -> torch.Tensor:
        """Random noise regions ``[batch, height, width]`` (bool, CPU), one union of boxes per map.

        Every call takes the same number of random draws for a given ``batch`` (whatever ``height`` and ``width``),
        and boxes are drawn in normalised coordinates: the same RNG state gives the same boxes at any map size.
        """
        most = self.num_boxes[1]
        apply = torch.rand(batch) < self.probability
        counts = torch.randint(self.num_boxes[0], most + 1, (batch,))
        low, high = self.box_size
        sizes = low + (high - low) * torch.rand(batch, most, 2)  # (height, width) fractions
        corners = torch.rand(batch, most, 2) * (1.0 - sizes)  # (top, left) fractions
        used = (torch.arange(most)[None, :] < counts[:, None]) & apply[:, None]  # [B, K]
        rows = self._cells(corners[..., 0], sizes[..., 0], height)  # [B, K, H]
        cols = self._cells(corners[..., 1], sizes[..., 1], width)  # [B, K, W]
        boxes = rows[..., :, None] & cols[..., None, :]  # [B, K, H, W]
        return (boxes & used[..., None, None]).any(dim=1)

    @staticmethod
    def _cells(start: torch.Tensor, size: torch.Tensor, cells: int) -> torch.Tensor:
        """Cells whose centres lie in ``[start, start + size)``; at least the cell under the box centre."""
        centres = (torch.arange(cells, dtype=torch.float32) + 0.5) / cells
        inside = (centres >= start[..., None]) & (centres < (start + size)[..., None])
        middle = ((start + size / 2) * cells).floor().long().clamp(0, cells - 1)
        fallback = torch.nn.functional.one_hot(middle, cells).bool()
        return torch.where(inside.any(dim=-1, keepdim=True), inside, fallback)

    def synthesize(self, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Replace random boxes of ``sample`` (``[C, H, W]`` or ``[B, C, H, W]``) by Gaussian samples.

        Returns ``(noisy, mask)``: ``noisy`` has the input's shape, dtype and device; ``mask`` is ``[1, H, W]``
        (``[B, 1, H, W]`` for a batch), 1.0 where features were replaced. Outside the mask nothing changes.
        """
        single = sample.ndim == 3
        features = sample.unsqueeze(0) if single else sample
        if features.ndim != 4:
            raise ConfigError(f"{_NAME} expects feature maps [C, H, W] or [B, C, H, W], got shape "
                              f"{tuple(sample.shape)}.")
        self._require_fit()
        batch, channels, height, width = (int(s) for s in features.shape)
        if self.covariance != "identity" and self.shape != (channels, height, width):
            raise ConfigError(
                f"{_NAME}: fitted on feature maps of shape {self.shape} (C, H, W), got {(channels, height, width)}.",
                hint="Fit on features of the same layer and input size as the maps you perturb.")
        regions = self.sample_regions(batch, height, width)
        index_b, index_i, index_j = regions.nonzero(as_tuple=True)
        z = torch.randn(int(index_b.numel()), channels)
        if self.covariance == "identity":
            values = z
        else:
            mean, factor = self._square_root()
            position = (index_i * width + index_j).to(mean.device)
            z = z.to(mean.device)
            if self.covariance == "full":
                values = mean[position] + (factor[position] @ z[..., None]).squeeze(-1)
            else:
                values = mean[position] + factor[position] * z
        device = features.device
        noisy = features.clone()
        if index_b.numel():
            noisy[index_b.to(device), :, index_i.to(device), index_j.to(device)] = values.to(device, noisy.dtype)
        mask = regions[:, None].to(device=device, dtype=features.dtype if features.is_floating_point()
                                   else torch.float32)
        if single:
            return noisy[0], mask[0]
        return noisy, mask

    def __repr__(self) -> str:
        fitted = f"fitted on {self.count} maps of shape {self.shape}" if self.count else "not fitted"
        return (f"GaussianFeatureNoise(num_boxes={list(self.num_boxes)}, box_size={list(self.box_size)}, "
                f"probability={self.probability}, covariance={self.covariance!r}, epsilon={self.epsilon}; {fitted})")
