"""Edge runtime: run an exported bundle with ``openvino`` + ``numpy`` (+ ``pillow`` for image files and plots) only.

    from uad_plugins.edge import load_bundle
    model = load_bundle("bundle_fp32")
    result = model.predict(["part_001.png"], resize=True)       # an image bundle
    result.pred_score, result.pred_label, result.anomaly_map
    for r in model.predict_iter(paths, batch_size=8, resize=True):   # any number of files, bounded memory
        r.source, r.pred_score, r.error

    ecg = load_bundle("ecg_bundle_fp32")                         # a signal bundle: windows [K, Q] or [B, K, Q]
    result = ecg.predict(windows.astype("float32"))              # anomaly_map / pred_mask [B, K, Q]

Importing this package never imports torch (``uad_plugins/__init__`` is light too).
"""

from uad_plugins.edge.errors import EdgeError
from uad_plugins.edge.runtime import (
    MODALITIES,
    SUPPORTED_FORMAT_VERSIONS,
    EdgeModel,
    EdgePrediction,
    EdgeResult,
    list_images,
    load_bundle,
    read_manifest,
)
from uad_plugins.edge.signals import check_signals, list_signal_files, read_signal_file, signal_plot

__all__ = ["MODALITIES", "SUPPORTED_FORMAT_VERSIONS", "EdgeError", "EdgeModel", "EdgePrediction", "EdgeResult",
           "check_signals", "list_images", "list_signal_files", "load_bundle", "read_manifest", "read_signal_file",
           "signal_plot"]
