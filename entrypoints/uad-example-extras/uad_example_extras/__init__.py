"""Example third-party uad plugin: the ``scratch`` synthesizer and the ``image_tpr_at_fpr`` metric."""
