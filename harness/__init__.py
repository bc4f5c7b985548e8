"""harness: post-training experiments on LLMs, from one YAML spec to judged results."""

__version__ = "0.1.0"
