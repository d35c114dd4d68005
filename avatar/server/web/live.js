// Live mode: a hands-free conversation over WebRTC. The microphone goes to the server as it is heard;
// the server decides when you have finished, and the face answers on a video and an audio track; talk
// while it speaks and it stops to listen. Events (transcripts, reply text, timings) come on a data channel.

const API = "api/v1";
const GATHER_TIMEOUT_MS = 3000;

const STATES = {
  connecting: "Connecting…",
  listening: "Listening — just talk",
  hearing: "Hearing you…",
  thinking: "Thinking…",
  speaking: "Speaking — talk to interrupt",
  paused: "Paused — go on, or it resumes",
};

export class LiveMode {
  /**
   * @param {object} hooks the page's helpers: ui (elements), api(path, init), say(who, text) → bubble,
   *   notify(message, bad), progress(text), persona() → name, session() → id, setSession(id),
   *   onEnter() (stop whatever the other mode was doing), onLeave().
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.ui = hooks.ui;
    this.active = false;
    this.pc = null;
    this.mic = null;
    this.channel = null;
    this.you = null; // the bubble of what the user is saying
    this.pending = null; // the bubble for the reply to what the user just said
    this.lastYou = null; // the bubbles of the last exchange (merged away if its reply was never heard)
    this.lastThem = null;
    this.bubbles = new Map(); // turn number → its reply's bubble
    this.generation = 0;
    for (const button of this.ui.modes) {
      button.addEventListener("click", () => (button.dataset.mode === "live" ? this.enter() : this.leave()));
    }
    this.ui.liveUnmute.addEventListener("click", () => {
      this.ui.liveUnmute.hidden = true;
      this.ui.liveVideo.play().catch(() => {});
    });
    window.addEventListener("pagehide", () => this.disconnect());
  }

  /** Switch the page to live mode and connect. */
  async enter() {
    if (this.active) return;
    this.active = true;
    this.hooks.onEnter();
    this.showMode(true);
    await this.connect();
  }

  /** Back to hold-to-talk. */
  leave() {
    if (!this.active) return;
    this.active = false;
    this.disconnect();
    this.showMode(false);
    this.hooks.onLeave();
  }

  /** Reconnect (another persona was chosen). */
  async restart() {
    if (!this.active) return;
    this.disconnect();
    await this.connect();
  }

  /** Typed input, answered in the live session. */
  send(text) {
    if (!this.channel || this.channel.readyState !== "open") {
      this.hooks.notify("The live connection is not open yet.", true);
      return;
    }
    this.hooks.say("you", text);
    this.pending = this.hooks.say("them", "");
    this.pending.classList.add("thinking");
    this.channel.send(JSON.stringify({ type: "say", text }));
  }

  /** Stop the face speaking (as talking over it does). */
  interrupt() {
    if (this.channel && this.channel.readyState === "open") this.channel.send(JSON.stringify({ type: "stop" }));
  }

  showMode(live) {
    for (const button of this.ui.modes) button.setAttribute("aria-checked", String((button.dataset.mode === "live") === live));
    document.body.classList.toggle("live", live);
    this.ui.livePanel.hidden = !live;
    this.ui.talk.disabled = live || !this.hooks.ready();
    this.ui.stop.disabled = !live;
    this.ui.hint.textContent = live
      ? "Just talk: the face answers when you pause, and stops when you speak over it."
      : "Hold the button (or the space bar) while you speak, then let go.";
    const url = new URL(window.location.href);
    if (live) url.searchParams.set("mode", "live");
    else url.searchParams.delete("mode");
    window.history.replaceState(null, "", url);
  }

  setState(name, text) {
    this.ui.liveState.textContent = text || STATES[name] || name;
    this.ui.livePanel.dataset.state = name;
  }

  async microphone() {
    if (!navigator.mediaDevices?.getUserMedia) {
      throw new Error("This browser cannot use the microphone here (it needs https, or localhost).");
    }
    try {
      return await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
      });
    } catch (error) {
      if (error.name === "NotAllowedError" || error.name === "SecurityError") {
        throw new Error("The microphone is blocked. Allow it in the browser's site settings to talk live.");
      }
      if (error.name === "NotFoundError") throw new Error("No microphone was found. Plug one in to talk live.");
      throw new Error(`The microphone could not start (${error.message}).`);
    }
  }

  async connect() {
    const generation = ++this.generation;
    const current = () => this.active && generation === this.generation;
    this.setState("connecting");
    this.hooks.notify("");
    try {
      this.mic = await this.microphone();
      if (!current()) return this.release();
      const track = this.mic.getAudioTracks()[0];
      if (track.getSettings().echoCancellation === false) {
        this.hooks.notify("This browser does not cancel echo here: use headphones, or the face may hear itself.");
      }
      const info = await (await this.hooks.api(`${API}/live`)).json();
      const pc = new RTCPeerConnection({ iceServers: info.ice_servers || [] });
      this.pc = pc;
      pc.addTransceiver(track, { direction: "sendrecv", streams: [this.mic] });
      pc.addTransceiver("video", { direction: "recvonly" });
      const remote = new MediaStream();
      pc.addEventListener("track", (event) => {
        remote.addTrack(event.track);
        this.ui.liveVideo.srcObject = remote;
        this.play();
      });
      pc.addEventListener("connectionstatechange", () => {
        if (current() && pc.connectionState === "failed") {
          this.failed("The live connection failed: UDP to the server may be blocked (see README, Live mode).");
        }
      });
      this.channel = pc.createDataChannel("events");
      this.channel.addEventListener("message", (event) => current() && this.onEvent(JSON.parse(event.data)));
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      if (!current()) return;
      const body = { sdp: pc.localDescription.sdp, type: "offer", persona: this.hooks.persona() };
      if (this.hooks.session()) body.session_id = this.hooks.session();
      const response = await this.hooks.api(`${API}/live`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      if (!current()) return;
      if (!response.ok) {
        const error = (await response.json().catch(() => ({}))).error || {};
        const retry = response.headers.get("Retry-After");
        const message = error.code === "busy"
          ? `Every live seat is taken right now. Try again${retry ? ` in ${retry} s` : " shortly"}, or hold to talk.`
          : error.message || `The server answered ${response.status}.`;
        this.failed(message);
        return;
      }
      const answer = await response.json();
      this.hooks.setSession(answer.session_id);
      await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
      this.ui.face.classList.add("live-on");
    } catch (error) {
      if (current()) this.failed(error.message);
    }
  }

  play() {
    this.ui.liveVideo.play().then(
      () => { this.ui.liveUnmute.hidden = true; },
      () => { this.ui.liveUnmute.hidden = false; }, // autoplay with sound was refused: one tap starts it
    );
  }

  failed(message) {
    this.disconnect();
    this.setState("off", "Live mode is off");
    this.hooks.notify(message, true);
  }

  disconnect() {
    this.generation += 1;
    this.channel = null;
    if (this.pc) this.pc.close();
    this.pc = null;
    this.release();
    this.ui.liveVideo.srcObject = null;
    this.ui.face.classList.remove("live-on", "live-speaking");
  }

  release() {
    if (this.mic) for (const track of this.mic.getTracks()) track.stop();
    this.mic = null;
  }

  /** The reply bubble of ``turn``: the one made at the last final transcript, once a turn claims it. */
  replyBubble(turn) {
    if (turn == null) return null;
    if (!this.bubbles.has(turn)) {
      const bubble = this.pending || this.hooks.say("them", "");
      this.pending = null;
      this.bubbles.set(turn, bubble);
      this.lastThem = bubble;
    }
    return this.bubbles.get(turn);
  }

  onEvent(event) {
    const name = event.event;
    if (name === "listening") {
      this.setState("listening");
      this.ui.face.classList.remove("live-speaking");
    } else if (name === "user_speech_started" && event.paused) { // over the reply: a "mm-hm", or words?
      this.setState("paused");
    } else if (name === "resumed") { // it was a backchannel or a noise: the reply goes on where it stopped
      this.setState("speaking");
      const bubble = this.bubbles.get(event.turn);
      if (bubble) bubble.dataset.resumed = event.heard ? `“${event.heard}”` : "a sound";
    } else if (name === "end_of_turn") {
      this.lastEnd = event;
    } else if (name === "user_speech_started") {
      this.setState("hearing");
      if (!this.you) {
        this.you = this.hooks.say("you", "…");
        this.you.classList.add("partial");
      }
    } else if (name === "transcript" && event.final && !event.text) { // nothing recognisable: noise
      this.you?.remove();
      this.you = null;
    } else if (name === "transcript") {
      if (!this.you) this.you = this.hooks.say("you", "");
      this.you.textContent = event.text;
      this.you.classList.toggle("partial", !event.final);
      if (event.final) {
        if (event.merged) { // it goes on from the last utterance, whose reply nobody heard: one bubble each
          this.lastYou?.remove();
          this.lastThem?.remove();
        }
        this.lastYou = this.you;
        this.you = null;
        this.setState("thinking");
        this.pending = this.hooks.say("them", "");
        this.pending.classList.add("thinking");
      }
    } else if (name === "reply") {
      this.replyBubble(event.turn).textContent = event.text;
      this.ui.log.scrollTop = this.ui.log.scrollHeight;
    } else if (name === "speaking") {
      this.setState("speaking");
      this.ui.face.classList.add("live-speaking");
      this.replyBubble(event.turn).classList.remove("thinking");
    } else if (name === "interrupted") {
      const bubble = this.replyBubble(event.turn);
      bubble.classList.add("cut");
      bubble.dataset.heard = event.heard_seconds;
    } else if (name === "timings") {
      this.timed(event);
    } else if (name === "error") {
      if (event.code === "idle_timeout") this.failed(event.message);
      else this.hooks.notify(event.message, true);
      this.pending?.remove();
      this.pending = null;
    } else if (name === "closed") {
      if (this.active) this.failed(`The live session ended: ${event.reason}.`);
    }
  }

  timed(event) {
    const bubble = this.replyBubble(event.turn);
    this.bubbles.delete(event.turn);
    bubble.classList.remove("thinking");
    // The reply as spoken: pieces the model wrote but the server did not say (off the rails) drop out.
    if (event.reply && bubble.dataset.heard == null) bubble.textContent = event.reply;
    if (!bubble.textContent) {
      bubble.remove();
      return;
    }
    const first = event.timings?.first_sent;
    const meta = document.createElement("span");
    meta.className = "meta";
    if (bubble.dataset.heard != null) {
      meta.textContent = `interrupted after ${Number(bubble.dataset.heard).toFixed(1)} s`;
    } else if (first != null) {
      meta.textContent = `voice after ${first.toFixed(2)} s · ${event.reply_seconds.toFixed(1)} s reply`;
      if (this.lastEnd) meta.textContent += ` · your turn ended after a ${this.lastEnd.wait_ms} ms pause (${this.lastEnd.why})`;
      if (bubble.dataset.resumed) meta.textContent += ` · went on after ${bubble.dataset.resumed}`;
      this.lastEnd = null;
    } else {
      return;
    }
    bubble.append(meta);
  }
}

/** Wait until the browser has its ICE candidates (the server does not take them one by one). */
function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => pc.iceGatheringState === "complete" && done();
    pc.addEventListener("icegatheringstatechange", check);
    setTimeout(done, GATHER_TIMEOUT_MS);
  });
}
