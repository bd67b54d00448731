"""Registers ``plugin:scratch`` and ``plugin:image_tpr_at_fpr``. Keep this module light: no torch import here."""

from uad_plugins import MetricSpec, SynthesizerSpec, hookimpl


@hookimpl
def uad_register_synthesizers():
    return SynthesizerSpec(
        name="scratch",
        target="uad_example_extras.synthesizer:ScratchSynthesizer",
        summary="Thin straight scratches, darker or brighter than the surface; the mask is the scratched pixels.",
        config="uad_example_extras:scratch.yaml",
        tags=("image",),
        license="Apache-2.0",
    )


@hookimpl
def uad_register_metrics():
    return MetricSpec(
        name="image_tpr_at_fpr",
        target="uad_example_extras.metric:TprAtFpr",
        summary="Share of anomalous images found when at most a given share of normal images is flagged.",
        config={"fields": ["pred_score", "gt_label"], "prefix": "image_", "strict": True, "fpr": 0.05},
        tags=("image",),
        license="Apache-2.0",
    )
