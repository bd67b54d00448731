"""DRAEM-style anomalies (Zavrtanik, Kristan, Skočaj; ICCV 2021): a thresholded, rotated Perlin-noise mask filled
with a texture (from a folder such as DTD, or generated procedurally) and blended into the image with opacity β.
The synthesizer lives in :mod:`.synthesizer` and the procedural textures in :mod:`.textures`; this package imports
nothing heavy.
"""
