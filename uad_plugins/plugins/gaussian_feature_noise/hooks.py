"""Registers the ``gaussian_feature_noise`` synthesizer (feature maps, not images)."""

from uad_plugins import SynthesizerSpec, hookimpl


@hookimpl
def uad_register_synthesizers():
    return SynthesizerSpec(
        name="gaussian_feature_noise",
        target="uad_plugins.plugins.gaussian_feature_noise.synthesizer:GaussianFeatureNoise",
        summary="HetNet's LMGN: per-position Gaussian statistics of normal feature maps, sampled into random boxes "
                "(works on feature maps [C, H, W]; fit first).",
        config="uad_plugins.plugins.gaussian_feature_noise:config.yaml",
        aliases=("lmgn",),
        tags=("feature",),
        paper="Yu et al., Noise Fusion-based Distillation Learning for Anomaly Detection in Complex Industrial "
              "Environments, IROS 2025 (arXiv 2506.16050)",
        license="Apache-2.0 (our implementation; the paper published no code)",
    )
