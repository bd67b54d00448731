"""PBAS as a plain ``nn.Module``: frozen backbone, patch embedding, adaptor, centres, synthesis and discriminator.

No Lightning here. The Lightning wrapper (:mod:`uad_plugins.plugins.pbas.model`) owns the optimisers and calls
:meth:`PbasModel.init_centers` once before training.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from anomalib.data import InferenceBatch
from torch import nn

from uad_plugins.components.backbones import create_feature_extractor
from uad_plugins.components.scoring import GaussianBlur2d
from uad_plugins.errors import ConfigError, DataError

__all__ = [
    "PAPER_EMBED_DIMENSION",
    "Discriminator",
    "GaussianBlur2d",
    "PbasModel",
    "PbasTrainOutput",
    "backbone_embed_dimension",
    "nearest_centers",
    "synthesize_anomalies",
]


class PbasTrainOutput(NamedTuple):
    """What one training forward pass gives the optimiser and the logs."""

    loss: torch.Tensor
    center_loss: torch.Tensor
    bce_real: torch.Tensor
    bce_fake: torch.Tensor
    real_scores: torch.Tensor
    fake_scores: torch.Tensor
    radius: torch.Tensor


def nearest_centers(features: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """For each feature ``[N, D]``, the centre ``[K, D]`` with the highest cosine similarity (``[N, D]``)."""
    similarity = F.normalize(features, dim=1) @ F.normalize(centers, dim=1).T
    return centers[similarity.argmax(dim=1)]


def synthesize_anomalies(features: torch.Tensor, centers: torch.Tensor,
                         noise_scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Anomaly Feature Synthesis: push each feature outward along its ray from its centre.

    ``fake = f + (u * r * k).detach()`` with ``u = (f - c) / ||f - c||``, ``r`` the batch-mean distance and ``k`` the
    noise scale. Only the offset is detached: gradients on ``fake`` still reach ``f``.

    Args:
        features: adapted features ``[N, D]``.
        centers: the nearest centre of each feature ``[N, D]`` (see :func:`nearest_centers`).
        noise_scale: ``k`` (0.25 in the paper).

    Returns:
        ``(fake [N, D], distances [N, 1], radius [])`` where ``distances = ||f - c||`` and ``radius`` their mean.
    """
    direction = features - centers
    distances = torch.linalg.vector_norm(direction, dim=1, keepdim=True)
    radius = distances.mean()
    offset = direction / distances.clamp_min(1e-12) * radius * noise_scale
    return features + offset.detach(), distances, radius


class Discriminator(nn.Module):
    """RBO discriminator: ``Linear(D, H) - BatchNorm1d - LeakyReLU(0.2) - Linear(H, 1, bias=False) - Sigmoid``.

    Linear weights are Xavier-normal initialised, as in the official code.
    """

    def __init__(self, in_features: int, hidden: int = 1024) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2))
        self.tail = nn.Sequential(nn.Linear(hidden, 1, bias=False), nn.Sigmoid())
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Anomaly probability per feature, ``[N, 1]``."""
        return self.tail(self.body(features))


#: the paper's patch-feature dimension (WRN50), the most :func:`backbone_embed_dimension` gives
PAPER_EMBED_DIMENSION = 1536


def backbone_embed_dimension(channels: Sequence[int], patch_size: int) -> int:
    """The patch-feature dimension sized to the backbone: the smallest layer's ``C * p * p``, at most 1536.

    Each layer's unfolded ``C * p * p`` vector is mean-mapped to one common dimension. A dimension above a layer's
    depth only repeats its values (Lite0's ``blocks.2``: 40 channels x 9 = 360 values stretched to the paper's 1536),
    and the adaptor and discriminator, which run on every patch, then spend their work on copies. The smallest depth
    is the largest dimension that repeats nothing; deeper layers are averaged down to it. The paper's 1536 caps it
    (WRN50's ``layer2`` alone has 4608 values per patch).
    """
    return min(PAPER_EMBED_DIMENSION, *(int(c) * patch_size * patch_size for c in channels))


class PbasModel(nn.Module):
    """Progressive Boundary guided Anomaly Synthesis (PBAS), the network.

    Args:
        backbone: timm backbone name.
        layers: feature layers; the first sets the patch grid.
        pretrained: ``True`` (ImageNet weights), ``False`` (random init) or a local weights file.
        image_size: training image side; fixes the number of centres (one per grid position).
        pretrain_embed_dimension: per-layer mean-mapped dimension; ``None`` sizes it to the backbone (see
            :func:`backbone_embed_dimension`).
        target_embed_dimension: dimension ``D`` of the aggregated patch feature (and of the adaptor); ``None``
            makes it equal to the per-layer dimension.
        patch_size: local aggregation window (odd).
        dsc_hidden: hidden width of the discriminator.
        noise_scale: ``k`` of the anomaly synthesis.
        center_momentum: EMA momentum of the centre initialisation.
        smoothing_sigma: Gaussian sigma (pixels) of the anomaly-map smoothing.

    In eval mode ``forward(images)`` returns ``InferenceBatch(pred_score [B], anomaly_map [B, 1, H, W])``;
    in training mode it returns a :class:`PbasTrainOutput` (the losses, after :meth:`init_centers`).
    """

    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        layers: Sequence[str] = ("blocks.2", "blocks.4"),
        pretrained: bool | str = True,
        image_size: int = 288,
        pretrain_embed_dimension: int | None = None,
        target_embed_dimension: int | None = None,
        patch_size: int = 3,
        dsc_hidden: int = 1024,
        noise_scale: float = 0.25,
        center_momentum: float = 0.9,
        smoothing_sigma: float = 4.0,
    ) -> None:
        super().__init__()
        self.layers = list(layers)
        self.patch_size = int(patch_size)
        self.noise_scale = float(noise_scale)
        self.center_momentum = float(center_momentum)

        self.feature_extractor = create_feature_extractor(backbone, self.layers, pretrained)
        maps = self.feature_extractor.probe(image_size, owner="pbas", hint="Use a larger --model.image_size (288 in "
                                            "the paper; a multiple of 32 is safest).")
        self.grid_size: tuple[int, int] = (int(maps[0].shape[-2]), int(maps[0].shape[-1]))
        sized = backbone_embed_dimension([int(fmap.shape[1]) for fmap in maps], self.patch_size)
        self.pretrain_embed_dimension = sized if pretrain_embed_dimension is None else int(pretrain_embed_dimension)
        self.target_embed_dimension = (self.pretrain_embed_dimension if target_embed_dimension is None
                                       else int(target_embed_dimension))

        dim = self.target_embed_dimension
        self.projection = nn.Linear(dim, dim)
        nn.init.xavier_normal_(self.projection.weight)
        self.discriminator = Discriminator(dim, dsc_hidden)
        self.blur = GaussianBlur2d(smoothing_sigma)
        self.register_buffer("centers", torch.zeros(self.grid_size[0] * self.grid_size[1], dim))
        self.register_buffer("centers_initialized", torch.tensor(False))

    # ------------------------------------------------------------------ features
    def embed(self, images: torch.Tensor | None,
              maps: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch features ``[B * H' * W', D]`` (before the adaptor) and the grid ``(H', W')``; ``maps`` are the
        backbone's maps of ``images`` when already at hand (a feature cache), else they are computed.

        Each layer is unfolded in ``patch_size`` windows (stride 1), deeper layers are bilinearly resized to the
        first layer's grid, every ``C * p * p`` vector is mean-mapped (adaptive average pooling) to
        ``pretrain_embed_dimension``, and the layers are pooled together to ``target_embed_dimension``.
        """
        maps = self.feature_extractor(images) if maps is None else maps
        batch = maps[0].shape[0]
        height, width = maps[0].shape[-2], maps[0].shape[-1]
        pad = (self.patch_size - 1) // 2
        mapped = []
        for fmap in maps:
            channels, h, w = fmap.shape[1], fmap.shape[-2], fmap.shape[-1]
            patches = F.unfold(fmap, kernel_size=self.patch_size, padding=pad, stride=1)  # [B, C*p*p, h*w]
            depth = channels * self.patch_size * self.patch_size
            if (h, w) != (height, width):
                patches = F.interpolate(patches.reshape(batch, depth, h, w), size=(height, width), mode="bilinear",
                                        align_corners=False)
            patches = patches.reshape(batch, depth, height * width).transpose(1, 2).reshape(-1, 1, depth)
            mapped.append(F.adaptive_avg_pool1d(patches, self.pretrain_embed_dimension).squeeze(1))
        stacked = torch.stack(mapped, dim=1).reshape(mapped[0].shape[0], 1, -1)
        features = F.adaptive_avg_pool1d(stacked, self.target_embed_dimension).reshape(-1, self.target_embed_dimension)
        return features, (height, width)

    def adapted(self, images: torch.Tensor | None,
                maps: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
        """Adapted patch features ``[B * H' * W', D]`` and the grid (``maps``: see :meth:`embed`)."""
        features, grid = self.embed(images, maps)
        return self.projection(features), grid

    # ------------------------------------------------------------------ centres (ABL)
    @torch.no_grad()
    def init_centers(self, batches: Iterable[torch.Tensor | list[torch.Tensor]]) -> None:
        """Approximate Boundary Learning: build the centres once, from one pass over the training images.

        The first batch's per-position mean (through the current, untrained adaptor) gives one prototype per grid
        position; each later batch's per-position mean updates its most cosine-similar prototype by EMA
        (``c <- m * c + (1 - m) * mean``), position by position in order. The result is frozen in ``centers``.

        Args:
            batches: pre-processed image batches ``[B, 3, H, W]`` on the model's device, or the backbone's maps of
                such a batch (a list, e.g. from a feature cache).
        """
        centers: torch.Tensor | None = None
        grid = self.grid_size
        momentum = self.center_momentum
        for item in batches:
            features, grid = self.adapted(item) if isinstance(item, torch.Tensor) else self.adapted(None, item)
            batch_mean = features.reshape(-1, grid[0] * grid[1], features.shape[-1]).mean(dim=0)
            if centers is None:
                centers = batch_mean.clone()
                continue
            similarity = F.normalize(batch_mean, dim=1) @ F.normalize(centers, dim=1).T
            for j, index in enumerate(similarity.argmax(dim=1).tolist()):
                centers[index] = centers[index] * momentum + batch_mean[j] * (1.0 - momentum)
        if centers is None:
            raise DataError("pbas: the training data gave no batch, so the centres cannot be initialised.",
                            hint="Check that the training split holds normal images.")
        if centers.shape != self.centers.shape:
            raise ConfigError(
                f"pbas: training images give a {grid[0]}x{grid[1]} patch grid but the model "
                f"was built for {self.centers.shape[0]} ({self.grid_size[0]}x{self.grid_size[1]}).",
                hint="Set --model.image_size to the size the pre-processor produces.",
            )
        self.centers.copy_(centers)
        self.centers_initialized.fill_(True)

    # ------------------------------------------------------------------ forward
    def training_losses(self, images: torch.Tensor, maps: list[torch.Tensor] | None = None) -> PbasTrainOutput:
        """Centre loss + BCE on real (target 0) and synthetic (target 1) features (``maps``: see :meth:`embed`)."""
        if not bool(self.centers_initialized):
            raise RuntimeError("PbasModel.init_centers() must run before training.")
        features, _ = self.adapted(images, maps)
        centers = nearest_centers(features.detach(), self.centers)
        fake, distances, radius = synthesize_anomalies(features, centers, self.noise_scale)
        center_loss = distances.mean()
        scores = self.discriminator(torch.cat([features, fake]))
        real_scores, fake_scores = scores[: len(features)], scores[len(features):]
        with torch.autocast(device_type=scores.device.type, enabled=False):
            bce_real = F.binary_cross_entropy(real_scores.float(), torch.zeros_like(real_scores, dtype=torch.float))
            bce_fake = F.binary_cross_entropy(fake_scores.float(), torch.ones_like(fake_scores, dtype=torch.float))
        loss = center_loss + bce_real + bce_fake
        return PbasTrainOutput(loss, center_loss, bce_real, bce_fake, real_scores.detach(), fake_scores.detach(),
                               radius.detach())

    def predict(self, images: torch.Tensor) -> InferenceBatch:
        """Patch scores on the grid; image score = max; map upsampled to the input size and Gaussian smoothed."""
        features, (height, width) = self.adapted(images)
        scores = self.discriminator(features).reshape(images.shape[0], 1, height, width)
        pred_score = scores.amax(dim=(1, 2, 3))
        anomaly_map = F.interpolate(scores, size=(images.shape[-2], images.shape[-1]), mode="bilinear",
                                    align_corners=False)
        return InferenceBatch(pred_score=pred_score, anomaly_map=self.blur(anomaly_map))

    def forward(self, images: torch.Tensor) -> InferenceBatch | PbasTrainOutput:
        """Eval: ``InferenceBatch``; training: :class:`PbasTrainOutput`."""
        if self.training:
            return self.training_losses(images)
        return self.predict(images)
