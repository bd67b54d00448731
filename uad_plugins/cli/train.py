"""``uad fit|validate|test|predict``: jsonargparse parsers over anomalib's model, data and trainer types."""

from __future__ import annotations

import csv
import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from uad_plugins.cli.quiet import quiet_imports
from uad_plugins.cli.resolve import normalise_argv, split_prefixed_options
from uad_plugins.errors import ConfigError, UadError
from uad_plugins.protocols import modality_of

__all__ = ["fit", "predict", "test", "validate"]

DEMO_DATA = "uad_plugins.data.UadDemo"


def component_reference(value: str | dict | None) -> str | dict | None:
    """A plugin reference (``plugin:NAME``) or a ``{class_path, init_args}`` mapping, also given as JSON/YAML text.

    A plain callable type: jsonargparse's own ``str | dict`` handling breaks when a config file gives a mapping and
    the command line gives another one.
    """
    if isinstance(value, str) and value.strip().startswith("{"):
        import yaml

        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ValueError(f"not a valid JSON/YAML mapping: {err}") from err
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("class_path"), str) \
            and set(value) <= {"class_path", "init_args"} and isinstance(value.get("init_args", {}), dict):
        return value
    raise ValueError(f"expected a reference such as plugin:NAME or {{class_path, init_args}}, got {value!r}")


def _build_parser(command: str):
    """The jsonargparse parser of one training sub-command."""
    quiet_imports()
    import anomalib.data  # noqa: F401 - makes MVTecAD, Folder, ... resolvable by short name
    from anomalib.data import AnomalibDataModule
    from anomalib.models.components import AnomalibModule
    from jsonargparse import ActionConfigFile, ArgumentParser
    from lightning.pytorch import Trainer

    # makes UadDemo, UnifiedMVTecAD, ... and the signal datamodules (MitBihBeats, ...) resolvable by short name
    from uad_plugins.data import demo, multiclass, signals  # noqa: F401

    descriptions = {
        "fit": "Train a model, then test it. Without --data, the embedded demo dataset is used.",
        "validate": "Run validation of a checkpoint (thresholds, normalisation statistics).",
        "test": "Test a checkpoint; metrics go to metrics.json in its run folder.",
        "predict": "Score images (or signals, for a signal model) with a checkpoint; writes heatmaps and "
                   "predictions.json/.csv. Signal models read --data_path with the checkpoint's data settings; "
                   "--data.KEY VALUE changes one of them (e.g. --data.leads '[MLII]', --data.allow_mixed_leads "
                   "true).",
    }
    parser = ArgumentParser(prog=f"uad {command}", description=descriptions[command], exit_on_error=True)
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="YAML recipe (see configs/)")
    required_model = command == "fit"
    parser.add_subclass_arguments(AnomalibModule, "model", required=required_model, fail_untyped=False,
                                  help="plugin:<name> (see 'uad plugins list --kind model') or a class path")
    if command != "predict":
        parser.add_subclass_arguments(AnomalibDataModule, "data", required=False, fail_untyped=False,
                                      help="datamodule: UadDemo (default for fit), MVTecAD, Folder, ...; signals: "
                                           "MitBihBeats, PtbXl, SignalFolder")
    parser.add_class_arguments(Trainer, "trainer", instantiate=False, fail_untyped=False)
    parser.add_argument("--seed_everything", type=int | None, default=0, help="global seed (null: do not seed)")
    parser.add_argument("--default_root_dir", type=str, default="results", help="where run folders are created")
    parser.add_argument("--metrics", type=list[str] | None, default=None,
                        help="metric references, e.g. plugin:image_auroc plugin:pixel_aupro")
    parser.add_argument("--ckpt_path", type=str | None, default=None,
                        help="checkpoint (fit: resume from it; other commands: the model to use)")
    if command == "fit":
        parser.add_argument("--test", type=bool, default=True, help="test the trained model after fitting")
        parser.add_argument("--honest_validation", type=bool, default=True,
                            help="never fit thresholds on test data: validate on held-back normals + synthetic "
                                 "anomalies when the datamodule would use the test set")
        parser.add_argument("--validation_synthesizer", type=component_reference, default=None,
                            help="synthesizer making the validation anomalies: a reference, or {class_path, "
                                 "init_args} for options (default: the data's; plugin:perlin for images, "
                                 "plugin:ecg_anomaly for signals)")
        parser.add_argument("--validation_ratio", type=float, default=0.2,
                            help="share of training normals held back for validation")
        parser.add_argument("--stop_when_stable", type=float | None, default=None,
                            help="a tolerance in (0, 1), e.g. 0.05: stop training once the validation normals' "
                                 "scores move less than that share of their spread between two validation passes "
                                 "(twice in a row); the schedule stays the upper bound (default: off)")
        from uad_plugins.components.feature_cache import DEFAULT_BUDGET_MB

        parser.add_argument("--feature_cache", type=str | None, default=None,
                            help="memory or disk: compute the frozen backbone features of the training images once "
                                 "and serve them in later epochs (models whose training reads only such features: "
                                 "pbas, pradot, uniad, hetnet; see docs/usage.md)")
        parser.add_argument("--feature_cache_budget_mb", type=float, default=DEFAULT_BUDGET_MB,
                            help="the most MiB of features the cache stores; later images are computed every epoch")
        parser.add_argument("--feature_cache_dir", type=str | None, default=None,
                            help="disk: where the entries are kept for later runs (default: a folder in the run, "
                                 "removed after the fit)")
    if command in ("fit", "validate"):
        parser.add_argument("--threshold", type=Literal["f1_adaptive", "normal_quantile"] | None, default=None,
                            help="how thresholds are fitted on validation: f1_adaptive (default for fit: the score "
                                 "maximising F1 on validation, whose anomalies are synthetic) or normal_quantile "
                                 "(the score that --false_alarm_rate of the validation normals exceed); validate: "
                                 "the checkpoint's rule unless given")
        parser.add_argument("--false_alarm_rate", type=float | None, default=None,
                            help="normal_quantile: the share of normal validation images (pixels) allowed above "
                                 "the threshold (default 0.01, or the checkpoint's)")
    parser.add_argument("--image_check", type=Literal["header", "full"], default="header",
                        help="how image files are checked before the run: header (each file's header; a PNG/JPEG "
                             "without its end marker is decoded) or full (every image decoded: slower, also finds "
                             "damage inside a file)")
    if command in ("fit", "test", "predict"):
        parser.add_argument("--heatmaps", type=bool, default=True, help="write heatmap overlay PNGs")
    if command == "predict":
        parser.add_argument("--data_path", type=str, required=True,
                            help="an image or a folder of images (signal models: signal files, read with the "
                                 "checkpoint's data settings)")
        parser.add_argument("--output", type=str | None, default=None,
                            help="output folder, new or empty (default: RUN/predictions)")
        parser.add_argument("--overwrite", type=bool, default=False,
                            help="write into a non-empty --output, replacing only the files predict writes (and "
                                 "those its previous run listed in predictions.json)")
    return parser


def _parse(command: str, argv: list[str]):
    quiet_imports()
    norm = normalise_argv(argv)
    args = list(norm.argv)
    if command == "fit" and "data" not in norm.has:
        spec = norm.specs.get("--model")
        other = sorted({"signal", "pointcloud"} & set(spec.tags)) if spec is not None else []
        if other and "image" not in spec.tags:
            raise ConfigError(f"{spec.reference} works on {other[0]} data and there is no embedded demo dataset of "
                              "that kind: pass --data.",
                              hint="e.g. --data MitBihBeats --data.root ../shared/data/ecg/mitbih_subset "
                                   "(see docs/signals.md)" if other[0] == "signal" else "See the model's docs page.")
        args = ["--data", DEMO_DATA, *args]
    parser = _build_parser(command)
    cfg = parser.parse_args(args)
    return parser, cfg, norm


def _ns_dict(ns: Any) -> Any:
    """A parsed namespace as plain data (it is recorded in checkpoints, which hold plain data only): jsonargparse's
    bookkeeping keys (``__path__``: the file a group was read from) are dropped, paths become strings."""
    from jsonargparse import Namespace

    from uad_plugins.trust import is_bookkeeping_key

    if isinstance(ns, Namespace):
        return {k: _ns_dict(v) for k, v in vars(ns).items() if not is_bookkeeping_key(k)}
    if isinstance(ns, dict):
        return {k: _ns_dict(v) for k, v in ns.items() if not is_bookkeeping_key(k)}
    if isinstance(ns, (list, tuple)):
        return [_ns_dict(v) for v in ns]
    if isinstance(ns, Enum):
        return ns.value
    if isinstance(ns, os.PathLike):
        return os.fspath(ns)
    return ns


def _explicit_trainer_args(cfg, norm) -> dict[str, Any]:
    """The trainer options the user gave (command line or ``--config``), whatever their value, with the ones given
    as classes (``--trainer.logger CSVLogger --trainer.logger.save_dir logs``, lists of callbacks) built by
    jsonargparse, type coercion included, as anomalib's and Lightning's CLIs build them."""
    given = {k: v for k, v in vars(cfg.trainer).items() if k in norm.trainer_keys}
    if not any(_has_class_path(v) for v in given.values()):
        return given
    from jsonargparse import ArgumentParser, Namespace
    from lightning.pytorch import Trainer

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(Trainer, "trainer", instantiate=False, fail_untyped=False)
    try:
        built = parser.instantiate_classes(Namespace(trainer=cfg.trainer.clone()))
    except (TypeError, ValueError) as exc:  # a class that refuses its arguments
        reason = str(exc).strip().splitlines()
        refused = next((line.strip(" -") for line in reason if "is not a valid" in line), reason[0] if reason else "")
        raise ConfigError(f"--trainer: cannot build {', '.join(k for k in given if _has_class_path(given[k]))}: "
                          f"{refused}", hint="Check the class's init args (Lightning's documentation of that "
                                             "logger or callback).") from exc
    return {k: getattr(built.trainer, k) for k in given}


def _has_class_path(value: Any) -> bool:
    from jsonargparse import Namespace

    if isinstance(value, (list, tuple)):
        return any(_has_class_path(v) for v in value)
    return isinstance(value, Namespace) and "class_path" in value


def _seed(cfg) -> None:
    """Seed before anything random is built (model initialisation included)."""
    if cfg.seed_everything is not None:
        from lightning.pytorch import seed_everything

        seed_everything(int(cfg.seed_everything), workers=True, verbose=False)


def _make_model(cfg, norm):
    from uad_plugins.factory import create_model

    init_args = _ns_dict(cfg.model.init_args) if cfg.model.init_args is not None else {}
    spec = norm.specs.get("--model")  # resolved once, while reading the command line
    return create_model(spec if spec else cfg.model.class_path, **init_args)


def _make_data(data_cfg: dict[str, Any] | None):
    """The user's ``--data`` (a {class_path, init_args} mapping), built through the one datamodule door."""
    if not data_cfg or not data_cfg.get("class_path"):
        return None
    from uad_plugins.factory import create_datamodule

    return create_datamodule(data_cfg)


def _user_data(cfg, norm) -> dict[str, Any] | None:
    """The user's ``--data`` as a mapping; options the user did not give that are machine settings rather than
    data (``num_workers``) are left out, so the datamodule door fills them in for this machine."""
    data_cfg = _ns_dict(cfg.data) if cfg.get("data") else None
    if not data_cfg or not data_cfg.get("class_path"):
        return None
    init_args = data_cfg.get("init_args")
    if isinstance(init_args, dict) and "num_workers" not in norm.data_keys:
        data_cfg = {**data_cfg, "init_args": {k: v for k, v in init_args.items() if k != "num_workers"}}
    return data_cfg


def _root_dir(cfg, trainer_args: dict[str, Any]) -> str:
    """Where run folders go: ``--default_root_dir``, or ``--trainer.default_root_dir`` (the same setting, as
    anomalib users write it); both, differing, is an error."""
    root = trainer_args.pop("default_root_dir", None)
    default = "results"
    if root is None:
        return cfg.default_root_dir
    if cfg.default_root_dir not in (default, str(root)):
        raise ConfigError(f"--default_root_dir {cfg.default_root_dir} and --trainer.default_root_dir {root} disagree.",
                          hint="Give one of them (they set the same folder).")
    return str(root)


def _engine(cfg, norm, config_text: str | None = None, **extra: Any):
    from uad_plugins.engine import UadEngine

    trainer_args = _explicit_trainer_args(cfg, norm)
    root = _root_dir(cfg, trainer_args)
    options = {k: getattr(cfg, k) for k in ("honest_validation", "validation_synthesizer", "validation_ratio",
                                            "heatmaps", "image_check", "feature_cache", "feature_cache_budget_mb",
                                            "feature_cache_dir") if k in cfg}
    for key in ("threshold", "false_alarm_rate", "stop_when_stable"):
        if cfg.get(key) is not None:
            options[key] = cfg.get(key)
    seed = extra.pop("seed_override", None)
    seed = cfg.seed_everything if seed is None else seed
    return UadEngine(default_root_dir=root, seed=seed, metrics=cfg.metrics,
                     config_text=config_text, **{**extra, **options}, **trainer_args)


def _print_results(engine, results: list[dict[str, float]] | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout)
    if results:
        table = Table(title="test metrics")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in sorted(results[0].items()):
            table.add_row(key, f"{value:.4f}")
        console.print(table)
    info = engine.run_info
    per_category = info.get("test_per_category")
    if per_category:
        names = sorted({name for values in per_category.values() for name in values})
        table = Table(title="test metrics per category (mean = mean over categories)")
        table.add_column("category")
        for name in names:
            table.add_column(name, justify="right")

        def cell(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.4f}"

        for category, values in per_category.items():
            table.add_row(category, *(cell(values.get(name)) for name in names))
        mean = info.get("test_mean_over_categories") or {}
        table.add_row("mean", *(cell(mean.get(name)) for name in names), style="bold")
        console.print(table)
    if "epochs" in info:
        console.print(f"epochs: {info['epochs']}  steps: {info['steps']}  fit time: {info['fit_seconds']} s")
        stopped = (info.get("stop_when_stable") or {}).get("stopped_at_step")
        if stopped is not None:
            console.print(f"stopped at step {stopped}: the validation normals' scores stopped changing")
    if "validation" in info:
        console.print(f"validation: {json.dumps(info['validation'])}")
    console.print(f"run folder: {engine.run_dir}")


def fit(argv: list[str]) -> int:
    """``uad fit``."""
    parser, cfg, norm = _parse("fit", argv)
    if cfg.feature_cache is not None:  # before anything is built
        from uad_plugins.components.feature_cache import check_cache_options

        check_cache_options(cfg.feature_cache, cfg.feature_cache_budget_mb)
    _seed(cfg)
    model = _make_model(cfg, norm)
    data_cfg = _user_data(cfg, norm)
    resume_with_run_data = cfg.ckpt_path and "data" not in norm.has and not norm.data_keys
    record = _resume_record(cfg.ckpt_path) if resume_with_run_data else None
    if record is not None and record.data:  # resuming without --data: the run's own data (checked door)
        data_cfg, datamodule = dict(record.data), record.build_datamodule()
    else:
        datamodule = _make_data(data_cfg)
    config_text = parser.dump(cfg, skip_none=False)
    spec = norm.specs.get("--model")
    if spec is not None:
        config_text = f"# model: {spec.reference} ({spec.provider})\n" + config_text
    engine = _engine(cfg, norm, config_text=config_text, data_config=data_cfg,
                     model_reference=spec)
    engine.fit(model=model, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    if not engine.is_global_zero:  # DDP: rank 0 tests and reports; the other processes are done
        return 0
    results = engine.test(model=model, datamodule=datamodule, verbose=False) if cfg.test else None
    _print_results(engine, results)
    return 0


def _resume_record(ckpt_path: str):
    """The checked run record of a checkpoint to resume from (errors for an unreadable one are the engine's)."""
    from uad_plugins.engine.checkpoint import RunRecord, read_checkpoint_metadata

    return RunRecord.from_metadata(ckpt_path, read_checkpoint_metadata(ckpt_path)[0])


def _load_for_eval(cfg, norm):
    """The checkpoint's model and its checked run record (see ``uad_plugins.trust``), and its run folder."""
    from uad_plugins.engine.checkpoint import load_checkpoint
    from uad_plugins.engine.run import find_run_dir

    if not cfg.ckpt_path:
        raise ConfigError("this command needs --ckpt_path (the model.ckpt of a 'uad fit' run).")
    spec = norm.specs.get("--model")
    expected = spec.class_path if spec else (cfg.model.class_path if cfg.get("model") else None)
    model, record = load_checkpoint(cfg.ckpt_path, expected_class_path=expected)
    return model, record, find_run_dir(cfg.ckpt_path)


def _eval_data(cfg, norm, record, overrides: dict[str, Any] | None = None):
    """The user's --data, else the checkpoint's recorded data (checked before anything is built)."""
    data_cfg = _user_data(cfg, norm)
    if data_cfg is not None:
        return _make_data(data_cfg)
    return record.build_datamodule(overrides)


def validate(argv: list[str]) -> int:
    """``uad validate``."""
    _, cfg, norm = _parse("validate", argv)
    model, record, run_dir = _load_for_eval(cfg, norm)
    datamodule = _eval_data(cfg, norm, record)
    # the same honest validation as the fit: held-back training normals + the recorded synthesizer, ratio and seed
    engine = _engine(cfg, norm, honest_validation=record.honest_validation,
                     validation_synthesizer=record.validation_synthesizer,
                     validation_ratio=record.validation_ratio, seed_override=record.seed,
                     threshold=record.threshold, false_alarm_rate=record.false_alarm_rate)
    engine.open_run(model, datamodule, run_dir=(run_dir / "validate") if run_dir else None)
    results = engine.validate(model=model, datamodule=datamodule)
    print(json.dumps(results[0] if results else {}, indent=2, default=float))
    return 0


def test(argv: list[str]) -> int:
    """``uad test``."""
    _, cfg, norm = _parse("test", argv)
    model, record, run_dir = _load_for_eval(cfg, norm)
    datamodule = _eval_data(cfg, norm, record)
    engine = _engine(cfg, norm, threshold=record.threshold, false_alarm_rate=record.false_alarm_rate)
    engine.open_run(model, datamodule, run_dir=run_dir)
    results = engine.test(model=model, datamodule=datamodule, verbose=False)
    _print_results(engine, results)
    if engine.test_record is not None:
        print(f"test record: {engine.test_record} (the fit's metrics.json is kept)")
    return 0


def _predict_rows(cfg, norm, model, loader, folder: Any) -> tuple[list[dict[str, Any]], Path]:
    """Run the prediction into the output folder (heatmaps, predictions.json and .csv), written whole; return the
    rows and the folder."""
    engine = _engine(cfg, norm)
    with folder.writing() as tmp:
        engine.open_run(model, None, run_dir=tmp)
        if loader is not None:
            batches = engine.predict(model=model, dataloaders=[loader], return_predictions=True) or []
        else:
            batches = engine.predict(model=model, data_path=cfg.data_path, return_predictions=True) or []
        rows = []
        for batch in batches:
            if callable(getattr(batch, "prediction_rows", None)):
                rows.extend(batch.prediction_rows())
                continue
            for i, path in enumerate(batch.image_path):
                score = float(batch.pred_score[i])
                label = bool(batch.pred_label[i]) if batch.pred_label is not None else None
                rows.append({"image_path": str(path), "pred_score": score, "pred_label": label})
        if not rows:
            raise UadError(f"no predictions were made for {cfg.data_path}.")
        with open(tmp / "predictions.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        folder.write_document(tmp, {"checkpoint": str(cfg.ckpt_path), "predictions": rows})
    return rows, folder.path


def predict(argv: list[str]) -> int:
    """``uad predict``: heatmaps plus predictions.json and predictions.csv, written whole into a new or empty
    --output (``--overwrite``: replace only what predict writes there)."""
    from uad_edge.output import OutputFolder

    argv, data_overrides = split_prefixed_options(list(argv), "data")
    _, cfg, norm = _parse("predict", argv)
    model, record, run_dir = _load_for_eval(cfg, norm)
    images = modality_of(model) == "image"
    if data_overrides and images:
        raise ConfigError(f"--data.{next(iter(data_overrides))}: image checkpoints read --data_path directly, "
                          "so data options do not apply to 'uad predict'.",
                          hint="Give the images you want scored with --data_path.")
    output = Path(cfg.output) if cfg.output else ((run_dir or Path(cfg.default_root_dir)) / "predictions")
    folder = OutputFolder(output, document="predictions.json", overwrite=cfg.overwrite, protect=[cfg.data_path],
                          what="uad predict")
    # non-image inputs are read with the checkpoint's own data settings (windows, filters, normalisation), and
    # before anything is written: bad data or options leave nothing behind
    loader = None if images else _eval_data(cfg, norm, record, data_overrides).predict_loader(cfg.data_path)
    rows, output = _predict_rows(cfg, norm, model, loader, folder)
    what = "images" if "image_path" in rows[0] else "windows"
    print(f"{len(rows)} {what} scored; predictions: {output / 'predictions.json'}; heatmaps: {output / 'images'}")
    return 0
