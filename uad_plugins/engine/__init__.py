"""The core engine: a thin layer over anomalib's Engine (its names import torch and anomalib on first use)."""

from __future__ import annotations

from typing import Any

from uad_plugins.imports import import_object

__all__ = ["DEFAULT_METRICS", "RunRecord", "UadEngine", "build_evaluator", "load_checkpoint",
           "load_model_from_checkpoint"]

# Imported on first use, so light submodules (engine.run: run folders, JSON writing) do not pull in anomalib.
_LAZY = {"load_model_from_checkpoint": "uad_plugins.engine.checkpoint",
         "load_checkpoint": "uad_plugins.engine.checkpoint", "RunRecord": "uad_plugins.engine.checkpoint",
         "UadEngine": "uad_plugins.engine.engine",
         "DEFAULT_METRICS": "uad_plugins.engine.metrics", "build_evaluator": "uad_plugins.engine.metrics"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return import_object(f"{_LAZY[name]}:{name}")
    raise AttributeError(f"module 'uad_plugins.engine' has no attribute {name!r}")
