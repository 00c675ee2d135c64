"""A multi-node Ray cluster on this machine, for the cluster-profile test: a head and
workers started with `ray start` on loopback, each declaring logical GPUs.

The test process is already connected to the suite's own Ray instance, so everything that
needs a connection to this cluster runs in a subprocess of this module:

    python -m tests.cluster placement --address 127.0.0.1:PORT   # JSON: replicas per node
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))
SERVE = str(Path(sys.executable).with_name("serve"))


class LocalCluster:
    def __init__(self, port: int, temp_dir: Path, http_port: int):
        self.address = f"127.0.0.1:{port}"
        # Serve keeps the HTTP options of its first deployment: every app here uses these.
        self.http_port = http_port
        self.temp_dir = temp_dir
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}

    def _ray(self, *args: str) -> None:
        subprocess.run([RAY, *args], env=self.env, check=True, capture_output=True, timeout=120)

    def start_head(self, num_cpus: int, num_gpus: int) -> None:
        self._ray(
            "start", "--head", "--node-ip-address=127.0.0.1",
            f"--port={self.address.split(':')[1]}", f"--num-cpus={num_cpus}",
            f"--num-gpus={num_gpus}", "--include-dashboard=false", "--disable-usage-stats",
            f"--temp-dir={self.temp_dir}",
        )  # fmt: skip

    def add_worker(self, num_cpus: int, num_gpus: int) -> None:
        self._ray(
            "start", f"--address={self.address}", "--node-ip-address=127.0.0.1",
            f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}", "--disable-usage-stats",
        )  # fmt: skip

    def _processes(self) -> list[psutil.Process]:
        """This cluster's Ray processes and everything they started (vLLM's engine
        processes among them), never the test suite's own Ray instance."""
        found = set()
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if self.address in cmdline or str(self.temp_dir) in cmdline:
                with suppress(psutil.NoSuchProcess):
                    found |= {proc, *proc.children(recursive=True)}
        return list(found)

    def kill_workers(self) -> int:
        """SIGKILL every worker node's raylet and all it started, as a lost machine would."""
        raylets = [
            p
            for p in self._processes()
            if "raylet/raylet" in " ".join(p.cmdline()) and "--head" not in p.cmdline()
        ]
        for raylet in raylets:
            for proc in [*raylet.children(recursive=True), raylet]:
                proc.send_signal(signal.SIGKILL)
        return len(raylets)

    def placement(self) -> dict[str, list[str]]:
        """Where each deployment's replicas run (see `placement` below)."""
        return json.loads(self._driver("placement"))

    def overcommitted_llm(self) -> dict[str, str]:
        """How Serve reports an LLM deployment that does not fit (see below)."""
        return json.loads(self._driver("overcommitted-llm"))

    def _driver(self, command: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "tests.cluster", command, "--address", self.address],
            env=self.env, check=True, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        return out.stdout.strip().splitlines()[-1]

    def serve_run(self, config: Path) -> None:
        """Deploy a Serve config file and return without waiting for it to be ready."""
        subprocess.run(
            [SERVE, "run", "--non-blocking", f"--address={self.address}", str(config)],
            env=self.env, check=True, capture_output=True, timeout=300,
        )  # fmt: skip

    def stop(self) -> None:
        for proc in self._processes():
            with suppress(psutil.NoSuchProcess):
                proc.kill()


def placement() -> dict[str, list[str]]:
    """Alive Serve replicas of each deployment: the node each one runs on ("head" or
    "worker-<id>")."""
    import ray
    from ray._private.state import actors

    head = next(
        n["NodeID"]
        for n in ray.nodes()
        if n["Alive"] and "node:__internal_head__" in n["Resources"]
    )
    where: dict[str, list[str]] = {}
    for info in actors().values():
        name = info.get("Name") or ""
        if info["State"] != "ALIVE" or not name.startswith("SERVE_REPLICA::"):
            continue
        deployment = name.split("#")[1]
        node = info["Address"]["NodeID"]
        where.setdefault(deployment, []).append("head" if node == head else f"worker-{node[:6]}")
    return {d: sorted(nodes) for d, nodes in sorted(where.items())}


def overcommitted_llm(timeout_s: float = 120) -> dict[str, str]:
    """Deploy an LLM whose vLLM memory share (0.9 of an 80 GiB GPU) exceeds its GPU
    fraction (0.25); the status Serve reports for it once it gives up."""
    from ray import serve
    from ray.serve.api import _run

    from deployments.llm import LLMDeployment
    from salesagent.platform.settings import LLMSettings

    settings = LLMSettings(gpu_memory_utilization=0.9, gpu_memory_gib=80)
    options = {"num_cpus": 0.1, "num_gpus": 0.25}
    app = LLMDeployment.options(ray_actor_options=options).bind(settings)
    _run(app, name="overcommitted", route_prefix=None, _blocking=False)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = serve.status().applications["overcommitted"].deployments["LLMDeployment"]
        if status.status not in ("UPDATING", "UPSCALING", "DOWNSCALING"):
            break
        time.sleep(1)
    serve.delete("overcommitted")
    return {"status": status.status.value, "message": status.message}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["placement", "overcommitted-llm"])
    parser.add_argument("--address", required=True)
    args = parser.parse_args()
    import ray

    ray.init(address=args.address, logging_level="ERROR")
    result = placement() if args.command == "placement" else overcommitted_llm()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
