"""Checkpoints from someone else: nothing they name is imported or run unchecked (issue 11, items 1, 2, 6, 8).

Each attack writes a marker file if it ever runs; every command must exit 2 with one error block and leave the
marker (and any run folder) absent. Exit status and files left behind are the point, so the commands run in
subprocesses.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

torch.set_num_threads(2)
pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _popen(marker: Path) -> dict[str, Any]:
    return {"class_path": "subprocess.Popen", "init_args": {"args": ["sh", "-c", f"touch {marker}"]}}


def _load(path: Path) -> dict[str, Any]:
    from anomalib.utils.serialization import anomalib_safe_globals

    with anomalib_safe_globals():
        return torch.load(path, map_location="cpu", weights_only=True)


def _tamper(src: Path, dst: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    ckpt = copy.deepcopy(_load(src))
    change(ckpt)
    torch.save(ckpt, dst)
    return dst


def _uad(*argv: Any, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "uad_plugins.cli.main", *map(str, argv)], capture_output=True,
                          text=True, timeout=600, env={**os.environ, **(env or {})}, cwd=cwd)


def _assert_refused(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "\nerror: " in "\n" + result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
    for needle in needles:
        assert needle in result.stderr, result.stderr


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_pbas: list[str], quiet: list[str]) -> Path:
    """A real tiny PBAS checkpoint written by 'uad fit'."""
    from uad_plugins.cli.main import main

    root = tmp_path_factory.mktemp("runs")
    code = main(["fit", *tiny_pbas, *quiet, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
                 "--test", "false", "--heatmaps", "false", "--default_root_dir", str(root),
                 "--data.category", "washer"])
    assert code == 0
    return next(root.glob("pbas/UadDemo/washer/v*/weights/lightning/model.ckpt"))


@pytest.mark.parametrize("command", ["test", "validate", "export"])
def test_stored_data_block_cannot_run_commands(checkpoint: Path, tmp_path: Path, command: str) -> None:
    marker = tmp_path / "pwned"
    bad = _tamper(checkpoint, tmp_path / "bad.ckpt", lambda c: c["uad_plugins"].update(data=_popen(marker)))
    extra = ["--output", tmp_path / "bundle"] if command == "export" else []
    result = _uad(command, "--ckpt_path", bad, *extra)
    _assert_refused(result, "uad_plugins.data.class_path", "subprocess.Popen")
    assert not marker.exists()
    assert not (tmp_path / "bundle").exists()


def test_stored_validation_synthesizer_cannot_run_commands(checkpoint: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    def change(ckpt: dict[str, Any]) -> None:
        ckpt["uad_plugins"]["validation"]["synthesizer"] = _popen(marker)

    bad = _tamper(checkpoint, tmp_path / "bad.ckpt", change)
    result = _uad("export", "--ckpt_path", bad, "--output", tmp_path / "bundle")
    _assert_refused(result, "uad_plugins.validation.synthesizer")
    assert not marker.exists() and not (tmp_path / "bundle").exists()


def test_stored_nested_components_and_options_are_checked(checkpoint: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    def nested(ckpt: dict[str, Any]) -> None:  # a "transform" that is really a process
        ckpt["uad_plugins"]["data"]["init_args"]["train_augmentations"] = _popen(marker)

    def synth_args(ckpt: dict[str, Any]) -> None:  # a registered synthesizer with a payload in its options
        ckpt["uad_plugins"]["validation"]["synthesizer"] = {"class_path": "plugin:perlin",
                                                            "init_args": {"probability": _popen(marker)}}

    def unknown_option(ckpt: dict[str, Any]) -> None:
        ckpt["uad_plugins"]["data"]["init_args"]["no_such_option"] = 1

    for change, needle in ((nested, "train_augmentations.class_path"), (synth_args, "probability.class_path"),
                           (unknown_option, "no_such_option")):
        bad = _tamper(checkpoint, tmp_path / "bad.ckpt", change)
        _assert_refused(_uad("test", "--ckpt_path", bad), needle)
    assert not marker.exists()


def test_stored_model_class_is_checked_before_import(checkpoint: Path, tmp_path: Path) -> None:
    """A class path naming any installed module is refused before that module is imported (it could run code
    at import: ``this`` prints the Zen of Python)."""
    marker = tmp_path / "imported"
    (tmp_path / "evil_module.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Model: pass\n")
    for class_path in ("evil_module.Model", "this.Whatever"):
        bad = _tamper(checkpoint, tmp_path / "bad.ckpt", lambda c, p=class_path: c["uad_plugins"].update(class_path=p))
        for command in ("test", "export"):
            result = _uad(command, "--ckpt_path", bad, env={"PYTHONPATH": str(tmp_path)})
            _assert_refused(result, "uad_plugins.class_path", class_path)
            assert "Beautiful is better than ugly" not in result.stdout + result.stderr
    assert not marker.exists()


def test_pickle_payloads_never_run_even_when_torch_is_told_to_unpickle(checkpoint: Path, tmp_path: Path,
                                                                      tiny_pbas: list[str]) -> None:
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (a common workaround) must not turn any of our loads into an unpickle:
    resume (fit --ckpt_path) included."""
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    script = ("import os, sys, torch\n"
              "class Evil:\n"
              "    def __reduce__(self):\n"
              f"        return (os.system, ('touch {marker}',))\n"
              "torch.save({'state_dict': {}, 'payload': Evil(), 'uad_plugins': {}}, sys.argv[1])\n")
    subprocess.run([sys.executable, "-c", script, str(evil)], check=True, timeout=120)
    env = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    root = tmp_path / "runs"
    runs = [("fit", *tiny_pbas, "--trainer.max_epochs", "1", "--ckpt_path", evil, "--default_root_dir", root),
            ("test", "--ckpt_path", evil), ("export", "--ckpt_path", evil, "--output", tmp_path / "bundle")]
    for argv in runs:
        _assert_refused(_uad(*argv, env=env), str(evil))
    assert not marker.exists()
    assert not root.exists() or not any(root.rglob("v*")), "a refused resume left a run folder"


def test_weights_only_checkpoint_io_ignores_lightning_none(tmp_path: Path) -> None:
    """Lightning passes weights_only=None for trainer.fit/test(ckpt_path=...): our IO still refuses pickles."""
    from uad_plugins.engine.checkpoint import WeightsOnlyCheckpointIO

    path = tmp_path / "odd.ckpt"
    torch.save({"state_dict": {}, "odd": Path("x")}, path)  # a pickled object that is not plain data
    with pytest.raises(Exception, match=r"[Ww]eights only load failed|Unsupported global"):
        WeightsOnlyCheckpointIO().load_checkpoint(path, weights_only=None)


def test_bad_resume_checkpoint_is_exit_2_and_leaves_no_run_folder(checkpoint: Path, uad, tiny_pbas: list[str],
                                                                  quiet: list[str], tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(checkpoint.read_bytes()[:2000])
    other_model = _tamper(checkpoint, tmp_path / "other.ckpt",
                          lambda c: c["uad_plugins"].update(class_path="anomalib.models.Padim"))
    root = tmp_path / "runs"
    for ckpt, needle in ((truncated, "cannot be read"), (tmp_path / "missing.ckpt", "not found"),
                         (other_model, "cannot resume training")):
        code, _, err = uad("fit", *tiny_pbas, *quiet, "--trainer.max_epochs", "1", "--ckpt_path", ckpt,
                           "--default_root_dir", root)
        assert code == 2 and "Traceback" not in err and needle in err, err
    assert not root.exists() or not any(root.rglob("v*"))


def test_resume_from_own_checkpoint_still_works(checkpoint: Path, uad, tiny_pbas: list[str], quiet: list[str],
                                                tmp_path: Path) -> None:
    code, out, err = uad("fit", *tiny_pbas, *quiet, "--trainer.max_epochs", "2", "--trainer.limit_train_batches",
                         "2", "--test", "false", "--heatmaps", "false", "--data.category", "washer",
                         "--ckpt_path", checkpoint, "--default_root_dir", tmp_path / "runs")
    assert code == 0, err
    assert "epochs: 2" in out


def test_python_api_refuses_the_same_checkpoints(checkpoint: Path, tmp_path: Path) -> None:
    from uad_plugins.engine.checkpoint import load_checkpoint
    from uad_plugins.trust import UntrustedSettingError

    marker = tmp_path / "pwned"
    bad = _tamper(checkpoint, tmp_path / "bad.ckpt", lambda c: c["uad_plugins"].update(data=_popen(marker)))
    with pytest.raises(UntrustedSettingError, match=r"uad_plugins\.data\.class_path"):
        load_checkpoint(bad)
    model, record = load_checkpoint(checkpoint)
    assert type(model).__name__ == "Pbas" and record.model == "plugin:pbas"
    assert record.data["class_path"] == "uad_plugins.data.UadDemo" and record.seed == 0
    assert not marker.exists()


def test_every_registered_model_loads_checkpoints_weights_only() -> None:
    """Direct ``Model.load_from_checkpoint(path)`` (mmae_ecg has no override of its own) defaults to
    weights_only=True for every built-in model."""
    import inspect

    from uad_plugins.factory import list_components

    for spec in list_components("model"):
        cls = spec.load()
        parameter = inspect.signature(cls.load_from_checkpoint).parameters.get("weights_only")
        assert parameter is not None and parameter.default is True, spec.name
