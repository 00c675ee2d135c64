// The call page: start a call, talk to the agent through the microphone over the streaming
// WebSocket mode (?mode=stream), hear its sentences as they arrive, see the call's state.
// The messages are the README's "Streaming voice" tables.
import { API, WS_BASE, apiKey, el, renderState, request, seconds, setApiKey } from "./common.js";

const INPUT_RATE = 16000; // what the microphone frames are resampled to, and declared
const OUTPUT_RATE = 24000; // the agent's PCM16, played through Web Audio
const FRAME_MS = 20;
const ACK_EVERY_MS = 200; // playback acknowledgements: what the lead has heard

const $ = (id) => document.getElementById(id);

// --- the microphone: an AudioWorklet that posts PCM16 frames at INPUT_RATE -----------------

class Microphone {
  static async open(context, onFrame) {
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (error) {
      const refused = error.name === "NotAllowedError" || error.name === "SecurityError";
      throw new Error(
        refused
          ? "The microphone was refused. Allow it for this page (the icon in the address bar), then start again."
          : error.name === "NotFoundError"
            ? "No microphone was found. Connect one, then start again."
            : `The microphone could not be opened: ${error.message}`,
      );
    }
    await context.audioWorklet.addModule("mic-worklet.js");
    const node = new AudioWorkletNode(context, "pcm16-frames", {
      processorOptions: { targetRate: INPUT_RATE, frameMs: FRAME_MS },
    });
    const source = context.createMediaStreamSource(stream);
    const sink = context.createGain();
    sink.gain.value = 0; // pulls the worklet through the graph without playing the mic
    source.connect(node).connect(sink).connect(context.destination);
    const mic = new Microphone(stream, source, node);
    node.port.onmessage = (event) => onFrame(mic.muted ? new ArrayBuffer(event.data.byteLength) : event.data);
    return mic;
  }

  constructor(stream, source, node) {
    this.stream = stream;
    this.source = source;
    this.node = node;
    this.muted = false; // muted: silence is still sent, so the server's clock keeps running
  }

  close() {
    this.node.port.onmessage = null;
    this.source.disconnect();
    this.node.disconnect();
    for (const track of this.stream.getTracks()) track.stop();
  }
}

// --- the agent's voice: a queue of PCM chunks, dropped at once on an interruption ----------

class Player {
  constructor(context) {
    this.context = context;
    this.nextTime = 0;
    this.sources = new Set();
    this.sentences = new Map(); // id -> {chunks: [[start, seconds]], acked}
    this.playedSeconds = 0;
    this.dropped = 0; // chunks queued but never played (interruptions)
  }

  play(id, bytes, rate) {
    const pcm = new Int16Array(bytes);
    if (!pcm.length) return null;
    const buffer = this.context.createBuffer(1, pcm.length, rate);
    const samples = buffer.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) samples[i] = pcm[i] / 0x8000;
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.context.destination);
    // A little slack when the queue has run dry, so network jitter does not cut words.
    const start = Math.max(this.nextTime, this.context.currentTime + 0.05);
    source.start(start);
    this.nextTime = start + buffer.duration;
    this.sources.add(source);
    source.onended = () => {
      if (this.sources.delete(source)) this.playedSeconds += buffer.duration;
    };
    const sentence = this.sentences.get(id) || { chunks: [], acked: -1 };
    sentence.chunks.push([start, buffer.duration]);
    this.sentences.set(id, sentence);
    return start;
  }

  get speaking() {
    return this.sources.size > 0;
  }

  stop() {
    for (const source of this.sources) {
      source.onended = null;
      source.stop();
      this.dropped += 1;
    }
    this.sources.clear();
    this.nextTime = 0;
  }

  // {"type": "played", "id", "ms"} for each sentence whose heard part grew since the last.
  acknowledgements() {
    const now = this.context.currentTime;
    const out = [];
    for (const [id, sentence] of this.sentences) {
      const played = sentence.chunks.reduce((sum, [start, length]) => sum + Math.min(Math.max(now - start, 0), length), 0);
      const ms = Math.round(played * 1000);
      if (ms > sentence.acked) {
        sentence.acked = ms;
        out.push({ type: "played", id, ms });
      }
      const end = sentence.chunks.at(-1);
      if (end[0] + end[1] < now - 5) this.sentences.delete(id); // long over
    }
    return out;
  }

  // When, on the page's clock (performance.now()), audio scheduled at `start` begins.
  pageTime(start) {
    return performance.now() + (start - this.context.currentTime) * 1000;
  }
}

// --- one call ------------------------------------------------------------------------------

class Call {
  constructor(view) {
    this.view = view;
    this.callId = null;
    this.socket = null;
    this.sentence = null; // the agent_sentence whose audio is arriving
    this.turn = null; // the customer's turn being answered: timings for its row
    this.ended = false;
  }

  // The audio side first: a refused microphone is told before any call is started.
  async prepare() {
    this.context = new AudioContext();
    await this.context.resume();
    this.player = new Player(this.context);
    try {
      this.mic = await Microphone.open(this.context, (frame) => {
        if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(frame);
      });
    } catch (error) {
      this.context.close();
      throw error;
    }
  }

  connect(callId) {
    this.callId = callId;
    this.open();
    this.acking = setInterval(() => this.acknowledge(), ACK_EVERY_MS);
    this.meter = setInterval(() => this.view.speaking("agent", this.player.speaking), 100);
  }

  open() {
    const query = `mode=stream&rate=${INPUT_RATE}&output_rate=${OUTPUT_RATE}`;
    // Browsers cannot set headers on a WebSocket: the key rides as a subprotocol.
    const protocols = apiKey() ? ["salesagent", `api-key.${apiKey()}`] : ["salesagent"];
    this.socket = new WebSocket(`${WS_BASE}/ws/voice-chat/${this.callId}?${query}`, protocols);
    this.socket.binaryType = "arraybuffer";
    this.lastError = null;
    this.socket.onmessage = (event) => this.receive(event.data);
    this.socket.onclose = (event) => this.closed(event);
  }

  receive(data) {
    if (data instanceof ArrayBuffer) return this.audio(data);
    const message = JSON.parse(data);
    const view = this.view;
    switch (message.type) {
      case "ready":
        view.status("Connected. Speak when the agent has greeted you.", "live");
        break;
      case "speech_started":
        view.speaking("customer", true);
        break;
      case "speech_stopped":
        view.speaking("customer", false);
        this.turn = { stoppedAt: performance.now(), firstAudioAt: null };
        break;
      case "user_text":
        view.line("customer", message.text);
        view.agentLine = null;
        break;
      case "agent_sentence":
        this.sentence = message;
        view.agentSays(message.text);
        break;
      case "agent_text":
        view.agentSays(message.text);
        break;
      case "interrupted":
        this.player.stop();
        view.interrupted(message.heard);
        break;
      case "turn_done":
        view.turnDone(message, this.turn);
        this.turn = null;
        view.refreshState(this.callId);
        break;
      case "system":
        view.status(message.message, "ended");
        this.ended = true;
        break;
      case "error":
        this.lastError = message.message;
        view.status(message.message, "error");
        break;
    }
  }

  audio(bytes) {
    if (!this.sentence) return;
    const start = this.player.play(this.sentence.id, bytes, this.sentence.sample_rate || OUTPUT_RATE);
    if (start !== null && this.turn && this.turn.firstAudioAt === null) {
      this.turn.firstAudioAt = this.player.pageTime(start);
    }
  }

  acknowledge() {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return;
    for (const ack of this.player.acknowledgements()) this.socket.send(JSON.stringify(ack));
  }

  closed(event) {
    const view = this.view;
    view.speaking("customer", false);
    if (this.ended || event.code === 1000) {
      this.ended = true;
      view.status(view.statusText() || "The call has ended.", "ended");
      this.release();
    } else if (event.code === 1008) {
      this.ended = true;
      view.status(this.lastError || "The service refused the connection.", "error");
      this.release();
    } else {
      view.status(`The connection dropped (code ${event.code}). The call is kept: reconnect to go on.`, "error");
      view.canReconnect(true);
    }
    view.refreshState(this.callId);
    view.controls(!this.ended);
  }

  reconnect() {
    this.view.canReconnect(false);
    this.view.status("Reconnecting…", "");
    this.open();
  }

  end() {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ type: "control", command: "end_call" }));
      return;
    }
    // The connection is gone: leave the call here (the server keeps it until it idles out).
    this.ended = true;
    this.view.canReconnect(false);
    this.view.status("You left the call; the connection had dropped.", "ended");
    this.view.controls(false);
    this.release();
  }

  release() {
    clearInterval(this.acking);
    clearInterval(this.meter);
    this.player.stop();
    this.view.speaking("agent", false);
    this.mic.close();
    this.context.close();
  }
}

// --- the page ------------------------------------------------------------------------------

const view = {
  agentLine: null,
  turns: 0,

  status(text, kind) {
    const node = $("status");
    node.textContent = text;
    node.dataset.kind = kind || "";
  },

  statusText() {
    return $("status").dataset.kind === "ended" ? $("status").textContent : "";
  },

  speaking(who, on) {
    $(`${who}-speaking`).dataset.on = on ? "true" : "false";
  },

  line(speaker, text) {
    const node = el("li", { class: `line ${speaker}` }, el("span", { class: "who" }, speaker === "agent" ? "Agent" : "You"), el("span", { class: "text" }, text));
    $("transcript").append(node);
    node.scrollIntoView({ block: "nearest" });
    return node;
  },

  agentSays(text) {
    if (!this.agentLine) this.agentLine = this.line("agent", "");
    const textNode = this.agentLine.querySelector(".text");
    textNode.textContent = `${textNode.textContent} ${text}`.trim();
  },

  interrupted(heard) {
    if (this.agentLine) {
      this.agentLine.querySelector(".text").textContent = heard ? `${heard} …` : "…";
      this.agentLine.classList.add("interrupted");
    }
    this.agentLine = null;
    $("interruptions").textContent = String(Number($("interruptions").textContent) + 1);
  },

  turnDone(message, turn) {
    this.agentLine = null;
    this.turns += 1;
    // End of speech -> first agent audio playing on this page: the end-of-turn wait the
    // server measured, plus what the page saw from "speech_stopped" to its first audio.
    let ttfa = null;
    if (turn && turn.firstAudioAt !== null && message.end_of_turn_wait_s != null) {
      ttfa = message.end_of_turn_wait_s + (turn.firstAudioAt - turn.stoppedAt) / 1000;
    }
    const t = message.timeline || {};
    $("turns").append(
      el(
        "tr",
        { "data-ttfa": ttfa === null ? "" : ttfa.toFixed(3) },
        el("td", {}, String(this.turns)),
        el("td", {}, seconds(ttfa)),
        el("td", {}, seconds(message.end_of_turn_wait_s)),
        el("td", {}, seconds(t.stt)),
        el("td", {}, seconds(t.first_sentence)),
        el("td", {}, message.rewritten ? "yes" : "no"),
      ),
    );
  },

  async refreshState(callId) {
    try {
      renderState($("state"), await request(`/conversation/${callId}`));
    } catch (error) {
      renderState($("state"), { state: {}, is_active: false });
      this.status(error.message, "error");
    }
  },

  controls(inCall) {
    $("start").disabled = inCall;
    $("end").disabled = !inCall;
    $("mute").disabled = !inCall;
    for (const id of ["name", "phone", "key"]) $(id).disabled = inCall;
  },

  canReconnect(on) {
    $("reconnect").hidden = !on;
  },

  reset() {
    this.agentLine = null;
    this.turns = 0;
    $("transcript").replaceChildren();
    $("turns").replaceChildren();
    $("interruptions").textContent = "0";
    $("mute").textContent = "Mute";
    $("mute").setAttribute("aria-pressed", "false");
  },
};

let call = null;

async function startCall(event) {
  event.preventDefault();
  setApiKey($("key").value.trim());
  view.reset();
  view.controls(true);
  view.status("Opening the microphone…", "");
  const next = new Call(view);
  try {
    await next.prepare();
  } catch (error) {
    view.status(error.message, "error");
    view.controls(false);
    return;
  }
  view.status("Starting the call…", "");
  let started;
  try {
    started = await request("/start-call", {
      method: "POST",
      body: { customer_name: $("name").value, phone_number: $("phone").value },
    });
  } catch (error) {
    next.release();
    view.status(error.message, "error");
    view.controls(false);
    return;
  }
  $("call-id").textContent = started.call_id;
  call = next;
  call.connect(started.call_id);
  view.refreshState(started.call_id);
}

$("call-form").addEventListener("submit", startCall);
$("end").addEventListener("click", () => call && call.end());
$("reconnect").addEventListener("click", () => call && call.reconnect());
$("mute").addEventListener("click", () => {
  if (!call || !call.mic) return;
  call.mic.muted = !call.mic.muted;
  $("mute").textContent = call.mic.muted ? "Unmute" : "Mute";
  $("mute").setAttribute("aria-pressed", String(call.mic.muted));
});
$("key").value = apiKey();
view.controls(false);
view.status(`Enter the lead, then start the call. API: ${API}`, "");
