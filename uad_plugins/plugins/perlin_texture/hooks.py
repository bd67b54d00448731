"""Registers the ``perlin_texture`` synthesizer."""

from uad_plugins import SynthesizerSpec, hookimpl


@hookimpl
def uad_register_synthesizers():
    return SynthesizerSpec(
        name="perlin_texture",
        target="uad_plugins.plugins.perlin_texture.synthesizer:PerlinTextureSynthesizer",
        summary="DRAEM-style Perlin-mask anomalies filled with textures from a folder (DTD) or procedural textures.",
        config="uad_plugins.plugins.perlin_texture:config.yaml",
        tags=("image",),
        paper="Zavrtanik et al., DRAEM: A Discriminatively Trained Reconstruction Embedding for Surface Anomaly "
              "Detection, ICCV 2021",
        license="Apache-2.0 (our implementation)",
    )
