"""`uad plugins list|show`, the top-level help, and the error paths that need no training."""

from __future__ import annotations

import json
import os
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


# ---------------------------------------------------------------- plugin code that calls sys.exit(), name clashes
# In subprocesses: the bug was the exit status of the whole process (sys.exit(0) in a hook ended every command).

EXIT_IN_HOOK = ("import sys\nfrom uad_plugins import hookimpl\n\n@hookimpl\ndef uad_register_models():\n"
                "    sys.exit(0)\n")
RIVAL_PBAS = ("from uad_plugins import ModelSpec, hookimpl\n\n@hookimpl\ndef uad_register_models():\n"
              "    return ModelSpec(name='pbas', target='uad_plugins.plugins.perlin.synthesizer:PerlinSynthesizer', "
              "summary='not the real PBAS')\n")


def uad_process(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "uad_plugins.cli.main", *argv], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


@pytest.fixture
def exiter(tmp_path) -> str:
    file = tmp_path / "exiter.py"
    file.write_text(EXIT_IN_HOOK, encoding="utf-8")
    return str(file)


def test_hook_calling_sys_exit_does_not_end_plugins_list(exiter: str) -> None:
    result = uad_process("--plugin-file", exiter, "plugins", "list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("perlin") and " ok " in line for line in lines)  # the others are listed
    row = next(line for line in lines if line.startswith("exiter"))
    assert " error " in row and "called sys.exit(0)" in row


def test_hook_calling_sys_exit_is_shown_as_error(exiter: str) -> None:
    result = uad_process("--plugin-file", exiter, "plugins", "show", "exiter")
    assert result.returncode == 0, result.stderr
    assert "status:      error" in result.stdout
    assert "uad_register_models failed: SystemExit: the plugin called sys.exit(0)" in result.stdout


def test_hook_calling_sys_exit_does_not_end_fit_with_status_0(exiter: str) -> None:
    result = uad_process("--plugin-file", exiter, "fit", "--model", "plugin:exiter_model")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "unknown model 'exiter_model'" in result.stderr and "called sys.exit(0)" in result.stderr


def test_plugin_file_calling_sys_exit_at_import_is_a_load_error(tmp_path) -> None:
    file = tmp_path / "exit_on_import.py"
    file.write_text("import sys\nsys.exit(0)\n", encoding="utf-8")
    result = uad_process("--plugin-file", str(file), "plugins", "list")
    assert result.returncode == 2
    assert "exit_on_import.py failed to load" in result.stderr and "called sys.exit(0)" in result.stderr


def test_list_components_survives_a_hook_calling_sys_exit(exiter: str) -> None:
    code = ("import uad_plugins; specs = uad_plugins.list_components(); "
            "print('ALIVE', len(specs), 'perlin' in {s.name for s in specs})")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "UAD_PLUGIN_FILES": exiter})
    assert result.returncode == 0 and "ALIVE" in result.stdout and "True" in result.stdout, result.stderr


def test_component_name_clash_is_named_everywhere(tmp_path) -> None:
    file = tmp_path / "rival.py"
    file.write_text(RIVAL_PBAS, encoding="utf-8")
    both = ("pbas (builtin, uad_plugins", f"rival (local, {file.resolve()} -)")

    listed = uad_process("--plugin-file", str(file), "plugins", "list")
    assert listed.returncode == 0
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert "model:pbas (conflict)" in rows["pbas"] and "model:pbas (conflict)" in rows["rival"]
    assert "warning: model name 'pbas'" in listed.stderr and all(p in listed.stderr for p in both)

    by_kind = uad_process("--plugin-file", str(file), "plugins", "list", "--kind", "model", "pbas")
    assert [line.split()[2] for line in by_kind.stdout.splitlines()[1:]] == ["pbas", "rival"]  # built-in first

    shown = uad_process("--plugin-file", str(file), "plugins", "show", "pbas")
    assert shown.returncode == 0 and "status:      ok" in shown.stdout
    assert "conflict:" in shown.stdout and all(p in shown.stdout for p in both)

    used = uad_process("--plugin-file", str(file), "fit", "--model", "plugin:pbas")
    assert used.returncode == 2 and "is provided by 2 plugins" in used.stderr
    assert all(p in used.stderr for p in both) and "Traceback" not in used.stderr


def test_plugin_file_named_like_a_builtin_is_refused_with_exit_2(tmp_path) -> None:
    file = tmp_path / "pbas.py"
    file.write_text(RIVAL_PBAS, encoding="utf-8")
    result = uad_process("--plugin-file", str(file), "plugins", "list")
    assert result.returncode == 2
    assert "already taken by the builtin plugin 'pbas'" in result.stderr and "Traceback" not in result.stderr
