"""Training: the offline loop, forward passes, stage training, the reference pass, models."""
