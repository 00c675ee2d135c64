"""The sales evaluation suite: scripted prospects, run through the API, scored by rules.

    python -m salesagent.sales.evaluation [--url http://127.0.0.1:8000] [--only NAME ...]

Each prospect (salesagent/data/prospects.yaml) holds a call over REST. Rules per call:
- facts: no price, duration or discount outside the catalog in any reply;
- instructions: no reply repeats six words in a row of any instruction the service
  prompts the model with;
- commitments: no sentence outside the catalog's approved and scripted lines makes a
  guarantee, speaks of refunds, discounts, payment terms, dates or times, or promises to
  act (`guardrails`);
- script: no re-introduction, the customer's words, assistant phrases, invented small
  talk or claims about the lead outside the catalog's lines;
- lead_facts: every stored qualification value is short, not a question, and in the
  customer line kept as its source; the disposition is follow_up_booked only with a
  booked time, and a prospect that books one gets it;
- expected: where the prospect sets them, the disposition, words a reply must mention,
  and words a stored lead fact must hold (the model must have read the fact);
- ending: the call ends on the expected line and not before (or never, when none is set);
- qualifies: for calls that last two agent turns, one of those two replies asks an open
  question (before the call ends);
- short: every reply has at most two sentences besides the catalog's scripted lines;
- clean: no role tags or chat markup in any reply;
The report is a Markdown table per prospect plus totals; `THRESHOLDS` are what CI requires.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml
from pydantic import BaseModel

from salesagent.platform.sessions import Speaker, entry
from salesagent.sales.call_state import CallState, CustomerIntent, Stage
from salesagent.sales.catalog import Catalog, load_catalog
from salesagent.sales.conversation import (
    FALLBACK_GOODBYE,
    FALLBACK_REPLY,
    instruction_text,
    reply_messages,
)
from salesagent.sales.facts import is_question
from salesagent.sales.grounding import unsupported_facts
from salesagent.sales.guardrails import Context, Problem, check

API = "/api/v1/sales"
PROSPECTS = Path(__file__).parents[1] / "data" / "prospects.yaml"
RULES = (
    "facts",
    "instructions",
    "commitments",
    "script",
    "lead_facts",
    "ending",
    "qualifies",
    "short",
    "clean",
    "expected",
)
# Share of prospects that must pass each rule. Facts, length and cleanliness are enforced
# by the service itself; ending and qualifying depend on a 0.5B model's judgement.
THRESHOLDS = {
    "facts": 1.0,
    "instructions": 1.0,
    "commitments": 1.0,
    "script": 1.0,
    "lead_facts": 1.0,
    "short": 1.0,
    "clean": 1.0,
    "ending": 0.8,
    "qualifies": 0.6,
    "expected": 0.7,
}

_ROLE_TAG = re.compile(r"(?:^|\s)(?:customer|user|assistant|agent|system)\s*:|<\|", re.I)
_OPEN_QUESTION = re.compile(
    r"\b(what|how|why|which|where|when|tell me|could you share|are you|do you|have you)\b[^?]*\?",
    re.I,
)


class Prospect(BaseModel):
    name: str
    lines: list[str]
    end_at: int | None = None
    disposition: str | None = None
    reply_mentions: dict[int, list[str]] = {}
    # The lead's number starts so (its area code gives the time zone); the rest is random.
    phone_prefix: str = "+1555"
    follow_up: bool = False  # the call books a call-back time
    # Qualification slots and a word their stored value must hold.
    lead_facts: dict[str, str] = {}


@dataclass
class CallResult:
    prospect: Prospect
    replies: list[str] = field(default_factory=list)
    ended_at: int | None = None
    disposition: str | None = None
    state: dict = field(default_factory=dict)
    error: str = ""
    scores: dict[str, bool | None] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)  # what failed, and the line

    @property
    def passed(self) -> bool:
        return not self.error and all(v is not False for v in self.scores.values())


def load_prospects(path: Path = PROSPECTS) -> list[Prospect]:
    return [Prospect.model_validate(p) for p in yaml.safe_load(path.read_text())]


def _own_sentences(reply: str, approved: list[re.Pattern]) -> list[str]:
    """The reply's sentences but for the catalog's approved and scripted ones."""
    return [s for s in split_sentences(reply) if not any(p.fullmatch(s) for p in approved)]


_BLANK = "\x00"  # a field the service fills in (a name, a booked time)


def _approved_sentences(catalog: Catalog) -> list[re.Pattern]:
    """The sentences the business approved word for word, as patterns (a name or a
    booked time filled in)."""
    names = {"agent": catalog.agent.name, "company": catalog.agent.company}
    lines = [
        *catalog.approved_lines(),
        *catalog.qualification_questions.values(),
        FALLBACK_REPLY,
        FALLBACK_GOODBYE,
    ]
    patterns = []
    for line in lines:
        text = line.format(first_name=_BLANK, when=_BLANK, product=catalog.product.name, **names)
        for sentence in split_sentences(" ".join(text.split())):
            patterns.append(re.compile(re.escape(sentence).replace(re.escape(_BLANK), ".+?")))
    return patterns


def split_sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def _instructions(catalog: Catalog) -> str:
    """Every instruction the reply prompt can carry: each stage's and each ending's."""
    history = [entry(Speaker.CUSTOMER, "Hello?")]
    texts = [
        instruction_text(reply_messages(catalog, "X", history, intent, 4, CallState(stage=stage)))
        for stage in Stage
        for intent in CustomerIntent
    ]
    return "\n".join(dict.fromkeys(texts))


def _sentence_findings(
    result: CallResult, catalog: Catalog, approved: list[re.Pattern]
) -> dict[str, list[str]]:
    """Each reply sentence the guardrails would not have let through, by rule."""
    instructions = _instructions(catalog)
    found: dict[str, list[str]] = {"instructions": [], "commitments": [], "script": []}
    said = ""
    for line, reply in zip(result.prospect.lines, result.replies, strict=False):
        said += f" {line}"
        ctx = Context(catalog, instructions, line, said, "Jordan")
        for sentence in _own_sentences(reply, approved):
            problem = check(sentence, ctx)
            if problem in (None, Problem.UNSUPPORTED):
                continue  # numbers are the facts rule's
            rule = (
                "instructions"
                if problem is Problem.INSTRUCTIONS
                else "commitments"
                if problem.is_commitment
                else "script"
            )
            found[rule].append(f"{sentence!r} ({problem.value})")
    return found


def _lead_fact_findings(result: CallResult) -> list[str]:
    """Stored facts that are not facts, and follow-ups that are not there."""
    p, state = result.prospect, result.state
    found = []
    qualification = state.get("qualification", {})
    sources = state.get("qualification_sources", {})
    for slot, value in qualification.items():
        if not value:
            continue
        source = sources.get(slot, "")
        if (
            len(value.split()) > 8
            or is_question(value)
            or source not in p.lines
            or value.lower() not in source.lower()
        ):
            found.append(f"{slot} = {value!r} (from {source!r})")
    follow_up = state.get("follow_up")
    if (result.disposition == "follow_up_booked") != bool(follow_up) and result.ended_at:
        found.append(f"disposition {result.disposition} with follow_up {follow_up}")
    if p.follow_up and not (follow_up and follow_up.get("at")):
        found.append("no call-back time booked")
    return found


def score(result: CallResult) -> dict[str, bool | None]:
    """Each rule: True (passed), False (failed) or None (does not apply to this call);
    what failed goes to `result.findings`."""
    p, replies = result.prospect, result.replies
    catalog = load_catalog()
    expected: list[bool] = []
    if p.disposition:
        expected.append(result.disposition == p.disposition)
    for line, words in p.reply_mentions.items():
        reply = replies[line - 1] if len(replies) >= line else ""
        expected.append(any(w.lower() in reply.lower() for w in words))
    qualification = result.state.get("qualification", {})
    for slot, word in p.lead_facts.items():
        expected.append(word.lower() in (qualification.get(slot) or "").lower())
    first_two = replies[:2]
    approved = _approved_sentences(catalog)
    sentences = _sentence_findings(result, catalog, approved)
    lead_facts = _lead_fact_findings(result)
    result.findings = [
        f"{rule}: {finding}" for rule, items in sentences.items() for finding in items
    ] + [f"lead_facts: {finding}" for finding in lead_facts]
    return {
        "facts": not any(unsupported_facts(r, catalog) for r in replies),
        "instructions": not sentences["instructions"],
        "commitments": not sentences["commitments"],
        "script": not sentences["script"],
        "lead_facts": not lead_facts,
        "ending": result.ended_at == p.end_at,
        "qualifies": (
            any(_OPEN_QUESTION.search(r) for r in first_two)
            if len(first_two) == 2 and (p.end_at is None or p.end_at > 2)
            else None
        ),
        # The length of the catalog's scripted lines is the business's choice.
        "short": all(len(_own_sentences(r, approved)) <= 2 for r in replies),
        "clean": not any(_ROLE_TAG.search(r) for r in replies),
        "expected": all(expected) if expected else None,
    }


async def run_prospect(client: httpx.AsyncClient, prospect: Prospect) -> CallResult:
    result = CallResult(prospect)
    try:
        r = await client.post(
            f"{API}/start-call",
            # A fresh number each run: a prospect who asks to be removed blocks its number.
            json={
                "phone_number": prospect.phone_prefix
                + f"{uuid.uuid4().int % 10**7:07d}"[: 12 - len(prospect.phone_prefix)],
                "customer_name": "Jordan Smith",
            },
        )
        r.raise_for_status()
        call_id = r.json()["call_id"]
        for n, line in enumerate(prospect.lines, start=1):
            r = await client.post(f"{API}/respond/{call_id}", json={"message": line})
            r.raise_for_status()
            result.replies.append(r.json()["reply"])
            if r.json()["should_end_call"]:
                result.ended_at = n
                break
        state = (await client.get(f"{API}/conversation/{call_id}")).json().get("state", {})
        result.state = state
        result.disposition = state.get("disposition")
    except httpx.HTTPError as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:200]
    result.scores = score(result)
    return result


async def run_suite(
    base_url: str, prospects: list[Prospect], concurrency: int = 4, timeout_s: float = 180
) -> list[CallResult]:
    """Calls run `concurrency` at a time (vLLM batches them); each request is bounded."""
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s) as client:

        async def one(prospect: Prospect) -> CallResult:
            async with limit:
                return await run_prospect(client, prospect)

        return await asyncio.gather(*(one(p) for p in prospects))


def totals(results: list[CallResult]) -> dict[str, tuple[int, int]]:
    """{rule: (passed, applicable)}."""
    out = {}
    for rule in RULES:
        applicable = [r.scores[rule] for r in results if r.scores.get(rule) is not None]
        out[rule] = (sum(applicable), len(applicable))
    return out


def failed_thresholds(results: list[CallResult]) -> list[str]:
    failures = [f"{r.prospect.name}: {r.error}" for r in results if r.error]
    for rule, (passed, applicable) in totals(results).items():
        if applicable and passed / applicable < THRESHOLDS[rule]:
            failures.append(f"{rule}: {passed}/{applicable} < {THRESHOLDS[rule]:.0%}")
    return failures


def report(results: list[CallResult]) -> str:
    mark = {True: "pass", False: "FAIL", None: "-"}
    rows = [
        "| prospect | " + " | ".join(RULES) + " | ended at | disposition |",
        "|---" * (len(RULES) + 3) + "|",
    ]
    for r in results:
        cells = [mark[r.scores.get(rule)] for rule in RULES]
        rows.append(
            f"| {r.prospect.name} | "
            + " | ".join(cells)
            + f" | {r.ended_at or '-'} | {r.disposition or '-'} |"
        )
    summary = ", ".join(f"{rule} {p}/{n}" for rule, (p, n) in totals(results).items())
    passed = sum(r.passed for r in results)
    details = [
        f"- {r.prospect.name}: "
        + (
            r.error
            or " / ".join(
                f"{line!r} -> {reply!r}"
                for line, reply in zip(r.prospect.lines, r.replies, strict=False)
            )
        )
        + "".join(f"\n  - {finding}" for finding in r.findings)
        for r in results
        if not r.passed
    ]
    failed = "\n\nFailed calls:\n" + "\n".join(details) if details else ""
    return (
        "\n".join(rows)
        + f"\n\n{passed}/{len(results)} prospects pass every rule; {summary}\n"
        + failed
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the sales evaluation suite.")
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--only", nargs="*", help="prospect names to run")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--out", type=Path, help="write the Markdown report here too")
    args = parser.parse_args()

    prospects = [p for p in load_prospects() if not args.only or p.name in args.only]
    results = asyncio.run(run_suite(args.url, prospects, args.concurrency))
    text = report(results)
    print(text)
    if args.out:
        args.out.write_text(text)
    failures = failed_thresholds(results)
    print("thresholds met" if not failures else "below threshold: " + "; ".join(failures))
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
