// The microphone as PCM16 frames at the rate the server was told (16 kHz by default).
// Runs in the audio thread: each output sample is the mean of the input samples it spans
// (a box low-pass, enough against aliasing for speech), then frames of `frameMs` are posted
// to the page as ArrayBuffers of little-endian int16.
class Pcm16Frames extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { targetRate, frameMs } = options.processorOptions;
    this.step = sampleRate / targetRate; // input samples per output sample (>= 1)
    this.frame = new Int16Array(Math.round((targetRate * frameMs) / 1000));
    this.filled = 0;
    this.sum = 0;
    this.count = 0;
    this.position = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    for (let i = 0; i < channel.length; i++) {
      this.sum += channel[i];
      this.count += 1;
      this.position += 1;
      if (this.position >= this.step) {
        this.position -= this.step;
        this.push(this.sum / this.count);
        this.sum = 0;
        this.count = 0;
      }
    }
    return true;
  }

  push(value) {
    const s = Math.max(-1, Math.min(1, value));
    this.frame[this.filled++] = s < 0 ? s * 0x8000 : s * 0x7fff;
    if (this.filled === this.frame.length) {
      this.port.postMessage(this.frame.slice().buffer);
      this.filled = 0;
    }
  }
}

registerProcessor("pcm16-frames", Pcm16Frames);
