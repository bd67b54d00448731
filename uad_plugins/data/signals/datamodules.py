"""Signal datamodules: MIT-BIH beat windows, PTB-XL (the ECGAD protocol), and folders of generic arrays.

They follow anomalib's datamodule conventions (``train_data``/``val_data``/``test_data``, ``train_batch_size``,
``eval_batch_size``, ``num_workers``, ``seed``; they subclass ``AnomalibDataModule`` so ``uad fit --data MitBihBeats``
works), with three differences:

* batches are :class:`~uad_plugins.data.signals.batch.SignalBatch` (``signal [B, K, Q]``);
* splits are made **by record** (a record, or a file/row of generic arrays, never contributes to two splits);
* validation is always honest: :meth:`SignalDataModule.synthetic_validation` holds back training records and adds
  synthetic anomalies (``plugin:ecg_anomaly`` by default); the uad engine calls it before fitting.

``modality = "signal"`` tells the uad engine to let the datamodule check its own data (every problem is a
:class:`~uad_plugins.errors.DataError`) instead of running the image checks.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from anomalib.data import AnomalibDataModule
from anomalib.data.utils import ValSplitMode
from torch.utils.data import DataLoader

from uad_plugins.data.signals.batch import SignalBatch
from uad_plugins.data.signals.dataset import SignalDataset
from uad_plugins.data.signals.io import (
    ARRAY_SUFFIXES,
    NORMALIZE_MODES,
    SignalRecord,
    bandpass,
    beat_span_mask,
    beat_windows,
    check_finite,
    list_files,
    normalize_windows,
    read_array_file,
    read_record,
    read_record_leads,
    robust_record_scale,
    sliding_windows,
)
from uad_plugins.errors import ConfigError, DataError

if TYPE_CHECKING:
    from uad_plugins.synth.base import Synthesizer

__all__ = ["DEFAULT_MITBIH_TEST", "DEFAULT_MITBIH_TRAIN", "MitBihBeats", "MitBihWindows", "PtbXl", "SignalDataModule",
           "SignalFolder"]

logger = logging.getLogger(__name__)

#: training records of the shared MIT-BIH subset: lead MLII, few PVCs, not paced, not the very noisy 105
#: (114 is left out: its only channel in the subset is V5, see ``MITBIH_FIRST_LEAD``)
DEFAULT_MITBIH_TRAIN = ("100", "108", "121", "123")
#: test records of the shared MIT-BIH subset: many PVCs (106: 520, 116: 109, 119: 444, 200: 826)
DEFAULT_MITBIH_TEST = ("106", "116", "119", "200")
RECORD_SUFFIXES = (".npz", ".hea")


def _check_normalize(mode: str) -> str:
    if mode not in NORMALIZE_MODES:
        raise ConfigError(f"unknown normalize mode {mode!r}.", hint=f"Use one of {', '.join(NORMALIZE_MODES)}.")
    return mode


def _names(values: Sequence[Any] | str | int | None) -> list[str]:
    if values is None:
        return []
    if isinstance(values, (str, int)):
        values = [v.strip() for v in str(values).split(",")]
    return [str(v) for v in values if str(v) != ""]


class SignalDataModule(AnomalibDataModule):
    """Base of the signal datamodules: loading, record-wise honest validation, dataloaders.

    Subclasses implement :meth:`_setup` (set ``train_data`` and ``test_data``) and :meth:`predict_dataset`.

    Args:
        train_batch_size: training batch size.
        eval_batch_size: validation, test and predict batch size.
        num_workers: dataloader workers.
        seed: seed of every random choice (subsampling, validation records).
        max_validation_windows: at most this many held-back windows form the validation set (``None``: all).
    """

    #: the data kind, read by the uad engine
    modality: ClassVar[str] = "signal"
    #: synthesizer used for honest validation when none is named (a reference or a class_path/init_args mapping)
    default_validation_synthesizer: ClassVar[str | Mapping[str, Any]] = "plugin:ecg_anomaly"
    #: how windows are scaled (subclasses set it from their ``normalize`` argument); validation windows perturbed
    #: by a synthesizer are scaled again the same way, as a real window holding that anomaly would be
    normalize: str = "none"

    def __init__(self, train_batch_size: int = 64, eval_batch_size: int = 64, num_workers: int = 0, seed: int = 0,
                 max_validation_windows: int | None = 1000) -> None:
        super().__init__(train_batch_size=train_batch_size, eval_batch_size=eval_batch_size,
                         num_workers=num_workers, val_split_mode=ValSplitMode.SYNTHETIC, seed=seed)
        for name, value in (("train_batch_size", train_batch_size), ("eval_batch_size", eval_batch_size)):
            if int(value) < 1:
                raise ConfigError(f"{self.name}: {name} must be at least 1, got {value}.")
        if max_validation_windows is not None and int(max_validation_windows) < 2:
            raise ConfigError(f"{self.name}: max_validation_windows must be at least 2 (or null), got "
                              f"{max_validation_windows}.")
        self.max_validation_windows = max_validation_windows
        self.train_data: SignalDataset | None = None  # type: ignore[assignment]
        self.val_data: SignalDataset | None = None  # type: ignore[assignment]
        self.test_data: SignalDataset | None = None  # type: ignore[assignment]
        self.uad_validation: dict[str, Any] | None = None
        self._loaded = False

    # ------------------------------------------------------------------ set-up
    def setup(self, stage: str | None = None) -> None:
        """Load and check the training and test windows once (every problem is a DataError)."""
        del stage
        if self._loaded:
            return
        self._setup()
        if self.train_data is None or len(self.train_data) == 0:
            raise DataError(f"{self.name}: no normal training windows were found.", hint=self.layout_hint())
        self._loaded = True
        test = len(self.test_data) if self.test_data is not None else 0
        logger.info("%s: %d training windows %s, %d test windows.", self.name, len(self.train_data),
                    self.train_data.shape, test)

    def _setup(self, _stage: str | None = None) -> None:
        raise NotImplementedError

    def layout_hint(self) -> str:
        """What the data folder should look like (for errors)."""
        return ""

    @property
    def signal_shape(self) -> tuple[int, int]:
        """``(K, Q)`` of the windows (sets the datamodule up if needed)."""
        self.setup()
        assert self.train_data is not None
        return self.train_data.shape

    @property
    def task(self) -> str:
        return "segmentation"

    def synthetic_validation(self, synthesizer: Synthesizer, *, ratio: float = 0.2, seed: int = 0,
                             anomalous_fraction: float = 0.5, output_dir: str | Path | None = None
                             ) -> dict[str, Any]:
        """Honest validation: hold back a share ``ratio`` of the training records and perturb part of their windows
        with ``synthesizer`` (see :func:`~uad_plugins.data.signals.validation.synthetic_signal_validation`)."""
        from uad_plugins.data.signals.validation import synthetic_signal_validation

        self.setup()
        assert self.train_data is not None
        train, val, description = synthetic_signal_validation(
            self.train_data, synthesizer, ratio=ratio, seed=seed, anomalous_fraction=anomalous_fraction,
            max_windows=self.max_validation_windows, output_dir=output_dir, renormalize=self.normalize)
        self.train_data, self.val_data = train, val
        self.uad_validation = description
        return description

    # ------------------------------------------------------------------ loaders
    def _loader(self, dataset: SignalDataset | None, *, shuffle: bool, batch_size: int) -> Any:
        if dataset is None or len(dataset) == 0:
            return []
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          collate_fn=SignalBatch.collate, drop_last=False)

    def train_dataloader(self) -> Any:
        return self._loader(self.train_data, shuffle=True, batch_size=self.train_batch_size)

    def val_dataloader(self) -> Any:
        return self._loader(self.val_data, shuffle=False, batch_size=self.eval_batch_size)

    def test_dataloader(self) -> Any:
        return self._loader(self.test_data, shuffle=False, batch_size=self.eval_batch_size)

    def predict_dataloader(self) -> Any:
        return self.test_dataloader()

    def predict_dataset(self, path: str | Path) -> SignalDataset:
        """Windows of the files at ``path`` prepared exactly like the training windows (for ``uad predict``)."""
        raise NotImplementedError

    def predict_loader(self, path: str | Path) -> DataLoader:
        """A dataloader over :meth:`predict_dataset`."""
        return DataLoader(self.predict_dataset(path), batch_size=self.eval_batch_size, shuffle=False,
                          num_workers=0, collate_fn=SignalBatch.collate)


# ========================================================================================================= MIT-BIH
class MitBihBeats(SignalDataModule):
    """Beat windows of MIT-BIH-style records (npz records of the shared subset, or WFDB records), split by record.

    Each window starts ``pre`` samples before an annotated beat and is ``pre + post`` samples long (default 90 +
    166 = 256 samples, -0.25 s ... +0.46 s at 360 Hz). Label 1 = PVC (``pvc_peaks`` in npz; ``anomaly_symbols``
    in WFDB annotations), 0 = any other beat. Training uses the non-PVC beats of ``train_records`` only; the test
    set is every beat of ``test_records``. A record is in one split only. Honest validation holds back whole
    training records and, by default, adds ectopic-like beats (``plugin:ecg_anomaly`` with ``kinds: [ectopic]``):
    beat windows are scored for beat morphology, and generic corruptions give thresholds that flag most normal
    beats (measured in ``docs/models/mmae_ecg.md``).

    Args:
        root: folder of ``NAME.npz`` or WFDB (``NAME.hea`` + ``NAME.dat`` + ``NAME.atr``) records.
        train_records: record names for training (their PVC beats are dropped).
        test_records: record names for testing.
        channels: lead indices to use (``None``: all the records have; the npz records have one).
        leads: lead names to use, picked by name in every record (e.g. ``["MLII"]``, which is the second channel
            of the WFDB record 114 and the first of the others); a record without one of them is a DataError.
            Takes precedence over ``channels``.
        pre, post: samples before and after the annotated beat.
        normalize: ``record`` (robust per-record, per-lead scaling; default), ``zscore`` or ``minmax`` (per window),
            or ``none``.
        filter_band: optional band-pass ``[low_hz, high_hz]`` applied to the whole record first.
        anomaly_symbols: WFDB beat symbols labelled anomalous (default ``["V"]``).
        record_format: ``auto`` (npz when the folder has npz files), ``npz`` or ``wfdb``.
        max_beats_per_record: keep at most this many normal beats per record (seeded; PVCs are always kept).
        allow_mixed_leads: accept records whose (chosen) leads have different names, e.g. MLII and V5. Off by
            default: a model of one lead does not score another, so mixing is a DataError naming the records.
        train_batch_size, eval_batch_size, num_workers, seed, max_validation_windows: see
            :class:`SignalDataModule`.
    """

    default_validation_synthesizer: ClassVar[str | Mapping[str, Any]] = {
        "class_path": "plugin:ecg_anomaly", "init_args": {"kinds": ["ectopic"]}}

    def __init__(self, root: str, train_records: Sequence[str | int] | str = DEFAULT_MITBIH_TRAIN,
                 test_records: Sequence[str | int] | str = DEFAULT_MITBIH_TEST, channels: Sequence[int] | None = None,
                 leads: Sequence[str] | None = None,
                 pre: int = 90, post: int = 166, normalize: str = "record",
                 filter_band: Sequence[float] | None = None, anomaly_symbols: Sequence[str] = ("V",),
                 record_format: str = "auto", max_beats_per_record: int | None = None,
                 allow_mixed_leads: bool = False,
                 train_batch_size: int = 64, eval_batch_size: int = 256, num_workers: int = 0, seed: int = 0,
                 max_validation_windows: int | None = 1000) -> None:
        super().__init__(train_batch_size, eval_batch_size, num_workers, seed, max_validation_windows)
        self.root = Path(root)
        self.allow_mixed_leads = bool(allow_mixed_leads)
        self.train_records = _names(train_records)
        self.test_records = _names(test_records)
        self.channels = None if channels is None else [int(c) for c in channels]
        self.leads = None if leads is None else [str(lead) for lead in ([leads] if isinstance(leads, str) else leads)]
        if self.leads is not None and (not self.leads or len(set(self.leads)) != len(self.leads)):
            raise ConfigError(f"MitBihBeats: leads must name distinct leads, got {leads!r}.", hint="e.g. [MLII]")
        self.pre, self.post = int(pre), int(post)
        if self.pre < 0 or self.post < 1 or self.pre + self.post < 2:
            raise ConfigError(f"MitBihBeats: pre={pre}, post={post} do not make a window.",
                              hint="pre >= 0 samples before the beat, post >= 1 after it (e.g. 90 and 166).")
        self.normalize = _check_normalize(normalize)
        self.filter_band = None if filter_band is None else [float(b) for b in filter_band]
        self.anomaly_symbols = list(anomaly_symbols)
        if record_format not in ("auto", "npz", "wfdb"):
            raise ConfigError(f"MitBihBeats: unknown record_format {record_format!r}.", hint="Use auto, npz or wfdb.")
        self.record_format = record_format
        self.max_beats_per_record = max_beats_per_record
        if not self.train_records or not self.test_records:
            raise ConfigError("MitBihBeats needs train_records and test_records (record names, e.g. [100, 101]).")
        overlap = sorted(set(self.train_records) & set(self.test_records))
        if overlap:
            raise ConfigError(f"MitBihBeats: record(s) {overlap} are in both train_records and test_records.",
                              hint="Splits are made by record: a record is either for training or for testing.")

    def layout_hint(self) -> str:
        return ("Expected: <root>/NAME.npz (arrays ecg_adc, fs, r_peaks, pvc_peaks) or WFDB records <root>/NAME.hea "
                "+ NAME.dat + NAME.atr, one per record named in train_records/test_records.")

    def available_records(self) -> dict[str, Path]:
        """Record name -> file (npz or WFDB header) found under ``root``."""
        if not self.root.is_dir():
            raise DataError(f"MitBihBeats: the record folder {self.root} does not exist.", hint=self.layout_hint())
        files = list_files(self.root, RECORD_SUFFIXES, "MitBihBeats record folder")
        npz = {p.stem: p for p in files if p.suffix.lower() == ".npz"}
        hea = {p.stem: p for p in files if p.suffix.lower() == ".hea"}
        fmt = self.record_format if self.record_format != "auto" else ("npz" if npz else "wfdb")
        found = npz if fmt == "npz" else hea
        if not found:
            raise DataError(f"MitBihBeats: no {fmt} records in {self.root}.", hint=self.layout_hint())
        return found

    def _named_leads(self, files: Mapping[str, Path]) -> dict[str, tuple[str, ...]]:
        """Record name -> names of the leads taken from it, for the records whose files name every such lead."""
        out = {}
        for name, path in files.items():
            leads = read_record_leads(path)
            if leads and self.channels is not None:
                leads = [leads[c] if 0 <= c < len(leads) else "" for c in self.channels]
            if leads and all(leads):
                out[name] = tuple(leads)
        return out

    def _check_same_leads(self, files: Mapping[str, Path], trained_on: Mapping[str, Path] | None = None) -> None:
        """The records must share their leads (and match those of the ``trained_on`` records, when given).

        Leads picked by name (``leads``) need no check: every record gives exactly those, or reading it fails."""
        if self.allow_mixed_leads or self.leads is not None:
            return
        given = self._named_leads(files)
        if trained_on is not None:
            expected = set(self._named_leads(trained_on).values())
            odd = {n: v for n, v in given.items() if len(expected) == 1 and v not in expected}
            if odd:
                found = "; ".join(f"{n} is {', '.join(v)}" for n, v in sorted(odd.items()))
                raise DataError(f"MitBihBeats: the model was trained on lead(s) {', '.join(next(iter(expected)))}, "
                                f"but record {found}.",
                                hint="Score records of the training leads (WFDB records: pick them by name with "
                                     "--data.leads '[MLII]'), or score them anyway with --data.allow_mixed_leads "
                                     "true (Python: allow_mixed_leads=True).")
            return
        groups: dict[tuple[str, ...], list[str]] = {}
        for name, leads in given.items():
            groups.setdefault(leads, []).append(name)
        if len(groups) > 1:
            found = "; ".join(f"{', '.join(k)} in {', '.join(sorted(v))}" for k, v in sorted(groups.items()))
            raise DataError(f"MitBihBeats: the records do not share their leads ({found}).",
                            hint="A model of one lead does not score another (in MIT-BIH, 102, 104 and 114 carry V5 "
                                 "where the others carry MLII). Drop the odd records from train_records/"
                                 "test_records, pick leads by name with leads: [MLII] (WFDB), or pass "
                                 "allow_mixed_leads: true.")

    def _read(self, path: Path) -> SignalRecord:
        record = read_record(path, anomaly_symbols=self.anomaly_symbols) if path.suffix.lower() == ".hea" \
            else read_record(path)
        return self._prepare(record)

    def _prepare(self, record: SignalRecord) -> SignalRecord:
        if self.leads is not None:
            missing = [lead for lead in self.leads if lead not in record.leads]
            if missing:
                have = ", ".join(record.leads) if record.leads else "no lead names"
                raise DataError(f"record {record.path} has no lead {', '.join(missing)} (it has {have}).",
                                hint="Drop the record, or choose leads it has (MIT-BIH 102, 104 and the one-channel "
                                     "114 carry V5, not MLII).")
            index = [record.leads.index(lead) for lead in self.leads]
            record.signal, record.leads = record.signal[index], list(self.leads)
        elif self.channels is not None:
            bad = [c for c in self.channels if not 0 <= c < record.n_leads]
            if bad:
                raise DataError(f"record {record.path} has {record.n_leads} lead(s); channels {bad} do not exist.",
                                hint=f"Choose channels among 0..{record.n_leads - 1}.")
            record.signal = record.signal[self.channels]
            record.leads = [record.leads[c] for c in self.channels] if record.leads else []
        if self.filter_band is not None:
            record.signal = bandpass(record.signal, record.fs or 360.0, self.filter_band)
        if self.normalize == "record":
            record.signal = robust_record_scale(record.signal)
        return record

    def _subsample(self, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        normal = np.flatnonzero(labels == 0)
        keep_normal = normal
        if self.max_beats_per_record is not None and len(normal) > self.max_beats_per_record:
            keep_normal = np.sort(rng.choice(normal, self.max_beats_per_record, replace=False))
        return np.sort(np.concatenate([keep_normal, np.flatnonzero(labels != 0)]))

    def _windows(self, names: list[str], records: dict[str, Path], split: str) -> SignalDataset:
        rng = np.random.default_rng(self.seed)
        parts, n_leads = [], None
        for name in names:
            record = self._read(records[name])
            if n_leads is not None and record.n_leads != n_leads:
                raise DataError(f"record {record.path} has {record.n_leads} lead(s), the others {n_leads}.",
                                hint="Choose the same leads for every record with leads: [...] or channels: [...].")
            n_leads = record.n_leads
            windows, labels, starts = beat_windows(record, self.pre, self.post)
            windows = normalize_windows(windows, self.normalize)
            keep = self._subsample(labels, rng)
            if split == "train":
                dropped = int((labels[keep] != 0).sum())
                if dropped:
                    logger.info("record %s: %d anomalous beat(s) left out of training.", name, dropped)
                keep = keep[labels[keep] == 0]
            parts.append(SignalDataset(windows[keep], labels[keep], [name] * len(keep), [record.path] * len(keep),
                                       starts[keep], split=split))
        return SignalDataset.concat(parts, split=split)

    def _setup(self, _stage: str | None = None) -> None:
        records = self.available_records()
        missing = [r for r in self.train_records + self.test_records if r not in records]
        if missing:
            raise DataError(f"MitBihBeats: record(s) {missing} are not in {self.root}.",
                            hint=f"Available: {', '.join(sorted(records))}.")
        self._check_same_leads({r: records[r] for r in self.train_records + self.test_records})
        self.train_data = self._windows(self.train_records, records, "train")
        self.test_data = self._windows(self.test_records, records, "test")

    def _training_records_if_present(self) -> dict[str, Path]:
        """The training record files when ``root`` still holds them (a checkpoint may be used elsewhere)."""
        try:
            records = self.available_records()
        except DataError:
            return {}
        return {r: records[r] for r in self.train_records if r in records}

    def predict_dataset(self, path: str | Path) -> SignalDataset:
        """Beat windows of the records at ``path`` (npz or WFDB; labels from their annotations)."""
        files = list_files(path, RECORD_SUFFIXES, "input")
        self._check_same_leads({f.stem: f for f in files}, trained_on=self._training_records_if_present())
        parts = []
        for file in files:
            record = self._read(file)
            windows, labels, starts = beat_windows(record, self.pre, self.post)
            windows = normalize_windows(windows, self.normalize)
            parts.append(SignalDataset(windows, labels, [record.name] * len(labels), [record.path] * len(labels),
                                       starts, split="predict"))
        return SignalDataset.concat(parts, split="predict")


# ================================================================================================= MIT-BIH windows
class MitBihWindows(MitBihBeats):
    """Fixed-length windows of MIT-BIH-style records, **not aligned to the beats** (the MMAE-ECG / ECGAD kind of
    protocol), with point labels around the annotated abnormal beats; split by record.

    Each record (read, lead-picked, band-pass filtered as in :class:`MitBihBeats`) is cut into windows of
    ``window_seconds`` (default 10 s: 3,600 samples at 360 Hz) from its first sample on; the tail shorter than a
    window is dropped. Point labels: 1 on ``[beat - label_span[0] s, beat + label_span[1] s)`` around every beat
    labelled anomalous (``pvc_peaks`` in npz records, i.e. MIT-BIH ``V``; ``anomaly_symbols`` in WFDB annotations),
    on every lead; every other point is 0 (other beat types, including ``A`` or paced beats, count as normal). A
    window's label is 1 when it holds at least one labelled point (an abnormal beat whose span reaches into it).
    Training uses only the windows of ``train_records`` with no labelled point (``train_stride_seconds`` apart;
    default: not overlapping); the test set is every window of ``test_records`` (not overlapping, so every point
    is scored once). Scaling (``normalize``): by default robust per record and lead (``record``), chosen on
    validation data over ECGAD's per-window min-max (``minmax``), which squashes a window around its largest beat so
    that a PVC window looks flatter than a normal one (docs/models/mmae_ecg.md). Honest validation holds back whole
    training records and adds one ectopic-like beat per anomalous window (``plugin:ecg_anomaly``, ``kinds:
    [ectopic]``, region 5-8 % of the window: about one beat in 10 s).

    Args:
        root, train_records, test_records, channels, leads, anomaly_symbols, record_format, allow_mixed_leads: see
            :class:`MitBihBeats`.
        window_seconds: window length in seconds (rounded to samples at the record's rate).
        train_stride_seconds: step between training windows in seconds (``None``: one window length).
        label_span: seconds labelled before and after each anomalous beat annotation (default 0.25 and 0.45: the
            QRS complex and the T wave of a PVC at normal heart rates).
        normalize: ``record`` (robust per-record, per-lead scaling; default), ``minmax`` (per window and lead to
            [-1, 1], ECGAD), ``zscore`` or ``none``.
        filter_band: band-pass ``[low_hz, high_hz]`` of the whole record (default 1-25 Hz, ECGAD's 1 Hz high-pass
            and 25 Hz low-pass; ``None``: off).
        train_batch_size, eval_batch_size, num_workers, seed, max_validation_windows: see
            :class:`SignalDataModule`.
    """

    default_validation_synthesizer: ClassVar[str | Mapping[str, Any]] = {
        "class_path": "plugin:ecg_anomaly", "init_args": {"kinds": ["ectopic"], "region": [0.05, 0.08]}}

    def __init__(self, root: str, train_records: Sequence[str | int] | str = DEFAULT_MITBIH_TRAIN,
                 test_records: Sequence[str | int] | str = DEFAULT_MITBIH_TEST, channels: Sequence[int] | None = None,
                 leads: Sequence[str] | None = None, window_seconds: float = 10.0,
                 train_stride_seconds: float | None = None, label_span: Sequence[float] = (0.25, 0.45),
                 normalize: str = "record", filter_band: Sequence[float] | None = (1.0, 25.0),
                 anomaly_symbols: Sequence[str] = ("V",), record_format: str = "auto",
                 allow_mixed_leads: bool = False, train_batch_size: int = 32, eval_batch_size: int = 64,
                 num_workers: int = 0, seed: int = 0, max_validation_windows: int | None = 1000) -> None:
        super().__init__(root, train_records, test_records, channels=channels, leads=leads, normalize=normalize,
                         filter_band=filter_band, anomaly_symbols=anomaly_symbols, record_format=record_format,
                         allow_mixed_leads=allow_mixed_leads, train_batch_size=train_batch_size,
                         eval_batch_size=eval_batch_size, num_workers=num_workers, seed=seed,
                         max_validation_windows=max_validation_windows)
        if not float(window_seconds) > 0:
            raise ConfigError(f"MitBihWindows: window_seconds must be > 0, got {window_seconds}.", hint="e.g. 10")
        self.window_seconds = float(window_seconds)
        if train_stride_seconds is not None and not float(train_stride_seconds) > 0:
            raise ConfigError(f"MitBihWindows: train_stride_seconds must be > 0 (or null), got "
                              f"{train_stride_seconds}.", hint="e.g. 5 for half-overlapping training windows")
        self.train_stride_seconds = None if train_stride_seconds is None else float(train_stride_seconds)
        span = [float(s) for s in label_span]
        if len(span) != 2 or min(span) < 0 or sum(span) <= 0:
            raise ConfigError(f"MitBihWindows: label_span must be [before_s, after_s] >= 0, got {list(label_span)}.",
                              hint="e.g. [0.25, 0.45]")
        self.label_span = (span[0], span[1])

    def layout_hint(self) -> str:
        return super().layout_hint().replace("train_records/test_records", "train_records/test_records (windows)")

    def _n_samples(self, seconds: float, fs: float) -> int:
        return max(1, round(seconds * fs))

    def record_windows(self, record: SignalRecord, split: str) -> SignalDataset:
        """The windows of one prepared record, with point masks and labels (``train``: normal windows only)."""
        if record.beats is None:
            raise DataError(f"record {record.path} has no beat annotations.",
                            hint="Point labels need r_peaks/pvc_peaks (npz) or a WFDB annotation file (NAME.atr).")
        fs = record.fs or 360.0
        length = self._n_samples(self.window_seconds, fs)
        stride = length if split != "train" or self.train_stride_seconds is None else \
            self._n_samples(self.train_stride_seconds, fs)
        labels = record.beat_labels if record.beat_labels is not None else np.zeros(len(record.beats), np.int64)
        point = beat_span_mask(record.length, record.beats, labels, self._n_samples(self.label_span[0], fs),
                               self._n_samples(self.label_span[1], fs))
        windows, starts = sliding_windows(record.signal, length, stride, where=f"record {record.path}")
        masks = np.broadcast_to(point[starts[:, None] + np.arange(length)[None]][:, None],
                                windows.shape).astype(np.uint8)
        window_labels = masks.reshape(len(masks), -1).any(axis=1).astype(np.int64)
        keep = np.flatnonzero(window_labels == 0) if split == "train" else np.arange(len(windows))
        windows = normalize_windows(windows[keep], self.normalize)
        return SignalDataset(windows, window_labels[keep], [record.name] * len(keep), [record.path] * len(keep),
                             starts[keep], masks[keep], split=split)

    def _windows(self, names: list[str], records: dict[str, Path], split: str) -> SignalDataset:
        parts, shape = [], None
        for name in names:
            part = self.record_windows(self._read(records[name]), split)
            if shape is not None and part.shape != shape:
                raise DataError(f"record {name} gives windows of {part.shape} (leads, samples), the others {shape}.",
                                hint="Use records of one sampling rate and the same leads (leads: [...]).")
            shape = part.shape
            if split == "train":
                logger.info("record %s: %d normal window(s) for training.", name, len(part))
            parts.append(part)
        if split == "train" and not any(len(p) for p in parts):
            raise DataError(f"MitBihWindows: every window of the training records {names} holds an anomalous beat.",
                            hint="Train on records with few anomalous beats, or use shorter windows.")
        return SignalDataset.concat(parts, split=split)

    def predict_dataset(self, path: str | Path) -> SignalDataset:
        """Windows of the records at ``path`` (npz or WFDB), cut and labelled like the test windows."""
        files = list_files(path, RECORD_SUFFIXES, "input")
        self._check_same_leads({f.stem: f for f in files}, trained_on=self._training_records_if_present())
        return SignalDataset.concat([self.record_windows(self._read(f), "predict") for f in files], split="predict")


# ========================================================================================================= PTB-XL
class PtbXl(SignalDataModule):
    """PTB-XL (WFDB records + ``ptbxl_database.csv`` + ``scp_statements.csv``) with the ECGAD protocol.

    Training: records whose diagnostic superclass is NORM (``normal_rule``) in ``train_folds`` (1-9); test: every
    record of ``test_folds`` (10) with a diagnostic superclass, NORM = 0, anything else = 1. Records without a
    diagnostic superclass are left out. Each record is one sample ``[12, Q]``: band-pass filtered
    (``filter_band``, ECGAD: 1-25 Hz), cropped (``crop``, ECGAD: samples 100-4900 at 500 Hz) and min-max scaled to
    [-1, 1] per lead (``normalize``). Records are read on demand.

    Args:
        root: the PTB-XL folder (``ptbxl_database.csv``, ``scp_statements.csv``, ``records500/``, ``records100/``).
        sampling_rate: 500 (``filename_hr``) or 100 (``filename_lr``).
        train_folds, test_folds: ``strat_fold`` values.
        crop: ``[start, end]`` samples kept, or ``None`` (whole record).
        normalize: ``minmax`` (ECGAD), ``zscore``, ``record`` or ``none``.
        filter_band: band-pass ``[low_hz, high_hz]`` or ``None``.
        normal_rule: ``first`` (the first diagnostic superclass is NORM, ECGAD) or ``only`` (NORM and nothing else).
        leads: lead indices to keep (``None``: all 12).
        max_train_records, max_test_records: seeded subsets (quick runs).
        train_batch_size, eval_batch_size, num_workers, seed, max_validation_windows: see
            :class:`SignalDataModule`.
    """

    DATABASE = "ptbxl_database.csv"
    STATEMENTS = "scp_statements.csv"

    def __init__(self, root: str, sampling_rate: int = 500, train_folds: Sequence[int] = tuple(range(1, 10)),
                 test_folds: Sequence[int] = (10,), crop: Sequence[int] | None = (100, 4900),
                 normalize: str = "minmax", filter_band: Sequence[float] | None = (1.0, 25.0),
                 normal_rule: str = "first", leads: Sequence[int] | None = None,
                 max_train_records: int | None = None, max_test_records: int | None = None,
                 train_batch_size: int = 32, eval_batch_size: int = 32, num_workers: int = 0, seed: int = 0,
                 max_validation_windows: int | None = 1000) -> None:
        super().__init__(train_batch_size, eval_batch_size, num_workers, seed, max_validation_windows)
        self.root = Path(root)
        if int(sampling_rate) not in (100, 500):
            raise ConfigError(f"PtbXl: sampling_rate must be 100 or 500, got {sampling_rate}.")
        self.sampling_rate = int(sampling_rate)
        self.train_folds = [int(f) for f in train_folds]
        self.test_folds = [int(f) for f in test_folds]
        if set(self.train_folds) & set(self.test_folds):
            raise ConfigError(f"PtbXl: fold(s) {sorted(set(self.train_folds) & set(self.test_folds))} are in both "
                              "train_folds and test_folds.", hint="ECGAD: train_folds 1-9, test_folds [10].")
        self.crop = None if crop is None else (int(crop[0]), int(crop[1]))
        if self.crop is not None and not 0 <= self.crop[0] < self.crop[1]:
            raise ConfigError(f"PtbXl: crop {list(crop)} is not a range [start, end) of samples.")
        self.normalize = _check_normalize(normalize)
        self.filter_band = None if filter_band is None else [float(b) for b in filter_band]
        if normal_rule not in ("first", "only"):
            raise ConfigError(f"PtbXl: unknown normal_rule {normal_rule!r}.", hint="Use first (ECGAD) or only.")
        self.normal_rule = normal_rule
        self.leads = None if leads is None else [int(i) for i in leads]
        self.max_train_records = max_train_records
        self.max_test_records = max_test_records
        self._files: list[Path] = []

    def layout_hint(self) -> str:
        return (f"Expected the PTB-XL folder: <root>/{self.DATABASE}, <root>/{self.STATEMENTS} and the WFDB records "
                "it names (filename_hr: records500/00000/00001_hr.hea + .dat; filename_lr: records100/...).")

    def _table(self) -> Any:
        import pandas as pd

        if not self.root.is_dir():
            raise DataError(f"PtbXl: the folder {self.root} does not exist.", hint=self.layout_hint())
        paths = {name: self.root / name for name in (self.DATABASE, self.STATEMENTS)}
        for path in paths.values():
            if not path.is_file():
                raise DataError(f"PtbXl: {path} is missing.", hint=self.layout_hint())
        try:
            db = pd.read_csv(paths[self.DATABASE])
            statements = pd.read_csv(paths[self.STATEMENTS], index_col=0)
        except (OSError, ValueError) as err:
            raise DataError(f"PtbXl: the CSV files in {self.root} cannot be read: {err}",
                            hint=self.layout_hint()) from err
        column = "filename_hr" if self.sampling_rate == 500 else "filename_lr"
        needed = ["scp_codes", "strat_fold", column]
        missing = [c for c in needed if c not in db.columns]
        if missing:
            raise DataError(f"PtbXl: {paths[self.DATABASE]} lacks the column(s) {missing}.", hint=self.layout_hint())
        if "diagnostic_class" not in statements.columns:
            raise DataError(f"PtbXl: {paths[self.STATEMENTS]} lacks the column 'diagnostic_class'.",
                            hint=self.layout_hint())
        rows = statements[statements["diagnostic"] == 1] if "diagnostic" in statements.columns else statements
        diagnostic = rows["diagnostic_class"].dropna().to_dict()
        superclasses = []
        for text in db["scp_codes"]:
            try:
                codes = ast.literal_eval(str(text))
            except (ValueError, SyntaxError):
                codes = {}
            classes = list(dict.fromkeys(diagnostic[c] for c in (codes if isinstance(codes, dict) else {})
                                         if c in diagnostic))
            superclasses.append(classes)
        db = db.assign(superclasses=superclasses, file=db[column])
        return db[db["superclasses"].map(len) > 0]

    def _is_normal(self, classes: list[str]) -> bool:
        return classes[0] == "NORM" if self.normal_rule == "first" else set(classes) == {"NORM"}

    def _load(self, key: int) -> np.ndarray:
        import wfdb

        base = self._files[key]
        try:
            record = wfdb.rdrecord(str(base))
        except Exception as err:
            raise DataError(f"PtbXl: record {base} cannot be read: {type(err).__name__}: {err}",
                            hint=self.layout_hint()) from err
        signal = np.asarray(record.p_signal, dtype=np.float32).T
        return self._prepare(signal, float(record.fs), str(base))

    def _prepare(self, signal: np.ndarray, fs: float, where: str) -> np.ndarray:
        check_finite(signal, f"record {where}")
        if self.leads is not None:
            bad = [i for i in self.leads if not 0 <= i < signal.shape[0]]
            if bad:
                raise DataError(f"record {where} has {signal.shape[0]} leads; leads {bad} do not exist.")
            signal = signal[self.leads]
        end = self.crop[1] if self.crop is not None else signal.shape[1]
        if signal.shape[1] < end:
            raise DataError(f"record {where} has {signal.shape[1]} samples, shorter than one window (crop ends at "
                            f"{end}).", hint="Check the sampling rate (crop is in samples) or lower crop.")
        signal = bandpass(signal, fs, self.filter_band)
        if self.crop is not None:
            signal = signal[:, self.crop[0]:self.crop[1]]
        if self.normalize == "record":
            signal = robust_record_scale(signal)
        return normalize_windows(signal[None], self.normalize)[0]

    def _shape_of(self, base: Path) -> tuple[int, int]:
        import wfdb

        try:
            header = wfdb.rdheader(str(base))
        except Exception as err:
            raise DataError(f"PtbXl: record header {base}.hea cannot be read: {type(err).__name__}: {err}",
                            hint=self.layout_hint()) from err
        leads = len(self.leads) if self.leads is not None else int(header.n_sig)
        end = self.crop[1] if self.crop is not None else int(header.sig_len)
        if int(header.sig_len) < end:
            raise DataError(f"record {base} has {header.sig_len} samples, shorter than one window (crop ends at "
                            f"{end}).", hint="Check the sampling rate (crop is in samples) or lower crop.")
        return leads, (self.crop[1] - self.crop[0]) if self.crop is not None else int(header.sig_len)

    def _dataset(self, table: Any, labels: np.ndarray, split: str) -> SignalDataset:
        keys, names = [], []
        for file in table["file"]:
            base = self.root / str(file)
            if not base.with_suffix(".hea").is_file():
                raise DataError(f"PtbXl: record {base}.hea named in {self.DATABASE} does not exist.",
                                hint=self.layout_hint())
            keys.append(len(self._files))
            self._files.append(base)
            names.append(base.name)
        shapes = {self._shape_of(self._files[k]) for k in keys}
        if len(shapes) != 1:
            raise DataError(f"PtbXl: the {split} records have different shapes {sorted(shapes)}.",
                            hint="Set crop (and leads) so that every record gives the same window.")
        return SignalDataset(None, labels, names, [str(self._files[k]) for k in keys], loader=self._load,
                             shape=shapes.pop(), split=split, keys=keys)

    def _setup(self, _stage: str | None = None) -> None:
        table = self._table()
        normal = table["superclasses"].map(self._is_normal).to_numpy()
        rng = np.random.default_rng(self.seed)
        train = table[table["strat_fold"].isin(self.train_folds).to_numpy() & normal]
        test_mask = table["strat_fold"].isin(self.test_folds).to_numpy()
        test, test_labels = table[test_mask], (~normal[test_mask]).astype(np.int64)
        if self.max_train_records is not None and len(train) > self.max_train_records:
            train = train.iloc[np.sort(rng.choice(len(train), self.max_train_records, replace=False))]
        if self.max_test_records is not None and len(test) > self.max_test_records:
            pick = np.sort(rng.choice(len(test), self.max_test_records, replace=False))
            test, test_labels = test.iloc[pick], test_labels[pick]
        if len(train) == 0:
            raise DataError(f"PtbXl: no NORM records in folds {self.train_folds} of {self.root / self.DATABASE}.",
                            hint=self.layout_hint())
        self._files = []
        self.train_data = self._dataset(train, np.zeros(len(train), np.int64), "train")
        self.test_data = self._dataset(test, test_labels, "test") if len(test) else None

    def predict_dataset(self, path: str | Path) -> SignalDataset:
        """Records (WFDB headers) at ``path``, each prepared like the training records."""
        from uad_plugins.data.signals.io import read_wfdb_record

        files = list_files(path, (".hea",), "input")
        signals, names = [], []
        for file in files:
            record = read_wfdb_record(file, annotation=None)
            signals.append(self._prepare(record.signal, record.fs or float(self.sampling_rate), record.path))
            names.append(record.name)
        shapes = {s.shape for s in signals}
        if len(shapes) != 1:
            raise DataError(f"the records at {path} give windows of different shapes {sorted(shapes)}.")
        return SignalDataset(np.stack(signals), np.zeros(len(signals), np.int64), names,
                             [str(f.with_suffix("")) for f in files], split="predict")


# ========================================================================================================= arrays
class SignalFolder(SignalDataModule):
    """Generic signal arrays (``.npy``/``.csv``, one sample per row or file) in folders, like anomalib's ``Folder``.

    ``normal_dir`` holds normal samples; ``abnormal_dir`` anomalous test samples (optional ``mask_dir``: point masks
    in files of the same relative name and shape, 1 = anomalous point); ``normal_test_dir`` normal test samples
    (without it, a seeded share ``test_split_ratio`` of the normal samples is held out for testing). Each sample (a
    file, or a row of a multi-sample file) is one record for the splits. With ``length``, samples are cut into
    windows of that length (``stride``; default: non-overlapping); without it every sample must have the same
    length.

    Args:
        normal_dir, abnormal_dir, normal_test_dir, mask_dir: folders (or files), relative to ``root`` when given.
        root: optional base folder.
        n_leads: leads per sample (how 2-D arrays and CSV rows are read).
        length, stride: window length and step in samples.
        normalize: ``none`` (default), ``record`` (per sample, robust), ``zscore`` or ``minmax`` (per window).
        test_split_ratio: share of normal samples held out for testing when ``normal_test_dir`` is not given.
        train_batch_size, eval_batch_size, num_workers, seed, max_validation_windows: see
            :class:`SignalDataModule`.
    """

    def __init__(self, normal_dir: str, abnormal_dir: str | None = None, normal_test_dir: str | None = None,
                 mask_dir: str | None = None, root: str | None = None, n_leads: int = 1, length: int | None = None,
                 stride: int | None = None, normalize: str = "none", test_split_ratio: float = 0.2,
                 train_batch_size: int = 64, eval_batch_size: int = 64, num_workers: int = 0, seed: int = 0,
                 max_validation_windows: int | None = 1000) -> None:
        super().__init__(train_batch_size, eval_batch_size, num_workers, seed, max_validation_windows)
        self.root = None if root is None else Path(root)
        self.normal_dir, self.abnormal_dir = normal_dir, abnormal_dir
        self.normal_test_dir, self.mask_dir = normal_test_dir, mask_dir
        if int(n_leads) < 1:
            raise ConfigError(f"SignalFolder: n_leads must be at least 1, got {n_leads}.")
        self.n_leads = int(n_leads)
        if length is not None and int(length) < 2:
            raise ConfigError(f"SignalFolder: length must be at least 2 samples, got {length}.")
        self.length = None if length is None else int(length)
        self.stride = None if stride is None else int(stride)
        if self.stride is not None and self.stride < 1:
            raise ConfigError(f"SignalFolder: stride must be at least 1, got {stride}.")
        self.normalize = _check_normalize(normalize)
        if not 0.0 < float(test_split_ratio) < 1.0:
            raise ConfigError(f"SignalFolder: test_split_ratio must be in (0, 1), got {test_split_ratio}.")
        self.test_split_ratio = float(test_split_ratio)

    def layout_hint(self) -> str:
        return ("Expected: normal_dir with .npy/.csv normal samples (one per file, or one per row; a .npy may hold "
                "[N, K, Q]); optionally abnormal_dir (+ mask_dir with same-named masks) and normal_test_dir.")

    def _path(self, folder: str) -> Path:
        path = Path(folder).expanduser()
        return path if path.is_absolute() or self.root is None else self.root / path

    def _read_samples(self, folder: str, what: str) -> tuple[list[np.ndarray], list[str], list[str], list[Path]]:
        """Every sample under ``folder``: arrays ``[K, L]``, record ids, paths and the file of each."""
        base = self._path(folder)
        files = list_files(base, ARRAY_SUFFIXES, f"SignalFolder {what}")
        arrays, records, paths, sources = [], [], [], []
        for file in files:
            data = read_array_file(file, self.n_leads)
            rel = file.relative_to(base).as_posix() if base.is_dir() else file.name
            for row, sample in enumerate(data):
                arrays.append(sample)
                records.append(rel if len(data) == 1 else f"{rel}#{row}")
                paths.append(str(file))
                sources.append(file)
        return arrays, records, paths, sources

    def _window_length(self, arrays: list[np.ndarray], where: str) -> int:
        if self.length is not None:
            return self.length
        lengths = sorted({a.shape[-1] for a in arrays})
        if len(lengths) != 1:
            raise DataError(f"SignalFolder: the samples in {where} have different lengths {lengths[:6]}.",
                            hint="Set --data.length (and optionally --data.stride) to cut them into equal windows.")
        return lengths[0]

    def _to_windows(self, arrays: list[np.ndarray], records: list[str], paths: list[str], labels: list[int],
                    masks: list[np.ndarray | None], length: int, split: str) -> SignalDataset:
        out_w, out_m, out_l, out_r, out_p, out_s = [], [], [], [], [], []
        for sample, record, path, label, mask in zip(arrays, records, paths, labels, masks):
            if self.normalize == "record":
                sample = robust_record_scale(sample)
            windows, starts = sliding_windows(sample, length, self.stride, where=f"sample {record} ({path})")
            out_w.append(normalize_windows(windows, self.normalize))
            out_m.append(np.zeros_like(windows, np.uint8) if mask is None
                         else sliding_windows(mask.astype(np.float32), length, self.stride)[0].astype(np.uint8))
            out_l += [label] * len(windows)
            out_r += [record] * len(windows)
            out_p += [path] * len(windows)
            out_s.append(starts)
        has_masks = any(m is not None for m in masks)
        return SignalDataset(np.concatenate(out_w), out_l, out_r, out_p, np.concatenate(out_s),
                             np.concatenate(out_m) if has_masks else None, split=split)

    def _masks_for(self, folder: str, sources: list[Path], arrays: list[np.ndarray]) -> list[np.ndarray | None]:
        if self.mask_dir is None:
            return [None] * len(arrays)
        base, mask_base = self._path(folder), self._path(self.mask_dir)
        if not mask_base.is_dir():
            raise DataError(f"SignalFolder: mask_dir {mask_base} does not exist or is not a folder.")
        cache: dict[Path, np.ndarray] = {}
        out: list[np.ndarray | None] = []
        row_of: dict[Path, int] = {}
        for source, sample in zip(sources, arrays):
            rel = source.relative_to(base) if base.is_dir() else Path(source.name)
            mask_file = mask_base / rel
            if not mask_file.is_file():
                raise DataError(f"SignalFolder: no mask {mask_file} for the anomalous sample {source}.",
                                hint="Give every anomalous file a mask file of the same name and shape, or drop "
                                     "mask_dir.")
            if mask_file not in cache:
                cache[mask_file] = read_array_file(mask_file, self.n_leads)
            row = row_of.get(source, 0)
            row_of[source] = row + 1
            masks = cache[mask_file]
            if row >= len(masks) or masks[row].shape != sample.shape:
                raise DataError(f"SignalFolder: mask {mask_file} does not match the shape of {source}.")
            out.append((masks[row] > 0.5).astype(np.uint8))
        return out

    def _setup(self, _stage: str | None = None) -> None:
        arrays, records, paths, _ = self._read_samples(self.normal_dir, "normal_dir")
        length = self._window_length(arrays, self.normal_dir)
        n = len(arrays)
        if self.normal_test_dir is None:
            rng = np.random.default_rng(self.seed)
            n_test = min(max(1, round(n * self.test_split_ratio)), n - 1) if n > 1 else 0
            test_idx = set(rng.permutation(n)[:n_test].tolist())
        else:
            test_idx = set()
        train_idx = [i for i in range(n) if i not in test_idx]
        self.train_data = self._to_windows([arrays[i] for i in train_idx], [records[i] for i in train_idx],
                                           [paths[i] for i in train_idx], [0] * len(train_idx),
                                           [None] * len(train_idx), length, "train")
        t_arrays = [arrays[i] for i in sorted(test_idx)]
        t_records = [records[i] for i in sorted(test_idx)]
        t_paths = [paths[i] for i in sorted(test_idx)]
        t_labels, t_masks = [0] * len(t_arrays), [None] * len(t_arrays)
        if self.normal_test_dir is not None:
            a, r, p, _ = self._read_samples(self.normal_test_dir, "normal_test_dir")
            t_arrays += a
            t_records += [f"test/{x}" for x in r]
            t_paths += p
            t_labels += [0] * len(a)
            t_masks += [None] * len(a)
        if self.abnormal_dir is not None:
            a, r, p, sources = self._read_samples(self.abnormal_dir, "abnormal_dir")
            t_masks += self._masks_for(self.abnormal_dir, sources, a)
            t_arrays += a
            t_records += [f"abnormal/{x}" for x in r]
            t_paths += p
            t_labels += [1] * len(a)
        if t_arrays:
            if any(m is not None for m in t_masks):
                t_masks = [m if m is not None else np.zeros_like(a, np.uint8) for m, a in zip(t_masks, t_arrays)]
            self.test_data = self._to_windows(t_arrays, t_records, t_paths, t_labels, t_masks, length, "test")
        else:
            self.test_data = None

    def predict_dataset(self, path: str | Path) -> SignalDataset:
        """Windows of the ``.npy``/``.csv`` samples at ``path``, cut and normalised like the training windows."""
        length = self.signal_shape[1]
        files = list_files(path, ARRAY_SUFFIXES, "input")
        arrays, records, paths = [], [], []
        for file in files:
            data = read_array_file(file, self.n_leads)
            for row, sample in enumerate(data):
                arrays.append(sample)
                records.append(file.name if len(data) == 1 else f"{file.name}#{row}")
                paths.append(str(file))
        return self._to_windows(arrays, records, paths, [0] * len(arrays), [None] * len(arrays), length, "predict")
