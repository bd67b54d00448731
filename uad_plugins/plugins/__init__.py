"""The built-in plugins: each listed module is registered exactly like a third-party entry point."""

BUILTIN_PLUGINS: tuple[str, ...] = (
    "uad_plugins.plugins.standard_metrics.hooks",
    "uad_plugins.plugins.perlin.hooks",
    "uad_plugins.plugins.pbas.hooks",
    "uad_plugins.plugins.uniad.hooks",
    "uad_plugins.plugins.onenip.hooks",
    "uad_plugins.plugins.cutpaste.hooks",
    "uad_plugins.plugins.perlin_texture.hooks",
    "uad_plugins.plugins.hetnet.hooks",
    "uad_plugins.plugins.gaussian_feature_noise.hooks",
    "uad_plugins.plugins.pradot.hooks",
    "uad_plugins.plugins.fader.hooks",
    "uad_plugins.plugins.pnas3d.hooks",
    "uad_plugins.plugins.pointcloud_metrics.hooks",
    "uad_plugins.plugins.mmae_ecg.hooks",
    "uad_plugins.plugins.ecg_anomaly.hooks",
    "uad_plugins.plugins.signal_metrics.hooks",
)
