"""The prepared Qwen models side by side on the CPU profile's engine settings: time to
first token, decode speed, label requests and memory, on vLLM's engine directly (no Ray, no
server).

    python benchmarks/models.py [MODEL_DIR ...] [--repeats 8] [--timeout-s 600]

Without folders it runs every model `salesagent.platform.models` has prepared (0.5B, 1.5B).
Each model runs in its own child process, one after the other: the machine has room for one
engine at a time, a hung start is killed at --timeout-s, and each peak RSS is its own.
Prints a table; writes benchmarks/results/models-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import yaml
from common import summarize, write_results

CPU_PROFILE = Path(__file__).parents[1] / "serve_config.cpu.yaml"
CUSTOMER = "Ann Lee"


def cpu_llm_args() -> dict:
    """The `llm:` args the CPU profile hands the LLM deployment."""
    config = yaml.safe_load(CPU_PROFILE.read_text())
    return dict(config["applications"][0]["args"]["llm"])


def sales_history() -> list:
    """A short call: the greeting, two customer lines and the agent's answer between them."""
    from salesagent.platform.sessions import Speaker, entry
    from salesagent.sales.catalog import load_catalog
    from salesagent.sales.conversation import greeting

    return [
        entry(Speaker.AGENT, greeting(load_catalog(), CUSTOMER)),
        entry(Speaker.CUSTOMER, "Hi, yes, I have a minute. What is this about?"),
        entry(
            Speaker.AGENT,
            "I'm calling about our course; may I ask what you do for work right now?",
        ),
        entry(
            Speaker.CUSTOMER,
            "I work in retail but I want to move into tech. How much does it cost, though?",
        ),
    ]


class PeakMemory:
    """Samples the RSS of this process and its children (vLLM's engine core runs in one)."""

    def __init__(self, every_s: float = 0.2):
        import psutil

        self._me = psutil.Process()
        self._every_s = every_s
        self.peak_tree_bytes = 0
        self.last_tree_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(self._every_s):
            total = 0
            for p in [self._me, *self._me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):  # a child that just exited
                    total += p.memory_info().rss
            self.last_tree_bytes = total
            self.peak_tree_bytes = max(self.peak_tree_bytes, total)

    def high_water_marks(self) -> dict[str, int]:
        """The kernel's own peak RSS (VmHWM) of each live process in the tree, by pid."""
        marks = {}
        for p in [self._me, *self._me.children(recursive=True)]:
            try:
                status = Path(f"/proc/{p.pid}/status").read_text()
            except OSError:
                continue
            line = next((x for x in status.splitlines() if x.startswith("VmHWM:")), None)
            if line:
                marks[f"{p.pid} {p.name()}"] = int(line.split()[1]) * 1024
        return marks

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


async def measure(engine, repeats: int, reply_tokens: int) -> dict:
    from salesagent.sales.call_state import CallState, CustomerIntent
    from salesagent.sales.catalog import load_catalog
    from salesagent.sales.conversation import reading_requests, reply_messages

    history = sales_history()
    messages = reply_messages(
        load_catalog(), CUSTOMER, history, CustomerIntent.CONTINUE, 16, CallState()
    )

    async def reply() -> tuple[float, float, int, str]:
        started = time.perf_counter()
        first_at = last_at = 0.0
        first_tokens = tokens = 0
        text = ""
        async for delta in engine.stream_chat(messages, max_tokens=reply_tokens):
            last_at = time.perf_counter()
            if not first_at:
                first_at, first_tokens = last_at, delta.tokens
            tokens += delta.tokens
            text += delta.text
        decode_rate = (tokens - first_tokens) / (last_at - first_at) if tokens > 1 else 0.0
        return first_at - started, decode_rate, tokens, text

    async def fixed_decode() -> float:
        """Tokens/s over exactly `reply_tokens` tokens: spoken replies stop on EOS after one
        or two sentences (often 10-25 tokens), too few to time decoding alone. Same prompt
        and sampling as a reply, through the engine's AsyncLLM, with EOS ignored."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        settings = engine._settings
        params = SamplingParams(
            max_tokens=reply_tokens,
            ignore_eos=True,
            temperature=settings.temperature,
            top_p=settings.top_p,
            output_kind=RequestOutputKind.DELTA,
        )
        stamps = []
        async for output in engine._engine.generate(
            engine._prompt(messages), params, request_id=uuid.uuid4().hex
        ):
            stamps += [time.perf_counter()] * len(output.outputs[0].token_ids)
        return (len(stamps) - 1) / (stamps[-1] - stamps[0])

    cold_ttft, *_ = await reply()  # fills the prefix cache, as a call in progress has it
    ttft, rates, lengths, texts = [], [], [], []
    for _ in range(repeats):
        first_s, rate, tokens, text = await reply()
        ttft.append(first_s)
        rates.append(rate)
        lengths.append(tokens)
        texts.append(text)
    fixed_rates = [await fixed_decode() for _ in range(3)]

    requests = reading_requests(history)
    intent_request = requests[0]
    await asyncio.gather(*(engine.choose(*r) for r in requests))  # warm all four prompts
    choose_s, reading_s = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        label = await engine.choose(*intent_request)
        choose_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        # As the service reads a line: all four labels at once, batched by vLLM.
        await asyncio.gather(*(engine.choose(*r) for r in requests))
        reading_s.append(time.perf_counter() - started)
    return {
        "prompt_tokens": len(engine._prompt(messages)["prompt_token_ids"]),
        "ttft_cold_s": round(cold_ttft, 4),
        "ttft_s": summarize(ttft),
        "decode_tokens_per_s": {  # over the replies themselves, EOS included
            "p50": round(statistics.median(rates), 2),
            "min": round(min(rates), 2),
            "max": round(max(rates), 2),
        },
        "reply_tokens": lengths,
        "decode_fixed_tokens_per_s": [round(r, 2) for r in fixed_rates],
        "sample_reply": texts[0],
        "choose_intent_s": summarize(choose_s),
        "choose_intent_label": label,
        "reading_4_labels_s": summarize(reading_s),
    }


def run_one(folder: str, repeats: int, reply_tokens: int) -> dict:
    """One model in this process: start the engine as the LLM deployment does, then measure."""
    from salesagent.platform.engine import VLLMChatEngine
    from salesagent.platform.settings import LLMSettings

    memory = PeakMemory()
    # Other work on the machine skews every figure here; the load average shows it.
    load_before = os.getloadavg()[0]
    settings = LLMSettings(**{**cpu_llm_args(), "model": folder})
    started = time.perf_counter()
    engine = VLLMChatEngine(settings)
    start_s = time.perf_counter() - started
    try:
        figures = asyncio.run(measure(engine, repeats, reply_tokens))
        marks, end_bytes = memory.high_water_marks(), memory.last_tree_bytes
    finally:
        engine.shutdown()
        memory.stop()
    config = json.loads((Path(folder) / "config.json").read_text())
    return {
        "model": Path(folder).name,
        "folder": folder,
        "folder_bytes": sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file()),
        "layers": config.get("num_hidden_layers"),
        "hidden_size": config.get("hidden_size"),
        "engine_start_s": round(start_s, 2),
        **figures,
        "peak_rss_tree_bytes": memory.peak_tree_bytes,
        "end_rss_tree_bytes": end_bytes,
        "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "peak_rss_by_process_bytes": marks,
    }


def default_folders() -> list[str]:
    from salesagent.platform.models import DONE_MARKER, MODELS
    from salesagent.platform.settings import default_model_cache

    folders = [default_model_cache() / m.folder_name for m in MODELS.values()]
    return [str(f) for f in folders if (f / DONE_MARKER).exists()]


def run_isolated(folder: str, args: argparse.Namespace) -> dict:
    """Runs the model in a child process, its logs on our stderr, bounded by --timeout-s."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [
            sys.executable, __file__, folder, "--worker", str(out),
            "--repeats", str(args.repeats), "--reply-tokens", str(args.reply_tokens),
        ]  # fmt: skip
        started = time.perf_counter()
        try:
            subprocess.run(command, stdout=sys.stderr, timeout=args.timeout_s, check=True)
            result = json.loads(out.read_text())
        except (subprocess.SubprocessError, OSError, ValueError) as exc:
            # One model failing or timing out must not lose the other's figures.
            result = {"model": Path(folder).name, "folder": folder, "error": repr(exc)}
        result["wall_s"] = round(time.perf_counter() - started, 1)
        return result


def _gib(value: int) -> str:
    return f"{value / (1 << 30):.2f}"


def print_table(results: list[dict]) -> None:
    rows = [
        ("layers / hidden", lambda r: f"{r['layers']} / {r['hidden_size']}"),
        ("folder GiB", lambda r: _gib(r["folder_bytes"])),
        ("engine start s", lambda r: f"{r['engine_start_s']:.1f}"),
        ("prompt tokens", lambda r: str(r["prompt_tokens"])),
        ("TTFT cold s", lambda r: f"{r['ttft_cold_s']:.3f}"),
        ("TTFT warm p50 s", lambda r: f"{r['ttft_s']['p50']:.3f}"),
        ("TTFT warm max s", lambda r: f"{r['ttft_s']['max']:.3f}"),
        ("decode tok/s p50", lambda r: f"{r['decode_tokens_per_s']['p50']:.1f}"),
        ("reply tokens", lambda r: "/".join(map(str, sorted(set(r["reply_tokens"]))))),
        (
            "decode fixed tok/s",
            lambda r: f"{statistics.median(r['decode_fixed_tokens_per_s']):.1f}",
        ),
        ("choose() p50 s", lambda r: f"{r['choose_intent_s']['p50']:.3f}"),
        ("4 labels p50 s", lambda r: f"{r['reading_4_labels_s']['p50']:.3f}"),
        ("peak RSS tree GiB", lambda r: _gib(r["peak_rss_tree_bytes"])),
        ("peak RSS max proc", lambda r: _gib(max(r["peak_rss_by_process_bytes"].values()))),
        ("end RSS tree GiB", lambda r: _gib(r["end_rss_tree_bytes"])),
        ("load avg start/end", lambda r: "/".join(f"{x:.1f}" for x in r["loadavg_1m"])),
        ("wall s", lambda r: f"{r['wall_s']:.0f}"),
    ]
    ok = [r for r in results if "error" not in r]
    print(f"{'':20}" + "".join(f"{r['model']:>30}" for r in ok))
    for name, cell in rows:
        print(f"{name:20}" + "".join(f"{cell(r):>30}" for r in ok))
    for r in ok:
        print(f"{r['model']}: {r['sample_reply']!r}")
    for r in results:
        if "error" in r:
            print(f"{r['model']}: FAILED {r['error']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", help="prepared model folders (default: all)")
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--reply-tokens", type=int, default=60)
    parser.add_argument("--timeout-s", type=float, default=600, help="per model")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one model, result here
    args = parser.parse_args()
    if args.worker:
        result = run_one(args.folders[0], args.repeats, args.reply_tokens)
        Path(args.worker).write_text(json.dumps(result))
        return
    folders = args.folders or default_folders()
    if not folders:
        sys.exit("no prepared model; run `python -m salesagent.platform.models [--model ...]`")
    results = [run_isolated(folder, args) for folder in folders]
    print_table(results)
    summary = {
        "llm_settings": cpu_llm_args(),
        "repeats": args.repeats,
        "reply_tokens": args.reply_tokens,
        "models": results,
    }
    print(f"results: {write_results('models', summary)}")


# vLLM's engine core process re-imports the main module: start nothing on import.
if __name__ == "__main__":
    main()
