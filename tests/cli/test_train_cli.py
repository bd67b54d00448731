"""`uad fit|test|validate|predict` end to end on the demo data, with tiny PBAS settings."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory, tiny_pbas: list[str], quiet: list[str]) -> tuple[Path, str]:
    """One tiny PBAS run on the demo data, shared by the tests below."""
    from uad_plugins.cli.main import main

    root = tmp_path_factory.mktemp("runs")
    code = main(["fit", *tiny_pbas, *quiet, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3",
                 "--default_root_dir", str(root), "--data.category", "washer"])
    assert code == 0
    run_dir = next(root.glob("pbas/UadDemo/washer/v*"))
    return run_dir, str(run_dir / "weights" / "lightning" / "model.ckpt")


def test_fit_writes_a_complete_run_folder(fitted) -> None:
    run_dir, ckpt = fitted
    assert Path(ckpt).is_file()
    config = (run_dir / "config.yaml").read_text()
    assert config.startswith("# model: plugin:pbas") and "image_size: 64" in config
    plugins = json.loads((run_dir / "plugins.json").read_text())
    refs = {c["reference"] for c in plugins["components"]}
    assert {"plugin:pbas", "plugin:image_auroc", "plugin:pixel_aupro"} <= refs
    assert plugins["libraries"]["anomalib"].startswith("2.")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["test"]) == {"image_AUROC", "pixel_AUROC", "image_F1Max", "pixel_F1Max", "pixel_AUPRO",
                                    "image_Precision", "image_Recall", "image_F1Score"}
    assert metrics["epochs"] == 1 and metrics["train_batches"] == 3
    assert metrics["steps"] == 6  # PBAS steps two optimisers per batch
    assert metrics["validation"]["mode"] == "synthetic" and metrics["validation"]["n_val_anomalous"] > 0
    assert len(list((run_dir / "images").rglob("*.png"))) > 0


def test_user_trainer_options_win_over_model_suggestions(fitted) -> None:
    run_dir, _ = fitted
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 1  # pbas suggests 10


def test_test_from_checkpoint_reuses_recorded_data(fitted, uad, quiet) -> None:
    run_dir, ckpt = fitted
    code, out, err = uad("test", "--ckpt_path", ckpt, *quiet)
    assert code == 0, err
    assert "image_AUROC" in out and str(run_dir) in out
    # regression: 'uad test' let anomalib move half the test images into validation (its default split mode), so a
    # checkpoint's test numbers differed from its fit's; the same checkpoint now scores the same whole test set
    fit_test = json.loads((run_dir / "metrics.json").read_text())["test"]
    (record,) = run_dir.glob("test_*.json")
    again = json.loads(record.read_text())["test"]
    assert again == pytest.approx(fit_test, abs=1e-6)


def test_validate_from_checkpoint(fitted, uad, quiet) -> None:
    _, ckpt = fitted
    code, _out, err = uad("validate", "--ckpt_path", ckpt, *quiet)
    assert code == 0, err


def test_predict_writes_scores_and_heatmaps(fitted, uad, quiet, tmp_path: Path) -> None:
    from uad_plugins.data import default_demo_root

    _, ckpt = fitted
    images = default_demo_root() / "washer" / "test" / "crack"
    code, _out, err = uad("predict", "--ckpt_path", ckpt, "--data_path", images, "--output", tmp_path / "pred",
                         *quiet)
    assert code == 0, err
    rows = json.loads((tmp_path / "pred" / "predictions.json").read_text())["predictions"]
    n_images = len(list(images.glob("*.png")))
    assert len(rows) == n_images and all(0.0 <= r["pred_score"] <= 1.0 for r in rows)
    with open(tmp_path / "pred" / "predictions.csv", encoding="utf-8") as fh:
        assert len(list(csv.DictReader(fh))) == n_images
    # data options are for signal checkpoints; an image checkpoint says so instead of ignoring them
    code, _out, err = uad("predict", "--ckpt_path", ckpt, "--data_path", images, "--output", tmp_path / "p2",
                          "--data.image_size", "64", *quiet)
    assert code == 2 and "--data.image_size: image checkpoints read --data_path directly" in err
    # a failed predict leaves no output folder behind (and never removes one the user already had)
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken.png").write_bytes(b"not a png")
    for data_path in (tmp_path / "missing", tmp_path / "empty", tmp_path / "broken.png"):
        code, _out, err = uad("predict", "--ckpt_path", ckpt, "--data_path", data_path, "--output",
                              tmp_path / "p3", *quiet)
        assert code == 2 and "Traceback" not in err and not (tmp_path / "p3").exists(), err
    code, _out, err = uad("predict", "--ckpt_path", ckpt, "--data_path", tmp_path / "broken.png", "--output",
                          tmp_path / "empty", *quiet)
    assert code == 2 and (tmp_path / "empty").is_dir()
    assert len(list((tmp_path / "pred" / "images").rglob("*.png"))) == n_images


def test_seed_everything_makes_runs_repeatable(uad, tiny_pbas, quiet, tmp_path: Path) -> None:
    args = ["fit", *tiny_pbas, *quiet, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
            "--test", "false", "--heatmaps", "false", "--data.category", "tile", "--seed_everything", "7"]
    states = []
    for name in ("a", "b"):
        code, _, err = uad(*args, "--default_root_dir", tmp_path / name)
        assert code == 0, err
        ckpt = next((tmp_path / name).rglob("model.ckpt"))
        states.append(torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"])
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def test_metrics_selection(uad, tiny_pbas, quiet, tmp_path: Path) -> None:
    code, _, err = uad("fit", *tiny_pbas, *quiet, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
                         "--heatmaps", "false", "--data.category", "tile", "--default_root_dir", tmp_path,
                         "--metrics", "plugin:image_auroc", "plugin:image_ap")
    assert code == 0, err
    metrics = json.loads(next(tmp_path.rglob("metrics.json")).read_text())
    assert set(metrics["test"]) == {"image_AUROC", "image_AUPR"}


def test_predict_output_lands_whole_and_never_costs_user_files(fitted, uad, quiet, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 11, item 7: no heatmaps without predictions.json, no mixing of two runs, no user file touched."""
    from uad_edge.output import OutputFolder
    from uad_plugins.data import default_demo_root

    _, ckpt = fitted
    images = default_demo_root() / "washer" / "test" / "crack"
    out = tmp_path / "pred"
    code, _, err = uad("predict", "--ckpt_path", ckpt, "--data_path", images, "--output", out, *quiet)
    assert code == 0, err
    first = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert json.loads((out / "predictions.json").read_text())["files"] == [f for f in first
                                                                          if f != "predictions.json"]
    (out / "my_notes.txt").write_text("mine")
    code, _, err = uad("predict", "--ckpt_path", ckpt, "--data_path", images, "--output", out, *quiet)
    assert code == 2 and "--overwrite" in err and "Traceback" not in err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == \
        sorted([*first, "my_notes.txt"])
    one = sorted(images.glob("*.png"))[0]
    code, _, err = uad("predict", "--ckpt_path", ckpt, "--data_path", one, "--output", out, "--overwrite", "true",
                       *quiet)
    assert code == 0, err
    assert (out / "my_notes.txt").read_text() == "mine"
    heatmaps = list((out / "images").rglob("*.png"))
    assert len(heatmaps) == 1 and len(json.loads((out / "predictions.json").read_text())["predictions"]) == 1
    # killed midway (here: a failure just before the document): the previous results stay as they were
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def boom(self, tmp, document):
        raise RuntimeError("killed midway")

    monkeypatch.setattr(OutputFolder, "write_document", boom)
    code, _, _ = uad("predict", "--ckpt_path", ckpt, "--data_path", images, "--output", out, "--overwrite", "true",
                     *quiet)
    assert code == 1
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pred")]
    code, _, err = uad("predict", "--ckpt_path", ckpt, "--data_path", images, "--output", tmp_path / "fresh", *quiet)
    assert code == 1 and not (tmp_path / "fresh").exists()
    monkeypatch.undo()
    # the output may not be the input folder, even with --overwrite
    code, _, err = uad("predict", "--ckpt_path", ckpt, "--data_path", images, "--output", images / "scored",
                       "--overwrite", "true", *quiet)
    assert code == 2 and "inputs" in err and not (images / "scored").exists()


def test_validate_is_honest_and_rebuilds_the_fits_split(fitted, uad, quiet) -> None:
    """Issue 12, item 2: `uad validate` fits thresholds on held-back normals + synthetic anomalies, exactly the
    split of the fit (same synthesizer, ratio and seed), never on the test split."""
    import hashlib

    from uad_plugins.engine import UadEngine
    from uad_plugins.engine.checkpoint import load_checkpoint

    run_dir, ckpt = fitted
    code, _, err = uad("validate", "--ckpt_path", ckpt, *quiet)
    assert code == 0, err

    def digest(folder: Path) -> dict[str, str]:
        return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*.png"))}

    fit_split = digest(run_dir / "validation")
    assert fit_split and digest(run_dir / "validate" / "validation") == fit_split
    model, record = load_checkpoint(ckpt)
    datamodule = record.build_datamodule()
    engine = UadEngine(default_root_dir=run_dir / "validate_py", seed=record.seed, heatmaps=False,
                       validation_synthesizer=record.validation_synthesizer, enable_progress_bar=False,
                       enable_model_summary=False)
    engine.validate(model=model, datamodule=datamodule, verbose=False)
    assert engine.run_info["validation"]["mode"] == "synthetic"
    validation_images = {str(p) for p in datamodule.val_data.samples["image_path"]}
    test_images = {str(p) for p in datamodule.test_data.samples["image_path"]}
    assert validation_images and not validation_images & test_images


def test_heatmaps_are_drawn_from_post_processed_outputs(fitted, tmp_path: Path) -> None:
    """The heatmap writer runs after anomalib's post-processor in test and predict: normalised maps and a
    predicted mask (its panel had no title and no outline when the writer ran first, on raw maps)."""
    from anomalib.visualization import ImageVisualizer

    from uad_plugins.engine import UadEngine
    from uad_plugins.engine.checkpoint import load_checkpoint

    seen: list[tuple[bool, float]] = []

    class Spy(ImageVisualizer):
        def _look(self, outputs) -> None:
            seen.append((outputs.pred_mask is not None, float(outputs.anomaly_map.max())))

        def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
            self._look(outputs)

        def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
            self._look(outputs)

    _, ckpt = fitted
    model, record = load_checkpoint(ckpt)
    model.configure_visualizer = Spy
    engine = UadEngine(default_root_dir=tmp_path, enable_progress_bar=False)
    engine.test(model, datamodule=record.build_datamodule(), verbose=False)
    images = next(Path(record.build_datamodule().root).rglob("test/*/*.png"))
    engine.predict(model, data_path=str(images))
    assert seen and all(has_mask and top <= 1.0 for has_mask, top in seen), seen
    assert model.configure_callbacks.__func__ is type(model).configure_callbacks  # only for the call


def test_normal_quantile_threshold_is_fitted_recorded_and_reused(fitted, uad, quiet, tiny_pbas,
                                                                 tmp_path: Path) -> None:
    """`--threshold normal_quantile`: the image threshold is the quantile of the validation normals' raw scores; the
    rule lands in metrics.json and the checkpoint, and `uad validate` / `uad test` keep it (issue 12)."""
    from uad_plugins.engine import UadEngine
    from uad_plugins.engine.checkpoint import load_checkpoint, read_checkpoint_metadata

    _, ckpt = fitted
    model, record = load_checkpoint(ckpt)
    assert record.threshold == "f1_adaptive"  # the fixture's run used the default
    engine = UadEngine(default_root_dir=tmp_path / "q", seed=record.seed, heatmaps=False, enable_progress_bar=False,
                       enable_model_summary=False, threshold="normal_quantile", false_alarm_rate=0.25)
    datamodule = record.build_datamodule()
    engine.validate(model=model, datamodule=datamodule, verbose=False)
    from uad_plugins.export.graph import RawExportModule

    raw = RawExportModule(model).eval()
    normals = []
    with torch.no_grad():
        for batch in datamodule.val_dataloader():
            normals.append(raw(batch.image)[0][~batch.gt_label.bool()])
    normal = torch.cat(normals)
    above = int((normal > model.post_processor.image_threshold).sum())
    assert above == int(0.25 * len(normal)), (above, len(normal))
    assert engine.run_info["threshold"] == {"rule": "normal_quantile", "false_alarm_rate": 0.25}

    tiny_fit = [*tiny_pbas, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3",
                "--data.category", "washer"]
    code, _, err = uad("fit", *tiny_fit, *quiet, "--default_root_dir", str(tmp_path / "runs"),
                       "--threshold", "normal_quantile", "--false_alarm_rate", "0.2")
    assert code == 0, err
    run = next((tmp_path / "runs").rglob("metrics.json")).parent
    assert json.loads((run / "metrics.json").read_text())["threshold"] == {"rule": "normal_quantile",
                                                                           "false_alarm_rate": 0.2}
    new_ckpt = run / "weights" / "lightning" / "model.ckpt"
    assert read_checkpoint_metadata(new_ckpt)[0]["threshold"]["rule"] == "normal_quantile"
    code, _, err = uad("validate", "--ckpt_path", str(new_ckpt), *quiet)
    assert code == 0, err
    code, _, err = uad("test", "--ckpt_path", str(new_ckpt), *quiet)
    assert code == 0, err
    assert json.loads((run / "metrics.json").read_text())["threshold"]["rule"] == "normal_quantile"
    code, _, err = uad("fit", *tiny_fit, *quiet, "--threshold", "quantile")
    assert code == 2 and "threshold" in err
