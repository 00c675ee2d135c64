"""Does a GPU profile fit its GPUs? Checks a Serve config's GPU fractions against the GPU's
memory, vLLM's memory share and the models' sizes, and says what to change.

    python -m salesagent.platform.fit serve_config.yaml --gpu h100 [--gpus 1]

The LLM replica runs the same check on itself at start-up (`check_llm_share`), before it
loads anything, so an overcommitted deployment fails at once with the reason instead of
running out of memory later or starving the replicas it shares the GPU with.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

GPU_MEMORY_GIB = {"h100": 80.0, "a100-80gb": 80.0, "a100-40gb": 40.0, "l4": 24.0, "a10g": 24.0}
_BYTES_PER_PARAM = {"bfloat16": 2, "float16": 2, "half": 2, "float32": 4, "int8": 1}
# Room a model needs beyond its weights: CUDA context and activations (and, for vLLM, at
# least some KV cache).
_OVERHEAD_GIB = 1.0
_KV_MIN_GIB = 1.0
# Whisper sizes by name when the folder is not on this machine (CTranslate2 float16).
_WHISPER_GIB = {"large": 3.1, "medium": 1.5, "small": 0.5, "base": 0.15, "tiny": 0.08}


class DoesNotFit(ValueError):
    """The configured GPU shares cannot hold what they are meant to hold."""


@dataclass(frozen=True)
class GpuShare:
    deployment: str
    num_gpus: float
    min_replicas: int = 1
    weights_gib: float | None = None  # None: unknown, only the fractions are checked
    vllm_memory_utilization: float | None = None  # set for the vLLM deployment


def weights_gib(model: str, dtype: str = "bfloat16") -> float | None:
    """The model's weights: the size of its weight files when the folder is here, else
    estimated from a parameter count in its name ("Qwen2.5-7B-Instruct": 7e9 x dtype)."""
    folder = Path(model)
    if folder.is_dir():
        files = [*folder.glob("*.safetensors"), *folder.glob("*.bin")]
        if files:
            return sum(f.stat().st_size for f in files) / 2**30
    if match := re.search(r"(\d+(?:\.\d+)?)B\b", folder.name, re.IGNORECASE):
        return float(match.group(1)) * 1e9 * _BYTES_PER_PARAM.get(dtype, 2) / 2**30
    if "whisper" in folder.name.lower():
        return next((g for size, g in _WHISPER_GIB.items() if size in folder.name.lower()), None)
    return None


def problems(shares: list[GpuShare], gpu_memory_gib: float, gpus: float | None = None) -> list[str]:
    """Everything that does not fit, each with what to change; [] when it all fits."""
    found = []
    for s in shares:
        name, share_gib = s.deployment, s.num_gpus * gpu_memory_gib
        if not 0 < s.num_gpus <= 1:
            found.append(f"{name}: num_gpus {s.num_gpus} must be above 0 and at most 1")
            continue
        if s.vllm_memory_utilization is not None:
            vllm_gib = s.vllm_memory_utilization * gpu_memory_gib
            if s.vllm_memory_utilization > s.num_gpus + 1e-9:
                found.append(
                    f"{name}: vLLM's gpu_memory_utilization {s.vllm_memory_utilization} takes "
                    f"{vllm_gib:.1f} GiB of the {gpu_memory_gib:.0f} GiB GPU, but num_gpus "
                    f"{s.num_gpus} reserves only {share_gib:.1f} GiB for it: set "
                    f"llm.gpu_memory_utilization to at most {s.num_gpus} or raise num_gpus"
                )
            needed = (s.weights_gib or 0) + _OVERHEAD_GIB + _KV_MIN_GIB
            if s.weights_gib and needed > vllm_gib:
                found.append(
                    f"{name}: the weights ({s.weights_gib:.1f} GiB) plus the minimum KV cache "
                    f"need about {needed:.1f} GiB, but vLLM may use {vllm_gib:.1f} GiB: raise "
                    "llm.gpu_memory_utilization and num_gpus together, or use a smaller or "
                    "quantized model"
                )
        elif s.weights_gib and s.weights_gib + _OVERHEAD_GIB > share_gib:
            at_least = (s.weights_gib + _OVERHEAD_GIB) / gpu_memory_gib
            found.append(
                f"{name}: the model needs about {s.weights_gib + _OVERHEAD_GIB:.1f} GiB, but "
                f"num_gpus {s.num_gpus} gives it {share_gib:.1f} GiB: raise num_gpus to at "
                f"least {at_least:.2f}"
            )
    needed_gpus = sum(s.num_gpus * s.min_replicas for s in shares)
    if gpus is not None and needed_gpus > gpus + 1e-9:
        found.append(
            f"the minimum replicas need {needed_gpus:.2f} GPUs but the cluster has {gpus:g}: "
            "lower min_replicas or num_gpus, or add GPU nodes"
        )
    return found


def shares_from_config(config: dict) -> list[GpuShare]:
    """The GPU shares of every application in a Serve config file."""
    shares = []
    for app in config.get("applications", []):
        args = app.get("args") or {}
        llm, stt = args.get("llm") or {}, args.get("stt") or {}
        for d in app.get("deployments", []):
            num_gpus = (d.get("ray_actor_options") or {}).get("num_gpus", 0)
            if not num_gpus:
                continue
            autoscaling = d.get("autoscaling_config") or {}
            replicas = autoscaling.get("min_replicas", d.get("num_replicas", 1))
            if d["name"] == "LLMDeployment":
                model = weights_gib(llm.get("model", ""), llm.get("dtype", "bfloat16"))
                utilization = llm.get("gpu_memory_utilization", 0.85)
            else:
                model = (
                    weights_gib(stt.get("model_dir", "")) if d["name"] == "STTDeployment" else None
                )
                utilization = None
            shares.append(GpuShare(d["name"], num_gpus, replicas, model, utilization))
    return shares


def check_llm_share(
    model: str, dtype: str, utilization: float, num_gpus: float, gpu_memory_gib: float | None
) -> None:
    """The LLM replica's own check at start-up; raises DoesNotFit with what to change.
    Without a GPU (CPU profile) there is nothing to check."""
    if not num_gpus or not gpu_memory_gib:
        return
    share = GpuShare("LLMDeployment", num_gpus, 1, weights_gib(model, dtype), utilization)
    if found := problems([share], gpu_memory_gib):
        raise DoesNotFit("; ".join(found))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="a Serve config file, e.g. serve_config.yaml")
    gpu = parser.add_mutually_exclusive_group(required=True)
    gpu.add_argument("--gpu", choices=sorted(GPU_MEMORY_GIB), help="the GPU model")
    gpu.add_argument("--gpu-memory-gib", type=float, help="memory of one GPU")
    parser.add_argument("--gpus", type=float, help="GPUs in the cluster (checks min replicas)")
    args = parser.parse_args()
    memory = args.gpu_memory_gib or GPU_MEMORY_GIB[args.gpu]
    shares = shares_from_config(yaml.safe_load(Path(args.config).read_text()))
    for s in shares:
        weights = f"{s.weights_gib:.1f} GiB" if s.weights_gib else "unknown size"
        print(f"{s.deployment}: {s.num_gpus} GPU x {s.min_replicas} min replicas, {weights}")
    if found := problems(shares, memory, args.gpus):
        print("does not fit:\n- " + "\n- ".join(found), file=sys.stderr)
        raise SystemExit(1)
    print(f"fits on {memory:.0f} GiB GPUs")


if __name__ == "__main__":
    main()
