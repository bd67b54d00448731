"""OpenVINO export: bundles (IR + manifest + parity report) checked by a parity gate. Imports torch."""

from uad_plugins.export.bundle import BUNDLE_FORMAT_VERSION, PRECISIONS, export_bundle
from uad_plugins.export.graph import ExportError, PostStats
from uad_plugins.export.samples import Samples, take_samples

__all__ = ["BUNDLE_FORMAT_VERSION", "PRECISIONS", "ExportError", "PostStats", "Samples", "export_bundle",
           "take_samples"]
