"""``plugin:uniad``: the Lightning module of UniAD (unified multi-class anomaly detection)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from anomalib.data import Batch
from anomalib.metrics import Evaluator
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn

from uad_plugins.components.lightning import UadModule
from uad_plugins.components.optim import adamw_with_one_decay
from uad_plugins.components.preprocessing import backbone_pre_processor
from uad_plugins.components.settings import check_settings, positive_int, transformer_checks
from uad_plugins.plugins.uniad.torch_model import UniadModel

__all__ = ["Uniad"]


class Uniad(UadModule):
    """UniAD (You et al., NeurIPS 2022): one model for many classes, feature reconstruction by a neighbour-masked
    transformer with layer-wise learned queries and feature jittering.

    Args:
        backbone: frozen timm backbone. The paper uses EfficientNet-B4 (timm ``tf_efficientnet_b4.aa_in1k``; the
            bare name means the Noisy-Student weights); the default ``tf_efficientnet_lite0`` has offline weights.
        layers: stages to concatenate (strides 2, 4, 8, 16).
        pretrained: ``True`` (ImageNet weights), ``False`` (random init) or a local weights file.
        image_size: square input side (224).
        hidden_dim, num_heads, num_encoder_layers, num_decoder_layers, dim_feedforward, dropout: 256, 8, 4, 4,
            1024, 0.1.
        neighbor_size: neighbour-mask window (7; must be smaller than the token grid; 0 = no mask).
        jitter_scale, jitter_prob: feature jittering (20, 1.0).
        pool_size: average-pooling kernel of the image score (16).
        lr, weight_decay: AdamW (1e-4, 1e-4).
        lr_decay_at: fraction of ``max_epochs`` at which the learning rate is multiplied by 0.1 (800/1000 = 0.8).
        gradient_clip_val: suggested max-norm gradient clipping (0.1); a trainer value set by the user wins.
        max_epochs: suggested training length in epochs (20; the paper trains 1000).
        max_steps: suggested cap in optimiser steps (1000, ours): training ends at whichever bound comes first
            (``null`` drops one); any ``--trainer.max_epochs``/``--trainer.max_steps`` you set voids both.
        pre_processor, post_processor, evaluator, visualizer: anomalib components (``True`` builds the default).
    """

    #: training reads only frozen backbone features of unaugmented images (``uad fit --feature_cache``)
    supports_feature_cache = True
    distributed_training = True  # learns by gradients only

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
        lr: float = 1e-4,
        weight_decay: float = 1e-4,
        lr_decay_at: float = 0.8,
        gradient_clip_val: float = 0.1,
        max_epochs: int | None = 20,
        max_steps: int | None = 1000,
        pre_processor: nn.Module | bool = True,
        post_processor: nn.Module | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = False,
    ) -> None:
        if isinstance(layers, str):
            layers = [layers]
        validate_common("uniad", image_size=image_size, hidden_dim=hidden_dim, num_heads=num_heads,
                        num_encoder_layers=num_encoder_layers, num_decoder_layers=num_decoder_layers,
                        dim_feedforward=dim_feedforward, dropout=dropout, neighbor_size=neighbor_size,
                        jitter_scale=jitter_scale, jitter_prob=jitter_prob, pool_size=pool_size, lr=lr,
                        weight_decay=weight_decay, lr_decay_at=lr_decay_at, gradient_clip_val=gradient_clip_val,
                        max_epochs=max_epochs, max_steps=max_steps)
        if pre_processor is True:
            pre_processor = self.configure_pre_processor(image_size, backbone=backbone)
        super().__init__(pre_processor=pre_processor, post_processor=post_processor, evaluator=evaluator,
                         visualizer=visualizer)
        self.image_size = int(image_size)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.lr_decay_at = float(lr_decay_at)
        self.gradient_clip_val = float(gradient_clip_val)
        self.suggested_max_epochs = None if max_epochs is None else int(max_epochs)
        self.suggested_max_steps = None if max_steps is None else int(max_steps)
        self.model: UniadModel = UniadModel(
            backbone=backbone, layers=list(layers), pretrained=pretrained, image_size=self.image_size,
            hidden_dim=hidden_dim, num_heads=num_heads, num_encoder_layers=num_encoder_layers,
            num_decoder_layers=num_decoder_layers, dim_feedforward=dim_feedforward, dropout=dropout,
            neighbor_size=neighbor_size, jitter_scale=jitter_scale, jitter_prob=jitter_prob, pool_size=pool_size,
        )

    @classmethod
    def configure_pre_processor(cls, image_size: int | tuple[int, int] | None = None,
                                backbone: str = "tf_efficientnet_lite0") -> PreProcessor:
        """Resize to ``image_size`` (224 by default) and normalise as the backbone expects (no augmentation)."""
        return backbone_pre_processor(image_size, backbone, default_size=224)

    def configure_optimizers(self) -> Any:
        """AdamW(1e-4, wd 1e-4) on the trainable (non-backbone) parameters, x0.1 at ``lr_decay_at``."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        return adamw_with_one_decay(self, params, self.lr, self.weight_decay, self.lr_decay_at)

    def frozen_feature_modules(self) -> list[nn.Module]:
        """The multi-scale backbone features, which an attached feature cache serves (jitter comes after them)."""
        return [self.model.features]

    def training_step(self, batch: Batch, batch_idx: int) -> STEP_OUTPUT:
        """MSE between reconstructed and clean backbone features."""
        del batch_idx
        features = self.frozen_features(batch.image, getattr(batch, "image_path", None), self.model.features)
        loss = self.model(batch.image, features).loss
        self.log("loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=True, batch_size=batch.image.shape[0])
        return {"loss": loss}


def validate_common(name: str, **values: Any) -> None:
    """Raise ConfigError for UniAD settings that cannot work."""
    checks = transformer_checks(values)
    checks.insert(10, ("pool_size", positive_int(values["pool_size"]), "a positive integer (16)"))
    check_settings(name, values, checks)
