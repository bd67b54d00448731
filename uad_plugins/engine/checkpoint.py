"""Checkpoints that know what they are: the uad block stored in every checkpoint, and loading it back.

Lightning already writes checkpoints atomically (to a buffer, then one transactional write), so a checkpoint
lands whole or not at all; this module adds the provenance needed to rebuild the model from the file alone.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback

from uad_plugins.errors import ConfigError, UadError

__all__ = ["UadCheckpointMetadata", "load_model_from_checkpoint", "read_checkpoint_metadata"]

KEY = "uad_plugins"


class UadCheckpointMetadata(Callback):
    """Stores ``{"model": reference, "class_path": ..., "data": ..., "plugins": ...}`` in every checkpoint."""

    def __init__(self, metadata: dict[str, Any]) -> None:
        self.metadata = metadata

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        cls = type(pl_module)
        checkpoint[KEY] = {"class_path": f"{cls.__module__}.{cls.__qualname__}", **self.metadata}
        # Metric states belong to an evaluation run, not to the model: the checkpoint must load into a model
        # built with any metric selection.
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith("evaluator.")]:
            del state[key]


def read_checkpoint_metadata(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(uad metadata, hyper_parameters)`` of a checkpoint; clear errors for a missing or unreadable file."""
    import torch
    from anomalib.utils.serialization import anomalib_safe_globals

    file = Path(path)
    if not file.is_file():
        raise UadError(f"checkpoint not found: {file}",
                       hint="Pass the model.ckpt of a run folder (printed at the end of 'uad fit').")
    try:
        with anomalib_safe_globals():
            ckpt = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UadError(f"checkpoint {file} cannot be read: {type(exc).__name__}: {str(exc)[:300]}",
                       hint="The file is truncated or not a Lightning checkpoint; train again or use another file.") \
            from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise UadError(f"{file} is not a Lightning checkpoint (no state_dict).")
    return dict(ckpt.get(KEY) or {}), dict(ckpt.get("hyper_parameters") or {})


def load_model_from_checkpoint(path: str | Path, expected_class_path: str | None = None):
    """Rebuild the model stored in a checkpoint written by ``uad fit`` (or any AnomalibModule checkpoint).

    Backbone weights come from the checkpoint's state dict, so ``pretrained`` is switched off while rebuilding:
    the checkpoint is self-contained and needs no weights file or hub.
    """
    meta, hparams = read_checkpoint_metadata(path)
    class_path = meta.get("class_path") or expected_class_path
    if not class_path:
        raise ConfigError(f"checkpoint {path} does not say which model it holds (it was not written by uad).",
                          hint="Also pass --model plugin:<name> (or the model's class path).")
    if expected_class_path and expected_class_path != class_path:
        raise ConfigError(
            f"checkpoint {path} holds a {class_path}, but {expected_class_path} was asked for.",
            hint="Drop --model to use the checkpoint's own model, or pass the checkpoint of the right model.")
    module_name, _, attr = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:
        raise ConfigError(f"checkpoint {path} holds a {class_path}, which cannot be imported: {exc}",
                          hint="Install the plugin package that provides this model.") from exc
    overrides = {"pretrained": False} if "pretrained" in hparams else {}
    try:
        model = cls.load_from_checkpoint(str(path), map_location="cpu", **overrides)
    except Exception as exc:
        raise UadError(f"checkpoint {path} does not load into {class_path}: {type(exc).__name__}: {str(exc)[:400]}",
                       hint="The checkpoint may come from another version of the model.") from exc
    if meta.get("model"):
        try:
            from uad_plugins.factory import get_spec

            spec = get_spec("model", meta["model"])
            if spec is not None:
                model._uad_spec = spec
        except UadError:
            pass  # provenance is best effort: the plugin may have been renamed since
    return model
