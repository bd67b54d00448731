"""The plugin contract: three registration hooks, nothing else.

A plugin is a module with one or more of these functions, each marked ``@hookimpl``. A hook returns one spec
or an iterable of specs (a list, a tuple, or a generator). Hooks take no arguments and must stay cheap: import
only ``uad_plugins`` and the standard library in a hooks module, and name heavy classes by a lazy
``"package.module:Class"`` target.

Third-party packages declare the module in ``pyproject.toml``::

    [project.entry-points.uad_plugins]
    example = "uad_example.hooks"

See ``docs/plugins/writing.md`` for a walk-through.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from uad_plugins.specs import MetricSpec, ModelSpec, SynthesizerSpec

PROJECT = "uad_plugins"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["PROJECT", "hookimpl", "hookspec", "uad_register_metrics", "uad_register_models",
           "uad_register_synthesizers"]


@hookspec
def uad_register_models() -> ModelSpec | Iterable[ModelSpec]:
    """Register model components (Lightning modules subclassing anomalib's ``AnomalibModule``).

    Example::

        @hookimpl
        def uad_register_models():
            return ModelSpec(name="example", target="uad_example.model:ExampleModel",
                             summary="A tiny convolutional autoencoder.", tags=("image", "exportable"))

    .. versionadded:: 0.1
    """


@hookspec
def uad_register_synthesizers() -> SynthesizerSpec | Iterable[SynthesizerSpec]:
    """Register synthesizers: components that make synthetic anomalies (subclass ``uad_plugins.synth.Synthesizer``).

    Example::

        @hookimpl
        def uad_register_synthesizers():
            yield SynthesizerSpec(name="blot", target="uad_blot.synth:Blot", summary="Ink blots.")

    .. versionadded:: 0.1
    """


@hookspec
def uad_register_metrics() -> MetricSpec | Iterable[MetricSpec]:
    """Register metrics (subclasses of anomalib's ``AnomalibMetric``) selectable with ``--metrics plugin:<name>``.

    Example::

        @hookimpl
        def uad_register_metrics():
            return [MetricSpec(name="image_auroc", target="anomalib.metrics:AUROC",
                               config={"fields": ["pred_score", "gt_label"], "prefix": "image_"})]

    .. versionadded:: 0.1
    """
