"""``plugin:pbas``: the Lightning module of PBAS (Progressive Boundary guided Anomaly Synthesis)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from anomalib.data import Batch
from anomalib.metrics import Evaluator
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn, optim

from uad_plugins.components.distributed import broadcast_from_zero
from uad_plugins.components.lightning import UadModule
from uad_plugins.components.preprocessing import backbone_pre_processor
from uad_plugins.components.settings import check_settings, schedule_checks
from uad_plugins.plugins.pbas.torch_model import PbasModel

__all__ = ["Pbas"]

logger = logging.getLogger(__name__)


class Pbas(UadModule):
    """PBAS (Chen et al., TCSVT 2025): boundary-guided feature-space anomaly synthesis with a patch discriminator.

    Args:
        backbone: timm backbone (frozen). The paper uses ``wide_resnet50_2``; the default ``tf_efficientnet_lite0``
            is the backbone whose ImageNet weights ship with the install.
        layers: backbone feature layers (``layer2``/``layer3`` for ResNets, ``blocks.2``/``blocks.4`` for Lite0).
        pretrained: ``True`` (ImageNet weights), ``False`` (random init) or a local weights file.
        image_size: side of the square input after pre-processing (288 in the paper).
        pretrain_embed_dimension: per-layer mean-mapped dimension (1536, the paper's). ``None`` sizes it to the
            backbone: the smallest layer's ``channels x patch_size^2`` (360 for Lite0 ``blocks.2``), so no value is
            repeated; about 2.5x faster to train and 1.9x faster to infer on Lite0, but it localised worse on our
            validation data (docs/models/pbas.md), so it is an opt-in speed setting.
        target_embed_dimension: patch-feature dimension D (1536, the paper's); ``None`` makes it equal to the
            per-layer dimension.
        patch_size: local aggregation window (3).
        dsc_hidden: discriminator hidden width (1024).
        noise_scale: k, the synthetic offset as a fraction of the mean radius (0.25).
        lr: Adam learning rate of the feature adaptor (1e-4).
        dsc_lr: AdamW learning rate of the discriminator (2e-4).
        weight_decay: Adam weight decay of the adaptor (1e-5).
        center_momentum: EMA momentum of the one-pass centre initialisation (0.9).
        smoothing_sigma: Gaussian sigma in pixels applied to the upsampled anomaly map (4).
        max_epochs, max_steps: the suggested schedule, ended by whichever comes first (10 epochs, at most 300
            optimiser steps: a small dataset gets its 10 epochs, a large one is capped; ``null`` drops a bound). The
            paper trained 400 epochs. Any ``--trainer.max_epochs``/``--trainer.max_steps`` you set voids both.
        pre_processor, post_processor, evaluator, visualizer: anomalib components (``True`` builds the default).
    """

    #: training reads only the frozen backbone's maps of unaugmented images (``uad fit --feature_cache``)
    supports_feature_cache = True
    distributed_training = True  # learns by gradients only (adaptor and discriminator)

    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        layers: Sequence[str] = ("blocks.2", "blocks.4"),
        pretrained: bool | str = True,
        image_size: int = 288,
        pretrain_embed_dimension: int | None = 1536,
        target_embed_dimension: int | None = 1536,
        patch_size: int = 3,
        dsc_hidden: int = 1024,
        noise_scale: float = 0.25,
        lr: float = 1e-4,
        dsc_lr: float = 2e-4,
        weight_decay: float = 1e-5,
        center_momentum: float = 0.9,
        smoothing_sigma: float = 4.0,
        max_epochs: int | None = 10,
        max_steps: int | None = 300,
        pre_processor: nn.Module | bool = True,
        post_processor: nn.Module | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = False,
    ) -> None:
        if isinstance(layers, str):
            layers = [layers]
        _validate(image_size=image_size, pretrain_embed_dimension=pretrain_embed_dimension,
                  target_embed_dimension=target_embed_dimension, patch_size=patch_size, dsc_hidden=dsc_hidden,
                  noise_scale=noise_scale, lr=lr, dsc_lr=dsc_lr, weight_decay=weight_decay,
                  center_momentum=center_momentum, smoothing_sigma=smoothing_sigma, max_epochs=max_epochs,
                  max_steps=max_steps)
        if pre_processor is True:  # the default needs this instance's image size and backbone normalisation
            pre_processor = self.configure_pre_processor(image_size, backbone=backbone)
        super().__init__(pre_processor=pre_processor, post_processor=post_processor, evaluator=evaluator,
                         visualizer=visualizer)
        self.image_size = int(image_size)
        self.suggested_max_epochs = None if max_epochs is None else int(max_epochs)
        self.suggested_max_steps = None if max_steps is None else int(max_steps)
        self.lr = float(lr)
        self.dsc_lr = float(dsc_lr)
        self.weight_decay = float(weight_decay)
        self.model: PbasModel = PbasModel(
            backbone=backbone, layers=list(layers), pretrained=pretrained, image_size=self.image_size,
            pretrain_embed_dimension=pretrain_embed_dimension, target_embed_dimension=target_embed_dimension,
            patch_size=patch_size, dsc_hidden=dsc_hidden, noise_scale=noise_scale, center_momentum=center_momentum,
            smoothing_sigma=smoothing_sigma,
        )
        self.automatic_optimization = False

    # ------------------------------------------------------------------ anomalib configuration
    @classmethod
    def configure_pre_processor(cls, image_size: int | tuple[int, int] | None = None,
                                backbone: str = "tf_efficientnet_lite0") -> PreProcessor:
        """Resize to ``image_size`` (square when an int; 288 by default) and normalise as the backbone expects.

        The mean/std come from timm's pretrained config of ``backbone`` (0.5/0.5 for ``tf_efficientnet_lite0``,
        ImageNet statistics otherwise).
        """
        return backbone_pre_processor(image_size, backbone, default_size=288)

    def configure_optimizers(self) -> list[optim.Optimizer]:
        """Adam for the feature adaptor, AdamW for the discriminator (one step of each per batch)."""
        adaptor = optim.Adam(self.model.projection.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        discriminator = optim.AdamW(self.model.discriminator.parameters(), lr=self.dsc_lr)
        return [adaptor, discriminator]

    # ------------------------------------------------------------------ training
    def on_train_start(self) -> None:
        """Approximate Boundary Learning: initialise the centres once, through the untrained adaptor."""
        if bool(self.model.centers_initialized):
            logger.info("pbas: centres already initialised (e.g. restored from a checkpoint); keeping them.")
            return
        was_training = self.model.training
        self.model.eval()
        try:
            self.model.init_centers(self._center_batches())
        finally:
            self.model.train(was_training)
        # several processes (DDP): every one computed the centres over the whole training set; rank 0's are kept
        broadcast_from_zero(self.model.centers, self.model.centers_initialized)
        logger.info("pbas: initialised %d centres.", self.model.centers.shape[0])

    def frozen_feature_modules(self) -> list[nn.Module]:
        """The backbone, whose maps an attached feature cache serves."""
        return [self.model.feature_extractor]

    def _center_batches(self) -> Iterator[torch.Tensor | list[torch.Tensor]]:
        """Each training batch, pre-processed: its backbone maps when a feature cache serves them, else the images."""
        for batch in self.whole_training_loader():
            dict_batch = isinstance(batch, dict)
            images = self.preprocess(batch["image"] if dict_batch else batch.image)
            paths = batch.get("image_path") if dict_batch else getattr(batch, "image_path", None)
            maps = self.frozen_features(images, paths, self.model.feature_extractor)
            yield images if maps is None else maps

    def training_step(self, batch: Batch, batch_idx: int) -> STEP_OUTPUT:
        """One Adam step of the adaptor and one AdamW step of the discriminator on centre + BCE losses."""
        del batch_idx
        adaptor_opt, discriminator_opt = self.optimizers()
        adaptor_opt.zero_grad()
        discriminator_opt.zero_grad()
        maps = self.frozen_features(batch.image, getattr(batch, "image_path", None), self.model.feature_extractor)
        output = self.model.training_losses(batch.image, maps)
        self.manual_backward(output.loss)
        adaptor_opt.step()
        discriminator_opt.step()
        size = len(batch.image)
        self.log("loss", output.loss.detach(), prog_bar=True, on_step=True, on_epoch=True, batch_size=size)
        self.log_dict({"center_loss": output.center_loss.detach(), "bce_real": output.bce_real.detach(),
                       "bce_fake": output.bce_fake.detach()}, on_step=True, on_epoch=True, batch_size=size)
        return {"loss": output.loss.detach()}


def _positive_or_none(value: Any) -> bool:
    """True for ``None`` or a positive int (not a bool)."""
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0)


def _validate(**values: Any) -> None:
    """Raise ConfigError for settings PBAS cannot use."""
    checks: list[tuple[str, bool, str]] = [
        ("image_size", isinstance(values["image_size"], int) and values["image_size"] >= 32,
         "an integer of at least 32 (288 in the paper; multiples of 32 are safest)"),
        ("pretrain_embed_dimension", _positive_or_none(values["pretrain_embed_dimension"]),
         "a positive integer (1536 in the paper) or null (sized to the backbone)"),
        ("target_embed_dimension", _positive_or_none(values["target_embed_dimension"]),
         "a positive integer (1536 in the paper) or null (equal to pretrain_embed_dimension)"),
        ("patch_size", isinstance(values["patch_size"], int) and values["patch_size"] >= 1
         and values["patch_size"] % 2 == 1, "an odd positive integer (3 in the paper)"),
        ("dsc_hidden", isinstance(values["dsc_hidden"], int) and values["dsc_hidden"] > 0,
         "a positive integer (1024 in the paper)"),
        ("noise_scale", values["noise_scale"] > 0, "> 0 (0.25 in the paper)"),
        ("lr", values["lr"] > 0, "> 0 (1e-4 in the paper)"),
        ("dsc_lr", values["dsc_lr"] > 0, "> 0 (2e-4 in the paper)"),
        ("weight_decay", values["weight_decay"] >= 0, ">= 0 (1e-5 in the paper)"),
        ("center_momentum", 0 <= values["center_momentum"] < 1, "in [0, 1) (0.9 in the paper)"),
        ("smoothing_sigma", values["smoothing_sigma"] >= 0, ">= 0 (4 in the paper; 0 turns smoothing off)"),
        *schedule_checks(values),
    ]
    check_settings("pbas", values, checks)
