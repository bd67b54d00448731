"""Local multivariate Gaussian feature noise (LMGN, from HetNet: Yu et al., IROS 2025, arXiv 2506.16050): per-position
Gaussian statistics of normal feature maps, sampled into random boxes of a feature map. The synthesizer lives in
:mod:`.synthesizer`; this package imports nothing heavy.
"""
