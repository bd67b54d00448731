"""Signal metrics (sample-level AUROC/AP, point-level AUROC with optional smoothing); the metric classes live in
:mod:`.metrics`; this package imports nothing heavy."""
