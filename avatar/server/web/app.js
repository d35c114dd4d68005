// The page: pick a persona (or drop your own photo), hold to talk or type, watch the reply as it is made.
import { readEvents } from "./sse.js";
import { SegmentPlayer, pickFormat } from "./player.js";
import { HoldToTalk } from "./recorder.js";
import { LiveMode } from "./live.js";

const API = "api/v1";
const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"), poster: $("poster"), video: $("video"), face: document.querySelector(".face"),
  progress: $("progress"), personas: $("persona-list"), dropzone: $("dropzone"), photo: $("photo"),
  log: $("log"), notice: $("notice"), typed: $("typed"), text: $("text"), talk: $("talk"), stop: $("stop"),
  hint: $("hint"), modes: document.querySelectorAll(".mode"), livePanel: $("live-panel"), liveState: $("live-state"),
  liveVideo: $("live-video"), liveUnmute: $("live-unmute"),
  dialog: $("new-persona"), dialogForm: $("new-persona-form"), dialogPhoto: $("new-persona-photo"),
  dialogName: $("new-persona-name"), dialogKnowledge: $("new-persona-knowledge"),
  dialogFile: $("new-persona-file"), dialogCount: $("new-persona-count"), dialogCancel: $("new-persona-cancel"),
  dialogConsent: $("new-persona-consent"), dialogVoice: $("new-persona-voice"), dialogHear: $("new-persona-hear"),
  dialogSample: $("new-persona-sample"),
};

const state = {
  ready: false,
  persona: null, // name
  personas: new Map(),
  session: null, // per persona: a session belongs to one persona
  turn: null, // {id, aborter, bubble}
  shown: null, // {id, bubble} of the finished turn whose reply video is playing
  format: pickFormat(),
  key: localStorage.getItem("avatar.apiKey") || "",
};

function headers(extra = {}) {
  return state.key ? { ...extra, Authorization: `Bearer ${state.key}` } : extra;
}

/** fetch() with the API key; on 401 asks for a key once and tries again. */
async function api(path, init = {}) {
  let response = await fetch(path, { ...init, headers: headers(init.headers) });
  if (response.status === 401) {
    const key = window.prompt("This server needs an API key:");
    if (key) {
      state.key = key.trim();
      localStorage.setItem("avatar.apiKey", state.key);
      response = await fetch(path, { ...init, headers: headers(init.headers) });
    }
  }
  return response;
}

async function errorOf(response) {
  try {
    const body = await response.json();
    return { code: body.error?.code || "error", message: body.error?.message || response.statusText };
  } catch {
    return { code: "error", message: `The server answered ${response.status} ${response.statusText}.` };
  }
}

// ------------------------------------------------------------------------------------ status

function setStatus(text, kind) {
  ui.status.textContent = text;
  ui.status.className = `status ${kind}`;
}

function notify(message, bad = false) {
  ui.notice.textContent = message;
  ui.notice.className = bad ? "notice bad" : "notice";
  ui.notice.hidden = !message;
}

async function waitUntilReady() {
  while (true) {
    try {
      const response = await fetch("readyz");
      const body = await response.json();
      if (response.ok) break;
      if (body.status === "failed") {
        setStatus("The server failed to start", "bad");
        notify(body.error || "A model failed to load: see GET /readyz.", true);
        return false;
      }
      setStatus(body.status === "loading" ? "Loading the models…" : "The server is busy…", "wait");
    } catch {
      setStatus("Cannot reach the server…", "bad");
    }
    await new Promise((resolve) => setTimeout(resolve, 1500));
  }
  setStatus("Ready", "ok");
  state.ready = true;
  ui.talk.disabled = false;
  return true;
}

// ----------------------------------------------------------------------------------- personas

function faceUrl(persona) {
  return persona.face_url;
}

function renderPersonas() {
  ui.personas.replaceChildren();
  for (const persona of state.personas.values()) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "persona";
    button.setAttribute("role", "radio");
    button.setAttribute("aria-checked", String(persona.name === state.persona));
    button.dataset.name = persona.name;
    const img = document.createElement("img");
    img.alt = "";
    img.src = faceUrl(persona);
    img.onerror = () => { img.onerror = null; img.src = persona.image_url; };
    const label = document.createElement("span");
    label.textContent = persona.display_name;
    button.append(img, label);
    button.addEventListener("click", () => choose(persona.name));
    ui.personas.append(button);
  }
}

function choose(name) {
  if (name === state.persona) return;
  interrupt();
  state.persona = name;
  state.session = null;
  const persona = state.personas.get(name);
  ui.poster.src = faceUrl(persona);
  ui.poster.onerror = () => { ui.poster.onerror = null; ui.poster.src = persona.image_url; };
  ui.face.classList.remove("playing");
  ui.log.replaceChildren();
  renderPersonas();
  if (live.active) live.restart();
  const hello = persona.created ? "Hello!" : `Hello! I'm ${persona.display_name}.`;
  const liveMode = live.active || new URLSearchParams(window.location.search).get("mode") === "live";
  const how = liveMode ? "Just talk to me, or type below." : "Hold the button and ask me anything, or type below.";
  say("them", `${hello} ${how}`);
}

async function loadPersonas() {
  const response = await api(`${API}/personas`);
  if (!response.ok) {
    notify((await errorOf(response)).message, true);
    return;
  }
  const body = await response.json();
  state.personas = new Map(body.personas.map((p) => [p.name, p]));
  // The server lists only the bundled personas (and, with API keys, this key's own): the ones made
  // here are remembered by name, and each is asked for (a removed or expired one is forgotten).
  for (const name of remembered()) {
    if (state.personas.has(name)) continue;
    const own = await api(`${API}/personas/${encodeURIComponent(name)}`);
    if (own.ok) state.personas.set(name, await own.json());
    else remember(name, false);
  }
  const first = state.persona && state.personas.has(state.persona) ? state.persona : body.default;
  state.persona = null;
  choose(first);
}

// A photo chosen (or dropped) opens the "Your photo" dialog: a name and what the person knows about
// themself, both optional; Create sends them with the photo.
let chosenPhoto = null;

function openPersonaDialog(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) {
    notify("That file is not a photo: use a JPEG, PNG or WebP portrait.", true);
    return;
  }
  chosenPhoto = file;
  if (ui.dialogPhoto.src) URL.revokeObjectURL(ui.dialogPhoto.src);
  ui.dialogPhoto.src = URL.createObjectURL(file);
  ui.dialogForm.reset();
  countKnowledge();
  loadVoices();
  ui.dialog.showModal();
  ui.dialogName.focus();
}

// The voices the photo may speak with (GET /voices): the first is the server's default. With a
// voice-cloning engine there are none, and the choice is hidden.
let voicesLoaded = false;

async function loadVoices() {
  if (voicesLoaded) return;
  const response = await api(`${API}/voices`);
  if (!response.ok) return;
  const { voices } = await response.json();
  ui.dialogVoice.replaceChildren(
    ...voices.map((voice) => {
      const option = document.createElement("option");
      option.value = voice.name;
      option.dataset.sample = voice.sample_url;
      option.textContent = `${voice.name} — ${voice.gender}, ${voice.accent} accent`;
      return option;
    }),
  );
  ui.dialogVoice.parentElement.hidden = voices.length === 0;
  ui.dialogVoice.parentElement.previousElementSibling.hidden = voices.length === 0;
  voicesLoaded = true;
}

async function hearVoice() {
  const option = ui.dialogVoice.selectedOptions[0];
  if (!option) return;
  ui.dialogHear.disabled = true;
  try {
    const response = await api(option.dataset.sample);
    if (!response.ok) {
      notify((await errorOf(response)).message, true);
      return;
    }
    if (ui.dialogSample.src) URL.revokeObjectURL(ui.dialogSample.src);
    ui.dialogSample.src = URL.createObjectURL(await response.blob());
    await ui.dialogSample.play();
  } catch (error) {
    notify(`The voice sample could not be played: ${error.message}`, true);
  } finally {
    ui.dialogHear.disabled = false;
  }
}

function countKnowledge() {
  const used = ui.dialogKnowledge.value.length;
  ui.dialogCount.textContent = `${used.toLocaleString("en")} / 50,000`;
}

async function loadKnowledgeFile(file) {
  if (!file) return;
  const text = await file.text();
  if (text.length > 50000) {
    notify(`That file holds ${text.length.toLocaleString("en")} characters; "About this person" takes up to 50,000.`, true);
  } else {
    ui.dialogKnowledge.value = text;
  }
  countKnowledge();
  ui.dialogFile.value = "";
}

function remembered() {
  try {
    return JSON.parse(localStorage.getItem("avatar.created") || "[]");
  } catch {
    return [];
  }
}

function remember(name, keep = true) {
  const names = remembered().filter((n) => n !== name);
  localStorage.setItem("avatar.created", JSON.stringify(keep ? [...names, name] : names));
}

async function createPersona(file, name, knowledge, voice) {
  ui.dropzone.classList.add("busy");
  notify("");
  progress("Finding the face in your photo…");
  const form = new FormData();
  form.append("image", file, file.name || "photo.jpg");
  form.append("consent", "true"); // the dialog's checkbox, which the form requires, was ticked
  if (name.trim()) form.append("name", name.trim());
  if (knowledge.trim()) form.append("knowledge", knowledge);
  if (voice) form.append("voice", voice); // a text part: the name of a voice (a file part would be a sample)
  try {
    const response = await api(`${API}/personas`, { method: "POST", body: form });
    if (!response.ok) {
      notify((await errorOf(response)).message, true);
      return;
    }
    const persona = await response.json();
    state.personas.set(persona.name, persona);
    remember(persona.name);
    choose(persona.name);
    const notes = [persona.note, persona.voice_note].filter(Boolean);
    if (notes.length) notify(notes.join(" "));
  } catch (error) {
    notify(`The photo could not be sent: ${error.message}`, true);
  } finally {
    ui.dropzone.classList.remove("busy");
    progress("");
    ui.photo.value = "";
  }
}

// --------------------------------------------------------------------------------- the turn

function say(who, text) {
  const item = document.createElement("li");
  item.className = who;
  item.textContent = text;
  ui.log.append(item);
  ui.log.scrollTop = ui.log.scrollHeight;
  return item;
}

function progress(text) {
  ui.progress.textContent = text;
}

const player = new SegmentPlayer(ui.video, {
  headers,
  onPlaying: () => ui.face.classList.add("playing"),
  onEnded: () => {
    state.shown = null; // heard to the end
    if (!state.turn) ui.stop.disabled = true;
    progress("");
  },
});

const live = new LiveMode({
  ui, api, say, notify, progress,
  ready: () => state.ready,
  persona: () => state.persona,
  session: () => state.session,
  setSession: (id) => { state.session = id; },
  onEnter: () => interrupt(),
  onLeave: () => { ui.talk.disabled = !state.ready; },
});

/** Stop the reply that is playing or being made; the server keeps what was heard in the history. */
function interrupt() {
  const turn = state.turn;
  const playing = !ui.video.paused && !ui.video.ended;
  if (turn) {
    state.turn = null;
    turn.aborter.abort();
    if (turn.id) {
      const played = player.played().toFixed(2);
      api(`${API}/conversation/${turn.id}?played=${played}`, { method: "DELETE" }).catch(() => {});
    }
    turn.bubble.classList.add("cut");
    turn.bubble.classList.remove("thinking");
  }
  if (!turn && playing && state.shown) {
    // Made in full, stopped while it plays: the server keeps in the history only what was heard.
    const played = player.played().toFixed(2);
    api(`${API}/conversation/${state.shown.id}?played=${played}`, { method: "DELETE" }).catch(() => {});
    state.shown.bubble.classList.add("cut");
  }
  state.shown = null;
  if (turn || playing) player.stop();
  ui.stop.disabled = true;
  progress("");
}

async function converse(fields, youBubble) {
  interrupt();
  notify("");
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) form.append(name, value);
  form.append("persona", state.persona);
  if (state.session) form.append("session_id", state.session);
  form.append("video_format", state.format || "h264");
  const bubble = say("them", "");
  bubble.classList.add("thinking");
  const turn = { id: null, aborter: new AbortController(), bubble };
  state.turn = turn;
  ui.stop.disabled = false;
  progress(fields.audio ? "Sending your question…" : "Thinking…");
  player.begin(state.format);
  const current = () => state.turn === turn;
  try {
    const response = await api(`${API}/conversation/stream`, { method: "POST", body: form, signal: turn.aborter.signal });
    if (!response.ok) {
      const error = await errorOf(response);
      failed(turn, error, response.headers.get("Retry-After"));
      return;
    }
    for await (const { event, data } of readEvents(response, turn.aborter.signal)) {
      if (!current()) break;
      if (event === "queued") {
        turn.id = data.id;
        state.session = data.session_id;
        progress(data.position > 0 ? `Waiting: ${data.position} ahead of you…` : "Starting…");
      } else if (event === "started") {
        progress(fields.audio ? "Listening to your question…" : "Thinking…");
      } else if (event === "transcript") {
        youBubble.textContent = data.text;
        progress("Thinking…");
      } else if (event === "reply") {
        bubble.textContent = data.text;
        ui.log.scrollTop = ui.log.scrollHeight;
      } else if (event === "segment") {
        player.add(data.url);
        progress("");
      } else if (event === "done") {
        finished(turn, data);
      } else if (event === "error") {
        failed(turn, data);
      }
    }
  } catch (error) {
    if (current() && error.name !== "AbortError") failed(turn, { code: "network", message: error.message });
  }
}

function finished(turn, summary) {
  turn.bubble.classList.remove("thinking");
  turn.bubble.textContent = summary.reply;
  const meta = document.createElement("span");
  meta.className = "meta";
  const t = summary.timings || {};
  const first = t.first_frame != null ? `face moving after ${t.first_frame.toFixed(2)} s · ` : "";
  meta.textContent = `${first}${summary.audio_seconds.toFixed(1)} s reply`;
  turn.bubble.append(meta);
  if (state.format) player.finish();
  else player.playFile(summary.video_url);
  state.turn = null;
  state.shown = { id: summary.id, bubble: turn.bubble };
}

function failed(turn, error, retryAfter) {
  turn.bubble.classList.remove("thinking");
  if (state.turn === turn) state.turn = null;
  player.stop();
  ui.stop.disabled = true;
  progress("");
  if (error.code === "cancelled") {
    turn.bubble.classList.add("cut");
    if (!turn.bubble.textContent) turn.bubble.remove();
    return;
  }
  turn.bubble.remove();
  const messages = {
    busy: `The server is busy with other people's questions. Try again${retryAfter ? ` in ${retryAfter} s` : " shortly"}.`,
    not_ready: "The server is still loading its models. It will be ready in a moment.",
    no_speech: "I didn't hear anything. Hold the button while you speak, and check the microphone.",
  };
  notify(messages[error.code] || error.message, true);
  if (error.code === "not_ready") waitUntilReady();
}

// --------------------------------------------------------------------------------- wiring

const recorder = new HoldToTalk(ui.talk, {
  onStart: () => {
    interrupt();
    notify("");
    progress("Listening… let go when you're done.");
  },
  onAudio: (blob) => {
    progress("");
    const you = say("you", "🎤 …");
    converse({ audio: new File([blob], `question.${blob.type.includes("ogg") ? "ogg" : blob.type.includes("mp4") ? "m4a" : "webm"}`, { type: blob.type }) }, you);
  },
  onTooShort: () => notify("Hold the button down while you speak, then let go."),
  onError: (message) => { progress(""); notify(message, true); },
});

ui.typed.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.text.value.trim();
  if (!text || !state.ready) return;
  ui.text.value = "";
  if (live.active) return live.send(text);
  const you = say("you", text);
  converse({ text }, you);
});

ui.stop.addEventListener("click", () => (live.active ? live.interrupt() : interrupt()));
ui.photo.addEventListener("change", () => openPersonaDialog(ui.photo.files[0]));
ui.dialogKnowledge.addEventListener("input", countKnowledge);
ui.dialogFile.addEventListener("change", () => loadKnowledgeFile(ui.dialogFile.files[0]));
ui.dialogCancel.addEventListener("click", () => { ui.dialog.close(); ui.photo.value = ""; });
ui.dialogForm.addEventListener("submit", (event) => {
  event.preventDefault();
  ui.dialog.close();
  createPersona(chosenPhoto, ui.dialogName.value, ui.dialogKnowledge.value, ui.dialogVoice.value);
});
ui.dialogHear.addEventListener("click", hearVoice);
ui.dropzone.addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") { event.preventDefault(); ui.photo.click(); }
});
for (const name of ["dragenter", "dragover"]) {
  ui.dropzone.addEventListener(name, (event) => { event.preventDefault(); ui.dropzone.classList.add("over"); });
}
for (const name of ["dragleave", "drop"]) {
  ui.dropzone.addEventListener(name, () => ui.dropzone.classList.remove("over"));
}
ui.dropzone.addEventListener("drop", (event) => {
  event.preventDefault();
  openPersonaDialog(event.dataTransfer.files[0]);
});
document.addEventListener("dragover", (event) => event.preventDefault());
document.addEventListener("drop", (event) => {
  event.preventDefault();
  if (event.dataTransfer.files[0]) openPersonaDialog(event.dataTransfer.files[0]);
});

ui.talk.disabled = true;
if (!state.format) console.info("No Media Source Extensions here: replies play when they are complete.");
if (await waitUntilReady()) {
  await loadPersonas();
  if (new URLSearchParams(window.location.search).get("mode") === "live") live.enter();
}
