"""The edge runtime's public names, re-exported from ``uad_edge`` (``packages/uad-edge``, a distribution of its own
that uad_plugins depends on): ``from uad_plugins.edge import load_bundle`` is ``from uad_edge import load_bundle``.

The modules behind them are ``uad_edge.<module>`` (``uad_edge.ovms``, ``uad_edge.atomic``, ...); on an edge box,
``pip install uad-edge`` gives them without torch.
"""

from uad_edge import (
    MODALITIES,
    SUPPORTED_FORMAT_VERSIONS,
    EdgeError,
    EdgeModel,
    EdgePrediction,
    EdgeResult,
    check_signals,
    list_images,
    list_signal_files,
    load_bundle,
    read_manifest,
    read_signal_file,
    signal_plot,
)

__all__ = ["MODALITIES", "SUPPORTED_FORMAT_VERSIONS", "EdgeError", "EdgeModel", "EdgePrediction", "EdgeResult",
           "check_signals", "list_images", "list_signal_files", "load_bundle", "read_manifest", "read_signal_file",
           "signal_plot"]
