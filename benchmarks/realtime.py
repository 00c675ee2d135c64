"""Time to first agent audio: the streaming voice mode and the contract mode side by side.

    bash scripts/serve_local.sh          # in another terminal: the CPU profile
    python benchmarks/realtime.py [--url http://127.0.0.1:8000] [--calls 3]

One run, against one running service, interleaving the two modes call by call:

- contract mode (`/ws/voice-chat`, one WAV per turn): time from the turn's audio sent
  (which is when a client could have cut the customer's speech, with no wait at all) to
  the reply's audio received;
- streaming mode (`?mode=stream`, PCM in real time): time from the end of the customer's
  speech sent to the reply's first audio received, and the server's end-of-turn wait;
- barge-in: the time from the first interrupting word sent to the last agent audio received;
- the stage floor, each stage alone through the service's own deployments (Ray handles):
  STT of the line, the reply's prefill and decode up to its first sentence, that
  sentence's TTS. The ratio compares streaming p50 with the floor's p50.

Prints the figures and writes benchmarks/results/realtime-<UTC time>.json. Bounded: at
most --calls calls per mode and 3 turns each, each wait at most 120 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import numpy as np
import soxr
from common import summarize, write_results

from salesagent.platform.sessions import Speaker, entry
from salesagent.sales.call_state import CallState, CustomerIntent
from salesagent.sales.catalog import load_catalog
from salesagent.sales.conversation import greeting, reply_messages
from salesagent.sales.reply import model_sentences
from salesagent.voice.audio import read_wav
from salesagent.voice.stream_client import stream_call
from salesagent.voice.tts import HibariTTS, TTSSettings
from salesagent.voice.turns import TurnSettings
from salesagent.voice.voice_client import converse, start_call

# Two lines the model answers and one the catalog answers (its approved price answer): the
# figures are kept apart by who worded the reply, since a catalog answer needs no writing.
LINES = [
    "Sure, I have a couple of minutes. What is this about?",
    "What kind of projects would I build?",
    "How much does it cost?",
]
INTERRUPTION = "Wait, sorry, what topics does it cover?"


def speak(voice: HibariTTS, text: str) -> tuple[bytes, np.ndarray]:
    """The line as a WAV (contract mode) and as 16 kHz samples (streaming mode)."""
    wav = voice.synthesize(text).to_wav()
    samples, rate = read_wav(wav)
    return wav, soxr.resample(samples, rate, 16000).astype(np.float32)


async def stage_floor(ray_address: str, clips: dict[str, np.ndarray], app: str) -> dict:
    """Each stage alone, one request at a time, through the running deployments."""
    # As in serve_local.sh: the driver stays on 127.0.0.1 too (Ray would otherwise swap in
    # the machine's address).
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    from ray import serve

    ray.init(
        address=ray_address,
        _node_ip_address="127.0.0.1",
        logging_level="ERROR",
        log_to_driver=False,
    )
    from deployments.clients import ServeLLMClient

    stt = serve.get_deployment_handle("STTDeployment", app_name=app)
    llm = ServeLLMClient(serve.get_deployment_handle("LLMDeployment", app_name=app), 120, 10)
    tts = serve.get_deployment_handle("TTSDeployment", app_name=app)
    catalog = load_catalog()
    times: dict[str, list[float]] = {"stt": [], "first_sentence": [], "tts": [], "floor": []}
    for _ in range(2):  # the first round warms the caches, as a call in progress has them
        times = {k: [] for k in times}
        for line, samples in clips.items():
            started = time.perf_counter()
            await stt.transcribe.remote(samples)
            stt_s = time.perf_counter() - started
            history = [
                entry(Speaker.AGENT, greeting(catalog, "Ann Lee")),
                entry(Speaker.CUSTOMER, line),
            ]
            messages = reply_messages(
                catalog, "Ann Lee", history, CustomerIntent.CONTINUE, 16, CallState()
            )
            started = time.perf_counter()
            sentences = model_sentences(llm.stream(messages), "Ann Lee")
            sentence = await anext(sentences)
            await sentences.aclose()  # stops the generation
            first_s = time.perf_counter() - started
            started = time.perf_counter()
            await tts.synthesize.remote(sentence)
            tts_s = time.perf_counter() - started
            for key, value in (("stt", stt_s), ("first_sentence", first_s), ("tts", tts_s)):
                times[key].append(value)
            times["floor"].append(stt_s + first_s + tts_s)
    ray.shutdown()
    return {k: summarize(v) for k, v in times.items()}


async def run(args: argparse.Namespace) -> dict:
    voice = HibariTTS(TTSSettings())
    clips = {line: speak(voice, line) for line in LINES}
    interruption = speak(voice, INTERRUPTION)
    contract, streaming, eot, barge, timelines = [], [], [], [], []
    by_wording: dict[str, list[float]] = {"model": [], "catalog": []}
    rewritten = 0
    for n in range(args.calls):
        call_id = start_call(args.url, f"Lead {n}", "555-010-0100")
        conversation = await converse(args.url, call_id, [wav for wav, _ in clips.values()])
        contract += [t.voice_to_voice_s for t in conversation.turns if t.voice_to_voice_s]
        figures = [round(t.voice_to_voice_s or 0, 2) for t in conversation.turns]
        print(f"call {n + 1}: contract {figures}", flush=True)

        call_id = start_call(args.url, f"Lead {n}", "555-010-0100")
        lines = [(line, samples) for line, (_, samples) in clips.items()]
        call = await stream_call(args.url, call_id, lines, pause_s=0.5)
        streaming += [float(t.first_audio_s) for t in call.turns if t.first_audio_s]
        for t in call.turns:
            if t.first_audio_s and t.worded_by in by_wording:
                by_wording[t.worded_by].append(float(t.first_audio_s))
        eot += [t.end_of_turn_wait_s for t in call.turns if t.end_of_turn_wait_s is not None]
        timelines += [
            t.timeline | {"rewritten": t.rewritten, "worded_by": t.worded_by, "said": t.sentences}
            for t in call.turns
            if t.timeline
        ]
        rewritten += sum(t.rewritten for t in call.turns)
        figures = [f"{t.first_audio_s or 0:.2f} ({t.worded_by})" for t in call.turns]
        print(f"call {n + 1}: stream   {figures}", flush=True)

        call_id = start_call(args.url, f"Lead {n}", "555-010-0100")
        lines = [(LINES[1], clips[LINES[1]][1]), (INTERRUPTION, interruption[1])]
        call = await stream_call(args.url, call_id, lines, interrupt_after=1.0, interrupt_turn=1)
        cut = call.turns[0]
        if cut.interrupted and cut.stop_s is not None:
            barge.append(cut.stop_s)
        print(f"call {n + 1}: barge-in interrupted={cut.interrupted} stop={cut.stop_s}", flush=True)

    floor = await stage_floor(args.ray_address, {k: v[1] for k, v in clips.items()}, args.app)
    stream_p50 = summarize(streaming).get("p50")
    model_p50 = summarize(by_wording["model"]).get("p50")
    floor_p50 = floor["floor"].get("p50")
    min_speech = TurnSettings().interrupt_min_speech_s
    stages = {
        key: summarize([t[key] for t in timelines if key in t])
        for key in ("stt", "read", "first_sentence", "tts", "first_audio")
    }
    return {
        "url": args.url,
        "calls_per_mode": args.calls,
        "contract_first_audio_s": summarize(contract),
        "stream_first_audio_s": summarize(streaming),
        "stream_first_audio_model_worded_s": summarize(by_wording["model"]),
        "stream_first_audio_catalog_worded_s": summarize(by_wording["catalog"]),
        "stream_end_of_turn_wait_s": summarize(eot),
        "stream_stages_from_pause_s": stages,
        "stage_floor_s": floor,
        "stream_to_floor_ratio": round(stream_p50 / floor_p50, 2)
        if stream_p50 and floor_p50
        else None,
        # The floor is a model-written turn's: the honest comparison is with those turns.
        "stream_model_worded_to_floor_ratio": round(model_p50 / floor_p50, 2)
        if model_p50 and floor_p50
        else None,
        "stream_replies_rewritten": rewritten,
        "stream_turn_timelines_s": timelines,
        "barge_in_stop_s": summarize(barge),
        "barge_in_past_min_speech_s": summarize([b - min_speech for b in barge]),
        "interrupt_min_speech_s": min_speech,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--ray-address", default="127.0.0.1:6390", help="serve_local.sh's Ray")
    parser.add_argument("--app", default="sales")
    parser.add_argument("--calls", type=int, default=4)
    args = parser.parse_args()
    results = asyncio.run(run(args))
    for name in (
        "contract_first_audio_s",
        "stream_first_audio_s",
        "stream_first_audio_model_worded_s",
        "stream_first_audio_catalog_worded_s",
        "stream_end_of_turn_wait_s",
        "barge_in_stop_s",
        "barge_in_past_min_speech_s",
    ):
        s = results[name]
        if s.get("n"):
            figures = f"p50 {s['p50']:.2f}  p95 {s['p95']:.2f}  max {s['max']:.2f}"
            print(f"{name:36s} n={s['n']:2d}  {figures}")
    for name, s in results["stage_floor_s"].items():
        print(f"floor {name:22s} n={s['n']:2d}  p50 {s['p50']:.2f}  p95 {s['p95']:.2f}")
    for name, s in results["stream_stages_from_pause_s"].items():
        if s.get("n"):
            print(f"stream stage {name:15s} p50 {s['p50']:.2f} s after the pause")
    print(f"streaming p50 / floor p50 = {results['stream_to_floor_ratio']}")
    print(f"model-worded p50 / floor p50 = {results['stream_model_worded_to_floor_ratio']}")
    print(f"wrote {write_results('realtime', results)}")


if __name__ == "__main__":
    main()
