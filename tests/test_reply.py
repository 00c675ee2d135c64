"""The reply's streaming stages, alone: sentences, cleanup, the guardrails, the dialog policy."""

from __future__ import annotations

import asyncio

from salesagent.sales.catalog import load_catalog
from salesagent.sales.conversation import (
    FALLBACK_GOODBYE,
    cut_other_speakers,
    deferral,
    reply_messages,
)
from salesagent.sales.guardrails import Context
from salesagent.sales.reply import checked, model_sentences, with_policy
from salesagent.voice.sentences import SentenceSplitter, speech_chunks

CATALOG = load_catalog()
QUESTION = "What do you do for work at the moment?"
CONTEXT = Context(CATALOG, "Answer briefly and ask about them.", "Price?", "Price?")


async def tokens(text: str, size: int = 3):
    """`text` as a model would stream it: a few characters at a time."""
    for i in range(0, len(text), size):
        yield text[i : i + size]


async def collect(iterator) -> list[str]:
    return [item async for item in iterator]


def split_streamed(text: str) -> list[str]:
    splitter = SentenceSplitter()
    out = []
    for i in range(1, len(text) + 1):
        out += splitter.feed(text[:i])
    return out + splitter.feed(text, final=True)


def test_sentences_keep_prices_titles_abbreviations_decimals_and_urls_whole():
    text = (
        "Dr. Lee teaches it, e.g. vision and LLMs. It costs $299 and takes 12.5 hours a week. "
        "See https://edvantage.ai/bootcamp for more. Great!"
    )
    assert split_streamed(text) == [
        "Dr. Lee teaches it, e.g. vision and LLMs.",
        "It costs $299 and takes 12.5 hours a week.",
        "See https://edvantage.ai/bootcamp for more.",
        "Great!",
    ]


def test_short_pieces_join_the_next_for_speech_and_nothing_is_released_early():
    async def chunks(*sentences):
        async def source():
            for s in sentences:
                yield s

        return await collect(speech_chunks(source()))

    assert asyncio.run(chunks("Sure.", "The course runs twelve weeks.", "Ok.")) == [
        "Sure. The course runs twelve weeks.",
        "Ok.",
    ]
    splitter = SentenceSplitter()
    assert splitter.feed("It costs $12.") == []  # "$12." may go on as "$12.50"
    assert splitter.feed("It costs $12.50 a month. And") == ["It costs $12.50 a month."]


def test_the_first_sentence_may_start_as_a_clause():
    splitter = SentenceSplitter(first_clause_words=4)
    text = "The bootcamp runs twelve weeks, with live classes. It costs $299, all in."
    out = []
    for i in range(1, len(text) + 1):
        out += splitter.feed(text[:i])
    out += splitter.feed(text, final=True)
    # Only the reply's first piece is a clause; "1,000"-style commas never split.
    assert out == [
        "The bootcamp runs twelve weeks,",
        "with live classes.",
        "It costs $299, all in.",
    ]
    assert SentenceSplitter(first_clause_words=2).feed("It has 1,000 hours") == []


def feed_by_character(splitter: SentenceSplitter, text: str) -> list[str]:
    out = []
    for i in range(1, len(text) + 1):
        out += splitter.feed(text[:i])
    return out + splitter.feed(text, final=True)


def test_a_long_first_sentence_without_commas_is_cut_before_a_phrase():
    text = "This is about a special offer for a round of live classes with mentors. And more."
    assert feed_by_character(SentenceSplitter(first_clause_words=5), text) == [
        "This is about a special offer",  # five words or more, then "for" written out
        "for a round of live classes with mentors.",
        "And more.",
    ]
    # Not before "for" in "forward", not under five words, and never without the option.
    assert SentenceSplitter(first_clause_words=5).feed("We really do all look forward") == []
    assert SentenceSplitter(first_clause_words=5).feed("It is a course for ") == []
    assert feed_by_character(SentenceSplitter(), text)[0] == text.split(". ")[0] + "."


async def _rest_of_a_clause(instructions: str) -> list[str]:
    ctx = Context(CATALOG, instructions, "Why?", "Why?")
    pieces = ["Now I will answer objections calmly", "with the facts above.", "Next one."]
    return await collect(checked(lambda: _pieces(pieces), ctx, Counter()))


async def _pieces(pieces: list[str]):
    for piece in pieces:
        yield piece


def test_the_rest_of_a_clause_is_checked_with_it():
    # Each piece passes alone; the whole sentence reads out the prompt, so its rest is dropped.
    said = asyncio.run(_rest_of_a_clause("Then answer objections calmly with the facts above."))
    assert said == ["Now I will answer objections calmly", "Next one."]
    said = asyncio.run(_rest_of_a_clause("Be brief."))
    assert said == ["Now I will answer objections calmly", "with the facts above.", "Next one."]


async def _policy_counts_a_clause_and_its_sentence_once():
    async def source():
        for piece in ["The bootcamp runs twelve weeks,", "with live classes.", "And more."]:
            yield piece

    return await collect(
        with_policy(
            source(),
            customer_line="Ok.",
            catalog=CATALOG,
            question=QUESTION,
            limit=2,
            ends_call=False,
        )
    )


def test_policy_counts_a_clause_and_its_sentence_as_one():
    assert asyncio.run(_policy_counts_a_clause_and_its_sentence_once()) == [
        "The bootcamp runs twelve weeks,",
        "with live classes.",
        QUESTION,
    ]


def test_model_sentences_stop_at_another_speakers_line():
    raw = "Alex: Great question! The course runs 12 weeks.\nCustomer: ok\nAgent: more"
    out = asyncio.run(collect(model_sentences(tokens(raw), "John Doe")))
    assert out == ["Great question!", "The course runs 12 weeks."]
    out = asyncio.run(
        collect(
            model_sentences(tokens("**Assistant:** Sure thing, happy to help.<|im_end|>"), "Jo")
        )
    )
    assert out == ["Sure thing, happy to help."]
    assert cut_other_speakers("Sounds good.\nJohn: what about price?", "John Doe") == (
        "Sounds good.",
        True,
    )


def test_closing_the_sentences_closes_the_model_stream():
    closed = []

    async def stream():
        try:
            text = "One sentence here, long enough. Two sentences here, long enough. Three."
            for word in text.split(" "):
                yield word + " "
        finally:
            closed.append(True)

    async def first_two():
        out = []
        async for sentence in model_sentences(stream(), "Jo"):
            out.append(sentence)
            if len(out) == 2:
                break
        return out

    assert len(asyncio.run(first_two())) == 2
    assert closed == [True]


class Counter:
    def __init__(self):
        self.counts: dict[str, int] = {}

    def inc(self, name, amount=1.0, **labels):
        key = f"{name}{labels}"
        self.counts[key] = self.counts.get(key, 0) + 1

    def observe(self, *a, **k):
        pass

    def set(self, *a, **k):
        pass


def test_an_ungrounded_first_sentence_is_written_again_and_a_later_one_dropped():
    replies = iter(
        [
            "It costs only $99 today, what a deal. Anything else?",
            "It costs $299 on the special offer. It lasts 14 weeks, long enough. Ready to join?",
        ]
    )
    metrics = Counter()

    def write():
        return model_sentences(tokens(next(replies)), "Jo")

    out = asyncio.run(collect(checked(write, CONTEXT, metrics)))
    assert out == ["It costs $299 on the special offer.", "Ready to join?"]
    assert sum(metrics.counts.values()) == 2  # the $99 and the 14 weeks


def test_a_commitment_is_replaced_by_the_deferral_which_ends_the_reply():
    metrics = Counter()
    write = lambda: model_sentences(  # noqa: E731
        tokens("It's a great course. Yes, we have a payment plan for you. It's flexible."), "Jo"
    )
    out = asyncio.run(collect(checked(write, CONTEXT, metrics)))
    assert out == ["It's a great course.", deferral(CATALOG)]
    assert metrics.counts == {"salesagent_guardrail_blocks_total{'check': 'payment_terms'}": 1}


def test_a_refusal_is_never_spoken():
    replies = iter(["I'm sorry, but I can't assist with that.", "I'm sorry, but no."])
    out = asyncio.run(
        collect(checked(lambda: model_sentences(tokens(next(replies)), "Jo"), CONTEXT, Counter()))
    )
    assert out == []


async def policy(sentences, line="Okay.", question=QUESTION, ends=False):
    async def source():
        for s in sentences:
            yield s

    return await collect(
        with_policy(
            source(),
            customer_line=line,
            catalog=CATALOG,
            question=question,
            limit=2,
            ends_call=ends,
        )
    )


def test_policy_asks_the_open_question_last_when_nothing_asked():
    assert asyncio.run(policy(["It covers MLOps.", "And more."])) == ["It covers MLOps.", QUESTION]
    assert asyncio.run(policy(["Do you code already?", "Good."])) == [
        "Do you code already?",
        "Good.",
    ]
    assert asyncio.run(policy(["It covers MLOps."])) == ["It covers MLOps.", QUESTION]
    assert asyncio.run(policy(["It covers MLOps.", "And more."], question=None)) == [
        "It covers MLOps.",
        "And more.",
    ]


def test_policy_discloses_the_ai_first_and_never_leaves_a_reply_empty():
    out = asyncio.run(policy(["Yes, I'm Alex.", "Anything else?"], line="Am I talking to a robot?"))
    assert out[0].startswith("I'm an AI assistant") and len(out) == 2
    assert asyncio.run(policy([], question=None, ends=True)) == [FALLBACK_GOODBYE]
    assert asyncio.run(policy([], question=None)) and asyncio.run(policy([], question=None))[0]


def test_reply_prompt_keeps_its_constant_part_first():
    from salesagent.platform.sessions import Speaker, entry
    from salesagent.sales.call_state import CustomerIntent

    history = [entry(Speaker.CUSTOMER, "Hi")]
    ann = reply_messages(CATALOG, "Ann Lee", history, CustomerIntent.CONTINUE, 4)[0]["content"]
    bob = reply_messages(CATALOG, "Bob Day", history, CustomerIntent.CONTINUE, 4)[0]["content"]
    common = 0
    while ann[common] == bob[common]:
        common += 1
    # Only the name at the very end differs: the prefix cache serves the rest to every call.
    assert ann[common:].startswith("Ann Lee") and common > 0.9 * len(ann)
