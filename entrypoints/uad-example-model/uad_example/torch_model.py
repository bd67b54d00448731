"""The autoencoder as a plain torch module (no Lightning)."""

from __future__ import annotations

import torch
from anomalib.data import InferenceBatch
from torch import nn


def _block(c_in: int, c_out: int, down: bool) -> nn.Sequential:
    conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1) if down else nn.ConvTranspose2d(
        c_in, c_out, 4, stride=2, padding=1)
    return nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class AutoencoderNet(nn.Module):
    """Three stride-2 stages down, three up; input side must be a multiple of 8."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.encoder = nn.Sequential(_block(3, w, True), _block(w, 2 * w, True), _block(2 * w, 4 * w, True))
        self.decoder = nn.Sequential(_block(4 * w, 2 * w, False), _block(2 * w, w, False),
                                     nn.ConvTranspose2d(w, 3, 4, stride=2, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor | InferenceBatch:
        recon = self.decoder(self.encoder(x))
        if self.training:
            return recon
        anomaly_map = ((x - recon) ** 2).mean(dim=1, keepdim=True)
        return InferenceBatch(pred_score=anomaly_map.amax(dim=(1, 2, 3)), anomaly_map=anomaly_map)
