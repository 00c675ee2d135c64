"""The call workflow: start a call, take a customer turn (text or speech), read a conversation.

Plain async code over a `SessionStore` and clients of the LLM, STT and TTS deployments;
the ingress maps its exceptions to HTTP statuses and WebSocket messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from time import perf_counter
from typing import Protocol

import numpy as np

from salesagent.audio import decode_audio
from salesagent.call_state import (
    CallState,
    Disposition,
    LineReading,
    apply,
    disposition_for,
    next_question,
)
from salesagent.catalog import Catalog
from salesagent.conversation import (
    FALLBACK_GOODBYE,
    FALLBACK_REPLY,
    CustomerIntent,
    Message,
    clean_reply,
    greeting,
    reading_from,
    reading_requests,
    reply_is_complete,
    reply_messages,
    with_ai_disclosure,
    with_question,
)
from salesagent.grounding import drop_unsupported, unsupported_facts
from salesagent.metrics import Metrics, NoMetrics, timed
from salesagent.phone import normalize_phone
from salesagent.sessions import CallSession, HistoryEntry, SessionStore, Speaker, entry
from salesagent.settings import AudioSettings, ConversationSettings, LimitsSettings
from salesagent.stt import Transcript


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

    async def start_call(
        self, customer_name: str, phone_number: str, owner: str = ""
    ) -> CallSession:
        """A new call to `phone_number` (stored in E.164), owned by API key id `owner`."""
        phone_number = normalize_phone(phone_number)
        if await self.store.is_do_not_call(phone_number):
            raise DoNotCall(f"{phone_number} asked not to be called again")
        await self.llm.ready()  # a call the agent cannot hold is refused up front (503)
        session = await self.store.create(
            customer_name, phone_number, greeting(self.catalog, customer_name), owner
        )
        self.metrics.inc("salesagent_calls_started_total")
        await self._count_active_calls()
        return session

    async def respond(self, call_id: str, message: str, channel: str = "rest") -> Turn:
        """One customer turn: decide the intent, generate the reply, store both at once."""
        started = perf_counter()
        turn = await self._respond(call_id, message)
        self.metrics.observe(
            "salesagent_turn_duration_seconds", perf_counter() - started, channel=channel
        )
        if turn.disposition:
            self.metrics.inc("salesagent_calls_ended_total", outcome=turn.disposition.value)
            await self._count_active_calls()
        return turn

    async def _respond(self, call_id: str, message: str) -> Turn:
        await self.llm.ready()  # fail fast (503) rather than wait out a turn's timeout
        async with self.store.turn_lock(call_id):
            session = self._within_limits(await self.store.get_active(call_id))
            customer = entry(Speaker.CUSTOMER, message)
            history = [*session.history, customer]
            reading = await self._read(history)
            state = apply(session.state, reading, message)
            intent = reading.intent
            reply = await self._reply(session.customer_name, history, intent, state)
            await self.store.append_turn(
                call_id,
                [customer, entry(Speaker.AGENT, reply)],
                end_call=intent.ends_call,
                state=state,
                do_not_call=session.phone_number if intent is CustomerIntent.DO_NOT_CALL else "",
            )
        return Turn(
            reply=reply,
            should_end_call=intent.ends_call,
            intent=intent,
            disposition=state.disposition,
        )

    async def _read(self, history: list[HistoryEntry]) -> LineReading:
        """Intent, qualification fact and objection of the customer's line: short guided
        choices sent together, so vLLM batches them."""
        with timed(self.metrics, "llm_intent"):
            answers = await asyncio.gather(
                *(self.llm.choose(m, choices) for m, choices in reading_requests(history))
            )
        return reading_from(answers)

    async def _reply(
        self,
        customer_name: str,
        history: list[HistoryEntry],
        intent: CustomerIntent,
        state: CallState,
    ) -> str:
        messages = reply_messages(
            self.catalog,
            customer_name,
            history,
            intent,
            self.settings.prompt_history_entries,
            state,
        )
        limit = self.settings.max_reply_sentences
        reply = ""
        # Sampling can go astray: one retry for an unusable or ungrounded reply; then the
        # grounded sentences of the last one, or a safe line.
        for _attempt in range(2):
            raw = ""
            async with aclosing(self.llm.stream(messages)) as stream:
                async for delta in stream:
                    raw += delta
                    if reply_is_complete(raw, limit):
                        break  # closing the stream aborts the rest of the generation
            reply = clean_reply(raw, customer_name, limit)
            if reply and not unsupported_facts(reply, self.catalog):
                break
            if reply:
                self.metrics.inc("salesagent_errors_total", stage="grounding", kind="unsupported")
        reply = drop_unsupported(reply, self.catalog)
        if intent.ends_call:
            return reply or FALLBACK_GOODBYE
        # The dialog policy on top of the model's words: disclose the AI when asked, and
        # ask the next qualification question while qualifying.
        question = next_question(state, self.catalog.qualification_questions)
        reply = with_ai_disclosure(reply, history[-1].text, self.catalog, limit)
        return with_question(reply, question, limit) or question or FALLBACK_REPLY

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
        # 404 (or the call's limits) before spending STT time.
        self._within_limits(await self.store.get_active(call_id))
        await self.llm.ready()  # no point transcribing a turn nobody can answer
        transcript = await self.stt.transcribe(decoded.samples)
        text = transcript.text.strip()
        if not text:
            raise NoSpeech("No speech was recognized in the audio")
        return text

    async def speak(self, text: str) -> bytes:
        """The agent's line as WAV bytes; raises TTSFailed."""
        return await self.tts.synthesize(text)

    async def end_call(self, call_id: str) -> None:
        """The client hung up: end the call, with its disposition."""
        session = await self.store.get_active(call_id)
        state = session.state.model_copy(
            update={"disposition": disposition_for(session.state, None)}
        )
        await self.store.end(call_id, state)
        self.metrics.inc("salesagent_calls_ended_total", outcome=state.disposition.value)
        await self._count_active_calls()

    async def _count_active_calls(self) -> None:
        self.metrics.set("salesagent_active_calls", await self.store.active_count())
