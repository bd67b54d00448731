"""Point clouds: file IO, geometry, batches and previews (torch-free at import).

    read_pointcloud, write_pointcloud, list_pointcloud_files, PointCloud   files (io.py)
    PointCloudBatch, PointCloudItem                                       anomalib-style batches (batch.py)
    render_preview                                                         PNG previews (render.py)

The synthesizer base class (:class:`uad_plugins.data.pointcloud.synthesizer.PointCloudSynthesizer`) imports torch and
is therefore not imported here.
"""

from __future__ import annotations

from uad_plugins.data.pointcloud.batch import PointCloudBatch, PointCloudItem
from uad_plugins.data.pointcloud.io import (
    FORMATS,
    SUFFIXES,
    PointCloud,
    list_pointcloud_files,
    read_pointcloud,
    write_pointcloud,
)
from uad_plugins.data.pointcloud.render import render_preview

__all__ = [
    "FORMATS",
    "SUFFIXES",
    "PointCloud",
    "PointCloudBatch",
    "PointCloudItem",
    "list_pointcloud_files",
    "read_pointcloud",
    "render_preview",
    "write_pointcloud",
]
