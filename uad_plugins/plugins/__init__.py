"""The built-in plugins: each listed module is registered exactly like a third-party entry point."""

BUILTIN_PLUGINS: tuple[str, ...] = (
    "uad_plugins.plugins.standard_metrics.hooks",
    "uad_plugins.plugins.perlin.hooks",
    "uad_plugins.plugins.pbas.hooks",
    "uad_plugins.plugins.uniad.hooks",
    "uad_plugins.plugins.onenip.hooks",
    "uad_plugins.plugins.cutpaste.hooks",
    "uad_plugins.plugins.perlin_texture.hooks",
)
