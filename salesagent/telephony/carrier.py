"""Twilio, the phone carrier: placing and hanging up calls, TwiML, and proving who is asking.

Everything that speaks Twilio's REST API or checks its webhooks is here, over the
`twilio` package: the REST client (pointed at `telephony.api_base_url`, a local stand-in
in tests), the TwiML builder, and `RequestValidator` for `X-Twilio-Signature`. Twilio
sends no API key, so the Media Streams socket is let in by a short-lived token that the
TwiML passes as a stream parameter: an HMAC of the call id and an expiry, keyed with the
account's auth token, so any ingress replica can check it.
"""

from __future__ import annotations

import hashlib
import hmac
import time

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.voice_response import Connect, VoiceResponse

from salesagent.platform.settings import TelephonySettings
from salesagent.sales.call_state import Disposition

API_PATH = "/api/v1/sales"
VOICE_PATH = f"{API_PATH}/twilio/voice"  # TwiML for a call, outbound (answered) or inbound
STATUS_PATH = f"{API_PATH}/twilio/status"  # call status callbacks
STREAM_PATH = f"{API_PATH}/twilio/media-stream"  # the Media Streams WebSocket

# Status callbacks asked for on an outbound call; busy, no-answer and failed come as
# "completed" events with that CallStatus.
STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]
ENDED_STATUSES = {"completed", "busy", "no-answer", "failed", "canceled"}
# How a call that never reached the agent is recorded.
UNANSWERED_DISPOSITION = {
    "busy": Disposition.NO_ANSWER,
    "no-answer": Disposition.NO_ANSWER,
    "canceled": Disposition.NO_ANSWER,
    "failed": Disposition.FAILED,
}


class TelephonyNotConfigured(Exception):
    def __init__(self, missing: list[str]):
        super().__init__(f"Telephony is not configured; set {', '.join(missing)}")


class CarrierError(Exception):
    """Twilio refused a request, or could not be reached."""


class BadSignature(Exception):
    def __init__(self):
        super().__init__("Invalid or missing X-Twilio-Signature")


def is_machine(answered_by: str | None) -> bool:
    """Answering-machine detection's verdict: a machine or a fax, not a person."""
    return bool(answered_by) and (answered_by.startswith("machine") or answered_by == "fax")


class Carrier:
    """One account's calls through Twilio."""

    def __init__(self, settings: TelephonySettings):
        if missing := settings.missing():
            raise TelephonyNotConfigured(missing)
        self.settings = settings
        self._token = settings.token()
        if not self._token:
            raise TelephonyNotConfigured([f"an auth token in {settings.auth_token_file}"])
        self._validator = RequestValidator(self._token)
        self._key = hmac.new(self._token.encode(), b"media-stream-token", hashlib.sha256).digest()
        self._client: Client | None = None
        self.public_url = settings.public_base_url.rstrip("/")

    def _rest(self) -> Client:
        # Made on first use, inside the replica's event loop (aiohttp's session needs one).
        if self._client is None:
            client = Client(
                self.settings.account_sid,
                self._token,
                http_client=AsyncTwilioHttpClient(timeout=10),
            )
            client.api.base_url = self.settings.api_base_url.rstrip("/")
            self._client = client
        return self._client

    # --- URLs Twilio is given --------------------------------------------------------------

    def url(self, path: str, call_id: str | None = None) -> str:
        return f"{self.public_url}{path}" + (f"?call_id={call_id}" if call_id else "")

    def stream_url(self) -> str:
        ws = self.public_url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        return ws + STREAM_PATH  # Twilio takes no query string here: parameters go in TwiML

    # --- webhooks --------------------------------------------------------------------------

    def check_signature(self, url: str, params: dict[str, str], signature: str | None) -> None:
        """BadSignature unless Twilio signed this request (the full public URL and form)."""
        if not signature or not self._validator.validate(url, params, signature):
            raise BadSignature()

    def stream_token(self, call_id: str, now: float | None = None) -> str:
        expires = int((now or time.time()) + self.settings.stream_token_ttl_s)
        return f"{expires}.{self._mac(call_id, expires)}"

    def token_is_valid(self, call_id: str, token: str, now: float | None = None) -> bool:
        expires, _, mac = token.partition(".")
        if not expires.isdigit() or int(expires) < (now or time.time()):
            return False
        return hmac.compare_digest(mac, self._mac(call_id, int(expires)))

    def _mac(self, call_id: str, expires: int) -> str:
        return hmac.new(self._key, f"{call_id}.{expires}".encode(), hashlib.sha256).hexdigest()

    def stream_twiml(self, call_id: str) -> str:
        """Connect the answered call to the agent over Media Streams."""
        response, connect = VoiceResponse(), Connect()
        stream = connect.stream(url=self.stream_url())
        stream.parameter(name="call_id", value=call_id)
        stream.parameter(name="token", value=self.stream_token(call_id))
        response.append(connect)
        return str(response)

    @staticmethod
    def say_and_hang_up(text: str) -> str:
        response = VoiceResponse()
        if text:
            response.say(text)
        response.hangup()
        return str(response)

    # --- REST ------------------------------------------------------------------------------

    async def place_call(self, to: str, call_id: str) -> str:
        """Dial `to`; Twilio asks for the TwiML once the callee answers. Returns the CallSid."""
        options = {}
        if self.settings.machine_detection:
            options["machine_detection"] = self.settings.machine_detection
        try:
            call = await self._rest().calls.create_async(
                to=to,
                from_=self.settings.caller_number,
                url=self.url(VOICE_PATH, call_id),
                status_callback=self.url(STATUS_PATH, call_id),
                status_callback_event=STATUS_EVENTS,
                timeout=self.settings.ring_timeout_s,
                **options,
            )
        except TwilioRestException as exc:
            raise CarrierError(f"Twilio refused the call: {exc.msg} (code {exc.code})") from None
        except (TwilioException, aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise CarrierError(f"Twilio could not be reached: {type(exc).__name__}") from None
        return call.sid

    async def hang_up(self, call_sid: str) -> None:
        try:
            await self._rest().calls(call_sid).update_async(status="completed")
        except TwilioRestException as exc:
            if exc.status != 404:  # already over
                raise CarrierError(f"Twilio refused the hang-up: {exc.msg}") from None
        except (TwilioException, aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise CarrierError(f"Twilio could not be reached: {type(exc).__name__}") from None
