"""Registers the ``ecg_anomaly`` synthesizer."""

from uad_plugins import SynthesizerSpec, hookimpl


@hookimpl
def uad_register_synthesizers():
    return SynthesizerSpec(
        name="ecg_anomaly",
        target="uad_plugins.plugins.ecg_anomaly.synthesizer:EcgAnomalySynthesizer",
        summary="Local ECG anomalies (amplitude scaling, baseline wander, noise burst, beat dropout) with point "
                "masks; the honest-validation synthesizer for signals.",
        config="uad_plugins.plugins.ecg_anomaly:config.yaml",
        tags=("signal",),
        license="Apache-2.0 (our implementation)",
    )
