"""Hostile input files through the CLI: a .npy header that claims a huge array, an integer or empty signal file,
symbolic-link loops and broken links. Each is one clear error block with exit status 2 that names the file, comes at
once (nothing is allocated from a header's claim), and leaves no output behind."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from uad_plugins.data.signals import make_synthetic_signal_folder

torch.set_num_threads(2)

#: 1 lead x 64 samples, a 1-block encoder of width 16 (as tests/cli/test_signals_cli.py)
TINY_ECG = ["--model", "plugin:mmae_ecg", "--model.length", "64", "--model.segment_len", "8",
            "--model.local_segment_len", "4", "--model.local_segments", "2", "--model.embed_dim", "16",
            "--model.depth", "1", "--model.num_heads", "2", "--model.decoder_dim", "16", "--model.decoder_heads", "2"]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def _huge_npy(path: Path, shape: tuple[int, ...] = (10**9, 256)) -> Path:
    """A 1 kB .npy whose real NumPy header claims ``shape`` float32 values (954 GiB by default)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_2_0(fh, {"descr": "<f4", "fortran_order": False, "shape": shape})
        fh.write(b"\0" * 1024)
    return path


def _png(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    return path


def _loop(folder: Path, kind: str) -> str:
    """Put a symbolic-link loop into ``folder``; the name the error must give."""
    if kind == "dot":
        os.symlink(".", folder / "loop")
        return "loop"
    os.symlink("b.png" if kind == "png" else "b.npy", folder / ("a.png" if kind == "png" else "a.npy"))
    os.symlink("a.png" if kind == "png" else "a.npy", folder / ("b.png" if kind == "png" else "b.npy"))
    return "a.png" if kind == "png" else "a.npy"


def _assert_clean_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err and "unexpected failure" not in err, err
    for needle in needles:
        assert needle in err, err


# ------------------------------------------------------------------------------------------------ fast: synth, fit
def test_synth_pointcloud_refuses_a_huge_npy_header(uad, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "ok.npy", np.random.default_rng(0).random((200, 3)).astype(np.float32))
    _huge_npy(tmp_path / "in" / "huge.npy", (10**9, 3))  # 11 GiB of float32 points
    start = time.perf_counter()
    code, _, err = uad("synth", "--synthesizer", "plugin:pnas3d", "--input", tmp_path / "in", "--output",
                       tmp_path / "out")
    assert time.perf_counter() - start < 30
    _assert_clean_error(code, err, "huge.npy", "header is wrong", "(1000000000, 3)")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("modality", ["image", "pointcloud"])
def test_synth_names_a_symlink_loop(uad, tmp_path: Path, modality: str) -> None:
    (tmp_path / "in").mkdir()
    if modality == "image":
        _png(tmp_path / "in" / "ok.png")
        name, synthesizer = _loop(tmp_path / "in", "png"), "plugin:cutpaste"
    else:
        np.save(tmp_path / "in" / "ok.npy", np.random.default_rng(0).random((200, 3)).astype(np.float32))
        name, synthesizer = _loop(tmp_path / "in", "npy"), "plugin:pnas3d"
    code, _, err = uad("synth", "--synthesizer", synthesizer, "--input", tmp_path / "in", "--output", tmp_path / "out")
    _assert_clean_error(code, err, name, "symbolic-link loop")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["png", "dot"])
def test_fit_names_a_symlink_loop_in_a_folder_dataset(uad, tiny_pbas, quiet, tmp_path: Path, kind: str) -> None:
    for i in range(4):
        _png(tmp_path / "data" / "good" / f"{i}.png", seed=i)
    name = _loop(tmp_path / "data" / "good", kind)
    code, _, err = uad("fit", *tiny_pbas, *quiet, "--trainer.max_epochs", "1", "--heatmaps", "false",
                       "--default_root_dir", tmp_path / "runs", "--data", "Folder", "--data.name", "mine",
                       "--data.root", tmp_path / "data", "--data.normal_dir", "good", "--data.num_workers", "0")
    _assert_clean_error(code, err, str(tmp_path / "data" / "good" / name), "symbolic-link loop")


# ------------------------------------------------------------------------------------------------ slow: predict, infer
@pytest.fixture(scope="module")
def signal_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One tiny fit on a synthetic signal folder and its FP32 bundle: (checkpoint, bundle)."""
    from uad_plugins.cli.main import main

    tmp = tmp_path_factory.mktemp("hostile_signals")
    root = make_synthetic_signal_folder(tmp / "data", length=64)
    code = main(["fit", *TINY_ECG, "--data", "SignalFolder", "--data.root", str(root), "--data.normal_dir",
                 "train/good", "--data.normal_test_dir", "test/good", "--data.abnormal_dir", "test/bad",
                 "--data.train_batch_size", "8", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
                 *QUIET, "--heatmaps", "false", "--default_root_dir", str(tmp / "runs")])
    assert code == 0
    checkpoint = next((tmp / "runs").rglob("model.ckpt"))
    assert main(["export", "--ckpt_path", str(checkpoint), "--output", str(tmp / "bundle")]) == 0
    return checkpoint, tmp / "bundle"


def _signal_inputs(folder: Path) -> dict[str, tuple[Path, tuple[str, ...]]]:
    """Bad signal inputs: case -> (path given to the CLI, what the error must say besides the file's name)."""
    folder.mkdir(parents=True)
    np.save(folder / "empty_rows.npy", np.zeros((0, 64), np.float32))
    np.save(folder / "empty_size0.npy", np.zeros(0, np.float32))
    np.save(folder / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    loops = folder / "loops"
    loops.mkdir()
    np.save(loops / "ok.npy", np.ones((2, 64), np.float32))
    _loop(loops, "npy")
    dot = folder / "dot"
    dot.mkdir()
    np.save(dot / "ok.npy", np.ones((2, 64), np.float32))
    _loop(dot, "dot")
    broken = folder / "broken"
    broken.mkdir()
    os.symlink("gone.npy", broken / "x.npy")
    return {
        "huge": (_huge_npy(folder / "huge.npy"), ("header is wrong", "(1000000000, 256)")),
        "empty_rows": (folder / "empty_rows.npy", ()),
        "empty_size0": (folder / "empty_size0.npy", ()),
        "objects": (folder / "objects.npy", ("Python objects",)),
        "loop_pair": (loops, ("a.npy", "symbolic-link loop")),
        "loop_dot": (dot, (str(dot / "loop"), "symbolic-link loop")),
        "broken": (broken, ("x.npy", "broken symbolic link")),
        "missing": (folder / "missing.npy", ("does not exist",)),
    }


@pytest.mark.slow
def test_predict_on_hostile_signal_files(signal_run: tuple[Path, Path], uad, tmp_path: Path) -> None:
    checkpoint, _ = signal_run
    for case, (path, needles) in _signal_inputs(tmp_path / "in").items():
        out = tmp_path / f"pred_{case}"
        start = time.perf_counter()
        code, _, err = uad("predict", "--ckpt_path", checkpoint, "--data_path", path, "--output", out, *QUIET)
        assert time.perf_counter() - start < 60, case
        _assert_clean_error(code, err, str(path), *needles)
        if case.startswith("empty"):
            assert "holds no samples" in err or "length 0" in err, err
        assert not out.exists(), case


@pytest.mark.slow
def test_infer_on_hostile_signal_files(signal_run: tuple[Path, Path], uad, tmp_path: Path) -> None:
    _, bundle = signal_run
    inputs = _signal_inputs(tmp_path / "in")
    ints = tmp_path / "in" / "adc_counts.npy"  # docs/deploy.md: a non-float array (raw ADC counts) is an error
    np.save(ints, (np.random.default_rng(0).random((3, 1, 64)) * 2000).astype(np.int16))
    inputs["ints"] = (ints, ("holds int16 values", "float32"))
    for case, (path, needles) in inputs.items():
        out = tmp_path / f"o_{case}"
        code, _, err = uad("infer", bundle, path, "--output", out)
        _assert_clean_error(code, err, str(path), *needles)
        if case.startswith("empty"):
            assert "holds no windows" in err or "windows of 0 samples" in err, err
        assert not out.exists(), case
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o")]  # no temporary folder either


@pytest.fixture(scope="module")
def image_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_pbas: list[str], quiet: list[str]) -> Path:
    from uad_plugins.cli.main import main

    tmp = tmp_path_factory.mktemp("hostile_images")
    for i in range(4):
        _png(tmp / "data" / "good" / f"{i}.png", seed=i)
    code = main(["fit", *tiny_pbas, *quiet, "--trainer.max_epochs", "1", "--heatmaps", "false",
                 "--default_root_dir", str(tmp / "runs"), "--data", "Folder", "--data.name", "mine", "--data.root",
                 str(tmp / "data"), "--data.normal_dir", "good", "--data.num_workers", "0",
                 "--data.train_batch_size", "2", "--data.eval_batch_size", "2"])
    assert code == 0
    return next((tmp / "runs").rglob("model.ckpt"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["png", "dot", "broken"])
def test_predict_names_a_bad_link_among_images(image_checkpoint: Path, uad, tmp_path: Path, kind: str) -> None:
    folder = tmp_path / "images"
    _png(folder / "ok.png")
    if kind == "broken":
        os.symlink("gone.png", folder / "x.png")
        name, needle = "x.png", "broken symbolic link"
    else:
        name, needle = _loop(folder, kind), "symbolic-link loop"
    code, _, err = uad("predict", "--ckpt_path", image_checkpoint, "--data_path", folder, "--output",
                       tmp_path / "pred", *QUIET)
    _assert_clean_error(code, err, str(folder / name), needle)
    assert not (tmp_path / "pred").exists()
