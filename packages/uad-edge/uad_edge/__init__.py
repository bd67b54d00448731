"""Edge runtime: run an exported bundle with ``openvino`` + ``numpy`` (+ ``pillow`` for image files and plots) only.

    from uad_edge import load_bundle           # the same names: from uad_plugins.edge import ...
    model = load_bundle("bundle_fp32")
    result = model.predict(["part_001.png"], resize=True)       # an image bundle
    result.pred_score, result.pred_label, result.anomaly_map
    for r in model.predict_iter(paths, batch_size=8, resize=True):   # any number of files, bounded memory
        r.source, r.pred_score, r.error

    ecg = load_bundle("ecg_bundle_fp32")                         # a signal bundle: windows [K, Q] or [B, K, Q]
    result = ecg.predict(windows.astype("float32"))              # anomaly_map / pred_mask [B, K, Q]

Importing this package never imports torch, and nothing of it imports ``uad_plugins``: ``pip install uad-edge``
(``packages/uad-edge`` in the uad_plugins repository) brings openvino, numpy and pillow only.
"""

from __future__ import annotations

import importlib
from typing import Any

from uad_edge.errors import EdgeError, UadError
from uad_edge.version import __version__

#: the runtime's names, imported on first use: ``import uad_edge.errors`` (which ``uad_plugins.errors`` does) and
#: ``uad_edge.cli`` stay standard-library only, and numpy is imported only when the runtime is
_LAZY = {
    **dict.fromkeys(["MODALITIES", "SUPPORTED_FORMAT_VERSIONS", "EdgeModel", "EdgePrediction", "EdgeResult",
                     "list_images", "load_bundle", "read_manifest"], "uad_edge.runtime"),
    **dict.fromkeys(["check_signals", "list_signal_files", "read_signal_file", "signal_plot"], "uad_edge.signals"),
}

__all__ = ["MODALITIES", "SUPPORTED_FORMAT_VERSIONS", "EdgeError", "EdgeModel", "EdgePrediction", "EdgeResult",
           "UadError", "__version__", "check_signals", "list_images", "list_signal_files", "load_bundle",
           "read_manifest", "read_signal_file", "signal_plot"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
