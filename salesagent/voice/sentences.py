"""Sentence streaming: the growing text of a streamed reply in, whole sentences out.

A sentence is released once the next one has started (or the text is final), so "$12."
waiting for its "5" is never cut, and sentencex's rules keep "Dr. Lee", "e.g.", "12.5" and
URLs whole. `speech_chunks` then joins very short sentences ("Sure.") to the one after
them, so speech never starts with a clipped word on its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from sentencex import segment


class SentenceSplitter:
    def __init__(self, language: str = "en"):
        self._language = language
        self._done = 0  # characters of the text already released

    def feed(self, text: str, final: bool = False) -> list[str]:
        """The sentences of `text` (the whole reply so far) not released before."""
        pieces = list(segment(self._language, text[self._done :]))
        complete = pieces if final else pieces[:-1]
        self._done += sum(len(p) for p in complete)
        return [s for p in complete if (s := p.strip())]


async def speech_chunks(sentences: AsyncIterator[str], min_chars: int = 20) -> AsyncIterator[str]:
    """Sentences to synthesize: one shorter than `min_chars` waits for the next."""
    short = ""
    async for sentence in sentences:
        chunk = f"{short} {sentence}".strip()
        if len(chunk) < min_chars:
            short = chunk
            continue
        short = ""
        yield chunk
    if short:
        yield short
