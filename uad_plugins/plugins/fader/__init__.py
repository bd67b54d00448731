"""FADeR, Feature Attenuation of Defective Representation (YeongHyeon Park, Sungho Kang, Myung Jin Kim, Hyeong Seok
Kim, Juneho Yi; arXiv 2407.04597, CVPR 2025 VAND 3.0 workshop; no public code), on its base EAR, Excision And
Recovery (Park et al., Scientific Reports 14:18872, 2024): the most salient patches of each image (one
deterministic mask from a frozen ViT's class-token attention) are replaced by a mosaic hint, a U-Net reconstructs
the image, and FADeR's two per-patch linear layers gate the U-Net's skip connections so that defect features that
escaped the mask are attenuated. The model lives in :mod:`.model` (Lightning) and :mod:`.torch_model` (plain
torch); this package imports nothing heavy.
"""
