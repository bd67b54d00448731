"""``plugin:hetnet``: the Lightning module of HetNet (heterogeneous teachers, noise-fusion distillation)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from anomalib.data import Batch
from anomalib.metrics import Evaluator
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn, optim

from uad_plugins.components.lightning import UadModule
from uad_plugins.components.preprocessing import backbone_pre_processor
from uad_plugins.components.settings import check_settings, positive_int, schedule_checks
from uad_plugins.plugins.hetnet.torch_model import SCORE_STUDENTS, VARIANTS, HetNetModel

__all__ = ["HetNet"]

logger = logging.getLogger(__name__)


class HetNet(UadModule):
    """HetNet (Yu et al., IROS 2025), provisional: a frozen CNN and a frozen ViT teacher, adaptive local-global
    fusion, local multivariate Gaussian feature noise, reconstruction and denoising students.

    The paper published no code or hyperparameters; what is the paper's and what is our reading is listed in the
    plugin's README.

    Args:
        variant: ``hetnet`` (CNN + ViT teachers, the paper's), ``cnn_only`` (no ViT teacher: ALGF without its
            global branch, MHF, both students) or ``rd4ad`` (RD4AD-style single-teacher reverse distillation with
            the same CNN teacher: local fusion, one embedding, one student). The ViT settings are unused without
            ``hetnet``. Noise off in any variant: ``denoise_weight: 0`` (with ``score_students: sr``).
        backbone: CNN teacher (timm). The default ``tf_efficientnet_lite0`` has offline ImageNet weights; the
            paper's CNN is not named (RD4AD's ``wide_resnet50_2`` is our guess for the paper-scale config).
        layers: CNN levels, shallow to deep (``blocks.1/2/4`` = strides 4/8/16 for Lite0; ``layer1/2/3`` for ResNets).
        pretrained: CNN weights: ``True`` (ImageNet), ``False`` (random) or a local weights file.
        vit_backbone: ViT teacher (timm ``VisionTransformer``), default ``vit_tiny_patch16_224``.
        vit_layers: ViT blocks whose patch tokens form the global feature (0-based).
        vit_pretrained: ViT weights: ``False`` (random, the offline default), ``True`` (timm hub) or a local file.
        image_size: square input side (a multiple of the ViT patch size).
        fusion_dim: channels of the ALGF output (MHF makes three times as many).
        embed_dim: channels of each student's one-class embedding.
        denoise_weight: weight of the denoising term (0 turns the noise off: nothing fitted or sampled).
        noise_synthesizer: the feature-noise synthesizer plugin (``plugin:gaussian_feature_noise``).
        noise_args: its options (over its packaged defaults), e.g. ``{covariance: diagonal}``.
        score_students: ``both`` (mean of the two students' maps), ``sr`` or ``sd``.
        smoothing_sigma: Gaussian sigma in pixels on the anomaly map (4, RD4AD's).
        lr: Adam learning rate (RD4AD's 0.005, betas (0.5, 0.999)).
        weight_decay: Adam weight decay.
        max_epochs: suggested training length in epochs (20).
        max_steps: suggested cap in optimiser steps (300, ours): training ends at whichever bound comes first
            (``null`` drops one); any ``--trainer.max_epochs``/``--trainer.max_steps`` you set voids both.
        pre_processor, post_processor, evaluator, visualizer: anomalib components (``True`` builds the default).
    """

    #: training reads only the frozen teachers' features of unaugmented images (``uad fit --feature_cache``)
    supports_feature_cache = True
    distributed_training = True  # learns by gradients only (the students; the teachers are frozen)
    #: both teachers' weights come from a checkpoint
    checkpoint_overrides: ClassVar[Mapping[str, Any]] = MappingProxyType({"pretrained": False,
                                                                          "vit_pretrained": False})

    def __init__(
        self,
        variant: str = "hetnet",
        backbone: str = "tf_efficientnet_lite0",
        layers: Sequence[str] = ("blocks.1", "blocks.2", "blocks.4"),
        pretrained: bool | str = True,
        vit_backbone: str = "vit_tiny_patch16_224",
        vit_layers: Sequence[int] = (5, 11),
        vit_pretrained: bool | str = False,
        image_size: int = 224,
        fusion_dim: int = 128,
        embed_dim: int = 256,
        denoise_weight: float = 1.0,
        noise_synthesizer: str = "plugin:gaussian_feature_noise",
        noise_args: dict[str, Any] | None = None,
        score_students: str = "both",
        smoothing_sigma: float = 4.0,
        lr: float = 0.005,
        weight_decay: float = 0.0,
        max_epochs: int | None = 20,
        max_steps: int | None = 300,
        pre_processor: nn.Module | bool = True,
        post_processor: nn.Module | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = False,
    ) -> None:
        if isinstance(layers, str):
            layers = [layers]
        if isinstance(vit_layers, int) and not isinstance(vit_layers, bool):
            vit_layers = [vit_layers]
        _validate(variant=variant, layers=layers, vit_layers=vit_layers, image_size=image_size, fusion_dim=fusion_dim,
                  embed_dim=embed_dim, denoise_weight=denoise_weight, noise_synthesizer=noise_synthesizer,
                  noise_args=noise_args, score_students=score_students, smoothing_sigma=smoothing_sigma, lr=lr,
                  weight_decay=weight_decay, max_epochs=max_epochs, max_steps=max_steps)
        if pre_processor is True:
            pre_processor = self.configure_pre_processor(image_size, backbone=backbone)
        super().__init__(pre_processor=pre_processor, post_processor=post_processor, evaluator=evaluator,
                         visualizer=visualizer)
        self.image_size = int(image_size)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.suggested_max_epochs = None if max_epochs is None else int(max_epochs)
        self.suggested_max_steps = None if max_steps is None else int(max_steps)
        self.model: HetNetModel = HetNetModel(
            variant=variant, backbone=backbone, layers=list(layers), pretrained=pretrained, vit_backbone=vit_backbone,
            vit_layers=list(vit_layers), vit_pretrained=vit_pretrained, image_size=self.image_size,
            fusion_dim=fusion_dim, embed_dim=embed_dim, denoise_weight=denoise_weight,
            noise_synthesizer=noise_synthesizer, noise_args=noise_args, score_students=score_students,
            smoothing_sigma=smoothing_sigma,
        )

    # ------------------------------------------------------------------ anomalib configuration
    @classmethod
    def configure_pre_processor(cls, image_size: int | tuple[int, int] | None = None,
                                backbone: str = "tf_efficientnet_lite0") -> PreProcessor:
        """Resize to ``image_size`` (224 by default) and normalise as the CNN teacher expects (the ViT teacher
        converts to its own normalisation inside the model)."""
        return backbone_pre_processor(image_size, backbone, default_size=224)

    def configure_optimizers(self) -> optim.Optimizer:
        """Adam(lr, betas (0.5, 0.999)) on fusion, embeddings and students (the teachers are frozen)."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        return optim.Adam(params, lr=self.lr, betas=(0.5, 0.999), weight_decay=self.weight_decay)

    # ------------------------------------------------------------------ training
    def on_train_start(self) -> None:
        """Fit the per-position Gaussian statistics of the CNN levels once (they are not kept in checkpoints); not
        at all when the noise is off (``denoise_weight == 0``)."""
        if not self.model.uses_noise:
            logger.info("hetnet: denoise_weight is 0, so no feature noise is fitted or sampled.")
            return
        if self.model.noise_fitted:
            logger.info("hetnet: noise statistics already fitted; keeping them.")
            return
        self.model.fit_noise(self.preprocessed_images(self.trainer.train_dataloader))
        logger.info("hetnet: fitted the feature-noise statistics of %d CNN levels.", len(self.model.noise))

    def frozen_feature_modules(self) -> list[nn.Module]:
        """The CNN and ViT teachers, whose features an attached feature cache serves (the noise comes after)."""
        return [m for m in (self.model.cnn, self.model.vit) if m is not None]

    def _teacher_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """:meth:`HetNetModel.teachers` as one list (the CNN levels, then the ViT map when there is one)."""
        local, glob = self.model.teachers(images)
        return [*local, glob] if glob is not None else local

    def training_step(self, batch: Batch, batch_idx: int) -> STEP_OUTPUT:
        """Reconstruction (SR) + weighted denoising (SD) distillation losses."""
        del batch_idx
        cached = self.frozen_features(batch.image, getattr(batch, "image_path", None), self._teacher_features)
        levels = len(self.model.layers)
        teachers = None if cached is None else (list(cached[:levels]), cached[levels] if len(cached) > levels else None)
        output = self.model.training_losses(batch.image, teachers)
        size = len(batch.image)
        self.log("loss", output.loss.detach(), prog_bar=True, on_step=True, on_epoch=True, batch_size=size)
        self.log_dict({"sr_loss": output.sr_loss, "sd_loss": output.sd_loss, "noise_fraction": output.noise_fraction},
                      on_step=True, on_epoch=True, batch_size=size)
        return {"loss": output.loss}


def _validate(**values: Any) -> None:
    """Raise ConfigError for settings HetNet cannot use."""
    vit_layers = values["vit_layers"]
    checks: list[tuple[str, bool, str]] = [
        ("variant", values["variant"] in VARIANTS, f"one of {', '.join(VARIANTS)}"),
        ("layers", isinstance(values["layers"], Sequence) and len(values["layers"]) >= 1
         and all(isinstance(x, str) for x in values["layers"]),
         "a non-empty list of CNN feature layer names, shallow to deep (e.g. [blocks.1, blocks.2, blocks.4])"),
        ("vit_layers", isinstance(vit_layers, Sequence) and not isinstance(vit_layers, str) and len(vit_layers) >= 1
         and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in vit_layers)
         and len(set(vit_layers)) == len(vit_layers), "a non-empty list of distinct block indices >= 0 (e.g. [5, 11])"),
        ("image_size", positive_int(values["image_size"]) and values["image_size"] >= 32,
         "an integer >= 32 and a multiple of the ViT patch size (224 or 256)"),
        ("fusion_dim", positive_int(values["fusion_dim"]), "a positive integer (128)"),
        ("embed_dim", positive_int(values["embed_dim"]), "a positive integer (256)"),
        ("denoise_weight", _number(values["denoise_weight"]) and values["denoise_weight"] >= 0, "a number >= 0 (1.0)"),
        ("noise_synthesizer", isinstance(values["noise_synthesizer"], str) and bool(values["noise_synthesizer"]),
         "a synthesizer reference (plugin:gaussian_feature_noise)"),
        ("noise_args", values["noise_args"] is None or isinstance(values["noise_args"], dict),
         "null or a mapping of the noise synthesizer's options (e.g. {covariance: diagonal})"),
        ("score_students", values["score_students"] in SCORE_STUDENTS
         and not (values["variant"] == "rd4ad" and values["score_students"] == "sd"),
         f"one of {', '.join(SCORE_STUDENTS)} (rd4ad has one student: both or sr)"),
        ("smoothing_sigma", _number(values["smoothing_sigma"]) and values["smoothing_sigma"] >= 0,
         ">= 0 (4; 0 turns smoothing off)"),
        ("lr", _number(values["lr"]) and values["lr"] > 0, "> 0 (0.005)"),
        ("weight_decay", _number(values["weight_decay"]) and values["weight_decay"] >= 0, ">= 0 (0)"),
        *schedule_checks(values),
    ]
    check_settings("hetnet", values, checks)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
