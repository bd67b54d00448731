"""Registers the ``onenip`` model."""

from uad_plugins import ModelSpec, hookimpl


@hookimpl
def uad_register_models():
    return ModelSpec(
        name="onenip",
        target="uad_plugins.plugins.onenip.model:Onenip",
        summary="OneNIP: multi-class reconstruction guided by one normal image prompt, with a supervised refiner.",
        config="uad_plugins.plugins.onenip:config.yaml",
        # tiny settings for the contract test: random weights, 128 px (8x8 tokens), small transformer and refiner
        test_config={"pretrained": False, "image_size": 128, "hidden_dim": 64, "num_heads": 4,
                     "num_encoder_layers": 1, "num_decoder_layers": 1, "dim_feedforward": 128, "dropout": 0.0,
                     "neighbor_size": 3, "refiner_width": 16, "prompt_bank_size": 4},
        tags=("image", "multi-class", "exportable"),
        paper="Gao, Learning to Detect Multi-class Anomalies with Just One Normal Image Prompt, ECCV 2024 "
              "(arXiv 2505.09264)",
        homepage="https://github.com/gaobb/OneNIP",
        license="none published (clean-room implementation from the paper and a written spec)",
    )
