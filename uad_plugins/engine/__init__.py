"""The core engine: a thin layer over anomalib's Engine (imports torch and anomalib)."""

from uad_plugins.engine.checkpoint import load_model_from_checkpoint
from uad_plugins.engine.engine import UadEngine
from uad_plugins.engine.metrics import DEFAULT_METRICS, build_evaluator

__all__ = ["DEFAULT_METRICS", "UadEngine", "build_evaluator", "load_model_from_checkpoint"]
