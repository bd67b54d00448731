"""Signal bundles: `uad export` of a tiny MMAE-ECG (FP32, INT8), the parity gate on the honest signal validation,
the torch-free edge runtime on windows [K, Q] / [B, K, Q], and `uad infer` on .npy/.csv signal files."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from uad_plugins.data.signals import make_synthetic_signal_folder

torch.set_num_threads(2)
pytestmark = pytest.mark.slow

MITBIH = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ecg" / "mitbih_subset"
#: 1 lead x 64 samples, a 1-block encoder of width 16 (seconds on 2 cores)
TINY = ["--model", "plugin:mmae_ecg", "--model.length", "64", "--model.segment_len", "8",
        "--model.local_segment_len", "4", "--model.local_segments", "2", "--model.embed_dim", "16",
        "--model.depth", "1", "--model.num_heads", "2", "--model.decoder_dim", "16", "--model.decoder_heads", "2"]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", "--heatmaps", "false"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def signal_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_signal_folder(tmp_path_factory.mktemp("signal_data") / "data", length=64)


@pytest.fixture(scope="module")
def checkpoint(signal_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real Lightning fit of a tiny MMAE-ECG on a synthetic signal folder (with point masks)."""
    from uad_plugins.cli.main import main

    runs = tmp_path_factory.mktemp("signal_runs")
    code = main(["fit", *TINY, "--data", "SignalFolder", "--data.root", str(signal_data), "--data.normal_dir",
                 "train/good", "--data.normal_test_dir", "test/good", "--data.abnormal_dir", "test/bad",
                 "--data.mask_dir", "ground_truth/bad", "--data.train_batch_size", "8", "--trainer.max_epochs", "3",
                 *QUIET, "--default_root_dir", str(runs)])
    assert code == 0
    return next(runs.rglob("model.ckpt"))


@pytest.fixture(scope="module")
def bundle(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from uad_plugins.cli.main import main

    out = tmp_path_factory.mktemp("signal_bundles") / "fp32"
    assert main(["export", "--ckpt_path", str(checkpoint), "--output", str(out)]) == 0
    return out


def _windows(root: Path) -> np.ndarray:
    return np.load(root / "test" / "bad" / "pvc.npy").astype(np.float32)  # [8, 1, 64]


def test_signal_bundle_manifest_and_parity(bundle: Path) -> None:
    assert sorted(p.name for p in bundle.iterdir()) == ["manifest.json", "model.bin", "model.xml", "parity.json"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["modality"] == "signal" and manifest["precision"] == "fp32"
    assert manifest["component"]["reference"] == "plugin:mmae_ecg"
    spec = manifest["input"]
    assert spec["layout"] == "BKQ" and spec["dims"] == ["batch", "leads", "time"]
    assert (spec["leads"], spec["length"], spec["shape"], spec["dynamic_batch"]) == (1, 64, [-1, 1, 64], True)
    assert manifest["outputs"]["anomaly_map"] == ["N", 1, 64] and manifest["outputs"]["raw_score"] == ["N"]
    pre = manifest["preprocessing"]
    assert pre["in_graph"] is False and pre["data"]["datamodule"] == "SignalFolder"
    assert pre["data"]["normalize"] == "none" and pre["data"]["n_leads"] == 1
    post = manifest["postprocessing"]
    # fitted on the honest validation rebuilt from the checkpoint: held-back training windows + synthetic anomalies
    assert post["in_graph"] and post["fitted_on"].startswith("validation: ") and "windows" in post["fitted_on"]
    assert manifest["data"]["class_path"].endswith("SignalFolder")
    parity = manifest["parity"]
    assert parity["passed"] and parity["mode"] == "outputs" and parity["samples"] > 0
    assert parity["max_score_diff"] <= 1e-3 and parity["max_map_diff"] <= 1e-2
    report = json.loads((bundle / "parity.json").read_text())
    assert all(s["sample"].startswith("validation[") for s in report["per_sample"])


def test_edge_signal_round_trip_matches_eager(bundle: Path, checkpoint: Path, signal_data: Path) -> None:
    from uad_edge import load_bundle
    from uad_plugins.engine import load_model_from_checkpoint

    edge = load_bundle(bundle)
    assert edge.modality == "signal" and edge.signal_shape == (1, 64)
    model = load_model_from_checkpoint(checkpoint).eval()
    windows = np.concatenate([_windows(signal_data), np.load(signal_data / "test" / "good" / "normal.npy")])
    x = torch.from_numpy(windows.astype(np.float32))
    with torch.no_grad():
        eager, raw = model(x), model.model(x)
    out = edge.predict(windows, batch_size=5)
    assert out.anomaly_map.shape == out.pred_mask.shape == out.raw_map.shape == (16, 1, 64)
    assert np.abs(out.pred_score - eager.pred_score.numpy()).max() < 1e-3
    assert np.abs(out.anomaly_map - eager.anomaly_map.numpy()).max() < 1e-2
    assert np.abs(out.raw_score - raw.pred_score.numpy()).max() < 1e-4 * max(1.0, float(raw.pred_score.abs().max()))
    assert (out.pred_mask == eager.pred_mask.numpy()).mean() > 0.99
    one = edge.predict(windows[3, ...])  # a single window [K, Q]
    assert one.pred_score.shape == (1,) and one.anomaly_map.shape == (1, 1, 64)
    assert abs(float(one.pred_score[0]) - float(out.pred_score[3])) < 1e-5
    as_lists = edge.predict(windows[3].tolist())  # nested lists of floats are one array
    assert as_lists.sources == ["array[0]"] and abs(float(as_lists.pred_score[0]) - float(one.pred_score[0])) < 1e-5
    rows = out.records()
    assert rows[0]["signal"] == "array[0]" and {"pred_score", "pred_label", "raw_score", "anomalous_points"} <= set(
        rows[0])


@pytest.mark.parametrize(("make", "message"), [
    pytest.param(lambda w: w.astype(np.int16), "holds int16 values", id="dtype"),
    pytest.param(lambda w: w[0, 0], "has shape (64,)", id="rank1"),
    pytest.param(lambda w: w[None], "has shape (1, 8, 1, 64)", id="rank4"),
    pytest.param(lambda w: np.concatenate([w, w], axis=1), "has 2 lead(s), but the bundle expects 1", id="leads"),
    pytest.param(lambda w: w[:, :, :48], "windows of 48 samples, but the bundle expects 64", id="length"),
    pytest.param(lambda w: np.where(np.arange(64) == 7, np.nan, w).astype(np.float32), "NaN or infinite value(s)",
                 id="nan"),
    pytest.param(lambda w: np.where(np.arange(64) == 7, np.inf, w).astype(np.float32), "first at index (0, 0, 7)",
                 id="inf"),
    pytest.param(lambda w: w[:0], "holds no windows", id="empty"),
])
def test_edge_signal_input_errors(bundle: Path, signal_data: Path, make, message: str) -> None:
    from uad_edge import EdgeError, load_bundle

    with pytest.raises(EdgeError) as info:
        load_bundle(bundle).predict(make(_windows(signal_data)))
    assert message in info.value.render()


def test_infer_cli_signal_files(bundle: Path, signal_data: Path, tmp_path: Path, uad) -> None:
    from PIL import Image

    windows = _windows(signal_data)
    csv = tmp_path / "two.csv"
    csv.write_text("t" + ",t".join(str(i) for i in range(1, 64)) + "\n"
                   + "\n".join(",".join(f"{v:.6f}" for v in w[0]) for w in windows[:2]) + "\n")
    code, out, err = uad("infer", bundle, signal_data / "test" / "bad" / "pvc.npy", csv, "--output", tmp_path / "o")
    assert code == 0, err
    assert "10 signal windows from 2 file(s) scored" in out
    scores = json.loads((tmp_path / "o" / "scores.json").read_text())
    assert scores["modality"] == "signal" and scores["component"] == "plugin:mmae_ecg"
    rows = scores["predictions"]
    assert [r["signal"] for r in rows[:2]] == [f"{signal_data / 'test' / 'bad' / 'pvc.npy'}#{i}" for i in (0, 1)]
    assert rows[8]["signal"] == f"{csv}#0"
    # the CSV rows are the same windows as the first two of the .npy (6 decimals): same scores
    assert rows[8]["raw_score"] == pytest.approx(rows[0]["raw_score"], rel=1e-3)
    plots = sorted((tmp_path / "o" / "plots").glob("*.png"))
    assert len(plots) == 10 and plots[0].name == "0000_pvc_0.png" and plots[8].name == "0008_two_0.png"
    assert plots[0].read_bytes()[:8] == PNG_MAGIC
    with Image.open(plots[0]) as image:
        assert image.size[0] == 900 and image.size[1] > 200


def test_infer_cli_signal_errors_exit_2(bundle: Path, signal_data: Path, tmp_path: Path, uad) -> None:
    windows = _windows(signal_data)
    two_leads = tmp_path / "two_leads.npy"
    np.save(two_leads, np.concatenate([windows, windows], axis=1))  # [8, 2, 64]
    code, _, err = uad("infer", bundle, two_leads, "--output", tmp_path / "o1")
    assert code == 2 and "has 2 lead(s), but the bundle expects 1" in err and "Traceback" not in err
    with_nan = tmp_path / "nan.csv"
    rows = [",".join(f"{v:.5f}" for v in w[0]) for w in windows[:3]]
    rows[1] = rows[1].replace(rows[1].split(",")[5], "nan", 1)
    with_nan.write_text("\n".join(rows) + "\n")
    code, _, err = uad("infer", bundle, signal_data / "test" / "bad", with_nan, "--output", tmp_path / "o2")
    assert code == 2 and "NaN or infinite" in err and "nan.csv" in err
    short = tmp_path / "short.npy"
    np.save(short, windows[:, 0, :50])
    code, _, err = uad("infer", bundle, short, "--output", tmp_path / "o3")
    assert code == 2 and "windows of 50 samples, but the bundle expects 64" in err
    code, _, err = uad("infer", bundle, signal_data / "test" / "bad", "--output", tmp_path / "o4", "--resize")
    assert code == 2 and "--resize is for image bundles" in err
    wav = tmp_path / "beat.wav"
    wav.write_bytes(b"RIFF")
    code, _, err = uad("infer", bundle, wav, "--output", tmp_path / "o5")
    assert code == 2 and "unknown extension '.wav'" in err
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not numpy")
    code, _, err = uad("infer", bundle, garbage, "--output", tmp_path / "o6")
    assert code == 2 and "no NumPy header" in err and "allow_pickle" not in err
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 7))  # nothing written, no temporary folder
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o")]


def test_signal_edge_never_imports_torch(bundle: Path, signal_data: Path, tmp_path: Path) -> None:
    """The signal path (runtime, .npy reader, plots, `uad infer`) runs where torch and matplotlib cannot load."""
    code = textwrap.dedent(f"""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('torch', 'lightning', 'anomalib', 'torchvision', 'matplotlib'):
                    raise ImportError('blocked: ' + name)
        sys.meta_path.insert(0, Block())
        import numpy as np
        from uad_edge import load_bundle
        result = load_bundle({str(bundle)!r}).predict(np.zeros((3, 1, 64), dtype=np.float32))
        from uad_plugins.cli.main import main
        rc = main(['infer', {str(bundle)!r}, {str(signal_data / 'test' / 'good')!r}, '--output',
                   {str(tmp_path / 'o')!r}])
        assert rc == 0, rc
        assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'anomalib', 'lightning', 'matplotlib')]
        print('OK', result.anomaly_map.shape)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK (3, 1, 64)" in result.stdout
    assert len(list((tmp_path / "o" / "plots").glob("*.png"))) == 8


def test_signal_int8_export(checkpoint: Path, tmp_path: Path, uad) -> None:
    # a tiny 3-epoch model: allow any drop; the point is the mechanism (calibration on training normals, re-fit,
    # the signal metric names, loading)
    code, out, err = uad("export", "--ckpt_path", checkpoint, "--precision", "int8", "--output", tmp_path / "int8",
                         "--max_metric_drop", "1", "--calibration_samples", "16")
    assert code == 0, err
    assert "parity: sample_AUROC eager" in out and "parity: point_AUROC eager" in out
    manifest = json.loads((tmp_path / "int8" / "manifest.json").read_text())
    assert manifest["modality"] == "signal" and manifest["precision"] == "int8"
    assert manifest["postprocessing"]["refitted_after_quantization"] is True
    assert manifest["parity"]["mode"] == "metrics"
    assert set(manifest["parity"]["metrics"]) == {"sample_AUROC", "point_AUROC"}
    from uad_edge import load_bundle

    out8 = load_bundle(tmp_path / "int8").predict(np.zeros((2, 1, 64), np.float32))
    assert out8.pred_score.shape == (2,) and np.isfinite(out8.raw_map).all()


def test_failed_signal_gate_and_wrong_data_leave_nothing(checkpoint: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from uad_plugins.cli.main import main
    from uad_plugins.errors import DataError
    from uad_plugins.export import parity, take_samples
    from uad_plugins.export.samples import Samples

    monkeypatch.setitem(parity.TOLERANCES, "fp32", {"score": -1.0, "map": -1.0})
    assert main(["export", "--ckpt_path", str(checkpoint), "--output", str(tmp_path / "b")]) == 2
    assert list(tmp_path.iterdir()) == []  # no bundle, no temporary folder

    from uad_plugins.data.signals import SignalDataset

    data = SignalDataset(np.zeros((4, 2, 64), np.float32), [0, 0, 1, 1], ["a", "b", "c", "d"])
    with pytest.raises(DataError, match=r"windows are \(2, 64\).*takes \(1, 64\)"):
        take_samples(data, (1, 64), None, source="validation")
    samples = take_samples(data, (2, 64), 3, source="train", normal_only=True)
    assert isinstance(samples, Samples) and samples.modality == "signal" and samples.images.shape == (2, 2, 64)


@pytest.mark.skipif(not (MITBIH / "100.npz").is_file(), reason="shared MIT-BIH subset not present")
def test_mitbih_export_and_edge(tmp_path: Path, uad) -> None:
    """Real beats: a 1-epoch tiny model on two MIT-BIH records exports, and the bundle scores test beats like eager."""
    from uad_edge import load_bundle
    from uad_plugins.data.signals import MitBihBeats
    from uad_plugins.engine import load_model_from_checkpoint

    code, _, err = uad("fit", "--model", "plugin:mmae_ecg", "--model.embed_dim", "16", "--model.depth", "1",
                       "--model.num_heads", "2", "--model.decoder_dim", "16", "--model.decoder_heads", "2",
                       "--data", "MitBihBeats", "--data.root", MITBIH, "--data.train_records", "[100, 121]",
                       "--data.test_records", "[106]", "--data.max_beats_per_record", "40",
                       "--trainer.max_epochs", "1", *QUIET, "--default_root_dir", tmp_path / "runs")
    assert code == 0, err
    ckpt = next((tmp_path / "runs").rglob("model.ckpt"))
    code, _, err = uad("export", "--ckpt_path", ckpt, "--output", tmp_path / "bundle")
    assert code == 0, err
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert (manifest["input"]["leads"], manifest["input"]["length"]) == (1, 256)
    assert manifest["preprocessing"]["data"] == {"datamodule": "MitBihBeats", "normalize": "record",
                                                 "filter_band": None, "pre": 90, "post": 166, "channels": None,
                                                 "leads": None}
    dm = MitBihBeats(root=str(MITBIH), train_records=[100, 121], test_records=[106], max_beats_per_record=40)
    dm.setup()
    beats = dm.test_data.materialize()[:24]
    model = load_model_from_checkpoint(ckpt).eval()
    with torch.no_grad():
        eager = model(torch.from_numpy(beats))
    out = load_bundle(tmp_path / "bundle").predict(beats)
    assert np.abs(out.pred_score - eager.pred_score.numpy()).max() < 1e-3
