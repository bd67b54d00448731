"""Synthetic ECG anomalies (local amplitude scaling, baseline wander, noise bursts, beat dropout) with point masks.
The synthesizer lives in :mod:`.synthesizer`; this package imports nothing heavy.
"""
