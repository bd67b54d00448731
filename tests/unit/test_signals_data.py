"""Signal data: readers (npz, WFDB, arrays), beat windows, datamodules (MIT-BIH, PTB-XL, folders), record-wise
honest validation, batches, and every bad-input error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from uad_plugins.data.signals import (
    MitBihBeats,
    PtbXl,
    SignalBatch,
    SignalDataset,
    SignalFolder,
    SignalItem,
    beat_windows,
    make_synthetic_signal_folder,
    read_array_file,
    read_mitbih_npz,
    read_wfdb_record,
    synthetic_ecg_windows,
)
from uad_plugins.errors import ConfigError, DataError

torch.set_num_threads(2)

ECG = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ecg"
MITBIH = ECG / "mitbih_subset"
WFDB_100 = ECG / "wfdb_sample_100" / "100"
needs_mitbih = pytest.mark.skipif(not (MITBIH / "100.npz").is_file(), reason="shared MIT-BIH subset not present")
needs_wfdb = pytest.mark.skipif(not WFDB_100.with_suffix(".hea").is_file(), reason="shared WFDB record not present")


# --------------------------------------------------------------------------------------------------- fixtures
def write_wfdb_record(folder: Path, name: str, signal: np.ndarray, fs: int, beats: np.ndarray | None = None,
                      symbols: list[str] | None = None, leads: list[str] | None = None) -> Path:
    """Write ``signal [K, L]`` (mV) as a WFDB record with wfdb (and an ``atr`` annotation when beats are given)."""
    import wfdb

    folder.mkdir(parents=True, exist_ok=True)
    names = leads or [f"lead{k}" for k in range(signal.shape[0])]
    wfdb.wrsamp(name, fs=fs, units=["mV"] * len(names), sig_name=names, p_signal=signal.T.astype(np.float64),
                fmt=["16"] * len(names), write_dir=str(folder))
    if beats is not None:
        wfdb.wrann(name, "atr", np.asarray(beats, dtype=np.int64), symbol=symbols, write_dir=str(folder))
    return folder / name


def beat_train(n_beats: int, fs: int = 360, period: int = 300, pvc_every: int = 0, seed: int = 0
               ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A one-lead record of synthetic beats every ``period`` samples; every ``pvc_every``-th beat is a PVC."""
    normal, _ = synthetic_ecg_windows(n_beats, 1, period, seed=seed)
    pvc, _ = synthetic_ecg_windows(n_beats, 1, period, anomalous=True, seed=seed + 1)
    symbols = ["V" if pvc_every and (i % pvc_every == pvc_every - 1) else "N" for i in range(n_beats)]
    parts = [pvc[i, 0] if s == "V" else normal[i, 0] for i, s in enumerate(symbols)]
    beats = np.arange(n_beats) * period + int(0.40 * period)
    return np.concatenate(parts)[None], beats, symbols


@pytest.fixture
def wfdb_mitbih(tmp_path: Path) -> Path:
    """Three WFDB records (r1, r2 normal; r3 with PVCs) in MIT-BIH style."""
    folder = tmp_path / "wfdb"
    for i, (name, pvc_every) in enumerate((("r1", 0), ("r2", 0), ("r3", 3))):
        signal, beats, symbols = beat_train(30, pvc_every=pvc_every, seed=10 * i)
        write_wfdb_record(folder, name, signal, 360, beats, symbols)
    return folder


def write_ptbxl(root: Path, n_per_fold: int = 2, folds: tuple[int, ...] = (1, 2, 10), length: int = 1000,
                fs: int = 500) -> Path:
    """A tiny PTB-XL-shaped folder: ptbxl_database.csv, scp_statements.csv and 12-lead WFDB records."""
    import pandas as pd

    rows, ecg_id = [], 0
    rng = np.random.default_rng(0)
    for fold in folds:
        for j in range(n_per_fold * 2):
            ecg_id += 1
            normal = j % 2 == 0
            beats, _ = synthetic_ecg_windows(length // 250, 12, 250, anomalous=not normal, seed=ecg_id)
            signal = beats.transpose(1, 0, 2).reshape(12, -1) + rng.normal(0, 0.01, (12, length))
            rel = f"records500/00000/{ecg_id:05d}_hr"
            write_wfdb_record(root / "records500" / "00000", f"{ecg_id:05d}_hr", signal.astype(np.float32), fs)
            codes = "{'NORM': 100.0, 'SR': 0.0}" if normal else "{'IMI': 50.0, 'NORM': 20.0, 'SR': 0.0}"
            rows.append({"ecg_id": ecg_id, "scp_codes": codes, "strat_fold": fold,
                         "filename_lr": rel.replace("records500", "records100").replace("_hr", "_lr"),
                         "filename_hr": rel})
    pd.DataFrame(rows).to_csv(root / "ptbxl_database.csv", index=False)
    pd.DataFrame({"diagnostic": [1.0, 1.0, np.nan], "diagnostic_class": ["NORM", "MI", np.nan]},
                 index=pd.Index(["NORM", "IMI", "SR"], name="")).to_csv(root / "scp_statements.csv")
    return root


# --------------------------------------------------------------------------------------------------- batches
def test_signal_batch_collates_and_iterates() -> None:
    items = [SignalItem(signal=torch.randn(2, 16), gt_label=torch.tensor(i % 2 == 1), signal_path=f"f{i}",
                        record=f"r{i}", start=torch.tensor(i)) for i in range(3)]
    batch = SignalBatch.collate(items)
    assert batch.signal.shape == (3, 2, 16) and batch.gt_label.tolist() == [False, True, False]
    assert batch.record == ["r0", "r1", "r2"] and batch.gt_mask is None and len(batch) == 3
    batch.update(pred_score=torch.tensor([0.1, 0.9, 0.2]), anomaly_map=torch.rand(3, 2, 16))
    assert [item.record for item in batch] == ["r0", "r1", "r2"]
    rows = batch.prediction_rows()
    assert rows[1]["record"] == "r1" and rows[1]["start"] == 1 and rows[1]["pred_score"] == pytest.approx(0.9)
    with pytest.raises(ValueError, match=r"\[B, K, Q\]"):
        SignalBatch(signal=torch.randn(3, 16))
    with pytest.raises(ValueError, match="different shapes"):
        SignalBatch.collate([SignalItem(signal=torch.randn(1, 8)), SignalItem(signal=torch.randn(1, 9))])


# --------------------------------------------------------------------------------------------------- readers
@needs_mitbih
def test_mitbih_npz_matches_the_wfdb_record() -> None:
    npz = read_mitbih_npz(MITBIH / "100.npz")
    assert npz.signal.shape == (1, 650000) and npz.fs == 360
    assert int(npz.beat_labels.sum()) == 1  # one PVC in record 100
    if WFDB_100.with_suffix(".hea").is_file():
        wfdb_record = read_wfdb_record(WFDB_100)
        assert wfdb_record.signal.shape == (2, 650000) and wfdb_record.leads == ["MLII", "V5"]
        np.testing.assert_allclose(wfdb_record.signal[0], npz.signal[0], atol=1e-6)
        np.testing.assert_array_equal(wfdb_record.beats, npz.beats)
        np.testing.assert_array_equal(wfdb_record.beat_labels, npz.beat_labels)


@needs_mitbih
def test_beat_windows_are_centred_on_the_peaks() -> None:
    record = read_mitbih_npz(MITBIH / "100.npz")
    windows, labels, starts = beat_windows(record, 90, 166)
    assert windows.shape[1:] == (1, 256) and len(windows) == len(labels) == len(starts)
    assert len(windows) >= len(record.beats) - 2  # only beats at the very ends are skipped
    np.testing.assert_array_equal(windows[5, 0], record.signal[0, starts[5]:starts[5] + 256])
    assert starts[5] + 90 in set(record.beats.tolist())


def test_array_files_npy_and_csv(tmp_path: Path) -> None:
    np.save(tmp_path / "one.npy", np.zeros((2, 50)))
    np.save(tmp_path / "many.npy", np.zeros((4, 2, 50)))
    np.savetxt(tmp_path / "rows.csv", np.ones((3, 100)), delimiter=",", header="a" * 3, comments="")
    assert read_array_file(tmp_path / "one.npy", 2).shape == (1, 2, 50)
    assert read_array_file(tmp_path / "many.npy", 2).shape == (4, 2, 50)
    assert read_array_file(tmp_path / "rows.csv", 2).shape == (3, 2, 50)  # a row: the leads one after the other
    assert read_array_file(tmp_path / "rows.csv", 1).shape == (3, 1, 100)


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: np.save(p / "x.npy", np.array([[0.0, np.nan, 1.0, 2.0]] * 2)), "NaN or infinite"),
    (lambda p: np.save(p / "x.npy", np.array([[0.0, np.inf, 1.0, 2.0]] * 2)), "NaN or infinite"),
    (lambda p: np.save(p / "x.npy", np.zeros((5, 3, 40))), "has 3 lead"),
    (lambda p: (p / "x.txt").write_text("1,2,3"), "unknown extension"),
    (lambda p: (p / "x.npy").write_bytes(b"text, not numpy"), "no NumPy header"),
    (lambda p: (p / "x.csv").write_text("1,2,3\n4,five,6\n"), "non-numeric"),
])
def test_array_file_errors(tmp_path: Path, make, message: str) -> None:
    make(tmp_path)
    file = next(tmp_path.iterdir())
    with pytest.raises(DataError, match=message):
        read_array_file(file, 2)


# --------------------------------------------------------------------------------------------------- MIT-BIH
@needs_mitbih
def test_mitbih_datamodule_splits_by_record_and_validates_honestly(tmp_path: Path) -> None:
    from uad_plugins import create_synthesizer

    dm = MitBihBeats(root=str(MITBIH), train_records=["100", "121", "123"], test_records=["106"],
                     max_beats_per_record=60, seed=0)
    dm.setup()
    assert dm.signal_shape == (1, 256)
    assert set(dm.train_data.records) == {"100", "121", "123"} and set(dm.test_data.records) == {"106"}
    assert not dm.train_data.has_anomalous  # training is normal beats only
    assert dm.test_data.labels.sum() == 520  # every PVC of 106 is kept
    info = dm.synthetic_validation(create_synthesizer("plugin:ecg_anomaly"), ratio=0.3, seed=0,
                                   output_dir=tmp_path)
    assert info["by"] == "records" and len(info["validation_records"]) == 1
    held = info["validation_records"][0]
    assert held not in dm.train_data.records and set(dm.val_data.records) == {held}
    assert info["n_val_anomalous"] >= 1 and info["n_val_normal"] >= 1
    assert dm.val_data.masks[dm.val_data.labels == 1].any(axis=(1, 2)).all()
    assert (tmp_path / "validation_signals.npz").is_file()
    batch = next(iter(dm.val_dataloader()))
    assert isinstance(batch, SignalBatch) and batch.gt_mask is not None


@needs_mitbih
@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"train_records": ["100"], "test_records": ["100"]}, ConfigError, "both train_records and test_records"),
    ({"train_records": ["100"], "test_records": ["999"]}, DataError, r"\['999'\] are not in"),
    ({"train_records": ["100"], "test_records": ["106"], "channels": [1]}, DataError, "channels"),
    ({"train_records": ["100"], "test_records": ["106"], "pre": 400000, "post": 400000}, DataError,
     "shorter than one window"),
])
def test_mitbih_errors(kwargs, error, message: str) -> None:
    with pytest.raises(error, match=message):
        MitBihBeats(root=str(MITBIH), **kwargs).setup()


def test_mitbih_datamodule_on_wfdb_records(wfdb_mitbih: Path) -> None:
    dm = MitBihBeats(root=str(wfdb_mitbih), train_records=["r1", "r2"], test_records=["r3"], pre=100, post=156)
    dm.setup()
    assert dm.signal_shape == (1, 256) and len(dm.train_data) > 40
    assert dm.test_data.labels.sum() == 10  # every third of 30 beats is a PVC
    windows = dm.predict_dataset(wfdb_mitbih / "r3.hea")
    assert windows.shape == (1, 256) and windows.labels.sum() == 10


def test_empty_and_foreign_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is empty"):
        MitBihBeats(root=str(tmp_path), train_records=["a"], test_records=["b"]).setup()
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="holds no"):
        MitBihBeats(root=str(tmp_path), train_records=["a"], test_records=["b"]).setup()
    with pytest.raises(DataError, match="does not exist"):
        MitBihBeats(root=str(tmp_path / "missing"), train_records=["a"], test_records=["b"]).setup()


# --------------------------------------------------------------------------------------------------- PTB-XL
def test_ptbxl_ecgad_protocol(tmp_path: Path) -> None:
    root = write_ptbxl(tmp_path / "ptbxl")
    dm = PtbXl(root=str(root), train_folds=[1, 2], test_folds=[10], crop=[100, 900])
    dm.setup()
    assert dm.signal_shape == (12, 800)
    assert len(dm.train_data) == 4 and not dm.train_data.has_anomalous  # NORM records of folds 1-2
    assert len(dm.test_data) == 4 and dm.test_data.labels.tolist() == [0, 1, 0, 1]
    window = dm.train_data[0].signal
    assert window.shape == (12, 800) and float(window.min()) >= -1.0 - 1e-5 and float(window.max()) <= 1.0 + 1e-5
    only = PtbXl(root=str(root), train_folds=[1, 2], normal_rule="only", crop=[100, 900])
    only.setup()
    assert only.test_data.labels.tolist() == [0, 1, 0, 1]
    windows = dm.predict_dataset(root / "records500")
    assert len(windows) == 12 and windows.shape == (12, 800)


def test_ptbxl_errors(tmp_path: Path) -> None:
    root = write_ptbxl(tmp_path / "ptbxl", n_per_fold=1, folds=(1, 10))
    with pytest.raises(DataError, match="shorter than one window"):
        PtbXl(root=str(root), train_folds=[1], crop=[100, 4900]).setup()
    (root / "scp_statements.csv").unlink()
    with pytest.raises(DataError, match=r"scp_statements\.csv is missing"):
        PtbXl(root=str(root), train_folds=[1], crop=[0, 500]).setup()
    with pytest.raises(DataError, match=r"ptbxl_database\.csv is missing"):
        PtbXl(root=str(tmp_path)).setup()
    with pytest.raises(ConfigError, match="both train_folds and test_folds"):
        PtbXl(root=str(root), train_folds=[1, 10])


# --------------------------------------------------------------------------------------------------- folders
def test_signal_folder_with_masks_and_windows(tmp_path: Path) -> None:
    root = make_synthetic_signal_folder(tmp_path / "data", n_leads=2, length=64)
    dm = SignalFolder(root=str(root), normal_dir="train/good", normal_test_dir="test/good", abnormal_dir="test/bad",
                      mask_dir="ground_truth/bad", n_leads=2, length=32, stride=16)
    dm.setup()
    assert dm.signal_shape == (2, 32)
    assert len(dm.train_data) == 4 * 8 * 3  # 32 samples of 64 points, 3 windows each
    assert dm.test_data.masks is not None and dm.test_data.masks[dm.test_data.labels == 0].sum() == 0
    assert len(set(dm.train_data.records)) == 32  # one record per row: splits keep a row's windows together


def test_signal_folder_split_without_normal_test_dir(tmp_path: Path) -> None:
    root = make_synthetic_signal_folder(tmp_path / "data", length=64)
    dm = SignalFolder(root=str(root), normal_dir="train/good", abnormal_dir="test/bad", test_split_ratio=0.25)
    dm.setup()
    train, test = set(dm.train_data.records), set(dm.test_data.records)
    assert not train & test and dm.test_data.has_normal and dm.test_data.has_anomalous


def test_signal_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is empty"):
        SignalFolder(normal_dir=str(tmp_path / "empty")).setup()
    (tmp_path / "mixed").mkdir()
    np.save(tmp_path / "mixed" / "a.npy", np.zeros(50))
    np.save(tmp_path / "mixed" / "b.npy", np.zeros(60))
    with pytest.raises(DataError, match="different lengths"):
        SignalFolder(normal_dir=str(tmp_path / "mixed")).setup()
    with pytest.raises(DataError, match="shorter than one window"):
        SignalFolder(normal_dir=str(tmp_path / "mixed"), length=55).setup()


def test_single_record_validation_falls_back_to_windows() -> None:
    from uad_plugins import create_synthesizer
    from uad_plugins.data.signals import synthetic_signal_validation

    windows, _ = synthetic_ecg_windows(20, 1, 64)
    data = SignalDataset(windows, np.zeros(20), ["only"] * 20)
    train, val, info = synthetic_signal_validation(data, create_synthesizer("plugin:ecg_anomaly"), ratio=0.25)
    assert info["by"] == "windows" and len(train) + info["n_val_normal"] + info["n_val_anomalous"] == 20
    again = synthetic_signal_validation(data, create_synthesizer("plugin:ecg_anomaly"), ratio=0.25)[1]
    np.testing.assert_array_equal(val.signals, again.signals)  # seeded: the same set every time



@pytest.mark.parametrize("mode", ["minmax", "zscore"])
def test_synthetic_validation_windows_are_scaled_like_real_ones(mode: str) -> None:
    """Regression: perturbed validation windows were left unscaled after the beat was injected, so under a
    per-window scaling they could stand outside the range a real anomalous window is squashed into."""
    from uad_plugins import create_synthesizer
    from uad_plugins.data.signals import synthetic_signal_validation
    from uad_plugins.data.signals.io import normalize_windows

    windows, _ = synthetic_ecg_windows(40, 1, 256)
    data = SignalDataset(normalize_windows(windows, mode), np.zeros(40), [f"r{i % 4}" for i in range(40)])
    ectopic = create_synthesizer("plugin:ecg_anomaly", kinds=["ectopic"])
    _, val, info = synthetic_signal_validation(data, ectopic, ratio=0.25, renormalize=mode)
    _, raw, _ = synthetic_signal_validation(data, ectopic, ratio=0.25)
    anomalous = val.signals[val.labels == 1]
    assert info["renormalize"] == mode and len(anomalous)
    np.testing.assert_allclose(anomalous, normalize_windows(anomalous, mode), atol=1e-5)  # already scaled
    np.testing.assert_allclose(anomalous, normalize_windows(raw.signals[raw.labels == 1], mode), atol=1e-5)
    assert not np.allclose(anomalous, raw.signals[raw.labels == 1], atol=1e-3)  # the scaling changed them
    np.testing.assert_array_equal(val.signals[val.labels == 0], raw.signals[raw.labels == 0])  # normals untouched


# --------------------------------------------------------------------------------------------------- leads
def test_records_of_other_leads_are_refused_unless_allowed(tmp_path: Path) -> None:
    """MLII and V5 records do not mix in one split, nor at predict time; channels or the opt-out resolve it."""
    folder = tmp_path / "leads"
    for i, (name, leads, pvc_every) in enumerate((("a", ["MLII", "V1"], 0), ("b", ["MLII", "V1"], 0),
                                                  ("c", ["V5", "MLII"], 3), ("d", ["MLII", "V1"], 3))):
        signal, beats, symbols = beat_train(30, pvc_every=pvc_every, seed=10 * i)
        write_wfdb_record(folder, name, np.concatenate([signal, signal]), 360, beats, symbols, leads=leads)
    with pytest.raises(DataError, match=r"do not share their leads \(MLII in a, b; V5 in c\)"):
        MitBihBeats(root=str(folder), train_records=["a", "b"], test_records=["c"], channels=[0]).setup()
    MitBihBeats(root=str(folder), train_records=["a", "b"], test_records=["c"], channels=[0],
                allow_mixed_leads=True).setup()
    dm = MitBihBeats(root=str(folder), train_records=["a", "b"], test_records=["d"], channels=[0])
    dm.setup()
    with pytest.raises(DataError, match=r"trained on lead\(s\) MLII, but record c is V5"):
        dm.predict_dataset(folder / "c.hea")
    assert len(dm.predict_dataset(folder / "d.hea")) == 30
    MitBihBeats(root=str(folder), train_records=["a", "b"], test_records=["d"]).setup()  # all names match
    # leads by name: MLII is the first channel of a, b, d and the second of c
    by_name = MitBihBeats(root=str(folder), train_records=["a", "b"], test_records=["c"], leads=["MLII"])
    by_name.setup()
    assert by_name.signal_shape == (1, 256) and by_name.test_data.labels.sum() == 10
    windows = by_name.predict_dataset(folder / "c.hea")
    np.testing.assert_array_equal(windows.materialize()[:, 0], by_name.test_data.materialize()[:, 0])
    with pytest.raises(DataError, match=r"leads/c has no lead V1 \(it has V5, MLII\)"):
        MitBihBeats(root=str(folder), train_records=["a", "b"], test_records=["c"], leads=["V1"]).setup()
    with pytest.raises(ConfigError, match="distinct leads"):
        MitBihBeats(root=str(folder), leads=["MLII", "MLII"])


def test_npz_lead_names(tmp_path: Path) -> None:
    """An npz record names its lead itself, or by its MIT-BIH record name (114 is V5), or not at all."""
    from uad_plugins.data.signals.io import read_record_leads

    arrays = {"ecg_adc": np.full(4000, 1024, np.int16), "fs": 360, "r_peaks": np.array([500, 1500])}
    np.savez(tmp_path / "114.npz", **arrays)
    np.savez(tmp_path / "100.npz", **arrays)
    np.savez(tmp_path / "patient7.npz", **arrays)
    np.savez(tmp_path / "own.npz", lead=np.array(["II"]), **arrays)
    assert read_record_leads(tmp_path / "114.npz") == ["V5"] == read_mitbih_npz(tmp_path / "114.npz").leads
    assert read_record_leads(tmp_path / "100.npz") == ["MLII"]
    assert read_record_leads(tmp_path / "patient7.npz") == [] == read_mitbih_npz(tmp_path / "patient7.npz").leads
    assert read_record_leads(tmp_path / "own.npz") == ["II"] == read_mitbih_npz(tmp_path / "own.npz").leads


@needs_mitbih
def test_shared_record_114_is_v5_and_is_refused_next_to_mlii_records() -> None:
    with pytest.raises(DataError, match=r"MLII in 100, 106, 121; V5 in 114"):
        MitBihBeats(root=str(MITBIH), train_records=["100", "114", "121"], test_records=["106"]).setup()
    # what the table says is what the data show: 114's median normal beat looks like no MLII record's
    def median_beat(name: str) -> np.ndarray:
        record = read_mitbih_npz(MITBIH / f"{name}.npz")
        windows, labels, _ = beat_windows(record, 90, 166)
        beat = np.median(windows[labels == 0, 0], axis=0)
        beat = beat - np.median(beat)
        return beat / np.linalg.norm(beat)
    beats = {name: median_beat(name) for name in ("100", "106", "114", "119", "121")}
    mlii = [float(beats[a] @ beats[b]) for a in ("100", "106", "119", "121") for b in ("100", "106", "119", "121")
            if a < b]
    assert min(mlii) > 0.5
    assert max(abs(float(beats["114"] @ beats[b])) for b in ("100", "106", "119", "121")) < 0.3
