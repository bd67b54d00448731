"""plugin:ecg_anomaly (every kind, determinism, masks, errors), synthesize_signal_files, and the signal metrics
(exact AUROC/AP against scikit-learn, smoothing, crop, missing masks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from uad_plugins import create_metric, create_synthesizer
from uad_plugins.data.signals import SignalBatch, synthetic_ecg_windows
from uad_plugins.errors import ConfigError, DataError
from uad_plugins.plugins.ecg_anomaly.synthesizer import KINDS, ecg_anomaly
from uad_plugins.plugins.signal_metrics.metrics import average_precision, gaussian_smooth_1d, rank_auroc
from uad_plugins.synth.run import synthesize_signal_files

torch.set_num_threads(2)


def beats(n: int = 1, leads: int = 3, length: int = 200) -> torch.Tensor:
    return torch.from_numpy(synthetic_ecg_windows(n, leads, length, seed=3)[0] * 4.0)


# --------------------------------------------------------------------------------------------------- synthesizer
@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_changes_only_the_masked_region(kind: str) -> None:
    synth = create_synthesizer("plugin:ecg_anomaly", kinds=[kind])
    x = beats()[0]
    out, mask = synth(x, seed=4)
    assert out.shape == x.shape and mask.shape == x.shape
    assert set(torch.unique(mask).tolist()) <= {0.0, 1.0} and mask.sum() > 0
    assert torch.equal(out[mask == 0], x[mask == 0])  # nothing outside the mask moves
    lead = int(mask.sum(1).argmax())
    span = mask[lead] > 0
    assert bool(span.any()) and int(span.nonzero().max() - span.nonzero().min() + 1) == int(span.sum())  # contiguous
    assert float((out - x)[mask > 0].abs().mean()) > 0.01
    if kind == "dropout":  # the region holds the beat (largest deviation) and becomes nearly a straight line
        assert bool(span[int((x[lead] - x[lead].median()).abs().argmax())])


def test_ectopic_widens_rescales_and_inverts_the_largest_beat() -> None:
    x = beats(1, 1, 256)[0]
    lead = x[0] - x[0].median()
    peak = int(lead.abs().argmax())

    def width(signal: torch.Tensor) -> int:  # samples above half the peak deviation, around the peak
        dev = (signal - x[0].median()).abs()
        return int((dev > 0.5 * dev.max()).sum())

    wide, mask = ecg_anomaly(x, seed=0, kinds=["ectopic"], region=[0.5, 0.5], ectopic_widen=[2.0, 2.0],
                             ectopic_gain=[1.0, 1.0], ectopic_invert=0.0)
    assert bool(mask[0, peak]) and width(wide[0]) >= 1.6 * width(x[0])  # the complex is about twice as wide
    assert torch.allclose(wide[0, peak], x[0, peak], atol=1e-5)  # the peak itself stays (stretched about it)
    flipped, _ = ecg_anomaly(x, seed=0, kinds=["ectopic"], region=[0.5, 0.5], ectopic_widen=[1.0, 1.0],
                             ectopic_gain=[2.0, 2.0], ectopic_invert=1.0)
    assert torch.allclose(flipped[0, peak] - x[0].median(), -2.0 * lead[peak], atol=1e-4)


def test_deterministic_for_a_seed_and_batched() -> None:
    synth = create_synthesizer("plugin:ecg_anomaly")
    x = beats(4)
    a, ma = synth(x, seed=11)
    torch.rand(5)
    b, mb = create_synthesizer("plugin:ecg_anomaly")(x, seed=11)
    assert torch.equal(a, b) and torch.equal(ma, mb) and a.shape == (4, 3, 200)
    c, _ = synth(x, seed=12)
    assert not torch.equal(a, c)
    out, mask = ecg_anomaly(x[0], seed=11, kinds=["noise"])
    assert out.shape == (3, 200) and mask.sum() > 0


def test_single_lead_and_lead_probability() -> None:
    x = beats(1, 12)[0]
    _, mask = create_synthesizer("plugin:ecg_anomaly", lead_probability=0.0)(x, seed=0)
    assert int(mask.amax(1).sum()) == 1  # at least one lead, and only one with probability 0
    _, mask = create_synthesizer("plugin:ecg_anomaly", lead_probability=1.0)(x, seed=0)
    assert int(mask.amax(1).sum()) == 12


@pytest.mark.parametrize(("options", "message"), [
    ({"kinds": ["spikes"]}, "unknown or no kinds"),
    ({"ectopic_widen": [0.5, 2.0]}, "ectopic_widen"),
    ({"ectopic_gain": [0.0, 1.0]}, "ectopic_gain"),
    ({"ectopic_invert": 1.5}, "ectopic_invert"),
    ({"region": [0.5, 0.2]}, "region"),
    ({"amplitude_scale": [0.5, 2.0]}, "amplitude_scale"),
    ({"lead_probability": 2.0}, "lead_probability"),
])
def test_bad_options_are_config_errors(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_synthesizer("plugin:ecg_anomaly", **options)


def test_bad_signals_are_config_errors() -> None:
    synth = create_synthesizer("plugin:ecg_anomaly")
    with pytest.raises(ConfigError, match="NaN"):
        synth(torch.tensor([[0.0, float("nan"), 1.0, 2.0, 3.0]]))
    with pytest.raises(ConfigError, match="expects a signal"):
        synth(torch.zeros(1, 1, 1, 8))


def test_synthesize_signal_files_writes_everything_or_nothing(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    np.save(src / "a.npy", synthetic_ecg_windows(3, 2, 64, seed=0)[0])
    np.savetxt(src / "b.csv", synthetic_ecg_windows(2, 2, 64, seed=1)[0].reshape(2, -1), delimiter=",")
    manifest = synthesize_signal_files("plugin:ecg_anomaly", src, tmp_path / "out", seed=5, count=2, n_leads=2)
    assert len(manifest["items"]) == (3 + 2) * 2
    assert np.load(tmp_path / "out" / "signals" / "a.npy").shape == (6, 2, 64)
    masks = np.load(tmp_path / "out" / "masks" / "b.npy")
    assert masks.shape == (4, 2, 64) and masks.reshape(4, -1).max(1).min() == 1
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["seed"] == 5
    again = synthesize_signal_files("plugin:ecg_anomaly", src, tmp_path / "out2", seed=5, count=2, n_leads=2)
    assert [i["seed"] for i in again["items"]] == [i["seed"] for i in manifest["items"]]
    np.testing.assert_array_equal(np.load(tmp_path / "out2" / "signals" / "a.npy"),
                                  np.load(tmp_path / "out" / "signals" / "a.npy"))
    inferred = synthesize_signal_files("plugin:ecg_anomaly", src, tmp_path / "inferred")  # n_leads from the files
    assert np.load(tmp_path / "inferred" / "signals" / "a.npy").shape == (3, 2, 64)  # [N, K, Q] keeps its leads
    assert np.load(tmp_path / "inferred" / "signals" / "b.npy").shape == (2, 1, 128)  # CSV rows: one lead
    assert len(inferred["items"]) == 5
    with pytest.raises(ConfigError, match="not empty"):
        synthesize_signal_files("plugin:ecg_anomaly", src, tmp_path / "out", n_leads=2)
    (src / "c.npy").write_bytes(b"not an array")
    with pytest.raises(DataError, match="cannot be read"):
        synthesize_signal_files("plugin:ecg_anomaly", src, tmp_path / "out3", n_leads=2)
    assert not (tmp_path / "out3").exists() and not list(tmp_path.glob(".out3*"))  # nothing written half
    with pytest.raises(ConfigError, match="not on signals"):
        synthesize_signal_files("plugin:perlin", src, tmp_path / "out4")


# --------------------------------------------------------------------------------------------------- metrics
def test_rank_statistics_match_scikit_learn() -> None:
    from sklearn.metrics import average_precision_score, roc_auc_score

    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 7, (300,), generator=g).float() * 3.5 + 10.0  # ties, and values far outside [0, 1]
    labels = torch.rand(300, generator=g) > 0.7
    assert float(rank_auroc(scores, labels)) == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert float(average_precision(scores, labels)) == pytest.approx(average_precision_score(labels, scores), abs=1e-6)
    assert torch.isnan(rank_auroc(scores, torch.zeros(300, dtype=torch.bool)))


def test_sample_metrics_read_signal_batches() -> None:
    labels = torch.tensor([0, 0, 1, 1, 0, 1], dtype=torch.bool)
    batch = SignalBatch(signal=torch.zeros(6, 1, 8), gt_label=labels,
                        pred_score=torch.tensor([10.0, 20.0, 300.0, 40.0, 50.0, 500.0]))
    auroc, ap = create_metric("plugin:signal_auroc"), create_metric("plugin:signal_ap")
    auroc.update(batch)
    ap.update(batch)
    assert auroc.name == "sample_AUROC" and float(auroc.compute()) == pytest.approx(8 / 9)
    assert ap.name == "sample_AP" and float(ap.compute()) == pytest.approx((1 + 1 + 3 / 4) / 3)


def test_point_auroc_smoothing_crop_and_missing_masks() -> None:
    mask = torch.zeros(4, 2, 100, dtype=torch.bool)
    mask[:2, :, 40:60] = True
    noisy = mask.float() + 1.5 * torch.rand(4, 2, 100, generator=torch.Generator().manual_seed(1))
    noisy[2:, :, :10] += 2.0  # false alarms at the start of the normal windows
    plain = create_metric("plugin:signal_point_auroc")
    smooth = create_metric("plugin:signal_point_auroc", sigma=3.0)
    cropped = create_metric("plugin:signal_point_auroc", crop=[20, 100])
    batch = SignalBatch(signal=torch.zeros(4, 2, 100), gt_mask=mask, anomaly_map=noisy)
    for metric in (plain, smooth, cropped):
        metric.update(batch)
    assert plain.name == "point_AUROC"
    assert 0.5 < float(plain.compute()) < 0.95
    assert float(smooth.compute()) > float(plain.compute())  # smoothing averages the noise out
    assert float(cropped.compute()) > float(plain.compute())  # the false alarms lie outside the crop
    empty = create_metric("plugin:signal_point_auroc")
    empty.update(SignalBatch(signal=torch.zeros(2, 1, 8), anomaly_map=torch.rand(2, 1, 8)))
    assert empty.compute() is None  # no masks: no value, no error
    with pytest.raises(ConfigError, match="sigma"):
        create_metric("plugin:signal_point_auroc", sigma=-1)


def test_gaussian_smoothing_keeps_mass_and_shape() -> None:
    x = torch.zeros(2, 3, 101)
    x[..., 50] = 1.0
    y = gaussian_smooth_1d(x, 5.0)
    assert y.shape == x.shape and float(y.sum()) == pytest.approx(6.0, abs=1e-4) and float(y.max()) < 0.1
