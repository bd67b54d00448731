"""The Lightning side of ``plugin:example``."""

from __future__ import annotations

from typing import Any

import torch
from anomalib import LearningType
from anomalib.metrics import Evaluator
from anomalib.models.components import AnomalibModule
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from torch import nn
from torchvision.transforms import v2

from uad_example.torch_model import AutoencoderNet
from uad_plugins.errors import ConfigError


class ExampleAutoencoder(AnomalibModule):
    """Convolutional autoencoder trained with an MSE reconstruction loss on normal images.

    Args:
        image_size: square input side (multiple of 8).
        width: channels of the first encoder stage.
        lr: Adam learning rate.
    """

    def __init__(self, image_size: int = 128, width: int = 16, lr: float = 1e-3,
                 pre_processor: nn.Module | bool = True, post_processor: nn.Module | bool = True,
                 evaluator: Evaluator | bool = True, visualizer: Visualizer | bool = False) -> None:
        if image_size % 8 or image_size < 16:
            raise ConfigError(f"example: image_size must be a multiple of 8 and at least 16, got {image_size}.")
        if width < 1:
            raise ConfigError(f"example: width must be positive, got {width}.")
        if pre_processor is True:
            pre_processor = PreProcessor(transform=v2.Compose([
                v2.Resize((image_size, image_size), antialias=True),
                v2.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])]))
        super().__init__(pre_processor=pre_processor, post_processor=post_processor, evaluator=evaluator,
                         visualizer=visualizer)
        self.lr = lr
        self.model = AutoencoderNet(width)

    def training_step(self, batch: Any, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        loss = nn.functional.mse_loss(self.model(batch.image), batch.image)
        self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return {"loss": loss}

    def validation_step(self, batch: Any, *args: Any, **kwargs: Any) -> Any:
        return batch.update(**self.model(batch.image)._asdict())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.model.parameters(), lr=self.lr)

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        return {"num_sanity_val_steps": 0, "max_epochs": 20}

    @property
    def learning_type(self) -> LearningType:
        return LearningType.ONE_CLASS
