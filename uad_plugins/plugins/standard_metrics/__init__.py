"""The standard image metrics: anomalib's own metric classes registered under stable names."""
