"""Running untrusted Python (model-written code plus its tests) in a sandbox."""
