"""UniAD, A Unified Model for Multi-class Anomaly Detection (Zhiyuan You et al., NeurIPS 2022; official code
github.com/zhiyuanyou/UniAD, Apache-2.0): frozen multi-scale backbone features are reconstructed by a transformer
whose attention never sees a token's own 7x7 neighbourhood, whose decoder layers start from their own learned
queries, and whose training inputs are jittered; the reconstruction error is the anomaly map. The model lives in
:mod:`.model` (Lightning) and :mod:`.torch_model` (plain torch); this package imports nothing heavy.
"""
