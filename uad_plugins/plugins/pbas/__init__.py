"""PBAS, Progressive Boundary guided Anomaly Synthesis (Qiyu Chen, Huiyuan Luo, Han Gao, Chengkan Lv, Zhengtao
Zhang; IEEE TCSVT 35(2), 2025; arXiv 2412.17458; official code github.com/cqylunlun/PBAS, MIT): frozen backbone
patch features pass a linear adaptor pulled towards fixed per-position centres (Approximate Boundary Learning),
synthetic anomalies are made by pushing each feature outward along its ray from its centre by a quarter of the
mean radius (Anomaly Feature Synthesis), and a patch discriminator learns the boundary (Refined Boundary
Optimization). The model lives in :mod:`.model` (Lightning) and :mod:`.torch_model` (plain torch); this package
imports nothing heavy.
"""
