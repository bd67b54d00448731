"""Registers the ``pbas`` model."""

from uad_plugins import ModelSpec, hookimpl


@hookimpl
def uad_register_models():
    return ModelSpec(
        name="pbas",
        target="uad_plugins.plugins.pbas.model:Pbas",
        summary="PBAS: boundary-guided feature-space anomaly synthesis with a patch discriminator (frozen backbone).",
        config="uad_plugins.plugins.pbas:config.yaml",
        # tiny settings for the contract test: random weights, 64 px, small dimensions
        test_config={"pretrained": False, "image_size": 64, "pretrain_embed_dimension": 64,
                     "target_embed_dimension": 64, "dsc_hidden": 32},
        tags=("image", "exportable"),
        paper="Chen et al., Progressive Boundary Guided Anomaly Synthesis, IEEE TCSVT 2025 (arXiv 2412.17458)",
        homepage="https://github.com/cqylunlun/PBAS",
        license="MIT (original code)",
    )
