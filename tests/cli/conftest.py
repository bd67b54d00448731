"""Helpers for CLI tests: run `uad` in-process and capture its output."""

from __future__ import annotations

import pytest

from uad_plugins.cli.main import main

#: tiny PBAS settings: random weights, 64 px, small dimensions (seconds on 2 CPU cores)
TINY_PBAS = ["--model", "plugin:pbas", "--model.pretrained", "false", "--model.image_size", "64",
             "--model.pretrain_embed_dimension", "64", "--model.target_embed_dimension", "64",
             "--model.dsc_hidden", "32"]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


@pytest.fixture(scope="session")
def tiny_pbas() -> list[str]:
    return list(TINY_PBAS)


@pytest.fixture(scope="session")
def quiet() -> list[str]:
    return list(QUIET)


@pytest.fixture
def uad(capsys: pytest.CaptureFixture[str]):
    """``code, out, err = uad("fit", ...)``."""

    def run(*argv: str) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run
