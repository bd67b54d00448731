"""``python -m uad_edge``: the ``uad-edge`` command."""

from uad_edge.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
