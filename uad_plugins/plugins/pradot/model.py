"""``plugin:pradot``: the Lightning module of PRADOT (prototypes learned by entropic optimal transport)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from anomalib.data import Batch
from anomalib.metrics import Evaluator
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn

from uad_plugins.components.distributed import all_reduce_sum, world_size
from uad_plugins.components.lightning import UadModule
from uad_plugins.components.preprocessing import backbone_pre_processor
from uad_plugins.components.settings import check_settings, positive_int, schedule_checks
from uad_plugins.plugins.pradot.torch_model import VARIANTS, PradotModel

__all__ = ["Pradot"]

logger = logging.getLogger(__name__)


class Pradot(UadModule):
    """PRADOT (Trombetta & Lartizien, 2025): ``num_prototypes`` prototypes per feature-grid position, fitted without
    gradients by entropic optimal transport of each training batch onto them (EMA towards the transported feature
    means); the anomaly map is the transport cost to the nearest prototype.

    Args:
        backbone: frozen timm backbone; default ``tf_efficientnet_lite0``, whose ImageNet weights ship with the
            install. The official code uses ``resnet50`` (timm >= 0.9 resolves it to ``resnet50.a1_in1k``), whose
            weights need the timm hub or a local file (``configs/pradot_mvtec_paper.yaml``).
        layers: feature layers; each gets its own prototype bank(s) (``blocks.4``: 112 channels at stride 16;
            ``layer3`` of ``resnet50``: 1024 channels at stride 16).
        pretrained: ``True`` (ImageNet weights), ``False`` (random init) or a local weights file.
        image_size: square input side (224 -> a 14x14 grid at stride 16).
        num_prototypes: prototypes per grid position, K (16).
        variant: ``"local"`` (spatial weight ``alpha``), ``"global"`` (``alpha = 0``) or ``"ensemble"`` (a global
            and a local bank per layer, maps averaged; with ``layers=[layer2, layer3]`` the paper's 4-model average).
        alpha: weight of the spatial grid cost of the local prototypes, in [0, 1] (0.3).
        reg: entropic regularisation of the Sinkhorn solver, > 0 (0.01).
        num_iterations: at most this many log-domain Sinkhorn iterations per transport (100, the official code's
            ``numItermax``).
        tolerance: stop a transport early once its marginal violation (the share of the mass in the wrong place,
            see :func:`~uad_plugins.plugins.pradot.torch_model.sinkhorn_log`) is at most this; ``0`` runs POT's rule
            as the official code does (``stopThr`` 1e-9, never reached in float32: ``num_iterations`` always).
        ema: prototype momentum in [0, 1): ``p <- ema * p + (1 - ema) * transported mean`` (0.95).
        normalize_per_image: at test time divide each image's cosine cost by its maximum (the official code).
        select_on_validation: keep, per bank, the prototypes with the lowest transport cost on the held-out
            *normal* validation images (the official code's ``val/loss`` checkpointing); ``False`` keeps the last.
        max_epochs: suggested training length in epochs (50 in the official code, batch 64).
        max_steps: suggested cap in optimiser steps (200, ours): training ends at whichever bound comes first
            (``null`` drops one); any ``--trainer.max_epochs``/``--trainer.max_steps`` you set voids both.
        pre_processor, post_processor, evaluator, visualizer: anomalib components (``True`` builds the default).
    """

    #: training reads only the frozen backbone's maps of unaugmented images (``uad fit --feature_cache``)
    supports_feature_cache = True
    #: the prototype updates and the validation-based selection are summed over processes (DDP)
    distributed_training = True

    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        layers: Sequence[str] = ("blocks.4",),
        pretrained: bool | str = True,
        image_size: int = 224,
        num_prototypes: int = 16,
        variant: str = "local",
        alpha: float = 0.3,
        reg: float = 0.01,
        num_iterations: int = 100,
        tolerance: float = 0.0,
        ema: float = 0.95,
        normalize_per_image: bool = True,
        select_on_validation: bool = True,
        max_epochs: int | None = 50,
        max_steps: int | None = 200,
        pre_processor: nn.Module | bool = True,
        post_processor: nn.Module | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = False,
    ) -> None:
        if isinstance(layers, str):
            layers = [layers]
        _validate(image_size=image_size, num_prototypes=num_prototypes, variant=variant, alpha=alpha, reg=reg,
                  num_iterations=num_iterations, tolerance=tolerance, ema=ema, max_epochs=max_epochs,
                  max_steps=max_steps)
        if pre_processor is True:  # the default needs this instance's image size and backbone normalisation
            pre_processor = self.configure_pre_processor(image_size, backbone=backbone)
        super().__init__(pre_processor=pre_processor, post_processor=post_processor, evaluator=evaluator,
                         visualizer=visualizer)
        self.image_size = int(image_size)
        self.select_on_validation = bool(select_on_validation)
        self.suggested_max_epochs = None if max_epochs is None else int(max_epochs)
        self.suggested_max_steps = None if max_steps is None else int(max_steps)
        self.model: PradotModel = PradotModel(
            backbone=backbone, layers=list(layers), pretrained=pretrained, image_size=self.image_size,
            num_prototypes=num_prototypes, variant=variant, alpha=alpha, reg=reg, num_iterations=num_iterations,
            ema=ema, normalize_per_image=normalize_per_image, tolerance=tolerance,
        )
        self._warned_no_normals = False
        # each training step moves the prototypes itself and then counts one (empty) optimiser step, so that the
        # step count and --trainer.max_steps mean what they mean for other models; Lightning's automatic
        # optimisation would need a loss to back-propagate, and refuses a step without one under DDP
        self.automatic_optimization = False

    # ------------------------------------------------------------------ anomalib configuration
    @classmethod
    def configure_pre_processor(cls, image_size: int | tuple[int, int] | None = None,
                                backbone: str = "tf_efficientnet_lite0") -> PreProcessor:
        """Resize to ``image_size`` (224 by default) and normalise as the backbone expects (ImageNet statistics for
        ResNets, 0.5/0.5 for ``tf_efficientnet_lite0``); no augmentation, as in the official code."""
        return backbone_pre_processor(image_size, backbone, default_size=224)

    def configure_optimizers(self) -> None:
        """No optimiser: prototypes move by optimal-transport barycentres and EMA, never by gradients."""
        return None

    # ------------------------------------------------------------------ training
    def _selects_on_validation(self) -> bool:
        trainer = self._trainer
        return self.select_on_validation and trainer is not None and bool(trainer.enable_validation)

    def frozen_feature_modules(self) -> list[nn.Module]:
        """The backbone, whose maps an attached feature cache serves."""
        return [self.model.feature_extractor]

    def training_step(self, batch: Batch, batch_idx: int) -> STEP_OUTPUT:
        """Transport the batch onto the prototypes and move them (EMA). Nothing to back-propagate, so ``None``."""
        del batch_idx
        maps = self.frozen_features(batch.image, getattr(batch, "image_path", None), self.model.feature_extractor)
        output = self.model.training_update(batch.image, maps)
        optimizer = self.optimizers()  # Lightning's stand-in when there is no optimiser: stepping it only counts
        (optimizer[0] if isinstance(optimizer, list) else optimizer).step()
        if not self._selects_on_validation():
            self.model.select_current()
        size = batch.image.shape[0]
        self.log("loss", output.loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=size)
        self.log("sinkhorn_iterations", output.iterations.mean(), on_step=False, on_epoch=True, batch_size=size)
        if len(output.bank_losses) > 1:
            self.log_dict({f"loss_bank{i}": value for i, value in enumerate(output.bank_losses)}, on_step=False,
                          on_epoch=True, batch_size=size)
        return None

    def _held_out_normals(self) -> Iterator[torch.Tensor]:
        """Pre-processed *normal* images of the validation set (held-back training normals; synthetic anomalies and
        anything labelled anomalous are left out). The test set is never read."""
        loaders = self.trainer.val_dataloaders
        if loaders is None:
            return
        if not isinstance(loaders, list | tuple):
            loaders = [loaders]
        limits = list(getattr(self.trainer, "num_val_batches", None) or [])  # honours --trainer.limit_val_batches
        for index, loader in enumerate(loaders):
            limit = limits[index] if index < len(limits) else float("inf")
            for batch_index, batch in enumerate(loader):
                if batch_index >= limit:
                    break
                images = batch["image"] if isinstance(batch, dict) else batch.image
                labels = batch.get("gt_label") if isinstance(batch, dict) else getattr(batch, "gt_label", None)
                if labels is not None:
                    images = images[torch.as_tensor(labels).reshape(-1).cpu() == 0]
                if len(images) == 0:
                    continue
                yield self.preprocess(images)

    def on_validation_epoch_start(self) -> None:
        """Model selection (fitting only): each bank's transport cost on the held-out normal validation images; a
        bank that improves on its best gets its current prototypes selected for inference *before* this
        validation pass predicts, so thresholds are fitted with the prototypes that will be used."""
        trainer = self.trainer
        if not self.select_on_validation or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        total: torch.Tensor | None = None
        count = 0
        for images in self._held_out_normals():
            losses = self.model.transport_losses(images) * len(images)
            total = losses if total is None else total + losses
            count += len(images)
        # data-parallel training: each process validates a share; every process decides on the sums of all
        # (an empty share adds zeros), so all select the same prototypes
        if world_size() > 1:
            shared = torch.zeros(len(self.model.banks), device=self.device) if total is None \
                else total.to(self.device)
            counted = torch.tensor([float(count)], device=self.device)
            all_reduce_sum(shared, counted)
            total, count = (shared, int(counted.item())) if counted.item() > 0 else (None, 0)
        if total is None:
            if not self._warned_no_normals:
                logger.warning("pradot: the validation set has no normal image; using the last prototypes.")
                self._warned_no_normals = True
            self.model.select_current()
            return
        losses = total / count
        changed = self.model.select_improved(losses)
        self.log("val_transport_loss", losses.mean(), prog_bar=True, on_epoch=True, batch_size=count)
        logger.info("pradot: held-out transport cost %s on %d normal images; selected banks: %s.",
                    [round(v, 5) for v in losses.tolist()], count, changed)


def _validate(**values: Any) -> None:
    """Raise ConfigError for settings PRADOT cannot use."""

    def number(value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    checks = [
        ("image_size", positive_int(values["image_size"]) and values["image_size"] >= 32,
         "an integer >= 32 (224 in the paper)"),
        ("num_prototypes", positive_int(values["num_prototypes"]),
         "an integer >= 1: prototypes per grid position (16 in the paper)"),
        ("variant", isinstance(values["variant"], str) and values["variant"] in VARIANTS,
         f"one of {', '.join(VARIANTS)} (local: alpha = 0.3 in the paper; global: alpha = 0; ensemble: both, "
         "maps averaged)"),
        ("alpha", number(values["alpha"]) and 0 <= values["alpha"] <= 1,
         "in [0, 1]: the weight of the spatial cost (0.3 in the paper)"),
        ("reg", number(values["reg"]) and values["reg"] > 0, "> 0: the entropic regularisation (0.01 in the paper)"),
        ("num_iterations", positive_int(values["num_iterations"]),
         "an integer >= 1: Sinkhorn iterations per batch (100 in the paper)"),
        ("tolerance", number(values["tolerance"]) and math.isfinite(values["tolerance"])
         and 0 <= values["tolerance"] < 1,
         "in [0, 1): stop Sinkhorn once the share of misplaced mass is at most this (0 = POT's rule, as the "
         "official code: num_iterations always)"),
        ("ema", number(values["ema"]) and 0 <= values["ema"] < 1,
         "in [0, 1): the prototype momentum (0.95 in the paper)"),
        *schedule_checks(values),
    ]
    check_settings("pradot", values, checks)
