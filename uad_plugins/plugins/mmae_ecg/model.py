"""``plugin:mmae_ecg``: the Lightning module of MMAE-ECG (multi-scale masked autoencoder for ECG anomalies).

A ``UadModule`` (``uad_plugins.components.lightning``, an ``AnomalibModule``) whose image-only parts are switched
off: no pre-processor (the signal datamodules normalise), a signal evaluator (``plugin:signal_auroc``,
``plugin:signal_ap``, ``plugin:signal_point_auroc``), a signal visualizer (signal + anomaly-score curve PNGs), and
steps that read ``batch.signal [B, K, Q]``. anomalib's ``PostProcessor`` is kept: it works on
``pred_score``/``anomaly_map`` of any shape.
"""

from __future__ import annotations

import logging
import math
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

__all__ = ["MmaeEcg", "resolve_sizes"]

_DEFAULT_METRICS = ("plugin:signal_auroc", "plugin:signal_ap", "plugin:signal_point_auroc")
#: the settings that depend on the window (checked once it is known)
_WINDOW_SIZES = ("n_leads", "length", "segment_len", "local_segment_len", "local_segments", "inference_masks")
_MODEL_ARGS = ("n_leads", "length", "segment_len", "local_segment_len", "local_segments", "embed_dim", "depth",
               "num_heads", "mlp_ratio", "decoder_dim", "decoder_heads", "mask_ratio", "inference_masks",
               "norm_eps", "score_space", "score_reduction", "score_top_fraction", "local_weight", "stats_weight",
               "single_scale")

logger = logging.getLogger(__name__)


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
        ("warmup_steps", isinstance(v["warmup_steps"], int) and v["warmup_steps"] >= 0, "an integer >= 0"),
        ("max_steps", positive_int(v["max_steps"]), "a positive integer (optimiser steps, 3000)"),
        ("max_epochs", v["max_epochs"] is None or positive_int(v["max_epochs"]),
         "a positive integer, or null to suggest max_steps instead"),
    ]


def _closest(candidates: list[int], target: float) -> int | None:
    """The candidate closest to ``target`` (ties: the smaller one); ``None`` when there is none."""
    return min(candidates, key=lambda c: (abs(c - target), c)) if candidates else None


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def resolve_sizes(length: int, segment_len: int | None, local_segment_len: int | None, local_segments: int | None,
                  inference_masks: int) -> tuple[dict[str, int], list[str]]:
    """Segment sizes that fit a window of ``length`` samples, keeping those given; returns them and the names of the
    ones chosen here.

    Rules (sizes left ``None``): ``segment_len`` S is the divisor of Q closest to 16 samples that gives at least 4
    segments, an even share for the ``inference_masks`` M (T = Q/S a multiple of M); ``local_segments`` delta is the
    multiple of M dividing T closest to T/4 (four local windows tile the signal: 4 x M masked passes);
    ``local_segment_len`` is the divisor of S closest to S/4. Sizes that cannot fit are left for the checks to name.
    """
    chosen: list[str] = []
    m = inference_masks if positive_int(inference_masks) else 2
    s = segment_len
    if s is None and positive_int(length):
        fits = [d for d in _divisors(length) if length // d >= 4 and (length // d) % m == 0]
        s = _closest(fits, 16) or max(1, length // 2)
        chosen.append("segment_len")
    t = length // s if positive_int(length) and positive_int(s) else 0
    delta = local_segments
    if delta is None:
        fits = [d for d in _divisors(t) if d >= 2 and d % m == 0] if t else []
        delta = _closest(fits, t / 4) or 2
        chosen.append("local_segments")
    sl = local_segment_len
    if sl is None:
        sl = _closest([d for d in _divisors(s) if d < s] or [s], s / 4) if positive_int(s) else 1
        chosen.append("local_segment_len")
    return {"segment_len": int(s), "local_segment_len": int(sl), "local_segments": int(delta)}, chosen


class MmaeEcg(UadModule):
    """MMAE-ECG (Zhou et al., arXiv 2502.05494 / PLOS ONE 2026): a lightweight multi-scale masked autoencoder;
    the anomaly score is the reconstruction error of masked segments under complementary masks.

    Args:
        n_leads, length: leads K and samples Q per window; ``None`` (default) takes them from the training data
            when fitting (1 x 256 for MIT-BIH beats, 1 x 3600 for 10-s MIT-BIH windows, 12 x 4800 for PTB-XL).
        segment_len: samples per global segment S (Q / S segments); ``None``: chosen to fit Q (see
            :func:`resolve_sizes`, logged).
        local_segment_len: samples per local token (the finer scale; divides S); ``None``: chosen.
        local_segments: delta, global segments per local window; ``None``: chosen.
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
        single_scale: the ablation without the local scale (only global segments are encoded, reconstructed and
            scored; ``local_segments`` and ``local_segment_len`` are then unused).
        lr, weight_decay, warmup_steps: AdamW, linear warm-up over ``warmup_steps`` optimiser steps, then cosine
            decay to 0 at the trainer's last step.
        max_steps: suggested training length in optimiser steps (a ``--trainer.max_steps`` or
            ``--trainer.max_epochs`` you set wins).
        max_epochs: suggest this many epochs instead of ``max_steps`` (``None``: suggest steps).
        pre_processor: kept for the CLI signature; signals are normalised by the datamodule (``False``).
        post_processor, evaluator, visualizer: anomalib components (``True`` builds the signal defaults).
    """
    distributed_training = True  # learns by gradients only

    #: the data kind, read by the uad engine
    modality: ClassVar[str] = "signal"
    #: metrics computed by ``uad fit``/``uad test`` when no ``--metrics`` are given
    default_metrics: ClassVar[tuple[str, ...]] = _DEFAULT_METRICS
    #: no backbone weights to skip when loading a checkpoint
    checkpoint_overrides: ClassVar[Mapping[str, Any]] = MappingProxyType({})

    def __init__(
        self,
        n_leads: int | None = None,
        length: int | None = None,
        segment_len: int | None = None,
        local_segment_len: int | None = None,
        local_segments: int | None = None,
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
        single_scale: bool = False,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_steps: int = 0,
        max_steps: int = 3000,
        max_epochs: int | None = None,
        pre_processor: nn.Module | bool = False,
        post_processor: nn.Module | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = False,
    ) -> None:
        settings = dict(n_leads=n_leads, length=length, segment_len=segment_len,
                        local_segment_len=local_segment_len, local_segments=local_segments, embed_dim=embed_dim,
                        depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, decoder_dim=decoder_dim,
                        decoder_heads=decoder_heads, mask_ratio=mask_ratio, inference_masks=inference_masks,
                        norm_eps=norm_eps, score_space=score_space, score_reduction=score_reduction,
                        score_top_fraction=score_top_fraction, local_weight=local_weight, stats_weight=stats_weight,
                        single_scale=single_scale)
        schedule = dict(lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps, max_steps=max_steps,
                        max_epochs=max_epochs)
        # everything but the window-dependent sizes is checked now (those once the window is known)
        probe = {**settings, **schedule, "n_leads": n_leads or 1, "length": length or 256}
        probe.update(resolve_sizes(probe["length"], segment_len, local_segment_len, local_segments,
                                   inference_masks)[0])
        check_settings("mmae_ecg", {**probe, **{k: v for k, v in settings.items() if v is not None}},
                       [c for c in _checks(probe) if length is not None or c[0] not in _WINDOW_SIZES])
        super().__init__(pre_processor=pre_processor, post_processor=post_processor, evaluator=evaluator,
                         visualizer=visualizer)
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.warmup_steps = int(warmup_steps)
        self.max_steps = int(max_steps)
        # the schedule suggested: epochs instead of steps when max_epochs is given
        self.suggested_max_epochs = None if max_epochs is None else int(max_epochs)
        self.suggested_max_steps = self.max_steps if max_epochs is None else None
        self._settings = settings
        self.model: MmaeEcgModel | None = None  # type: ignore[assignment]
        if n_leads is not None and length is not None:
            self._build(int(n_leads), int(length))

    def _build(self, n_leads: int, length: int) -> None:
        """Resolve the window-dependent sizes, check every setting and build the network (logged when chosen)."""
        given = self._settings
        sizes, chosen = resolve_sizes(length, given["segment_len"], given["local_segment_len"],
                                      given["local_segments"], given["inference_masks"])
        values = {**given, "n_leads": n_leads, "length": length, **sizes, "lr": self.lr,
                  "weight_decay": self.weight_decay, "warmup_steps": self.warmup_steps,
                  "max_steps": self.max_steps, "max_epochs": self.suggested_max_epochs}
        check_settings("mmae_ecg", values, _checks(values))
        if chosen:
            logger.info("mmae_ecg: window %d lead(s) x %d samples; chose %s (set them to change).", n_leads, length,
                        ", ".join(f"{k}={sizes[k]}" for k in chosen))
        self.model = MmaeEcgModel(**{k: v for k, v in values.items() if k in _MODEL_ARGS})
        # the checkpoint records the sizes used, so loading it rebuilds the same network
        self.hparams.update({k: values[k] for k in ("n_leads", "length", *sizes)})

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
        """``(K, Q)`` the model takes (known once built: from the init args, else from the training data)."""
        if self.model is None:
            raise DataError("mmae_ecg takes its window shape from the training data; it has not seen any yet.",
                            hint="Fit it on a datamodule, or give --model.n_leads and --model.length.")
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
        if shape is not None and self.model is None:
            self._build(int(shape[0]), int(shape[1]))
        if shape is not None:
            self._check_shape(shape, f"the data ({type(datamodule).__name__})")

    def _signal(self, batch: Any) -> torch.Tensor:
        signal = getattr(batch, "signal", None)
        if signal is None:
            raise DataError(f"mmae_ecg takes signal batches (SignalBatch), got {type(batch).__name__}.",
                            hint="Use a signal datamodule: MitBihBeats, PtbXl or SignalFolder.")
        if self.model is None:
            self._build(int(signal.shape[-2]), int(signal.shape[-1]))
        self._check_shape(signal.shape, "a batch")
        return signal

    # ------------------------------------------------------------------ steps
    def configure_optimizers(self) -> Any:
        """AdamW, linear warm-up over ``warmup_steps``, then cosine decay to 0 at the trainer's last step."""
        if self.model is None:
            raise DataError("mmae_ecg has no network yet: its window shape comes from the data.",
                            hint="Fit it with a datamodule, or give --model.n_leads and --model.length.")
        optimizer = optim.AdamW(self.model.parameters(), lr=self.lr, betas=(0.9, 0.95), weight_decay=self.weight_decay)
        trainer = getattr(self, "_trainer", None)
        try:
            total = int(trainer.estimated_stepping_batches) if trainer is not None else 0
        except Exception:  # noqa: BLE001 - no estimate (no loader yet, infinite schedule): constant rate
            total = 0
        if total < 1 or total > 10**9:
            return optimizer
        warmup = min(self.warmup_steps, total - 1)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            return 0.5 * (1.0 + math.cos(math.pi * progress))

        scheduler = optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

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
