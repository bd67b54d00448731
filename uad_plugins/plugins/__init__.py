"""The built-in plugins: one folder each, registered exactly like third-party entry points.

The list of them lives in the plugin manager (:data:`uad_plugins.manager.BUILTIN_PLUGINS`); it is re-exported here.
"""

from uad_plugins.manager import BUILTIN_PLUGINS

__all__ = ["BUILTIN_PLUGINS"]
