"""Registers the ``mmae_ecg`` model."""

from uad_plugins import ModelSpec, hookimpl


@hookimpl
def uad_register_models():
    return ModelSpec(
        name="mmae_ecg",
        target="uad_plugins.plugins.mmae_ecg.model:MmaeEcg",
        summary="MMAE-ECG: multi-scale masked autoencoder over ECG segments; sample score and per-lead, per-time "
                "anomaly map from complementary masks.",
        config="uad_plugins.plugins.mmae_ecg:config.yaml",
        # tiny settings for contract tests: 1 lead x 64 samples, 8 segments, a 1-block encoder of width 16
        test_config={"n_leads": 1, "length": 64, "segment_len": 8, "local_segment_len": 4, "local_segments": 2,
                     "embed_dim": 16, "depth": 1, "num_heads": 2, "decoder_dim": 16, "decoder_heads": 2,
                     "max_epochs": 1},
        tags=("signal", "exportable"),
        paper="Zhou et al., A lightweight and robust method for electrocardiogram anomaly detection and localization "
              "using multi-scale masked autoencoder, arXiv 2502.05494 (2025); PLOS ONE 21(3): e0343571 (2026)",
        license="Apache-2.0 (our implementation; no official code)",
    )
