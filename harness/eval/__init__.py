"""Evaluation: suites, their items and outputs files, generation backends, sampled KL."""
