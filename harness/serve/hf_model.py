"""``harness serve MODEL``: a local HF model (or ``toy://NAME``) behind the chat-completions server.

The responder renders the request's messages with the model's own chat
template (``harness.data.tokenization.chat_ids``, the same call training uses),
generates with transformers, and returns the generated tokens' log-probs under
the model's raw next-token distribution (log-softmax of the logits, before
temperature or top-p), with the ``top_logprobs`` most likely alternatives, as
vLLM's default does.  The end-of-sequence token ends the reply and is not part
of it.  Requests are served one at a time (a lock around ``generate``): one
model, one device.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import torch

from harness.data.tokenization import chat_ids
from harness.errors import HarnessError
from harness.serve.server import ChatResult, ReplyError, Responder, TokenLogprob
from harness.train.models import load_model, load_tokenizer, resolve_model_path

DEFAULT_MAX_TOKENS = 256
MAX_TOP_LOGPROBS = 20  # OpenAI's limit


def _sampling(body: dict) -> dict:
    """transformers generate kwargs from OpenAI params (temperature defaults to 1.0, as OpenAI's)."""
    temperature = float(body.get("temperature") if body.get("temperature") is not None else 1.0)
    if temperature <= 0:
        return {"do_sample": False}
    top_p = float(body.get("top_p") if body.get("top_p") is not None else 1.0)
    return {"do_sample": True, "temperature": temperature, "top_p": top_p}


def _stop_strings(body: dict) -> list[str]:
    stop = body.get("stop")
    return [stop] if isinstance(stop, str) else [s for s in (stop or []) if s]


def _token_logprobs(tokenizer, tokens: list[int], logps: list[torch.Tensor], k: int) -> list[TokenLogprob]:
    """One TokenLogprob per generated token; ``top`` = the k best alternatives plus the token itself."""
    out = []
    for tok_id, step in zip(tokens, logps):
        token = tokenizer.decode([tok_id])
        top: dict[str, float] = {token: float(step[tok_id])}
        if k:
            values, ids = step.topk(k)
            for v, i in zip(values.tolist(), ids.tolist()):
                name = tokenizer.decode([i])
                top[name] = max(top.get(name, float("-inf")), v)  # distinct ids may decode alike
        out.append(TokenLogprob(token, float(step[tok_id]), top))
    return out


def _cut_at_stop(tokenizer, tokens: list[int], stops: list[str]) -> tuple[list[int], str]:
    """Tokens up to the first token whose text completes a stop string; the text before the stop string."""
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    if not stops or not any(s in text for s in stops):
        return tokens, text
    for n in range(1, len(tokens) + 1):
        prefix = tokenizer.decode(tokens[:n], skip_special_tokens=True)
        hits = [prefix.index(s) for s in stops if s in prefix]
        if hits:
            return tokens[:n], prefix[: min(hits)]
    return tokens, text


class HFResponder:
    """Responder over one loaded causal LM and its tokenizer."""

    def __init__(self, model, tokenizer):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self._lock = threading.Lock()

    def __call__(self, body: dict) -> ChatResult:
        try:
            prompt = chat_ids(self.tokenizer, body["messages"], add_generation_prompt=True)
        except (HarnessError, TypeError, KeyError, ValueError) as exc:
            raise ReplyError(400, _error_body(f"cannot render the messages: {exc}")) from exc
        max_new = int(body.get("max_tokens") or body.get("max_completion_tokens") or DEFAULT_MAX_TOKENS)
        k = min(int(body.get("top_logprobs") or 0), MAX_TOP_LOGPROBS)
        with self._lock:
            tokens, logps = self._generate(prompt, max_new, body)
        tokens, text = _cut_at_stop(self.tokenizer, tokens, _stop_strings(body))
        lps = _token_logprobs(self.tokenizer, tokens, logps, k) if body.get("logprobs") else None
        return ChatResult(text.strip(), lps, prompt_tokens=len(prompt), completion_tokens=len(tokens))

    @torch.no_grad()
    def _generate(self, prompt: list[int], max_new: int, body: dict) -> tuple[list[int], list[torch.Tensor]]:
        device = next(self.model.parameters()).device
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        if body.get("seed") is not None:
            torch.manual_seed(int(body["seed"]))
        ids = torch.tensor([prompt], device=device)
        out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new,
                                  eos_token_id=eos, pad_token_id=pad, top_k=None, output_logits=True,
                                  return_dict_in_generate=True, **_sampling(body))
        tokens = out.sequences[0, len(prompt):].tolist()
        logps = [torch.log_softmax(step[0].float(), dim=-1).cpu() for step in out.logits]
        if eos in tokens:  # the reply ends before EOS; EOS is not part of the content
            cut = tokens.index(eos)
            tokens, logps = tokens[:cut], logps[:cut]
        return tokens, logps


def _error_body(message: str) -> str:
    return json.dumps({"error": {"message": message, "type": "invalid_request_error", "code": 400}})


def make_hf_responder(model_uri: str, cache_dir: Path) -> Responder:
    """Load ``model_uri`` (HF directory or id, or ``toy://NAME`` built into ``cache_dir``) for serving."""
    path = resolve_model_path(model_uri, Path(cache_dir))
    model = load_model(path)
    if torch.cuda.is_available():
        model = model.to("cuda")
    return HFResponder(model, load_tokenizer(path))
