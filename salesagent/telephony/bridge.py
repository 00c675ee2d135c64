"""Phone calls: dialing a lead, answering Twilio's webhooks, and holding the call's audio.

The call is the same call as on every other channel: a session started by
`SalesCallService`, its turns taken by the streaming voice core over the Media Streams
codec, its history, state and disposition in Redis. What the carrier says of the call
(ringing, answered, busy, a machine, completed) is recorded beside it and ends it when
the phone call is over.
"""

from __future__ import annotations

import logging
import uuid
from contextlib import suppress

from redis.exceptions import RedisError

from salesagent.platform.phone import normalize_phone
from salesagent.platform.sessions import CallNotFound, CallSession
from salesagent.platform.settings import LimitsSettings, TelephonySettings
from salesagent.sales.call_state import Disposition
from salesagent.sales.conversation import scripted
from salesagent.sales.service import DoNotCall, SalesCallService
from salesagent.telephony.carrier import (
    ENDED_STATUSES,
    UNANSWERED_DISPOSITION,
    Carrier,
    CarrierError,
    is_machine,
)
from salesagent.telephony.media_stream import (
    RATE,
    MediaStreamSocket,
    StreamRefused,
    read_start,
)
from salesagent.voice.realtime import RealtimeVoiceChat
from salesagent.voice.turns import TurnSettings
from salesagent.voice.voice_chat import POLICY_VIOLATION, VoiceSocket

logger = logging.getLogger("salesagent.telephony")
INBOUND_NAME = "Unknown caller"  # Twilio gives no name without a paid lookup


class PhoneBridge:
    def __init__(
        self,
        settings: TelephonySettings,
        service: SalesCallService,
        limits: LimitsSettings,
        turns: TurnSettings,
    ):
        self.carrier = Carrier(settings)  # TelephonyNotConfigured when settings are missing
        self.settings = settings
        self.service = service
        self.store = service.store
        self.limits = limits
        self.turns = turns

    def _count(self, event: str) -> None:
        self.service.metrics.inc("salesagent_carrier_calls_total", event=event)

    # --- outbound --------------------------------------------------------------------------

    async def dial(
        self, customer_name: str, phone_number: str, owner: str
    ) -> tuple[CallSession, str]:
        """Start a call session and have Twilio ring the lead; returns it and the CallSid.
        A call Twilio refuses is ended at once (disposition failed) and CarrierError raised."""
        session = await self.service.start_call(customer_name, phone_number, owner)
        call_id = session.call_id
        # Recorded first: Twilio's status callbacks may come before its answer to us does.
        await self.store.record_carrier(call_id, status="queued", direction="outbound")
        try:
            call_sid = await self.carrier.place_call(session.phone_number, call_id)
        except CarrierError as exc:
            self._count("failed")
            await self.store.record_carrier(call_id, status="failed", error=str(exc))
            await self.service.end_call(call_id, Disposition.FAILED)
            raise
        self._count("placed")
        await self.store.record_carrier(call_id, call_sid=call_sid)
        return session, call_sid

    async def answer(self, call_id: str | None, params: dict[str, str]) -> str:
        """The TwiML for a call Twilio has connected: ours answered (`call_id`), or a lead
        calling the configured number (no `call_id`)."""
        if call_id is None:
            return await self._answer_inbound(params)
        try:
            session = await self.store.get_active(_checked(call_id))
        except CallNotFound:
            return self.carrier.say_and_hang_up("")  # ended meanwhile (by the dialer)
        answered_by = params.get("AnsweredBy")
        await self.store.record_carrier(
            call_id,
            status=params.get("CallStatus") or "in-progress",
            call_sid=params.get("CallSid"),
            answered_by=answered_by,
        )
        if is_machine(answered_by):
            self._count("machine")
            message = scripted(
                self.service.catalog,
                self.service.catalog.agent.voicemail_message,
                session.customer_name,
            )
            await self.service.end_call(call_id, Disposition.VOICEMAIL, agent_line=message)
            return self.carrier.say_and_hang_up(message)
        self._count("answered")
        return self.carrier.stream_twiml(call_id)

    async def _answer_inbound(self, params: dict[str, str]) -> str:
        caller = params.get("From", "")
        try:
            number = normalize_phone(caller)
        except ValueError:
            number = ""
        if not number:  # withheld or not a number: no do-not-call check is possible
            return self.carrier.say_and_hang_up(
                "Sorry, we can only take calls from a number that is shown. Goodbye."
            )
        try:
            session = await self.service.start_call(
                params.get("CallerName") or INBOUND_NAME,
                number,
                self.settings.inbound_owner,
                inbound=True,
            )
        except DoNotCall:
            self._count("refused")
            catalog = self.service.catalog
            return self.carrier.say_and_hang_up(
                scripted(catalog, catalog.agent.do_not_call_refusal)
            )
        self._count("inbound")
        await self.store.record_carrier(
            session.call_id,
            status=params.get("CallStatus") or "in-progress",
            direction="inbound",
            call_sid=params.get("CallSid"),
        )
        return self.carrier.stream_twiml(session.call_id)

    async def status(self, call_id: str, params: dict[str, str]) -> None:
        """A status callback: recorded on the call; a finished phone call ends it."""
        call_id = _checked(call_id)
        status = params.get("CallStatus", "")[:32]
        error = params.get("ErrorMessage") or params.get("SipResponseCode")
        if not await self.store.record_carrier(
            call_id,
            status=status or None,
            call_sid=params.get("CallSid"),
            answered_by=params.get("AnsweredBy"),
            error=error,
        ):
            raise CallNotFound(call_id)
        if status not in ENDED_STATUSES:
            return
        self._count(status.replace("-", "_"))
        disposition = UNANSWERED_DISPOSITION.get(status)
        if is_machine(params.get("AnsweredBy")):
            disposition = Disposition.VOICEMAIL
        with suppress(CallNotFound):  # already ended (by the agent, or the stream's end)
            await self.service.end_call(call_id, disposition)

    # --- the call's audio ------------------------------------------------------------------

    async def hold_stream(self, websocket: VoiceSocket) -> None:
        """Run a Media Stream Twilio opened: let it in only with a valid token for an active
        call, hold the conversation, and end the call when the stream ends."""
        try:
            start = await read_start(websocket)
        except (StreamRefused, TimeoutError) as exc:
            logger.warning("media stream refused: %s", exc)
            return await _close(websocket)
        call_id = start.parameters.get("call_id", "")
        token = start.parameters.get("token", "")
        if not _is_uuid(call_id) or not self.carrier.token_is_valid(call_id, token):
            logger.warning("media stream refused: no valid token")
            return await _close(websocket)

        async def hang_up() -> None:
            if start.call_sid:
                try:
                    await self.carrier.hang_up(start.call_sid)
                except CarrierError as exc:
                    logger.warning("hang-up failed: %s", exc)

        stream = MediaStreamSocket(
            websocket, start, self.settings.opt_out_digit, hang_up, self.settings.last_mark_wait_s
        )
        chat = RealtimeVoiceChat(
            stream,
            call_id,
            self.service,
            self.limits,
            self.turns,
            input_rate=RATE,
            output_rate=RATE,
            transport="twilio",
            opt_out_how=f"pressed {self.settings.opt_out_digit}",
        )
        try:
            await chat.run()
        finally:
            # A phone call has no reconnect: its stream's end is the call's end.
            with suppress(CallNotFound, RedisError):
                await self.service.end_call(call_id)
            with suppress(Exception):  # Twilio may already have gone
                await stream.close()


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _checked(call_id: str) -> str:
    if not _is_uuid(call_id):
        raise CallNotFound(call_id)
    return call_id


async def _close(websocket: VoiceSocket) -> None:
    with suppress(Exception):
        await websocket.close(code=POLICY_VIOLATION)
