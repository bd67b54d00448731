"""The ``uad-edge`` command (``infer``, ``serve``) and the one place that turns a failed command into a message.

The full package's ``uad`` command prints its errors with :func:`exit_status` too, so ``uad infer`` and
``uad-edge infer`` fail alike: a user error is one block on stderr and exit status 2, never a traceback (unless
``--traceback`` or ``UAD_TRACEBACK=1``); an unexpected failure says so and exits 1; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from uad_edge.errors import UadError
from uad_edge.version import __version__

__all__ = ["COMMANDS", "command_table_parser", "exit_status", "main", "user_error"]

#: sub-command -> (one-line help, module that defines a function of that name taking ``(argv, prog)``)
COMMANDS: dict[str, tuple[str, str]] = {
    "infer": ("score images or signal windows with a bundle (openvino + numpy + pillow)", "uad_edge.commands.infer"),
    "serve": ("serve a bundle over HTTP: KServe v2 endpoints and an image upload (pip install 'uad-edge[serve]')",
              "uad_edge.commands.serve"),
}

EPILOG = """examples:
  uad-edge infer RUN/bundle_fp32 my_images/ --output scored/ --resize
  uad-edge infer RUN/bundle_fp32 'shots/**/*.png' --output scored/ --format jsonl --resume
  uad-edge serve RUN/bundle_fp32 --port 8000

Bundles are written by 'uad export' (the full uad_plugins package, on a machine with torch).
global flag (any position): --traceback (show the stack on errors)
"""


def command_table_parser(prog: str, description: str, epilog: str, version: str,
                         commands: dict[str, tuple[str, object]]) -> argparse.ArgumentParser:
    """The top-level parser of a command table (``uad-edge``, ``uad``): ``--version`` and one sub-command per entry
    of ``commands`` (name -> (help, runner)); each sub-command parses its own arguments."""
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=version)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, _) in commands.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _parser() -> argparse.ArgumentParser:
    return command_table_parser("uad-edge", "uad-edge: score images or signals with an exported uad bundle, or serve "
                                "it over HTTP (openvino, numpy, pillow; no torch).", EPILOG,
                                f"uad-edge {__version__}", COMMANDS)


def user_error(exc: BaseException) -> UadError | None:
    """The user error found in the chain of causes of ``exc`` (frameworks wrap errors raised inside hooks)."""
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, UadError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def exit_status(exc: BaseException, *, show_traceback: bool = False, culprit: str = "uad-edge") -> int:
    """Print what a command that raised ``exc`` must print and return its exit status: a :class:`UadError` in the
    chain of causes is one ``error:`` block (status 2); anything else is an unexpected failure, blamed on ``culprit``
    (status 1). The stack is printed only with ``show_traceback``."""
    if show_traceback:
        traceback.print_exception(exc)
    wrapped = user_error(exc)
    if wrapped is not None:
        print(f"error: {wrapped.render()}", file=sys.stderr)
        return wrapped.exit_code
    print(f"error: unexpected failure: {type(exc).__name__}: {exc}\n"
          f"This is probably a bug in {culprit}; run again with --traceback and report it.", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``uad-edge`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    show_tb = "--traceback" in args or os.environ.get("UAD_TRACEBACK", "") == "1"
    args = [a for a in args if a != "--traceback"]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        if not args or args[0] in ("-h", "--help", "--version"):
            _parser().parse_args(args or ["--help"])
            return 0
        command, rest = args[0], args[1:]
        if command not in COMMANDS:
            guesses = difflib.get_close_matches(command, sorted(COMMANDS), n=1, cutoff=0.6)
            raise UadError(f"unknown command '{command}'.",
                           hint=(f"Did you mean '{guesses[0]}'? " if guesses else "")
                           + "Commands: " + ", ".join(COMMANDS) + " (see 'uad-edge --help').")
        run = getattr(importlib.import_module(COMMANDS[command][1]), command)
        return int(run(rest, prog=f"uad-edge {command}") or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # argparse usage errors and --help
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: never a bare traceback by default
        return exit_status(exc, show_traceback=show_tb)


if __name__ == "__main__":
    raise SystemExit(main())
