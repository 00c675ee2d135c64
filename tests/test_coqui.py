"""Coqui TTS for real: the TTS deployment runs in its own environment (.venv-coqui, through
Ray's runtime_env as serve_config.coqui.yaml gives it) with the random-weight VITS voice
that `scripts/setup.sh --coqui` builds, and a call is spoken through it; a broken
environment or a missing model is reported by /health, saying what to fix."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from ray import serve
from websockets.sync.client import connect

from salesagent.platform.settings import default_model_cache
from salesagent.voice.audio import read_wav
from salesagent.voice.coqui_voice import RANDOM_VOICE_FOLDER
from salesagent.voice.stream_client import stream_call
from tests.conftest import API, deploy_graph, tiny_args, wait_until
from tests.speech import speech, spoken_wav

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "How much does the course cost?"


def coqui_config() -> tuple[dict, dict]:
    """serve_config.coqui.yaml's TTS settings and the TTS deployment's ray_actor_options."""
    config = yaml.safe_load((ROOT / "serve_config.coqui.yaml").read_text())
    (app,) = config["applications"]
    tts = next(d for d in app["deployments"] if d["name"] == "TTSDeployment")
    return app["args"]["tts"], tts["ray_actor_options"]


def coqui_samples(texts: list[str]) -> list[int]:
    """How many samples the same voice makes of each text, synthesized directly in the
    Coqui environment (the voice is deterministic)."""
    tts, options = coqui_config()
    script = (
        "import json, sys\n"
        "from salesagent.voice.tts import TTSSettings, make_tts\n"
        "engine = make_tts(TTSSettings(**json.loads(sys.argv[1])))\n"
        "print(json.dumps([len(engine.synthesize(t).samples) for t in sys.argv[2:]]))\n"
    )
    python = ROOT / options["runtime_env"]["py_executable"]
    out = subprocess.run(
        [str(python), "-c", script, json.dumps(tts), *texts],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def tts_health(base: str) -> dict:
    return httpx.get(f"{base}/health", timeout=30).json()["services"]["tts"]


@pytest.fixture(scope="module")
def coqui_app(serve_instance, redis_server, tiny_model_dir, tiny_app):
    tts, options = coqui_config()
    assert (default_model_cache() / RANDOM_VOICE_FOLDER / "model.pth").is_file(), (
        "run scripts/setup.sh --coqui"
    )
    args = tiny_args(tiny_model_dir, redis_server.url) | {"tts": tts}
    yield deploy_graph("coqui", serve_instance, args, tts_actor_options=options)
    serve.delete("coqui")


def test_the_config_runs_tts_in_the_coqui_environment():
    tts, options = coqui_config()
    assert tts["engine"] == "coqui"
    python = ROOT / options["runtime_env"]["py_executable"]
    assert (
        python.is_file() and python.parent != Path(sys.executable).parent
    )  # venvs link one interpreter
    # The main environment cannot import coqui-tts (its torch is vLLM's); the other can.
    assert subprocess.run([sys.executable, "-c", "import TTS"], capture_output=True).returncode
    check = "import ray, TTS; print(ray.__version__)"
    out = subprocess.run([str(python), "-c", check], capture_output=True, text=True, check=True)
    import ray

    assert out.stdout.strip() == ray.__version__  # one Ray across both environments


def test_a_voice_call_is_spoken_by_coqui(coqui_app):
    health = tts_health(coqui_app)
    assert health["status"] == "ok" and "CoquiTTS, 16000 Hz" in health["details"], health
    call_id = httpx.post(
        f"{coqui_app}{API}/start-call",
        json={"phone_number": "555-010-0100", "customer_name": "Ann Lee"},
    ).json()["call_id"]
    url = coqui_app.replace("http://", "ws://") + f"/ws/voice-chat/{call_id}"
    with connect(url, max_size=None) as ws:
        greeting = ws.recv(timeout=60)
        ws.send(spoken_wav(QUESTION))
        assert json.loads(ws.recv(timeout=60))["type"] == "user_text"
        reply = ws.recv(timeout=120)
    history = httpx.get(f"{coqui_app}{API}/conversation/{call_id}").json()["history"]
    expected = coqui_samples([history[0]["text"], history[-1]["text"]])
    for wav, samples in zip([greeting, reply], expected, strict=True):
        audio, rate = read_wav(wav)  # raises on anything but a valid WAV
        assert rate == 16000  # the model's own rate
        assert len(audio) == samples > 16000 // 2  # the whole line, as the voice says it
        assert np.isfinite(audio).all() and np.abs(audio).max() > 0


def test_a_streamed_reply_is_spoken_by_coqui_sentence_by_sentence(coqui_app):
    call_id = httpx.post(
        f"{coqui_app}{API}/start-call",
        json={"phone_number": "555-010-0100", "customer_name": "Ann Lee"},
    ).json()["call_id"]
    call = asyncio.run(stream_call(coqui_app, call_id, [speech(QUESTION)], output_rate=16000))
    (turn,) = call.turns
    assert turn.done and not turn.errors and turn.sentences, turn
    # Each sentence synthesized by itself, as it came: the audio is theirs, end to end.
    assert len(turn.audio) == 2 * sum(coqui_samples(turn.sentences))


@pytest.mark.parametrize(
    "broken, says",
    [
        ("environment", "needs the coqui-tts package"),  # a Python without coqui-tts
        ("model", "Coqui model file not found"),
        ("python", "taken more than 30s to be scheduled"),  # no such interpreter
    ],
)
def test_a_broken_coqui_setup_shows_as_critical_saying_what_to_fix(
    serve_instance, redis_server, tiny_model_dir, tiny_app, tmp_path, broken, says
):
    tts, options = coqui_config()
    if broken == "environment":
        options = options | {"runtime_env": {"py_executable": sys.executable}}
    elif broken == "python":
        options = options | {"runtime_env": {"py_executable": str(tmp_path / "bin/python")}}
    else:
        tts = tts | {"model_path": str(tmp_path / "no-model")}
    name = f"coqui-broken-{broken}"
    args = tiny_args(tiny_model_dir, redis_server.url) | {"tts": tts}
    base = deploy_graph(name, serve_instance, args, tts_actor_options=options, wait_ready=False)
    try:
        wait_until(lambda: says in tts_health(base)["details"], 180, what=f"/health on {says}")
        health = tts_health(base)
        assert health["status"] == "critical_issue", health
        if broken != "python":  # the replica's own words: how to fix it
            assert "setup.sh --coqui" in health["details"], health
    finally:
        serve.delete(name)
