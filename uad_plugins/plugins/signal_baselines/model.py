"""``plugin:signal_mean_distance``, ``plugin:signal_std``, ``plugin:signal_nearest``: trivial signal baselines.

They learn nothing: one pass over the training windows keeps their mean (and, for the nearest-window distance, the
windows themselves). They exist to be benched beside signal models: a model that does not beat them has not shown
that it learned anything about the signal. ``UadModule``s with the image-only parts switched off, as MMAE-ECG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import torch
from anomalib.metrics import Evaluator
from anomalib.visualization import Visualizer
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn

from uad_plugins.components.lightning import UadModule
from uad_plugins.components.settings import check_settings, positive_int
from uad_plugins.errors import DataError
from uad_plugins.plugins.signal_baselines.torch_model import SignalBaselineModel

__all__ = ["MeanWindowDistance", "NearestWindowDistance", "SignalBaseline", "WindowStd"]

_DEFAULT_METRICS = ("plugin:signal_auroc", "plugin:signal_ap", "plugin:signal_point_auroc")


class SignalBaseline(UadModule):
    """Base of the trivial signal baselines; a subclass sets :attr:`kind`.

    Args:
        n_leads, length: leads K and samples Q per window; ``None`` (default) takes them from the training data.
        bank_size: the nearest-window distance keeps at most this many training windows (a seeded subset);
            ignored by the other baselines.
        seed: seed of that subset.
        pre_processor: kept for the CLI signature; signals are normalised by the datamodule (``False``).
        post_processor, evaluator, visualizer: anomalib components (``True`` builds the signal defaults).
    """
    distributed_training = ("it keeps statistics or a bank of training windows collected in one pass, and under DDP "
                            "each process would collect its own share only")

    #: the data kind, read by the uad engine
    modality: ClassVar[str] = "signal"
    #: metrics computed by ``uad fit``/``uad test`` when no ``--metrics`` are given
    default_metrics: ClassVar[tuple[str, ...]] = _DEFAULT_METRICS
    #: no backbone weights to skip when loading a checkpoint
    checkpoint_overrides: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    #: one pass over the training data fits the statistics
    suggested_max_epochs = 1
    #: which statistic scores a window (``mean_distance``, ``std`` or ``nearest``)
    kind: ClassVar[str] = "mean_distance"

    def __init__(self, n_leads: int | None = None, length: int | None = None, bank_size: int = 20000, seed: int = 0,
                 pre_processor: nn.Module | bool = False, post_processor: nn.Module | bool = True,
                 evaluator: Evaluator | bool = True, visualizer: Visualizer | bool = False) -> None:
        values = {"n_leads": n_leads, "length": length, "bank_size": bank_size, "seed": seed}
        check_settings(self.kind, values, [
            ("n_leads", n_leads is None or positive_int(n_leads), "a positive integer or null (from the data)"),
            ("length", length is None or positive_int(length), "a positive integer or null (from the data)"),
            ("bank_size", positive_int(bank_size), "a positive integer (20000)"),
            ("seed", isinstance(seed, int), "an integer"),
        ])
        super().__init__(pre_processor=pre_processor, post_processor=post_processor, evaluator=evaluator,
                         visualizer=visualizer)
        self.n_leads, self.length = n_leads, length
        self.bank_size, self.seed = int(bank_size), int(seed)
        self.model = SignalBaselineModel(self.kind)
        self._collected: list[torch.Tensor] = []

    # ------------------------------------------------------------------ anomalib components
    @classmethod
    def configure_pre_processor(cls, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """No pre-processor: the signal datamodules normalise the windows."""
        del args, kwargs

    @staticmethod
    def configure_evaluator() -> Evaluator:
        """Sample-level AUROC and AP, point-level AUROC (the signal metric plugins)."""
        from uad_plugins.factory import create_metric

        return Evaluator(test_metrics=[create_metric(ref) for ref in _DEFAULT_METRICS])

    @classmethod
    def configure_visualizer(cls) -> Visualizer:
        """Signal + anomaly-score curve PNGs (what the uad engine writes as heatmaps)."""
        from uad_plugins.data.signals.visualize import SignalVisualizer

        return SignalVisualizer()

    def configure_optimizers(self) -> None:
        """Nothing is optimised."""

    @property
    def signal_shape(self) -> tuple[int, int]:
        """``(K, Q)`` the model takes: the fitted windows', else the init args'."""
        if self.model.fitted:
            k, q = self.model.mean.shape
            return int(k), int(q)
        if self.n_leads is None or self.length is None:
            raise DataError(f"{self.kind}: the window shape is taken from the training data; fit it first.",
                            hint="Fit the model, or give --model.n_leads and --model.length.")
        return int(self.n_leads), int(self.length)

    # ------------------------------------------------------------------ data checks
    def _check_shape(self, shape: Sequence[int], where: str) -> None:
        k, q = int(shape[-2]), int(shape[-1])
        want = (self.n_leads, self.length) if not self.model.fitted else self.signal_shape
        if (want[0] is not None and k != want[0]) or (want[1] is not None and q != want[1]):
            raise DataError(f"{self.kind} was built for {want[0]} lead(s) x {want[1]} samples, but {where} has "
                            f"{k} x {q}.", hint="Give data of the model's shape, or fit a new model.")

    def setup(self, stage: str) -> None:
        """Check the datamodule's window shape against the model before any step runs."""
        del stage
        trainer = getattr(self, "_trainer", None)
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        shape = getattr(datamodule, "signal_shape", None) if datamodule is not None else None
        if shape is not None:
            self._check_shape(shape, f"the data ({type(datamodule).__name__})")

    def _signal(self, batch: Any) -> torch.Tensor:
        signal = getattr(batch, "signal", None)
        if signal is None:
            raise DataError(f"{self.kind} takes signal batches (SignalBatch), got {type(batch).__name__}.",
                            hint="Use a signal datamodule: MitBihWindows, MitBihBeats, PtbXl or SignalFolder.")
        self._check_shape(signal.shape, "a batch")
        return signal

    # ------------------------------------------------------------------ fitting
    def on_train_epoch_start(self) -> None:
        self._collected = []

    def training_step(self, batch: Any, batch_idx: int) -> STEP_OUTPUT:
        """Collect the training windows (no gradient)."""
        del batch_idx
        self._collected.append(self._signal(batch).detach().cpu())
        return None

    def _finish_fit(self) -> None:
        if not self._collected:
            return
        windows = torch.cat(self._collected)
        self._collected = []
        if self.kind == "nearest" and len(windows) > self.bank_size:
            pick = np.sort(np.random.default_rng(self.seed).choice(len(windows), self.bank_size, replace=False))
            mean = windows.mean(0)
            windows = windows[torch.from_numpy(pick)]
            self.model.fit(windows)
            self.model.mean = mean.to(self.model.mean.device)
        else:
            self.model.fit(windows)
        self.model.to(self.device)

    def on_validation_start(self) -> None:
        self._finish_fit()

    def on_train_end(self) -> None:
        self._finish_fit()

    # ------------------------------------------------------------------ steps
    def _predict(self, batch: Any) -> Any:
        self._finish_fit()
        signal = self._signal(batch)
        if not self.model.fitted:
            if self.kind != "std":
                raise DataError(f"{self.kind} has not seen training windows yet.", hint="Fit it first.")
            self.model.fit(signal[:1])  # the std baseline needs no data; keep the window shape
        out = self.model(signal)
        return batch.update(pred_score=out.pred_score, anomaly_map=out.anomaly_map)

    def validation_step(self, batch: Any, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        del args, kwargs
        return self._predict(batch)

    def test_step(self, batch: Any, batch_idx: int, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        del batch_idx, args, kwargs
        return self._predict(batch)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> STEP_OUTPUT:
        del batch_idx, dataloader_idx
        return self._predict(batch)


class MeanWindowDistance(SignalBaseline):
    """Trivial baseline: squared distance of a window to the mean training window (per point and its mean)."""

    kind: ClassVar[str] = "mean_distance"


class WindowStd(SignalBaseline):
    """Trivial baseline: the window's own standard deviation (per lead, averaged); map: squared deviation."""

    kind: ClassVar[str] = "std"


class NearestWindowDistance(SignalBaseline):
    """Trivial baseline: mean squared distance to the nearest training window (1-NN); map: difference to it."""

    kind: ClassVar[str] = "nearest"
