"""Registers the ``pnas3d`` point-cloud synthesizer."""

from uad_plugins import SynthesizerSpec, hookimpl


@hookimpl
def uad_register_synthesizers():
    return SynthesizerSpec(
        name="pnas3d",
        target="uad_plugins.plugins.pnas3d.synthesizer:Pnas3dSynthesizer",
        summary="3D-PNAS: Perlin-noise regions on a cloud's best-fit plane, bulged or dented along k-NN normals.",
        config="uad_plugins.plugins.pnas3d:config.yaml",
        test_config={"grid_res": 64, "noise_scale": 4.0, "octaves": 3, "threshold": 0.6, "strength": 0.02},
        tags=("pointcloud",),
        paper="Cheng & Du, 3D-PNAS: 3D Industrial Surface Anomaly Synthesis with Perlin Noise, arXiv 2504.12856",
        license="Apache-2.0 (our implementation; no public code)",
    )
