"""uad_plugins.protocols: the modalities, modality_of, and a standard-library-only import."""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import get_args

from uad_plugins.protocols import (
    DEFAULT_MODALITY,
    MODALITIES,
    DataModuleExtras,
    Modality,
    ModelExtras,
    PredictionBatchExtras,
    SynthesizerExtras,
    modality_of,
)


class _Signal:
    modality = "signal"


class _Unset:
    modality = None


def test_modalities_are_the_literal_values_image_first() -> None:
    assert MODALITIES == get_args(Modality) == ("image", "signal", "pointcloud", "feature")
    assert DEFAULT_MODALITY == MODALITIES[0] == "image"


def test_modality_of_instances_and_classes() -> None:
    assert modality_of(_Signal) == modality_of(_Signal()) == "signal"
    assert modality_of(object()) == modality_of(object) == "image"  # no attribute
    assert modality_of(_Unset()) == "image"  # None counts as unset
    odd = type("Odd", (), {"modality": "video"})
    assert modality_of(odd) == "video"  # not checked: each caller says what it does not handle


def test_modality_of_the_built_in_components() -> None:
    from uad_plugins.data.pointcloud.synthesizer import PointCloudSynthesizer
    from uad_plugins.synth import Synthesizer

    assert modality_of(Synthesizer) == "image" and modality_of(PointCloudSynthesizer) == "pointcloud"


def test_protocols_document_the_optional_attributes() -> None:
    assert {"modality", "default_metrics", "signal_shape", "input_size"} <= set(ModelExtras.__annotations__)
    assert {"modality", "name", "category", "default_validation_synthesizer"} <= set(DataModuleExtras.__annotations__)
    for method in ("synthetic_validation", "stratified_synthetic_validation", "predict_loader"):
        assert getattr(DataModuleExtras, method).__doc__
    assert SynthesizerExtras.partial_fit.__doc__ and PredictionBatchExtras.prediction_rows.__doc__


def test_protocols_import_only_the_standard_library() -> None:
    import uad_plugins.protocols as protocols

    tree = ast.parse(Path(protocols.__file__).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported and all(name.split(".")[0] in sys.stdlib_module_names for name in imported), imported
