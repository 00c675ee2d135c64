"""The call console in a real browser: Debian's Chromium driven by Playwright, its fake
microphone fed from a WAV of real speech, against the real graph (tiny model, real Whisper,
Silero VAD and voice). Screenshots go to $SALES_TEST_ARTIFACTS (default: a temp folder)."""

from __future__ import annotations

import os
import shutil
import tempfile
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import soxr
from playwright.sync_api import Page, expect, sync_playwright

from salesagent.voice.audio import read_wav
from tests.conftest import API, make_key
from tests.speech import spoken_wav, word_error_rate

# A question the model answers (a price question gets the catalog's answer at once, and
# the page would be speaking it before the check that nothing plays until the answer).
QUESTION = "Sorry, what does the course cover?"
ARTIFACTS = Path(
    os.environ.get("SALES_TEST_ARTIFACTS", Path(tempfile.gettempdir()) / "sales-tests")
)


def microphone_wav(path: Path, parts: list[float | str], rate: int = 16000) -> Path:
    """A WAV for Chromium's fake microphone: seconds of silence (numbers) and spoken lines."""
    pieces = []
    for part in parts:
        if isinstance(part, str):
            samples, source_rate = read_wav(spoken_wav(part))
            pieces.append(soxr.resample(samples, source_rate, rate))
        else:
            pieces.append(np.zeros(int(part * rate), np.float32))
    pcm = (np.clip(np.concatenate(pieces), -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return path


@contextmanager
def browser_page(microphone: Path | None) -> Iterator[Page]:
    """A page in headless Chromium; its microphone plays `microphone` (looped by Chromium),
    or, with None, a microphone request is refused as a user would refuse it."""
    chromium = shutil.which("chromium")
    if not chromium:
        pytest.fail("chromium is not installed; run scripts/setup.sh --tests")
    args = ["--use-fake-device-for-media-stream", "--autoplay-policy=no-user-gesture-required"]
    if microphone:
        args += [
            "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-audio-capture={microphone}",
        ]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=args)
        try:
            page = browser.new_context().new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            yield page
            assert not errors, errors  # no uncaught script error on the page
        finally:
            browser.close()


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def record_events(page: Page) -> None:
    """Keep, in order, the agent's speaking light going on or off and each line the lead
    says, in `window.testEvents`: assertions read the order, not a moment's snapshot."""
    page.evaluate(
        """() => {
        window.testEvents = [];
        const light = document.getElementById("agent-speaking");
        let on = light.dataset.on;
        new MutationObserver(() => {  // the page sets the light every 100 ms: changes only
          if (light.dataset.on !== on)
            window.testEvents.push(light.dataset.on === "true" ? "agent on" : "agent off");
          on = light.dataset.on;
        }).observe(light, { attributes: true, attributeFilter: ["data-on"] });
        new MutationObserver(() => window.testEvents.push("interrupted")).observe(
          document.getElementById("interruptions"),
          { childList: true, characterData: true, subtree: true }
        );
        new MutationObserver((changes) => {
          for (const change of changes)
            for (const node of change.addedNodes)
              if (node.classList && node.classList.contains("customer"))
                window.testEvents.push("customer line");
        }).observe(document.getElementById("transcript"), { childList: true });
      }"""
    )


def test_a_call_spoken_through_the_page_with_a_barge_in(tiny_app, tmp_path):
    # The lead starts talking 2.5 s into the greeting: the agent stops, hears the question,
    # and answers it.
    wav = microphone_wav(tmp_path / "mic.wav", [2.5, QUESTION, 40])
    with browser_page(wav) as page:
        page.goto(f"{tiny_app}/console")
        page.fill("#name", "Ann Lee")
        page.click("#start")
        expect(page.locator("#agent-speaking")).to_have_attribute("data-on", "true", timeout=30_000)
        greeting = page.locator(".line.agent").first
        expect(greeting).to_contain_text("this is Alex")  # the greeting plays

        record_events(page)

        expect(page.locator("#interruptions")).to_have_text("1", timeout=30_000)
        expect(greeting).to_have_class("line agent interrupted")
        # Its queued audio is dropped at once, and nothing plays until the answer.
        expect(page.locator("#agent-speaking")).to_have_attribute("data-on", "false", timeout=1_000)
        customer = page.locator(".line.customer").first
        expect(customer).to_be_visible(timeout=60_000)
        assert word_error_rate(QUESTION, customer.locator(".text").inner_text()) < 0.5

        expect(page.locator("#turns tr")).to_have_count(1, timeout=120_000)  # the reply played
        # In the order the page saw them: after the interruption the agent spoke again only
        # once the lead's words were heard (the answer may follow them within 0.1 s).
        events = page.evaluate("window.testEvents")
        after = events[events.index("interrupted") :]
        assert after.index("customer line") < after.index("agent on"), events
        answer = page.locator(".line.agent").nth(1).locator(".text").inner_text()
        assert answer
        ttfa = float(page.get_attribute("#turns tr", "data-ttfa"))
        assert 0 < ttfa < 120
        # The state is read again after the turn.
        expect(page.locator("#state [data-field=stage]")).not_to_have_text("–")
        screenshot(page, "console-call")
        call_id = page.inner_text("#call-id")

    convo = httpx.get(f"{tiny_app}{API}/conversation/{call_id}").json()
    greeted, heard, answered = convo["history"][:3]
    assert greeted["interrupted"] and greeted["speaker"] == "agent"
    assert "Hi Ann" in greeted["text"]
    assert heard["speaker"] == "customer" and word_error_rate(QUESTION, heard["text"]) < 0.5
    assert answered["speaker"] == "agent" and " ".join(answered["text"].split()) == answer


def test_keys_on_the_page_and_the_calls_view(secured_app, redis_server, tmp_path):
    key = make_key(redis_server.url, "console")
    wav = microphone_wav(tmp_path / "silence.wav", [30])
    with browser_page(wav) as page:
        page.goto(f"{secured_app}/console")
        page.fill("#key", "not-a-key")
        page.click("#start")
        expect(page.locator("#status")).to_contain_text("The API key was refused", timeout=15_000)
        expect(page.locator("#start")).to_be_enabled()

        page.fill("#key", key)
        page.click("#start")  # the socket carries the key as a subprotocol
        expect(page.locator("#status")).to_contain_text("Connected", timeout=30_000)
        expect(page.locator(".line.agent").first).to_contain_text("this is Alex", timeout=30_000)
        call_id = page.inner_text("#call-id")
        page.click("#end")
        expect(page.locator("#status")).to_have_text("Call ended by client.", timeout=15_000)
        expect(page.locator("#state [data-field=disposition]")).not_to_have_text("in progress")

        page.click("text=Calls")  # the key is kept for the tab
        row = page.locator(f"tr[data-call-id='{call_id}']")
        expect(row).to_be_visible(timeout=15_000)
        row.click()
        expect(page.locator("#history .line.agent").first).to_contain_text("this is Alex")
        screenshot(page, "console-calls")
    listed = httpx.get(f"{secured_app}{API}/calls", headers={"X-API-Key": key}).json()
    assert [c["call_id"] for c in listed["calls"]] == [call_id]


def test_a_refused_microphone_is_told_and_starts_no_call(tiny_app):
    before = httpx.get(f"{tiny_app}{API}/calls").json()["total"]
    with browser_page(None) as page:
        page.goto(f"{tiny_app}/console/")
        page.click("#start")
        expect(page.locator("#status")).to_contain_text("microphone was refused", timeout=15_000)
        expect(page.locator("#start")).to_be_enabled()  # the flow has stopped before start-call
    assert httpx.get(f"{tiny_app}{API}/calls").json()["total"] == before
