"""3D-PNAS point-cloud anomalies: Perlin-noise regions on the best-fit plane, displaced along the normals."""
