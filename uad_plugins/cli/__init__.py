"""The ``uad`` command line (the outermost layer: nothing in the package imports it)."""
