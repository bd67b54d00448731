"""``uad fit|test|predict`` with signal data and plugin:mmae_ecg, end to end on CPU; every bad input is a clear
error with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from uad_plugins.data.signals import make_synthetic_signal_folder

torch.set_num_threads(2)

MITBIH = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ecg" / "mitbih_subset"
TINY = ["--model", "plugin:mmae_ecg", "--model.length", "64", "--model.segment_len", "8",
        "--model.local_segment_len", "4", "--model.local_segments", "2", "--model.embed_dim", "16",
        "--model.depth", "1", "--model.num_heads", "2", "--model.decoder_dim", "16", "--model.decoder_heads", "2"]
RUN = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"]


def folder_data(root: Path, **extra: str) -> list[str]:
    args = ["--data", "SignalFolder", "--data.root", str(root), "--data.normal_dir", "train/good",
            "--data.normal_test_dir", "test/good", "--data.abnormal_dir", "test/bad", "--data.mask_dir",
            "ground_truth/bad", "--data.train_batch_size", "8"]
    for key, value in extra.items():
        args += [f"--data.{key}", value]
    return args


@pytest.fixture(scope="module")
def signal_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One tiny fit on a synthetic signal folder (shared by the tests below)."""
    from uad_plugins.cli.main import main

    tmp = tmp_path_factory.mktemp("signals")
    root = make_synthetic_signal_folder(tmp / "data", length=64)
    code = main(["fit", *TINY, *folder_data(root), *RUN, "--trainer.enable_progress_bar", "false",
                 "--default_root_dir", str(tmp / "runs")])
    assert code == 0
    metrics_file = next((tmp / "runs").rglob("metrics.json"))
    return root, metrics_file.parent


def test_fit_writes_metrics_validation_and_plots(signal_run: tuple[Path, Path]) -> None:
    _, run = signal_run
    info = json.loads((run / "metrics.json").read_text())
    assert {"sample_AUROC", "sample_AP", "point_AUROC"} <= set(info["test"])
    assert info["validation"]["synthesizer"] == "plugin:ecg_anomaly" and info["validation"]["by"] == "records"
    assert (run / "validation" / "validation_signals.npz").is_file()
    assert list((run / "images" / "anomalous").glob("*.png")) and list((run / "images" / "normal").glob("*.png"))
    meta = json.loads((run / "plugins.json").read_text())
    assert any(c.get("reference") == "plugin:mmae_ecg" for c in meta["components"])



def test_data_given_as_a_file_gives_a_readable_checkpoint(tmp_path: Path, import_tool) -> None:
    """Regression: ``--data FILE.yaml`` recorded jsonargparse's ``__path__`` (a Path object) in the checkpoint, which
    our own weights-only reader then refused; the record is plain data now, and the validation tool reads it."""
    import yaml

    from uad_plugins.cli.main import main
    from uad_plugins.engine.checkpoint import load_checkpoint

    root = make_synthetic_signal_folder(tmp_path / "data", length=64)
    data_file = tmp_path / "data.yaml"
    data_file.write_text(yaml.safe_dump({"class_path": "SignalFolder", "init_args": {
        "root": str(root), "normal_dir": "train/good", "normal_test_dir": "test/good", "abnormal_dir": "test/bad",
        "mask_dir": "ground_truth/bad", "train_batch_size": 8}}))
    assert main(["fit", "--model", "plugin:signal_std", "--data", str(data_file), "--default_root_dir",
                 str(tmp_path / "runs"), "--trainer.enable_progress_bar", "false"]) == 0
    ckpt = next((tmp_path / "runs").rglob("model.ckpt"))
    _, record = load_checkpoint(ckpt)
    assert "__path__" not in record.data and record.data["init_args"]["root"] == str(root)
    tool = import_tool("validation_scores")
    scores = tool.validation_scores(ckpt)
    assert scores["split"] == "validation"
    assert 0.0 <= scores["sample_AUROC"] <= 1.0 and 0.0 <= scores["point_AUROC"] <= 1.0
    test = tool.validation_scores(ckpt, "test")  # reporting a fixed checkpoint on its test windows
    assert test["split"] == "test" and 0.0 <= test["sample_AUROC"] <= 1.0
    other = tool.validation_scores(ckpt, synthesizer="plugin:ecg_anomaly")  # validation anomalies of another kind
    assert other["synthesizer"] == "plugin:ecg_anomaly" and 0.0 <= other["sample_AUROC"] <= 1.0
    with pytest.raises(SystemExit) as refused:  # the test split has real anomalies: nothing to re-synthesize
        tool.main([str(ckpt), "--split", "test", "--synthesizer", "plugin:cutpaste"])
    assert refused.value.code == 2


def test_test_and_predict_from_the_checkpoint(signal_run: tuple[Path, Path], uad, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    root, run = signal_run
    ckpt = run / "weights" / "lightning" / "model.ckpt"
    code, out, err = uad("test", "--ckpt_path", ckpt, "--trainer.enable_progress_bar", "false")
    assert code == 0, err
    assert "sample_AUROC" in out
    code, out, err = uad("predict", "--ckpt_path", ckpt, "--data_path", root / "test" / "bad", "--output",
                         tmp_path / "pred", "--trainer.enable_progress_bar", "false")
    assert code == 0, err
    rows = json.loads((tmp_path / "pred" / "predictions.json").read_text())["predictions"]
    assert len(rows) == 8 and {"signal_path", "record", "start", "pred_score", "pred_label"} <= set(rows[0])
    assert "8 windows scored" in out
    # the checkpoint's weights are loaded; anomalib's warning would say the opposite
    assert "will not be loaded" not in err + caplog.text
    assert len(list((tmp_path / "pred" / "images").rglob("*.png"))) == 8
    # --data.KEY VALUE changes one of the checkpoint's data settings for predict; a wrong key lists the options
    scores = {}
    for name, extra in (("as_trained", []), ("zscore", ["--data.normalize", "zscore"])):
        code, out, err = uad("predict", "--ckpt_path", ckpt, "--data_path", root / "test", "--output",
                             tmp_path / name, "--heatmaps", "false", "--trainer.enable_progress_bar", "false", *extra)
        assert code == 0, err
        predictions = json.loads((tmp_path / name / "predictions.json").read_text())["predictions"]
        scores[name] = [r["pred_score"] for r in predictions]
    assert scores["zscore"] != scores["as_trained"]  # the windows were normalised another way
    code, _, err = uad("predict", "--ckpt_path", ckpt, "--data_path", root / "test" / "bad", "--output",
                       tmp_path / "pred_x", "--data.normalise=zscore")
    assert code == 2 and "no option 'normalise'" in err and "Its options: " in err
    assert "normalize" in err and not (tmp_path / "pred_x").exists()


@pytest.mark.slow
@pytest.mark.skipif(not (MITBIH / "100.npz").is_file(), reason="shared MIT-BIH subset not present")
def test_fit_on_mitbih_beats(uad, tmp_path: Path) -> None:
    code, _, err = uad(
        "fit", "--model", "plugin:mmae_ecg", "--model.embed_dim", "16", "--model.depth", "1", "--model.num_heads",
        "2", "--model.decoder_dim", "16", "--model.decoder_heads", "2",
        "--data", "MitBihBeats", "--data.root", MITBIH, "--data.train_records", "[100, 121]",
        "--data.test_records", "[106]", "--data.max_beats_per_record", "40", *RUN,
        "--trainer.enable_progress_bar", "false", "--default_root_dir", tmp_path)
    assert code == 0, err
    info = json.loads(next(tmp_path.rglob("metrics.json")).read_text())
    assert info["validation"]["validation_records"] in (["100"], ["121"])
    # beat windows validate with ectopic-like beats by default
    ectopic = {"class_path": "plugin:ecg_anomaly", "init_args": {"kinds": ["ectopic"]}}
    assert info["validation"]["synthesizer"] == ectopic
    assert 0.0 <= info["test"]["sample_AUROC"] <= 1.0


def test_bad_inputs_exit_2(uad, tmp_path: Path) -> None:
    root = make_synthetic_signal_folder(tmp_path / "ok", length=64)
    nan_root = make_synthetic_signal_folder(tmp_path / "nan", length=64)
    broken = np.load(nan_root / "train" / "good" / "normal_0.npy")
    broken[2, 0, 5] = np.nan
    np.save(nan_root / "train" / "good" / "normal_0.npy", broken)
    (tmp_path / "empty").mkdir()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "signal.wav").write_bytes(b"RIFF")
    cases = [
        ([*TINY, *folder_data(nan_root)], "NaN or infinite"),
        ([*TINY, *folder_data(root, n_leads="2")], "not a multiple|2 leads are expected|lead"),
        ([*TINY, "--data", "SignalFolder", "--data.normal_dir", str(tmp_path / "empty")], "is empty"),
        ([*TINY, "--data", "SignalFolder", "--data.normal_dir", str(tmp_path / "foreign")], "holds no"),
        ([*TINY, "--data", "PtbXl", "--data.root", str(tmp_path / "empty")], "ptbxl_database.csv is missing"),
        ([*TINY, *folder_data(root, length="100")], "shorter than one window"),
        ([*TINY, *folder_data(root), "--model.n_leads", "2"], "built for 2 lead"),
        (TINY, "pass --data"),
        ([*TINY, *folder_data(root), "--validation_synthesizer", "plugin:perlin"], "makes image anomalies"),
        ([*TINY, *folder_data(root), "--validation_synthesizer",
          '{"class_path": "plugin:ecg_anomaly", "init_args": {"kinds": ["spikes"]}}'], "unknown or no kinds"),
        (["--model", "plugin:pbas", *folder_data(root)], "works on image data"),
    ]
    for args, message in cases:
        code, _, err = uad("fit", *args, *RUN, "--trainer.enable_progress_bar", "false", "--default_root_dir",
                           tmp_path / "runs")
        assert code == 2, (args, err)
        assert "Traceback" not in err
        assert message.split("|")[0] in err or any(m in err for m in message.split("|")), (message, err)


def test_synth_on_signal_files(uad, tmp_path: Path) -> None:
    """`uad synth` with a signal synthesizer writes perturbed signals, point masks and a manifest, reproducibly."""
    t = np.linspace(0, 6 * np.pi, 256, dtype=np.float32)
    beats = np.stack([np.sin(t + k) for k in range(3)])  # three 1-lead samples, one per row
    np.savetxt(tmp_path / "beats.csv", beats, delimiter=",")
    outs = []
    for name in ("a", "b"):
        code, _, err = uad("synth", "--synthesizer", "plugin:ecg_anomaly", "--input", str(tmp_path / "beats.csv"),
                           "--output", str(tmp_path / name), "--seed", "3", "--count", "2")
        assert code == 0, err
        outs.append(tmp_path / name)
    manifest = json.loads((outs[0] / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["modality"] == "signal" and len(manifest["items"]) == 6
    # one stacked file per input: 3 rows x 2 variants
    first, again = np.load(outs[0] / "signals" / "beats.npy"), np.load(outs[1] / "signals" / "beats.npy")
    mask = np.load(outs[0] / "masks" / "beats.npy")
    assert first.shape[0] == mask.shape[0] == 6 and first.shape[-1] == mask.shape[-1] == 256
    assert np.array_equal(first, again) and mask.any(axis=-1).all()
    changed = np.abs(first - np.repeat(beats, 2, axis=0).reshape(first.shape)) > 1e-6
    assert changed[mask.astype(bool)].mean() > 0.5 and not changed[~mask.astype(bool)].any()

    code, _, err = uad("synth", "--synthesizer", "plugin:ecg_anomaly", "--input", str(tmp_path / "none"),
                       "--output", str(tmp_path / "c"))
    assert code == 2 and "error:" in err and not (tmp_path / "c").exists()


def test_validation_synthesizer_on_the_command_line_overrides_the_config_file(uad, tmp_path: Path) -> None:
    """A {class_path, init_args} mapping from a config file, replaced by JSON on the command line."""
    import yaml

    root = make_synthetic_signal_folder(tmp_path / "data", length=64)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"validation_synthesizer": {"class_path": "plugin:ecg_anomaly",
                                                                 "init_args": {"kinds": ["ectopic"]}}}))
    noise = {"class_path": "plugin:ecg_anomaly", "init_args": {"kinds": ["noise"]}}
    code, _, err = uad("fit", "--config", config, *TINY, *folder_data(root), *RUN, "--test", "false",
                       "--validation_synthesizer", json.dumps(noise), "--trainer.enable_progress_bar", "false",
                       "--default_root_dir", tmp_path / "runs")
    assert code == 0, err
    info = json.loads(next((tmp_path / "runs").rglob("metrics.json")).read_text())
    assert info["validation"]["synthesizer"] == noise
    for bad in ('{"class_path": 3}', "{not yaml", '{"init_args": {}}'):
        code, _, err = uad("fit", "--config", config, *TINY, *folder_data(root), "--validation_synthesizer", bad)
        assert code == 2 and "--validation_synthesizer" in err and "Traceback" not in err, err
