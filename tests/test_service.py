"""The turn workflow over real Redis, with LLM faults injected by a scripted client."""

import asyncio

import pytest

from salesagent.platform.sessions import SessionStore
from salesagent.platform.settings import ConversationSettings, LimitsSettings, RedisSettings
from salesagent.sales.catalog import load_catalog
from salesagent.sales.conversation import CustomerIntent, deferral, scripted
from salesagent.sales.service import CallLimitReached, DoNotCall, LLMUnavailable, SalesCallService

CATALOG = load_catalog()
QUESTIONS = CATALOG.qualification_questions


class ScriptedLLM:
    """Plays back fixed replies, one per stream (the last one again once they run out: a
    speculative reply and its rewrite get the same); `fail_after` deltas it raises, as a
    dying replica would."""

    def __init__(
        self, replies, intent="continue", fail_after=None, topic=None, slot=None, cancelled=False
    ):
        self.replies = list(replies)
        self.cancelled = cancelled  # the failure is a cancellation from below, not an error
        self.intent = intent
        self.topic = topic
        self.slot = slot
        self.fail_after = fail_after
        self.closed_early = 0
        self.streams = 0

    async def ready(self):
        return "scripted"

    async def choose(self, messages, choices):
        # The intent request gets the scripted intent (and the topic and slot requests
        # theirs); the others their first choice, which is the "nothing found" answer
        # ("none" fact, "no" push back, "none" topic).
        for label in (self.intent, self.topic, self.slot):
            if label in choices:
                return label
        return choices[0]

    async def stream(self, messages, max_tokens=None):
        self.streams += 1
        words = (self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]).split(" ")
        sent = 0
        try:
            for i, word in enumerate(words):
                if self.fail_after is not None and i == self.fail_after:
                    raise asyncio.CancelledError() if self.cancelled else LLMUnavailable("died")
                sent += 1
                yield word if i == 0 else " " + word
        finally:
            if sent < len(words):
                self.closed_early += 1


@pytest.fixture()
async def store(redis_server):
    s = SessionStore(RedisSettings(url=redis_server.url))
    yield s
    await s.close()


def service(store, llm, **limits):
    return SalesCallService(
        store, llm, load_catalog(), ConversationSettings(), limits=LimitsSettings(**limits)
    )


async def test_turn_stores_customer_and_agent_entries(store):
    svc = service(store, ScriptedLLM(["It runs twelve weeks. Want details? And more text."]))
    call = await svc.start_call("John Doe", "555-010-0100")
    turn = await svc.respond(call.call_id, "What does it cover?")
    assert turn.reply == "It runs twelve weeks. Want details?"
    assert not turn.should_end_call and turn.intent is CustomerIntent.CONTINUE
    history = (await store.get(call.call_id)).history
    assert [(e.speaker, e.text) for e in history[1:]] == [
        ("customer", "What does it cover?"),
        ("agent", "It runs twelve weeks. Want details?"),
    ]


async def test_generation_stops_once_the_reply_is_long_enough(store):
    llm = ScriptedLLM(["One. Two. Three four five six seven."])
    svc = service(store, llm)
    call = await svc.start_call("John", "555-010-0100")
    await svc.respond(call.call_id, "hi")
    assert llm.closed_early == 1


async def test_llm_failure_mid_turn_stores_nothing(store):
    svc = service(store, ScriptedLLM(["This reply will break"], fail_after=2))
    call = await svc.start_call("John", "555-010-0100")
    with pytest.raises(LLMUnavailable):
        await svc.respond(call.call_id, "hello?")
    assert len((await store.get(call.call_id)).history) == 1  # no half-written turn


async def test_a_reply_stream_cancelled_from_below_fails_the_turn_instead_of_hanging_it(store):
    """The speculative reply runs in a task of its own; a stream that ends cancelled (a
    handle's call cancelled under it) must still end the reply: LLMUnavailable, no hang."""
    svc = service(store, ScriptedLLM(["This reply will break"], fail_after=2, cancelled=True))
    call = await svc.start_call("John", "555-010-0100")
    with pytest.raises(LLMUnavailable):
        await asyncio.wait_for(svc.respond(call.call_id, "hello?"), 5)
    assert len((await store.get(call.call_id)).history) == 1


async def test_unusable_output_is_retried_then_replaced(store):
    svc = service(store, ScriptedLLM(["Customer: hi", "Customer: again"]))
    call = await svc.start_call("John", "555-010-0100")
    # Nothing usable twice: while qualifying, the agent asks its next open question.
    assert (await svc.respond(call.call_id, "hello?")).reply == QUESTIONS["background"]


async def test_ending_intent_ends_the_call(store):
    svc = service(store, ScriptedLLM(["Understood, goodbye."], intent="do_not_call"))
    call = await svc.start_call("John", "(555) 010-7788")
    turn = await svc.respond(call.call_id, "Never call me again.")
    assert turn.should_end_call
    ended = await store.get(call.call_id)
    assert not ended.is_active and ended.state.disposition == "do_not_call"
    # The number is on the do-not-call list, however it is written next time.
    with pytest.raises(DoNotCall):
        await svc.start_call("John", "+1 555-010-7788")


async def test_ungrounded_reply_is_regenerated_then_trimmed(store):
    svc = service(store, ScriptedLLM(["It costs $99 today.", "It costs $299. Only 5 weeks left!"]))
    call = await svc.start_call("John", "555-010-0100")
    reply = (await svc.respond(call.call_id, "Tell me about it.")).reply
    assert reply == f"It costs $299. {QUESTIONS['background']}"


async def test_client_hang_up_records_a_disposition(store):
    svc = service(store, ScriptedLLM([]))
    call = await svc.start_call("John", "555-010-0100")
    await svc.end_call(call.call_id)
    assert (await store.get(call.call_id)).state.disposition == "failed"


async def test_a_call_past_its_turn_limit_refuses_turns_and_keeps_its_history(store):
    svc = service(store, ScriptedLLM(["Sure thing.", "Okay then."]), max_turns_per_call=2)
    call = await svc.start_call("John", "555-010-0100")
    await svc.respond(call.call_id, "one")
    await svc.respond(call.call_id, "two")
    with pytest.raises(CallLimitReached, match="limit of 2 turns"):
        await svc.respond(call.call_id, "three")
    session = await store.get(call.call_id)
    assert len(session.history) == 5 and session.is_active


async def test_a_call_past_its_duration_refuses_turns(store):
    svc = service(store, ScriptedLLM(["Sure thing."]), max_call_seconds=0)
    call = await svc.start_call("John", "555-010-0100")
    with pytest.raises(CallLimitReached, match="lasted longer"):
        await svc.respond(call.call_id, "hello?")
    assert len((await store.get(call.call_id)).history) == 1


async def test_phone_numbers_are_stored_in_e164(store):
    svc = service(store, ScriptedLLM([]))
    call = await svc.start_call("John", "(415) 555-2671")
    assert (await store.get(call.call_id)).phone_number == "+14155552671"


class SlowReadingLLM(ScriptedLLM):
    """Reads lines slowly, with `objection` pushed back; records when each request began."""

    def __init__(self, replies, objection=False):
        super().__init__(replies)
        self.objection = objection
        self.events = []

    async def choose(self, messages, choices):
        import asyncio

        self.events.append("read")
        await asyncio.sleep(0.2)
        self.events.append("read done")
        if self.objection and choices == ["no", "yes"]:
            return "yes"
        if self.objection and "relevance" in choices:  # the objection's kind
            return "price"
        return await super().choose(messages, choices)

    async def stream(self, messages, max_tokens=None):
        self.events.append("reply")
        async for delta in super().stream(messages, max_tokens):
            yield delta


async def test_the_reply_is_written_while_the_line_is_read(store):
    llm = SlowReadingLLM(["It covers LLMs and MLOps, live online. Do you code?"])
    svc = service(store, llm)
    call = await svc.start_call("John", "555-010-0100")
    turn = await svc.respond(call.call_id, "What does it cover?")
    assert turn.reply == "It covers LLMs and MLOps, live online. Do you code?"
    assert llm.events.index("reply") < llm.events.index("read done")  # side by side
    assert llm.events.count("reply") == 1  # the speculative reply held: no rewrite


async def test_a_line_that_changes_the_instructions_gets_a_new_reply(store):
    llm = SlowReadingLLM(["Guessed reply, never heard.", "I hear you, it is $299 now."], True)
    svc = service(store, llm)
    call = await svc.start_call("John", "555-010-0100")
    turn = await svc.respond(call.call_id, "That's too expensive.")
    assert turn.reply.startswith("I hear you, it is $299 now.")
    assert llm.events.count("reply") == 2
    assert (await store.get(call.call_id)).state.objections == ["price"]


async def test_an_interrupted_turn_stores_what_was_heard(store):
    svc = service(store, ScriptedLLM(["It runs twelve weeks, live online. Want details?"]))
    call = await svc.start_call("John", "555-010-0100")
    async with svc.turn(call.call_id, "What does it cover?", "test") as turn:
        async for sentence in turn.sentences():
            turn.interrupt(sentence[:14])
            break
    history = (await store.get(call.call_id)).history
    assert (history[-1].text, history[-1].interrupted) == ("It runs twelve", True)
    assert history[-2].text == "What does it cover?" and not history[-2].interrupted


async def test_a_turn_cancelled_before_anything_was_heard_stores_nothing(store):
    import asyncio

    svc = service(store, SlowReadingLLM(["Never heard."]))
    call = await svc.start_call("John", "555-010-0100")

    async def speak():
        async with svc.turn(call.call_id, "Hello?", "test") as turn:
            async for _ in turn.sentences():
                pass

    task = asyncio.ensure_future(speak())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len((await store.get(call.call_id)).history) == 1


async def test_a_busy_lead_is_asked_when_and_the_call_back_is_booked(store):
    llm = ScriptedLLM(["Sure, I'll call you at 5 PM tomorrow."], intent="busy")
    svc = service(store, llm)
    call = await svc.start_call("John Doe", "+1 212 555 0123")  # a New York number
    asked = await svc.respond(call.call_id, "I'm in a meeting, can you call me back?")
    assert asked.reply == CATALOG.agent.call_back_question and not asked.should_end_call
    llm.intent = "continue"  # the time itself reads as carrying on
    booked = await svc.respond(call.call_id, "Tomorrow at 3pm works.")
    assert booked.should_end_call and booked.disposition == "follow_up_booked"
    assert booked.reply.startswith("Great, I'll call you back tomorrow at 3 PM. Thanks, John")
    ended = await store.get(call.call_id)
    follow_up = ended.state.follow_up
    assert follow_up.timezone == "America/New_York" and "T15:00:00-0" in follow_up.at
    assert follow_up.said == "Tomorrow at 3pm works." and not ended.is_active
    assert llm.streams <= 2  # speculative replies only: nothing the model wrote was said


async def test_a_time_in_the_busy_line_books_at_once(store):
    svc = service(store, ScriptedLLM(["Unheard."], intent="busy"))
    call = await svc.start_call("John", "+1 415 555 0100")
    turn = await svc.respond(call.call_id, "Not now, call me Friday at 10:30 am.")
    assert turn.should_end_call and "on Friday at 10:30 AM" in turn.reply
    assert (await store.get(call.call_id)).state.disposition == "follow_up_booked"


async def test_an_approved_answer_is_said_word_for_word(store):
    llm = ScriptedLLM(["Yes, we guarantee you a job afterwards."], topic="job")
    svc = service(store, llm)
    call = await svc.start_call("John", "555-010-0100")
    turn = await svc.respond(call.call_id, "Will this get me a job?")
    assert turn.reply == f"{CATALOG.answers['job'].answer} {QUESTIONS['background']}"
    # A "the team follows up" answer keeps the question for the team; the qualification
    # question just asked is not asked again at once.
    llm.topic = "refund"
    turn = await svc.respond(call.call_id, "Can I get a refund if I drop out?")
    assert turn.reply == CATALOG.answers["refund"].answer
    state = (await store.get(call.call_id)).state
    assert state.open_questions == ["Can I get a refund if I drop out?"]


async def test_a_commitment_the_model_makes_is_replaced_by_the_deferral(store):
    svc = service(store, ScriptedLLM(["Yes, we have a payment plan. It is flexible."]))
    call = await svc.start_call("John", "555-010-0100")
    turn = await svc.respond(call.call_id, "Do you have any scholarships?")
    assert turn.reply == f"{deferral(CATALOG)} {QUESTIONS['background']}"
    state = (await store.get(call.call_id)).state
    assert state.open_questions == ["Do you have any scholarships?"]


@pytest.mark.parametrize(
    ("intent", "said", "line"),
    [
        ("do_not_call", "Stop calling me.", "do_not_call_confirmation"),
        ("voicemail", "You've reached Sam, leave a message.", "voicemail_message"),
    ],
)
async def test_legal_moments_get_the_catalogs_scripted_line(store, intent, said, line):
    svc = service(store, ScriptedLLM(["Thanks for not being called again!"], intent=intent))
    call = await svc.start_call("John Doe", f"555-010-{len(line):04d}")
    turn = await svc.respond(call.call_id, said)
    assert turn.reply == scripted(CATALOG, getattr(CATALOG.agent, line), "John Doe")
    assert turn.should_end_call


async def test_a_voicemail_reading_without_a_greeting_goes_on(store):
    """A 0.5B model read "can you just send me an email?" as a voicemail."""
    svc = service(store, ScriptedLLM(["Sure, I can help."], intent="voicemail"))
    call = await svc.start_call("John Doe", "555-010-0300")
    turn = await svc.respond(call.call_id, "I'm driving, can you just send me an email?")
    assert not turn.should_end_call and turn.intent is CustomerIntent.CONTINUE
    assert turn.reply.startswith(CATALOG.answers["email"].answer)


async def test_a_fact_is_stored_as_its_value_with_its_source(store):
    svc = service(store, ScriptedLLM(["Nice. What is your goal?"], slot="background"))
    call = await svc.start_call("John", "555-010-0100")
    await svc.respond(call.call_id, "I'm a high school math teacher, and I like it.")
    state = (await store.get(call.call_id)).state
    assert state.qualification.background == "high school math teacher"
    assert state.qualification_sources == {
        "background": "I'm a high school math teacher, and I like it."
    }
