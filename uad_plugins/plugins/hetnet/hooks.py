"""Registers the ``hetnet`` model (provisional)."""

from uad_plugins import ModelSpec, hookimpl


@hookimpl
def uad_register_models():
    return ModelSpec(
        name="hetnet",
        target="uad_plugins.plugins.hetnet.model:HetNet",
        summary="HetNet (provisional): CNN + ViT teachers, local-global fusion, Gaussian feature noise, "
                "reconstruction and denoising students.",
        config="uad_plugins.plugins.hetnet:config.yaml",
        # tiny settings for the contract test: random teachers, 64 px (ViT 4x4 tokens, 2 blocks), small students
        test_config={"pretrained": False, "vit_pretrained": False, "image_size": 64, "vit_layers": [1],
                     "fusion_dim": 16, "embed_dim": 32},
        tags=("image", "exportable", "provisional"),
        paper="Yu et al., Noise Fusion-based Distillation Learning for Anomaly Detection in Complex Industrial "
              "Environments, IROS 2025 (arXiv 2506.16050)",
        homepage="https://zihuatanejoyu.github.io/HetNet",
        license="no code published (our implementation from the paper's figures and text)",
    )
