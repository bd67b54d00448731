"""UniAD as a plain ``nn.Module``: frozen multi-scale features, neighbour-masked transformer reconstruction.

No Lightning here (see :mod:`uad_plugins.plugins.uniad.model`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from anomalib.data import InferenceBatch
from torch import nn

from uad_plugins.components.scoring import max_avgpool_score, reconstruction_map
from uad_plugins.components.transformer import (
    FeatureTokenEncoder,
    QueryDecoderLayer,
    xavier_init_linears,
)
from uad_plugins.errors import ConfigError

__all__ = ["UniadModel", "UniadTrainOutput", "max_avgpool_score", "reconstruction_map"]


class UniadTrainOutput(NamedTuple):
    """One training forward: the MSE loss, the (clean) features and their reconstruction."""

    loss: torch.Tensor
    features: torch.Tensor
    reconstruction: torch.Tensor


class UniadModel(FeatureTokenEncoder):
    """UniAD (You et al., NeurIPS 2022): reconstruct frozen multi-scale features with a neighbour-masked
    transformer encoder and a layer-wise-query decoder.

    Args:
        backbone: timm backbone; layers: its stages (resized to the deepest stage's grid and concatenated).
        pretrained: ``True``, ``False`` or a local weights file.
        image_size: square input side; fixes the token grid (mask, position and query tables).
        hidden_dim, num_heads, num_encoder_layers, num_decoder_layers, dim_feedforward, dropout: transformer sizes.
        neighbor_size: odd side of the neighbour-mask window (7 at 224 px); 0 turns the mask off.
        jitter_scale, jitter_prob: feature jittering (training only).
        pool_size: average-pooling kernel of the image score (16).

    Eval mode: ``forward(images) -> InferenceBatch(pred_score [B], anomaly_map [B, 1, H, W])``; training mode:
    :class:`UniadTrainOutput`.
    """

    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        layers: Sequence[str] = ("blocks.0", "blocks.1", "blocks.2", "blocks.4"),
        pretrained: bool | str = True,
        image_size: int = 224,
        hidden_dim: int = 256,
        num_heads: int = 8,
        num_encoder_layers: int = 4,
        num_decoder_layers: int = 4,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        neighbor_size: int = 7,
        jitter_scale: float = 20.0,
        jitter_prob: float = 1.0,
        pool_size: int = 16,
    ) -> None:
        if not 1 <= pool_size <= image_size:
            raise ConfigError(f"uniad: pool_size {pool_size} must be in [1, image_size={image_size}].")
        super().__init__("uniad", backbone, layers, pretrained, image_size, hidden_dim, num_heads, num_encoder_layers,
                         dim_feedforward, dropout, neighbor_size, jitter_scale, jitter_prob)
        self.pool_size = int(pool_size)
        channels = self.features.channels
        tokens = self.grid[0] * self.grid[1]
        self.decoder = nn.ModuleList(QueryDecoderLayer(tokens, hidden_dim, num_heads, dim_feedforward, dropout)
                                     for _ in range(num_decoder_layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.output_proj = nn.Linear(hidden_dim, channels)
        for module in (self.input_proj, self.encoder, self.decoder, self.output_proj):
            xavier_init_linears(module)

    def reconstruct(self, images: torch.Tensor,
                    features: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features [B, C, h, w], reconstruction [B, C, h, w])``; jitter is applied in training mode only.
        ``features`` are the frozen features of ``images`` when already at hand (a feature cache)."""
        if features is None:
            with torch.no_grad():
                features = self.features(images)
        batch, channels, height, width = features.shape
        x = self.encode(features)
        pos = self.pos()
        out = x
        for layer in self.decoder:
            out = layer(x, out, pos, self.mask)
        out = self.output_proj(self.decoder_norm(out))
        return features, out.transpose(1, 2).reshape(batch, channels, height, width)

    def forward(self, images: torch.Tensor,
                features: torch.Tensor | None = None) -> InferenceBatch | UniadTrainOutput:
        """Training: MSE loss between reconstruction and clean features. Eval: score and map (``features``: see
        :meth:`reconstruct`)."""
        features, reconstruction = self.reconstruct(images, features)
        if self.training:
            return UniadTrainOutput(F.mse_loss(reconstruction, features), features, reconstruction)
        anomaly_map = reconstruction_map(features, reconstruction, (images.shape[-2], images.shape[-1]))
        return InferenceBatch(pred_score=max_avgpool_score(anomaly_map, self.pool_size), anomaly_map=anomaly_map)
