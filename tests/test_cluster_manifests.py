"""The cluster manifests: Kubernetes objects against the Kubernetes schema, the RayService's
pod templates likewise, its Serve config against Ray's schema and equal to serve_config.yaml."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import yaml
from ray.serve.schema import ServeDeploySchema

from salesagent.platform.fit import GPU_MEMORY_GIB, problems, shares_from_config

ROOT = Path(__file__).resolve().parent.parent
KUBERAY = ROOT / "cluster" / "kuberay"
K8S = "1.37.0"


def documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((KUBERAY / name).read_text()) if d]


def test_redis_manifests_are_valid_kubernetes_with_aof():
    objects = documents("redis.yaml")
    for obj in objects:
        kubernetes_validate.validate(obj, K8S, strict=True)
    args = {
        o["metadata"]["name"]: o["spec"]["template"]["spec"]["containers"][0]["args"]
        for o in objects
        if o["kind"] == "StatefulSet"
    }
    assert set(args) == {"redis-sessions", "redis-gcs"}
    assert all(a[a.index("--appendonly") + 1] == "yes" for a in args.values())
    sessions = args["redis-sessions"]  # no acknowledged turn lost in a crash
    assert sessions[sessions.index("--appendfsync") + 1] == "always"


def test_rayservice_embeds_the_gpu_serve_config():
    (service,) = documents("rayservice.yaml")
    assert (service["apiVersion"], service["kind"]) == ("ray.io/v1", "RayService")
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert embedded == yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    ServeDeploySchema.model_validate(embedded)
    assert problems(shares_from_config(embedded), GPU_MEMORY_GIB["h100"], gpus=1) == []


def test_rayservice_pods_are_valid_and_wired_to_redis():
    (service,) = documents("rayservice.yaml")
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["gcsFaultToleranceOptions"]["redisAddress"].startswith("redis-gcs:")
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        pod = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}}
        kubernetes_validate.validate({**pod, "template": group["template"]}, K8S, strict=True)
        (container,) = group["template"]["spec"]["containers"]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["SALES_REDIS__URL"].startswith("redis://redis-sessions:")
    (gpu,) = cluster["workerGroupSpecs"]
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == gpu["rayStartParams"]["num-gpus"] == "1"


def test_the_a10g_sizing_in_the_docs_fits():
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    app = config["applications"][0]
    app["args"]["llm"].update(model="/models/Qwen2.5-3B-Instruct", gpu_memory_utilization=0.6)
    for d in app["deployments"]:
        if d["name"] == "LLMDeployment":
            d["ray_actor_options"]["num_gpus"] = 0.6
        if d["name"] == "STTDeployment":
            d["ray_actor_options"]["num_gpus"] = 0.25
    assert problems(shares_from_config(config), GPU_MEMORY_GIB["a10g"], gpus=1) == []
