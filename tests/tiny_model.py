"""Build a tiny random-weight Qwen2 checkpoint for tests.

Real models are far too big and slow for unit tests, and there is no model hub
to download from. This module builds, in a few seconds and from nothing, a
2-layer Qwen2 causal LM with its own byte-level BPE tokenizer and a ChatML chat
template, so tests can drive the whole vLLM engine path (load, tokenize, chat
template, streaming, guided decoding) on CPU. Its output is gibberish.
"""

from __future__ import annotations

import pathlib
import shutil
import tempfile

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_LINES = [
    "Hi, thanks for taking my call today. Do you have a few minutes to talk?",
    "I am calling about our new plan that could lower your monthly costs.",
    "Sure, I can tell you more about the price, the features and the support.",
    "We offer a free trial for thirty days, and you can cancel at any time.",
    "That sounds interesting, but I am not sure we need it right now.",
    "I understand. Many of our customers felt the same before they tried it.",
    "Could you send me an email with the details and a quote for my team?",
    "Of course. What is the best address to reach you, and when can we follow up?",
    "We are happy with our current provider, so please do not call again.",
    "No problem at all. Thank you for your time, and have a great day. Goodbye!",
    "Great, let us continue. How many people on your team would use the product?",
    "The discount is only available until the end of this month, so act soon.",
]
SALES_TEXT = [line for _ in range(8) for line in _LINES]  # a few KB of text


def _build_tokenizer(out: pathlib.Path) -> tuple[int, int]:
    """Train and save a byte-level BPE tokenizer; return (size, eos id)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(SALES_TEXT, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return len(fast), fast.convert_tokens_to_ids("<|im_end|>")


def build_tiny_qwen(out_dir: pathlib.Path) -> pathlib.Path:
    """Build (once) a tiny random Qwen2 model folder at out_dir and return it."""
    out_dir = pathlib.Path(out_dir)
    if (out_dir / "tiny.done").exists():
        return out_dir
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=".tiny-", dir=out_dir.parent))
    n_tokens, eos_id = _build_tokenizer(tmp)
    config = Qwen2Config(
        vocab_size=(n_tokens // 64 + 1) * 64,  # a bit larger, multiple of 64
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,  # head_dim 32: supported by vLLM's CPU attention
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=0,
        dtype="bfloat16",
    )
    with torch.random.fork_rng():  # fixed weights; caller's RNG left alone
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.generation_config.bos_token_id = None
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = 0
    model.save_pretrained(tmp, safe_serialization=True)
    (tmp / "tiny.done").write_text("ok\n")  # last, so its rename is atomic
    tmp.chmod(0o755)  # mkdtemp makes it owner-only
    if out_dir.exists() and not (out_dir / "tiny.done").exists():
        shutil.rmtree(out_dir)  # a leftover that never finished
    try:
        tmp.rename(out_dir)
    except OSError:  # another process finished first: keep theirs
        shutil.rmtree(tmp)
    return out_dir
