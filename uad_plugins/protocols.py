"""What the core reads from components it did not build: the data modalities and the optional attributes.

Standard library only. Models, datamodules, synthesizers and prediction batches are plain anomalib/Lightning/uad
objects; the engine, the exporter and the CLI look for the OPTIONAL attributes below with ``getattr`` and fall back
to image behaviour when they are missing. The :class:`typing.Protocol` classes document those attributes (nothing
has to inherit from them; they are not checked at run time), and :func:`modality_of` is the one place that says
what a component's modality is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, get_args

__all__ = [
    "DEFAULT_MODALITY",
    "MODALITIES",
    "DataModuleExtras",
    "Modality",
    "ModelExtras",
    "PredictionBatchExtras",
    "SynthesizerExtras",
    "modality_of",
]

#: the data a component works on: images ``[3, H, W]``, signals ``[K, Q]``, point clouds ``[N, 3]`` /
#: ``[H, W, 3]``, or feature maps ``[C, H, W]`` inside a model
Modality = Literal["image", "signal", "pointcloud", "feature"]

#: every :data:`Modality`, ``"image"`` (the default) first
MODALITIES: tuple[str, ...] = get_args(Modality)

#: the modality of a component without a ``modality`` attribute (or with ``modality = None``)
DEFAULT_MODALITY: Modality = "image"


def modality_of(obj: Any) -> Modality:
    """The ``modality`` attribute of an instance or class as a string; ``"image"`` when it is absent or ``None``.

    The value is not checked against :data:`MODALITIES`: a plugin may name one the core does not handle, and each
    caller reports that in its own words.
    """
    return str(getattr(obj, "modality", None) or DEFAULT_MODALITY)  # type: ignore[return-value]


class ModelExtras(Protocol):
    """Optional attributes of a model (an anomalib ``AnomalibModule``) that the core reads."""

    #: the data it scores; engine (model/data match, ``data_path`` is images only), export, ``uad predict``, bench
    modality: ClassVar[Modality]
    #: metric references used when none are given; engine (``Engine._metrics_for``)
    default_metrics: ClassVar[Iterable[str | Mapping[str, Any]]]
    #: the input window ``(leads, length)`` of a signal model; export (``export.graph.input_size_of``)
    signal_shape: tuple[int, int]
    #: ``(height, width)`` when the pre-processor has no ``Resize``; export (``export.graph.input_size_of``)
    input_size: tuple[int, int]
    #: ``True`` when training reads only frozen features of unaugmented, pre-processed images, so that a feature
    #: cache may serve them from epoch 2 on; engine (``feature_cache``: a model without it is refused)
    supports_feature_cache: ClassVar[bool]
    #: ``True`` when the model trains in several processes (Lightning's DDP) to the same result as in one (what it
    #: learns without gradients is combined across processes), or a sentence saying why it cannot; absent: a model
    #: that learns by gradients only is let train, one that learns without them is refused; engine
    #: (``uad_plugins.engine.distributed``)
    distributed_training: ClassVar[bool | str]
    #: ``True`` when some training steps leave parameters without a gradient (stages that train different parts),
    #: so that DDP must look for unused parameters (``--trainer.strategy ddp`` becomes Lightning's
    #: ``ddp_find_unused_parameters_true``); engine
    distributed_unused_parameters: ClassVar[bool]

    def configure_visualizer(self) -> Any:
        """The callback that writes heatmaps (anomalib's image visualizer when absent); engine."""
        ...

    def attach_feature_cache(self, cache: Any) -> None:
        """Serve training features from ``cache`` (a ``uad_plugins.components.feature_cache.FeatureCache``, bound
        here to the model's feature signature); ``None`` detaches it. ``UadModule`` implements it; engine (around
        the fit only)."""
        ...


class DataModuleExtras(Protocol):
    """Optional attributes of a datamodule (a Lightning/anomalib datamodule) that the core reads."""

    #: the data it yields; a non-image datamodule sets itself up and checks its own data; engine, bench recipes
    modality: ClassVar[Modality]
    #: dataset name; engine (run records, test data of a Folder dataset)
    name: str
    #: category (``""`` when it has none); engine (run records), data checks
    category: str
    #: synthesizer reference for honest validation when ``--validation_synthesizer`` is unset; engine
    default_validation_synthesizer: ClassVar[str | Mapping[str, Any]]

    def synthetic_validation(self, synthesizer: Any, *, ratio: float = 0.2, seed: int = 0,
                             output_dir: str | Path | None = None) -> dict[str, Any]:
        """Build its own honest validation split from training normals; engine (non-image datamodules)."""
        ...

    def stratified_synthetic_validation(self, synthesizer: Any, *, ratio: float = 0.2, seed: int = 0,
                                        output_dir: str | Path) -> dict[str, Any]:
        """Honest validation held back per category (multi-class datamodules); engine, tried before
        ``synthetic_validation``."""
        ...

    def predict_loader(self, path: str | Path) -> Any:
        """A dataloader over the files at ``path`` read with the checkpoint's data settings; ``uad predict``
        (non-image models)."""
        ...


class SynthesizerExtras(Protocol):
    """Optional attributes of a synthesizer (:class:`uad_plugins.synth.Synthesizer` sets ``modality``)."""

    #: the data it perturbs; engine (must match the datamodule), ``uad synth`` (picks the handler), data checks
    modality: ClassVar[Modality]

    def partial_fit(self, features: Any) -> Any:
        """Add normal feature maps to its statistics (``feature`` synthesizers); HetNet."""
        ...


class PredictionBatchExtras(Protocol):
    """Optional method of a prediction batch (anomalib's ``ImageBatch`` has none)."""

    def prediction_rows(self) -> list[dict[str, Any]]:
        """One JSON-ready row per item; ``uad predict`` (predictions.json/csv of non-image models)."""
        ...
