"""One settings object for the whole service: environment variables, then the Serve config's args.

`Settings()` reads `SALES_*` environment variables (nested with `__`, for example
`SALES_LLM__MAX_TOKENS=64`); `Settings.from_args(args)` lays the Serve config's
`args` mapping over that. The resolved object is handed to every deployment, so a
replica never depends on the environment of the node it lands on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from salesagent.platform.capacity import CapacitySettings
from salesagent.platform.health import HealthRules
from salesagent.voice.stt import STTSettings
from salesagent.voice.tts import TTSSettings
from salesagent.voice.turns import TurnSettings

APP_TITLE = "AI Voice Sales Agent (Qwen LLM)"
APP_VERSION = "0.4.0"


def default_model_cache() -> Path:
    """Where prepared models live: $SALES_MODEL_CACHE, else the user's cache folder."""
    if configured := os.environ.get("SALES_MODEL_CACHE"):
        return Path(configured)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "voice-sales-agent" / "models"


def default_llm_model() -> str:
    """The Qwen folder that `python -m salesagent.platform.models` prepares."""
    from salesagent.platform.models import QWEN_FOLDER_NAME

    return str(default_model_cache() / QWEN_FOLDER_NAME)


class LLMSettings(BaseModel):
    """vLLM engine args and sampling defaults. `model` is a local folder (no hub at run time)."""

    model: str = Field(default_factory=default_llm_model)
    dtype: str = "bfloat16"
    max_model_len: int = 2048
    # GPU: the share of the GPU's memory vLLM may take; keep it within the replica's num_gpus.
    gpu_memory_utilization: float = 0.85
    # The GPU's memory for the start-up fit check, where CUDA cannot report it (logical
    # GPUs in tests); unset on a real GPU, where it is read from the device.
    gpu_memory_gib: float | None = None
    # CPU: KV cache size in whole GiB (vLLM reserves ~20 GB when this is unset).
    kv_cache_space_gib: int = 1
    # CPU: the cores vLLM's worker binds its threads to ("0-1"), "nobind", or None for
    # vLLM's "auto", which keeps one core per worker for its scheduler process.
    cpu_threads_bind: str | None = None
    max_num_seqs: int = 16
    # KV cache block size in tokens; None keeps vLLM's default (16 on GPU, 128 on CPU).
    block_size: int | None = None
    enforce_eager: bool = True
    max_tokens: int = 80
    temperature: float = 0.6
    top_p: float = 0.9
    seed: int = 0
    # Before a replica takes calls, one sample turn runs alone, then this many at once (a
    # fresh engine's first requests are slow); 0: no warm-up.
    warm_up_calls: int = Field(default=2, ge=0, le=64)
    # A turn that takes longer than this fails with 503 instead of hanging the caller.
    request_timeout_s: float = 120.0


class RedisSettings(BaseModel):
    url: str = "redis://127.0.0.1:6379/0"
    # Ended calls are kept this long, then Redis expires them.
    ended_call_ttl_s: int = 7 * 24 * 3600
    # A call nobody touches for this long is expired too (an abandoned dialer session).
    idle_call_ttl_s: int = 24 * 3600
    # Turns on one call are serialized by a Redis lock: how long to wait for it, and how
    # long a holder may keep it (it must outlast the slowest LLM turn).
    turn_lock_wait_s: float = 300.0
    turn_lock_ttl_s: float = 180.0
    socket_timeout_s: float = 5.0


class ConversationSettings(BaseModel):
    max_message_chars: int = 2000
    # How many most recent history entries go into the prompt (the catalog always does).
    prompt_history_entries: int = 16
    # Replies are spoken: at most this many sentences.
    max_reply_sentences: int = 2
    # Speech may start with the first sentence's leading clause once it has this many
    # words (0: whole sentences only).
    first_clause_words: int = 5
    # The time zone of a call-back when the lead's phone number does not tell one (IANA).
    default_timezone: str = "UTC"


class AudioSettings(BaseModel):
    """Limits on customer audio, for uploads and WebSocket messages alike."""

    max_bytes: int = 10 * 1024 * 1024
    max_seconds: float = 60.0


class LimitsSettings(BaseModel):
    """Bounds on what one client can ask of the service; each is answered with a JSON 4xx."""

    # JSON request bodies; audio uploads may be audio.max_bytes plus the form's overhead.
    max_json_body_bytes: int = 64 * 1024
    max_turns_per_call: int = 100
    max_call_seconds: float = 3600.0
    # Text (control) messages on the voice WebSocket; audio messages are bound by audio.
    max_ws_text_bytes: int = 4096
    # How long an open WebSocket holds its call (renewed while open): one socket per call.
    ws_claim_ttl_s: float = 30.0


class AuthSettings(BaseModel):
    """API keys (created with `python -m salesagent.platform.auth`, stored hashed in Redis)."""

    enabled: bool = False  # the GPU profile turns this on; the local one binds to loopback
    requests_per_minute: int = 120  # per key, unless the key sets its own


class TelephonySettings(BaseModel):
    """Phone calls through Twilio (README "Phone calls"); off until the four are set."""

    account_sid: str = ""  # AC..., from the Twilio console
    # The auth token: SALES_TELEPHONY__AUTH_TOKEN, or a file holding it (a mounted secret).
    auth_token: SecretStr = SecretStr("")
    auth_token_file: str = ""
    caller_number: str = ""  # the Twilio number calls come from, E.164
    # Where Twilio reaches this service (https://agent.example.com, with any route prefix).
    public_base_url: str = ""
    # Twilio's REST API; tests point it at a local stand-in.
    api_base_url: str = "https://api.twilio.com"
    # Answering-machine detection for outbound calls ("" turns it off); a machine gets the
    # catalog's voicemail message and the call the voicemail disposition.
    machine_detection: str = "DetectMessageEnd"
    ring_timeout_s: int = Field(default=30, ge=5, le=600)
    # The keypad key that means "do not call me again".
    opt_out_digit: str = Field(default="9", pattern=r"^[0-9*#]$")
    # How long the stream token in the TwiML stays valid (Twilio connects within a second).
    stream_token_ttl_s: float = Field(default=60.0, gt=0)
    # Wait at most this long for Twilio to echo the last mark before hanging up.
    last_mark_wait_s: float = Field(default=10.0, ge=0)
    # The API key id inbound calls are listed under (GET /calls), "" without auth.
    inbound_owner: str = ""

    def token(self) -> str:
        if self.auth_token.get_secret_value():
            return self.auth_token.get_secret_value()
        if self.auth_token_file:
            return Path(self.auth_token_file).read_text().strip()
        return ""

    def missing(self) -> list[str]:
        """The settings still to set before calls can be placed or taken."""
        needed = {
            "telephony.account_sid": self.account_sid,
            "telephony.auth_token (or auth_token_file)": self.auth_token.get_secret_value()
            or self.auth_token_file,
            "telephony.caller_number": self.caller_number,
            "telephony.public_base_url": self.public_base_url,
        }
        return [name for name, value in needed.items() if not value]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SALES_", env_nested_delimiter="__")

    app_title: str = APP_TITLE
    app_version: str = APP_VERSION
    catalog_path: str = ""  # empty: the catalog shipped in the package
    llm: LLMSettings = Field(default_factory=LLMSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    conversation: ConversationSettings = Field(default_factory=ConversationSettings)
    audio: AudioSettings = Field(default_factory=AudioSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    stt: STTSettings = Field(default_factory=STTSettings)
    tts: TTSSettings = Field(default_factory=TTSSettings)
    # The streaming voice mode: voice activity, end of turn, barge-in, audio pacing.
    turns: TurnSettings = Field(default_factory=TurnSettings)
    telephony: TelephonySettings = Field(default_factory=TelephonySettings)
    # Call admission and the call-aware autoscaling policy (salesagent.platform.capacity).
    capacity: CapacitySettings = Field(default_factory=CapacitySettings)
    # /health answers within this bound even when a deployment is pending or dead.
    health_timeout_s: float = 1.5
    health: HealthRules = Field(default_factory=HealthRules)
    # GET /metrics waits this long for every node's exporter (a loaded node answers slowly).
    metrics_scrape_timeout_s: float = 5.0

    @classmethod
    def from_args(cls, args: dict[str, Any] | None = None) -> Settings:
        """Environment first, then the Serve config's args, merged section by section."""
        base = cls().model_dump()
        for key, value in (args or {}).items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                base[key] = {**base[key], **value}
            else:
                base[key] = value
        return cls.model_validate(base)
