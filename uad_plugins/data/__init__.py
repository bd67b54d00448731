"""Data for uad_plugins: the embedded demo dataset, input checks, honest (synthetic) validation splits, and the
signal (:mod:`uad_plugins.data.signals`) and point-cloud (:mod:`uad_plugins.data.pointcloud`) subpackages.

The names below are imported on first use (PEP 562), so ``import uad_plugins.data.pointcloud`` stays torch-free;
touching any of them (``uad_plugins.data.UadDemo``, ``from uad_plugins.data import prepare_datamodule``) imports
torch and anomalib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from uad_plugins.data.checks import (
        MIN_SIDE,
        check_datamodule,
        check_dataset_samples,
        check_image_file,
        list_image_files,
        prepare_datamodule,
        read_rgb_image,
    )
    from uad_plugins.data.demo import (
        DEMO_CATEGORIES,
        DEMO_DEFECTS,
        DEMO_VERSION,
        UadDemo,
        default_demo_root,
        ensure_demo_dataset,
        generate_demo_dataset,
    )
    from uad_plugins.data.multiclass import (
        CategoryFolders,
        UnifiedDataModule,
        UnifiedMVTecAD,
        UnifiedUadDemo,
        UnifiedVisa,
    )
    from uad_plugins.data.validation import apply_synthetic_validation, needs_honest_validation

#: public name -> the submodule that defines it
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("MIN_SIDE", "check_datamodule", "check_dataset_samples", "check_image_file",
                     "list_image_files", "prepare_datamodule", "read_rgb_image"), "checks"),
    **dict.fromkeys(("DEMO_CATEGORIES", "DEMO_DEFECTS", "DEMO_VERSION", "UadDemo", "default_demo_root",
                     "ensure_demo_dataset", "generate_demo_dataset"), "demo"),
    **dict.fromkeys(("CategoryFolders", "UnifiedDataModule", "UnifiedMVTecAD", "UnifiedUadDemo", "UnifiedVisa"),
                    "multiclass"),
    **dict.fromkeys(("apply_synthetic_validation", "needs_honest_validation"), "validation"),
}

__all__ = [
    "DEMO_CATEGORIES",
    "DEMO_DEFECTS",
    "DEMO_VERSION",
    "MIN_SIDE",
    "CategoryFolders",
    "UadDemo",
    "UnifiedDataModule",
    "UnifiedMVTecAD",
    "UnifiedUadDemo",
    "UnifiedVisa",
    "apply_synthetic_validation",
    "check_datamodule",
    "check_dataset_samples",
    "check_image_file",
    "default_demo_root",
    "ensure_demo_dataset",
    "generate_demo_dataset",
    "list_image_files",
    "needs_honest_validation",
    "prepare_datamodule",
    "read_rgb_image",
]


def __getattr__(name: str) -> Any:
    """Import a public name's submodule on first use (and cache the name here)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
