"""OneNIP as a plain ``nn.Module``: UniAD's encoder, a prompt-guided two-way decoder, a supervised refiner and a
bank of normal prompts chosen by global feature similarity.

No Lightning here (see :mod:`uad_plugins.plugins.onenip.model`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from anomalib.data import InferenceBatch
from torch import nn

from uad_plugins.components.scoring import max_avgpool_score, reconstruction_map
from uad_plugins.components.transformer import (
    FeatureTokenEncoder,
    FeedForward,
    xavier_init_linears,
)
from uad_plugins.errors import DataError

__all__ = ["COMPONENT_MAPS", "OnenipModel", "OnenipTrainOutput", "RefinerHead", "TwoWayDecoderLayer", "dice_loss"]


#: the maps :meth:`OnenipModel.component_maps` returns; ``forward`` scores the one named by ``score_map`` (``fused``
#: by default, the paper's)
COMPONENT_MAPS = ("reconstruction", "refiner", "fused")


class OnenipTrainOutput(NamedTuple):
    """One training forward: total loss, its two terms and the chosen prompt indices."""

    loss: torch.Tensor
    mse: torch.Tensor
    dice: torch.Tensor
    prompt_index: torch.Tensor


def dice_loss(probs: torch.Tensor, target: torch.Tensor, factor_two: bool = False) -> torch.Tensor:
    """OneNIP's Dice: per sample ``1 - (sum(p t) + 1) / (sum(p^2) + sum(t^2) + 1)``, mean over the batch.

    ``factor_two=True`` gives the standard ``2 sum(p t)`` numerator (0 for a perfect prediction).
    """
    p, t = probs.flatten(1), target.flatten(1)
    inter = (p * t).sum(dim=1) * (2.0 if factor_two else 1.0)
    return (1.0 - (inter + 1.0) / ((p * p).sum(dim=1) + (t * t).sum(dim=1) + 1.0)).mean()


class TwoWayDecoderLayer(nn.Module):
    """Two-way (prompt <-> target) post-LN layer: the prompt stream attends to the target, passes an MLP, then the
    target stream attends to the updated prompt (the repository's v2 update rule). Both attentions are masked."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.prompt_to_target = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.mlp = FeedForward(dim, ffn, 0.0)
        self.target_to_prompt = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop1, self.drop3 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, prompt: torch.Tensor, target: torch.Tensor, pos: torch.Tensor,
                mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(prompt, target)`` streams ``[B, N, D]`` -> updated ``(prompt, target)``."""
        attended = self.prompt_to_target(prompt + pos, target + pos, target, attn_mask=mask, need_weights=False)[0]
        prompt = self.norm1(prompt + self.drop1(attended))
        prompt = self.norm2(prompt + self.mlp(prompt))
        attended = self.target_to_prompt(target + pos, prompt + pos, prompt, attn_mask=mask, need_weights=False)[0]
        target = self.norm3(target + self.drop3(attended))
        return prompt, target


class RefinerHead(nn.Module):
    """Supervised refiner: two ``[Conv3x3 (no bias) - BN - ReLU - ConvTranspose(k2, s2)]`` blocks, then a 1x1 conv
    to one logit channel (4x the token grid)."""

    def __init__(self, in_channels: int, width: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(2):
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                       nn.ConvTranspose2d(width, width, kernel_size=2, stride=2)]
            channels = width
        layers.append(nn.Conv2d(width, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, 1, 4h, 4w]`` from ``|reconstruction - features|`` ``[B, C, h, w]``."""
        return self.net(residual)


class OnenipModel(FeatureTokenEncoder):
    """OneNIP (Gao, ECCV 2024): reconstruct a target's features from one normal prompt image, then refine.

    Args:
        backbone, layers, pretrained, image_size: as UniAD (frozen multi-scale features on the stride-16 grid).
        hidden_dim, num_heads, num_encoder_layers, num_decoder_layers, dim_feedforward, dropout: transformer sizes.
        neighbor_size: odd neighbour-mask window (7 at 224 px); 0 turns the mask off.
        jitter_scale, jitter_prob: feature jittering of every stream (training only).
        refiner_width: channels of the refiner (128).
        prompt_bank_size: normal training images kept as prompts (features stored in the state dict).
        prompt_topk: in training, the prompt is drawn among the ``k`` most similar bank entries (not the image
            itself); at inference the single most similar entry is used.
        dice_weight: weight of the Dice term (0.5); dice_factor_two: standard Dice numerator instead of OneNIP's.
        pool_size: average-pooling kernel of the image score (16).
        score_map: the map :meth:`forward` returns and scores, one of :data:`COMPONENT_MAPS`: ``"fused"`` (the
            paper's ``0.5 * rec + 0.5 * fusion_scale * ref``), ``"refiner"`` or ``"reconstruction"``. An inference
            switch only: the weights are the same whichever map is scored.

    Eval mode: ``forward(images) -> InferenceBatch(pred_score, anomaly_map)`` with the ``score_map`` map;
    training mode: see :meth:`training_losses`.
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
        refiner_width: int = 128,
        prompt_bank_size: int = 64,
        prompt_topk: int = 3,
        dice_weight: float = 0.5,
        dice_factor_two: bool = False,
        pool_size: int = 16,
        score_map: str = "fused",
    ) -> None:
        if score_map not in COMPONENT_MAPS:
            raise ValueError(f"score_map must be one of {COMPONENT_MAPS}, got {score_map!r}")
        super().__init__("onenip", backbone, layers, pretrained, image_size, hidden_dim, num_heads,
                         num_encoder_layers, dim_feedforward, dropout, neighbor_size, jitter_scale, jitter_prob)
        channels = self.features.channels
        self.pool_size = int(pool_size)
        self.score_map = score_map
        self.prompt_topk = int(prompt_topk)
        self.dice_weight = float(dice_weight)
        self.dice_factor_two = bool(dice_factor_two)
        self.decoder = nn.ModuleList(TwoWayDecoderLayer(hidden_dim, num_heads, dim_feedforward, dropout)
                                     for _ in range(num_decoder_layers))
        self.final_attn = nn.MultiheadAttention(hidden_dim, num_heads, dropout=dropout, batch_first=True)
        self.final_drop = nn.Dropout(dropout)
        self.final_norm = nn.LayerNorm(hidden_dim)
        self.output_proj = nn.Linear(hidden_dim, channels)
        for module in (self.input_proj, self.encoder, self.decoder, self.final_attn, self.output_proj):
            xavier_init_linears(module)
        self.refiner = RefinerHead(channels, refiner_width)
        height, width = self.grid
        self.register_buffer("prompt_bank", torch.zeros(prompt_bank_size, channels, height, width))
        self.register_buffer("prompt_keys", torch.zeros(prompt_bank_size, channels))
        self.register_buffer("prompt_bank_filled", torch.tensor(False))
        self.register_buffer("fusion_scale", torch.tensor(1.0))

    # ------------------------------------------------------------------ prompts
    @staticmethod
    def global_keys(features: torch.Tensor) -> torch.Tensor:
        """L2-normalised global average of the features, ``[B, C]`` (the prompt-retrieval descriptor)."""
        return F.normalize(features.mean(dim=(2, 3)), dim=1)

    @torch.no_grad()
    def build_prompt_bank(self, batches: Iterable[torch.Tensor], total: int | None = None) -> int:
        """Fill the bank from pre-processed normal training images.

        With ``total`` (the number of images the batches hold) the kept images are evenly spaced over the
        stream; otherwise the first ones are kept. A short stream is cycled to fill every slot.
        Returns how many distinct images were stored.
        """
        size = self.prompt_bank.shape[0]
        wanted = set(torch.linspace(0, total - 1, size).round().long().tolist()) if total and total > size else None
        kept: list[torch.Tensor] = []
        seen = 0
        for images in batches:
            features = self.features(images)
            for item in features:
                if (wanted is None or seen in wanted) and len(kept) < size:
                    kept.append(item)
                seen += 1
            if len(kept) >= size:
                break
        if not kept:
            raise DataError("onenip: the training data gave no image for the prompt bank.",
                            hint="Check that the training split holds normal images.")
        bank = torch.stack([kept[i % len(kept)] for i in range(size)])
        self.prompt_bank.copy_(bank)
        self.prompt_keys.copy_(self.global_keys(bank))
        self.prompt_bank_filled.fill_(True)
        return len(kept)

    def select_prompts(self, features: torch.Tensor) -> torch.Tensor:
        """Index ``[B]`` of the most similar bank entry (cosine of global descriptors); traceable (argmax)."""
        return (self.global_keys(features) @ self.prompt_keys.T).argmax(dim=1)

    def training_prompts(self, features: torch.Tensor) -> torch.Tensor:
        """Index ``[B]``: a random one of the ``prompt_topk`` most similar bank entries, the image itself excluded."""
        similarity = self.global_keys(features) @ self.prompt_keys.T
        similarity = similarity.masked_fill(similarity > 1 - 1e-5, -2.0)
        k = min(self.prompt_topk, similarity.shape[1])
        values, top = similarity.topk(k, dim=1)
        # uniform among the valid candidates (the image itself and its copies are not valid unless nothing else is)
        draw = torch.rand(values.shape, device=values.device).masked_fill(values <= -2.0, -1.0)
        return top.gather(1, draw.argmax(dim=1, keepdim=True)).squeeze(1)

    # ------------------------------------------------------------------ network
    def decode(self, prompt: torch.Tensor, target: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """Reconstruction ``[B, C, h, w]``: the prompt stream rewritten by attending to the target."""
        pos = self.pos()
        for layer in self.decoder:
            prompt, target = layer(prompt, target, pos, self.mask)
        attended = self.final_attn(prompt + pos, target + pos, target, need_weights=False)[0]
        prompt = self.final_norm(prompt + self.final_drop(attended))
        return self.output_proj(prompt).transpose(1, 2).reshape(shape)

    def refine(self, reconstruction: torch.Tensor, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Refiner logits upsampled (bilinear, ``align_corners=True``) to ``size``, ``[B, 1, H, W]``."""
        logits = self.refiner((reconstruction - features).abs())
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)

    # ------------------------------------------------------------------ forward
    def training_losses(self, normal: torch.Tensor, anomalous: torch.Tensor,
                        anomaly_mask: torch.Tensor) -> OnenipTrainOutput:
        """Reconstruction (normal target) and restoration (synthetic target -> clean features) MSE, plus the
        refiner's Dice against ``[0; anomaly_mask]``.

        Args:
            normal: pre-processed normal images ``[B, 3, H, W]``.
            anomalous: the same images with synthetic anomalies ``[B, 3, H, W]``.
            anomaly_mask: where the anomalies are, ``[B, 1, H, W]`` in {0, 1}.
        """
        if not bool(self.prompt_bank_filled):
            raise RuntimeError("OnenipModel.build_prompt_bank() must run before training.")
        with torch.no_grad():
            both = self.features(torch.cat([normal, anomalous]))
        clean = both[: normal.shape[0]]
        index = self.training_prompts(clean)
        prompt = self.encode(self.prompt_bank[index])
        target = self.encode(both)
        reconstruction = self.decode(torch.cat([prompt, prompt]), target, both.shape)
        mse = F.mse_loss(reconstruction, torch.cat([clean, clean]))
        probs = torch.sigmoid(self.refine(reconstruction, both, (normal.shape[-2], normal.shape[-1])))
        masks = torch.cat([torch.zeros_like(anomaly_mask), anomaly_mask]).to(probs.dtype)
        dice = dice_loss(probs, masks, self.dice_factor_two)
        return OnenipTrainOutput(mse + self.dice_weight * dice, mse, dice, index)

    def maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(reconstruction map, refiner probability map, prompt index)`` for pre-processed images."""
        features = self.features(images)
        index = self.select_prompts(features)
        prompt = self.encode(self.prompt_bank.index_select(0, index))
        reconstruction = self.decode(prompt, self.encode(features), features.shape)
        size = (images.shape[-2], images.shape[-1])
        rec_map = reconstruction_map(features, reconstruction, size)
        ref_map = torch.sigmoid(self.refine(reconstruction, features, size))
        return rec_map, ref_map, index

    def fuse(self, rec_map: torch.Tensor, ref_map: torch.Tensor) -> torch.Tensor:
        """The fused map ``0.5 rec + 0.5 fusion_scale ref`` (``[B, 1, H, W]``)."""
        return 0.5 * rec_map + 0.5 * self.fusion_scale * ref_map

    def component_maps(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The three maps of one forward, keyed by :data:`COMPONENT_MAPS`: reconstruction only (``|f - f_hat|``
        map), refiner only (its probability) and fused, each ``[B, 1, H, W]``; :meth:`forward` returns the
        ``score_map`` one. Lets one checkpoint show the refiner's share (``tools/learning_curve.py`` reports all
        three)."""
        rec_map, ref_map, _ = self.maps(images)
        return {"reconstruction": rec_map, "refiner": ref_map, "fused": self.fuse(rec_map, ref_map)}

    def forward(self, images: torch.Tensor) -> InferenceBatch:
        """Eval: the ``score_map`` map (fused by default); score = max of its average-pooled map."""
        anomaly_map = self.component_maps(images)[self.score_map]
        pred_score = max_avgpool_score(anomaly_map, self.pool_size)
        return InferenceBatch(pred_score=pred_score, anomaly_map=anomaly_map)
