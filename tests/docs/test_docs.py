"""Docs and layout stay true: every hook documented and tested, every built-in plugin complete."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from uad_plugins import hookspecs
from uad_plugins.plugins import BUILTIN_PLUGINS

REPO = Path(__file__).resolve().parents[2]
HOOKS = sorted(n for n in dir(hookspecs) if n.startswith("uad_register_"))
PLUGINS_DIR = REPO / "uad_plugins" / "plugins"
PLUGIN_FOLDERS = sorted(p.name for p in PLUGINS_DIR.iterdir() if p.is_dir() and not p.name.startswith("_"))
MODEL_FILES = {"__init__.py", "hooks.py", "model.py", "torch_model.py", "config.yaml", "README.md"}
SYNTHESIZER_FILES = {"__init__.py", "hooks.py", "synthesizer.py", "config.yaml", "README.md"}


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook: str) -> None:
    text = (REPO / "docs" / "plugins" / "hooks.md").read_text()
    assert f"## {hook}()" in text


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook: str) -> None:
    tests = "\n".join(p.read_text() for p in (REPO / "tests").rglob("test_*.py"))
    assert re.search(rf"def test_hook_{hook}\b", tests), f"no test named test_hook_{hook}"


def test_hookspecs_fit_on_one_screen() -> None:
    code = [line for line in (REPO / "uad_plugins" / "hookspecs.py").read_text().splitlines() if line.strip()]
    assert len(code) <= 80


@pytest.mark.parametrize("folder", PLUGIN_FOLDERS)
def test_builtin_folders_are_registered(folder: str) -> None:
    assert f"uad_plugins.plugins.{folder}.hooks" in BUILTIN_PLUGINS


@pytest.mark.parametrize("folder", PLUGIN_FOLDERS)
def test_builtin_folders_have_the_same_file_names(folder: str) -> None:
    files = {p.name for p in (PLUGINS_DIR / folder).iterdir() if p.is_file()}
    assert {"__init__.py", "hooks.py", "README.md"} <= files, f"{folder} lacks a README.md"
    if (PLUGINS_DIR / folder / "model.py").exists():
        assert files >= MODEL_FILES, f"{folder} lacks {sorted(MODEL_FILES - files)}"
    if (PLUGINS_DIR / folder / "synthesizer.py").exists():
        assert files >= SYNTHESIZER_FILES, f"{folder} lacks {sorted(SYNTHESIZER_FILES - files)}"


def test_every_builtin_model_has_a_docs_page() -> None:
    from uad_plugins import list_components

    for spec in list_components("model"):
        if spec.source == "builtin":
            assert (REPO / "docs" / "models" / f"{spec.name}.md").is_file(), spec.name


#: the install line: uad-edge is in this repository (packages/uad-edge), not on PyPI, so pip gets both
INSTALL = 'pip install -e packages/uad-edge -e ".[dev]"'


def test_readme_gives_install_run_and_test_commands() -> None:
    readme = (REPO / "README.md").read_text()
    assert INSTALL in readme and "uad fit --model plugin:pbas" in readme
    assert "python -m pytest" in readme
    ci = (REPO / ".ci" / "run").read_text()
    assert "\npython -m pytest\n" in ci  # CI runs exactly the README's test command
    assert INSTALL.replace("pip install", "pip install -q") in ci  # ... after the README's install line


def test_configs_reference_registered_plugins() -> None:
    import yaml

    from uad_plugins import get_spec

    for recipe in sorted((REPO / "configs").glob("*.yaml")):
        data = yaml.safe_load(recipe.read_text())
        model = data["model"]["class_path"] if isinstance(data["model"], dict) else data["model"]
        assert get_spec("model", model) is not None, recipe.name


@pytest.mark.parametrize("recipe", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_every_recipe_parses_through_the_cli(recipe: str, uad) -> None:
    """Each shipped recipe is a valid `uad fit` config: stale or misspelt keys fail here, not on a GPU box."""
    code, out, err = uad("fit", "--config", REPO / "configs" / recipe, "--print_config")
    assert code == 0, err
    assert "class_path" in out and "model" in out
