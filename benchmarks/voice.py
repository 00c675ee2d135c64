"""Speech benchmarks: STT and TTS real-time factors, and WebSocket turn latency.

    python benchmarks/voice.py                      # engines only, in this process
    python benchmarks/voice.py --url http://127.0.0.1:8000 --calls 2   # + a running service

Real-time factor = processing time / audio duration (lower is faster). The WebSocket
part holds --calls conversations one after another with the command-line client and
times each turn from the end of the customer's audio to the agent's reply audio.
Prints the figures and writes benchmarks/results/voice-<UTC time>.json. Bounded:
a fixed list of lines, at most --calls x 4 turns.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from common import summarize, write_results

from salesagent.voice.audio import decode_audio
from salesagent.voice.stt import STTSettings, WhisperSTT
from salesagent.voice.tts import TTSSettings, make_tts
from salesagent.voice.voice_client import converse, start_call

LINES = [
    "Sure, I have a couple of minutes. What is this about?",
    "I work as a data analyst and I would like to move into machine learning.",
    "How much does the course cost, and how long does it take?",
    "That sounds interesting. Can I attend the classes in the evening?",
]


def engine_figures(threads: int) -> tuple[dict, list[bytes]]:
    figures: dict[str, dict] = {}
    clips: list[bytes] = []
    for engine in ("hibari", "piper"):
        started = time.perf_counter()
        voice = make_tts(TTSSettings(engine=engine))
        load_s = time.perf_counter() - started
        speeches = [voice.synthesize(line) for line in LINES]
        figures[f"tts_{engine}"] = {
            "load_s": round(load_s, 2),
            "rtf": summarize([s.real_time_factor for s in speeches]),
            "sample_rate": voice.sample_rate,
        }
        if engine == "hibari":
            clips = [s.to_wav() for s in speeches]

    started = time.perf_counter()
    stt = WhisperSTT(STTSettings(cpu_threads=threads))
    load_s = time.perf_counter() - started
    transcripts = [
        stt.transcribe(decode_audio(c, max_bytes=1 << 24, max_seconds=60).samples) for c in clips
    ]
    figures["stt_whisper_tiny_en"] = {
        "load_s": round(load_s, 2),
        "threads": threads,
        "rtf": summarize([t.real_time_factor for t in transcripts]),
        "audio_s": summarize([t.audio_seconds for t in transcripts]),
    }
    return figures, clips


def websocket_figures(url: str, calls: int, clips: list[bytes]) -> dict:
    latencies: list[float] = []
    for n in range(calls):
        call_id = start_call(url, f"Lead {n}", "555-010-0100")
        conversation = asyncio.run(converse(url, call_id, clips))
        for turn in conversation.turns:
            if turn.voice_to_voice_s is not None:
                latencies.append(turn.voice_to_voice_s)
                print(f"call {n + 1}/{calls}: turn {turn.voice_to_voice_s:.2f} s", flush=True)
    return {"voice_to_voice_s": summarize(latencies)} if latencies else {"error": "no turns"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running service to time WebSocket turns against")
    parser.add_argument("--calls", type=int, default=2)
    parser.add_argument("--stt-threads", type=int, default=2)
    args = parser.parse_args()

    figures, clips = engine_figures(args.stt_threads)
    if args.url:
        figures["websocket"] = websocket_figures(args.url, args.calls, clips)
    print(json.dumps(figures, indent=2))
    print(f"wrote {write_results('voice', figures)}")


if __name__ == "__main__":
    main()
