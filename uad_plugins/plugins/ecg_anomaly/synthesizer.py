"""``plugin:ecg_anomaly``: local ECG anomalies (amplitude scaling, baseline wander, noise burst, beat dropout,
ectopic-like widened complex) with point masks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from uad_plugins.errors import ConfigError
from uad_plugins.synth.base import Synthesizer

__all__ = ["KINDS", "EcgAnomalySynthesizer", "ecg_anomaly"]

KINDS = ("amplitude", "baseline", "noise", "dropout", "ectopic")
_HINT = "See 'uad plugins show ecg_anomaly' for the defaults."


def _pair(name: str, value: Sequence[float] | float, low_bound: float, high_bound: float = math.inf
          ) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        value = (value, value)
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"ecg_anomaly: {name} must be a pair [low, high], got {value!r}.", hint=_HINT) from None
    if not (math.isfinite(low) and math.isfinite(high)) or not low_bound <= low <= high <= high_bound:
        raise ConfigError(f"ecg_anomaly: {name} must satisfy {low_bound:g} <= low <= high"
                          f"{'' if math.isinf(high_bound) else f' <= {high_bound:g}'}, got {list(value)}.", hint=_HINT)
    return low, high


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def _taper(length: int, ramp: float = 0.15) -> torch.Tensor:
    """1 inside, raised-cosine ramps of ``ramp * length`` samples at both ends (no steps at the region edges)."""
    n = max(1, round(length * ramp))
    w = torch.ones(length)
    if length >= 2 * n + 1:
        edge = 0.5 - 0.5 * torch.cos(torch.linspace(0, math.pi, n + 2)[1:-1])
        w[:n] = edge
        w[-n:] = edge.flip(0)
    return w


class EcgAnomalySynthesizer(Synthesizer):
    """Perturb one contiguous region of an ECG window ``[K, Q]`` on a random subset of leads.

    Each call picks one kind from ``kinds`` (uniformly) and a region of ``region`` x Q samples:

    * ``amplitude``: deviations from the lead's median scaled by a factor from ``amplitude_scale`` or its inverse
      (p = 0.5), with smooth ramps at the region edges;
    * ``baseline``: a slow sinusoid (``baseline_cycles`` cycles over the region, amplitude ``baseline_amplitude`` x
      the lead's standard deviation) under a raised-cosine window;
    * ``noise``: Gaussian noise of ``noise_std`` x the lead's standard deviation;
    * ``dropout``: the region centred on the largest beat (the sample farthest from the median) is replaced by a
      straight line between its ends plus 2 % noise: a dropped beat;
    * ``ectopic``: the region centred on the largest beat is time-stretched around that beat by a factor from
      ``ectopic_widen`` (a wider complex), scaled by ``ectopic_gain`` and inverted with probability
      ``ectopic_invert``, with smooth ramps at the region edges: a beat shaped like a ventricular ectopic one
      (wide, often discordant), the morphology change that beat-level ECG anomaly detection looks for.

    Every lead is affected with probability ``lead_probability`` (at least one). The mask is 1 on the region of the
    affected leads. A draw that changes the region by less than ``min_change`` x the lead's standard deviation (on
    average) is redrawn, up to ``MAX_TRIES`` times; the largest change is kept. All randomness comes from torch's
    global RNG, so ``synth(x, seed=s)`` is reproducible.

    Args:
        kinds: subset of ``amplitude``, ``baseline``, ``noise``, ``dropout``, ``ectopic``.
        region: region length as a fraction of the window, ``0 < low <= high <= 1``.
        amplitude_scale: scaling factor range (>= 1; its inverse is used half of the time).
        baseline_amplitude: wander amplitude in lead standard deviations.
        baseline_cycles: sinusoid cycles over the region.
        noise_std: noise standard deviation in lead standard deviations.
        lead_probability: chance that each lead is affected (at least one always is).
        min_change: minimum mean absolute change over the region, in lead standard deviations.
        ectopic_widen: ectopic: time-stretch factor range (>= 1).
        ectopic_gain: ectopic: amplitude factor range (> 0) on deviations from the median.
        ectopic_invert: ectopic: chance that the complex is inverted.
    """

    modality = "signal"
    MAX_TRIES = 10

    def __init__(self, kinds: Sequence[str] = KINDS, region: Sequence[float] = (0.1, 0.4),
                 amplitude_scale: Sequence[float] = (1.5, 3.0), baseline_amplitude: Sequence[float] = (0.5, 1.5),
                 baseline_cycles: Sequence[float] = (0.5, 2.0), noise_std: Sequence[float] = (0.2, 0.6),
                 lead_probability: float = 0.5, min_change: float = 0.05,
                 ectopic_widen: Sequence[float] = (1.5, 2.5), ectopic_gain: Sequence[float] = (1.5, 3.0),
                 ectopic_invert: float = 0.5) -> None:
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        unknown = sorted(set(kinds) - set(KINDS))
        if not kinds or unknown:
            raise ConfigError(f"ecg_anomaly: unknown or no kinds {unknown or kinds}.",
                              hint=f"Choose among {', '.join(KINDS)}.")
        self.kinds = tuple(dict.fromkeys(kinds))
        self.region = _pair("region", region, 1e-6, 1.0)
        self.amplitude_scale = _pair("amplitude_scale", amplitude_scale, 1.0)
        self.baseline_amplitude = _pair("baseline_amplitude", baseline_amplitude, 0.0)
        self.baseline_cycles = _pair("baseline_cycles", baseline_cycles, 0.0)
        self.noise_std = _pair("noise_std", noise_std, 0.0)
        if not 0.0 <= float(lead_probability) <= 1.0:
            raise ConfigError(f"ecg_anomaly: lead_probability must be in [0, 1], got {lead_probability}.", hint=_HINT)
        self.lead_probability = float(lead_probability)
        if float(min_change) < 0:
            raise ConfigError(f"ecg_anomaly: min_change must be >= 0, got {min_change}.", hint=_HINT)
        self.min_change = float(min_change)
        self.ectopic_widen = _pair("ectopic_widen", ectopic_widen, 1.0)
        self.ectopic_gain = _pair("ectopic_gain", ectopic_gain, 1e-6)
        if not 0.0 <= float(ectopic_invert) <= 1.0:
            raise ConfigError(f"ecg_anomaly: ectopic_invert must be in [0, 1], got {ectopic_invert}.", hint=_HINT)
        self.ectopic_invert = float(ectopic_invert)

    # ------------------------------------------------------------------ one draw
    def _leads(self, k: int) -> torch.Tensor:
        chosen = torch.rand(k) < self.lead_probability
        if not bool(chosen.any()):
            chosen[int(torch.randint(0, k, ()))] = True
        return chosen

    def _span(self, q: int, centre: int | None = None) -> tuple[int, int]:
        length = min(q, max(2, round(_uniform(*self.region) * q)))
        if centre is None:
            start = int(torch.randint(0, q - length + 1, ()))
        else:
            start = min(max(centre - length // 2, 0), q - length)
        return start, start + length

    def _draw(self, x: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        k, q = x.shape
        leads = self._leads(k)
        median = x.median(dim=-1, keepdim=True).values
        std = x.std(dim=-1, keepdim=True).clamp_min(1e-6)
        centre = None
        if kind in ("dropout", "ectopic"):
            centre = int((x - median).abs()[leads].sum(0).argmax())
            start, end = self._span(q, centre)
        else:
            start, end = self._span(q)
        n = end - start
        out = x.clone()
        seg = x[:, start:end]
        if kind == "amplitude":
            factor = _uniform(*self.amplitude_scale)
            factor = factor if float(torch.rand(())) < 0.5 else 1.0 / factor
            gain = 1.0 + (factor - 1.0) * _taper(n)
            new = median + (seg - median) * gain
        elif kind == "baseline":
            cycles = _uniform(*self.baseline_cycles)
            phase = _uniform(0.0, 2 * math.pi)
            t = torch.arange(n, dtype=x.dtype) / max(n - 1, 1)
            wave = torch.sin(2 * math.pi * cycles * t + phase) * torch.hann_window(n, periodic=False, dtype=x.dtype)
            new = seg + _uniform(*self.baseline_amplitude) * std * wave
        elif kind == "noise":
            new = seg + _uniform(*self.noise_std) * std * torch.randn(k, n, dtype=x.dtype) * _taper(n, 0.05)
        elif kind == "dropout":
            t = torch.linspace(0.0, 1.0, n, dtype=x.dtype)
            line = seg[:, :1] + (seg[:, -1:] - seg[:, :1]) * t
            new = line + 0.02 * std * torch.randn(k, n, dtype=x.dtype)
        else:  # ectopic
            assert centre is not None
            new = seg + (self._ectopic(x, median, centre, start, end) - seg) * _taper(n)
        out[:, start:end] = torch.where(leads[:, None], new, seg)
        mask = torch.zeros(k, q, dtype=x.dtype)
        mask[leads, start:end] = 1.0
        return out, mask

    def _ectopic(self, x: torch.Tensor, median: torch.Tensor, centre: int, start: int, end: int) -> torch.Tensor:
        """Samples ``start:end`` of ``x`` stretched in time around ``centre``, scaled and maybe inverted."""
        widen = _uniform(*self.ectopic_widen)
        gain = _uniform(*self.ectopic_gain)
        sign = -1.0 if float(torch.rand(())) < self.ectopic_invert else 1.0
        source = centre + (torch.arange(start, end, dtype=x.dtype) - centre) / widen  # within [start, end)
        left = source.floor().long().clamp(0, x.shape[-1] - 1)
        right = (left + 1).clamp(max=x.shape[-1] - 1)
        frac = source - left.to(x.dtype)
        stretched = x[:, left] * (1.0 - frac) + x[:, right] * frac
        return median + sign * gain * (stretched - median)

    def synthesize(self, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Perturb ``sample`` ``[K, Q]`` (or each window of ``[B, K, Q]``); return ``(signal, mask)`` of that shape."""
        if sample.ndim == 3:
            pairs = [self.synthesize(item) for item in sample]
            return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
        if sample.ndim == 1:
            out, mask = self.synthesize(sample[None])
            return out[0], mask[0]
        if sample.ndim != 2 or sample.shape[-1] < 4:
            raise ConfigError(f"ecg_anomaly expects a signal [K, Q] (or [B, K, Q]) with Q >= 4, got shape "
                              f"{tuple(sample.shape)}.")
        x = sample.detach().float()
        if not bool(torch.isfinite(x).all()):
            raise ConfigError("ecg_anomaly: the input signal has NaN or infinite values.")
        kind = self.kinds[int(torch.randint(0, len(self.kinds), ()))]
        std = x.std(dim=-1, keepdim=True).clamp_min(1e-6)
        best: tuple[float, torch.Tensor, torch.Tensor] | None = None
        for _ in range(self.MAX_TRIES):
            out, mask = self._draw(x, kind)
            change = float(((out - x).abs() / std)[mask > 0].mean())
            if best is None or change > best[0]:
                best = (change, out, mask)
            if change >= self.min_change:
                break
        assert best is not None
        return best[1].to(sample.dtype), best[2]

    def __repr__(self) -> str:
        return (f"EcgAnomalySynthesizer(kinds={list(self.kinds)}, region={list(self.region)}, "
                f"amplitude_scale={list(self.amplitude_scale)}, baseline_amplitude={list(self.baseline_amplitude)}, "
                f"baseline_cycles={list(self.baseline_cycles)}, noise_std={list(self.noise_std)}, "
                f"lead_probability={self.lead_probability}, min_change={self.min_change}, "
                f"ectopic_widen={list(self.ectopic_widen)}, ectopic_gain={list(self.ectopic_gain)}, "
                f"ectopic_invert={self.ectopic_invert})")


def ecg_anomaly(signal: torch.Tensor, seed: int | None = None, **options: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Functional form: ``signal, mask = ecg_anomaly(x, seed=0, kinds=["dropout"])``."""
    return EcgAnomalySynthesizer(**options)(signal, seed=seed)  # type: ignore[arg-type]
