"""The agent's reply as a stream of checked sentences, each ready to be spoken.

Three small stages, each an async generator over the one before:

- `model_sentences`: the LLM's streamed text, cut where the model starts another speaker's
  line, tidied (role tags, markup) and split into sentences. Closing it aborts generation.
- `checked`: each sentence passes the guardrails (`guardrails.check`) before it is spoken.
  A commitment the business did not approve is replaced by the catalog's deferral, which
  ends the reply. Any other failing sentence: when it is the first, nothing has been said
  yet and the reply is written again (once); a later one is dropped.
- `with_policy`: the dialog policy on top of the model's words: the AI disclosure first when
  the customer asks, and while qualifying, a reply that asks nothing ends with the next open
  qualification question. It also bounds the reply to `limit` sentences and never leaves
  it empty.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

from salesagent.platform.metrics import Metrics
from salesagent.sales.catalog import Catalog
from salesagent.sales.conversation import (
    FALLBACK_GOODBYE,
    FALLBACK_REPLY,
    Message,
    ai_disclosure,
    asks_if_ai,
    cut_other_speakers,
    deferral,
    tidy,
)
from salesagent.sales.guardrails import Context, check
from salesagent.voice.sentences import SentenceSplitter


async def model_sentences(
    stream: AsyncIterator[str], customer_name: str, first_clause_words: int | None = None
) -> AsyncIterator[str]:
    """Sentences of the model's reply as soon as each is complete (the first one may come
    as a clause and the rest of it, see `SentenceSplitter`)."""
    splitter = SentenceSplitter(first_clause_words=first_clause_words)
    raw = ""
    async with aclosing(stream):
        async for delta in stream:
            raw += delta
            text, over = cut_other_speakers(raw, customer_name)
            for sentence in splitter.feed(tidy(text), final=over):
                yield sentence
            if over:
                return  # leaving the `async with` closes the stream: generation stops
    for sentence in splitter.feed(tidy(cut_other_speakers(raw, customer_name)[0]), final=True):
        yield sentence


async def checked(
    write: Callable[[], AsyncIterator[str]], ctx: Context, metrics: Metrics, attempts: int = 2
) -> AsyncIterator[str]:
    """The sentences of `write()` that may be spoken; `write` is called again for a fresh
    reply when the first sentence of the last one failed."""
    for attempt in range(attempts):
        spoken, clause = 0, ""  # `clause`: a leading clause said, whose sentence goes on
        async with aclosing(write()) as sentences:
            async for sentence in sentences:
                # The rest of a sentence is checked with its clause: the whole claim.
                if (problem := check(f"{clause} {sentence}".strip(), ctx)) is None:
                    spoken += 1
                    clause = "" if ends_sentence(sentence) else sentence
                    yield sentence
                    continue
                metrics.inc("salesagent_guardrail_blocks_total", check=problem.value)
                if problem.is_commitment:
                    yield deferral(ctx.catalog)
                    return  # what the model wrote next would build on the claim
                if spoken == 0 and attempt < attempts - 1:
                    break  # nothing said yet: write the reply again
                clause = ""  # the rest of its sentence is dropped
            else:
                return
        if spoken:
            return


def ends_sentence(piece: str) -> bool:
    """Whether a piece ends a sentence (a leading clause does not)."""
    return piece.rstrip("\"')]\u201d\u2019")[-1:] in (".", "!", "?")


async def with_policy(
    sentences: AsyncIterator[str],
    *,
    customer_line: str,
    catalog: Catalog,
    question: str | None,
    limit: int,
    ends_call: bool,
) -> AsyncIterator[str]:
    """At most `limit` sentences: the disclosure when asked, the model's, and the open
    question in the last place when nothing before it asked one."""
    count, asked = 0, False  # `count`: whole sentences (a leading clause is part of one)
    if asks_if_ai(customer_line):
        yield ai_disclosure(catalog)
        count = 1
    async with aclosing(sentences):
        async for sentence in sentences:
            last = count == limit - 1
            if last and question and not asked and "?" not in sentence:
                sentence = question
            asked = asked or "?" in sentence
            count += ends_sentence(sentence)
            yield sentence
            if count >= limit:
                return  # closing the chain stops the generation
    if ends_call and count == 0:
        yield FALLBACK_GOODBYE
    elif question and not asked and count < limit:
        yield question
    elif count == 0:
        yield FALLBACK_REPLY


def written_reply(
    llm_stream: Callable[[list[Message]], AsyncIterator[str]],
    messages: list[Message],
    customer_name: str,
    ctx: Context,
    metrics: Metrics,
    first_clause_words: int | None = None,
) -> AsyncIterator[str]:
    """The model's checked sentences for `messages`, before the dialog policy."""
    return checked(
        lambda: model_sentences(llm_stream(messages), customer_name, first_clause_words),
        ctx,
        metrics,
    )
