"""Synthesizers: components that make synthetic anomalies (see :class:`Synthesizer`)."""

from uad_plugins.synth.base import Synthesizer

__all__ = ["Synthesizer"]
