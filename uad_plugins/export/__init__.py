"""OpenVINO export of image and signal models: bundles (IR + manifest + parity report) checked by a parity gate.
Imports torch.

The door is :func:`export_checkpoint` (a checkpoint in, a bundle out); ``export_bundle`` is its last step (a model
in memory and its samples in, a bundle out).
"""

from uad_plugins.export.bundle import BUNDLE_FORMAT_VERSION, PRECISIONS, export_bundle
from uad_plugins.export.checkpoint import ExportedBundle, default_bundle_path, export_checkpoint
from uad_plugins.export.graph import ExportError, PostStats
from uad_plugins.export.samples import Samples, describe_signal_preparation, take_samples

__all__ = ["BUNDLE_FORMAT_VERSION", "PRECISIONS", "ExportError", "ExportedBundle", "PostStats", "Samples",
           "default_bundle_path", "describe_signal_preparation", "export_bundle", "export_checkpoint",
           "take_samples"]
