"""Checking a model's settings: one ConfigError naming the option, its value and what it must be."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from uad_plugins.errors import ConfigError

__all__ = ["check_settings", "positive_int", "schedule_checks", "transformer_checks"]

#: (option, is it usable, what it must be)
Check = tuple[str, bool, str]


def positive_int(value: Any) -> bool:
    """A positive ``int`` (``bool`` excluded)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def schedule_checks(values: Mapping[str, Any]) -> list[Check]:
    """The suggested schedule: ``max_epochs`` and ``max_steps`` each a positive integer or ``None``, not both
    ``None`` (with both, training ends at whichever comes first)."""
    epochs, steps = values["max_epochs"], values["max_steps"]
    return [
        ("max_epochs", epochs is None or positive_int(epochs), "a positive integer or null"),
        ("max_steps", steps is None or positive_int(steps), "a positive integer or null"),
        ("max_steps", epochs is not None or steps is not None,
         "a positive integer when max_epochs is null (one of them bounds training)"),
    ]


def check_settings(model: str, values: Mapping[str, Any], checks: Sequence[Check]) -> None:
    """Raise a ConfigError for the first failed check: ``<model>: <option>=<value> is not usable; ...``."""
    for key, ok, expected in checks:
        if not ok:
            raise ConfigError(f"{model}: {key}={values[key]!r} is not usable; it must be {expected}.",
                              hint=f"Fix --model.{key}.")


def transformer_checks(values: Mapping[str, Any]) -> list[Check]:
    """The checks every UniAD-family model (shared backbone, encoder and training schedule) needs."""
    return [
        ("image_size", positive_int(values["image_size"]) and values["image_size"] >= 32, "an integer >= 32 (224)"),
        ("hidden_dim", positive_int(values["hidden_dim"]) and values["hidden_dim"] % 2 == 0,
         "a positive even integer"),
        ("num_heads", positive_int(values["num_heads"]) and values["hidden_dim"] % values["num_heads"] == 0,
         "a positive divisor of hidden_dim (8)"),
        ("num_encoder_layers", positive_int(values["num_encoder_layers"]), "a positive integer (4)"),
        ("num_decoder_layers", positive_int(values["num_decoder_layers"]), "a positive integer (4)"),
        ("dim_feedforward", positive_int(values["dim_feedforward"]), "a positive integer (1024)"),
        ("dropout", 0 <= values["dropout"] < 1, "in [0, 1) (0.1)"),
        ("neighbor_size", isinstance(values["neighbor_size"], int) and values["neighbor_size"] >= 0
         and (values["neighbor_size"] == 0 or values["neighbor_size"] % 2 == 1), "0 (off) or an odd integer (7)"),
        ("jitter_scale", values["jitter_scale"] >= 0, ">= 0 (20)"),
        ("jitter_prob", 0 <= values["jitter_prob"] <= 1, "in [0, 1] (1.0)"),
        ("lr", values["lr"] > 0, "> 0 (1e-4)"),
        ("weight_decay", values["weight_decay"] >= 0, ">= 0 (1e-4)"),
        ("lr_decay_at", 0 <= values["lr_decay_at"] <= 1, "in [0, 1] (0.8; 0 = no decay)"),
        ("gradient_clip_val", values["gradient_clip_val"] >= 0, ">= 0 (0.1)"),
        *schedule_checks(values),
    ]
