// Hold to talk: the button (mouse, touch, pen) or the space bar records the microphone while held.

const MIN_SECONDS = 0.4;
const TYPES = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/mp4", "audio/webm"];

export class HoldToTalk {
  constructor(button, { onStart, onAudio, onTooShort, onError }) {
    this.button = button;
    this.handlers = { onStart, onAudio, onTooShort, onError };
    this.stream = null;
    this.recorder = null;
    this.holding = false;
    button.addEventListener("pointerdown", (event) => {
      if (button.disabled) return;
      button.setPointerCapture(event.pointerId);
      this.press();
    });
    for (const name of ["pointerup", "pointercancel"]) button.addEventListener(name, () => this.release());
    button.addEventListener("contextmenu", (event) => event.preventDefault());
    document.addEventListener("keydown", (event) => {
      if (event.code !== "Space" || event.repeat || this.typing(event) || button.disabled) return;
      event.preventDefault();
      this.press();
    });
    document.addEventListener("keyup", (event) => {
      if (event.code !== "Space" || this.typing(event)) return;
      event.preventDefault();
      this.release();
    });
  }

  typing(event) {
    const target = event.target;
    return target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement || target?.isContentEditable;
  }

  async microphone() {
    if (this.stream && this.stream.getAudioTracks().some((t) => t.readyState === "live")) return this.stream;
    if (!navigator.mediaDevices?.getUserMedia) {
      throw new Error("This browser cannot record here (a microphone needs https, or localhost). Type instead.");
    }
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
      });
    } catch (error) {
      if (error.name === "NotAllowedError" || error.name === "SecurityError") {
        throw new Error("The microphone is blocked. Allow it in the browser's site settings, or type your question.");
      }
      if (error.name === "NotFoundError") throw new Error("No microphone was found. Plug one in, or type your question.");
      throw new Error(`The microphone could not start (${error.message}). Type your question instead.`);
    }
    return this.stream;
  }

  async press() {
    if (this.holding) return;
    this.holding = true;
    this.button.classList.add("recording");
    this.handlers.onStart();
    let stream;
    try {
      stream = await this.microphone();
    } catch (error) {
      this.holding = false;
      this.button.classList.remove("recording");
      this.handlers.onError(error.message);
      return;
    }
    if (!this.holding) return; // let go while the browser asked for the microphone
    const mimeType = TYPES.find((t) => window.MediaRecorder?.isTypeSupported?.(t));
    const chunks = [];
    const recorder = new MediaRecorder(stream, mimeType ? { mimeType } : undefined);
    const started = performance.now();
    recorder.ondataavailable = (event) => { if (event.data.size) chunks.push(event.data); };
    recorder.onstop = () => {
      const seconds = (performance.now() - started) / 1000;
      if (seconds < MIN_SECONDS || !chunks.length) {
        this.handlers.onTooShort();
        return;
      }
      this.handlers.onAudio(new Blob(chunks, { type: recorder.mimeType || mimeType || "audio/webm" }));
    };
    recorder.start();
    this.recorder = recorder;
  }

  release() {
    if (!this.holding) return;
    this.holding = false;
    this.button.classList.remove("recording");
    if (this.recorder && this.recorder.state !== "inactive") this.recorder.stop();
    this.recorder = null;
  }
}
