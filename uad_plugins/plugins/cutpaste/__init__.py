"""CutPaste anomalies (Li, Sohn, Yoon, Pfister; CVPR 2021): a patch or a thin rotated scar is cut from the image,
colour-jittered and pasted elsewhere. The synthesizer lives in :mod:`.synthesizer`; this package imports nothing
heavy.
"""
