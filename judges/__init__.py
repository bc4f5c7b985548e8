"""judges: the judging side of harness (verifiers, LLM judges, statistics)."""
