"""Both Serve configs are valid, build through graph.build_app and name real deployments."""

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from graph import build_app
from salesagent.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["serve_config.yaml", "serve_config.cpu.yaml"])
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
