"""OpenVINO export of image and signal models: bundles (IR + manifest + parity report) checked by a parity gate.
Imports torch."""

from uad_plugins.export.bundle import BUNDLE_FORMAT_VERSION, PRECISIONS, export_bundle
from uad_plugins.export.graph import ExportError, PostStats
from uad_plugins.export.samples import Samples, describe_signal_preparation, take_samples

__all__ = ["BUNDLE_FORMAT_VERSION", "PRECISIONS", "ExportError", "PostStats", "Samples", "describe_signal_preparation",
           "export_bundle", "take_samples"]
