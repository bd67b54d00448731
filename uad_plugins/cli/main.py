"""The ``uad`` command: a table of sub-commands, global flags, and one place that turns errors into messages.

Light sub-commands (``plugins``) never import torch; the training ones build their jsonargparse parser only when
they are asked for. ``infer`` and ``serve`` are the edge distribution's commands (``uad_edge.commands``, the same
code as ``uad-edge infer|serve``), and errors are printed by its :func:`uad_edge.cli.exit_status`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from uad_edge.cli import command_table_parser, exit_status
from uad_plugins.errors import UadError
from uad_plugins.version import __version__

__all__ = ["main"]

#: sub-command -> (one-line help, module:function that runs it with the remaining argv)
COMMANDS: dict[str, tuple[str, str]] = {
    "fit": ("train a model, then test it (default data: the embedded demo dataset)", "uad_plugins.cli.train:fit"),
    "train": ("the same as fit (anomalib's name for it)", "uad_plugins.cli.train:fit"),
    "validate": ("run validation of a checkpoint", "uad_plugins.cli.train:validate"),
    "test": ("test a checkpoint and write metrics.json", "uad_plugins.cli.train:test"),
    "predict": ("score images with a checkpoint; heatmaps + JSON/CSV of scores", "uad_plugins.cli.train:predict"),
    "export": ("export a checkpoint to an OpenVINO bundle, checked by a parity gate", "uad_plugins.cli.export:export"),
    "infer": ("score images or signal windows with a bundle (openvino + numpy only)", "uad_edge.commands.infer:infer"),
    "serve": ("serve a bundle over HTTP: KServe v2 endpoints and an image upload (no torch)",
              "uad_edge.commands.serve:serve"),
    "synth": ("make synthetic anomalies from images, point clouds or signals", "uad_plugins.cli.synth:synth"),
    "bench": ("benchmark models x data x precisions: bench.json, bench.md, plots", "uad_plugins.cli.bench:bench"),
    "plugins": ("list and inspect plugins (list [PATTERN] [--kind K] [--json] | show NAME)", ""),
}

EPILOG = """examples:
  uad fit --model plugin:pbas
  uad fit --model Padim --model.pre_trained false       (anomalib's models by name, through the same engine)
  uad fit --model plugin:pbas --data MVTecAD --data.root ../shared/data/mvtec_ad_256 --data.category bottle
  uad test --ckpt_path results/pbas/.../weights/lightning/model.ckpt
  uad predict --ckpt_path RUN/weights/lightning/model.ckpt --data_path my_images/ --output out/
  uad export --ckpt_path RUN/weights/lightning/model.ckpt --precision fp32
  uad infer RUN/bundle_fp32 my_images/ --output scored/ --resize
  uad serve RUN/bundle_fp32 --port 8000
  uad bench --recipe configs/bench/demo_quick.yaml
  uad fit --model plugin:uniad --data.categories all
  uad plugins list --kind model
  uad synth --synthesizer plugin:perlin --input good/ --output synth/ --seed 0

global flags (any position): --traceback (show the stack on errors), --plugin-file PATH.py (load a local plugin)
"""


def _top_parser() -> argparse.ArgumentParser:
    return command_table_parser("uad", "uad_plugins: unsupervised anomaly detection with pluggable models.", EPILOG,
                                f"uad_plugins {__version__}", COMMANDS)


def _pop_global_flags(argv: list[str]) -> tuple[list[str], bool, list[str]]:
    """Remove ``--traceback`` and ``--plugin-file PATH`` (they may appear anywhere)."""
    out, files, show_tb = [], [], False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--traceback" and not (out[:2] == ["plugins", "show"]):
            show_tb = True
        elif arg == "--plugin-file" and i + 1 < len(argv):
            files.append(argv[i + 1])
            i += 1
        elif arg.startswith("--plugin-file="):
            files.append(arg.split("=", 1)[1])
        else:
            out.append(arg)
        i += 1
    return out, show_tb, files


def _load_plugin_files(files: Sequence[str]) -> None:
    if not files:
        return
    from uad_plugins.errors import PluginLoadError
    from uad_plugins.manager import get_plugin_manager

    pm = get_plugin_manager()
    for file in files:
        if not pm.load_plugin_file(file):
            failure = pm.failures[os.path.splitext(os.path.basename(file))[0]]
            raise PluginLoadError(f"--plugin-file {file} failed to load: {failure.error}",
                                  hint="Fix the file, or run with --traceback for the stack.")


def _resolve(target: str) -> Callable[[list[str]], int]:
    from uad_plugins.imports import import_object

    return import_object(target)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``uad`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args, show_tb, plugin_files = _pop_global_flags(list(sys.argv[1:] if argv is None else argv))
    show_tb = show_tb or os.environ.get("UAD_TRACEBACK", "") == "1"
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("uad_plugins").setLevel(logging.INFO)
    try:
        _load_plugin_files(plugin_files)
        if not args or args[0] in ("-h", "--help", "--version"):
            _top_parser().parse_args(args or ["--help"])
            return 0
        command, rest = args[0], args[1:]
        if command == "plugins":
            from uad_plugins.cli.plugins import add_plugins_parser, run_plugins

            parser = argparse.ArgumentParser(prog="uad plugins", description="List and inspect plugins.")
            add_plugins_parser(parser)
            ns = parser.parse_args(rest)
            if getattr(ns, "traceback", False) is False and show_tb and ns.action == "show":
                ns.traceback = True
            return run_plugins(ns)
        if command not in COMMANDS:
            from uad_plugins.errors import close_matches

            guesses = close_matches(command, COMMANDS)
            raise UadError(f"unknown command '{command}'.",
                           hint=(f"Did you mean '{guesses[0]}'? " if guesses else "")
                           + "Commands: " + ", ".join(COMMANDS) + " (see 'uad --help').")
        return int(_resolve(COMMANDS[command][1])(rest) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # argparse/jsonargparse usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: never a bare traceback by default
        # a UadError anywhere in the chain of causes (Lightning wraps errors raised inside hooks; the edge runtime's
        # EdgeError is one): its block, status 2; anything else: an unexpected failure, status 1
        return exit_status(exc, show_traceback=show_tb, culprit="uad_plugins or a plugin")


if __name__ == "__main__":
    raise SystemExit(main())
