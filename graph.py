"""The deployment graph: one builder for every profile.

`serve run serve_config.yaml` (GPU clusters) and `serve run serve_config.cpu.yaml`
(this machine) both call `build_app` with their `args`; replica counts, autoscaling
and CPU/GPU shares come from each file's `deployments:` section.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from deployments.ingress import SalesIngress
from deployments.llm import LLMDeployment
from deployments.stt import STTDeployment
from deployments.tts import TTSDeployment
from salesagent.platform.settings import Settings
from salesagent.sales.catalog import load_catalog
from salesagent.sales.conversation import sample_turn


def build_app(args: dict[str, Any] | None = None) -> Application:
    settings = Settings.from_args(args)
    return SalesIngress.bind(
        settings,
        LLMDeployment.bind(
            settings.llm, sample_turn=sample_turn(load_catalog(settings.catalog_path))
        ),
        STTDeployment.bind(settings.stt),
        TTSDeployment.bind(settings.tts),
    )
