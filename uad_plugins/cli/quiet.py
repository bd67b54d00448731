"""Warnings the CLI silences before importing Lightning/anomalib: notices about things done on purpose."""

from __future__ import annotations

import warnings

__all__ = ["quiet_imports"]


def quiet_imports() -> None:
    """Silence deprecation chatter and the notices about deliberate choices (few workers, frozen backbones)."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LitLogger.*")
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")  # frozen backbones, on purpose
