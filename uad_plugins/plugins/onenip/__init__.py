"""OneNIP, Learning to Detect Multi-class Anomalies with Just One Normal Image Prompt (Bin-Bin Gao, ECCV 2024;
official code github.com/gaobb/OneNIP, no license): UniAD's backbone and neighbour-masked encoder, then a two-way
decoder in which one normal prompt image attends to the target and is rewritten into the target's normal
reconstruction (and, for synthetic anomalies, its restoration), plus a supervised refiner on the residual. The
model lives in :mod:`.model` (Lightning) and :mod:`.torch_model` (plain torch); this package imports nothing heavy.
"""
