"""The streaming mode of the voice WebSocket: live PCM in, the agent's sentences out, barge-in.

Opt in with `?mode=stream` (and `rate=` for the input, `output_rate=` for the agent's
audio). The messages are documented in the README ("Streaming voice"). The stages:

    client PCM frames -> PcmInput (check, resample to 16 kHz)
      -> TurnSegmenter (Silero VAD: speech started, paused, resumed, turn ended)
      -> at the pause: STT, then SalesCallService.turn (line reading and reply, side by side)
      -> speech_chunks -> TTS per sentence -> Playout (paced PCM16, what was heard)

The turn's work starts at the first pause, before the end of turn is certain; nothing is
sent until the end of turn confirms it, and a customer who goes on talking cancels it
unheard (nothing stored) and lengthens the same utterance. When the customer talks over
the agent for `interrupt_min_speech_s`, the agent's audio stops at once and the words
decide: a backchannel ("uh-huh", "okay") lets it go on; anything else interrupts: the
client is told to drop its queued audio and the agent's line is stored as far as heard,
marked interrupted. Turns land in the same history as every other channel.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from contextlib import suppress
from itertools import count

from redis.exceptions import RedisError

from salesagent.platform.sessions import CallInUse, CallNotFound
from salesagent.platform.settings import LimitsSettings
from salesagent.sales.service import (
    AgentTurn,
    CallLimitReached,
    LLMUnavailable,
    NoSpeech,
    SalesCallService,
    STTFailed,
    STTUnavailable,
    TTSFailed,
)
from salesagent.voice.audio import AudioError, read_wav
from salesagent.voice.pcm import PcmInput, pcm16_at
from salesagent.voice.playout import Playout
from salesagent.voice.sentences import SentenceSplitter, speech_chunks
from salesagent.voice.turns import TurnEvent, TurnSegmenter, TurnSettings
from salesagent.voice.voice_chat import (
    NORMAL_CLOSURE,
    ClientGone,
    VoiceSocket,
    parse_control,
    refuse,
)

logger = logging.getLogger("salesagent.voice")

_CANCEL_AGAIN_S = 1.0  # a reply not ended this long after its cancellation gets another


class _Reply:
    """The agent's answer to one utterance: a task, and whether it may speak yet."""

    def __init__(self):
        self.confirmed = asyncio.Event()  # the end of turn is certain
        self.turn: AgentTurn | None = None
        self.speaking = False  # its first audio has gone out
        self.task: asyncio.Task | None = None
        self.marks: dict[str, float] = {"start": time.monotonic()}  # the turn's timeline
        self.end_of_turn_wait_s: float | None = None

    def mark(self, name: str) -> None:
        self.marks.setdefault(name, time.monotonic())

    def timeline(self) -> dict[str, float]:
        """Seconds from the start of the work (the pause) to each step."""
        start = self.marks["start"]
        return {k: round(v - start, 3) for k, v in self.marks.items() if k != "start"}


class RealtimeVoiceChat:
    def __init__(
        self,
        socket: VoiceSocket,
        call_id: str,
        service: SalesCallService,
        limits: LimitsSettings,
        turns: TurnSettings,
        input_rate: int = 16000,
        output_rate: int = 24000,
        transport: str = "websocket",
        opt_out_how: str = "asked by the client",
    ):
        self.socket = socket
        self.transport = transport  # the metrics' label: websocket, or twilio
        self.opt_out_how = opt_out_how  # how a do_not_call command came, for the history
        self.call_id = call_id
        self.service = service
        self.limits = limits
        self.turns = turns
        self._pcm = PcmInput(input_rate)  # raises AudioError for a rate it does not take
        self._segmenter = TurnSegmenter(turns, service.audio.max_seconds)
        self._playout = Playout(
            self._send_bytes, self._send_json, output_rate, turns.frame_ms, turns.playback_lead_s
        )
        self._ids = count(1)
        self._reply: _Reply | None = None
        self._greeting: asyncio.Task | None = None
        self._barge: dict | None = None  # speech that began while the agent was talking
        self._judging: asyncio.Task | None = None  # the words of that speech, being heard
        self._clock = (time.monotonic(), 0.0)  # (wall, stream seconds) at the last frame
        self._speech_end_at = 0.0
        self._over = asyncio.Event()  # the call or the connection is finished

    # --- connection --------------------------------------------------------------------

    async def run(self) -> None:
        store = self.service.store
        try:
            with suppress(ClientGone):
                session = await store.get_active(self.call_id)
                async with store.websocket_claim(self.call_id, self.limits.ws_claim_ttl_s):
                    await self._send_json(
                        {
                            "type": "ready",
                            "mode": "stream",
                            "input_rate": self._pcm.rate,
                            "output_rate": self._playout.rate,
                        }
                    )
                    self._greeting = asyncio.ensure_future(self._greet(session.history[0].text))
                    await self._listen()
        except (CallNotFound, CallInUse) as exc:
            await refuse(self.socket, str(exc))
        finally:
            await self._cancel_reply(interrupted=True)  # a vanished client: keep what it heard
            for task in (self._greeting, self._judging):
                if task:
                    task.cancel()

    async def _listen(self) -> None:
        receiving = asyncio.ensure_future(self.socket.receive())
        while True:
            over = asyncio.ensure_future(self._over.wait())
            done, _ = await asyncio.wait({receiving, over}, return_when=asyncio.FIRST_COMPLETED)
            if over in done:
                receiving.cancel()
                return
            over.cancel()
            message = receiving.result()
            if message["type"] == "websocket.disconnect":
                return
            if (text := message.get("text")) is not None:
                if await self._on_text(text):
                    return
            else:
                await self._on_audio(message.get("bytes") or b"")
            receiving = asyncio.ensure_future(self.socket.receive())

    async def _on_text(self, text: str) -> bool:
        """A control message or a playback acknowledgement; True when the connection ends."""
        if len(text.encode()) > self.limits.max_ws_text_bytes:
            await self._error(
                f"Text message too large (limit {self.limits.max_ws_text_bytes} bytes)"
            )
            return False
        played = _played(text)
        if played:
            self._playout.acknowledge(*played)
            return False
        command = parse_control(text)
        if command == "end_connection":
            await self.socket.close(code=NORMAL_CLOSURE)
            return True
        if command == "end_call":
            await self._cancel_reply(interrupted=True)
            with suppress(CallNotFound):
                await self.service.end_call(self.call_id)
            await self._send_json({"type": "system", "message": "Call ended by client."})
            await self.socket.close(code=NORMAL_CLOSURE)
            return True
        if command == "do_not_call":
            await self._opt_out()
            return True
        await self._error(
            'Unknown text message; send PCM16 frames, {"type": "played", "id": N, "ms": M}, '
            '"END_CONNECTION_REQUEST_BY_CLIENT" or {"type": "control", "command": "end_call"} '
            '(or "do_not_call")'
        )
        return False

    async def _opt_out(self) -> None:
        """The lead asked not to be called again (a phone's keypad): the agent stops, the
        number goes on the list, the agent says the scripted confirmation, the call ends."""
        if self._agent_talking:
            await self._stop_talking()
        else:
            await self._cancel_reply()
        try:
            confirmation = await self.service.opt_out(self.call_id, self.opt_out_how)
        except CallNotFound:
            confirmation = None
        if confirmation:
            await self._speak(_one(confirmation))
        await self._send_json({"type": "system", "message": "Call ended: do not call again."})
        await self.socket.close(code=NORMAL_CLOSURE)

    async def _stop_talking(self) -> None:
        """Whatever the agent is saying stops here, stored as far as heard."""
        heard = self._playout.stop()
        if self._greeting and not self._greeting.done():
            self._greeting.cancel()
            with suppress(RedisError):  # the history keeps the whole greeting then
                await self.service.store.cut_agent_entry(self.call_id, 0, heard)
        await self._cancel_reply(interrupted=True, heard=heard)
        await self._send_json({"type": "interrupted", "heard": heard})

    # --- listening ---------------------------------------------------------------------

    async def _on_audio(self, frame: bytes) -> None:
        try:
            samples = self._pcm.decode(frame)
        except AudioError as exc:
            await self._error(f"Bad audio: {exc}")
            return
        events = self._segmenter.push(samples)
        self._clock = (time.monotonic(), self._segmenter.now_s)
        for event, at in events:
            await self._on_turn_event(event, at)
        self._check_barge_in()

    def _wall(self, stream_s: float) -> float:
        wall, now_s = self._clock
        return wall - (now_s - stream_s)

    @property
    def _agent_talking(self) -> bool:
        reply_talking = self._reply is not None and self._reply.speaking
        greeting = self._greeting is not None and not self._greeting.done()
        return reply_talking or greeting or self._playout.speaking

    async def _on_turn_event(self, event: TurnEvent, at: float) -> None:
        if event is TurnEvent.SPEECH_STARTED:
            await self._send_json({"type": "speech_started"})
            if self._agent_talking:
                self._barge = {"checked_s": 0.0, "interrupted": False}
            elif self._reply:  # still talking before the agent said anything: wait for more
                await self._cancel_reply()
        elif event is TurnEvent.RESUMED:
            if self._reply and not self._reply.speaking:
                await self._cancel_reply()
        elif event is TurnEvent.PAUSED:
            if not self._reply and not self._only_over_agent():
                self._start_reply()
        elif event is TurnEvent.TURN_ENDED:
            await self._send_json({"type": "speech_stopped"})
            barge = self._barge
            if barge is not None and barge.get("checking"):
                barge["ended_at"] = self._wall(at)  # its words decide, when they are in
                return
            if barge is not None and (
                barge.get("undecided") or (self._only_over_agent() and self._unheard(barge))
            ):
                barge["ended_at"] = self._wall(at)  # now the whole of it decides
                self._judge_now(barge)
                return
            if self._only_over_agent():
                self._barge = None  # a backchannel or a noise over the agent: no turn
                self._segmenter.take()
                return
            self._barge = None
            self._speech_end_at = self._wall(at)
            wait_s = time.monotonic() - self._speech_end_at
            self.service.metrics.observe("salesagent_end_of_turn_wait_seconds", wait_s)
            if not self._reply:
                self._start_reply()
            self._reply.end_of_turn_wait_s = round(wait_s, 3)
            self._reply.confirmed.set()

    def _only_over_agent(self) -> bool:
        """Speech that began over the agent, did not interrupt it, and the agent goes on."""
        barge = self._barge
        return barge is not None and not barge["interrupted"] and self._agent_talking

    def _unheard(self, barge: dict) -> bool:
        """The speech went on after the piece of it judged last (a backchannel then)."""
        return "judged_to_s" in barge and self._segmenter.last_voice_s > barge["judged_to_s"]

    def _check_barge_in(self) -> None:
        barge = self._barge
        if barge is None or barge["interrupted"] or barge.get("checking"):
            return
        speech_s = self._segmenter.speech_s
        if speech_s < max(self.turns.interrupt_min_speech_s, 2 * barge["checked_s"]):
            return
        if not self._agent_talking:
            barge["interrupted"] = True  # the agent finished meanwhile: an ordinary turn
            return
        self._playout.hold()  # stop at once; the words decide whether to go on
        barge["checked_s"] = speech_s
        self._judge_now(barge)

    def _judge_now(self, barge: dict) -> None:
        barge["checking"] = True
        barge["whole"] = "ended_at" in barge  # the words judged are all there will be
        barge["judged_to_s"] = self._segmenter.now_s
        self._judging = asyncio.ensure_future(
            self._judge_barge_in(barge, self._segmenter.utterance())
        )

    async def _judge_barge_in(self, barge: dict, audio) -> None:
        with suppress(ClientGone):
            await self._judge(barge, audio)

    async def _judge(self, barge: dict, audio) -> None:
        try:
            heard = await self.service.transcribe(self.call_id, audio)
            text, sure = heard.text, heard.sure
        except (NoSpeech, STTFailed, STTUnavailable, LLMUnavailable, CallNotFound):
            text, sure = "", True
        barge["checking"] = barge["undecided"] = False
        if self._barge is not barge:
            self._playout.resume()
            return
        if (
            not barge["whole"]
            and "ended_at" in barge
            and (len(text.split()) <= 2 or _is_backchannel(text, self.turns.backchannels))
        ):
            # The speech ended while a piece of it was being heard: the piece decides
            # nothing ("Sure." may begin "Sure, what is it about?", and "uh-hu" cut off is
            # heard as "It has."). The agent stays held while the whole of it is heard.
            self._judge_now(barge)
            return
        # A short sound Whisper had to guess at ("uh-huh" comes out "It's hot." now and
        # then) is a murmur, not a barge-in: the customer who means to interrupt says more.
        murmur = barge["whole"] and not sure and len(text.split()) <= 2
        if murmur or _is_backchannel(text, self.turns.backchannels):
            self.service.metrics.inc("salesagent_backchannels_total")
            self._playout.resume()
            if "ended_at" in barge:  # it is over, and it was no turn
                self._barge = None
                self._segmenter.take()
            return
        if not barge["whole"] and len(text.split()) <= 2:
            # A word cut off mid-way ("uh-hu" is heard as "It has."): keep the agent held
            # and hear more, when the speech has doubled or ended.
            barge["undecided"] = True
            return
        barge["interrupted"] = True
        await self._stop_talking()
        # The interrupting speech may already be over: it is the next turn.
        if "ended_at" in barge or not self._segmenter.in_speech:
            self._barge = None
            self._speech_end_at = barge.get("ended_at") or self._wall(self._segmenter.last_voice_s)
            reply = self._start_reply()
            reply.end_of_turn_wait_s = round(time.monotonic() - self._speech_end_at, 3)
            reply.confirmed.set()

    # --- answering ---------------------------------------------------------------------

    def _start_reply(self) -> _Reply:
        reply = _Reply()
        reply.task = asyncio.ensure_future(self._answer(reply, self._segmenter.utterance()))
        watch = asyncio.get_running_loop().call_later(
            self.turns.stuck_reply_s, self._report_stuck, reply
        )
        reply.task.add_done_callback(lambda _: watch.cancel())
        self._reply = reply
        return reply

    def _report_stuck(self, reply: _Reply) -> None:
        """A reply still running long after any reply ends: the log says where it waits."""
        logger.warning(
            "call %s: a reply has run for %.0f s (timeline %s); it waits in %s",
            self.call_id,
            self.turns.stuck_reply_s,
            reply.timeline(),
            " -> ".join(_awaiting(reply.task.get_coro())),
        )

    async def _cancel_reply(self, interrupted: bool = False, heard: str | None = None) -> None:
        """Stop the reply in flight. One the customer has heard part of is stored as far as
        heard (AgentTurn does that when cancelled); one not yet heard leaves no trace."""
        reply, self._reply = self._reply, None
        if reply is None or reply.task is None or reply.task.done():
            return
        if reply.turn is not None and reply.speaking:
            said = self._playout.stop() if heard is None else heard
            if interrupted:
                reply.turn.interrupt(said)
        # Cancelled again until it ends: a library below may swallow a cancellation (one
        # whose awaited answer lands with it), and a reply that ran on would wait for an end
        # of turn that never comes, holding the call's turn lock and this listener.
        while not reply.task.done():
            reply.task.cancel()
            await asyncio.wait({reply.task}, timeout=_CANCEL_AGAIN_S)
        if not reply.task.cancelled():
            reply.task.exception()  # it ended on its own meanwhile; its end is taken

    async def _answer(self, reply: _Reply, audio) -> None:
        """The reply to one utterance, to its end: answered (`turn_done`), or failed (an
        `error` with `turn_failed`: the words went unanswered, the lead's next ones start
        afresh), or the call is over. Never silent, whatever failed."""
        try:
            await self._reply_to(reply, audio)
        except ClientGone:
            raise
        except CallNotFound:
            await self._send_json({"type": "system", "message": "Call has ended."})
            await self.socket.close(code=NORMAL_CLOSURE)
            self._over.set()
        except CallLimitReached as exc:
            await refuse(self.socket, str(exc))
            self._over.set()
        except Exception as exc:
            if isinstance(exc, STTFailed | STTUnavailable | LLMUnavailable):
                message = str(exc)
            else:  # a fault of ours or of a part below (Redis): logged, and the lead told
                logger.exception("call %s: the streamed turn failed", self.call_id)
                self.service.metrics.inc(
                    "salesagent_errors_total", stage="stream_turn", kind=type(exc).__name__
                )
                message = "The agent could not answer that; please say it again"
            await reply.confirmed.wait()  # the lead may still be talking: then it is moot
            self._segmenter.take()
            await self._send_json({"type": "error", "message": message, "turn_failed": True})
        finally:
            self._finish(reply)

    async def _reply_to(self, reply: _Reply, audio) -> None:
        try:
            text = (await self.service.transcribe(self.call_id, audio)).text
        except NoSpeech:  # a noise, not words: no turn
            await reply.confirmed.wait()
            self._segmenter.take()
            return
        reply.mark("stt")
        async with self.service.turn(self.call_id, text, "stream") as turn:
            reply.turn = turn
            reply.mark("turn")
            await reply.confirmed.wait()
            reply.mark("confirmed")
            await self._send_json({"type": "user_text", "text": text})
            await self._speak(turn.sentences(), reply)
        self._finish(reply)
        result = turn.result
        reply.marks["read"] = turn.read_at or reply.marks["start"]
        await self._send_json(
            {
                "type": "turn_done",
                "should_end_call": result.should_end_call,
                "reply": result.reply,
                "timeline": reply.timeline(),
                "end_of_turn_wait_s": reply.end_of_turn_wait_s,
                "rewritten": turn.rewritten,
                "worded_by": turn.worded_by,
            }
        )
        if result.should_end_call:
            await self._send_json({"type": "system", "message": "Call ended by agent."})
            await self.socket.close(code=NORMAL_CLOSURE)
            self._over.set()

    def _finish(self, reply: _Reply) -> None:
        if self._reply is reply:
            self._reply = None

    async def _speak(self, sentences, reply: _Reply | None = None) -> None:
        """Each sentence synthesized, then played; the text alone when TTS fails."""
        self._playout.start_reply()
        async for chunk in speech_chunks(sentences):
            if reply is not None:
                reply.mark("first_sentence")
            try:
                samples, rate = read_wav(await self.service.speak(chunk))
                pcm = pcm16_at(samples, rate, self._playout.rate)
            except TTSFailed:
                pcm = None
            if reply is not None and not reply.speaking:
                reply.speaking = True
                self._segmenter.take()  # the utterance is answered
            sentence_id = next(self._ids)
            if pcm is None:
                await self._send_json({"type": "agent_text", "text": chunk, "id": sentence_id})
                continue
            if reply is not None:
                reply.mark("tts")
            await self._playout.play(sentence_id, chunk, pcm)
            if reply is not None and self._playout.first_audio_at:
                reply.marks.setdefault("first_audio", self._playout.first_audio_at)
            if reply is not None and reply.turn is not None:
                reply.turn.delivered(self._playout.heard())
            if reply is not None and self._playout.first_audio_at and self._speech_end_at:
                self.service.metrics.observe(
                    "salesagent_time_to_first_audio_seconds",
                    self._playout.first_audio_at - self._speech_end_at,
                    mode="stream",
                )
                self._speech_end_at = 0.0
        await self._playout.drain()
        self.service.metrics.inc(
            "salesagent_audio_underruns_total", self._playout.underruns, transport=self.transport
        )

    async def _greet(self, text: str) -> None:
        with suppress(ClientGone):
            await self._speak(_one(text))

    # --- sending -----------------------------------------------------------------------

    async def _error(self, message: str) -> None:
        await self._send_json({"type": "error", "message": message})

    async def _send_json(self, data: dict) -> None:
        try:
            await self.socket.send_json(data)
        except Exception as exc:  # Starlette raises WebSocketDisconnect or RuntimeError
            raise ClientGone from exc

    async def _send_bytes(self, data: bytes) -> None:
        try:
            await self.socket.send_bytes(data)
        except Exception as exc:
            raise ClientGone from exc


async def _one(text: str):
    """A scripted line as the sentences a reply would give."""
    for sentence in SentenceSplitter().feed(text, final=True):
        yield sentence


def _awaiting(coro) -> list[str]:
    """Where a suspended coroutine waits: its line and those of what it awaits, down to
    the first awaitable that is no coroutine (the next item of an async generator, say)."""
    where = []
    while (frame := getattr(coro, "cr_frame", None)) is not None:
        where.append(f"{frame.f_code.co_name} (line {frame.f_lineno})")
        coro = coro.cr_await
    return where


def _played(text: str) -> tuple[int, float] | None:
    """A playback acknowledgement {"type": "played", "id": N, "ms": M}, else None."""
    try:
        message = json.loads(text)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("type") != "played":
        return None
    sentence, played_ms = message.get("id"), message.get("ms")
    if not isinstance(sentence, int) or not isinstance(played_ms, int | float):
        return None
    return sentence, float(played_ms)


def _is_backchannel(text: str, backchannels: list[str]) -> bool:
    """Empty, or only backchannel words ("uh-huh", "okay, okay", "mm-hmm, right")."""
    spoken = re.sub(r"[^a-z' -]+", " ", text.lower())
    for phrase in sorted(backchannels, key=len, reverse=True):
        spoken = re.sub(rf"\b{re.escape(phrase)}\b", " ", spoken)
    return not spoken.replace("-", " ").split()
