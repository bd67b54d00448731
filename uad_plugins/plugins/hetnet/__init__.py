"""HetNet, Noise Fusion-based Distillation Learning for Anomaly Detection in Complex Industrial Environments
(Jiawen Yu et al., IROS 2025, arXiv 2506.16050; no official code): a frozen CNN teacher (local features) and a frozen
Vision Transformer teacher (global features) are fused adaptively (ALGF) and widened to several receptive fields
(MHF); a reconstruction student learns the CNN teacher's levels from the clean fused feature and a denoising student
learns the reconstruction student's output from features whose random boxes were replaced by local multivariate
Gaussian noise (LMGN). Provisional: a reconstruction from the paper's figures, see README.md. The model lives in
:mod:`.model` (Lightning) and :mod:`.torch_model` (plain torch); this package imports nothing heavy.
"""
