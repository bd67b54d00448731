"""Reusable building blocks for model plugins (backbones and feature extractors), loaded lazily by the models."""
