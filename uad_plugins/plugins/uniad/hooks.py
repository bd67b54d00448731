"""Registers the ``uniad`` model."""

from uad_plugins import ModelSpec, hookimpl


@hookimpl
def uad_register_models():
    return ModelSpec(
        name="uniad",
        target="uad_plugins.plugins.uniad.model:Uniad",
        summary="UniAD: unified multi-class feature reconstruction with a neighbour-masked transformer.",
        config="uad_plugins.plugins.uniad:config.yaml",
        # tiny settings for the contract test: random weights, 128 px (8x8 tokens), small transformer
        test_config={"pretrained": False, "image_size": 128, "hidden_dim": 64, "num_heads": 4,
                     "num_encoder_layers": 1, "num_decoder_layers": 1, "dim_feedforward": 128, "dropout": 0.0,
                     "neighbor_size": 3},
        tags=("image", "multi-class", "exportable"),
        paper="You et al., A Unified Model for Multi-class Anomaly Detection, NeurIPS 2022 (arXiv 2206.03687)",
        homepage="https://github.com/zhiyuanyou/UniAD",
        license="Apache-2.0 (original code)",
    )
