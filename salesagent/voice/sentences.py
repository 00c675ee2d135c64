"""Sentence streaming: the growing text of a streamed reply in, whole sentences out.

A sentence is released once the next one has started (or the text is final), so "$12."
waiting for its "5" is never cut, and sentencex's rules keep "Dr. Lee", "e.g.", "12.5" and
URLs whole. With `first_clause_words`, the reply's first piece may be a clause: once it
holds that many words and a comma, semicolon or colon is followed by the next word, it is
released alone, so speech starts before a long first sentence is written. A first sentence
with no such mark (a 0.5B model writes 20-word ones: "This is about a special offer for a
round of live online classes with ...") may instead be cut before a word that opens a
phrase ("and", "for", "to", "that", "because", ...) once as many words are written, where a
speaker may pause too. `speech_chunks`
then joins very short sentences ("Sure.") to the one after them, so speech never starts
with a clipped word on its own.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from sentencex import segment

_CLAUSE_END = re.compile(r"[,;:]\s+(?=\S)")
# Before a conjunction or preposition that opens a phrase, itself written out (followed by a
# space), so "for" is not the start of "forward".
_PHRASE_START = re.compile(
    r"\s+(?=(?:and|but|or|so|for|with|to|that|who|which|such|including|because|where|when|"
    r"while|if)\s)",
    re.I,
)


class SentenceSplitter:
    def __init__(self, language: str = "en", first_clause_words: int | None = None):
        self._language = language
        self._clause_words = first_clause_words
        self._done = 0  # characters of the text already released

    def feed(self, text: str, final: bool = False) -> list[str]:
        """The sentences of `text` (the whole reply so far) not released before."""
        pieces = list(segment(self._language, text[self._done :]))
        complete = pieces if final else pieces[:-1]
        if not complete and not final and self._done == 0 and self._clause_words:
            complete = self._first_clause(pieces[0] if pieces else "")
        self._done += sum(len(p) for p in complete)
        return [s for p in complete if (s := p.strip())]

    def _first_clause(self, text: str) -> list[str]:
        for pattern in (_CLAUSE_END, _PHRASE_START):
            for match in pattern.finditer(text):
                if len(text[: match.start()].split()) >= self._clause_words:
                    return [text[: match.end()]]
        return []


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
