"""Running a sweep: the executor, in-sweep evaluation, preflight checks, tracking, caches."""
