"""``UadEngine``: anomalib's Engine with honest validation, real seeding, user-first trainer arguments and
run folders that say what was run.

Differences from ``anomalib.engine.Engine``:

* a model's ``trainer_arguments`` are defaults: a trainer option the user set is kept (with a warning when the
  model suggests another value), never silently overridden;
* ``seed`` seeds Python, numpy and torch (and dataloader workers) before anything random happens;
* thresholds and score normalisation are never fitted on the test set: when the datamodule would take its
  validation data from the test set, validation is rebuilt from held-back training normals plus anomalies made
  by a synthesizer plugin (``plugin:perlin`` by default), and the run says so;
* every run folder holds ``config.yaml`` (when given), ``plugins.json``, the checkpoint, ``metrics.json`` and
  heatmap overlays;
* ``feature_cache`` (opt-in) serves a model's frozen training features from a
  :class:`~uad_plugins.components.feature_cache.FeatureCache` during the fit (models with
  ``supports_feature_cache``; its counters land in ``metrics.json``).

Non-image data (signals, point clouds) plugs in through a few optional attributes, images being the default:

* a datamodule with ``modality != "image"`` sets itself up and checks its own data (``setup``), builds its honest
  validation split with ``synthetic_validation(synthesizer, ratio=, seed=, output_dir=)`` and names the synthesizer
  used when none is given (``default_validation_synthesizer``);
* a model's ``modality`` must match the datamodule's; its ``default_metrics`` (references) are used when no metrics
  are given, and its ``configure_visualizer()`` writes the heatmaps (anomalib's default is the image visualizer).
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from anomalib.engine import Engine
from lightning.pytorch import Trainer, seed_everything

from uad_edge.atomic import write_json_atomic, write_text_atomic
from uad_plugins.components.feature_cache import (
    DEFAULT_BUDGET_MB,
    FeatureCache,
    check_cache_options,
    deterministic_transform,
)
from uad_plugins.engine import distributed
from uad_plugins.engine.checkpoint import RunRecord, UadCheckpointMetadata, data_without_workers
from uad_plugins.engine.metrics import RawOutputs, attach_metrics
from uad_plugins.engine.progress import LogProgress, output_is_a_terminal
from uad_plugins.engine.run import discard_run, new_run_dir, plugins_manifest, publish_run
from uad_plugins.engine.stopping import StopWhenStable, check_stability_tolerance
from uad_plugins.engine.thresholds import apply_threshold_rule, check_threshold_rule
from uad_plugins.errors import ConfigError, DataError
from uad_plugins.protocols import modality_of
from uad_plugins.trust import as_plain

__all__ = ["UadEngine"]

logger = logging.getLogger("uad_plugins")
#: trainer options that set the training length: one you set makes the model's suggestions of both void
_SCHEDULE_KEYS = frozenset({"max_epochs", "max_steps"})

#: validation synthesizer of image datamodules when none is named
DEFAULT_IMAGE_SYNTHESIZER = "plugin:perlin"


@contextlib.contextmanager
def _drop_log_message(logger_name: str, prefix: str) -> Iterator[None]:
    """Drop records of ``logger_name`` whose message starts with ``prefix`` for the duration of the block."""

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(prefix)

    target = logging.getLogger(logger_name)
    target.addFilter(keep)
    try:
        yield
    finally:
        target.removeFilter(keep)


#: Lightning's notices that alarm users for nothing here (see :class:`_LightningNoticeFilter`)
_OWN_CALLBACK_SUFFIXES = ("PreProcessor", "PostProcessor", "Evaluator")
_OVERRIDE_NOTICE = "The following callbacks returned in `LightningModule.configure_callbacks` will override"
#: Lightning warnings for a model without an optimizer (PRADOT, Padim, Patchcore: they learn statistics)
_NO_OPTIMIZER_WARNINGS = (r".*`LightningModule.configure_optimizers` returned `None`.*",
                          r".*`training_step` returned `None`.*")


class _LightningNoticeFilter(logging.Filter):
    """Drops Lightning's advertising tips and its note that a model's own pre-/post-processor and evaluator
    replace the ones the engine attached (they are the same objects: nothing is lost)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("\N{ELECTRIC LIGHT BULB} Tip:"):
            return False
        if message.startswith(_OVERRIDE_NOTICE):
            names = [n.strip() for n in message.rsplit(":", 1)[-1].split(",")]
            return not all(n.endswith(_OWN_CALLBACK_SUFFIXES) for n in names)
        return True


def _install_notice_filter() -> None:
    # rank_zero_info logs through whichever of these loggers was imported last
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning_fabric.utilities.rank_zero", "lightning_utilities.core.rank_zero"):
        target = logging.getLogger(name)
        if not any(isinstance(f, _LightningNoticeFilter) for f in target.filters):
            target.addFilter(_LightningNoticeFilter())


@contextlib.contextmanager
def _no_optimizer_notices(model: Any) -> Iterator[None]:
    """Silence Lightning's 'no optimizer' / 'training_step returned None' warnings during a fit and say once, in
    plain words, what they mean when the model indeed trains without an optimizer."""
    with warnings.catch_warnings():
        for pattern in _NO_OPTIMIZER_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        yield
    from lightning.pytorch.core.optimizer import _MockOptimizer

    trainer = getattr(model, "_trainer", None)
    if trainer is not None and all(isinstance(o, _MockOptimizer) for o in trainer.optimizers):
        logger.info("%s has no optimizer: its training steps fit statistics or prototypes, not weights by gradient.",
                    type(model).__name__)


class UadEngine(Engine):
    """Train, validate, test and predict anomaly models (see the module docstring for what differs).

    Args:
        callbacks: extra Lightning callbacks.
        logger: Lightning logger(s); off by default.
        default_root_dir: where run folders are created (``<root>/<model>/<dataset>/<category>/vN``).
        seed: global seed; ``None`` leaves the RNGs alone.
        metrics: metric references for testing (default: image/pixel AUROC, F1-max, pixel AUPRO).
        honest_validation: rebuild validation from training normals when it would come from the test set.
        validation_synthesizer: synthesizer reference (or ``{"class_path", "init_args"}`` mapping) that makes the
            validation anomalies (``None``: the datamodule's ``default_validation_synthesizer``, ``plugin:perlin``
            for images).
        validation_ratio: share of training normals held back for validation.
        heatmaps: write heatmap overlay PNGs for test and predict images.
        threshold: how thresholds are fitted on validation: ``"f1_adaptive"`` (anomalib's: the F1-maximising score)
            or ``"normal_quantile"`` (the score that ``false_alarm_rate`` of the validation normals exceed); see
            :mod:`uad_plugins.engine.thresholds`.
        false_alarm_rate: the target false-alarm rate of ``"normal_quantile"``.
        image_check: how the image files are checked before a run: ``"header"`` (each file's header, and a whole
            decode of a PNG/JPEG that lacks its end marker) or ``"full"`` (every image decoded).
        config_text: the resolved configuration, saved as ``config.yaml`` in the run folder.
        stop_when_stable: a tolerance in (0, 1) that ends training once the validation normals' raw scores move
            less than that share of their spread between two validation passes, twice in a row (see
            :mod:`uad_plugins.engine.stopping`); the schedule (suggested or yours) stays the upper bound.
            ``None`` (default): train the whole schedule.
        data_config: the datamodule as ``{"class_path", "init_args"}``, recorded in the run's checkpoint so that
            ``uad test|validate|export`` and later bench runs rebuild the same data (``None``: not recorded).
        model_reference: the spec (or ``plugin:<name>``) the model was built from, when the caller knows it
            (default: the one registered spec whose class the model is).
        feature_cache: ``None`` (off), ``"memory"`` or ``"disk"``: compute a model's frozen training features once
            per fit and serve them in later epochs (models with ``supports_feature_cache`` only; ConfigError
            otherwise, and for training data that is augmented).
        feature_cache_budget_mb: the most MiB of features the cache stores (memory or disk); later images are
            computed every epoch.
        feature_cache_dir: ``disk``: where the entries are kept, for later runs to reuse (default: a folder in the
            run, removed after the fit).
        **trainer_kwargs: any ``lightning.Trainer`` argument; these always win over a model's suggestions.
    """

    def __init__(
        self,
        callbacks: list | None = None,
        logger: Any = False,
        default_root_dir: str | Path = "results",
        *,
        seed: int | None = 0,
        metrics: Sequence[str] | None = None,
        honest_validation: bool = True,
        validation_synthesizer: str | Mapping[str, Any] | None = None,
        validation_ratio: float = 0.2,
        heatmaps: bool = True,
        image_check: str = "header",
        threshold: str = "f1_adaptive",
        false_alarm_rate: float = 0.01,
        config_text: str | None = None,
        stop_when_stable: float | None = None,
        data_config: Mapping[str, Any] | None = None,
        model_reference: Any = None,
        feature_cache: str | None = None,
        feature_cache_budget_mb: float = DEFAULT_BUDGET_MB,
        feature_cache_dir: str | Path | None = None,
        **trainer_kwargs: Any,
    ) -> None:
        self.user_trainer_args = set(trainer_kwargs)
        _install_notice_filter()
        super().__init__(callbacks=callbacks, logger=logger, default_root_dir=default_root_dir, **trainer_kwargs)
        self.root = Path(default_root_dir)
        self.seed = seed
        self.metrics = list(metrics) if metrics else None
        self.honest_validation = honest_validation
        self.validation_synthesizer = validation_synthesizer
        self._validation_synthesizer: Any = None  # the instance honest validation used (for plugins.json)
        self._validation_reference: Any = None  # and the spec it was built from (None: a class path)
        self.validation_ratio = validation_ratio
        self.heatmaps = heatmaps
        from uad_plugins.data.checks import check_mode

        check_mode(image_check)
        self.image_check = image_check
        check_threshold_rule(threshold, false_alarm_rate)
        self.threshold, self.false_alarm_rate = threshold, float(false_alarm_rate)
        self.config_text = config_text
        check_stability_tolerance(stop_when_stable)
        self.stop_when_stable = None if stop_when_stable is None else float(stop_when_stable)
        self._stability: StopWhenStable | None = None
        self.data_config = as_plain(data_config, field="data_config") if data_config else None
        self.model_reference = model_reference
        if feature_cache is not None:
            check_cache_options(feature_cache, feature_cache_budget_mb)
        self.feature_cache, self.feature_cache_budget_mb = feature_cache, feature_cache_budget_mb
        self.feature_cache_dir = Path(feature_cache_dir) if feature_cache_dir is not None else None
        self._model_specs: dict[int, Any] = {}  # id(model) -> its spec, looked up once
        self.run_dir: Path | None = None
        self._adopted_run = False  # run_dir is an existing run's folder (uad test|validate), not this engine's
        self._private_run = False  # run_dir is a temporary folder of a process other than rank 0 (DDP)
        self._fitted_distributed = False  # the last fit ran in several processes: test once, in rank 0
        self.test_record: Path | None = None  # where a test of an existing run wrote its record
        self._unpublished_run: Path | None = None  # a run folder this engine made that is not complete yet
        self.run_info: dict[str, Any] = {}
        self._prepared: set[int] = set()

    # ------------------------------------------------------------------ set-up
    def _seed(self) -> None:
        if self.seed is not None:
            seed_everything(int(self.seed), workers=True, verbose=False)

    def _model_spec(self, model: Any) -> Any:
        """The registered spec the model was built from (``None`` for a model given by class path)."""
        from uad_plugins.provenance import spec_of

        if id(model) not in self._model_specs:
            self._model_specs[id(model)] = spec_of(model, "model", self.model_reference)
        return self._model_specs[id(model)]

    def _model_name(self, model: Any) -> str:
        spec = self._model_spec(model)
        return spec.name if spec is not None else type(model).__name__.lower()

    def open_run(self, model: Any, datamodule: Any = None, run_dir: str | Path | None = None) -> Path:
        """Create (or adopt) the run folder and point the trainer at it."""
        if self.run_dir is None:
            if run_dir is not None:
                self.run_dir = Path(run_dir).resolve()
                self.run_dir.mkdir(parents=True, exist_ok=True)
                self._adopted_run = True
            elif not distributed.is_global_zero():  # DDP: only rank 0 writes the run; the others work aside
                self.run_dir = distributed.private_run_dir()
                self._private_run = True
            else:
                dataset = getattr(datamodule, "name", "") if datamodule is not None else ""
                category = str(getattr(datamodule, "category", "") or "") if datamodule is not None else ""
                self.run_dir = new_run_dir(self.root, self._model_name(model), dataset, category)
                self._unpublished_run = self.run_dir
            self._cache.args["default_root_dir"] = self.run_dir
        return self.run_dir

    @contextlib.contextmanager
    def _completing_run(self) -> Iterator[None]:
        """A run folder this engine creates inside the block is removed when the block fails, and becomes
        ``latest`` when it succeeds: a failed run leaves no folder, and ``latest`` only ever names a complete run."""
        try:
            yield
        except BaseException:
            if self._unpublished_run is not None:
                discard_run(self._unpublished_run)
                self.run_dir = self._unpublished_run = None
                self._trainer = None  # its default_root_dir was the removed folder
            raise
        finally:
            if self._private_run and self.run_dir is not None:  # DDP, not rank 0: nothing of it is kept
                distributed.remove_private_run_dir(self.run_dir)
        if self._unpublished_run is not None:
            publish_run(self._unpublished_run)
            self._unpublished_run = None

    @staticmethod
    def _check_resume(model: Any, ckpt_path: str | Path, meta: Mapping[str, Any]) -> None:
        """A resume checkpoint (``meta``: its uad block, read with tensors and plain data only) must hold this
        model's class."""
        stored = meta.get("class_path")
        own = f"{type(model).__module__}.{type(model).__qualname__}"
        if stored and stored != own:
            raise ConfigError(f"--ckpt_path {ckpt_path} holds a {stored}; it cannot resume training of a {own}.",
                              hint="Resume with a checkpoint of the same model, or drop --ckpt_path.")

    def _continue_run_of(self, ckpt_path: str | Path, meta: Mapping[str, Any], datamodule: Any) -> None:
        """Resuming from a run's checkpoint (``RUN/weights/lightning/*.ckpt``, where the engine writes it) continues
        that run (same folder, same honest validation split): the seed, validation settings and data must be the
        run's, else ConfigError. A checkpoint anywhere else starts a new run."""
        from uad_plugins.engine.run import find_run_dir

        run = find_run_dir(ckpt_path)
        if run is None or self.run_dir is not None or Path(ckpt_path).resolve().parent != run / "weights" / "lightning":
            return
        record = RunRecord.from_metadata(ckpt_path, meta)
        ours = {"seed": self.seed, "validation ratio": self.validation_ratio,
                "validation synthesizer": self.validation_synthesizer, "honest validation": self.honest_validation,
                "data": data_without_workers(self._data_record(datamodule))}
        theirs = {"seed": record.seed, "validation ratio": record.validation_ratio,
                  "validation synthesizer": record.validation_synthesizer,
                  "honest validation": record.honest_validation, "data": data_without_workers(record.data)}
        differ = [k for k in ours if ours[k] != theirs[k] and not (k == "data" and ours[k] is None)]
        if differ:
            key = differ[0]
            raise ConfigError(
                f"--ckpt_path {ckpt_path} continues the run {run}, whose {key} is {theirs[key]!r:.200}; this command "
                f"asks for {ours[key]!r:.200}.",
                hint="Resume with the run's settings (leave out --data to use the run's data), or start a new run "
                     "from the weights by fitting without --ckpt_path.")
        if not distributed.is_global_zero():  # DDP: rank 0 continues the run; the others work aside as always
            return
        self.run_dir = run
        self._cache.args["default_root_dir"] = run
        self.run_info["resumed_from"] = str(Path(ckpt_path).resolve())
        logger.info("Resuming the run in %s from %s.", run, ckpt_path)

    def _setup_workspace(self, model: Any, *args: Any, datamodule: Any = None, **kwargs: Any) -> None:
        """anomalib calls this from every entry point: our run folder replaces its layout."""
        self.open_run(model, datamodule)

    def _setup_trainer(self, model: Any) -> None:
        """Apply the model's suggested trainer arguments only where the user set nothing."""
        args = self._cache.args
        name = self._model_name(model)
        suggestions = {} if self._trainer is not None else dict(model.trainer_arguments)
        if self.user_trainer_args & _SCHEDULE_KEYS:  # a length you set in epochs or steps overrides both suggestions
            for key in sorted(_SCHEDULE_KEYS & set(suggestions) - self.user_trainer_args):
                logger.info("%s suggests %s=%r; not used, your training length is set.", name, key, suggestions[key])
                del suggestions[key]
        for key, value in suggestions.items():
            if key in self.user_trainer_args:
                if args.get(key) != value:
                    logger.warning("%s suggests %s=%r; keeping your %s=%r.", name, key, value, key, args.get(key))
            elif args.get(key) != value:
                logger.info("Using %s's suggested %s=%r (set --trainer.%s to change it).", name, key, value, key)
                args[key] = value
        if "enable_progress_bar" not in self.user_trainer_args and not output_is_a_terminal():
            # output to a file or a pipe: progress as log lines instead of a bar that redraws one line
            args["enable_progress_bar"] = False
            if not any(isinstance(c, LogProgress) for c in args["callbacks"]):
                args["callbacks"].append(LogProgress())
        if self.stop_when_stable is not None and self._trainer is None:
            self._stability = StopWhenStable(self.stop_when_stable)
            args["callbacks"].append(self._stability)
        self._setup_anomalib_callbacks()
        if not any(isinstance(c, RawOutputs) for c in self._cache.args["callbacks"]):
            self._cache.args["callbacks"].append(RawOutputs())  # threshold-free metrics read raw outputs
        self._install_weights_only_io()
        self._ensure_checkpoint_io_plugin(model)
        if self._trainer is None:
            args["strategy"] = distributed.strategy_for(args.get("strategy", "auto"), model)
            self._trainer = Trainer(**args)

    def _install_weights_only_io(self) -> None:
        """Every ``ckpt_path`` the trainer restores is read with ``weights_only=True`` (unless the user brought
        their own CheckpointIO)."""
        from lightning.fabric.plugins import CheckpointIO

        from uad_plugins.engine.checkpoint import WeightsOnlyCheckpointIO

        if self._strategy_checkpoint_io() is not None:
            return
        plugins = self._cache.args.get("plugins")
        plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(WeightsOnlyCheckpointIO())
        self._cache.args["plugins"] = plugins

    def _restore_metric_states_from(self, model: Any) -> None:
        """Checkpoints leave metric states out (see ``UadCheckpointMetadata``): a resume takes the model's own."""
        from uad_plugins.engine.checkpoint import WeightsOnlyCheckpointIO

        io = self.trainer.strategy.checkpoint_io
        if isinstance(io, WeightsOnlyCheckpointIO):
            io.metric_state = {k: v for k, v in model.state_dict().items() if k.startswith("evaluator.")}

    def prepare_data(self, datamodule: Any, stage: str) -> None:
        """Set the datamodule up with clear errors, and make validation honest before fitting."""
        if datamodule is None or id(datamodule) in self._prepared:
            return
        from uad_plugins.data.checks import prepare_datamodule
        from uad_plugins.data.validation import apply_synthetic_validation, needs_honest_validation

        image = modality_of(datamodule) == "image"
        ours = self.honest_validation and needs_honest_validation(datamodule)
        # validation is honest wherever it fits thresholds: while fitting and in 'uad validate'
        honest = stage in ("fit", "validate") and ours
        if ours and image:
            from anomalib.data.utils import ValSplitMode

            # our validation is made from the training set, so the test split stays whole at EVERY stage (anomalib's
            # default would move half the test images into validation when 'uad test' sets the data up)
            datamodule.val_split_mode = ValSplitMode.NONE
        setup_stage = "fit" if honest else stage  # the honest split is made from the training set
        if image:
            prepare_datamodule(datamodule, setup_stage, self.image_check)
        else:  # signal / point-cloud datamodules check their own data (DataError)
            datamodule.setup(setup_stage)
        if honest:
            from uad_plugins.factory import create_synthesizer, get_spec

            reference = self.validation_synthesizer or getattr(
                datamodule, "default_validation_synthesizer", DEFAULT_IMAGE_SYNTHESIZER)
            source = get_spec("synthesizer", reference) if isinstance(reference, str) else None  # resolved once
            synthesizer = create_synthesizer(source or reference)
            self._validation_synthesizer = synthesizer
            self._validation_reference = source
            if modality_of(synthesizer) != modality_of(datamodule):
                raise ConfigError(
                    f"the validation synthesizer {reference} makes {modality_of(synthesizer)} anomalies, but the data "
                    f"({type(datamodule).__name__}) are {modality_of(datamodule)} data.",
                    hint="Name a synthesizer of the data's modality with --validation_synthesizer (or leave it "
                         "unset for the data's default).")
            assert self.run_dir is not None
            # a unified (multi-class) datamodule holds back normals of every category; non-image datamodules
            # build their own split
            split = getattr(datamodule, "stratified_synthetic_validation", None) or getattr(
                datamodule, "synthetic_validation", None)
            if not callable(split):
                split = partial(apply_synthetic_validation, datamodule)
            self.run_info["validation"] = split(synthesizer, ratio=self.validation_ratio, seed=int(self.seed or 0),
                                                output_dir=self.run_dir / "validation")
            self.run_info["validation"]["synthesizer"] = reference
        elif stage in ("fit", "validate"):
            mode = getattr(datamodule, "val_split_mode", None)
            self.run_info["validation"] = {"mode": str(getattr(mode, "value", mode))}
        self._prepared.add(id(datamodule))

    def _write_run_files(self, model: Any, datamodule: Any) -> None:
        from uad_plugins.provenance import component_record

        assert self.run_dir is not None
        if self.config_text:
            write_text_atomic(self.run_dir / "config.yaml", self.config_text)
        spec = self._model_spec(model)
        records = [component_record(model, "model", spec)]
        if datamodule is not None:
            records.append(component_record(datamodule, "data"))
        if self._validation_synthesizer is not None:
            records.append(component_record(self._validation_synthesizer, "synthesizer",
                                            self._validation_reference))
        evaluator = getattr(model, "evaluator", None)
        metrics = list(getattr(evaluator, "test_metrics", []) or [])
        references = list(getattr(evaluator, "metric_sources", ()) or ())
        references = references if len(references) == len(metrics) else [None] * len(metrics)
        records.extend(component_record(metric, "metric", ref) for metric, ref in zip(metrics, references))
        manifest = plugins_manifest(records, {"seed": self.seed})
        write_json_atomic(self.run_dir / "plugins.json", manifest)
        record = RunRecord(model=spec.reference if spec else None, data=self._data_record(datamodule), seed=self.seed,
                           validation_synthesizer=self.validation_synthesizer,
                           validation_ratio=self.validation_ratio, honest_validation=self.honest_validation,
                           plugins=tuple(manifest["components"]), threshold=self.threshold,
                           false_alarm_rate=self.false_alarm_rate)
        if not any(isinstance(c, UadCheckpointMetadata) for c in self._cache.args["callbacks"]):
            self._cache.args["callbacks"].append(UadCheckpointMetadata(record))

    def _data_record(self, datamodule: Any) -> dict[str, Any] | None:
        """``data_config`` as the checkpoint records it: a short name (``UadDemo``) becomes the class path of the
        datamodule it built, since a checkpoint's data are rebuilt only from checked class paths."""
        if not self.data_config:
            return None
        record = dict(self.data_config)
        if "." not in str(record.get("class_path", "")) and datamodule is not None:
            from uad_plugins.provenance import class_path_of

            record["class_path"] = class_path_of(datamodule)
        return record

    def _threshold_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"rule": self.threshold}
        if self.threshold == "normal_quantile":
            record["false_alarm_rate"] = self.false_alarm_rate
        return record

    def _use_threshold_rule(self, model: Any) -> None:
        """Fit ``model``'s thresholds with this engine's rule from now on, and record the rule."""
        apply_threshold_rule(model, self.threshold, self.false_alarm_rate)
        self.run_info["threshold"] = self._threshold_record()

    def _heatmap_writer(self, model: Any = None, datamodule: Any = None) -> Any:
        """The model's visualizer (``configure_visualizer()``; anomalib's image visualizer by default), or
        ``None`` when heatmaps are off or the model brings its own; per category for a multi-category datamodule."""
        if not self.heatmaps or self._trainer is None:
            return None
        from anomalib.visualization import ImageVisualizer, Visualizer

        from uad_plugins.engine.categories import CategoryImageVisualizer, category_count

        model = model or self.model
        if isinstance(getattr(model, "visualizer", None), Visualizer):
            return None  # the model's own, already among its callbacks
        configure = getattr(model, "configure_visualizer", None)
        writer = configure() if callable(configure) else ImageVisualizer()
        if type(writer) is ImageVisualizer and datamodule is not None and category_count(datamodule) >= 2:
            writer = CategoryImageVisualizer.from_visualizer(writer)  # categories share file names
        return writer

    @contextlib.contextmanager
    def _after_model_callbacks(self, model: Any, extra: Sequence[Any]) -> Iterator[None]:
        """Run ``extra`` callbacks after the model's own (pre-processor, post-processor, evaluator) for one trainer
        call. Lightning appends a model's ``configure_callbacks()`` after the trainer's callbacks, so a heatmap
        writer among the trainer's would draw raw maps and no predicted mask: it goes on the model's list
        instead, for the duration of the call only."""
        model = model or self.model
        extra = [c for c in extra if c is not None]
        if model is None or not extra:
            yield
            return
        own = model.configure_callbacks

        def configure_callbacks() -> list[Any]:
            callbacks = own()
            callbacks = [callbacks] if not isinstance(callbacks, Sequence) else list(callbacks)
            return [*callbacks, *extra]

        model.configure_callbacks = configure_callbacks
        try:
            yield
        finally:
            del model.configure_callbacks  # the class's method again

    def _check_modalities(self, model: Any, datamodule: Any) -> None:
        """A model and a datamodule of different modalities (an image model on signals, ...) -> ConfigError."""
        if model is None or datamodule is None or modality_of(model) == modality_of(datamodule):
            return
        raise ConfigError(
            f"the model {self._model_name(model)} works on {modality_of(model)} data, but the data "
            f"({type(datamodule).__name__}) are {modality_of(datamodule)} data.",
            hint="Give --data a datamodule of the model's modality (signals: MitBihBeats, PtbXl, SignalFolder; "
                 "images: UadDemo, MVTecAD, Folder, ...), or pick a model for your data ('uad plugins list').")

    def _metrics_for(self, model: Any) -> list[str] | None:
        """The metrics asked for, else the model's ``default_metrics`` (else the engine's image defaults)."""
        defaults = getattr(model, "default_metrics", None)
        return self.metrics or (list(defaults) if defaults else None)

    def _add_per_category_metrics(self, datamodule: Any) -> Any:
        """With a multi-category datamodule, a fresh callback computing every metric per category (and heatmaps
        written per category)."""
        from uad_plugins.engine.categories import PerCategoryMetrics, category_count

        if self._trainer is None:
            return None
        callbacks = self.trainer.callbacks
        callbacks[:] = [c for c in callbacks if not isinstance(c, PerCategoryMetrics)]
        if datamodule is None or category_count(datamodule) < 2:
            return None
        callback = PerCategoryMetrics(self.metrics)
        self.trainer.callbacks.append(callback)
        return callback

    # ------------------------------------------------------------------ entry points
    def fit(self, model: Any, train_dataloaders: Any = None, val_dataloaders: Any = None, datamodule: Any = None,
            ckpt_path: str | Path | None = None) -> None:
        """Train ``model`` on ``datamodule`` (validation made honest first). ``ckpt_path`` resumes training; it is
        read with ``weights_only=True`` whatever the environment says. A failed fit leaves no run folder."""
        self._seed()
        self._check_modalities(model, datamodule)
        if ckpt_path is not None:
            from uad_plugins.engine.checkpoint import read_checkpoint_metadata

            meta, _ = read_checkpoint_metadata(ckpt_path)  # read once, tensors and plain data only
            self._check_resume(model, ckpt_path, meta)
            self._continue_run_of(ckpt_path, meta, datamodule)
        self._check_feature_cache(model, datamodule)
        attach_metrics(model, self._metrics_for(model))
        self._use_threshold_rule(model)
        with self._completing_run():
            self.open_run(model, datamodule)
            self.prepare_data(datamodule, "fit")
            self._write_run_files(model, datamodule)
            self._setup_trainer(model)
            processes = distributed.planned_processes(self.trainer.strategy)
            distributed.check_distributed_model(model, self._model_name(model), processes)
            note = distributed.batch_norm_note(model, self._model_name(model), processes,
                                               bool(self._cache.args.get("sync_batchnorm")))
            if note and distributed.is_global_zero():
                logger.info(note)
            self._restore_metric_states_from(model)
            start = time.perf_counter()
            with _no_optimizer_notices(model), self._feature_cache_attached(model, datamodule), \
                    warnings.catch_warnings():
                if "resumed_from" in self.run_info:  # the run's own checkpoint folder, continued on purpose
                    warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty")
                self.trainer.fit(model, train_dataloaders, val_dataloaders, datamodule, ckpt_path, weights_only=True)
            if processes > 1:
                self.run_info["processes"] = processes
            self._record_fit(time.perf_counter() - start)
            if processes > 1:
                self._fitted_distributed = True
                distributed.end_process_group()

    # ------------------------------------------------------------------ feature cache
    def _check_feature_cache(self, model: Any, datamodule: Any) -> None:
        """With ``feature_cache`` on: ConfigError for a model that does not support one, or for augmented training
        images (a file's features would change from epoch to epoch)."""
        if self.feature_cache is None:
            return
        if not getattr(model, "supports_feature_cache", False) or not callable(
                getattr(model, "attach_feature_cache", None)):
            raise ConfigError(
                f"--feature_cache {self.feature_cache}: {self._model_name(model)} does not support a feature cache "
                "(its training does more with the images than run them through a frozen backbone).",
                hint="Drop --feature_cache. Models that support it say so in their README (docs/usage.md, "
                     "'Feature cache').")
        augmentations = getattr(datamodule, "train_augmentations", None)
        if augmentations is not None and not deterministic_transform(augmentations):
            raise ConfigError(
                f"--feature_cache {self.feature_cache}: the training images are augmented "
                f"({' '.join(repr(augmentations).split())}), so an image's features change every epoch and cannot be "
                "cached.", hint="Drop --feature_cache, or the datamodule's train_augmentations / augmentations.")

    @contextlib.contextmanager
    def _feature_cache_attached(self, model: Any, datamodule: Any) -> Iterator[None]:
        """The fit's feature cache attached to ``model`` for the duration of the block (nothing when it is off);
        afterwards detached and closed, its counters in ``metrics.json``."""
        if self.feature_cache is None:
            yield
            return
        assert self.run_dir is not None
        folder = self.feature_cache_dir or self.run_dir / "feature_cache"
        augmentations = getattr(datamodule, "train_augmentations", None)
        cache = FeatureCache(self.feature_cache, budget_mb=self.feature_cache_budget_mb, folder=folder,
                             remove_on_close=self.feature_cache_dir is None,
                             context=f"precision={self._cache.args.get('precision')!r} "
                                     f"augmentations={augmentations!r}")
        model.attach_feature_cache(cache)
        try:
            yield
        finally:
            model.attach_feature_cache(None)
            self.run_info["feature_cache"] = stats = cache.stats()
            cache.close()
            logger.info("feature cache (%s): %d hits, %d misses, %d images stored (%.1f MiB of %.0f).",
                        stats["mode"], stats["hits"], stats["misses"], stats["entries"], stats["stored_mb"],
                        stats["budget_mb"])

    def _record_fit(self, elapsed: float) -> None:
        epochs = int(self.trainer.current_epoch)
        batches = int(self.trainer.fit_loop.epoch_loop.total_batch_idx) + 1
        self.run_info.update(fit_seconds=round(elapsed, 2), epochs=epochs, steps=int(self.trainer.global_step),
                             train_batches=batches,
                             seconds_per_epoch=round(elapsed / max(epochs, 1), 2),
                             checkpoint=str(self.best_model_path or ""))
        if self._stability is not None:
            self.run_info["stop_when_stable"] = self._stability.record()
        self._write_metrics()
        self._log_run_metrics({f"fit/{k}": self.run_info[k] for k in ("fit_seconds", "epochs", "steps",
                                                                        "seconds_per_epoch")})

    def validate(self, model: Any = None, dataloaders: Any = None, ckpt_path: str | Path | None = None,
                 verbose: bool = True, datamodule: Any = None) -> Any:
        """Run validation (thresholds and normalisation statistics) and return its metrics."""
        self._seed()
        self._check_modalities(model or self.model, datamodule)
        self._use_threshold_rule(model or self.model)
        with self._completing_run():
            self.open_run(model or self.model, datamodule)
            self.prepare_data(datamodule, "validate")
            return super().validate(model, dataloaders, ckpt_path, verbose, datamodule)

    def test(self, model: Any = None, dataloaders: Any = None, ckpt_path: str | Path | None = None,
             verbose: bool = True, datamodule: Any = None) -> list[dict[str, float]]:
        """Test on the datamodule's test split; metrics also land in ``metrics.json``. After a fit in several
        processes (DDP) the test runs once, in rank 0, on one device over the whole test set (the other processes
        return ``[]``): a distributed sampler would pad the test set with duplicates."""
        if self._fitted_distributed:
            if not distributed.is_global_zero():
                return []
            self._cache.args.update(distributed.single_device_arguments(self._cache.args))
            self._trainer = None
            self._fitted_distributed = False
        self._seed()
        self._check_modalities(model or self.model, datamodule)
        if model is not None and self._trainer is None:
            attach_metrics(model, self._metrics_for(model))
        with self._completing_run():
            self.open_run(model or self.model, datamodule)
            self.prepare_data(datamodule, "test")
            if model is not None and self._trainer is None:
                self._write_run_files(model, datamodule)
                self._setup_trainer(model)
            writer = self._heatmap_writer(model, datamodule)
            per_category = self._add_per_category_metrics(datamodule)
            with self._after_model_callbacks(model, [writer]):
                results = super().test(model, dataloaders, ckpt_path, verbose, datamodule)
            metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}
            for key in ("test_per_category", "test_mean_over_categories"):
                self.run_info.pop(key, None)
            if per_category is not None:
                self.run_info["test_per_category"] = per_category.per_category
                self.run_info["test_mean_over_categories"] = per_category.mean
                self._log_run_metrics({
                    **{f"test_per_category/{category}/{name}": value
                       for category, values in per_category.per_category.items() for name, value in values.items()},
                    **{f"test_mean_over_categories/{name}": value for name, value in per_category.mean.items()}})
            if datamodule is not None:
                # a Folder dataset has no category: its name says what was tested
                category = getattr(datamodule, "category", "") or getattr(datamodule, "name", "") or ""
                self.run_info["test_data"] = {"category": str(category), "datamodule": type(datamodule).__name__}
            self.run_info["test"] = metrics
            self.run_info.setdefault("threshold", self._threshold_record())  # the rule the thresholds came from
            if self._adopted_run:  # a test of an existing run: its own record; the fit's metrics.json is kept
                self._write_test_record()
            else:
                self._write_metrics()
            return results

    def predict(self, model: Any = None, dataloaders: Any = None, datamodule: Any = None, dataset: Any = None,
                return_predictions: bool | None = None, ckpt_path: str | Path | None = None,
                data_path: str | Path | None = None) -> Any:
        """Score images; ``data_path`` is an image file or a folder of images (checked before use). Non-image
        models take their inputs through ``dataloaders`` or ``datamodule``."""
        self._seed()
        if data_path is not None and modality_of(model or self.model) != "image":
            raise ConfigError(f"data_path is for images; the model works on {modality_of(model or self.model)} data.",
                              hint="Pass the inputs as dataloaders (uad predict builds them from the checkpoint's "
                                   "data settings).")
        if data_path is not None:
            from anomalib.data.utils.image import IMG_EXTENSIONS

            from uad_plugins.data.checks import check_image_file, list_image_files

            # every file anomalib will read (its extensions, hidden names too) is checked first
            files = list_image_files(data_path, suffixes=IMG_EXTENSIONS, hidden=True)
            if not files:
                raise DataError(f"no images found in {data_path}",
                                hint="Give an image file or a folder with .png/.jpg/.jpeg/.bmp/.tif images.")
            for file in files:
                check_image_file(file, image_check=self.image_check)
        self.open_run(model or self.model, datamodule)
        if model is not None and self._trainer is None:
            self._setup_trainer(model)
        writer = self._heatmap_writer(model, datamodule)
        # a model passed in already holds its weights (uad predict loads the checkpoint itself): anomalib's
        # "ckpt_path is not provided. Model weights will not be loaded." would tell the user the opposite
        holds_weights = model is not None and not ckpt_path
        quiet = _drop_log_message("anomalib.engine.engine", "ckpt_path is not provided") if holds_weights \
            else contextlib.nullcontext()
        with quiet, self._after_model_callbacks(model, [writer]):
            return super().predict(model, dataloaders, datamodule, dataset, return_predictions, ckpt_path, data_path)

    @property
    def is_global_zero(self) -> bool:
        """Whether this process is rank 0 (always, without DDP): the one that writes the run and tests."""
        return distributed.is_global_zero()

    def _log_run_metrics(self, values: Mapping[str, Any]) -> None:
        """Send the run's own numbers (fit time and length, per-category test metrics) to the trainer's loggers
        (``--trainer.logger``), beside the metrics Lightning logs itself; ``None`` values are left out."""
        if self._trainer is None or not self.trainer.loggers:
            return
        numbers = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if not numbers:
            return
        for run_logger in self.trainer.loggers:
            run_logger.log_metrics(numbers, step=int(self.trainer.global_step))
            run_logger.save()

    def _write_test_record(self) -> None:
        """``test_<UTC time>.json`` in the run folder (a new name per test: earlier records are never replaced)."""
        assert self.run_dir is not None
        if self.test_record is None:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            path, n = self.run_dir / f"test_{stamp}.json", 1
            while path.exists():
                n += 1
                path = self.run_dir / f"test_{stamp}_{n}.json"
            self.test_record = path
        write_json_atomic(self.test_record, {"run_dir": str(self.run_dir), **self.run_info})

    def _write_metrics(self) -> None:
        if self.run_dir is not None:
            write_json_atomic(self.run_dir / "metrics.json", {"run_dir": str(self.run_dir), **self.run_info})
