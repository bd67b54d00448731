"""uad_plugins: a plugin framework for unsupervised anomaly detection on top of anomalib.

Importing this package is cheap (no torch). The public API:

    create_model, create_synthesizer, create_metric, create_datamodule, list_components   one door each
    hookimpl, ModelSpec, SynthesizerSpec, MetricSpec                    what plugin authors use
    UadError                                                            base of every user-facing error
"""

from __future__ import annotations

from uad_plugins.errors import UadError
from uad_plugins.factory import (
    create_datamodule,
    create_metric,
    create_model,
    create_synthesizer,
    get_spec,
    list_components,
)
from uad_plugins.hookspecs import hookimpl
from uad_plugins.specs import MetricSpec, ModelSpec, SynthesizerSpec
from uad_plugins.version import __version__

__all__ = [
    "MetricSpec",
    "ModelSpec",
    "SynthesizerSpec",
    "UadError",
    "__version__",
    "create_datamodule",
    "create_metric",
    "create_model",
    "create_synthesizer",
    "get_spec",
    "hookimpl",
    "list_components",
]
