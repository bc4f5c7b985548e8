"""Running a sweep: the executor, the context its trials share, in-sweep evaluation, preflight checks, tracking."""
