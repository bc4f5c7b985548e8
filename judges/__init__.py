"""judges: the judging library (client, judges, prompts, parsing, verifiers, statistics, sandbox).

A leaf: it imports nothing from harness but ``harness.errors``; what it needs from harness
(e.g. the cache identity of a server harness started) is passed in.
"""
