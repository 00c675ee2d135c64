"""Guardrails: what a sentence of the model's may not say, checked before it is spoken.

Two families of problems (`check` names the first one found):

- Commitments the business did not approve: guarantees, refunds, discounts, payment
  terms, dates and times, and promises to act ("I'll email you"). The service cannot keep
  them, and a bare "yes" to a question about one is the same; so such a sentence is
  replaced by the catalog's deferral, and the lead's question
  goes to the team. The approved answers and scripted lines are said by the service
  itself and are not checked here.
- Role and script hygiene: prompt wording spoken (compared with the prompt's own text),
  a re-introduction after the greeting, the customer's words as the agent's, assistant
  phrases and refusals, statements about the lead that the lead did not make, invented
  small talk, the standard price without the offer, and prices, durations or discounts
  outside the catalog (`grounding`). Such a sentence is
  written again when nothing has been said yet, else dropped.
"""

from __future__ import annotations

import re
from enum import StrEnum

from salesagent.sales.catalog import AnswerKind, Catalog
from salesagent.sales.facts import is_question
from salesagent.sales.grounding import unsupported_facts


class Problem(StrEnum):
    GUARANTEE = "guarantee"
    REFUND = "refund"
    DISCOUNT = "discount"
    PAYMENT_TERMS = "payment_terms"
    DATE_TIME = "date_time"
    PROMISE = "promise"
    AFFIRMATION = "affirmation"  # "Yes, it will." to a question about a commitment
    UNSUPPORTED = "unsupported"  # a price, duration or discount not in the catalog
    PRICE_WITHOUT_OFFER = "price_without_offer"  # the standard price, and no word of the offer
    OFF_SCRIPT = "off_script"  # invented small talk: the weather, the agent's own life
    INSTRUCTIONS = "instructions"
    REINTRODUCTION = "reintroduction"
    CUSTOMER_WORDS = "customer_words"
    ASSISTANT = "assistant"
    REFUSAL = "refusal"
    LEAD_CLAIM = "lead_claim"

    @property
    def is_commitment(self) -> bool:
        return self in _COMMITMENTS


_COMMITMENTS = {
    Problem.GUARANTEE,
    Problem.REFUND,
    Problem.DISCOUNT,
    Problem.PAYMENT_TERMS,
    Problem.DATE_TIME,
    Problem.PROMISE,
    Problem.AFFIRMATION,
}

_DAYS = r"(?:mon|tues|wednes|thurs|fri|satur|sun)days?"
_MONTHS = r"(?:january|february|march|april|june|july|august|september|october|november|december)"
_CLAIMS: dict[Problem, re.Pattern] = {
    Problem.GUARANTEE: re.compile(
        r"\bguarantee|\bpromise|\bassure|\bensure (?:that )?you\b|\b100 ?%|"
        r"\bwill (?:definitely|certainly|surely) (?:get|land|find|be)\b|"
        r"\b(?:get|land|find|secure) (?:you )?(?:a|the|your) (?:new |dream )?job\b|"
        r"\bjob placement|\bplacement rate",
        re.I,
    ),
    Problem.REFUND: re.compile(r"\brefund|\bmoney[- ]back|\breimburse|\bcancel any ?time", re.I),
    Problem.DISCOUNT: re.compile(
        r"\bdiscount|\b\d+ ?(?:%|percent) off\b|\bcoupon|\bpromo(?:tional)? code|\bfor free\b|"
        r"\bfree (?:of charge|trial|session|class|lesson|course|month|week)|\bscholarship|"
        r"\bwaive",
        re.I,
    ),
    Problem.PAYMENT_TERMS: re.compile(
        r"\bpayment plans?\b|\binstal?l?ments?\b|\bmonthly (?:payments?|fees?|plan)|"
        r"\bper month\b|\$\s?\d[\d,]* a month\b|\bfinanc(?:e|ing)\b|"
        r"\bpay (?:later|over time|monthly|in parts)\b|\bsplit (?:the|your|it)\b|\bdeposit\b",
        re.I,
    ),
    Problem.DATE_TIME: re.compile(
        r"\b\d{1,2}(?::\d{2})? ?[ap]\.?m\b|"
        r"\b(?:at|by|around) \d{1,2}(?::\d{2})?\b(?! ?(?:weeks?|months?|days?|years?|hours?|%))|"
        rf"\b{_DAYS}\b|\btomorrow\b|\btonight\b|\bnext (?:week|month|year|{_DAYS})\b|"
        rf"\b{_MONTHS}\b|\b(?:starts?|begins?) (?:on|in|next)\b|\bdeadline\b",
        re.I,
    ),
    Problem.PROMISE: re.compile(
        r"\b(?:i|we)(?:'ll| will| am going to|'m going to| are going to|'re going to| can| could)"
        r"\s+(?:\w+\s+)?(?:email|e-mail|send|text|call|mail|message|forward|follow up|"
        r"reach out|get back|schedule|book|sign you up|enroll you|register you|reserve|"
        r"set (?:you )?up|arrange|connect you|transfer you|remind you)\b",
        re.I,
    ),
}

# The lead asks the agent to act ("can you email me", "will you hold the price").
_ASKS_TO_ACT = re.compile(
    r"\b(?:can|could|will|would) you (?:\w+ )?(?:email|e-mail|send|text|call|mail|hold|"
    r"reserve|book|sign me|enroll me|waive|lower|give me)\b",
    re.I,
)
_AFFIRMATIVE = re.compile(
    r"^(?:yes|yeah|yep|sure|absolutely|definitely|of course|certainly|it will|it does|"
    r"we do|we can|we will|i can|i will|you can|you will|that's right|correct)\b",
    re.I,
)
_ASSISTANT = re.compile(
    r"\bhow (?:can|may|could) i (?:help|assist) you\b|\bis there anything else i can\b|"
    r"\bas an ai (?:language )?model\b|\bi'?m (?:here|happy) to (?:help|assist)\b|"
    r"\bfeel free to (?:ask|reach out)\b|\bi hope (?:this|that) helps\b|"
    r"\blet me know if you have any (?:other |more )?questions\b|\bassist you\b",
    re.I,
)
_REFUSAL = re.compile(
    r"^(i'?m sorry|sorry|i apologi[sz]e),? but\b|as an ai (language model|assistant), i\b|"
    r"\bi (can'?t|cannot) (assist|help) with (that|this)\b",
    re.I,
)
# The agent speaking the customer's part: asking the customer's own questions.
_CUSTOMER_VOICE = re.compile(
    r"^(?:how (?:do|can|would) i (?:sign up|enroll|join|pay|register|get started)|"
    r"i(?:'d| would) like to (?:sign up|enroll|join)|i want to (?:sign up|enroll|join)|"
    r"(?:what|how much) (?:does|will) it cost me)\b",
    re.I,
)
# "You're a teacher", "as a developer, ...", "you mentioned that ...": a claim about the
# lead, which must rest on something the lead said.
_ABOUT_LEAD = re.compile(
    r"\byou(?:'re| are) (?:a|an) (?P<a>[a-z -]+?)(?=[.,;!?]|\b(?:and|who|so|but|with)\b|$)|"
    r"^as (?:a|an) (?P<b>[a-z]+(?: [a-z]+){0,2}),|"
    r"\byou (?:said|mentioned|told me)(?: that)? (?P<c>[^.,;!?]+)|"
    r"\byou work (?:as|in|at|for) (?P<d>[^.,;!?]+)|"
    r"\byou (?:found|liked|enjoyed|loved|agreed|decided|chose) (?P<e>[^.,;!?]+)",
    re.I,
)
# Prompt wording in other words: the customer in the third person ("The customer is
# interested in the cost."), or the prompt's instructions turned on the lead ("you can
# offer to call back at a better time, briefly").
_NARRATION = re.compile(
    r"\bthe (?:customer|lead|prospect|caller|user)\b|"
    r"\byou (?:can|should|may|must) (?:offer|pitch|introduce|apologi[sz]e|respect|thank them)\b|"
    r"\bthank them\b|,? briefly[.!]?$",
    re.I,
)
_OFF_SCRIPT = re.compile(
    r"\b(?:weather|sunny|rain(?:y|ing)?|snow(?:y|ing)?|temperature|degrees)\b|"
    r"\b(?:i live|where i am|here in|my (?:wife|husband|kids|family|weekend))\b",
    re.I,
)
_PLAIN = {
    "that",
    "this",
    "with",
    "your",
    "about",
    "they",
    "have",
    "would",
    "like",
    "really",
    "very",
    "just",
    "some",
    "great",
    "good",
    "interested",
    "looking",
    "want",
    "were",
}
RUN_WORDS = 6  # prompt wording: this many words in a row, as in the prompt
ECHO_WORDS = 5  # the customer's words: this many in a row


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9$']+", text.lower())


def _runs(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def _stem(word: str) -> str:
    return word[:5]


class Context:
    """What a sentence is checked against: the catalog, the reply prompt's instruction
    text, and the customer's words (their last line, and all they said in the call)."""

    def __init__(
        self,
        catalog: Catalog,
        instructions: str,
        customer_line: str,
        customer_said: str,
        first_name: str = "",
    ):
        self.catalog = catalog
        self.customer_line = customer_line
        # A question about a commitment (a guarantee, a refund, a payment plan, an act):
        # a bare "yes" to it is that commitment.
        self.asks_commitment = is_question(customer_line) and (
            any(p.search(customer_line) for p in _CLAIMS.values())
            or bool(_ASKS_TO_ACT.search(customer_line))
            or any(
                catalog.answers[t].kind is not AnswerKind.FACT
                for t in catalog.cued_topics(customer_line)
            )
        )
        self.instruction_runs = _runs(words(instructions), RUN_WORDS)
        self.customer_stems = {_stem(w) for w in words(customer_said) if len(w) > 3}
        agent, company = re.escape(catalog.agent.name), re.escape(catalog.agent.company)
        hello = rf"|^(?:hi|hello|hey)\b[^.!?]{{0,20}}\b{re.escape(first_name)}\b" * bool(first_name)
        self.reintroduction = re.compile(
            rf"\b(?:this is|i'?m|i am|my name is|it'?s) {agent}\b|"
            rf"\b{agent},? (?:from|at|with|calling from) |\bcalling (?:you )?from {company}\b"
            + hello,
            re.I,
        )


def check(sentence: str, ctx: Context) -> Problem | None:
    """The first problem that keeps `sentence` from being spoken, or None."""
    if _REFUSAL.search(sentence):
        return Problem.REFUSAL
    if _ASSISTANT.search(sentence):
        return Problem.ASSISTANT
    if ctx.reintroduction.search(sentence):
        return Problem.REINTRODUCTION
    tokens = words(sentence)
    if _runs(tokens, RUN_WORDS) & ctx.instruction_runs or _NARRATION.search(sentence):
        return Problem.INSTRUCTIONS
    if _echoes(tokens, words(ctx.customer_line)) or _CUSTOMER_VOICE.search(sentence.strip()):
        return Problem.CUSTOMER_WORDS
    for problem, pattern in _CLAIMS.items():
        if pattern.search(sentence) and not _approved_offer(problem, sentence, ctx.catalog):
            return problem
    if ctx.asks_commitment and _AFFIRMATIVE.search(sentence.strip()):
        return Problem.AFFIRMATION
    if unsupported_facts(sentence, ctx.catalog):
        return Problem.UNSUPPORTED
    if _standard_price_alone(sentence, ctx.catalog):
        return Problem.PRICE_WITHOUT_OFFER
    if _OFF_SCRIPT.search(sentence):
        return Problem.OFF_SCRIPT
    if _unfounded_about_lead(sentence, ctx):
        return Problem.LEAD_CLAIM
    return None


def _echoes(tokens: list[str], customer: list[str]) -> bool:
    """The sentence repeats the customer's line: a run of its words, or all of a short one."""
    if len(customer) >= ECHO_WORDS and _runs(tokens, ECHO_WORDS) & _runs(customer, ECHO_WORDS):
        return True
    n = len(customer)
    return 3 <= n < ECHO_WORDS and bool(_runs(tokens, n) & {tuple(customer)})


def _approved_offer(problem: Problem, sentence: str, catalog: Catalog) -> bool:
    """The catalog's special offer is the one discount the agent may speak of."""
    p = catalog.product
    return problem is Problem.DISCOUNT and (
        "special offer" in sentence.lower() or f"${p.special_offer_price_usd}" in sentence
    )


def _standard_price_alone(sentence: str, catalog: Catalog) -> bool:
    p = catalog.product
    return f"${p.standard_price_usd}" in sentence and not (
        f"${p.special_offer_price_usd}" in sentence or "offer" in sentence.lower()
    )


def _unfounded_about_lead(sentence: str, ctx: Context) -> bool:
    for match in _ABOUT_LEAD.finditer(sentence):
        claim = next(g for g in match.groups() if g)
        stems = {_stem(w) for w in words(claim) if len(w) > 3 and w not in _PLAIN}
        if stems and not stems & ctx.customer_stems:
            return True
    return False
