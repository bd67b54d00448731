"""`uad plugins list|show`, the top-level help, and the error paths that need no training."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from uad_plugins.cli.main import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_is_fast_and_never_imports_torch() -> None:
    code = ("import sys, time; t = time.perf_counter(); from uad_plugins.cli.main import main; "
            "rc = main(['plugins', 'list']); dt = time.perf_counter() - t; "
            "heavy = [m for m in ('torch', 'lightning', 'anomalib') if m in sys.modules]; "
            "print('HEAVY', heavy, 'SECONDS', dt); raise SystemExit(rc or (3 if heavy else 0))")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    wall = time.perf_counter() - start
    assert result.returncode == 0, result.stdout + result.stderr
    assert "HEAVY []" in result.stdout
    assert wall < 5.0  # well under a second in practice; generous for a loaded CI box


def test_list_table_shows_builtins(capsys, fresh_manager) -> None:
    code, out, _ = run(capsys, "plugins", "list")
    assert code == 0
    assert out.splitlines()[0].split() == ["PLUGIN", "VERSION", "SOURCE", "STATUS", "PROVIDES"]
    assert any(line.startswith("perlin") and "synthesizer:perlin" in line for line in out.splitlines())


def test_list_json_schema(capsys, fresh_manager) -> None:
    code, out, _ = run(capsys, "plugins", "list", "--json")
    assert code == 0
    rows = json.loads(out)
    by_name = {r["plugin"]: r for r in rows}
    assert by_name["perlin"]["status"] == "ok" and by_name["perlin"]["source"] == "builtin"
    for row in rows:
        assert {"plugin", "version", "source", "status", "components"} <= set(row)
        for comp in row["components"]:
            assert {"name", "kind"} <= set(comp)


def test_list_by_kind_and_pattern(capsys, fresh_manager) -> None:
    code, out, _ = run(capsys, "plugins", "list", "pixel_*", "--kind", "metric", "--json")
    assert code == 0
    assert sorted(c["name"] for c in json.loads(out)) == ["pixel_ap", "pixel_aupro", "pixel_auroc", "pixel_f1max"]
    assert all(c["kind"] == "metric" for c in json.loads(out))


def test_show_component_and_plugin(capsys, fresh_manager) -> None:
    code, out, _ = run(capsys, "plugins", "show", "perlin")
    assert code == 0 and "--synthesizer plugin:perlin" in out and "blend_factor" in out
    code, out, _ = run(capsys, "plugins", "show", "pixel_aupro", "--json")
    assert code == 0 and json.loads(out)["defaults"]["fpr_limit"] == 0.3


def test_show_unknown_is_exit_2_with_suggestion(capsys, fresh_manager) -> None:
    code, _, err = run(capsys, "plugins", "show", "perlinn")
    assert code == 2 and "no plugin or component named 'perlinn'" in err and "perlin" in err


def test_unknown_command(capsys) -> None:
    code, _, err = run(capsys, "fitt")
    assert code == 2 and "unknown command 'fitt'" in err and "Did you mean 'fit'" in err


def test_help_lists_commands(capsys) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in ("fit", "test", "predict", "plugins", "synth"):
        assert command in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["fit", "--model", "plugin:pbsa"], "unknown model 'pbsa'"),
        (["fit", "--model", "pbas"], "Did you mean 'plugin:pbas'?"),
        (["fit", "--model", "plugin:perlin"], "is a synthesizer, not a model"),
        (["fit", "--model", "plugn:pbas"], "unknown reference scheme 'plugn'"),
        (["fit", "--model", "plugin:pbas", "--metrics", "plugin:image_aucroc"], "unknown metric 'image_aucroc'"),
        (["synth", "--synthesizer", "plugin:nope", "--input", ".", "--output", "x"], "unknown synthesizer 'nope'"),
    ],
)
def test_reference_errors_exit_2(capsys, argv: list[str], expected: str) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    assert err.startswith("error: ") and expected in err
    assert "Traceback" not in err


def test_traceback_flag_shows_the_stack(capsys) -> None:
    code, _, err = run(capsys, "fit", "--model", "plugin:pbsa", "--traceback")
    assert code == 2 and "Traceback" in err and "unknown model 'pbsa'" in err


def test_plugin_file_adds_a_component(capsys, tmp_path, fresh_manager) -> None:
    file = tmp_path / "myplug.py"
    file.write_text(
        "from uad_plugins import SynthesizerSpec, hookimpl\n"
        "@hookimpl\n"
        "def uad_register_synthesizers():\n"
        "    return SynthesizerSpec(name='local_perlin', "
        "target='uad_plugins.plugins.perlin.synthesizer:PerlinSynthesizer', summary='from a file')\n",
        encoding="utf-8")
    code, out, _ = run(capsys, "--plugin-file", str(file), "plugins", "list", "--kind", "synthesizer")
    assert code == 0 and "local_perlin" in out
    code, _, err = run(capsys, "--plugin-file", str(tmp_path / "missing.py"), "plugins", "list")
    assert code == 2 and "missing.py failed to load" in err
