"""``plugin:mmae_ecg``: the Lightning module of MMAE-ECG (multi-scale masked autoencoder for ECG anomalies).

A ``UadModule`` (``uad_plugins.components.lightning``, an ``AnomalibModule``) whose image-only parts are switched
off: no pre-processor (the signal datamodules normalise), a signal evaluator (``plugin:signal_auroc``,
``plugin:signal_ap``, ``plugin:signal_point_auroc``), a signal visualizer (signal + anomaly-score curve PNGs), and
steps that read ``batch.signal [B, K, Q]``. anomalib's ``PostProcessor`` is kept: it works on
``pred_score``/``anomaly_map`` of any shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from anomalib.metrics import Evaluator
from anomalib.visualization import Visualizer
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn, optim

from uad_plugins.components.lightning import UadModule
from uad_plugins.components.settings import check_settings, positive_int
from uad_plugins.errors import DataError
from uad_plugins.plugins.mmae_ecg.torch_model import SCORE_REDUCTIONS, SCORE_SPACES, MmaeEcgModel

__all__ = ["MmaeEcg"]

_DEFAULT_METRICS = ("plugin:signal_auroc", "plugin:signal_ap", "plugin:signal_point_auroc")


def _checks(v: dict[str, Any]) -> list[tuple[str, bool, str]]:
    q, s, sl, delta, m = v["length"], v["segment_len"], v["local_segment_len"], v["local_segments"], \
        v["inference_masks"]
    sizes_ok = all(positive_int(v[k]) for k in ("length", "segment_len", "local_segment_len", "local_segments",
                                                 "inference_masks"))
    t = q // s if sizes_ok else 0
    return [
        ("n_leads", positive_int(v["n_leads"]), "a positive integer (1 for MIT-BIH beats, 12 for PTB-XL)"),
        ("length", positive_int(q) and q >= 4, "a positive integer, the window length in samples (256)"),
        ("segment_len", positive_int(s) and sizes_ok and q % s == 0 and q // s >= 2,
         f"a divisor of length={q} giving at least 2 segments (16)"),
        ("local_segment_len", positive_int(sl) and sizes_ok and s % sl == 0,
         f"a divisor of segment_len={s} (4)"),
        ("local_segments", positive_int(delta) and sizes_ok and 2 <= delta <= t and t % delta == 0,
         f"a divisor of the {t} segments, at least 2 (4): the local windows tile the signal at inference"),
        ("inference_masks", positive_int(m) and m >= 2 and sizes_ok and t % m == 0 and delta % m == 0,
         f"at least 2 and a divisor of both the {t} segments and local_segments={delta} (2)"),
        ("mask_ratio", isinstance(v["mask_ratio"], (int, float)) and 0 < v["mask_ratio"] < 1, "in (0, 1) (0.5)"),
        ("embed_dim", positive_int(v["embed_dim"]) and positive_int(v["num_heads"])
         and v["embed_dim"] % v["num_heads"] == 0, "a positive multiple of num_heads"),
        ("num_heads", positive_int(v["num_heads"]), "a positive integer (4)"),
        ("depth", positive_int(v["depth"]), "a positive integer (4)"),
        ("decoder_dim", positive_int(v["decoder_dim"]) and positive_int(v["decoder_heads"])
         and v["decoder_dim"] % v["decoder_heads"] == 0, "a positive multiple of decoder_heads"),
        ("decoder_heads", positive_int(v["decoder_heads"]), "a positive integer (4)"),
        ("mlp_ratio", v["mlp_ratio"] > 0, "> 0 (4.0)"),
        ("norm_eps", v["norm_eps"] > 0, "> 0 (1e-6)"),
        ("score_space", v["score_space"] in SCORE_SPACES, f"one of {', '.join(SCORE_SPACES)}"),
        ("score_reduction", v["score_reduction"] in SCORE_REDUCTIONS, f"one of {', '.join(SCORE_REDUCTIONS)}"),
        ("score_top_fraction", 0 < v["score_top_fraction"] <= 1, "in (0, 1] (0.1)"),
        ("local_weight", v["local_weight"] >= 0, ">= 0 (1.0)"),
        ("stats_weight", v["stats_weight"] > 0 or (v["stats_weight"] == 0 and v["score_space"] == "normalized"),
         "> 0 (1.0); 0 only with score_space=normalized (the signal score needs the statistics head)"),
        ("lr", v["lr"] > 0, "> 0 (1e-3)"),
        ("weight_decay", v["weight_decay"] >= 0, ">= 0 (0.05)"),
        ("warmup_epochs", isinstance(v["warmup_epochs"], int) and v["warmup_epochs"] >= 0, "an integer >= 0"),
        ("max_epochs", positive_int(v["max_epochs"]), "a positive integer"),
    ]


class MmaeEcg(UadModule):
    """MMAE-ECG (Zhou et al., arXiv 2502.05494 / PLOS ONE 2026): a lightweight multi-scale masked autoencoder;
    the anomaly score is the reconstruction error of masked segments under complementary masks.

    Args:
        n_leads, length: leads K and samples Q per window (1 x 256 for MIT-BIH beats; 12 x 4800 for PTB-XL).
        segment_len: samples per global segment S (Q / S segments).
        local_segment_len: samples per local token (the finer scale; divides S).
        local_segments: delta, global segments per local window.
        embed_dim, depth, num_heads, mlp_ratio: the lightweight Transformer encoder (pre-LN).
        decoder_dim, decoder_heads: the one-block decoder.
        mask_ratio: share of segments hidden in training, inside and outside the local window separately.
        inference_masks: M complementary masks at inference (every segment hidden once per mask set).
        norm_eps: epsilon of the per-segment, per-lead target normalisation.
        score_space: ``signal`` (the prediction put back into input units with the predicted segment mean and
            standard deviation) or ``normalized`` (the error of normalised segments, the loss's space).
        score_reduction: ``mean``, ``max`` or ``topk_mean`` of the point map; ``score_top_fraction`` for top-k.
        local_weight: weight of the local-scale loss.
        stats_weight: weight of the segment mean/std loss (our addition; 0 switches it off).
        lr, weight_decay, warmup_epochs: AdamW with linear warm-up then cosine decay over ``max_epochs``.
        max_epochs: suggested training length (a ``--trainer.max_epochs`` you set wins).
        pre_processor: kept for the CLI signature; signals are normalised by the datamodule (``False``).
        post_processor, evaluator, visualizer: anomalib components (``True`` builds the signal defaults).
    """

    #: the data kind, read by the uad engine
    modality: ClassVar[str] = "signal"
    #: metrics computed by ``uad fit``/``uad test`` when no ``--metrics`` are given
    default_metrics: ClassVar[tuple[str, ...]] = _DEFAULT_METRICS
    #: no backbone weights to skip when loading a checkpoint
    checkpoint_overrides: ClassVar[Mapping[str, Any]] = MappingProxyType({})

    def __init__(
        self,
        n_leads: int = 1,
        length: int = 256,
        segment_len: int = 16,
        local_segment_len: int = 4,
        local_segments: int = 4,
        embed_dim: int = 64,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        decoder_dim: int = 64,
        decoder_heads: int = 4,
        mask_ratio: float = 0.5,
        inference_masks: int = 2,
        norm_eps: float = 1e-6,
        score_space: str = "signal",
        score_reduction: str = "mean",
        score_top_fraction: float = 0.1,
        local_weight: float = 1.0,
        stats_weight: float = 1.0,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_epochs: int = 0,
        max_epochs: int = 20,
        pre_processor: nn.Module | bool = False,
        post_processor: nn.Module | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = False,
    ) -> None:
        values = dict(n_leads=n_leads, length=length, segment_len=segment_len, local_segment_len=local_segment_len,
                      local_segments=local_segments, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                      mlp_ratio=mlp_ratio, decoder_dim=decoder_dim, decoder_heads=decoder_heads,
                      mask_ratio=mask_ratio, inference_masks=inference_masks, norm_eps=norm_eps,
                      score_space=score_space, score_reduction=score_reduction,
                      score_top_fraction=score_top_fraction, local_weight=local_weight,
                      stats_weight=stats_weight, lr=lr,
                      weight_decay=weight_decay, warmup_epochs=warmup_epochs, max_epochs=max_epochs)
        check_settings("mmae_ecg", values, _checks(values))
        super().__init__(pre_processor=pre_processor, post_processor=post_processor, evaluator=evaluator,
                         visualizer=visualizer)
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.warmup_epochs = int(warmup_epochs)
        self.suggested_max_epochs = int(max_epochs)
        self.model: MmaeEcgModel = MmaeEcgModel(
            n_leads=n_leads, length=length, segment_len=segment_len, local_segment_len=local_segment_len,
            local_segments=local_segments, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
            mlp_ratio=mlp_ratio, decoder_dim=decoder_dim, decoder_heads=decoder_heads, mask_ratio=mask_ratio,
            inference_masks=inference_masks, norm_eps=norm_eps, score_space=score_space,
            score_reduction=score_reduction, score_top_fraction=score_top_fraction, local_weight=local_weight,
            stats_weight=stats_weight)

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

    @property
    def signal_shape(self) -> tuple[int, int]:
        """``(K, Q)`` the model takes."""
        return self.model.n_leads, self.model.length

    # ------------------------------------------------------------------ data checks
    def _check_shape(self, shape: Sequence[int], where: str) -> None:
        k, q = int(shape[-2]), int(shape[-1])
        if (k, q) != self.signal_shape:
            want_k, want_q = self.signal_shape
            what = f"{k} lead(s)" if k != want_k else f"windows of {q} samples"
            raise DataError(
                f"mmae_ecg was built for {want_k} lead(s) x {want_q} samples, but {where} has {what} "
                f"({k} x {q}).",
                hint=f"Set --model.n_leads {k} --model.length {q} (train a new model), or give data with "
                     f"{want_k} lead(s) and {want_q}-sample windows (e.g. --data.channels, --data.pre/--data.post).")

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
            raise DataError(f"mmae_ecg takes signal batches (SignalBatch), got {type(batch).__name__}.",
                            hint="Use a signal datamodule: MitBihBeats, PtbXl or SignalFolder.")
        self._check_shape(signal.shape, "a batch")
        return signal

    # ------------------------------------------------------------------ steps
    def configure_optimizers(self) -> Any:
        """AdamW, linear warm-up for ``warmup_epochs``, then cosine decay to 0 at ``trainer.max_epochs``."""
        optimizer = optim.AdamW(self.model.parameters(), lr=self.lr, betas=(0.9, 0.95), weight_decay=self.weight_decay)
        trainer = getattr(self, "_trainer", None)
        total = getattr(trainer, "max_epochs", None) if trainer is not None else None
        if not total or total < 1:
            return optimizer
        warmup = min(self.warmup_epochs, total - 1)

        def factor(epoch: int) -> float:
            if epoch < warmup:
                return (epoch + 1) / (warmup + 1)
            progress = (epoch - warmup) / max(total - warmup, 1)
            return 0.5 * (1.0 + torch.cos(torch.tensor(torch.pi * progress)).item())

        scheduler = optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def training_step(self, batch: Any, batch_idx: int) -> STEP_OUTPUT:
        """Masked reconstruction loss of both scales."""
        del batch_idx
        signal = self._signal(batch)
        out = self.model(signal)
        size = signal.shape[0]
        self.log("loss", out.loss.detach(), prog_bar=True, on_step=True, on_epoch=True, batch_size=size)
        self.log("loss_global", out.loss_global, on_step=False, on_epoch=True, batch_size=size)
        self.log("loss_local", out.loss_local, on_step=False, on_epoch=True, batch_size=size)
        self.log("loss_stats", out.loss_stats, on_step=False, on_epoch=True, batch_size=size)
        return {"loss": out.loss}

    def _predict(self, batch: Any) -> Any:
        out = self.model(self._signal(batch))
        return batch.update(pred_score=out.pred_score, anomaly_map=out.anomaly_map)

    def validation_step(self, batch: Any, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Scores and maps merged into the batch (thresholds and normalisation are fitted on them)."""
        del args, kwargs
        return self._predict(batch)

    def test_step(self, batch: Any, batch_idx: int, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        del batch_idx, args, kwargs
        return self._predict(batch)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> STEP_OUTPUT:
        del batch_idx, dataloader_idx
        return self._predict(batch)
