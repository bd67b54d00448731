"""Edge runtime: run an exported bundle with ``openvino`` + ``numpy`` (+ ``pillow`` for image files) only.

    from uad_plugins.edge import load_bundle
    model = load_bundle("bundle_fp32")
    result = model.predict(["part_001.png"], resize=True)
    result.pred_score, result.pred_label, result.anomaly_map

Importing this package never imports torch (``uad_plugins/__init__`` is light too).
"""

from uad_plugins.edge.runtime import (
    SUPPORTED_FORMAT_VERSIONS,
    EdgeError,
    EdgeModel,
    EdgePrediction,
    list_images,
    load_bundle,
    read_manifest,
)

__all__ = ["SUPPORTED_FORMAT_VERSIONS", "EdgeError", "EdgeModel", "EdgePrediction", "list_images", "load_bundle",
           "read_manifest"]
