"""The call workflow: start a call, take a customer turn (text or speech), read a conversation.

Plain async code over a `SessionStore` and clients of the LLM, STT and TTS deployments;
the ingress maps its exceptions to HTTP statuses and WebSocket messages.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from time import perf_counter
from typing import Protocol

import numpy as np

from salesagent.platform.capacity import AtCapacity
from salesagent.platform.metrics import Metrics, NoMetrics, timed
from salesagent.platform.phone import normalize_phone
from salesagent.platform.sessions import CallSession, HistoryEntry, SessionStore, Speaker, entry
from salesagent.platform.settings import AudioSettings, ConversationSettings, LimitsSettings
from salesagent.sales.call_state import (
    CallState,
    Disposition,
    LineReading,
    Slot,
    Stage,
    apply,
    disposition_for,
    next_question,
)
from salesagent.sales.catalog import AnswerKind, Catalog
from salesagent.sales.conversation import (
    CustomerIntent,
    Message,
    asks_if_ai,
    deferral,
    greeting,
    instruction_text,
    reading_from,
    reading_requests,
    reply_messages,
    scripted,
)
from salesagent.sales.follow_up import follow_up_for, spoken
from salesagent.sales.guardrails import Context
from salesagent.sales.reply import ends_sentence, with_policy, written_reply
from salesagent.voice.audio import decode_audio
from salesagent.voice.stt import Transcript


class LLMUnavailable(Exception):
    """The LLM deployment is not ready, timed out or failed."""


class STTUnavailable(Exception):
    """The STT deployment is not ready or did not answer in time."""


class STTFailed(Exception):
    """The STT engine raised while transcribing."""


class NoSpeech(Exception):
    """The audio decoded, but nothing was said in it."""


class DoNotCall(Exception):
    """The number asked not to be called again; a new call to it is refused."""


class TTSFailed(Exception):
    """The TTS deployment failed or is unavailable; callers fall back to text."""


class CallLimitReached(Exception):
    """The call has had its most turns or lasted its longest; a new call is needed."""


class LLMClient(Protocol):
    def stream(
        self, messages: list[Message], max_tokens: int | None = None
    ) -> AsyncIterator[str]: ...

    async def choose(self, messages: list[Message], choices: list[str]) -> str: ...

    async def ready(self) -> str: ...


class STTClient(Protocol):
    async def transcribe(self, samples: np.ndarray) -> Transcript: ...

    async def ready(self) -> str: ...


class TTSClient(Protocol):
    async def synthesize(self, text: str) -> bytes: ...


@dataclass(frozen=True)
class Turn:
    reply: str
    should_end_call: bool
    intent: CustomerIntent
    disposition: Disposition | None = None


class SalesCallService:
    def __init__(
        self,
        store: SessionStore,
        llm: LLMClient,
        catalog: Catalog,
        settings: ConversationSettings,
        stt: STTClient | None = None,
        tts: TTSClient | None = None,
        audio: AudioSettings | None = None,
        metrics: Metrics | None = None,
        limits: LimitsSettings | None = None,
        capacity: Callable[[], Awaitable[int | None]] | None = None,
    ):
        self.store = store
        self.llm = llm
        self.catalog = catalog
        self.settings = settings
        self.stt = stt
        self.tts = tts
        self.audio = audio or AudioSettings()
        self.metrics = metrics or NoMetrics()
        self.limits = limits or LimitsSettings()
        # The calls the fleet holds now (None: no admission control), read per new call.
        self.capacity = capacity

    async def start_call(
        self, customer_name: str, phone_number: str, owner: str = "", inbound: bool = False
    ) -> CallSession:
        """A new call to `phone_number` (stored in E.164), owned by API key id `owner`; an
        `inbound` one (the lead called us) opens with the catalog's inbound line. An
        outbound call is admitted only while the fleet has room (else AtCapacity); a lead
        calling in is always answered."""
        phone_number = normalize_phone(phone_number)
        if await self.store.is_do_not_call(phone_number):
            raise DoNotCall(f"{phone_number} asked not to be called again")
        await self.llm.ready()  # a call the agent cannot hold is refused up front (503)
        opening = (
            scripted(self.catalog, self.catalog.agent.inbound_opening_line)
            if inbound
            else greeting(self.catalog, customer_name)
        )
        capacity = await self.capacity() if self.capacity and not inbound else None
        try:
            session = await self.store.create(customer_name, phone_number, opening, owner, capacity)
        except AtCapacity:
            self.metrics.inc("salesagent_calls_refused_total")
            raise
        self.metrics.inc("salesagent_calls_started_total")
        await self._count_active_calls()
        return session

    async def respond(self, call_id: str, message: str, channel: str = "rest") -> Turn:
        """One whole customer turn (REST and the contract's WebSocket): the reply's
        sentences joined, stored with the customer's line."""
        async with self.turn(call_id, message, channel) as turn:
            async for _sentence in turn.sentences():
                pass
        return turn.result

    @asynccontextmanager
    async def turn(self, call_id: str, message: str, channel: str) -> AsyncIterator[AgentTurn]:
        """A customer turn in progress, holding the call's turn lock. The caller takes the
        reply sentence by sentence from `turn.sentences()` and says what the customer heard
        (`turn.delivered`, `turn.interrupt`). On exit the turn is stored in one write: the
        customer's line and the agent's line as said (or as heard, marked interrupted).
        When it fails or is cancelled before anything reached the customer, nothing is
        stored."""
        started = perf_counter()
        await self.llm.ready()  # fail fast (503) rather than wait out a turn's timeout
        async with self.store.turn_lock(call_id):
            session = self._within_limits(await self.store.get_active(call_id))
            turn = AgentTurn(self, session, message)
            try:
                yield turn
            except BaseException:
                await turn.close()
                if turn.reached:  # the reply reached the customer: what they heard is history
                    with suppress(Exception):
                        await asyncio.shield(turn.store(interrupted=True))
                raise
            await turn.close()
            await turn.store()
        self.metrics.observe(
            "salesagent_turn_duration_seconds", perf_counter() - started, channel=channel
        )

    async def _read(self, history: list[HistoryEntry]) -> LineReading:
        """Intent, qualification fact, objection and the approved answer's topic of the
        customer's line: short guided choices sent together, so vLLM batches them."""
        with timed(self.metrics, "llm_intent"):
            answers = await asyncio.gather(
                *(
                    self.llm.choose(m, choices) if len(choices) > 1 else _decided(choices[0])
                    for m, choices in reading_requests(history, self.catalog)
                )
            )
        return reading_from(answers, history[-1].text)

    def _within_limits(self, session: CallSession) -> CallSession:
        turns = sum(1 for e in session.history if e.speaker is Speaker.CUSTOMER)
        if turns >= self.limits.max_turns_per_call:
            raise CallLimitReached(
                f"Call has reached its limit of {self.limits.max_turns_per_call} turns; "
                "start a new call"
            )
        started = datetime.fromisoformat(session.start_time)
        if (datetime.now(UTC) - started).total_seconds() > self.limits.max_call_seconds:
            raise CallLimitReached(
                f"Call has lasted longer than {self.limits.max_call_seconds:.0f} s; "
                "start a new call"
            )
        return session

    async def conversation(self, call_id: str) -> CallSession:
        return await self.store.get(call_id)

    async def hear(self, call_id: str, audio: bytes) -> str:
        """The customer's words in an audio file or message, for an active call.

        Raises AudioError (bad input), CallNotFound, LLMUnavailable, STTUnavailable,
        STTFailed or NoSpeech; nothing is stored.
        """
        with timed(self.metrics, "audio_decode"):
            decoded = await asyncio.to_thread(
                decode_audio,
                audio,
                max_bytes=self.audio.max_bytes,
                max_seconds=self.audio.max_seconds,
            )
        return (await self.transcribe(call_id, decoded.samples)).text

    async def transcribe(self, call_id: str, samples: np.ndarray) -> Transcript:
        """The customer's words in 16 kHz samples, for an active call; NoSpeech if none."""
        # 404 (or the call's limits) before spending STT time.
        self._within_limits(await self.store.get_active(call_id))
        await self.llm.ready()  # no point transcribing a turn nobody can answer
        transcript = await self.stt.transcribe(samples)
        text = transcript.text.strip()
        if not text:
            raise NoSpeech("No speech was recognized in the audio")
        return replace(transcript, text=text)

    async def speak(self, text: str) -> bytes:
        """The agent's line as WAV bytes; raises TTSFailed."""
        return await self.tts.synthesize(text)

    async def end_call(
        self,
        call_id: str,
        disposition: Disposition | None = None,
        agent_line: str | None = None,
    ) -> None:
        """The client hung up (or the carrier says how the call went): end the call, with
        its disposition, the one given or the one the call's state implies; `agent_line`
        is a scripted line the agent said last (a voicemail message)."""
        session = await self.store.get_active(call_id)
        disposition = disposition or disposition_for(session.state, None)
        state = session.state.model_copy(update={"disposition": disposition})
        entries = [entry(Speaker.AGENT, agent_line)] if agent_line else []
        await self.store.append_turn(call_id, entries, end_call=True, state=state)
        await self._ended(disposition)

    async def opt_out(self, call_id: str, how: str) -> str:
        """The lead asked, by other means than words (`how`: "pressed 9"), not to be called
        again: the number goes on the do-not-call list and the call ends; returns the
        scripted confirmation the agent says (stored as said)."""
        confirmation = scripted(self.catalog, self.catalog.agent.do_not_call_confirmation)
        async with self.store.turn_lock(call_id):
            session = await self.store.get_active(call_id)
            state = session.state.model_copy(update={"disposition": Disposition.DO_NOT_CALL})
            request = entry(Speaker.CUSTOMER, f"({how}: do not call me again)")
            await self.store.append_turn(
                call_id,
                [request, entry(Speaker.AGENT, confirmation)],
                end_call=True,
                state=state,
                do_not_call=session.phone_number,
            )
        await self._ended(Disposition.DO_NOT_CALL)
        return confirmation

    async def _ended(self, disposition: Disposition) -> None:
        self.metrics.inc("salesagent_calls_ended_total", outcome=disposition.value)
        await self._count_active_calls()

    async def _count_active_calls(self) -> None:
        self.metrics.set("salesagent_active_calls", await self.store.active_count())


class AgentTurn:
    """One turn's reply in flight. The line reading and a speculative reply start at once:
    the reply is written on the guess that the line changes nothing in its instructions
    (the customer carries on), and its sentences are held until the reading is in. When
    the reading changes the instructions (an objection, an ending, a new stage), the
    speculative reply is dropped unheard and written again."""

    def __init__(self, service: SalesCallService, session: CallSession, message: str):
        self._service = service
        self._session = session
        self.customer = entry(Speaker.CUSTOMER, message)
        self.history = [*session.history, self.customer]
        self.spoken: list[str] = []  # sentences handed out, in order
        self.heard = ""  # what the customer heard so far
        self.reached = False  # some of the reply was sent to the customer
        self.interrupted = False
        self.reading: LineReading | None = None
        self.state: CallState | None = None
        self.result: Turn | None = None
        self.read_at: float | None = None  # when the line reading came in (monotonic)
        self.rewritten = False  # the reading changed the reply's instructions
        self.worded_by = "model"  # or "catalog": the catalog's words, no model reply
        self.ends = False  # the reply ends the call
        self._reading = asyncio.ensure_future(service._read(self.history))
        guess = LineReading(intent=CustomerIntent.CONTINUE)
        self._guess = self._messages(guess)
        self._speculative = _Prefetch(
            self._written(self._guess), service.settings.max_reply_sentences
        )

    def _messages(self, reading: LineReading) -> list[Message]:
        """The reply prompt, from the state as the line leaves it but for a fact it gives:
        the line itself is in the history, and leaving the fact out of the instructions
        (facts and stage) keeps the speculative reply whenever the line only gives a fact.
        The stored state has the fact; the next reply's instructions use it."""
        settings = self._service.settings
        without_fact = reading.model_copy(update={"slot": Slot.NONE})
        prompt_state = apply(self._session.state, without_fact, self.customer.text)
        return reply_messages(
            self._service.catalog,
            self._session.customer_name,
            self.history,
            reading.intent,
            settings.prompt_history_entries,
            prompt_state,
        )

    def _written(self, messages: list[Message]) -> AsyncIterator[str]:
        service, line = self._service, self.customer.text
        # The disclosure opens a reply by itself, and a line about a topic of the approved
        # answers gets whole sentences only: a clause is spoken before the rest of its
        # sentence is checked. Otherwise speech may start with a clause.
        whole = asks_if_ai(line) or service.catalog.cued_topics(line)
        said = " ".join(e.text for e in self.history if e.speaker is Speaker.CUSTOMER)
        return written_reply(
            service.llm.stream,
            messages,
            self._session.customer_name,
            Context(
                service.catalog,
                instruction_text(messages),
                line,
                said,
                self._session.customer_name.split(" ")[0],
            ),
            service.metrics,
            None if whole else service.settings.first_clause_words or None,
        )

    def _agent_asked(self) -> str:
        """The agent's line the customer answers."""
        agent = [e.text for e in self._session.history if e.speaker is Speaker.AGENT]
        return agent[-1] if agent else ""

    def _scripted(self, reading: LineReading) -> list[str] | None:
        """The reply's lines when the catalog words them (else None: the model writes it):
        the do-not-call confirmation, the voicemail message, call-back scheduling, and an
        approved answer. Books the call-back, and keeps a question for the team."""
        service, line = self._service, self.customer.text
        catalog, agent = service.catalog, service.catalog.agent
        name = self._session.customer_name
        if reading.intent is CustomerIntent.DO_NOT_CALL:
            return [scripted(catalog, agent.do_not_call_confirmation, name)]
        if reading.intent is CustomerIntent.VOICEMAIL:
            return [scripted(catalog, agent.voicemail_message, name)]
        if reading.intent.ends_call:
            return None
        question = scripted(catalog, agent.call_back_question, name)
        answer = catalog.answers.get(reading.topic or "")
        if reading.intent is CustomerIntent.BUSY or self._agent_asked() == question:
            follow_up = follow_up_for(
                line, self._session.phone_number, service.settings.default_timezone
            )
            if follow_up:
                self.state = self.state.model_copy(
                    update={"follow_up": follow_up, "stage": Stage.CLOSING}
                )
                self.state.disposition = Disposition.FOLLOW_UP_BOOKED
                self.ends = True
                when = spoken(follow_up)
                return [scripted(catalog, agent.call_back_confirmation, name, when=when)]
            if reading.intent is CustomerIntent.BUSY:
                return [answer.answer, question] if answer else [question]
        if answer is None:
            return None
        if answer.kind is AnswerKind.FOLLOW_UP:
            self._keep_question()
        return [answer.answer]

    def _keep_question(self) -> None:
        questions = [*self.state.open_questions, self.customer.text]
        self.state = self.state.model_copy(update={"open_questions": questions})

    async def sentences(self) -> AsyncIterator[str]:
        """The reply's checked sentences, each as soon as it may be spoken."""
        service, catalog = self._service, self._service.catalog
        self.reading = reading = await self._reading
        self.read_at = time.monotonic()
        questions = catalog.qualification_questions
        asked = next((Slot(s) for s, q in questions.items() if q in self._agent_asked()), Slot.NONE)
        self.state = apply(self._session.state, reading, self.customer.text, asked)
        self.ends = reading.intent.ends_call
        lines = self._scripted(reading)
        if lines is not None:
            await self._speculative.cancel()
            self.worded_by = "catalog"
            written = _lines(lines)
        elif (messages := self._messages(reading)) == self._guess:
            written = self._speculative.items()
        else:
            service.metrics.inc("salesagent_reply_restarts_total")
            self.rewritten = True
            await self._speculative.cancel()
            written = self._written(messages)
        question = None if self.ends else next_question(self.state, questions)
        if question and question in self._agent_asked():
            question = None  # asked just now: the lead chose to ask something else first
        source = with_policy(  # a scripted question (when to call back) asks no other
            written,
            customer_line=self.customer.text,
            catalog=catalog,
            question=question,
            limit=service.settings.max_reply_sentences,
            ends_call=self.ends,
        )
        deferred = deferral(catalog)
        async with aclosing(source):
            async for sentence in source:
                if sentence == deferred:
                    self._keep_question()
                self.spoken.append(sentence)
                yield sentence

    @property
    def reply(self) -> str:
        return " ".join(self.spoken)

    def delivered(self, heard: str) -> None:
        """The customer has heard the reply up to `heard` (its text so far)."""
        self.heard, self.reached = heard, True

    def interrupt(self, heard: str) -> None:
        """The customer spoke over the agent after hearing `heard`."""
        self.heard, self.interrupted, self.reached = heard, True, True

    async def close(self) -> None:
        await self._speculative.cancel()
        if not self._reading.done():
            self._reading.cancel()
            with suppress(BaseException):
                await self._reading

    async def store(self, interrupted: bool = False) -> None:
        """The turn, stored whole: as said, or as far as heard when cut short."""
        interrupted = interrupted or self.interrupted
        said = self.heard if interrupted else self.reply
        reading = self.reading or LineReading(intent=CustomerIntent.CONTINUE)
        state = self.state or apply(self._session.state, reading, self.customer.text)
        ends = self.ends and not interrupted
        if not ends and state.disposition:
            state = state.model_copy(update={"disposition": None})
        service = self._service
        agent = [entry(Speaker.AGENT, said, interrupted=interrupted)] if said else []
        await service.store.append_turn(
            self._session.call_id,
            [self.customer, *agent],
            end_call=ends,
            state=state,
            do_not_call=self._session.phone_number
            if reading.intent is CustomerIntent.DO_NOT_CALL
            else "",
        )
        self.result = Turn(
            reply=said,
            should_end_call=ends,
            intent=reading.intent,
            disposition=state.disposition if ends else None,
        )
        if interrupted:
            service.metrics.inc("salesagent_interruptions_total")
        if self.result.disposition:
            await service._ended(self.result.disposition)


async def _decided(choice: str) -> str:
    return choice


async def _lines(lines: list[str]) -> AsyncIterator[str]:
    for line in lines:
        yield line


class _Prefetch:
    """Runs a reply's sentences ahead in a task, so the speculative reply is written while
    the line is being read: at most `limit` sentences (no reply uses more; a leading clause
    is part of its sentence), then the source is closed, which aborts its generation, as
    `cancel` does."""

    def __init__(self, source: AsyncIterator[str], limit: int):
        self._queue: asyncio.Queue = asyncio.Queue()
        self._cancelled = False
        self._task = asyncio.ensure_future(self._run(source, limit))

    async def _run(self, source: AsyncIterator[str], limit: int) -> None:
        # However the source ends, the consumer hears of it: a reply that waited for an
        # end nobody sent would hold the call's turn for good.
        end: BaseException = StopAsyncIteration()
        try:
            async with aclosing(source):
                async for item in source:
                    self._queue.put_nowait((item, None))
                    limit -= ends_sentence(item)
                    if limit <= 0:
                        break
        except Exception as exc:  # handed to the consumer, raised there
            end = exc
        except asyncio.CancelledError:  # not by `cancel` (a handle's call cancelled below)
            if not self._cancelled:
                end = LLMUnavailable("LLM service unavailable: the reply's stream was cancelled")
            raise
        finally:
            self._queue.put_nowait((None, end))

    async def items(self) -> AsyncIterator[str]:
        while True:
            item, end = await self._queue.get()
            if isinstance(end, StopAsyncIteration):
                return
            if end:
                raise end
            yield item

    async def cancel(self) -> None:
        if not self._task.done():
            self._cancelled = True
            self._task.cancel()
            with suppress(BaseException):
                await self._task
