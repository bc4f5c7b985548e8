"""Training: the offline loop, the step plan, each batch kind's hooks and forward passes, the reference pass,
per-example and per-step inputs, stage training, models."""
