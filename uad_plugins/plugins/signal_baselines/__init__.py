"""Trivial signal baselines: mean-window distance, window standard deviation, nearest-training-window distance."""
