"""A tiny Qwen2-style ChatML tokenizer, built locally (no download).

It IS a `Qwen2Tokenizer` (byte-level BPE, Qwen's pre-tokenizer regex): transformers 5 loads any
tokenizer saved next to a `model_type=qwen2` config as `Qwen2Tokenizer`, whatever
tokenizer_config.json says, so building it with that class is what keeps the tokenizer verl loads
(`AutoTokenizer`) identical to the one built here.

The vocabulary holds only what the toy task writes: the ChatML specials `<|im_start|>`,
`<|im_end|>` (and `<|endoftext|>` as padding), `"\\n"` and `" "` as single tokens (verl's Qwen
chat agent loop, `QwenContinuousTokenBuilder`, needs `"\\n"` as one token), the letters of
"user" and "assistant", `+ - * =` and the ten digits -- 27 tokens, so a random model puts about
1/27 of its mass on each digit. There are no merges: every word is spelled letter by letter.
Characters outside the vocabulary are dropped by the tokenizer (byte-level BPE without an unknown
token), so the toy task uses none.
"""

from __future__ import annotations

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END)
# byte-level symbols (GPT-2 byte-to-unicode map): "\n" -> "Ċ", " " -> "Ġ"
NEWLINE_SYMBOL = "\u010a"
SPACE_SYMBOL = "\u0120"
LETTERS = tuple(sorted(set("user") | set("assistant")))
OPERATORS = ("+", "-", "*", "=")
DIGITS = tuple(str(d) for d in range(10))

# ChatML as Qwen2 renders it (no default system prompt: the toy prompts carry none).
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def toy_vocab() -> dict[str, int]:
    """Byte-level symbol -> id, in a fixed order (ids are part of the saved model; never reorder)."""
    tokens = [*SPECIAL_TOKENS, NEWLINE_SYMBOL, SPACE_SYMBOL, *LETTERS, *OPERATORS, *DIGITS]
    return {tok: i for i, tok in enumerate(tokens)}


def build_tokenizer():
    """A `Qwen2Tokenizer` over `toy_vocab()`; pad=`<|endoftext|>`, eos=`<|im_end|>`."""
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    tok = Qwen2Tokenizer(
        vocab=toy_vocab(),
        merges=[],
        unk_token=PAD_TOKEN,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        additional_special_tokens=[IM_START, IM_END],
        model_max_length=512,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok
