"""A stand-in for Twilio, built from its public documentation, for tests and benchmarks.

Nothing here imports the service: it speaks to it only as Twilio would.

- `FakeTwilio` serves the two REST calls the bridge makes (create a call, hang one up)
  on 127.0.0.1, with the account's basic auth, and plays the phone network: it sends the
  status callbacks (initiated, ringing, answered or busy / no-answer, completed), fetches
  the TwiML from the call's Url with a valid `X-Twilio-Signature` (and `AnsweredBy`
  when machine detection was asked for), and follows it: `<Say>` and `<Hangup>`, or
  `<Connect><Stream>` with its `<Parameter>`s.
- `PhoneLine` is the Media Stream of one answered call: `connected` and `start`, then a
  `media` message of mu-law every 20 ms in real time (the callee's speech, silence
  between), as a phone line does. It plays the agent's audio on a real-time clock,
  echoes each `mark` once the audio before it has played, drops its queue on `clear`
  (echoing the marks it dropped), sends `dtmf` and, when the callee hangs up, `stop`.
- A `Callee` says how a number answers and what the person on it does (`script`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import numpy as np
from aiohttp import web
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import connect

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

RATE = 8000
FRAME_S = 0.02
FRAME_BYTES = int(RATE * FRAME_S)  # mu-law: one byte a sample
SILENCE = b"\xff" * FRAME_BYTES  # mu-law zero


@dataclass
class Callee:
    """How a number answers: "human", "machine", "busy", "no-answer" or "failed"; and, once
    a person is on the line, what they do."""

    answer: str = "human"
    script: Callable[[PhoneLine], Awaitable[None]] | None = None
    ring_s: float = 0.2


@dataclass
class SimulatedCall:
    sid: str
    to: str
    from_: str
    url: str
    status_callback: str
    machine_detection: str
    direction: str = "outbound-api"
    statuses: list[str] = field(default_factory=list)  # as sent to the status callback
    twiml: list[str] = field(default_factory=list)
    said: list[str] = field(default_factory=list)  # <Say> texts
    hung_up_by_api: bool = False
    line: PhoneLine | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    answered_at: float | None = None


def ulaw(samples: np.ndarray) -> bytes:
    """Float samples at 8 kHz as mu-law bytes."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    return audioop.lin2ulaw(pcm, 2)


def from_ulaw(data: bytes) -> np.ndarray:
    pcm = audioop.ulaw2lin(data, 2)
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


class PhoneLine:
    """The callee's end of one Media Stream."""

    def __init__(self, call: SimulatedCall, url: str, parameters: dict[str, str]):
        self.call = call
        self.url = url
        self.parameters = parameters
        self.stream_sid = "MZ" + uuid.uuid4().hex
        self._mic: asyncio.Queue[bytes] = asyncio.Queue()
        self._ws = None
        self._seq = 0
        self._ends_at = 0.0  # when the speaker will have played all it got
        self._marks: list[tuple[str, float]] = []  # (name, plays out at)
        self.agent_audio = bytearray()  # mu-law, as received
        self.received: list[tuple[float, int]] = []  # (time, bytes) of each agent media
        self.marks_echoed: list[str] = []
        self.clears = 0
        self.closed_by_server: int | None = None  # the close code, when the service hung up
        self.speech_ended_at: list[float] = []  # when each line the callee said ended
        self._tasks: list[asyncio.Task] = []
        self._closed = asyncio.Event()

    # --- what the callee does ---------------------------------------------------------------

    async def say(self, samples: np.ndarray) -> None:
        """Speak `samples` (float, 8 kHz) into the phone; returns when all of it is sent."""
        data = ulaw(samples)
        frames = [data[i : i + FRAME_BYTES] for i in range(0, len(data), FRAME_BYTES)]
        sent = asyncio.Event()
        for frame in frames:
            await self._mic.put(frame.ljust(FRAME_BYTES, b"\xff"))
        await self._mic.put(sent)  # a marker: set when reached
        await sent.wait()
        self.speech_ended_at.append(time.monotonic())

    async def press(self, digit: str) -> None:
        await self._send({"event": "dtmf", "streamSid": self.stream_sid, "dtmf": {"digit": digit}})

    async def hang_up(self) -> None:
        """The callee hangs up: Twilio says `stop` and closes the stream."""
        await self._stop()

    def agent_audio_s(self) -> float:
        return len(self.agent_audio) / RATE

    def agent_talking(self) -> bool:
        return time.monotonic() < self._ends_at

    async def until_agent_quiet(self, quiet_s: float = 1.0, timeout_s: float = 120.0) -> None:
        """Wait until the agent has said something and then been silent for `quiet_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self._closed.is_set():
            last = self.received[-1][0] if self.received else None
            if (
                last is not None
                and not self.agent_talking()
                and time.monotonic() - max(last, self._ends_at) >= quiet_s
            ):
                return
            await asyncio.sleep(0.05)
        if not self._closed.is_set():
            raise TimeoutError("the agent did not finish speaking")

    async def until_agent_speaks(self, timeout_s: float = 120.0) -> float:
        """Wait for agent audio after the callee's last line; returns the seconds from the
        end of that line to the first of it."""
        await self.until_agent_has_said(0.0, timeout_s)
        since = self._last_line_end()
        return next(at for at, _ in self.received if at > since) - since

    async def until_agent_has_said(self, seconds: float, timeout_s: float = 120.0) -> None:
        """Wait until the callee has heard more than `seconds` of the agent since their
        last line (since the call began, before any): audio received and played out."""
        since = self._last_line_end()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self._closed.is_set():
            sent = [size for at, size in self.received if at > since]
            queued = max(0.0, self._ends_at - time.monotonic())
            if sent and sum(sent) / RATE - queued >= seconds:
                return
            await asyncio.sleep(0.02)
        raise TimeoutError(f"the agent did not say {seconds} s")

    def _last_line_end(self) -> float:
        return self.speech_ended_at[-1] if self.speech_ended_at else 0.0

    async def until_closed(self, timeout_s: float = 120.0) -> None:
        await asyncio.wait_for(self._closed.wait(), timeout_s)

    # --- the stream -------------------------------------------------------------------------

    async def run(self, script: Callable[[PhoneLine], Awaitable[None]] | None) -> None:
        async with connect(self.url, max_size=2**20) as ws:
            self._ws = ws
            await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
            await self._send(
                {
                    "event": "start",
                    "streamSid": self.stream_sid,
                    "start": {
                        "streamSid": self.stream_sid,
                        "accountSid": self.parameters.get("_account", ""),
                        "callSid": self.call.sid,
                        "tracks": ["inbound"],
                        "mediaFormat": {
                            "encoding": "audio/x-mulaw",
                            "sampleRate": RATE,
                            "channels": 1,
                        },
                        "customParameters": {
                            k: v for k, v in self.parameters.items() if not k.startswith("_")
                        },
                    },
                }
            )
            self._tasks = [
                asyncio.ensure_future(self._microphone()),
                asyncio.ensure_future(self._echo_marks()),
            ]
            if script:
                self._tasks.append(asyncio.ensure_future(self._script(script)))
            try:
                async for raw in ws:
                    self._on_message(json.loads(raw))
            except Exception:  # noqa: BLE001 - a dropped stream ends the call like a close
                pass
            self.closed_by_server = ws.close_code
        self._closed.set()
        for task in self._tasks:
            task.cancel()

    async def _script(self, script) -> None:
        try:
            await script(self)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the test reads it from the call
            self.call.said.append(f"script failed: {exc!r}")
            await self._stop()

    def _on_message(self, message: dict) -> None:
        event = message.get("event")
        if message.get("streamSid") != self.stream_sid:
            self.call.said.append(f"message for another stream: {message}")
            return
        now = time.monotonic()
        if event == "media":
            data = base64.b64decode(message["media"]["payload"])
            self.agent_audio += data
            self.received.append((now, len(data)))
            self._ends_at = max(now, self._ends_at) + len(data) / RATE
        elif event == "mark":
            self._marks.append((message["mark"]["name"], max(now, self._ends_at)))
        elif event == "clear":
            self.clears += 1
            self._ends_at = now  # the queued audio is dropped...
            self._marks = [(name, now) for name, _ in self._marks]  # ...its marks echo now

    async def _echo_marks(self) -> None:
        while True:
            now = time.monotonic()
            while self._marks and self._marks[0][1] <= now:
                name, _ = self._marks.pop(0)
                self.marks_echoed.append(name)
                await self._send(
                    {"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}}
                )
            await asyncio.sleep(0.01)

    async def _microphone(self) -> None:
        started = time.monotonic()
        n = 0
        while True:
            frame = SILENCE
            while not self._mic.empty():
                item = self._mic.get_nowait()
                if isinstance(item, asyncio.Event):
                    item.set()
                    continue
                frame = item
                break
            chunk = n + 1
            await self._send(
                {
                    "event": "media",
                    "streamSid": self.stream_sid,
                    "media": {
                        "track": "inbound",
                        "chunk": str(chunk),
                        "timestamp": str(int(n * FRAME_S * 1000)),
                        "payload": base64.b64encode(frame).decode(),
                    },
                }
            )
            n += 1
            await asyncio.sleep(max(0.0, started + n * FRAME_S - time.monotonic()))

    async def _send(self, message: dict) -> None:
        self._seq += 1
        await self._ws.send(json.dumps({**message, "sequenceNumber": str(self._seq)}))

    async def _stop(self) -> None:
        if self._ws is None or self._closed.is_set():
            return
        try:
            await self._send({"event": "stop", "streamSid": self.stream_sid, "stop": {}})
            await self._ws.close()
        except Exception:  # noqa: BLE001 - already closed by the other side
            pass


class FakeTwilio:
    """Twilio's REST API and phone network for one account, on 127.0.0.1."""

    def __init__(self, account_sid: str, auth_token: str, caller_number: str = "+15005550006"):
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.caller_number = caller_number
        self._signer = RequestValidator(auth_token)
        self.callees: dict[str, Callee] = {}  # by E.164 number
        self.calls: dict[str, SimulatedCall] = {}
        self.requests: list[tuple[str, str, dict]] = []  # (method, path, form)
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task] = set()
        self._http: aiohttp.ClientSession | None = None

    async def start(self, port: int = 0) -> str:
        app = web.Application()
        base = f"/2010-04-01/Accounts/{self.account_sid}"
        app.router.add_post(f"{base}/Calls.json", self._create)
        app.router.add_post(f"{base}/Calls/{{sid}}.json", self._update)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self._http = aiohttp.ClientSession()
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._http:
            await self._http.close()
        if self._runner:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeTwilio:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- REST -------------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return auth == f"Basic {expected}"

    @staticmethod
    def _error(status: int, code: int, message: str) -> web.Response:
        body = {"code": code, "message": message, "more_info": "", "status": status}
        return web.json_response(body, status=status)

    async def _create(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._error(401, 20003, "Authenticate")
        form = dict(await request.post())
        self.requests.append(("POST", request.path, form))
        if form.get("From") != self.caller_number:
            return self._error(400, 21212, f"The 'From' number {form.get('From')} is not valid")
        if not form.get("To") or not form.get("Url"):
            return self._error(400, 21201, "No 'To' or 'Url' given")
        call = SimulatedCall(
            sid="CA" + uuid.uuid4().hex,
            to=form["To"],
            from_=form["From"],
            url=form["Url"],
            status_callback=form.get("StatusCallback", ""),
            machine_detection=form.get("MachineDetection", ""),
        )
        self.calls[call.sid] = call
        self._spawn(self._place(call, self.callees.get(call.to, Callee(answer="no-answer"))))
        return web.json_response(self._resource(call, "queued"), status=201)

    async def _update(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._error(401, 20003, "Authenticate")
        form = dict(await request.post())
        self.requests.append(("POST", request.path, form))
        call = self.calls.get(request.match_info["sid"])
        if call is None:
            return self._error(404, 20404, "The requested resource was not found")
        if form.get("Status") == "completed":
            call.hung_up_by_api = True
            if call.line is not None:
                await call.line._stop()
        return web.json_response(self._resource(call, "completed"))

    def _resource(self, call: SimulatedCall, status: str) -> dict:
        return {
            "sid": call.sid,
            "account_sid": self.account_sid,
            "to": call.to,
            "from": call.from_,
            "status": status,
            "direction": call.direction,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Calls/{call.sid}.json",
        }

    # --- the phone network ------------------------------------------------------------------

    async def _signed_post(self, url: str, params: dict[str, str]) -> aiohttp.ClientResponse:
        signature = self._signer.compute_signature(url, params)
        return await self._http.post(url, data=params, headers={"X-Twilio-Signature": signature})

    def _params(self, call: SimulatedCall, status: str) -> dict[str, str]:
        return {
            "AccountSid": self.account_sid,
            "CallSid": call.sid,
            "From": call.from_,
            "To": call.to,
            "CallStatus": status,
            "Direction": call.direction,
            "ApiVersion": "2010-04-01",
        }

    async def _status(self, call: SimulatedCall, status: str, **extra: str) -> None:
        call.statuses.append(status)
        if call.status_callback:
            async with await self._signed_post(
                call.status_callback, {**self._params(call, status), **extra}
            ) as response:
                if response.status >= 300:
                    call.said.append(f"status callback answered {response.status}")

    async def _place(self, call: SimulatedCall, callee: Callee) -> None:
        try:
            await self._status(call, "initiated")
            await asyncio.sleep(callee.ring_s)
            await self._status(call, "ringing")
            await asyncio.sleep(callee.ring_s)
            if callee.answer in ("busy", "no-answer", "failed"):
                await self._status(call, callee.answer, CallDuration="0")
                return
            call.answered_at = time.monotonic()
            await self._status(call, "in-progress")
            extra = {}
            if call.machine_detection:
                extra["AnsweredBy"] = "machine_end_beep" if callee.answer == "machine" else "human"
            await self._connect(call, callee, call.url, extra)
            duration = str(round(time.monotonic() - call.answered_at))
            await self._status(call, "completed", CallDuration=duration, **extra)
        finally:
            call.done.set()

    async def incoming_call(
        self, voice_url: str, from_number: str, to_number: str, callee: Callee
    ) -> SimulatedCall:
        """A person on `from_number` calls the service's number (its voice webhook)."""
        call = SimulatedCall(
            sid="CA" + uuid.uuid4().hex,
            to=to_number,
            from_=from_number,
            url=voice_url,
            status_callback="",
            machine_detection="",
            direction="inbound",
        )
        self.calls[call.sid] = call
        call.answered_at = time.monotonic()
        try:
            await self._connect(call, callee, voice_url, {})
        finally:
            call.done.set()
        return call

    async def _connect(self, call: SimulatedCall, callee: Callee, url: str, extra: dict) -> None:
        """Fetch the TwiML and do what it says."""
        async with await self._signed_post(
            url, {**self._params(call, "in-progress"), **extra}
        ) as response:
            body = await response.text()
            if response.status != 200:
                call.said.append(f"TwiML request answered {response.status}: {body[:200]}")
                return
        call.twiml.append(body)
        for verb in ET.fromstring(body):
            if verb.tag == "Say":
                call.said.append(verb.text or "")
            elif verb.tag == "Hangup":
                return
            elif verb.tag == "Connect":
                stream = verb.find("Stream")
                parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
                parameters["_account"] = self.account_sid
                call.line = PhoneLine(call, stream.get("url"), parameters)
                await call.line.run(callee.script)
