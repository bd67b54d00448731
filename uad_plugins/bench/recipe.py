"""Benchmark recipes: a YAML file naming models x data x precisions, loaded and checked with clear errors.

A recipe looks like::

    name: pbas_bottle            # optional, default: the file's stem
    models:
      - name: pbas
        model: plugin:pbas       # or an anomalib class path / short name (Padim, anomalib.models.Patchcore)
        init_args: {image_size: 256}
        reference: false         # true for the anomalib reference rows
        trainer: {max_epochs: 10}          # per-model Trainer overrides (null removes a recipe-wide key)
        fit: {feature_cache: memory, stop_when_stable: 0.05}   # per-model fit options of the uad engine
        precisions: [fp32]       # per-model override of the recipe's precisions
        image_size: 256          # anomalib models: build their default pre-processor at this size
        backbone_weights: lite0_imagenet   # load the offline Lite0 ImageNet weights into timm extractors
      - name: uniad
        model: plugin:uniad
        ckpt_path: results/Uniad/MVTecAD/bottle/v0/weights/lightning/model.ckpt   # benchmark a trained model
      - name: uniad_other
        model: plugin:uniad
        ckpt_from: uniad         # the checkpoint an earlier entry trained or loaded in this run, on the same data
        overrides: {some_init_arg: value}   # init args changed on a checkpoint model when it is rebuilt
    data:
      - class_path: MVTecAD      # short anomalib names, UadDemo, or a dotted path
        init_args: {root: ../shared/data/mvtec_ad_256, category: bottle}
    trainer: {enable_progress_bar: false}
    precisions: [fp32, fp16, int8]
    batch_sizes: [1, 8]
    timing: {warmup: 3, iterations: 20}
    export: {parity_samples: 16, calibration_samples: 64, max_metric_drop: 0.01, timeout_s: 1800,
             int8_strategy: accuracy_control}
    seed: 0
    threads: 2

Signal models work the same way with a signal datamodule (short names ``MitBihBeats``, ``PtbXl``,
``SignalFolder``)::

    models: [{name: mmae_ecg, model: plugin:mmae_ecg, init_args: {n_leads: 1, length: 256}}]
    data: [{class_path: MitBihBeats, init_args: {root: ../shared/data/ecg/mitbih_subset}}]

Every model must take the data's modality (image or signal); ``image_size`` and ``backbone_weights`` are for image
models only.

A model with ``ckpt_path`` is not trained: the checkpoint (written by ``uad fit``) is loaded, so it takes no
``init_args``, ``trainer``, ``image_size`` or ``backbone_weights``. Relative data roots and checkpoint paths are
resolved against the current working directory when the recipe is loaded. ``ckpt_from`` is the same for the
checkpoint that an earlier entry (same model) produced on each dataset in this run, so one recipe can train a model
and score its checkpoint again with other settings. ``overrides`` (only with ``ckpt_path`` or ``ckpt_from``) are
init args written over the checkpoint's hyper-parameters before the model is rebuilt (into a copy under
``<output>/checkpoints``, which the OpenVINO rows export too), for switches that leave the weights valid, such as
``plugin:fader``'s ``gates``. This module
imports only the standard library and PyYAML; :func:`resolve_references` imports the model and data classes.
"""

from __future__ import annotations

import copy
import inspect
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from uad_plugins.errors import ConfigError, close_matches
from uad_plugins.imports import import_object
from uad_plugins.protocols import modality_of

__all__ = ["BACKBONE_WEIGHTS", "PRECISIONS", "DataEntry", "ModelEntry", "Recipe", "load_recipe", "parse_recipe",
           "resolve_references"]

PRECISIONS = ("fp32", "fp16", "int8")
#: values of a model's ``backbone_weights`` key
BACKBONE_WEIGHTS = ("lite0_imagenet",)

_TOP_KEYS = {"name", "description", "models", "data", "trainer", "precisions", "batch_sizes", "timing", "export",
             "seed", "threads", "metrics"}
_MODEL_KEYS = {"name", "model", "init_args", "reference", "trainer", "image_size", "backbone_weights", "precisions",
               "ckpt_path", "ckpt_from", "overrides", "fit"}
#: the uad engine's fit options a model entry may set under ``fit`` (``UadEngine`` checks their values)
FIT_OPTIONS = frozenset({"feature_cache", "feature_cache_budget_mb", "feature_cache_dir", "stop_when_stable"})
_NOT_WITH_CKPT = ("init_args", "trainer", "image_size", "backbone_weights", "fit")
_DATA_KEYS = {"name", "class_path", "init_args"}
_TIMING_KEYS = {"warmup", "iterations"}
_EXPORT_KEYS = {"parity_samples", "calibration_samples", "max_metric_drop", "timeout_s", "int8_strategy"}
_DATA_ALIASES = {"UadDemo": "uad_plugins.data.UadDemo",
                 "MitBihBeats": "uad_plugins.data.signals.MitBihBeats",
                 "MitBihWindows": "uad_plugins.data.signals.MitBihWindows",
                 "PtbXl": "uad_plugins.data.signals.PtbXl",
                 "SignalFolder": "uad_plugins.data.signals.SignalFolder"}
_MANAGED_TRAINER_KEYS = {"default_root_dir", "callbacks", "logger"}


@dataclass(frozen=True)
class ModelEntry:
    """One model of a recipe."""

    name: str
    model: str
    init_args: dict[str, Any] = field(default_factory=dict)
    reference: bool = False
    trainer: dict[str, Any] = field(default_factory=dict)
    image_size: int | None = None
    backbone_weights: str | None = None
    precisions: tuple[str, ...] | None = None
    ckpt_path: str | None = None
    ckpt_from: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataEntry:
    """One datamodule of a recipe (``class_path`` already expanded to a dotted path)."""

    name: str
    class_path: str
    init_args: dict[str, Any] = field(default_factory=dict)

    @property
    def category(self) -> str:
        """The category the datamodule is built for: its ``category``, else a Folder's dataset ``name`` ('' when it
        has neither)."""
        return str(self.init_args.get("category") or self.init_args.get("name") or "")


@dataclass(frozen=True)
class Recipe:
    """A checked benchmark recipe."""

    name: str
    models: tuple[ModelEntry, ...]
    data: tuple[DataEntry, ...]
    trainer: dict[str, Any] = field(default_factory=dict)
    precisions: tuple[str, ...] = PRECISIONS
    batch_sizes: tuple[int, ...] = (1, 8)
    warmup: int = 3
    iterations: int = 20
    seed: int | None = 0
    threads: int = 2
    #: quality field -> metric reference replacing the default one (e.g. ``point_AUROC: plugin:ecg_point_auroc``)
    metrics: dict[str, str] = field(default_factory=dict)
    parity_samples: int = 16
    calibration_samples: int = 64
    max_metric_drop: float = 0.01
    timeout_s: float = 1800.0
    int8_strategy: str = "accuracy_control"
    description: str = ""
    path: str | None = None
    text: str = ""

    def quick(self) -> Recipe:
        """The same recipe with at most 1 warm-up and 3 timed iterations (a smoke run, not a measurement)."""
        return replace(self, warmup=min(self.warmup, 1), iterations=min(self.iterations, 3))

    def with_seed(self, seed: int) -> Recipe:
        """The same recipe with another seed (``uad bench --seed``: one run per seed, same models and data)."""
        return replace(self, seed=_int(seed, "--seed", 0))

    def with_models(self, names: list[str]) -> Recipe:
        """The same recipe with only the named model entries (``uad bench --models``), in the recipe's order, plus
        the entries they take a checkpoint from (``ckpt_from``). Each row is fitted on its own with the recipe's
        seed, so a row's numbers do not depend on which other rows run."""
        known = [m.name for m in self.models]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"--models: recipe {self.name} has no model entry {unknown[0]!r}.",
                              hint=f"Its entries: {', '.join(known)}.")
        wanted = set(names)
        by_name = {m.name: m for m in self.models}
        for name in names:  # an entry's checkpoint source runs too
            source = by_name[name].ckpt_from
            while source is not None and source not in wanted:
                wanted.add(source)
                source = by_name[source].ckpt_from
        return replace(self, models=tuple(m for m in self.models if m.name in wanted))

    def with_data(self, names: list[str]) -> Recipe:
        """The same recipe with only the data entries named (``uad bench --data``), matched on an entry's ``name``
        or its category (``bottle``, ``bsdata_pitting``, ``weave``), in the recipe's order."""
        labels = [(d.name, d.category) for d in self.data]
        unknown = [n for n in names if not any(n in pair for pair in labels)]
        if unknown:
            known = ", ".join(sorted({label for pair in labels for label in pair if label}))
            raise ConfigError(f"--data: recipe {self.name} has no data entry {unknown[0]!r}.",
                              hint=f"Its data entries (name or category): {known}.")
        wanted = set(names)
        return replace(self, data=tuple(d for d in self.data if {d.name, d.category} & wanted))

    def precisions_for(self, model: ModelEntry) -> tuple[str, ...]:
        """The OpenVINO precisions benchmarked for one model (its own list, else the recipe's)."""
        return self.precisions if model.precisions is None else model.precisions

    def trainer_for(self, model: ModelEntry) -> dict[str, Any]:
        """Trainer kwargs of one model: the recipe's, then the model's overrides (``None`` removes a key)."""
        merged = {**self.trainer, **model.trainer}
        return {k: v for k, v in merged.items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (recorded in bench.json)."""
        return {
            "name": self.name, "path": self.path, "description": self.description,
            "models": [vars(m) for m in self.models], "data": [vars(d) for d in self.data],
            "trainer": self.trainer, "precisions": list(self.precisions), "batch_sizes": list(self.batch_sizes),
            "timing": {"warmup": self.warmup, "iterations": self.iterations}, "seed": self.seed,
            "threads": self.threads, "metrics": dict(self.metrics),
            "export": {"parity_samples": self.parity_samples, "calibration_samples": self.calibration_samples,
                       "max_metric_drop": self.max_metric_drop, "timeout_s": self.timeout_s,
                       "int8_strategy": self.int8_strategy},
        }


# ---------------------------------------------------------------------------------------------- checks
def _where(source: str, key: str) -> str:
    return f"recipe {source}: '{key}'"


def _check_keys(mapping: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in mapping:
        if key not in allowed:
            near = close_matches(str(key), allowed)
            raise ConfigError(f"{where} has an unknown key '{key}'.",
                              hint=(f"Did you mean '{near[0]}'? " if near else "")
                              + f"Allowed keys: {', '.join(sorted(allowed))}.")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(value).__name__}: {value!r}.")
    return dict(value)


def _int(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _number(value: Any, where: str, low: float, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low or \
            (high is not None and value > high):
        bound = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise ConfigError(f"{where} must be a number {bound}, got {value!r}.")
    return float(value)


def _model_entry(raw: Any, index: int, source: str, cwd: Path) -> ModelEntry:
    where = f"recipe {source}: models[{index}]"
    item = _mapping(raw, where)
    _check_keys(item, _MODEL_KEYS, where)
    ref = item.get("model")
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError(f"{where} needs 'model': plugin:<name> or an anomalib class path, got {ref!r}.",
                          hint="e.g. 'model: plugin:pbas' or 'model: anomalib.models.Padim'.")
    ref = ref.strip()
    name = item.get("name") or ref.removeprefix("plugin:").rsplit(".", 1)[-1].lower()
    if not isinstance(name, str):
        raise ConfigError(f"{where}: 'name' must be a string, got {name!r}.")
    reference = item.get("reference", False)
    if not isinstance(reference, bool):
        raise ConfigError(f"{where}: 'reference' must be true or false, got {reference!r}.")
    image_size = item.get("image_size")
    if image_size is not None:
        image_size = _int(image_size, f"{where}: 'image_size'", 16)
    weights = item.get("backbone_weights")
    if weights is not None and weights not in BACKBONE_WEIGHTS:
        raise ConfigError(f"{where}: unknown backbone_weights {weights!r}.",
                          hint=f"Use one of: {', '.join(BACKBONE_WEIGHTS)} (or leave it out).")
    precisions = None if item.get("precisions") is None else _precisions(item["precisions"], f"{where}: 'precisions'")
    ckpt_path = item.get("ckpt_path")
    if ckpt_path is not None:
        if not isinstance(ckpt_path, str) or not ckpt_path.strip():
            raise ConfigError(f"{where}: 'ckpt_path' must be the path of a model.ckpt, got {ckpt_path!r}.")
        clash = [k for k in _NOT_WITH_CKPT if item.get(k)]
        if clash:
            raise ConfigError(f"{where} gives 'ckpt_path' and {', '.join(repr(c) for c in clash)}: a checkpoint "
                              "already fixes the model and how it was trained.",
                              hint="Remove those keys, or remove 'ckpt_path' to train the model in the benchmark.")
        path = Path(ckpt_path).expanduser()
        # lexical normalisation only: a 'latest' link must be followed when the benchmark runs, not now
        ckpt_path = os.path.normpath(path if path.is_absolute() else cwd.absolute() / path)
    ckpt_from = item.get("ckpt_from")
    if ckpt_from is not None:
        if not isinstance(ckpt_from, str) or not ckpt_from.strip():
            raise ConfigError(f"{where}: 'ckpt_from' must be the name of an earlier model entry, got {ckpt_from!r}.")
        if ckpt_path is not None:
            raise ConfigError(f"{where} gives both 'ckpt_path' and 'ckpt_from'.", hint="Keep one of them.")
        clash = [k for k in _NOT_WITH_CKPT if item.get(k)]
        if clash:
            raise ConfigError(f"{where} gives 'ckpt_from' and {', '.join(repr(c) for c in clash)}: the checkpoint "
                              "already fixes the model and how it was trained.",
                              hint="Change a checkpoint model's init args with 'overrides'.")
    overrides = _mapping(item.get("overrides"), f"{where}: 'overrides'")
    if overrides and ckpt_path is None and ckpt_from is None:
        raise ConfigError(f"{where} gives 'overrides' without a checkpoint.",
                          hint="'overrides' changes init args of a checkpoint model ('ckpt_path' or 'ckpt_from'); a "
                          "model trained here takes its settings from 'init_args'.")
    fit = _mapping(item.get("fit"), f"{where}: 'fit'")
    _check_keys(fit, set(FIT_OPTIONS), f"{where}: 'fit'")
    return ModelEntry(name=name, model=ref, init_args=_mapping(item.get("init_args"), f"{where}: 'init_args'"),
                      reference=reference, trainer=_mapping(item.get("trainer"), f"{where}: 'trainer'"),
                      image_size=image_size, backbone_weights=weights, precisions=precisions, ckpt_path=ckpt_path,
                      ckpt_from=ckpt_from.strip() if ckpt_from else None, overrides=overrides, fit=fit)


def _precisions(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list, got {value!r}.")
    for p in value:
        if p not in PRECISIONS:
            raise ConfigError(f"{where}: unknown precision {p!r}.",
                              hint=f"Use some of: {', '.join(PRECISIONS)} (an empty list benchmarks eager only).")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where} lists a precision twice: {value}.")
    return tuple(value)


def _expand_data_class(class_path: str) -> str:
    if class_path in _DATA_ALIASES:
        return _DATA_ALIASES[class_path]
    if "." not in class_path:
        return f"anomalib.data.{class_path}"
    return class_path


def _data_entry(raw: Any, index: int, source: str, cwd: Path) -> DataEntry:
    where = f"recipe {source}: data[{index}]"
    item = _mapping(raw, where)
    _check_keys(item, _DATA_KEYS, where)
    class_path = item.get("class_path")
    if not isinstance(class_path, str) or not class_path.strip():
        raise ConfigError(f"{where} needs 'class_path' (UadDemo, MVTecAD, Folder, MitBihBeats, SignalFolder, or a "
                          f"dotted path), got {class_path!r}.")
    short = class_path.strip()
    init_args = _mapping(item.get("init_args"), f"{where}: 'init_args'")
    root = init_args.get("root")
    if isinstance(root, str) and root and not Path(root).expanduser().is_absolute():
        init_args["root"] = str((cwd / root).resolve())
    name = item.get("name") or short.rsplit(".", 1)[-1]
    return DataEntry(name=str(name), class_path=_expand_data_class(short), init_args=init_args)


def parse_recipe(data: Any, *, source: str = "<recipe>", name: str | None = None, text: str = "",
                 cwd: str | Path | None = None) -> Recipe:
    """Check a recipe already read from YAML; ``cwd`` is where relative data roots are resolved from."""
    base = Path(cwd) if cwd is not None else Path.cwd()
    top = _mapping(data, f"recipe {source}")
    if not top:
        raise ConfigError(f"recipe {source} is empty.", hint="It needs at least 'models:' and 'data:'.")
    _check_keys(top, _TOP_KEYS, f"recipe {source}")
    models_raw = top.get("models")
    if not isinstance(models_raw, list) or not models_raw:
        raise ConfigError(f"{_where(source, 'models')} must be a non-empty list of models.",
                          hint="e.g. models: [{name: pbas, model: plugin:pbas}]")
    models = tuple(_model_entry(m, i, source, base) for i, m in enumerate(models_raw))
    names = [m.name for m in models]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"recipe {source}: model names must be unique; repeated: {', '.join(duplicates)}.",
                          hint="Give each entry its own 'name:'.")
    for index, entry in enumerate(models):
        if entry.ckpt_from is None:
            continue
        earlier = {m.name: m for m in models[:index]}
        if entry.ckpt_from not in earlier:
            raise ConfigError(f"recipe {source}: model '{entry.name}' takes its checkpoint from '{entry.ckpt_from}', "
                              "which is not an earlier model entry.",
                              hint=f"Name one of the entries above it: {', '.join(earlier) or '(none)'}.")
        if earlier[entry.ckpt_from].model != entry.model:
            raise ConfigError(f"recipe {source}: model '{entry.name}' ({entry.model}) takes its checkpoint from "
                              f"'{entry.ckpt_from}', a {earlier[entry.ckpt_from].model}.",
                              hint="Give both entries the same 'model'.")
    data_raw = top.get("data")
    if not isinstance(data_raw, list) or not data_raw:
        raise ConfigError(f"{_where(source, 'data')} must be a non-empty list of datamodules.",
                          hint="e.g. data: [{class_path: UadDemo, init_args: {category: washer}}]")
    datas = tuple(_data_entry(d, i, source, base) for i, d in enumerate(data_raw))
    labels = [(d.name, d.category) for d in datas]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"recipe {source}: two data entries have the same name and category.",
                          hint="Give them distinct 'name:' values.")

    precisions = _precisions(top.get("precisions", list(PRECISIONS)), _where(source, "precisions"))

    sizes_raw = top.get("batch_sizes", [1, 8])
    if not isinstance(sizes_raw, list) or not sizes_raw:
        raise ConfigError(f"{_where(source, 'batch_sizes')} must be a non-empty list of integers, got {sizes_raw!r}.")
    sizes = tuple(_int(s, f"{_where(source, 'batch_sizes')} entry", 1) for s in sizes_raw)
    if len(set(sizes)) != len(sizes):
        raise ConfigError(f"{_where(source, 'batch_sizes')} lists a batch size twice: {list(sizes)}.")

    timing = _mapping(top.get("timing"), _where(source, "timing"))
    _check_keys(timing, _TIMING_KEYS, _where(source, "timing"))
    export = _mapping(top.get("export"), _where(source, "export"))
    _check_keys(export, _EXPORT_KEYS, _where(source, "export"))
    seed = top.get("seed", 0)
    if seed is not None:
        seed = _int(seed, _where(source, "seed"), 0)
    description = top.get("description", "") or ""
    if not isinstance(description, str):
        raise ConfigError(f"{_where(source, 'description')} must be a string.")
    recipe_name = top.get("name") or name or "bench"
    if not isinstance(recipe_name, str):
        raise ConfigError(f"{_where(source, 'name')} must be a string, got {recipe_name!r}.")
    trainer = _mapping(top.get("trainer"), _where(source, "trainer"))
    for where, options in [(_where(source, "trainer"), trainer)] + \
            [(f"recipe {source}: model '{m.name}' trainer", m.trainer) for m in models]:
        managed = sorted(set(options) & _MANAGED_TRAINER_KEYS)
        if managed:
            raise ConfigError(f"{where} sets {', '.join(managed)}, which the benchmark manages itself.",
                              hint="Remove it; runs go to <output>/runs and no logger or extra callbacks are used.")
    return Recipe(
        name=recipe_name, models=models, data=datas, trainer=trainer,
        precisions=precisions, batch_sizes=sizes,
        warmup=_int(timing.get("warmup", 3), _where(source, "timing.warmup"), 0),
        iterations=_int(timing.get("iterations", 20), _where(source, "timing.iterations"), 1),
        seed=seed, threads=_int(top.get("threads", 2), _where(source, "threads"), 1),
        metrics=_metric_overrides(top.get("metrics"), source),
        parity_samples=_int(export.get("parity_samples", 16), _where(source, "export.parity_samples"), 1),
        calibration_samples=_int(export.get("calibration_samples", 64),
                                 _where(source, "export.calibration_samples"), 1),
        max_metric_drop=_number(export.get("max_metric_drop", 0.01), _where(source, "export.max_metric_drop"),
                                0.0, 1.0),
        timeout_s=_number(export.get("timeout_s", 1800), _where(source, "export.timeout_s"), 1.0),
        int8_strategy=_int8_strategy(export.get("int8_strategy", "accuracy_control"),
                                     _where(source, "export.int8_strategy")),
        description=description, path=None if source.startswith("<") else source, text=text,
    )


def _int8_strategy(value: Any, where: str) -> str:
    from uad_edge.manifest import INT8_STRATEGIES

    if value not in INT8_STRATEGIES:
        raise ConfigError(f"{where} is {value!r}.", hint=f"Choose one of: {', '.join(INT8_STRATEGIES)}.")
    return str(value)


def _metric_overrides(value: Any, source: str) -> dict[str, str]:
    """``metrics:``: a mapping of quality field (``point_AUROC``, ...) to a metric reference (a string)."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) and v.strip()
                                              for k, v in value.items()):
        raise ConfigError(f"{_where(source, 'metrics')} must map quality fields to metric references, got "
                          f"{value!r:.120}.", hint="e.g. metrics: {point_AUROC: plugin:ecg_point_auroc}")
    return {k: v.strip() for k, v in value.items()}


def load_recipe(path: str | Path, *, cwd: str | Path | None = None) -> Recipe:
    """Read and check a YAML recipe (see the module docstring for its keys)."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"recipe not found: {file}", hint="Pass --recipe configs/bench/<name>.yaml.")
    text = file.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe {file} is not valid YAML: {exc}") from exc
    return parse_recipe(data, source=str(file), name=file.stem, text=text, cwd=cwd)


# ---------------------------------------------------------------------------------------------- resolution
def model_class(entry: ModelEntry) -> type:
    """The class a model entry builds (plugin references through the registry, others imported)."""
    from uad_plugins.factory import resolve_component

    cls, _, _ = resolve_component("model", entry.model)  # short anomalib names (Padim) expand there
    return cls


def model_reference(entry: ModelEntry) -> str:
    """The reference ``create_model`` takes for an entry (short anomalib names expanded)."""
    from uad_plugins.registry import get_registry

    return get_registry().expand("model", entry.model)


def data_class(entry: DataEntry) -> type:
    """The datamodule class of a data entry."""
    try:
        cls = import_object(entry.class_path)
    except (ImportError, AttributeError) as exc:
        hint = "Use UadDemo, an anomalib.data name (MVTecAD, Folder, Visa, ...) or a dotted class path."
        raise ConfigError(f"data class '{entry.class_path}' cannot be imported: {exc}", hint=hint) from exc
    return cls


def _check_fit_options(entry: ModelEntry) -> None:
    """The values of a model entry's ``fit`` options, checked as the engine checks them (before anything runs)."""
    from uad_plugins.components.feature_cache import DEFAULT_BUDGET_MB, check_cache_options
    from uad_plugins.engine.stopping import check_stability_tolerance

    try:
        if entry.fit.get("feature_cache") is not None:
            check_cache_options(entry.fit["feature_cache"], entry.fit.get("feature_cache_budget_mb", DEFAULT_BUDGET_MB))
        check_stability_tolerance(entry.fit.get("stop_when_stable"))
    except ConfigError as error:
        raise ConfigError(f"model '{entry.name}': 'fit' options: {error.message}", hint=error.hint) from None


def resolve_references(recipe: Recipe) -> None:
    """Import every model and data class, check the data roots exist and that every model takes every dataset's
    modality (image or signal), before anything is trained."""
    model_modalities: dict[str, str] = {}
    for entry in recipe.models:
        if entry.ckpt_path is not None and not Path(entry.ckpt_path).is_file():
            raise ConfigError(f"model '{entry.name}': checkpoint {entry.ckpt_path} does not exist.",
                              hint="Relative paths are resolved against the folder 'uad bench' runs in; pass the "
                              "model.ckpt printed at the end of 'uad fit'.")
        cls = model_class(entry)
        params = inspect.signature(cls.__init__).parameters
        accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        unknown = [k for k in (*entry.init_args, *entry.overrides) if k not in params and not accepts_any]
        if unknown:
            near = close_matches(unknown[0], [p for p in params if p != "self"])
            raise ConfigError(f"model '{entry.name}' ({entry.model}) has no init argument "
                              f"{', '.join(repr(u) for u in unknown)}.",
                              hint=(f"Did you mean '{near[0]}'? " if near else "")
                              + f"Its arguments: {', '.join(p for p in params if p != 'self')}.")
        if entry.fit:
            _check_fit_options(entry)
        if entry.image_size is not None and "image_size" in entry.init_args:
            raise ConfigError(f"model '{entry.name}': give the image size once, either 'image_size' or "
                              "'init_args.image_size'.")
        model_modalities[entry.name] = modality_of(cls)
        if model_modalities[entry.name] != "image" and (entry.image_size is not None or entry.backbone_weights):
            raise ConfigError(f"model '{entry.name}' ({entry.model}) is a {model_modalities[entry.name]} model: "
                              "'image_size' and 'backbone_weights' are for image models.",
                              hint="Remove them; a signal model's input shape is set by init_args (n_leads, length).")
    for entry in recipe.data:
        data_modality = modality_of(data_class(entry))
        wrong = [name for name, modality in model_modalities.items() if modality != data_modality]
        if wrong:
            raise ConfigError(f"data '{entry.name}' holds {data_modality} data, but model(s) "
                              f"{', '.join(repr(w) for w in wrong)} take "
                              f"{' / '.join(sorted({model_modalities[w] for w in wrong}))} data.",
                              hint="Every model of a recipe runs on every dataset: put models and data of one "
                              "modality in a recipe (one recipe for images, another for signals).")
        root = entry.init_args.get("root")
        if isinstance(root, str) and root and not Path(root).expanduser().exists():
            raise ConfigError(f"data '{entry.name}': root {root} does not exist.",
                              hint="Relative roots are resolved against the folder 'uad bench' runs in; run it "
                              "from the repository root or give an absolute path.")


def copy_args(args: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of init arguments (so building a component never changes the recipe)."""
    return copy.deepcopy(args)
