"""Point-level metrics for point clouds: AUROC and AUPRO (organised clouds), reading a PointCloudBatch."""
