"""Registers ``plugin:example``. Keep this module light: only uad_plugins and the standard library."""

from uad_plugins import ModelSpec, hookimpl


@hookimpl
def uad_register_models():
    return ModelSpec(
        name="example",
        target="uad_example.model:ExampleAutoencoder",
        summary="Small convolutional autoencoder; anomaly map = squared reconstruction error.",
        config="uad_example:config.yaml",
        test_config={"image_size": 64, "width": 8},
        tags=("image", "exportable"),
        license="Apache-2.0",
    )
