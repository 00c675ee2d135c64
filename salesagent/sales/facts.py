"""Lead facts as facts: the short value a customer line states for a qualification slot.

The line reading says which slot a line fills; this module takes the value out of the
line ("high school math teacher", "within three months", "about $300") by patterns over
the customer's own words, never the whole line. A question is never a fact; a short
answer to the agent's own question for the slot is taken as it stands.
"""

from __future__ import annotations

import re

_NUMBER = (
    r"(?:a|an|one|two|three|four|five|six|seven|eight|nine|ten|twelve|a few|a couple of|"
    r"few|couple of|\d+)"
)
_MONTHS = (
    r"(?:january|february|march|april|may|june|july|august|september|october|november|"
    r"december)"
)
_PERIOD = r"(?:week|month|year|spring|summer|fall|autumn|winter|quarter|semester)"
# Where a value ends: a clause break or a conjunction that starts another thought.
_END = r"(?=\s*(?:[.,;!?]|\b(?:and|but|so|because|though|although|who|which)\b|$))"
_SPAN = r"(?P<v>[a-z0-9$'&/ -]+?)" + _END

_PATTERNS: dict[str, list[re.Pattern]] = {
    "background": [
        re.compile(
            r"\b(?:i'?m|i am|i work as|i've been|i have been|i was)\s+(?:a|an)\s+" + _SPAN, re.I
        ),
        re.compile(r"\b(?P<v>i (?:work|worked) (?:in|at|for|on|with) [^.,;!?]+?)" + _END, re.I),
        re.compile(
            r"\b(?P<v>i (?:study|studied|teach|run|manage|lead|own) [^.,;!?]+?)" + _END, re.I
        ),
        re.compile(
            r"\b(?:i'?m|i am) (?P<v>(?:retired|unemployed|self-employed|between jobs))", re.I
        ),
    ],
    "goal": [
        re.compile(
            r"\b(?:i want to|i'd like to|i would like to|i'?m hoping to|i hope to|hoping to|"
            r"my goal is to|i plan to|i'?m looking to|i'?m trying to|i wanna)\s+" + _SPAN,
            re.I,
        ),
        re.compile(r"\bi want (?:a|an)\s+" + _SPAN, re.I),
        re.compile(r"\bmy goal is\s+" + _SPAN, re.I),
    ],
    "timeline": [
        re.compile(
            r"\b(?P<v>(?:right )?now|asap|as soon as possible|immediately|soon|right away|"
            rf"(?:this|next) {_PERIOD}|in {_NUMBER} (?:days?|weeks?|months?|years?)|"
            rf"within (?:the next )?{_NUMBER} (?:days?|weeks?|months?|years?)|"
            rf"(?:in|by|after|from) {_MONTHS}|after the holidays|"
            r"by (?:the )?end of (?:the |this |next )?\w+)\b",
            re.I,
        ),
    ],
    "budget": [
        re.compile(
            r"(?P<v>(?:about |around |maybe |up to |under |less than |no more than |roughly )?"
            r"(?:\$\s?\d[\d,]*(?:\.\d+)?|\d[\d,]* (?:dollars|bucks|usd)|"
            r"(?:a|one|two|three|four|five|six|seven|eight|nine)(?: hundred| thousand)+"
            r"(?: dollars| bucks)?))",
            re.I,
        ),
        re.compile(
            r"\b(?P<v>money is tight|(?:on a )?(?:tight|limited|small|no) budget|"
            r"can'?t afford (?:it|much|that)|not much money|no money)\b",
            re.I,
        ),
    ],
    "decision_maker": [
        re.compile(
            r"\b(?P<v>(?:my|our) (?:boss|manager|wife|husband|partner|spouse|parents?|mom|"
            r"dad|company|employer|team lead|director|hr|finance team))\b",
            re.I,
        ),
        re.compile(
            r"\b(?P<v>i(?:'d| would| will| can)? decide (?:myself|on my own|alone)|"
            r"(?:it's )?my (?:own )?decision|up to me|i decide)\b",
            re.I,
        ),
    ],
}

_QUESTION_START = re.compile(
    r"^\s*(?:what|how|why|when|where|who|which|is|are|do|does|did|can|could|would|will|"
    r"should|may)\b",
    re.I,
)
_FILLER = re.compile(r"^(?:well|um+|uh+|so|yeah|yes|oh|hmm|i guess|probably|maybe)[,.]?\s+", re.I)
MAX_WORDS = 8


def is_question(clause: str) -> bool:
    return clause.rstrip().endswith("?") or bool(_QUESTION_START.search(clause))


def _statements(line: str) -> list[str]:
    """The line's sentences that are not questions."""
    return [s for s in re.split(r"(?<=[.!?])\s+", line.strip()) if s and not is_question(s)]


def extract(slot: str, line: str, answers_question: bool = False) -> str | None:
    """The value `line` states for `slot`, or None when it states none; a short statement
    that `answers_question` (the agent just asked for this slot) is the value itself."""
    for statement in _statements(line):
        for pattern in _PATTERNS.get(slot, ()):
            if match := pattern.search(statement):
                value = " ".join(match.group("v").split()).strip(" -")
                if value and len(value.split()) <= MAX_WORDS:
                    return value
    statements = _statements(line)
    if answers_question and len(statements) == 1 and statements[0] == line.strip():
        value = _FILLER.sub("", line.strip()).rstrip(".!")
        if value and len(value.split()) <= MAX_WORDS:
            return value
    return None
