"""OpenAI-compatible servers: the toy judge, an HF model, a reward-model judge, a vLLM launcher."""
