"""Registers the ``fader`` model."""

from uad_plugins import ModelSpec, hookimpl


@hookimpl
def uad_register_models():
    return ModelSpec(
        name="fader",
        target="uad_plugins.plugins.fader.model:Fader",
        summary="FADeR on EAR: one deterministic attention mask, mosaic hint, U-Net inpainting, gated skips.",
        config="uad_plugins.plugins.fader:config.yaml",
        # tiny settings for the contract test: the default saliency mask on a random Lite0, 64 px, 8x8 patch grid,
        # 3-level U-Net of width 8; of the contract's one epoch of two batches, one trains the base, one FADeR
        test_config={"pretrained": False, "image_size": 64, "patch_size": 8,
                     "mosaic_size": 4, "base_channels": 8, "depth": 3, "attenuation_hidden": 16,
                     "fader_epochs": 0.5},
        tags=("image", "exportable"),
        paper="Park et al., Feature Attenuation of Defective Representation Can Resolve Incomplete Masking on "
        "Anomaly Detection, arXiv 2407.04597 (CVPR 2025 VAND 3.0 workshop); base: Park et al., Visual defect "
        "obfuscation based self-supervised anomaly detection (EAR), Sci. Rep. 14:18872, 2024",
        homepage="https://arxiv.org/abs/2407.04597",
        license="no public code (independent implementation from the papers)",
    )
