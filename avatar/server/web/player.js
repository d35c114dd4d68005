// Plays a reply while it is being made: each segment of the fragmented MP4 is fetched and appended,
// in order, to one Media Source Extensions buffer; playback starts with the first one.

const TYPES = {
  h264: 'video/mp4; codecs="avc1.64001f,mp4a.40.2"',
  vp9: 'video/mp4; codecs="vp09.00.21.08,opus"',
};

function mediaSourceClass() {
  return window.ManagedMediaSource || window.MediaSource || null;
}

/** The video format to ask the server for: H.264 where it plays (most browsers), else VP9 (Firefox
 * without system codecs), else null (no Media Source Extensions: play the finished file instead). */
export function pickFormat() {
  const MS = mediaSourceClass();
  if (!MS) return null;
  for (const [name, type] of Object.entries(TYPES)) if (MS.isTypeSupported(type)) return name;
  return null;
}

export class SegmentPlayer {
  constructor(video, { headers = () => ({}), onPlaying = () => {}, onEnded = () => {} } = {}) {
    this.video = video;
    this.headers = headers;
    this.onPlaying = onPlaying;
    this.onEnded = onEnded;
    this.generation = 0;
    video.addEventListener("playing", () => this.onPlaying());
    video.addEventListener("ended", () => this.onEnded());
  }

  /** Start a new reply (whatever was playing stops). */
  begin(format) {
    this.stop();
    this.generation += 1;
    this.format = format;
    this.queue = [];
    this.finished = false;
    this.started = false;
    this.aborter = new AbortController();
    if (!format) return;
    const MS = mediaSourceClass();
    this.source = new MS();
    this.video.disableRemotePlayback = true; // ManagedMediaSource (Safari) asks for this
    this.video.src = URL.createObjectURL(this.source);
    this.ready = new Promise((resolve) => this.source.addEventListener("sourceopen", resolve, { once: true }));
    this.chain = this.ready.then(() => {
      this.buffer = this.source.addSourceBuffer(TYPES[format]);
    });
  }

  /** Append the segment at ``url`` after those before it. */
  add(url) {
    if (!this.format) return;
    const generation = this.generation;
    const fetched = fetch(url, { headers: this.headers(), signal: this.aborter.signal }).then((r) => {
      if (!r.ok) throw new Error(`segment ${url}: HTTP ${r.status}`);
      return r.arrayBuffer();
    });
    fetched.catch(() => {}); // awaited below; a failure is reported there
    this.chain = this.chain.then(async () => {
      const data = await fetched;
      if (generation !== this.generation) return;
      await this.append(data);
      if (!this.started) {
        this.started = true;
        this.video.play().catch(() => {}); // a blocked autoplay leaves the controls to the user
      }
    });
    this.chain.catch((error) => console.warn(error));
  }

  append(data) {
    return new Promise((resolve, reject) => {
      this.buffer.addEventListener("updateend", resolve, { once: true });
      this.buffer.addEventListener("error", reject, { once: true });
      this.buffer.appendBuffer(data);
    });
  }

  /** No more segments: let the video end where the data ends. */
  finish() {
    if (!this.format) return Promise.resolve();
    const generation = this.generation;
    this.chain = this.chain.then(() => {
      if (generation === this.generation && this.source.readyState === "open") this.source.endOfStream();
    });
    return this.chain;
  }

  /** Play a finished file (browsers without Media Source Extensions). */
  playFile(url) {
    this.video.src = url;
    this.video.play().catch(() => {});
  }

  /** Seconds of the reply played so far (what the user has heard). */
  played() {
    return Number.isFinite(this.video.currentTime) ? this.video.currentTime : 0;
  }

  stop() {
    this.aborter?.abort();
    this.generation += 1;
    this.video.pause();
    if (this.source && this.source.readyState === "open") {
      try { this.source.endOfStream(); } catch { /* already ending */ }
    }
    this.source = null;
  }
}
