"""Registers the ``perlin`` synthesizer."""

from uad_plugins import SynthesizerSpec, hookimpl


@hookimpl
def uad_register_synthesizers():
    return SynthesizerSpec(
        name="perlin",
        target="uad_plugins.plugins.perlin.synthesizer:PerlinSynthesizer",
        summary="Perlin-noise shaped anomalies blended from a texture folder or from noise (anomalib's generator).",
        config="uad_plugins.plugins.perlin:config.yaml",
        tags=("image",),
        paper="DRAEM, Zavrtanik et al., ICCV 2021",
        license="Apache-2.0 (anomalib)",
    )
