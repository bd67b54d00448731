"""The ``uad-edge`` command (``uad_edge.cli``): the same errors as ``uad`` (one block, exit 2, never a traceback;
unexpected failures exit 1; Ctrl-C 130), and ``uad-edge infer`` equal to ``uad infer`` in a process where neither
torch nor anything of uad_plugins can be imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from uad_edge import EdgeError
from uad_edge.cli import main


@pytest.fixture
def edge(capsys: pytest.CaptureFixture[str]):
    """``code, out, err = edge("infer", ...)``."""

    def run(*argv: object) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_help_version_and_unknown_command(edge) -> None:
    code, out, _ = edge("--help")
    assert code == 0 and "infer" in out and "serve" in out
    code, out, _ = edge("--version")
    assert code == 0 and out.startswith("uad-edge ")
    code, _, err = edge("infr")
    assert code == 2 and err.startswith("error: unknown command 'infr'.") and "Did you mean 'infer'?" in err
    code, _, err = edge("infer", "--help")
    assert code == 0


def test_user_errors_are_one_block(edge, tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    code, _, err = edge("infer", tmp_path / "missing", tmp_path / "imgs", "--output", tmp_path / "out")
    assert code == 2 and err.startswith("error: bundle not found") and "Traceback" not in err
    code, _, err = edge("infer", tmp_path / "missing", "--output", tmp_path / "out")
    assert code == 2 and "uad-edge infer: no inputs given." in err
    code, _, err = edge("serve", tmp_path / "missing", "--max_batch", "0")
    assert code == 2 and "--max_batch at least 1" in err
    code, _, err = edge("infer", "--bogus")
    assert code == 2 and "usage: uad-edge infer" in err


def test_traceback_interrupt_and_unexpected_failures(edge, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import uad_edge.commands.infer as infer_module

    def fail_with(exc: BaseException):
        def infer(argv, prog):
            raise exc
        return infer

    monkeypatch.setattr(infer_module, "infer", fail_with(KeyboardInterrupt()))
    code, _, err = edge("infer")
    assert code == 130 and err.strip() == "interrupted"
    monkeypatch.setattr(infer_module, "infer", fail_with(RuntimeError("boom")))
    code, _, err = edge("infer")
    assert code == 1 and "unexpected failure: RuntimeError: boom" in err and "bug in uad-edge" in err
    assert "Traceback" not in err
    wrapped = RuntimeError("a framework wrapped it")
    wrapped.__cause__ = EdgeError("the real problem.", hint="Do this.")
    monkeypatch.setattr(infer_module, "infer", fail_with(wrapped))
    code, _, err = edge("infer")
    assert code == 2 and err == "error: the real problem.\nDo this.\n"
    code, _, err = edge("infer", "--traceback")
    assert code == 2 and "Traceback" in err and err.endswith("error: the real problem.\nDo this.\n")


#: blocks uad_plugins too: uad-edge must run without the main package
BLOCK_UAD_PLUGINS = """\
import sys, importlib.abc
class BlockCore(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'uad_plugins':
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, BlockCore())
"""


@pytest.mark.slow
def test_uad_edge_infer_equals_uad_infer_without_torch_or_uad_plugins(tiny_edge_bundle: Path, tmp_path: Path, uad,
                                                                     block_torch: str) -> None:
    from PIL import Image

    rng = np.random.default_rng(5)
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(images / f"p_{i}.png")
    code, _, err = uad("infer", tiny_edge_bundle, images, "--output", tmp_path / "uad")
    assert code == 0, err
    script = block_torch + BLOCK_UAD_PLUGINS + textwrap.dedent(f"""
        from uad_edge.cli import main
        rc = main(['infer', {str(tiny_edge_bundle)!r}, {str(images)!r}, '--output', {str(tmp_path / 'edge')!r}])
        assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'uad_plugins', 'lightning', 'anomalib')]
        raise SystemExit(rc)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr

    def scores(folder: Path) -> list[tuple[str, float]]:
        document = json.loads((folder / "scores.json").read_text())
        return [(p["image"], p["pred_score"]) for p in document["predictions"]]

    assert scores(tmp_path / "edge") == scores(tmp_path / "uad")
    assert sorted(p.name for p in (tmp_path / "edge" / "overlays").iterdir()) == \
        sorted(p.name for p in (tmp_path / "uad" / "overlays").iterdir())
