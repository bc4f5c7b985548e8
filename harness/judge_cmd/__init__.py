"""``harness judge``: judge-only evaluation of models, output files or annotation files."""
