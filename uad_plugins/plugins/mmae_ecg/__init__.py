"""MMAE-ECG: multi-scale masked autoencoder for ECG anomaly detection and localisation (signals)."""
