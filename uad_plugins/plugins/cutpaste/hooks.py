"""Registers the ``cutpaste`` synthesizer."""

from uad_plugins import SynthesizerSpec, hookimpl


@hookimpl
def uad_register_synthesizers():
    return SynthesizerSpec(
        name="cutpaste",
        target="uad_plugins.plugins.cutpaste.synthesizer:CutPasteSynthesizer",
        summary="CutPaste: a colour-jittered patch (normal) or thin rotated scar cut from the image and pasted "
                "elsewhere.",
        config="uad_plugins.plugins.cutpaste:config.yaml",
        test_config={"variant": "union"},
        tags=("image",),
        paper="Li et al., CutPaste: Self-Supervised Learning for Anomaly Detection and Localization, CVPR 2021",
        license="Apache-2.0 (our implementation)",
    )
