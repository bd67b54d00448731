"""Checkpoints that know what they are: the uad block stored in every checkpoint, and loading it back.

Lightning already writes checkpoints atomically (to a buffer, then one transactional write), so a checkpoint
lands whole or not at all; this module adds the provenance needed to rebuild the model from the file alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomalib.engine.plugins.checkpoint_io import AnomalibCheckpointIO
from lightning.pytorch import Callback

from uad_plugins.errors import ConfigError, UadError
from uad_plugins.trust import (
    UntrustedSettingError,
    check_init_args,
    check_plain,
    checked_class,
    option_names,
    untrusted,
)

__all__ = ["RunRecord", "UadCheckpointMetadata", "WeightsOnlyCheckpointIO", "data_without_workers",
           "load_checkpoint", "load_model_from_checkpoint", "read_checkpoint", "read_checkpoint_metadata"]

KEY = "uad_plugins"


class UadCheckpointMetadata(Callback):
    """Stores the run's :class:`RunRecord` (model reference and class, data, seed, validation, threshold, plugins)
    in every checkpoint, as the ``uad_plugins`` block."""

    def __init__(self, record: RunRecord) -> None:
        self.record = record

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        cls = type(pl_module)
        checkpoint[KEY] = self.record.to_metadata(class_path=f"{cls.__module__}.{cls.__qualname__}")
        # Metric states belong to an evaluation run, not to the model: the checkpoint must load into a model
        # built with any metric selection.
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith("evaluator.")]:
            del state[key]


class WeightsOnlyCheckpointIO(AnomalibCheckpointIO):
    """anomalib's checkpoint IO, pinned to ``weights_only=True``: Lightning passes ``weights_only=None`` for
    ``trainer.fit/test(ckpt_path=...)``, which ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` would turn into a full
    unpickle.

    ``metric_state`` (set by the engine to the restored model's ``evaluator.*`` entries) fills in the metric states
    that :class:`UadCheckpointMetadata` leaves out of every checkpoint, so a strict restore (resume) finds them.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metric_state: dict[str, Any] = {}

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = True) -> dict:
        del weights_only
        checkpoint = super().load_checkpoint(path, map_location=map_location, weights_only=True)
        state = checkpoint.get("state_dict")
        if isinstance(state, dict):
            for key, value in self.metric_state.items():
                state.setdefault(key, value)
        return checkpoint


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The whole checkpoint dict, read with ``weights_only=True`` (tensors and plain data only, whatever
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` says); clear errors for a missing or unreadable file, or one whose uad
    block or hyper-parameters are not mappings. What the metadata names is checked later (:class:`RunRecord`,
    :func:`load_checkpoint`)."""
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
                       hint="The file is truncated, not a Lightning checkpoint, or holds objects other than tensors "
                            "and plain data (refused: loading them could run code); train again or use another "
                            "file.") from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise UadError(f"{file} is not a Lightning checkpoint (no state_dict).")
    if not isinstance(ckpt.get(KEY) or {}, Mapping) or not isinstance(ckpt.get("hyper_parameters") or {}, Mapping):
        raise UntrustedSettingError(f"checkpoint {file}: its '{KEY}' or 'hyper_parameters' block is not a mapping.",
                                    hint="The file was not written by 'uad fit' or was edited; use another file.")
    return ckpt


def read_checkpoint_metadata(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(uad metadata, hyper_parameters)`` of a checkpoint (see :func:`read_checkpoint`)."""
    ckpt = read_checkpoint(path)
    return dict(ckpt.get(KEY) or {}), dict(ckpt.get("hyper_parameters") or {})


@dataclass(frozen=True)
class RunRecord:
    """A run's identity: written into every checkpoint by the engine (:meth:`to_metadata`), read back with every
    field checked (:meth:`from_metadata`, see ``uad_plugins.trust``).

    Attributes:
        path: the checkpoint it was read from (``None`` while the engine writes it).
        class_path: the model class (``None`` for a checkpoint not written by uad).
        model: the registry reference the model was built from (``plugin:pbas``), if any.
        data: the datamodule as ``{"class_path", "init_args"}`` (an allowed datamodule class, plain options).
        seed: the run's seed.
        validation_synthesizer: the synthesizer reference of honest validation (``None``: the data's default).
        validation_ratio: share of training normals held back for validation.
        honest_validation: whether fit built validation from training normals + synthetic anomalies.
        plugins: the components recorded at fit time (informational).
        threshold: the threshold rule the fit used (``f1_adaptive`` or ``normal_quantile``).
        false_alarm_rate: the target false-alarm rate of ``normal_quantile``.
    """

    path: Path | None = None
    class_path: str | None = None
    model: str | None = None
    data: dict[str, Any] | None = None
    seed: int | None = None
    validation_synthesizer: str | dict[str, Any] | None = None
    validation_ratio: float = 0.2
    honest_validation: bool = True
    plugins: tuple[Any, ...] = ()
    threshold: str = "f1_adaptive"
    false_alarm_rate: float = 0.01

    @property
    def origin(self) -> str:
        """How errors name where these settings come from."""
        return f"checkpoint {self.path}"

    def to_metadata(self, class_path: str | None = None) -> dict[str, Any]:
        """The checkpoint's ``uad_plugins`` block (what :meth:`from_metadata` reads back)."""
        threshold: dict[str, Any] = {"rule": self.threshold}
        if self.threshold == "normal_quantile":
            threshold["false_alarm_rate"] = self.false_alarm_rate
        return {"class_path": class_path or self.class_path, "model": self.model, "plugins": list(self.plugins),
                "threshold": threshold, "data": self.data, "seed": self.seed,
                "validation": {"synthesizer": self.validation_synthesizer, "ratio": self.validation_ratio,
                               "honest": self.honest_validation}}

    @classmethod
    def from_metadata(cls, path: str | Path, meta: Mapping[str, Any]) -> RunRecord:
        """Check a checkpoint's uad block field by field; nothing it names is called here."""
        path = Path(path)
        origin = f"checkpoint {path}"
        with untrusted(origin):
            class_path = meta.get("class_path")
            if class_path is not None and not isinstance(class_path, str):
                raise UntrustedSettingError(f"{origin}: field '{KEY}.class_path' is not a string.")
            reference = meta.get("model")
            if reference is not None and not isinstance(reference, str):
                raise UntrustedSettingError(f"{origin}: field '{KEY}.model' is not a string.")
            data = _checked_data(meta.get("data"), origin)
            seed = meta.get("seed")
            if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 32):
                raise UntrustedSettingError(f"{origin}: field '{KEY}.seed' is {seed!r:.40}, not an integer seed.")
            validation = meta.get("validation") or {}
            if not isinstance(validation, Mapping):
                raise UntrustedSettingError(f"{origin}: field '{KEY}.validation' is not a mapping.")
            synthesizer = _checked_synthesizer(validation.get("synthesizer"), origin)
            ratio = validation.get("ratio", 0.2)
            ratio = 0.2 if ratio is None else ratio
            if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < float(ratio) < 1:
                raise UntrustedSettingError(f"{origin}: field '{KEY}.validation.ratio' is {ratio!r:.40}, not a "
                                            "share in (0, 1).")
            honest = validation.get("honest", True)
            threshold, false_alarm_rate = _checked_threshold(meta.get("threshold"), origin)
            plugins = meta.get("plugins") or []
            check_plain(plugins, field=f"{KEY}.plugins", origin=origin, components=False)  # read, never built
        return cls(path=path, class_path=class_path, model=reference, data=data, seed=seed,
                   validation_synthesizer=synthesizer, validation_ratio=float(ratio), honest_validation=bool(honest),
                   plugins=tuple(plugins) if isinstance(plugins, (list, tuple)) else (), threshold=threshold,
                   false_alarm_rate=false_alarm_rate)

    def build_datamodule(self, overrides: Mapping[str, Any] | None = None) -> Any:
        """The recorded datamodule (``overrides``: init args the user changes), built through the checked door."""
        from uad_plugins.factory import create_datamodule

        if not self.data:
            raise ConfigError(f"{self.origin} does not record its data.",
                              hint="Pass --data (e.g. --data MVTecAD --data.root ... --data.category ...).")
        if overrides:  # the user's own changes: named as theirs, not as the checkpoint's
            cls = checked_class("data", self.data["class_path"], field=f"{KEY}.data.class_path", origin=self.origin)
            names, takes_any = option_names(cls)
            unknown = sorted(k for k in overrides if k not in names)
            if unknown and not takes_any:
                raise ConfigError(f"--data.{unknown[0]}: {cls.__name__} has no option '{unknown[0]}'.",
                                  hint=f"Its options: {', '.join(sorted(names))}.")
        with untrusted(self.origin):
            return create_datamodule(data_without_workers(self.data), **dict(overrides or {}))


def data_without_workers(data: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A ``{class_path, init_args}`` data record without ``num_workers``: the worker count is the machine's, not the
    run's (``None`` for no record)."""
    if not data:
        return None
    init_args = data.get("init_args")
    if isinstance(init_args, Mapping):
        return {**data, "init_args": {k: v for k, v in init_args.items() if k != "num_workers"}}
    return dict(data)


def _checked_threshold(block: Any, origin: str) -> tuple[str, float]:
    """The recorded threshold rule (anomalib's F1-adaptive for checkpoints that record none)."""
    from uad_plugins.engine.thresholds import THRESHOLD_RULES

    if block is None:
        return "f1_adaptive", 0.01
    if not isinstance(block, Mapping):
        raise UntrustedSettingError(f"{origin}: field '{KEY}.threshold' is not a mapping.")
    rule, rate = block.get("rule", "f1_adaptive"), block.get("false_alarm_rate", 0.01)
    if rule not in THRESHOLD_RULES:
        raise UntrustedSettingError(f"{origin}: field '{KEY}.threshold.rule' is {rule!r:.40}, not one of "
                                    f"{', '.join(THRESHOLD_RULES)}.")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < float(rate) < 1:
        raise UntrustedSettingError(f"{origin}: field '{KEY}.threshold.false_alarm_rate' is {rate!r:.40}, not a "
                                    "rate in (0, 1).")
    return str(rule), float(rate)


def _checked_data(data: Any, origin: str) -> dict[str, Any] | None:
    if data is None:
        return None
    field = f"{KEY}.data"
    if not isinstance(data, Mapping) or not isinstance(data.get("class_path"), str) \
            or not set(data) <= {"class_path", "init_args"}:
        raise UntrustedSettingError(f"{origin}: field '{field}' is not a {{class_path, init_args}} mapping.")
    init_args = data.get("init_args") or {}
    cls = checked_class("data", data["class_path"], field=f"{field}.class_path", origin=origin)
    check_init_args(cls, init_args, field=f"{field}.init_args", origin=origin)
    return {"class_path": data["class_path"], "init_args": dict(init_args)}


def _checked_synthesizer(reference: Any, origin: str) -> str | dict[str, Any] | None:
    """A stored validation-synthesizer reference: a registered ``plugin:NAME``, or an allowed class, plain args."""
    from uad_plugins.factory import resolve_component

    if reference is None:
        return None
    field = f"{KEY}.validation.synthesizer"
    if isinstance(reference, Mapping):
        if not isinstance(reference.get("class_path"), str) or not set(reference) <= {"class_path", "init_args"}:
            raise UntrustedSettingError(f"{origin}: field '{field}' is not a {{class_path, init_args}} mapping.")
        resolve_component("synthesizer", reference, flag=field)  # checks class and init args, calls nothing
        return {"class_path": reference["class_path"], "init_args": dict(reference.get("init_args") or {})}
    if not isinstance(reference, str):
        raise UntrustedSettingError(f"{origin}: field '{field}' is a {type(reference).__name__}, not a reference.")
    resolve_component("synthesizer", reference, flag=field)
    return reference


def load_checkpoint(path: str | Path, expected_class_path: str | None = None) -> tuple[Any, RunRecord]:
    """Rebuild the model stored in a checkpoint written by ``uad fit`` (or any AnomalibModule checkpoint), and the
    checked record of its run.

    The model class is imported only when it is a registered model or an anomalib model (``uad_plugins.trust``);
    ``expected_class_path`` (the user's ``--model``) must match it. Backbone weights come from the checkpoint's
    state dict, so ``pretrained`` is switched off while rebuilding: the checkpoint is self-contained and needs no
    weights file or hub. Anything the model builds while loading (a synthesizer named in its hyper-parameters)
    goes through the same checks.
    """
    meta, hparams = read_checkpoint_metadata(path)
    record = RunRecord.from_metadata(path, meta)
    class_path = record.class_path or expected_class_path
    if not class_path:
        raise ConfigError(f"checkpoint {path} does not say which model it holds (it was not written by uad).",
                          hint="Also pass --model plugin:<name> (or the model's class path).")
    if expected_class_path and expected_class_path != class_path:
        raise ConfigError(
            f"checkpoint {path} holds a {class_path}, but {expected_class_path} was asked for.",
            hint="Drop --model to use the checkpoint's own model, or pass the checkpoint of the right model.")
    if record.class_path:
        cls = checked_class("model", class_path, field=f"{KEY}.class_path", origin=record.origin)
    else:  # the user named the class (--model): their choice, imported as any --model is
        from uad_plugins.factory import resolve_component

        cls, _, _ = resolve_component("model", class_path, flag="--model")
    overrides = {"pretrained": False} if "pretrained" in hparams else {}
    try:
        from uad_plugins.components.backbones import weights_from_checkpoint

        with untrusted(record.origin), weights_from_checkpoint():
            model = cls.load_from_checkpoint(str(path), map_location="cpu", weights_only=True, **overrides)
    except UadError:
        raise
    except Exception as exc:
        raise UadError(f"checkpoint {path} does not load into {class_path}: {type(exc).__name__}: {str(exc)[:400]}",
                       hint="The checkpoint may come from another version of the model.") from exc
    return model, record


def load_model_from_checkpoint(path: str | Path, expected_class_path: str | None = None) -> Any:
    """The model of :func:`load_checkpoint` (kept for callers that need only the model)."""
    return load_checkpoint(path, expected_class_path)[0]
