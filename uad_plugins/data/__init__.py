"""Data for uad_plugins: the embedded demo dataset, input checks and honest (synthetic) validation splits.

Importing this package imports torch and anomalib; ``uad_plugins`` itself does not import it.
"""

from __future__ import annotations

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
