"""The parity gate: the exported graph must score like the eager model on the same samples.

FP32 and FP16 bundles are compared output by output (normalised score, label, normalised map). INT8 changes the
numbers by design, so it is judged on quality instead: image AUROC (and pixel AUROC where masks exist) on the
validation samples may drop at most ``max_metric_drop`` against the eager model; for signal models the same
budget applies to sample AUROC (and point AUROC where point masks exist).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from uad_plugins.protocols import modality_of

__all__ = ["BUDGET_METRICS", "TOLERANCES", "ParityReport", "auroc", "compare_outputs", "raw_outputs", "run_compiled",
           "run_eager"]

#: max-abs tolerances of the output comparison (normalised units), per precision
TOLERANCES = {"fp32": {"score": 1e-3, "map": 1e-2}, "fp16": {"score": 1e-2, "map": 5e-2}}
#: names of the INT8 budget's (sample-level, map-level) AUROC per modality
BUDGET_METRICS = {"image": ("image_AUROC", "pixel_AUROC"), "signal": ("sample_AUROC", "point_AUROC")}


@dataclass
class ParityReport:
    """What the gate measured and whether the bundle passed."""

    precision: str
    samples: int
    passed: bool
    mode: str  # outputs | metrics
    tolerances: dict[str, float] = field(default_factory=dict)
    max_score_diff: float | None = None
    max_map_diff: float | None = None
    label_agreement: float | None = None
    borderline_labels: int = 0
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    per_sample: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    #: INT8: how the model was quantized (strategy, operations kept in floating point, seconds)
    quantization: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> dict[str, Any]:
        data = self.to_dict()
        data.pop("per_sample")
        return data

    def explain(self) -> str:
        lines = [f"parity gate ({self.precision}, {self.samples} samples) failed:"]
        lines += [f"  - {failure}" for failure in self.failures]
        return "\n".join(lines)


def run_eager(model: Any, images: torch.Tensor, batch_size: int = 8) -> dict[str, np.ndarray]:
    """The eager model's full forward (pre-processing, model, post-processing), as numpy.

    Maps come back as the bundle returns them: ``[N, 1, H, W]`` for images, ``[N, K, Q]`` for signal models.
    """
    outs: dict[str, list[np.ndarray]] = {"pred_score": [], "pred_label": [], "anomaly_map": [], "pred_mask": []}
    rank = 3 if modality_of(model) == "signal" else 4
    model.eval()
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            result = model(images[start:start + batch_size])
            amap = result.anomaly_map if result.anomaly_map.ndim == rank else result.anomaly_map.unsqueeze(1)
            mask = result.pred_mask if result.pred_mask.ndim == rank else result.pred_mask.unsqueeze(1)
            outs["pred_score"].append(result.pred_score.reshape(-1).numpy())
            outs["pred_label"].append(result.pred_label.reshape(-1).numpy())
            outs["anomaly_map"].append(amap.numpy())
            outs["pred_mask"].append(mask.numpy())
    return {k: np.concatenate(v) for k, v in outs.items()}


def run_compiled(compiled: Any, images: torch.Tensor, batch_size: int = 8) -> dict[str, np.ndarray]:
    """An OpenVINO compiled model's outputs by name, as numpy.

    Inputs are copied into the request (``share_inputs=False``): with OpenVINO's default shared mode the request
    keeps ``images``' memory as its input tensor after the call, and a later inference on another request of the
    same compiled model can write into it (seen with OpenVINO 2026.4 on dynamic-batch graphs: it silently changed
    one validation image between the FP32 and the INT8 measurement of the gate)."""
    outs: dict[str, list[np.ndarray]] = {}
    for start in range(0, images.shape[0], batch_size):
        result = compiled(images[start:start + batch_size].numpy(), share_inputs=False)
        for port in compiled.outputs:
            outs.setdefault(port.get_any_name(), []).append(np.asarray(result[port]))
    return {k: np.concatenate(v) for k, v in outs.items()}


def compare_outputs(precision: str, eager: dict[str, np.ndarray], exported: dict[str, np.ndarray],
                    names: list[str], threshold: float = 0.5) -> ParityReport:
    """Output-by-output comparison with the precision's tolerances (``threshold``: the normalised one)."""
    tol = TOLERANCES[precision]
    score_diff = np.abs(eager["pred_score"] - exported["pred_score"])
    map_diff = np.abs(eager["anomaly_map"] - exported["anomaly_map"]).reshape(len(score_diff), -1).max(axis=1)
    labels_equal = eager["pred_label"].astype(bool) == exported["pred_label"].astype(bool)
    report = ParityReport(precision=precision, samples=len(score_diff), passed=True, mode="outputs",
                          tolerances=dict(tol), max_score_diff=float(score_diff.max()),
                          max_map_diff=float(map_diff.max()), label_agreement=float(labels_equal.mean()))
    for i, name in enumerate(names):
        report.per_sample.append({"sample": name, "score_eager": float(eager["pred_score"][i]),
                                  "score_exported": float(exported["pred_score"][i]),
                                  "score_diff": float(score_diff[i]), "map_max_diff": float(map_diff[i]),
                                  "label_eager": bool(eager["pred_label"][i]),
                                  "label_exported": bool(exported["pred_label"][i])})
    if report.max_score_diff > tol["score"]:
        worst = int(score_diff.argmax())
        report.failures.append(f"pred_score differs by {report.max_score_diff:.3g} (> {tol['score']:g}) on "
                               f"{names[worst]}")
    if report.max_map_diff > tol["map"]:
        worst = int(map_diff.argmax())
        report.failures.append(f"anomaly_map differs by {report.max_map_diff:.3g} max-abs (> {tol['map']:g}) on "
                               f"{names[worst]}")
    # A label may flip only for a score within the tolerance of the threshold (the validation sample that
    # defines an F1-adaptive threshold sits exactly on it); any other disagreement is a failure.
    borderline = np.abs(eager["pred_score"] - threshold) <= tol["score"]
    real = ~labels_equal & ~borderline
    report.borderline_labels = int((~labels_equal & borderline).sum())
    if real.any():
        bad = [names[i] for i in np.flatnonzero(real)][:5]
        report.failures.append(f"labels disagree on {int(real.sum())} sample(s) away from the threshold: "
                               f"{', '.join(bad)}")
    report.passed = not report.failures
    return report


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (ties counted half); NaN when only one class is present."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # average ranks for ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    for start, count in zip(first, counts):
        ranks[order[start:start + count]] = start + (count + 1) / 2.0
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def raw_outputs(compiled: Any, samples: Any, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A compiled graph's raw outputs ``(raw_score, raw_map)`` on ``samples`` (a :class:`Samples`)."""
    out = run_compiled(compiled, samples.images, batch_size)
    return out["raw_score"], out["raw_map"]
