"""``plugin:onenip``: the Lightning module of OneNIP (one normal image prompt, multi-class)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from anomalib.data import Batch
from anomalib.metrics import Evaluator
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn

from uad_plugins.components.backbones import backbone_normalization
from uad_plugins.components.distributed import all_reduce_range, broadcast_from_zero
from uad_plugins.components.lightning import UadModule
from uad_plugins.components.optim import adamw_with_one_decay
from uad_plugins.components.preprocessing import backbone_pre_processor
from uad_plugins.components.settings import check_settings, positive_int, transformer_checks
from uad_plugins.plugins.onenip.torch_model import COMPONENT_MAPS, OnenipModel

__all__ = ["Onenip"]

logger = logging.getLogger(__name__)


class Onenip(UadModule):
    """OneNIP (Gao, ECCV 2024): reconstruct and restore a target's features from one normal image prompt, with a
    supervised refiner trained on synthetic anomalies.

    Args:
        backbone, layers, pretrained, image_size: frozen multi-scale backbone (as ``plugin:uniad``; the paper uses
            timm ``tf_efficientnet_b4.aa_in1k``, the default ``tf_efficientnet_lite0`` has offline weights).
        hidden_dim, num_heads, num_encoder_layers, num_decoder_layers, dim_feedforward, dropout: 256, 8, 4, 4,
            1024, 0.1.
        neighbor_size: neighbour-mask window (7 at 224 px; must be smaller than the token grid; 0 = no mask).
        jitter_scale, jitter_prob: feature jittering of every stream in training (20, 1.0).
        refiner_width: refiner channels (128).
        prompt_bank_size: normal training images kept as prompts (64); prompt_topk: training prompts are drawn
            among the ``k`` nearest bank entries (3).
        dice_weight: weight of the Dice term (0.5); dice_factor_two: standard Dice instead of OneNIP's variant.
        synthesizer: synthesizer plugin reference (or ``{"class_path": ..., "init_args": ...}``) making the
            training anomalies; ``plugin:perlin`` by default.
        pool_size: average-pooling kernel of the image score (16).
        score_map: the map scored and returned: ``"fused"`` (the paper's ``0.5 rec + 0.5 fusion_scale ref``, the
            default), ``"refiner"`` (the refiner's probability alone) or ``"reconstruction"`` (UniAD's error map
            alone). An inference switch: ``uad bench`` entries score one checkpoint three ways with
            ``overrides: {score_map: refiner}`` (docs/models/onenip.md: validation data prefers the refiner on our
            short CPU schedules; the default stays the paper's).
        lr, weight_decay, lr_decay_at, gradient_clip_val, max_epochs, max_steps: as ``plugin:uniad``.
        pre_processor, post_processor, evaluator, visualizer: anomalib components (``True`` builds the default).
    """
    distributed_training = True  # gradients, plus a prompt bank and fusion scale combined over processes

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
        synthesizer: str | Mapping[str, Any] = "plugin:perlin",
        pool_size: int = 16,
        score_map: str = "fused",
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
        _validate(image_size=image_size, hidden_dim=hidden_dim, num_heads=num_heads,
                  num_encoder_layers=num_encoder_layers, num_decoder_layers=num_decoder_layers,
                  dim_feedforward=dim_feedforward, dropout=dropout, neighbor_size=neighbor_size,
                  jitter_scale=jitter_scale, jitter_prob=jitter_prob, refiner_width=refiner_width,
                  prompt_bank_size=prompt_bank_size, prompt_topk=prompt_topk, dice_weight=dice_weight,
                  pool_size=pool_size, score_map=score_map, lr=lr, weight_decay=weight_decay, lr_decay_at=lr_decay_at,
                  gradient_clip_val=gradient_clip_val, max_epochs=max_epochs, max_steps=max_steps)
        if pre_processor is True:
            pre_processor = self.configure_pre_processor(image_size, backbone=backbone)
        super().__init__(pre_processor=pre_processor, post_processor=post_processor, evaluator=evaluator,
                         visualizer=visualizer)
        from uad_plugins.factory import create_synthesizer

        self.synthesizer = create_synthesizer(synthesizer)
        mean, std = backbone_normalization(backbone)
        self._mean = torch.tensor(mean).view(1, 3, 1, 1)
        self._std = torch.tensor(std).view(1, 3, 1, 1)
        self.image_size = int(image_size)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.lr_decay_at = float(lr_decay_at)
        self.gradient_clip_val = float(gradient_clip_val)
        self.suggested_max_epochs = None if max_epochs is None else int(max_epochs)
        self.suggested_max_steps = None if max_steps is None else int(max_steps)
        self.model: OnenipModel = OnenipModel(
            backbone=backbone, layers=list(layers), pretrained=pretrained, image_size=self.image_size,
            hidden_dim=hidden_dim, num_heads=num_heads, num_encoder_layers=num_encoder_layers,
            num_decoder_layers=num_decoder_layers, dim_feedforward=dim_feedforward, dropout=dropout,
            neighbor_size=neighbor_size, jitter_scale=jitter_scale, jitter_prob=jitter_prob,
            refiner_width=refiner_width, prompt_bank_size=prompt_bank_size, prompt_topk=prompt_topk,
            dice_weight=dice_weight, dice_factor_two=dice_factor_two, pool_size=pool_size, score_map=score_map,
        )

    # ------------------------------------------------------------------ anomalib configuration
    @classmethod
    def configure_pre_processor(cls, image_size: int | tuple[int, int] | None = None,
                                backbone: str = "tf_efficientnet_lite0") -> PreProcessor:
        """Resize to ``image_size`` (224 by default) and normalise as the backbone expects (no augmentation)."""
        return backbone_pre_processor(image_size, backbone, default_size=224)

    def configure_optimizers(self) -> Any:
        """AdamW(1e-4, wd 1e-4) on the trainable parameters; x0.1 at ``lr_decay_at`` of ``max_epochs``."""
        return adamw_with_one_decay(self, [p for p in self.model.parameters() if p.requires_grad], self.lr,
                                    self.weight_decay, self.lr_decay_at)

    # ------------------------------------------------------------------ helpers
    def synthesize(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Synthetic anomalies for normalised images: undo the normalisation, call the synthesizer on [0, 1]
        images, normalise again. Returns ``(anomalous [B, 3, H, W], mask [B, 1, H, W])``."""
        mean, std = self._mean.to(images), self._std.to(images)
        raw = (images * std + mean).clamp(0, 1)
        out, mask = self.synthesizer(raw.detach().cpu())
        out = out.to(images)
        mask = (mask.to(images) > 0.5).to(images.dtype)
        if mask.ndim == 3:
            mask = mask.unsqueeze(1)
        return (out - mean) / std, mask

    # ------------------------------------------------------------------ training
    def on_train_start(self) -> None:
        """Fill the prompt bank once from the training normals (a bank restored from a checkpoint is kept)."""
        if bool(self.model.prompt_bank_filled):
            logger.info("onenip: prompt bank already filled (restored); keeping it.")
            return
        loader = self.whole_training_loader()
        dataset = getattr(loader, "dataset", None)
        total = len(dataset) if dataset is not None and hasattr(dataset, "__len__") else None
        with torch.no_grad():
            kept = self.model.build_prompt_bank(self.preprocessed_images(loader), total)
        # several processes (DDP): rank 0's bank is everyone's
        broadcast_from_zero(self.model.prompt_bank, self.model.prompt_keys, self.model.prompt_bank_filled)
        logger.info("onenip: prompt bank holds %d distinct training images.", kept)

    def training_step(self, batch: Batch, batch_idx: int) -> STEP_OUTPUT:
        """Reconstruction + restoration MSE and 0.5 x Dice of the refiner on synthetic anomalies."""
        del batch_idx
        images = batch.image
        anomalous, mask = self.synthesize(images)
        output = self.model.training_losses(images, anomalous, mask)
        size = images.shape[0]
        self.log("loss", output.loss.detach(), prog_bar=True, on_step=True, on_epoch=True, batch_size=size)
        self.log_dict({"mse": output.mse.detach(), "dice": output.dice.detach()}, on_step=True, on_epoch=True,
                      batch_size=size)
        return {"loss": output.loss}

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        """Fusion statistics from the validation images while fitting (never the test set, never outside fitting:
        a checkpoint's fusion scale is part of the model): ``fusion_scale`` becomes ``(max + min) / 2`` of the
        reconstruction maps over all validation images."""
        if self.trainer.state.fn != TrainerFn.FITTING:
            return
        loaders = self.trainer.val_dataloaders
        if loaders is None:
            return
        loaders = loaders if isinstance(loaders, list | tuple) else [loaders]
        low, high = float("inf"), float("-inf")
        with torch.no_grad():
            for loader in loaders:
                for images in self.preprocessed_images(loader):
                    rec_map, _, _ = self.model.maps(images)
                    low, high = min(low, float(rec_map.min())), max(high, float(rec_map.max()))
        low, high = all_reduce_range(low, high)  # DDP: each process saw a share of the validation set
        if high >= low:
            self.model.fusion_scale.fill_((high + low) / 2)
            logger.info("onenip: fusion scale %.4g from validation maps (min %.4g, max %.4g).",
                        (high + low) / 2, low, high)


def _validate(**values: Any) -> None:
    """Raise ConfigError for OneNIP settings that cannot work."""
    checks = transformer_checks(values)
    checks[10:10] = [
        ("refiner_width", positive_int(values["refiner_width"]), "a positive integer (128)"),
        ("prompt_bank_size", positive_int(values["prompt_bank_size"]), "a positive integer (64)"),
        ("prompt_topk", positive_int(values["prompt_topk"]), "a positive integer (3)"),
        ("dice_weight", values["dice_weight"] >= 0, ">= 0 (0.5)"),
        ("pool_size", positive_int(values["pool_size"]) and values["pool_size"] <= values["image_size"],
         "a positive integer <= image_size (16)"),
        ("score_map", values["score_map"] in COMPONENT_MAPS, f"one of {', '.join(COMPONENT_MAPS)} (fused)"),
    ]
    check_settings("onenip", values, checks)
