"""``python -m uad_plugins`` is the ``uad`` command."""

from uad_plugins.cli.main import main

raise SystemExit(main())
