"""What anomalib users type works (issue 17): anomalib's model names, ``uad train``, anomalib's export options,
trainer loggers and callbacks given as classes, explicit trainer options that equal Lightning's defaults, and a
``uad test`` that keeps the fit's record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

TINY_PADIM = ["--model", "Padim", "--model.pre_trained", "false", "--model.backbone", "resnet18",
              "--model.layers", "[layer1]", "--model.n_features", "32", "--trainer.limit_train_batches", "2",
              "--data.category", "washer", "--heatmaps", "false"]


# ---------------------------------------------------------------------------------------------- model names
@pytest.mark.parametrize(("name", "expected"), [
    ("Padim", "anomalib.models.image.padim.lightning_model.Padim"),
    ("patchcore", "anomalib.models.image.patchcore.lightning_model.Patchcore"),
    ("reverse_distillation", "anomalib.models.image.reverse_distillation.lightning_model.ReverseDistillation"),
    ("EfficientAd", "anomalib.models.image.efficient_ad.lightning_model.EfficientAd"),
    ("pbas", "pbas"),  # a registered plugin keeps its meaning (resolve then asks for plugin:pbas)
    ("plugin:pbas", "plugin:pbas"), ("anomalib.models.Padim", "anomalib.models.Padim"), ("NoSuchModel", "NoSuchModel"),
])
def test_short_anomalib_model_names_expand_to_their_class_path(name: str, expected: str) -> None:
    from uad_plugins.registry import get_registry

    assert get_registry().expand("model", name) == expected
    assert get_registry().expand("synthesizer", "Padim") == "Padim"  # only models have anomalib short names


def test_create_model_takes_an_anomalib_name_and_unknown_names_say_so() -> None:
    from anomalib.models import Padim

    from uad_plugins.errors import BadReferenceError, ConfigError
    from uad_plugins.factory import create_model

    model = create_model("Padim", pre_trained=False, backbone="resnet18", layers=["layer1"],
                         n_features=32)
    assert type(model) is Padim
    with pytest.raises(BadReferenceError, match="anomalib model name"):
        create_model("NoSuchModel")
    with pytest.raises(BadReferenceError, match="plugin:pbas"):
        create_model("pbas")
    with pytest.raises(ConfigError, match="n_features"):  # a value the class refuses: a config error
        create_model("Padim", pre_trained=False, backbone="resnet18", layers=["layer1"], n_features=100)


def test_a_failed_weight_download_is_one_block_with_what_to_do(tmp_path: Path) -> None:
    """anomalib's Padim downloads ImageNet weights when built; offline (no cache) that is a clear exit-2 error that
    names --model.pre_trained false, not a traceback."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "TORCH_HOME": str(tmp_path / "torch")}
    proc = subprocess.run([sys.executable, "-m", "uad_plugins", "fit", "--model", "Padim", "--model.backbone",
                           "resnet18", "--default_root_dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "downloads pretrained weights" in proc.stderr and "--model.pre_trained false" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not any((tmp_path / "runs").rglob("plugins.json"))  # a failed run leaves no run folder


def test_is_download_failure_follows_the_cause_chain() -> None:
    from uad_plugins.factory import _is_download_failure

    try:
        try:
            raise ConnectionError("no route to host")
        except ConnectionError as inner:
            raise RuntimeError("could not build the backbone") from inner
    except RuntimeError as outer:
        assert _is_download_failure(outer)
    assert not _is_download_failure(ValueError("bad layer name"))


# ---------------------------------------------------------------------------------------------- trainer options
def _parsed(*argv: str):
    from uad_plugins.cli.train import _explicit_trainer_args, _parse

    _, cfg, norm = _parse("fit", ["--model", "plugin:pbas", *argv])
    return _explicit_trainer_args(cfg, norm)


def test_an_explicit_trainer_option_counts_whatever_its_value(tmp_path: Path) -> None:
    """`--trainer.num_sanity_val_steps 2` equals Lightning's default but was typed: it is the user's, and wins over
    a model's suggestion of 0 (it used to count as unset)."""
    assert _parsed("--trainer.num_sanity_val_steps", "2") == {"num_sanity_val_steps": 2}
    assert _parsed() == {}
    assert _parsed("--trainer", '{"max_epochs": 1000, "accelerator": "auto"}') == {"max_epochs": 1000,
                                                                                 "accelerator": "auto"}
    config = tmp_path / "recipe.yaml"
    config.write_text("trainer:\n  check_val_every_n_epoch: 1\n  max_epochs: 3\n", encoding="utf-8")
    assert _parsed("--config", str(config)) == {"check_val_every_n_epoch": 1, "max_epochs": 3}


def test_trainer_loggers_and_callbacks_given_as_classes_are_built() -> None:
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    args = _parsed("--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", "logs",
                   "--trainer.logger.flush_logs_every_n_steps", "7",
                   "--trainer.callbacks+=LearningRateMonitor",
                   "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",  # anomalib has one too
                   "--trainer.callbacks.every_n_epochs", "2")
    assert isinstance(args["logger"], CSVLogger) and args["logger"].save_dir == "logs"
    assert args["logger"]._flush_logs_every_n_steps == 7  # coerced to int by jsonargparse
    assert [type(c) for c in args["callbacks"]] == [LearningRateMonitor, ModelCheckpoint]
    assert args["callbacks"][1]._every_n_epochs == 2


def test_a_callback_that_refuses_its_arguments_exits_2(uad, tiny_pbas, tmp_path: Path) -> None:
    code, _, err = uad("fit", *tiny_pbas, "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
                       "--trainer.callbacks.save_top_k", "2", "--default_root_dir", tmp_path / "runs")
    assert code == 2 and "--trainer: cannot build callbacks" in err and "No quantity for top_k" in err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_csv_and_tensorboard_loggers_from_the_cli_get_the_runs_metrics(uad, tiny_pbas, quiet,
                                                                      tmp_path: Path) -> None:
    loggers = json.dumps([
        {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path / "csv")}},
        {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
         "init_args": {"save_dir": str(tmp_path / "tb"), "name": "pbas"}}])
    code, _, err = uad("fit", *tiny_pbas, *quiet, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
                       "--data.category", "washer", "--heatmaps", "false", "--default_root_dir", tmp_path / "runs",
                       "--trainer.logger", loggers, "--trainer.callbacks+=LearningRateMonitor")
    assert code == 0, err
    csv_file = next((tmp_path / "csv").rglob("metrics.csv"))
    header = csv_file.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert {"image_AUROC", "pixel_AUPRO", "fit/fit_seconds", "fit/steps"} <= set(header), header
    assert list((tmp_path / "tb" / "pbas").rglob("events.out.tfevents.*"))


# ---------------------------------------------------------------------------------------------- export options
def _export_args(*argv: str):
    from uad_plugins.cli.export import _apply_anomalib_names, _parser

    args = _parser().parse_args(["--ckpt_path", "x.ckpt", *argv])
    _apply_anomalib_names(args, list(argv))
    return args


def test_anomalib_export_options_map_onto_ours() -> None:
    args = _export_args("--export_type", "openvino", "--compression_type", "int8_acq", "--export_root", "out")
    assert (args.format, args.precision, args.int8_strategy) == ("openvino", "int8", "accuracy_control")
    assert Path(args.output) == Path("out") / "bundle_int8"
    args = _export_args("--compression_type", "int8_ptq")
    assert (args.precision, args.int8_strategy, args.output) == ("int8", "ptq", None)
    assert _export_args("--compression_type", "fp16").precision == "fp16"


@pytest.mark.parametrize(("argv", "needle"), [
    (["--export_type", "onnx"], "OpenVINO bundles only"),
    (["--compression_type", "int8"], "weights only"),
    (["--compression_type", "int4"], "is not offered"),
    (["--compression_type", "fp16", "--precision", "int8"], "disagree"),
    (["--compression_type", "int8_ptq", "--int8_strategy", "backbone"], "disagree"),
    (["--export_root", "a", "--output", "b"], "Give one of them"),
])
def test_anomalib_export_options_that_cannot_apply_exit_2(argv: list[str], needle: str, uad, tmp_path: Path) -> None:
    code, _, err = uad("export", "--ckpt_path", tmp_path / "missing.ckpt", *argv)
    assert code == 2 and needle in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_train_padim_by_name_then_test_and_export_the_anomalib_way(uad, quiet, tmp_path: Path) -> None:
    """`uad train --model Padim` (anomalib's command) trains anomalib's Padim through our engine with honest
    validation; `uad test` writes its own record and keeps the fit's; `uad export` takes anomalib's options."""
    code, out, err = uad("train", *TINY_PADIM, *quiet, "--default_root_dir", tmp_path / "runs")
    assert code == 0, err
    run = next((tmp_path / "runs").glob("padim/UadDemo/washer/v0"))
    fit_record = (run / "metrics.json").read_text(encoding="utf-8")
    metrics = json.loads(fit_record)
    assert metrics["validation"]["mode"] == "synthetic" and "image_AUROC" in metrics["test"]
    plugins = json.loads((run / "plugins.json").read_text(encoding="utf-8"))
    assert plugins["components"][0]["class_path"] == "anomalib.models.image.padim.lightning_model.Padim"
    ckpt = run / "weights" / "lightning" / "model.ckpt"

    code, out, err = uad("test", "--ckpt_path", ckpt, *quiet)
    assert code == 0, err
    records = sorted(run.glob("test_*.json"))
    assert len(records) == 1 and f"test record: {records[0]}" in out
    assert (run / "metrics.json").read_text(encoding="utf-8") == fit_record  # the fit's record is kept
    tested = json.loads(records[0].read_text(encoding="utf-8"))["test"]
    assert tested["image_AUROC"] == pytest.approx(metrics["test"]["image_AUROC"], abs=1e-6)
    code, _, err = uad("test", "--ckpt_path", ckpt, *quiet)  # a second test: a second record, none replaced
    assert code == 0, err and len(list(run.glob("test_*.json"))) == 2

    code, out, err = uad("export", "--model", "Padim", "--ckpt_path", ckpt, "--export_type", "openvino",
                         "--export_root", tmp_path / "exported", "--parity_samples", "4")
    assert code == 0, err
    assert (tmp_path / "exported" / "bundle_fp32" / "manifest.json").is_file()
