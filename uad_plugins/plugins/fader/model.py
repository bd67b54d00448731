"""``plugin:fader``: the Lightning module of FADeR on the EAR inpainting base."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from anomalib.data import Batch
from anomalib.metrics import Evaluator
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn, optim

from uad_plugins.components.lightning import UadModule
from uad_plugins.components.settings import check_settings, positive_int
from uad_plugins.errors import ConfigError
from uad_plugins.plugins.fader.torch_model import (
    DEFAULT_BACKBONES,
    HINTS,
    MAP_METRICS,
    MASK_SOURCES,
    FaderModel,
    FaderTrainOutput,
    describe,
)

__all__ = ["Fader"]

logger = logging.getLogger(__name__)


class Fader(UadModule):
    """FADeR (Park et al., arXiv 2407.04597, CVPR 2025 VAND workshop) on the EAR base (Park et al., Sci. Rep. 2024).

    EAR excises the most salient patches of each image (one deterministic mask from a frozen network's saliency),
    fills them with a mosaic hint and reconstructs the image with a U-Net; the reconstruction error is the anomaly
    map. FADeR adds two per-patch linear layers whose sigmoid gates attenuate the U-Net's skip connections, trained
    after the base on targets derived from the base's reconstruction error. ``attenuation=False`` is the plain base.

    Training runs in two stages within one fit. Stage 1 trains the base U-Net for ``max_epochs`` epochs, exactly as
    ``attenuation=False`` does (same initialisation, same batches). Stage 2 is the last ``fader_epochs`` epochs: it
    starts with one pass over the training images that measures the frozen base's error on unmasked patches
    (the statistics the gate targets are scaled by), copies the base decoder, and then trains FADeR's layers and the
    decoder copy on synthetically corrupted normal images; the base U-Net is never changed, so ``gates=False``
    scores the same checkpoint as the plain base.

    Stage lengths: left alone, the trainer runs ``max_epochs + ceil(fader_epochs)`` epochs. A ``--trainer.max_epochs
    T`` wins: the FADeR stage stays the last ``fader_epochs`` epochs and the base gets ``T - fader_epochs``.

    Args:
        mask_source: ``"saliency"`` (the default; our offline addition: CNN feature deviation with the
            EfficientNet-Lite0 ImageNet weights) or ``"attention"`` (EAR: a ViT's class-token attention; needs ViT
            weights as a local file or from the hub: with random weights its mask is nearly the same for every image).
        backbone: the mask network; ``None`` = ``vit_small_patch16_224.dino`` (attention) or
            ``tf_efficientnet_lite0`` (saliency).
        layers: feature layers of the saliency backbone (ignored by the attention source).
        pretrained: weights of the mask network: ``True`` (the default: ImageNet weights; Lite0's ship with the
            install, a ViT's need the hub), ``False`` (random) or a local weights file.
        image_size: square input side (256).
        patch_size: mask and attenuation patch side in pixels (a power of two dividing ``image_size``; 16).
        mask_ratio: fraction of patches excised per image (0.25).
        hint: ``"mosaic"`` (EAR) or ``"blank"`` (binary masking).
        mosaic_size: pixelation block of the hint in pixels (8).
        base_channels: U-Net width at full resolution (16; doubles per level).
        depth: U-Net levels (4; ``depth - 1`` skip connections).
        attenuation: ``True`` = FADeR; ``False`` = the plain EAR base.
        attenuation_hidden: hidden width of FADeR's two-layer MLP (64).
        attenuation_weight: weight of the gate-target BCE in the FADeR stage (1.0).
        fader_epochs: length of the FADeR stage in epochs, at the end of the fit (5; a fraction counts batches).
        gates: score with FADeR's gates (``True``) or with the base alone (``False``, the same checkpoint's base);
            an inference switch only: ``uad bench`` model entries set it with ``overrides: {gates: false}``.
        corruption_rate: share of patches given a synthetic defect in the FADeR stage (0.05, ours).
        target_quantile: quantile of the normal base error up to which the gate target stays 1 (0.99, ours).
        anomaly_map: ``"msgms"`` (1 - multi-scale gradient-magnitude similarity) or ``"l2"``.
        smoothing_sigma: Gaussian sigma of the anomaly map in pixels (4; 0 = none).
        lr: Adam learning rate of the U-Net (1e-3: our CPU default for short schedules; RIAD uses 1e-4).
        fader_lr: Adam learning rate of FADeR's layers and the gated decoder copy (1e-3).
        weight_decay: Adam weight decay of both (0).
        max_epochs: suggested length of the base stage (20; ``--trainer.max_epochs`` wins, see above).
        pre_processor, post_processor, evaluator, visualizer: anomalib components (``True`` builds the default).
    """
    distributed_training = True  # gradients in both stages; the FADeR stage's error statistics read all images
    distributed_unused_parameters = True  # the base stage leaves the gates unused, the FADeR stage the base

    def __init__(
        self,
        mask_source: str = "saliency",
        backbone: str | None = None,
        layers: Sequence[str] = ("blocks.2", "blocks.4"),
        pretrained: bool | str = True,
        image_size: int = 256,
        patch_size: int = 16,
        mask_ratio: float = 0.25,
        hint: str = "mosaic",
        mosaic_size: int = 8,
        base_channels: int = 16,
        depth: int = 4,
        attenuation: bool = True,
        attenuation_hidden: int = 64,
        attenuation_weight: float = 1.0,
        fader_epochs: float = 5,
        gates: bool = True,
        corruption_rate: float = 0.05,
        target_quantile: float = 0.99,
        anomaly_map: str = "msgms",
        smoothing_sigma: float = 4.0,
        lr: float = 1e-3,
        fader_lr: float = 1e-3,
        weight_decay: float = 0.0,
        max_epochs: int = 20,
        pre_processor: nn.Module | bool = True,
        post_processor: nn.Module | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = False,
    ) -> None:
        if isinstance(layers, str):
            layers = [layers]
        _validate(mask_source=mask_source, image_size=image_size, patch_size=patch_size, mask_ratio=mask_ratio,
                  hint=hint, mosaic_size=mosaic_size, base_channels=base_channels, depth=depth,
                  attenuation=attenuation, attenuation_hidden=attenuation_hidden,
                  attenuation_weight=attenuation_weight, fader_epochs=fader_epochs, gates=gates,
                  corruption_rate=corruption_rate, target_quantile=target_quantile, anomaly_map=anomaly_map,
                  smoothing_sigma=smoothing_sigma, lr=lr, fader_lr=fader_lr, weight_decay=weight_decay,
                  max_epochs=max_epochs)
        if pre_processor is True:
            pre_processor = self.configure_pre_processor(image_size)
        super().__init__(pre_processor=pre_processor, post_processor=post_processor, evaluator=evaluator,
                         visualizer=visualizer)
        self.image_size = int(image_size)
        self.attenuation = bool(attenuation)
        self.attenuation_weight = float(attenuation_weight)
        self.fader_epochs = float(fader_epochs)
        self.lr = float(lr)
        self.fader_lr = float(fader_lr)
        self.weight_decay = float(weight_decay)
        self.suggested_max_epochs = int(max_epochs) + (math.ceil(self.fader_epochs) if self.attenuation else 0)
        self.model: FaderModel = FaderModel(
            mask_source=mask_source, backbone=backbone or DEFAULT_BACKBONES[mask_source], layers=list(layers),
            pretrained=pretrained, image_size=self.image_size, patch_size=patch_size, mask_ratio=mask_ratio,
            hint=hint, mosaic_size=mosaic_size, base_channels=base_channels, depth=depth, attenuation=attenuation,
            attenuation_hidden=attenuation_hidden, gates=gates, corruption_rate=corruption_rate,
            target_quantile=target_quantile, anomaly_map=anomaly_map, smoothing_sigma=smoothing_sigma,
        )
        self.automatic_optimization = False
        self._fader_start: int | None = None
        logger.info("fader: %s", describe(self.model))

    # ------------------------------------------------------------------ anomalib configuration
    @classmethod
    def configure_pre_processor(cls, image_size: int | tuple[int, int] | None = None) -> PreProcessor:
        """Resize to ``image_size`` (256 by default), values stay in [0, 1]: the U-Net reconstructs pixels; the mask
        network normalises its own copy inside the model."""
        from torchvision.transforms.v2 import Compose, Resize

        if image_size is None:
            size = (256, 256)
        elif isinstance(image_size, int):
            size = (image_size, image_size)
        else:
            size = (int(image_size[0]), int(image_size[1]))
        return PreProcessor(transform=Compose([Resize(size, antialias=True)]))

    def configure_optimizers(self) -> list[optim.Optimizer]:
        """Adam for the base U-Net (stage 1) and, with attenuation, Adam for FADeR's layers and the gated decoder
        copy (stage 2)."""
        optimizers = [optim.Adam(self.model.unet.parameters(), lr=self.lr, weight_decay=self.weight_decay)]
        if self.model.attenuator is not None and self.model.gated_decoder is not None:
            params = [*self.model.attenuator.parameters(), *self.model.gated_decoder.parameters()]
            optimizers.append(optim.Adam(params, lr=self.fader_lr, weight_decay=self.weight_decay))
        return optimizers

    # ------------------------------------------------------------------ the two stages
    def fader_start(self) -> int:
        """Index (over the whole fit) of the first training batch of the FADeR stage: the last ``fader_epochs``
        epochs' batches train FADeR, the ones before train the base."""
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ConfigError("fader: the training length is unbounded, so the FADeR stage cannot be placed.",
                              hint="Set --trainer.max_epochs or --trainer.max_steps.")
        total = int(total)
        per_epoch = max(int(self.trainer.num_training_batches), 1)
        fader = max(round(self.fader_epochs * per_epoch), 1)
        if total - fader < 1:
            raise ConfigError(
                f"fader: the fit has {total} training batches and the FADeR stage takes {fader} "
                f"(fader_epochs={self.fader_epochs:g} x {per_epoch} per epoch): no batch is left for the base.",
                hint="Leave --trainer.max_epochs out (the base then gets --model.max_epochs epochs and FADeR "
                "--model.fader_epochs more), raise it, or lower --model.fader_epochs.")
        return total - fader

    def on_train_start(self) -> None:
        """Place the stage switch (and say where it is)."""
        if self.attenuation:
            self._fader_start = self.fader_start()
            logger.info("fader: batches 0-%d train the EAR base, batches %d-%d train FADeR (base frozen).",
                        self._fader_start - 1, self._fader_start, int(self.trainer.estimated_stepping_batches) - 1)

    def on_train_end(self) -> None:
        """Say so when the fit ended before the FADeR stage (the gates are then never applied)."""
        if self.attenuation and not self.model.ready:
            logger.warning("fader: the fit ended before the FADeR stage; this model scores as the plain base.")

    def stage(self, batch_idx: int) -> str:
        """``"base"`` or ``"fader"`` for this training batch."""
        if not self.attenuation:
            return "base"
        if self._fader_start is None:
            self._fader_start = self.fader_start()
        done = self.current_epoch * int(self.trainer.num_training_batches) + batch_idx
        return "fader" if done >= self._fader_start else "base"

    def _normal_errors(self) -> torch.Tensor:
        """The frozen base's per-patch errors on the unmasked patches of every training image (all normal)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        loader = datamodule.train_dataloader() if datamodule is not None else self.trainer.train_dataloader
        self.model.unet.eval()
        errors = [self.model.unmasked_base_errors(images) for images in self.preprocessed_images(loader)]
        return torch.cat(errors)

    def start_fader_stage(self) -> None:
        """Freeze the base, gather the normal error statistics, copy the decoder (see ``FaderModel.start_fader``)."""
        self.model.unet.eval().requires_grad_(False)
        errors = self._normal_errors()
        self.model.start_fader(errors)
        logger.info("fader: FADeR stage: base error on %d unmasked normal patches: median %.4g, q%g %.4g; "
                    "gate targets fall from 1 to 0 between %.4g and %.4g.", errors.numel(),
                    float(self.model.error_median), self.model.target_quantile * 100, float(self.model.error_high),
                    *(float(v) for v in self.model.target_bounds()))

    def training_step(self, batch: Batch, batch_idx: int) -> STEP_OUTPUT:
        """Stage 1: one Adam step of the U-Net on RIAD's loss. Stage 2: the base frozen (eval-mode BatchNorm, no
        gradients), one Adam step of FADeR's layers and the gated decoder copy on reconstruction loss + weighted
        gate BCE (the first stage-2 batch first runs :meth:`start_fader_stage`)."""
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        stage = self.stage(batch_idx)
        if stage == "base":
            optimizer = optimizers[0]
            self.model.unet.train()
            self.model.unet.requires_grad_(True)
            optimizer.zero_grad()
            output: FaderTrainOutput = self.model.base_losses(batch.image)
        else:
            if not self.model.ready:
                self.start_fader_stage()
            optimizer = optimizers[1]
            self.model.unet.eval()
            self.model.unet.requires_grad_(False)
            optimizer.zero_grad()
            output = self.model.fader_losses(batch.image, self.attenuation_weight)
        self.manual_backward(output.loss)
        optimizer.step()
        size = len(batch.image)
        self.log("loss", output.loss.detach(), prog_bar=True, on_step=True, on_epoch=True, batch_size=size)
        self.log_dict({"reconstruction_loss": output.reconstruction_loss, "stage": float(stage == "fader")},
                      on_step=True, on_epoch=True, batch_size=size)
        if stage == "fader":
            self.log_dict({"attenuation_bce": output.attenuation_bce, "gate_mean": output.gate_mean,
                           "target_mean": output.target_mean}, on_step=True, on_epoch=True, batch_size=size)
        return {"loss": output.loss.detach()}


def _power_of_two(value: Any) -> bool:
    return positive_int(value) and value & (value - 1) == 0


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _validate(**values: Any) -> None:
    """Raise ConfigError for settings FADeR / EAR cannot use."""
    size, depth, patch = values["image_size"], values["depth"], values["patch_size"]
    depth_ok = positive_int(depth) and 2 <= depth <= 7
    size_ok = positive_int(size) and size >= 32
    checks: list[tuple[str, bool, str]] = [
        ("mask_source", values["mask_source"] in MASK_SOURCES,
         "'attention' (EAR: a ViT's class-token attention) or 'saliency' (ours: CNN feature deviation)"),
        ("hint", values["hint"] in HINTS, "'mosaic' (EAR) or 'blank' (binary masking)"),
        ("anomaly_map", values["anomaly_map"] in MAP_METRICS, "'msgms' or 'l2'"),
        ("attenuation", isinstance(values["attenuation"], bool), "true (FADeR) or false (the plain EAR base)"),
        ("depth", depth_ok, "an integer from 2 to 7 (U-Net levels; 4)"),
        ("image_size", size_ok and (not depth_ok or size % 2 ** (depth - 1) == 0),
         f"an integer >= 32 divisible by 2**(depth-1) = {2 ** (depth - 1) if depth_ok else '?'} (256)"),
        ("patch_size", _power_of_two(patch) and (not size_ok or size % patch == 0)
         and (not depth_ok or patch >= 2 ** (depth - 2)) and (not size_ok or patch < size),
         f"a power of two that divides image_size={size}, is smaller than it and is at least the deepest skip "
         f"stride 2**(depth-2) = {2 ** (depth - 2) if depth_ok else '?'} (16)"),
        ("mask_ratio", isinstance(values["mask_ratio"], int | float) and 0 < values["mask_ratio"] < 1,
         "in (0, 1): 0 leaves nothing to reconstruct, 1 masks everything (0.25)"),
        ("mosaic_size", positive_int(values["mosaic_size"]) and (not size_ok or size % values["mosaic_size"] == 0),
         f"a positive integer dividing image_size={size} (8)"),
        ("base_channels", positive_int(values["base_channels"]), "a positive integer (16)"),
        ("attenuation_hidden", positive_int(values["attenuation_hidden"]), "a positive integer (64)"),
        ("attenuation_weight", values["attenuation_weight"] > 0, "> 0 (1.0)"),
        ("fader_epochs", _number(values["fader_epochs"]) and values["fader_epochs"] > 0,
         "> 0: epochs of the FADeR stage after the base (5; a fraction counts batches)"),
        ("gates", isinstance(values["gates"], bool), "true (score with FADeR's gates) or false (the base alone)"),
        ("corruption_rate", isinstance(values["corruption_rate"], int | float) and 0 < values["corruption_rate"] < 1,
         "in (0, 1): the share of patches given a synthetic defect in the FADeR stage (0.05)"),
        ("target_quantile", isinstance(values["target_quantile"], int | float) and 0.5 < values["target_quantile"] < 1,
         "in (0.5, 1): the normal-error quantile up to which a gate target stays 1 (0.99)"),
        ("smoothing_sigma", values["smoothing_sigma"] >= 0, ">= 0 (4; 0 turns smoothing off)"),
        ("lr", values["lr"] > 0, "> 0 (1e-3)"),
        ("fader_lr", values["fader_lr"] > 0, "> 0 (1e-3)"),
        ("weight_decay", values["weight_decay"] >= 0, ">= 0 (0)"),
        ("max_epochs", positive_int(values["max_epochs"]), "a positive integer (20)"),
    ]
    check_settings("fader", values, checks)
