"""Training with Ray Train: one path for emulators, regressors and the cINN."""
