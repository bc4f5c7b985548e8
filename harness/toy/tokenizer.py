"""The toy world's tokenizer: a small byte-level BPE with a ChatML template.

Digits are split into single tokens before the byte-level step, as modern LLM
tokenizers do, which makes column arithmetic learnable.  There is no BOS;
``<|im_end|>`` is the EOS because generation must stop at the end of a turn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.toy.arith import FILLER, pretrain_lines
from harness.toy.datasets import sft_rows

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, IM_START, IM_END]
VOCAB_SIZE = 384

# ChatML: each message is "<|im_start|>{role}\n{content}<|im_end|>\n"; the
# generation prompt opens an assistant turn.  Any role (system included) works.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def tokenizer_corpus() -> list[str]:
    """Text the BPE merges are learned from: pretraining text plus chat words."""
    chat = []
    for row in sft_rows(seed=0)[:500]:
        for m in row["messages"]:
            chat.append(f"{m['role']}\n{m['content']}\n")
    chat += ["system\nYou are a helpful assistant.\n"] * 20
    return pretrain_lines(2000, seed=0) + chat + FILLER * 20


def train_bpe(vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """Train the raw ``tokenizers`` BPE (deterministic: fixed corpus, no seed)."""
    # Lazy: harness.toy.model imports this module, and `import harness.toy` must not load tokenizers.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    return tok


def build_tokenizer(vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """The transformers tokenizer (pad, eos and chat template set), ready to save."""
    from transformers import PreTrainedTokenizerFast  # lazy: heavy, and only needed to build

    return PreTrainedTokenizerFast(
        tokenizer_object=train_bpe(vocab_size),
        pad_token=PAD,
        eos_token=IM_END,
        additional_special_tokens=[IM_START],
        chat_template=CHAT_TEMPLATE,
        padding_side="right",
        model_max_length=256,
        clean_up_tokenization_spaces=False,
    )
