"""PRADOT, Prototype-based Anomaly Detection with Optimal Transport (Robin Trombetta, Carole Lartizien; "Learning
local and global prototypes with optimal transport for unsupervised anomaly detection and localization", Learning
from Small Data workshop, ECML 2025; arXiv 2508.12927; official code github.com/robintrmbtt/pradot, no license):
frozen backbone features of normal images are transported, batch by batch, onto K prototypes per feature-grid
position with entropic optimal transport under a cost mixing cosine feature distance and grid distance; each
prototype moves by EMA towards the mean of the features it received. The anomaly map is the cost to the nearest
prototype. The model lives in :mod:`.model` (Lightning) and :mod:`.torch_model` (plain torch); this package imports
nothing heavy.
"""
