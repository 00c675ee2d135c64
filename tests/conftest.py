"""Shared fixtures: a real Redis server, one Ray Serve instance, the tiny and the real model.

Everything binds to 127.0.0.1; `scripts/test.sh` also runs the suite in a network
namespace that has only loopback. Ray and Serve start once per session (~10 s),
and each model engine once per app that needs it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.tiny_model import build_tiny_qwen

API = "/api/v1/sales"
# Ray's worker ports are 10002-19999: test servers stay above them.
_next_port = iter(range(23000 + (os.getpid() % 500) * 10, 65000))


def free_port() -> int:
    for port in _next_port:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError("no free port")


def wait_until(condition, timeout_s: float, interval_s: float = 0.2, what: str = "condition"):
    """Poll `condition` until it returns a truthy value; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if result := condition():
                return result
        except Exception:  # not up yet
            pass
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")


class RedisServer:
    """A redis-server process; with `aof`, every write is fsynced to its append-only file
    before Redis acknowledges it, and a restart in the same folder reloads it."""

    def __init__(self, workdir: Path, aof: bool = False):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._workdir = workdir
        self._aof = aof
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self._workdir),
                "--save",
                "",
                "--appendonly",
                "yes" if self._aof else "no",
                "--appendfsync",
                "always",
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_until(self.ping, 10, what="redis-server")

    def ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    def stop(self) -> None:
        if self._proc:
            self._proc.terminate()
            self._proc.wait(10)
            self._proc = None

    def crash(self) -> None:
        """SIGKILL: no shutdown save, only what the append-only file already holds."""
        if self._proc:
            self._proc.kill()
            self._proc.wait(10)
            self._proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed; run scripts/setup.sh")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    cache = Path(os.environ.get("SALES_TEST_CACHE", Path(tempfile.gettempdir()) / "sales-tests"))
    return build_tiny_qwen(cache / "tiny-qwen2")


@pytest.fixture(scope="session")
def serve_instance() -> Iterator[str]:
    """Ray on loopback and Serve's HTTP proxy on 127.0.0.1; yields the base URL."""
    import ray
    from ray import serve

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    port = free_port()
    # Logical CPUs: the apps under test ask for fractions of these, not of the 2 real cores.
    # Metrics reach the node's exporter every second (default 10 s), so tests see them soon.
    ray.init(
        _node_ip_address="127.0.0.1",
        num_cpus=8,
        include_dashboard=False,
        _system_config={"metrics_report_interval_ms": 1000},
    )
    # Access logs off: a line per request would bury test failures in CI output.
    serve.start(
        http_options={"host": "127.0.0.1", "port": port},
        logging_config={"enable_access_log": False},
    )
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


def tiny_args(model_dir: Path, redis_url: str, **llm) -> dict:
    """Serve args for the tiny model: small windows so every turn is fast."""
    return {
        "llm": {
            "model": str(model_dir),
            "dtype": "bfloat16",
            "max_model_len": 1024,
            "max_tokens": 24,
            "kv_cache_space_gib": 1,
            **llm,
        },
        "redis": {"url": redis_url, "turn_lock_wait_s": 120},
        "stt": {"cpu_threads": 2},
    }


def deploy(app_name: str, route_prefix: str, args: dict, base_url: str, wait_ready=True) -> str:
    """Deploy the graph as `app_name`; without `wait_ready`, return once its ingress answers
    (for apps whose other deployments are meant to stay pending)."""
    from ray.serve.api import _run

    from graph import build_app

    _run(build_app(args), name=app_name, route_prefix=route_prefix, _blocking=wait_ready)
    url = base_url + (route_prefix if route_prefix != "/" else "")
    wait_until(
        lambda: httpx.get(f"{url}/health", timeout=5).status_code == 200,
        300,
        what=f"{app_name} ingress",
    )
    return url


@pytest.fixture(scope="session")
def tiny_app(serve_instance, redis_server, tiny_model_dir) -> str:
    """The whole graph on the tiny random-weight model; yields its base URL."""
    return deploy("tiny", "/", tiny_args(tiny_model_dir, redis_server.url), serve_instance)


JSON_LIMIT = 2048  # the secured app's body limit


@pytest.fixture(scope="module")
def secured_app(serve_instance, redis_server, tiny_model_dir, tiny_app) -> Iterator[str]:
    """The graph with API keys on (sharing the tiny app's LLM replica), at /secured."""
    from ray import serve

    args = tiny_args(tiny_model_dir, redis_server.url)
    args["auth"] = {"enabled": True, "requests_per_minute": 600}
    args["limits"] = {"max_turns_per_call": 0, "max_json_body_bytes": JSON_LIMIT}
    yield deploy_graph("secured", serve_instance, args)
    serve.delete("secured")


@pytest.fixture()
def client(tiny_app) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=tiny_app, timeout=60) as c:
        yield c


def deploy_graph(
    name,
    base_url,
    args,
    stt_engine=None,
    tts_engine=None,
    tts_replicas=1,
    llm_engine=None,
    tts_actor_options=None,
    wait_ready=True,
) -> str:
    """The graph as app `name` at /`name`, sharing the tiny app's LLM replica unless an
    `llm_engine` is given, with the STT or TTS engine given (faulty ones, for fault tests)
    and the TTS replica's `ray_actor_options` (its runtime_env, say); returns its base URL
    once the ingress answers (and, with `wait_ready`, once every deployment runs)."""
    from ray import serve
    from ray.serve.api import _run

    from deployments.ingress import SalesIngress
    from deployments.llm import LLMDeployment
    from deployments.stt import STTDeployment
    from deployments.tts import TTSDeployment
    from salesagent.platform.settings import Settings

    settings = Settings.from_args(args)
    ingress = SalesIngress.bind(
        settings,
        LLMDeployment.options(ray_actor_options={"num_cpus": 0.1}).bind(
            settings.llm, engine=llm_engine
        )
        if llm_engine
        else serve.get_deployment_handle("LLMDeployment", app_name="tiny"),
        STTDeployment.bind(settings.stt, engine=stt_engine),
        TTSDeployment.options(
            num_replicas=tts_replicas,
            **({"ray_actor_options": tts_actor_options} if tts_actor_options else {}),
        ).bind(settings.tts, engine=tts_engine),
    )
    _run(ingress, name=name, route_prefix=f"/{name}", _blocking=wait_ready)
    url = f"{base_url}/{name}"
    wait_until(lambda: httpx.get(f"{url}/health").status_code == 200, 120, what=name)
    return url


def kill_replicas(app: str, deployment: str) -> int:
    """Kill every replica actor of `deployment` in `app` (Serve starts new ones)."""
    import ray

    prefix = f"SERVE_REPLICA::{app}#{deployment}#"
    replicas = [
        a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)
    ]
    for replica in replicas:
        ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]))
    return len(replicas)


def make_key(redis_url: str, name: str, requests_per_minute: int | None = None) -> str:
    """A new API key in the Redis at `redis_url`; the raw key."""
    import asyncio

    import redis.asyncio as aioredis

    from salesagent.platform.auth import KeyStore

    async def create() -> str:
        client = aioredis.from_url(redis_url, decode_responses=True)
        try:
            raw, _ = await KeyStore(client, 600).create(name, requests_per_minute)
            return raw
        finally:
            await client.aclose()

    return asyncio.run(create())


def away_from_a_minute_boundary() -> float:
    """Seconds to wait so that a short burst of requests counts in one rate-limit minute."""
    left = 60 - time.time() % 60
    return left + 0.1 if left < 3 else 0.0
