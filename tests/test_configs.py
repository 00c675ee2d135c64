"""The Serve configs are valid, build through graph.build_app and name real deployments."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from graph import build_app
from salesagent.platform.fit import (
    GPU_MEMORY_GIB,
    DoesNotFit,
    check_llm_share,
    problems,
    shares_from_config,
)
from salesagent.platform.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "name", ["serve_config.yaml", "serve_config.cpu.yaml", "serve_config.coqui.yaml"]
)
def test_serve_config_is_valid_and_builds(name):
    config = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / name).read_text()))
    (app,) = config.applications
    assert app.import_path == "graph:build_app"
    Settings.from_args(app.args)  # every arg is a known setting of the right type

    built = build_app(app.args)
    graph = {built._bound_deployment.name}
    graph |= {a._bound_deployment.name for a in built._bound_deployment.init_args[1:]}
    assert {d.name for d in app.deployments} == graph
    for deployment in app.deployments:
        # A config's ray_actor_options replaces the code's: num_cpus must be restated.
        assert deployment.ray_actor_options.num_cpus is not None


def test_gpu_profile_gives_each_model_a_gpu_fraction():
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    options = {d["name"]: d for d in config["applications"][0]["deployments"]}
    assert 0 < options["LLMDeployment"]["ray_actor_options"]["num_gpus"] < 1
    assert 0 < options["STTDeployment"]["ray_actor_options"]["num_gpus"] < 1
    assert all("autoscaling_config" in d for d in options.values())


def gpu_config() -> dict:
    return yaml.safe_load((ROOT / "serve_config.yaml").read_text())


def deployment(config: dict, name: str) -> dict:
    return next(d for d in config["applications"][0]["deployments"] if d["name"] == name)


def test_the_gpu_profile_fits_one_h100_and_not_an_a10g():
    shares = shares_from_config(gpu_config())
    assert {s.deployment for s in shares} == {"LLMDeployment", "STTDeployment"}
    assert problems(shares, GPU_MEMORY_GIB["h100"], gpus=1) == []
    # A 7B model in bfloat16 is too big for half of a 24 GiB A10G: the check says so.
    (llm_problem, stt_problem) = problems(shares, GPU_MEMORY_GIB["a10g"], gpus=1)
    assert "weights (13.0 GiB)" in llm_problem and "smaller or quantized model" in llm_problem
    assert "raise num_gpus to at least" in stt_problem


def test_an_overcommitted_config_is_rejected_with_what_to_change():
    config = gpu_config()
    config["applications"][0]["args"]["llm"]["gpu_memory_utilization"] = 0.9
    deployment(config, "LLMDeployment")["autoscaling_config"]["min_replicas"] = 2
    found = problems(shares_from_config(config), GPU_MEMORY_GIB["h100"], gpus=1)
    assert any("set llm.gpu_memory_utilization to at most 0.5" in p for p in found), found
    assert any("minimum replicas need 1.15 GPUs but the cluster has 1" in p for p in found)


def test_the_llm_replica_checks_its_own_share_at_start_up():
    with pytest.raises(DoesNotFit, match="at most 0.25"):
        check_llm_share("/models/Qwen2.5-7B-Instruct", "bfloat16", 0.5, 0.25, 80)
    check_llm_share("/models/Qwen2.5-7B-Instruct", "bfloat16", 0.5, 0.5, 80)
    check_llm_share("/models/Qwen2.5-7B-Instruct", "bfloat16", 0.5, 0.0, None)  # CPU: no check


def test_the_fit_command_exits_non_zero_when_it_does_not_fit(tmp_path):
    config = gpu_config()
    config["applications"][0]["args"]["llm"]["gpu_memory_utilization"] = 0.9
    path = tmp_path / "overcommitted.yaml"
    path.write_text(yaml.safe_dump(config))
    run = [sys.executable, "-m", "salesagent.platform.fit"]
    ok = subprocess.run([*run, str(ROOT / "serve_config.yaml"), "--gpu", "h100", "--gpus", "1"])
    assert ok.returncode == 0
    bad = subprocess.run([*run, str(path), "--gpu", "h100"], capture_output=True, text=True)
    assert bad.returncode == 1 and "does not fit" in bad.stderr


def test_an_unknown_tts_engine_fails_the_config_naming_the_engines():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="'hibari', 'piper' or 'coqui'"):
        Settings.from_args({"tts": {"engine": "festival"}})
