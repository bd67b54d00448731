"""An optional base class for Lightning models: what the built-in models all do the same way.

Plugin models may derive from anomalib's ``AnomalibModule`` directly; :class:`UadModule` only saves repeating the
common parts (see ``docs/plugins/writing.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch
from anomalib import LearningType
from anomalib.models.components import AnomalibModule
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn

from uad_plugins.components.distributed import world_size

if TYPE_CHECKING:
    from uad_plugins.components.feature_cache import FeatureCache, Features

__all__ = ["UadModule"]

_M = TypeVar("_M", bound="UadModule")


class UadModule(AnomalibModule):
    """An ``AnomalibModule`` that learns from normal images, with the defaults the built-in models share.

    What it gives a subclass (each part can be overridden):

    * :attr:`learning_type`: ``ONE_CLASS``.
    * :attr:`trainer_arguments`: the suggested schedule, ``num_sanity_val_steps: 0`` and, when
      :attr:`gradient_clip_val` is set, ``gradient_clip_val``; any trainer value the user sets wins. The schedule
      is ``max_epochs`` (:attr:`suggested_max_epochs`) and/or ``max_steps`` (:attr:`suggested_max_steps`, optimiser
      steps): with both, training ends at whichever comes first (so a small dataset gets its epochs and a large
      one is capped in steps); with steps only, epochs are unbounded.
    * :meth:`validation_step`: ``self.model(batch.image)`` (a ``NamedTuple`` of predictions) merged into the batch.
    * :meth:`load_from_checkpoint`: :attr:`checkpoint_overrides` (``pretrained=False``) unless passed, so a
      checkpoint's backbone weights are not fetched again before they are replaced.
    * :meth:`preprocessed_images`: the pre-processed images of a dataloader, for passes outside the training loop;
      :meth:`whole_training_loader`: the training batches a statistic taken before training must read in full.
    * the feature-cache protocol (:attr:`supports_feature_cache`, :meth:`attach_feature_cache`,
      :meth:`frozen_features`): a model whose training reads only frozen features of unaugmented images sets
      ``supports_feature_cache = True``, names its frozen modules in :meth:`frozen_feature_modules` and asks
      :meth:`frozen_features` for them in its training passes.

    It has no ``__init__``: a subclass's constructor arguments stay its hyperparameters, as with ``AnomalibModule``.
    """

    #: init args :meth:`load_from_checkpoint` sets unless the caller passes them (the weights come from the checkpoint)
    checkpoint_overrides: ClassVar[Mapping[str, Any]] = MappingProxyType({"pretrained": False})
    #: suggested training length in epochs (usually set from the ``max_epochs`` init arg); ``None``: no epoch bound
    suggested_max_epochs: int | None = None
    #: suggested cap in optimiser steps (usually set from the ``max_steps`` init arg); ``None``: no step bound
    suggested_max_steps: int | None = None
    #: suggested max-norm gradient clipping; ``None`` suggests none
    gradient_clip_val: float | None = None
    #: training reads only the outputs of :meth:`frozen_feature_modules` on unaugmented, pre-processed images, so a
    #: :class:`~uad_plugins.components.feature_cache.FeatureCache` may serve them (``uad fit --feature_cache``)
    supports_feature_cache: ClassVar[bool] = False
    _feature_cache: FeatureCache | None = None

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """Suggested trainer settings; any value the user sets wins."""
        arguments: dict[str, Any] = {"num_sanity_val_steps": 0}
        if self.suggested_max_steps is not None:
            arguments["max_steps"] = self.suggested_max_steps
            arguments["max_epochs"] = -1 if self.suggested_max_epochs is None else self.suggested_max_epochs
        elif self.suggested_max_epochs is not None:
            arguments["max_epochs"] = self.suggested_max_epochs
        if self.gradient_clip_val is not None:
            arguments["gradient_clip_val"] = self.gradient_clip_val
        return arguments

    @property
    def learning_type(self) -> LearningType:
        """The model learns from normal images only (anomalies, if any, are synthesized)."""
        return LearningType.ONE_CLASS

    def validation_step(self, batch: Any, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Predictions merged into the batch (for thresholds, normalisation and metrics)."""
        del args, kwargs
        return batch.update(**self.model(batch.image)._asdict())

    def preprocessed_images(self, loader: Iterable[Any]) -> Iterator[torch.Tensor]:
        """The images of ``loader``'s batches on this module's device, through the pre-processor's transform (the
        ``PreProcessor`` only transforms batches inside the Lightning loops)."""
        for batch in loader:
            yield self.preprocess(batch["image"] if isinstance(batch, dict) else batch.image)

    def whole_training_loader(self) -> Iterable[Any]:
        """The training loader for a pass that must see every training image (centres, prompt banks taken before
        training): the trainer's own, except under DDP, where that holds only this process's share and the
        datamodule's whole loader is read instead (each process then takes rank 0's result)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if world_size() > 1 and datamodule is not None:
            return datamodule.train_dataloader()
        return self.trainer.train_dataloader

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` on this module's device, through the pre-processor's transform when there is one."""
        transform = getattr(self.pre_processor, "transform", None) if self.pre_processor is not None else None
        images = images.to(self.device)
        return transform(images) if transform is not None else images

    # ------------------------------------------------------------------ feature cache
    def frozen_feature_modules(self) -> Sequence[nn.Module]:
        """The frozen modules whose outputs the feature cache serves (their class, structure and weights, with the
        pre-processor's transform, make the cache's feature signature). Models that support a cache override it."""
        raise NotImplementedError(f"{type(self).__name__} does not support a feature cache.")

    def attach_feature_cache(self, cache: FeatureCache | None) -> None:
        """Let :meth:`frozen_features` serve training features from ``cache`` (bound here to this model's feature
        signature); ``None`` detaches it."""
        if cache is not None:
            from uad_plugins.components.feature_cache import feature_signature

            transform = getattr(self.pre_processor, "transform", None) if self.pre_processor is not None else None
            cls = type(self)
            cache.bind(feature_signature(f"{cls.__module__}.{cls.__qualname__}", transform,
                                         modules=self.frozen_feature_modules()))
        self._feature_cache = cache

    def frozen_features(self, images: torch.Tensor, paths: Sequence[str] | None,
                        compute: Callable[[torch.Tensor], Features]) -> Features | None:
        """The frozen features of the pre-processed ``images`` (``compute(images)``, without gradients) from the
        attached feature cache, by the files in ``paths``; ``None`` when no cache is attached or the trainer is
        not training (validation, test, predict and export always compute): the caller computes them itself."""
        cache = self._feature_cache
        trainer = self._trainer
        if cache is None or trainer is None or not trainer.training:
            return None
        with torch.no_grad():
            return cache.features(images, paths, compute)

    @classmethod
    def load_from_checkpoint(cls: type[_M], checkpoint_path: str | Path, map_location: Any = None,
                             hparams_file: str | Path | None = None, strict: bool | None = None,
                             weights_only: bool = True, **kwargs: Any) -> _M:
        """Load a trained model; :attr:`checkpoint_overrides` apply unless passed (the backbone weights come from
        the checkpoint, so none are fetched again)."""
        for key, value in cls.checkpoint_overrides.items():
            kwargs.setdefault(key, value)
        return super().load_from_checkpoint(checkpoint_path, map_location=map_location,  # type: ignore[return-value]
                                            hparams_file=hparams_file, strict=strict, weights_only=weights_only,
                                            **kwargs)
