"""Phone calls in tests: the service's telephony settings for the simulated Twilio, and
calls placed through it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx
import numpy as np
import soxr

from salesagent.telephony.simulator import Callee, FakeTwilio, SimulatedCall
from salesagent.voice.audio import read_wav
from tests.conftest import API
from tests.speech import spoken_wav

ACCOUNT = "AC" + "5" * 32
AUTH_TOKEN = "simulated-auth-token-not-a-secret"
CALLER = "+15005550006"


@dataclass
class PhoneApp:
    url: str  # the service (its public base URL too: Twilio reaches it here)
    twilio_port: int  # where the simulated Twilio's REST API listens


def telephony_args(public_url: str, twilio_port: int) -> dict:
    return {
        "account_sid": ACCOUNT,
        "auth_token": AUTH_TOKEN,
        "caller_number": CALLER,
        "public_base_url": public_url,
        "api_base_url": f"http://127.0.0.1:{twilio_port}",
        "last_mark_wait_s": 5,
    }


def phone_speech(text: str) -> np.ndarray:
    """`text` spoken, at the phone's 8 kHz."""
    samples, rate = read_wav(spoken_wav(text))
    return soxr.resample(samples, rate, 8000).astype(np.float32)


async def dial(
    app: PhoneApp, number: str, callee: Callee, twilio: FakeTwilio, timeout_s: float = 240
) -> tuple[dict, SimulatedCall]:
    """POST /dial for `number`, then wait until the simulated phone call is over."""
    twilio.callees[number] = callee
    async with httpx.AsyncClient(timeout=60) as client:
        r = await client.post(
            f"{app.url}{API}/dial", json={"phone_number": number, "customer_name": "Ann Lee"}
        )
    assert r.status_code == 201, r.text
    call = next(c for c in twilio.calls.values() if c.sid == r.json()["call_sid"])
    await asyncio.wait_for(call.done.wait(), timeout_s)
    return r.json(), call


def simulated_twilio() -> FakeTwilio:
    return FakeTwilio(ACCOUNT, AUTH_TOKEN, CALLER)


def conversation(app: PhoneApp, call_id: str) -> dict:
    return httpx.get(f"{app.url}{API}/conversation/{call_id}").json()
