"""Perlin-noise anomalies (DRAEM-style), anomalib's generator behind the uad synthesizer interface."""
