"""Reading and checking ECG records and generic signal arrays; beat and sliding windows; normalisation.

Every problem a user's data can have is a :class:`~uad_plugins.errors.DataError` that names the file and says
what to do: NaN/inf samples, a record shorter than one window, a lead count that does not match, an empty folder,
an unknown extension, a missing CSV.

Formats:

* **MIT-BIH subset npz** (``ecg_adc`` int16, ``fs``, ``adc_gain``, ``adc_zero``, ``r_peaks``, ``pvc_peaks``,
  optional ``lead``): one record, one lead (the record's first WFDB channel); values are converted to millivolts.
  Without a ``lead`` array, an MIT-BIH record name gets its first channel's lead from the database headers
  (:data:`MITBIH_FIRST_LEAD`: MLII except 102, 104 and 114, which are V5).
* **WFDB** (``NAME.hea`` + signal files, optional annotation ``NAME.atr``), read with the ``wfdb`` package.
* **Generic arrays**: ``.npy`` (``[Q]`` or ``[K, Q]``: one sample; ``[N, Q]`` with one lead or ``[N, K, Q]``:
  ``N`` samples) and ``.csv`` (one sample per row; a multi-lead row holds the ``K`` leads one after the other).
"""

from __future__ import annotations

import logging
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from uad_edge.files import find_files, path_problem, read_npy, read_npy_header
from uad_edge.signals import read_signal_csv
from uad_plugins.errors import ConfigError, DataError

__all__ = [
    "ARRAY_SUFFIXES",
    "BEAT_SYMBOLS",
    "MITBIH_FIRST_LEAD",
    "NORMALIZE_MODES",
    "SignalRecord",
    "bandpass",
    "beat_span_mask",
    "beat_windows",
    "check_finite",
    "list_files",
    "normalize_windows",
    "read_array_file",
    "read_mitbih_npz",
    "read_record",
    "read_record_leads",
    "read_wfdb_record",
    "robust_record_scale",
    "sliding_windows",
]

logger = logging.getLogger(__name__)

#: generic array files (one sample per row or file)
ARRAY_SUFFIXES = (".npy", ".csv")
#: MIT-BIH beat annotation symbols (the non-beat annotations such as rhythm changes are skipped)
BEAT_SYMBOLS = frozenset("N L R B A a J S V r F e j n E / f Q ?".split())
#: the 48 MIT-BIH Arrhythmia Database records
MITBIH_RECORDS = frozenset(
    "100 101 102 103 104 105 106 107 108 109 111 112 113 114 115 116 117 118 119 121 122 123 124 200 201 202 203 205 "
    "207 208 209 210 212 213 214 215 217 219 220 221 222 223 228 230 231 232 233 234".split())
#: lead of the first channel of each MIT-BIH record (its ``.hea`` header): MLII, except 102 and 104 (V5: surgical
#: dressings kept MLII off) and 114 (V5 first, MLII second). A one-channel extract of 114 is therefore V5.
MITBIH_FIRST_LEAD = {name: "MLII" for name in MITBIH_RECORDS} | {"102": "V5", "104": "V5", "114": "V5"}
#: how windows are normalised: none, per record (robust), per window z-score, per window min-max to [-1, 1]
NORMALIZE_MODES = ("none", "record", "zscore", "minmax")
_FORMATS_HINT = ("Supported: MIT-BIH npz records (ecg_adc, fs, r_peaks, pvc_peaks), WFDB records (NAME.hea + data), "
                 "and generic arrays (.npy, .csv; one sample per row or file).")


@dataclass
class SignalRecord:
    """One record: ``signal [K, L]`` float32 (millivolts where the format says), beats and their labels."""

    name: str
    path: str
    signal: np.ndarray
    fs: float | None = None
    leads: list[str] = field(default_factory=list)
    beats: np.ndarray | None = None
    beat_labels: np.ndarray | None = None

    @property
    def n_leads(self) -> int:
        return int(self.signal.shape[0])

    @property
    def length(self) -> int:
        return int(self.signal.shape[1])


def check_finite(array: np.ndarray, where: str) -> None:
    """NaN or infinite samples -> DataError naming how many and the first position."""
    bad = ~np.isfinite(array)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{where} has {int(bad.sum())} NaN or infinite sample(s) (first at index {first}).",
                        hint="Repair or interpolate the missing samples, or remove the file from the dataset.")


def list_files(path: str | Path, suffixes: Sequence[str], what: str) -> list[Path]:
    """Files under ``path`` (a file or a folder, searched recursively, hidden names skipped) with one of
    ``suffixes``; clear errors for a missing path, an empty folder, an unknown extension, and a symbolic-link loop,
    broken link or unlistable folder (named, never skipped)."""
    target = Path(path)
    wanted = tuple(s.lower() for s in suffixes)
    if not target.is_dir() and not target.is_file():
        raise DataError(f"{what} {target} {path_problem(target) or 'cannot be read'}.", hint="Check the path.")
    if target.is_file():
        if target.suffix.lower() not in wanted:
            raise DataError(f"{what} {target} has an unknown extension {target.suffix!r}.",
                            hint=f"Expected one of {', '.join(wanted)}. {_FORMATS_HINT}")
        return [target]
    matching = find_files(target, wanted, error=DataError)
    if not matching:
        files = find_files(target, None, error=DataError)
        if not files:
            raise DataError(f"{what} {target} is empty.", hint=f"Put the signal files there. {_FORMATS_HINT}")
        others = sorted({p.suffix or p.name for p in files})
        raise DataError(f"{what} {target} holds no {'/'.join(wanted)} files (found: {', '.join(others[:8])}).",
                        hint=f"Expected one of {', '.join(wanted)}. {_FORMATS_HINT}")
    return matching


# ----------------------------------------------------------------------------------------------------- records
#: the largest expansion of deflate (an npz member written by numpy.savez_compressed)
_DEFLATE_MAX_RATIO = 1032


def _check_npz(path: Path, keys: Sequence[str] | None) -> None:
    """Check every wanted member of an npz archive before numpy allocates it: a size that its compressed bytes can
    hold, and for an array a NumPy header (no Python objects) that declares exactly the member's size."""
    hint = "The file is corrupt or not a numpy .npz archive."
    if (problem := path_problem(path)) is not None:
        raise DataError(f"{path} {problem}.", hint="Check the path.")
    archive = path.stat().st_size
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            key = info.filename.removesuffix(".npy")
            if keys is not None and key not in keys:
                continue
            label = f"{path} (array {key!r})"
            stored = info.compress_type == zipfile.ZIP_STORED
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise DataError(f"{label} is compressed with zip method {info.compress_type}; numpy writes stored "
                                "or deflated arrays.", hint=hint)
            if info.compress_size > archive or (stored and info.file_size != info.compress_size) \
                    or info.file_size > _DEFLATE_MAX_RATIO * info.compress_size + 1024:
                raise DataError(f"{label}: its zip entry claims {info.file_size:,} bytes from {info.compress_size:,} "
                                f"compressed bytes in a {archive:,}-byte file; the archive is corrupt.", hint=hint)
            with zf.open(info) as fh:
                is_array = fh.read(len(np.lib.format.MAGIC_PREFIX)) == np.lib.format.MAGIC_PREFIX
            if is_array:  # numpy reads a member with a NumPy header as an array (others as bytes, at most file_size)
                with zf.open(info) as fh:
                    read_npy_header(fh, info.file_size, label, kinds="biufUS", what="numbers or text",
                                    error=DataError)


def _read_npz(path: Path, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of an npz archive (only ``keys`` that it holds, when given), or a DataError naming the file.
    Each array's header is checked against the archive before it is loaded (see :func:`_check_npz`)."""
    try:
        _check_npz(path, keys)
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files if keys is None or k in keys}
    except (OSError, ValueError, EOFError, RuntimeError, zipfile.BadZipFile, zlib.error) as err:
        raise DataError(f"{path} cannot be read as an npz record: {err}", hint="The file is corrupt or not a numpy "
                        ".npz archive.") from err


def read_mitbih_npz(path: str | Path) -> SignalRecord:
    """Read a record of the MIT-BIH subset npz format (one lead, millivolts, PVC beats labelled 1)."""
    path = Path(path)
    data = _read_npz(path)
    missing = [k for k in ("ecg_adc", "fs", "r_peaks") if k not in data]
    if missing:
        raise DataError(f"{path} lacks the array(s) {missing} (it has {sorted(data)}).",
                        hint="An MIT-BIH npz record holds ecg_adc, fs, r_peaks and optionally pvc_peaks, adc_gain, "
                             "adc_zero.")
    adc = np.asarray(data["ecg_adc"]).reshape(-1).astype(np.float64)
    gain = float(data.get("adc_gain", 200.0))
    zero = float(data.get("adc_zero", 1024.0))
    signal = ((adc - zero) / gain).astype(np.float32)[None]
    check_finite(signal, f"record {path}")
    beats = np.asarray(data["r_peaks"]).astype(np.int64).reshape(-1)
    pvc = np.asarray(data.get("pvc_peaks", np.zeros(0, np.int64))).astype(np.int64).reshape(-1)
    labels = np.isin(beats, pvc).astype(np.int64)
    return SignalRecord(name=path.stem, path=str(path), signal=signal, fs=float(data["fs"]),
                        leads=_npz_leads(path.stem, data.get("lead")), beats=beats, beat_labels=labels)


def _npz_leads(name: str, stored: np.ndarray | None) -> list[str]:
    """The npz record's lead: its own ``lead`` array, else the MIT-BIH header table, else unknown (``[]``)."""
    if stored is not None:
        return [str(v) for v in np.asarray(stored).reshape(-1)]
    return [MITBIH_FIRST_LEAD[name]] if name in MITBIH_FIRST_LEAD else []


def read_record_leads(path: str | Path) -> list[str]:
    """Lead names of an npz or WFDB record without reading its samples (``[]`` when the file does not say)."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        return _npz_leads(path.stem, _read_npz(path, ["lead"]).get("lead"))  # the samples are not read
    import wfdb

    base = path.with_suffix("") if path.suffix.lower() == ".hea" else path
    try:
        return list(wfdb.rdheader(str(base)).sig_name or [])
    except Exception as err:
        raise DataError(f"WFDB header {base}.hea cannot be read: {type(err).__name__}: {err}",
                        hint="Check that the header file is complete.") from err


def read_wfdb_record(path: str | Path, *, annotation: str | None = "atr",
                     anomaly_symbols: Sequence[str] = ("V",)) -> SignalRecord:
    """Read a WFDB record (``NAME.hea`` or ``NAME``) with ``wfdb``; beats from the annotation file when it exists.

    Beats are the annotations with a beat symbol (:data:`BEAT_SYMBOLS`); those in ``anomaly_symbols`` get label 1.
    """
    import wfdb

    path = Path(path)
    base = path.with_suffix("") if path.suffix.lower() == ".hea" else path
    if not base.with_suffix(".hea").is_file():
        raise DataError(f"WFDB header {base.with_suffix('.hea')} does not exist.",
                        hint="A WFDB record is NAME.hea plus its signal file(s) (e.g. NAME.dat) in one folder.")
    try:
        record = wfdb.rdrecord(str(base))
    except Exception as err:
        raise DataError(f"WFDB record {base} cannot be read: {type(err).__name__}: {err}",
                        hint="Check that the header and its signal file(s) are complete.") from err
    if record.p_signal is None:
        raise DataError(f"WFDB record {base} holds no physical signal.")
    signal = np.asarray(record.p_signal, dtype=np.float32).T.copy()
    check_finite(signal, f"WFDB record {base}")
    beats = labels = None
    if annotation and base.with_suffix(f".{annotation}").is_file():
        try:
            ann = wfdb.rdann(str(base), annotation)
        except Exception as err:
            raise DataError(f"WFDB annotation {base}.{annotation} cannot be read: {type(err).__name__}: {err}") \
                from err
        symbols = np.asarray(ann.symbol)
        keep = np.isin(symbols, sorted(BEAT_SYMBOLS))
        beats = np.asarray(ann.sample, dtype=np.int64)[keep]
        labels = np.isin(symbols[keep], list(anomaly_symbols)).astype(np.int64)
    return SignalRecord(name=base.name, path=str(base), signal=signal, fs=float(record.fs),
                        leads=list(record.sig_name or []), beats=beats, beat_labels=labels)


def read_record(path: str | Path, **wfdb_options: object) -> SignalRecord:
    """Read an npz or WFDB record by its extension."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return read_mitbih_npz(path)
    if suffix == ".hea" or (not suffix and path.with_suffix(".hea").is_file()):
        return read_wfdb_record(path, **wfdb_options)  # type: ignore[arg-type]
    raise DataError(f"record {path} has an unknown extension {path.suffix!r}.", hint=_FORMATS_HINT)


# ----------------------------------------------------------------------------------------------------- arrays
def read_array_file(path: str | Path, n_leads: int) -> np.ndarray:
    """Read a generic ``.npy`` or ``.csv`` file as samples ``[N, K, L]`` float32 (``K = n_leads``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in ARRAY_SUFFIXES and (problem := path_problem(path)) is not None:
        raise DataError(f"{path} {problem}.", hint="Check the path.")
    if suffix == ".npy":
        # the header is checked against the file size before anything is allocated; pickles are never loaded
        try:
            array = read_npy(path, kinds="iuf", what="numbers", name="it", error=DataError)
        except DataError as err:
            raise DataError(f"{path} cannot be read as a numpy array: {err.message}", hint=err.hint) from None
        shape = tuple(array.shape)
        array = np.asarray(array, dtype=np.float64)
        if array.ndim == 1:
            array = array[None, None]
        elif array.ndim == 2:
            if n_leads == 1:
                array = array[:, None]  # [N, Q]: one sample per row
            elif array.shape[0] == n_leads:
                array = array[None]  # [K, Q]: one sample
            else:
                raise DataError(f"{path} holds an array of shape {tuple(array.shape)}, but {n_leads} leads are "
                                "expected.", hint=f"Save one sample as [{n_leads}, Q] or several as "
                                                  f"[N, {n_leads}, Q] (or set n_leads to the file's lead count).")
        elif array.ndim != 3:
            raise DataError(f"{path} holds a {array.ndim}-D array; expected [Q], [K, Q], [N, Q] or [N, K, Q].")
        if array.shape[0] == 0:
            raise DataError(f"{path} holds no samples (an array of shape {shape}).",
                            hint="Remove the empty file, or save at least one sample in it.")
    elif suffix == ".csv":
        rows = read_signal_csv(path, unit="sample", error=DataError)
        if rows.shape[1] % n_leads:
            raise DataError(f"{path}: a row holds {rows.shape[1]} values, not a multiple of {n_leads} leads.",
                            hint="A multi-lead row holds the K leads one after the other (lead-major).")
        array = rows.reshape(rows.shape[0], n_leads, rows.shape[1] // n_leads)
    else:
        raise DataError(f"{path} has an unknown extension {path.suffix!r}.",
                        hint=f"Expected one of {', '.join(ARRAY_SUFFIXES)}. {_FORMATS_HINT}")
    if array.shape[1] != n_leads:
        raise DataError(f"{path} has {array.shape[1]} lead(s), but {n_leads} are expected.",
                        hint=f"Set n_leads to {array.shape[1]} (and the model's n_leads), or give "
                             f"{n_leads}-lead data.")
    if array.shape[-1] < 2:
        raise DataError(f"{path} holds samples of length {array.shape[-1]}.")
    check_finite(array, f"file {path}")
    return array.astype(np.float32)


# ----------------------------------------------------------------------------------------------------- windows
def beat_windows(record: SignalRecord, pre: int, post: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows ``[N, K, pre + post]`` starting ``pre`` samples before each annotated beat, with their labels and
    start samples; beats too close to either end of the record are skipped."""
    if record.beats is None:
        raise DataError(f"record {record.path} has no beat annotations.",
                        hint="Beat windows need r_peaks (npz) or a WFDB annotation file (NAME.atr).")
    length = pre + post
    if record.length < length:
        raise DataError(f"record {record.path} has {record.length} samples, shorter than one window ({length}).",
                        hint="Use longer records or a shorter window (pre + post).")
    starts = record.beats - pre
    ok = (starts >= 0) & (starts + length <= record.length)
    starts, labels = starts[ok], (record.beat_labels if record.beat_labels is not None
                                  else np.zeros(len(record.beats), np.int64))[ok]
    index = starts[:, None] + np.arange(length)[None]
    windows = record.signal[:, index].transpose(1, 0, 2)  # [K, N, Q] -> [N, K, Q]
    return np.ascontiguousarray(windows, dtype=np.float32), labels.astype(np.int64), starts.astype(np.int64)


def beat_span_mask(length: int, beats: np.ndarray, labels: np.ndarray, before: int, after: int) -> np.ndarray:
    """``[length]`` uint8 point labels of a record: 1 on ``[beat - before, beat + after)`` around every beat whose
    label is non-zero (clipped to the record), 0 elsewhere."""
    mask = np.zeros(int(length), np.uint8)
    for beat in np.asarray(beats, np.int64)[np.asarray(labels).reshape(-1) != 0]:
        mask[max(int(beat) - before, 0):max(min(int(beat) + after, int(length)), 0)] = 1
    return mask


def sliding_windows(signal: np.ndarray, length: int, stride: int | None = None, where: str = "sample"
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``signal [K, L]`` into windows ``[N, K, length]`` (stride ``length`` by default); return them and their
    starts. A signal shorter than one window is a DataError."""
    stride = stride or length
    total = signal.shape[-1]
    if total < length:
        raise DataError(f"{where} has {total} samples, shorter than one window ({length}).",
                        hint="Use longer signals or a shorter window length.")
    starts = np.arange(0, total - length + 1, stride, dtype=np.int64)
    index = starts[:, None] + np.arange(length)[None]
    return np.ascontiguousarray(signal[:, index].transpose(1, 0, 2), dtype=np.float32), starts


# ----------------------------------------------------------------------------------------------------- scaling
def robust_record_scale(signal: np.ndarray) -> np.ndarray:
    """Per lead: subtract the median and divide by the robust standard deviation (1.4826 MAD; std if MAD is 0)."""
    median = np.median(signal, axis=-1, keepdims=True)
    mad = 1.4826 * np.median(np.abs(signal - median), axis=-1, keepdims=True)
    std = signal.std(axis=-1, keepdims=True)
    scale = np.where(mad > 1e-8, mad, np.where(std > 1e-8, std, 1.0))
    return ((signal - median) / scale).astype(np.float32)


def normalize_windows(windows: np.ndarray, mode: str) -> np.ndarray:
    """Per-window, per-lead normalisation of ``[N, K, Q]``: ``zscore`` or ``minmax`` (to [-1, 1], as ECGAD);
    ``none`` and ``record`` (done on the whole record before windowing) leave the windows unchanged."""
    if mode in ("none", "record"):
        return windows
    if mode == "zscore":
        mean = windows.mean(axis=-1, keepdims=True)
        std = windows.std(axis=-1, keepdims=True)
        return ((windows - mean) / np.where(std > 1e-8, std, 1.0)).astype(np.float32)
    if mode == "minmax":
        low = windows.min(axis=-1, keepdims=True)
        high = windows.max(axis=-1, keepdims=True)
        span = np.where(high - low > 1e-8, high - low, 1.0)
        return (2.0 * (windows - low) / span - 1.0).astype(np.float32)
    raise ConfigError(f"unknown normalize mode {mode!r}.", hint=f"Use one of {', '.join(NORMALIZE_MODES)}.")


def bandpass(signal: np.ndarray, fs: float, band: Sequence[float] | None, order: int = 2) -> np.ndarray:
    """Zero-phase Butterworth band-pass of ``[K, L]`` along time (``band = [low_hz, high_hz]``; ``None``: off)."""
    if band is None:
        return signal
    from scipy.signal import butter, sosfiltfilt

    low, high = (float(b) for b in band)
    nyquist = fs / 2.0
    if not 0.0 < low < high < nyquist:
        raise ConfigError(f"filter band {list(band)} Hz does not fit a signal sampled at {fs:g} Hz.",
                          hint=f"Give 0 < low < high < {nyquist:g} (half the sampling rate), or null to switch the "
                               "filter off.")
    sos = butter(order, [low / nyquist, high / nyquist], btype="band", output="sos")
    return sosfiltfilt(sos, signal, axis=-1).astype(np.float32)
