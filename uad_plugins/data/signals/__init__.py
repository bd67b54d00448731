"""1-D signals (ECG): batch types, readers, datamodules, honest validation, plots and file synthesis.

Importing this package imports torch and anomalib (``uad_plugins`` itself does not); ``wfdb`` and matplotlib are
imported only when used. See ``docs/signals.md``.
"""

from __future__ import annotations

from uad_plugins.data.signals.batch import SignalBatch, SignalItem
from uad_plugins.data.signals.datamodules import (
    DEFAULT_MITBIH_TEST,
    DEFAULT_MITBIH_TRAIN,
    MitBihBeats,
    MitBihWindows,
    PtbXl,
    SignalDataModule,
    SignalFolder,
)
from uad_plugins.data.signals.dataset import SignalDataset
from uad_plugins.data.signals.io import (
    SignalRecord,
    beat_span_mask,
    beat_windows,
    read_array_file,
    read_mitbih_npz,
    read_record,
    read_wfdb_record,
    sliding_windows,
)
from uad_plugins.data.signals.synth import find_signal_files, write_signal_files
from uad_plugins.data.signals.synthetic import make_synthetic_signal_folder, synthetic_ecg_windows
from uad_plugins.data.signals.validation import synthetic_signal_validation
from uad_plugins.data.signals.visualize import SignalVisualizer, plot_signal

__all__ = [
    "DEFAULT_MITBIH_TEST",
    "DEFAULT_MITBIH_TRAIN",
    "MitBihBeats",
    "MitBihWindows",
    "PtbXl",
    "SignalBatch",
    "SignalDataModule",
    "SignalDataset",
    "SignalFolder",
    "SignalItem",
    "SignalRecord",
    "SignalVisualizer",
    "beat_span_mask",
    "beat_windows",
    "find_signal_files",
    "make_synthetic_signal_folder",
    "plot_signal",
    "read_array_file",
    "read_mitbih_npz",
    "read_record",
    "read_wfdb_record",
    "sliding_windows",
    "synthetic_ecg_windows",
    "synthetic_signal_validation",
    "write_signal_files",
]
