"""``MitBihWindows``: fixed-length windows not aligned to the beats, point labels around anomalous beats, sample
label = the window holds one, record-wise splits and honest validation (synthetic records; the shared MIT-BIH
subset when present)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from uad_plugins.data.signals import MitBihWindows, beat_span_mask
from uad_plugins.errors import ConfigError, DataError
from uad_plugins.factory import create_datamodule

torch.set_num_threads(2)

MITBIH = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ecg" / "mitbih_subset"
needs_mitbih = pytest.mark.skipif(not (MITBIH / "100.npz").is_file(), reason="shared MIT-BIH subset not present")


def write_npz_record(folder: Path, name: str, n_samples: int, beats: list[int], pvcs: list[int], fs: int = 100,
                     seed: int = 0) -> Path:
    """A one-lead npz record in the shared subset's format (ADC values, beats, PVC beats)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    adc = 1024 + (rng.normal(0, 20, n_samples)).astype(np.int16)
    for b in beats:
        adc[max(b - 2, 0):b + 3] += 200
    path = folder / f"{name}.npz"
    np.savez(path, ecg_adc=adc.astype(np.int16), fs=np.int64(fs), r_peaks=np.asarray(beats, np.int64),
             pvc_peaks=np.asarray(pvcs, np.int64))
    return path


def test_beat_span_mask_marks_spans_of_anomalous_beats_only() -> None:
    mask = beat_span_mask(20, np.array([2, 10, 18]), np.array([1, 0, 1]), before=3, after=2)
    assert mask.tolist() == [1, 1, 1, 1] + [0] * 11 + [1, 1, 1, 1, 1]  # clipped at both ends; beat 10 is normal


def test_windows_are_cut_from_the_start_not_at_beats_and_labelled_by_span(tmp_path: Path) -> None:
    # 100 Hz, windows of 2 s = 200 samples; 1,050 samples -> 5 windows (the 50-sample tail is dropped)
    beats = list(range(37, 1050, 80))  # beats are not at window starts
    pvc = [517]
    write_npz_record(tmp_path, "1", 1050, beats, [], seed=1)
    write_npz_record(tmp_path, "2", 1050, beats, [], seed=2)
    write_npz_record(tmp_path, "9", 1050, sorted(beats + pvc), pvc, seed=3)
    dm = MitBihWindows(root=str(tmp_path), train_records=["1", "2"], test_records=["9"], window_seconds=2.0,
                       label_span=(0.1, 0.2), filter_band=None, normalize="none")
    dm.setup()
    test = dm.test_data
    assert test.shape == (1, 200) and len(test) == 5 and test.starts.tolist() == [0, 200, 400, 600, 800]
    # the PVC at 517 labels [507, 537): all in window 2 (400-599)
    assert test.labels.tolist() == [0, 0, 1, 0, 0]
    assert test.masks is not None and test.masks[2, 0].nonzero()[0].tolist() == list(range(107, 137))
    assert test.masks[[0, 1, 3, 4]].sum() == 0
    # the signal is the record's, unaligned: window 2 starts at sample 400
    raw = (np.load(tmp_path / "9.npz")["ecg_adc"].astype(np.float64) - 1024) / 200
    assert np.allclose(test.signals[2, 0], raw[400:600], atol=1e-6)
    assert len(dm.train_data) == 10 and not dm.train_data.labels.any()


def test_a_span_crossing_a_window_border_labels_both_windows_and_training_drops_them(tmp_path: Path) -> None:
    beats = list(range(37, 1050, 80))
    write_npz_record(tmp_path, "1", 1050, sorted([*beats, 395]), [395], seed=1)  # span [385, 415): windows 1 and 2
    write_npz_record(tmp_path, "2", 1050, beats, [], seed=2)
    write_npz_record(tmp_path, "9", 1050, sorted([*beats, 395]), [395], seed=3)
    dm = MitBihWindows(root=str(tmp_path), train_records=["1", "2"], test_records=["9"], window_seconds=2.0,
                       label_span=(0.1, 0.2), filter_band=None, normalize="minmax")
    dm.setup()
    assert dm.test_data.labels.tolist() == [0, 1, 1, 0, 0]
    train_1 = [int(s) for s, r in zip(dm.train_data.starts, dm.train_data.records) if r == "1"]
    assert train_1 == [0, 600, 800]  # the two windows holding part of the PVC's span are not trained on
    assert float(dm.train_data.signals.min()) == -1.0 and float(dm.train_data.signals.max()) == 1.0


def test_overlapping_training_windows_and_honest_validation_by_record(tmp_path: Path) -> None:
    from uad_plugins.factory import create_synthesizer

    beats = list(range(37, 1050, 80))
    for i, name in enumerate(["1", "2", "3"]):
        write_npz_record(tmp_path, name, 1050, beats, [], seed=i)
    write_npz_record(tmp_path, "9", 1050, sorted([*beats, 517]), [517], seed=9)
    dm = MitBihWindows(root=str(tmp_path), train_records=["1", "2", "3"], test_records=["9"], window_seconds=2.0,
                       train_stride_seconds=1.0, filter_band=None, normalize="minmax")
    dm.setup()
    assert len(dm.train_data) == 3 * 9 and dm.train_data.starts[:3].tolist() == [0, 100, 200]
    assert dm.test_data.starts.tolist() == [0, 200, 400, 600, 800]  # test windows never overlap
    synthesizer = create_synthesizer(dm.default_validation_synthesizer)
    description = dm.synthetic_validation(synthesizer, ratio=0.34, seed=0)
    held = set(description["validation_records"])
    assert description["by"] == "records" and len(held) == 1 and not held & set(dm.test_records)
    assert not held & set(dm.train_data.records)
    assert dm.val_data is not None and dm.val_data.has_anomalous and dm.val_data.has_normal
    # the perturbed windows are min-max scaled like every real window (regression: they were left unscaled)
    signals = dm.val_data.signals
    np.testing.assert_allclose(signals.min(axis=-1), -1.0, atol=1e-6)
    np.testing.assert_allclose(signals.max(axis=-1), 1.0, atol=1e-6)
    assert description["renormalize"] == "minmax"


def test_the_short_name_and_bad_settings(tmp_path: Path) -> None:
    write_npz_record(tmp_path, "1", 300, [50, 150, 250], [])
    assert isinstance(create_datamodule("MitBihWindows", root=str(tmp_path), train_records="1", test_records="2"),
                      MitBihWindows)
    assert MitBihWindows(root=str(tmp_path)).normalize == "record"  # chosen on validation data over ECGAD's minmax
    with pytest.raises(ConfigError, match="window_seconds"):
        MitBihWindows(root=str(tmp_path), window_seconds=0)
    with pytest.raises(ConfigError, match="label_span"):
        MitBihWindows(root=str(tmp_path), label_span=(-0.1, 0.2))
    with pytest.raises(ConfigError, match="both train_records and test_records"):
        MitBihWindows(root=str(tmp_path), train_records=["1"], test_records=["1"])
    write_npz_record(tmp_path, "2", 300, [50, 150, 250], [150])
    dm = MitBihWindows(root=str(tmp_path), train_records=["1"], test_records=["2"], window_seconds=5.0,
                       filter_band=None)
    with pytest.raises(DataError, match="shorter than one window"):
        dm.setup()


def test_predict_dataset_labels_windows_like_the_test_set(tmp_path: Path) -> None:
    beats = list(range(37, 1050, 80))
    write_npz_record(tmp_path / "data", "1", 1050, beats, [], seed=1)
    write_npz_record(tmp_path / "data", "9", 1050, sorted([*beats, 517]), [517], seed=3)
    write_npz_record(tmp_path / "new", "5", 1050, sorted([*beats, 117]), [117], seed=5)
    dm = MitBihWindows(root=str(tmp_path / "data"), train_records=["1"], test_records=["9"], window_seconds=2.0,
                       filter_band=None)
    predict = dm.predict_dataset(tmp_path / "new")
    assert len(predict) == 5 and predict.labels.tolist() == [1, 0, 0, 0, 0] and predict.masks is not None


@needs_mitbih
def test_real_records_windows_and_labels() -> None:
    dm = MitBihWindows(root=str(MITBIH))
    dm.setup()
    assert dm.train_data.shape == (1, 3600) and not dm.train_data.labels.any()
    test = dm.test_data
    assert len(test) == 4 * 180 and set(test.records) == {"106", "116", "119", "200"}
    assert not set(test.records) & set(dm.train_data.records)
    assert np.all(test.starts % 3600 == 0)
    # every PVC of a test record lies inside a positive window's labelled span
    z = np.load(MITBIH / "119.npz")
    starts = test.starts[[r == "119" for r in test.records]]
    masks = test.masks[[r == "119" for r in test.records]]
    for pvc in z["pvc_peaks"][z["pvc_peaks"] < starts[-1] + 3600][:50]:
        w = int(pvc) // 3600
        assert masks[w, 0, int(pvc) - w * 3600] == 1
    labels = test.labels[[r == "119" for r in test.records]]
    assert labels.tolist() == masks.reshape(len(masks), -1).any(1).astype(int).tolist()
