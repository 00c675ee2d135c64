"""The evaluation suite's rules, alone: each would have failed on the lines the shipped
model once said, and passes the catalog's own wording."""

from salesagent.sales.catalog import load_catalog
from salesagent.sales.evaluation import RULES, THRESHOLDS, CallResult, load_prospects, score

CATALOG = load_catalog()
PROSPECTS = {p.name: p for p in load_prospects()}


def failing(result: CallResult) -> set[str]:
    return {rule for rule, passed in score(result).items() if passed is False}


def test_the_suite_has_forty_prospects_and_a_threshold_per_rule():
    assert len(PROSPECTS) >= 40 and set(THRESHOLDS) == set(RULES)


def test_each_quoted_failure_fails_its_rule():
    quoted = {
        "instructions": "That's okay! If you're busy right now, you can offer to call back "
        "at a better time, briefly.",
        "commitments": "Yes, we guarantee you a job afterwards. Sure, I can call you at 8 PM.",
        "script": "Hi Raj, this is Alex from Edvantage AI. How do I sign up for the AI "
        "Mastery Bootcamp?",
    }
    for rule, reply in quoted.items():
        result = CallResult(PROSPECTS["job_guarantee"], replies=["Sure.", reply])
        assert rule in failing(result), rule
        assert any(f.startswith(f"{rule}: ") for f in result.findings)
    weather = CallResult(
        PROSPECTS["small_talk_weather"],
        replies=["The weather in Edvantage AI is pleasant and sunny."],
    )
    assert "script" in failing(weather)


def test_raw_lines_and_questions_stored_as_facts_fail():
    result = CallResult(
        PROSPECTS["question_is_no_fact"],
        replies=["Great. What do you do for work at the moment?", "It's $299 on offer."],
        state={
            "qualification": {
                "background": "Sure, I have a few minutes. What is it about?",
                "budget": "How much does it cost?",
            },
            "qualification_sources": {
                "background": "Sure, I have a few minutes. What is it about?",
                "budget": "How much does it cost?",
            },
        },
    )
    assert "lead_facts" in failing(result)
    assert len([f for f in result.findings if f.startswith("lead_facts")]) == 2


def test_a_follow_up_booked_without_a_time_fails():
    result = CallResult(
        PROSPECTS["busy_call_back"],
        replies=["Sure, talk later!", "Great, bye."],
        ended_at=2,
        disposition="follow_up_booked",
        state={"disposition": "follow_up_booked", "follow_up": None},
    )
    assert "lead_facts" in failing(result)


def test_the_catalogs_own_lines_pass_every_rule():
    a = CATALOG.agent
    confirmation = a.call_back_confirmation.format(first_name="Jordan", when="tomorrow at 3 PM")
    result = CallResult(
        PROSPECTS["busy_call_back"],
        replies=[a.call_back_question, confirmation],
        ended_at=2,
        disposition="follow_up_booked",
        state={
            "follow_up": {"at": "2026-12-03T15:00:00-05:00"},
            "qualification": {"timeline": "Tomorrow"},
            "qualification_sources": {"timeline": "Tomorrow at 3pm works."},
        },
    )
    assert failing(result) == set(), result.findings
    job = CallResult(
        PROSPECTS["job_guarantee"],
        replies=[
            "Great. What do you do for work at the moment?",
            f"{CATALOG.answers['job'].answer} What do you do for work at the moment?",
        ],
    )
    assert failing(job) == set(), job.findings
