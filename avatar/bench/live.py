"""`avatar bench --live`: live sessions driven by aiortc clients that play the benchmark questions as
their microphone, against the service started on a free loopback port.

Measured at the client: end of the user's speech → first reply voice and → first frame with the mouth
moving; voice/mouth sync on the sender's clock (the mapping browsers use); received frame rate and
jitter; barge-in (the user starts speaking → the face's voice stops). Turn-taking, per set of committed
clips: complete questions and hesitant ones (pauses of 0.6-1.2 s inside: premature turns, whether each
is answered once), backchannels and noises played over a reply (whether they stop it, how soon it goes
on after the sound), real interruptions; and what the turn-end model's calls cost (their p95, from the
server's ``end_of_turn`` events). Measured on the server process:
CPU per idle session (sessions added one level at a time) and while a session speaks; memory per
session; and how many sessions keep receiving 25 frames a second while one of them is answered. The
clients run on the same machine and use CPU of their own (decoding the video); the report says how much.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from avatar import media
from avatar.bench import machine
from avatar.bench.fixtures import BACKCHANNELS, FIXTURES_DIR, HESITANT, NOISES, TURNS
from avatar.bench.http_service import ServerError, ServerProcess
from avatar.bench.live_client import Heard, LiveClient
from avatar.bench.live_measures import cpu_seconds, measure_reply
from avatar.bench.stats import spread
from avatar.bench.targets import Check
from avatar.config import PROJECT_ROOT, Settings
from avatar.personas import load_persona
from avatar.quality.lipsync import MouthMeter
from avatar.server.live.ice import use_host_addresses
from avatar.types import AudioArray

Log = Callable[[str], None]
DEFAULT_PERSONA = PROJECT_ROOT / "assets" / "personas" / "eileen"
INTERRUPT_AFTER_S = 1.5  # barge in this long after the reply's voice began
SOUND_AFTER_S = 1.0  # a backchannel or noise is played this long after the reply's voice began
SOUND_WATCH_S = 2.5  # after it ends, the reply is watched this long (for a stop, a resumption)


@dataclass(frozen=True)
class LiveBenchOptions:
    reps: int = 3  # each benchmark question, in a session of its own
    barge_ins: int = 5
    hesitant: int = len(HESITANT)  # hesitant questions asked (each in a session of its own)
    sounds: int = len(BACKCHANNELS) + len(NOISES)  # backchannels and noises played over replies
    levels: tuple[int, ...] = (1, 2, 4, 8)  # idle sessions open at once
    window_s: float = 10.0  # CPU and frame-rate window at each level
    quick: bool = False

    @classmethod
    def quick_run(cls) -> LiveBenchOptions:
        return cls(reps=1, barge_ins=2, hesitant=3, sounds=4, levels=(1, 2), window_s=5.0, quick=True)


def run_live_bench(settings: Settings, options: LiveBenchOptions, log: Log = print) -> dict[str, Any]:
    started = time.perf_counter()
    result: dict[str, Any] = {
        "kind": "bench-live",
        "machine": machine.describe(),
        "options": {
            k: getattr(options, k) for k in ("reps", "barge_ins", "hesitant", "sounds", "levels", "window_s", "quick")
        },
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("AVATAR_")}
    env |= {"AVATAR_LIVE_HOST_ADDRESSES": "127.0.0.1", "AVATAR_MAX_LIVE_SESSIONS": str(max(options.levels) + 2)}
    with tempfile.TemporaryDirectory(prefix="avatar-live-bench-") as tmp, ServerProcess(Path(tmp), env=env) as server:
        log("live bench: starting the service")
        result["ready_s"] = round(server.start(), 2)
        _wait_idle_loop(server)
        meter = MouthMeter(settings.model_path(settings.face_model))
        try:
            asyncio.run(_measure(server, meter, options, log, result))
        finally:
            meter.close()
        result["peak_rss_mb"] = server.sample_memory()
    result["machine"]["load_average_end"] = machine.load_average()
    result["machine"]["elapsed_s"] = round(time.perf_counter() - started, 1)
    return result


def _wait_idle_loop(server: ServerProcess, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while "idle loop ready" not in server.log_path.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise ServerError(f"the idle loop was not drawn within {timeout:.0f} s: {server.log_tail()}")
        time.sleep(0.2)


def _questions() -> dict[str, AudioArray]:
    return {t.name: media.decode_audio((FIXTURES_DIR / t.filename).read_bytes(), 48_000) for t in TURNS}


async def _measure(
    server: ServerProcess, meter: MouthMeter, options: LiveBenchOptions, log: Log, result: dict[str, Any]
) -> None:
    use_host_addresses(["127.0.0.1"])
    pid = server._proc.pid if server._proc is not None else 0  # the service's process, for its CPU time
    questions = _questions()
    turns = []
    for rep in range(options.reps):
        for name, audio in questions.items():
            turns.append(await _turn(server.base_url, pid, meter, name, audio))
            log(f"live bench: {name} question, rep {rep + 1}: " + _brief(turns[-1]))
    result["turns"] = turns
    result["voices"] = await _voices(server.base_url, pid, meter, questions, options, log)
    barge_ins = []
    for i in range(options.barge_ins):
        barge_ins.append(await _barge_in(server.base_url, questions["long"], questions["short"]))
        log(f"live bench: barge-in {i + 1}: {barge_ins[-1]}")
    result["barge_ins"] = barge_ins
    hesitant = []
    for question in HESITANT[: options.hesitant]:
        audio = media.decode_audio(FIXTURES_DIR / question.filename, 48_000)
        hesitant.append({"question": question.name, **await _turn(server.base_url, pid, meter, question.name, audio)})
        log(f"live bench: hesitant {question.name}: " + _brief(hesitant[-1]))
    result["hesitant"] = hesitant
    sounds = []
    names = [name for name, _ in BACKCHANNELS] + list(NOISES)
    for name in names[: options.sounds]:
        sound = media.decode_audio(FIXTURES_DIR / "sounds" / f"{name}.flac", 48_000)
        sounds.append({"sound": name, **await _sound_over_reply(server.base_url, questions["long"], sound)})
        log(f"live bench: {name} over a reply: {sounds[-1]}")
    result["sounds"] = sounds
    result["levels"] = await _levels(server.base_url, pid, options, questions["short"], log)
    result["summary"] = summarise(result)


def _brief(turn: dict[str, Any]) -> str:
    shown = ("first_voice_s", "moving_mouth_s", "sync_lag_ms", "premature_turns", "answers")
    return ", ".join(f"{k} {v}" for k, v in turn.items() if k in shown)


async def _voices(
    base_url: str, pid: int, meter: MouthMeter, questions: dict[str, AudioArray], options: LiveBenchOptions, log: Log
) -> list[dict[str, Any]]:
    """The complete questions again with every other voice there is, as a user gets it: a persona made
    from the default portrait and knowledge with that voice (``POST /api/v1/personas``)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as http:
        voices = (await http.get("/api/v1/voices")).json()["voices"]
        default = load_persona(DEFAULT_PERSONA).voice
        made = []
        for voice in voices:
            if voice["name"] == default:
                continue
            response = await http.post(
                "/api/v1/personas",
                data={
                    "consent": "true",
                    "name": "Eileen",
                    "voice": voice["name"],
                    "knowledge": (DEFAULT_PERSONA / "knowledge.md").read_text(),
                },
                files={"image": ("portrait.png", (DEFAULT_PERSONA / "portrait.png").read_bytes(), "image/png")},
            )
            if response.status_code != 201:
                raise ServerError(f"could not make a persona with the voice {voice['name']}: {response.text}")
            made.append((voice, response.json()["name"]))
    rows = []
    for voice, persona in made:
        # A new persona's first answer reads its whole prompt (the cached one is the default persona's):
        # that turn is reported on its own, apart from the voice's figures.
        cold = await _turn(base_url, pid, meter, "short", questions["short"], persona=persona)
        rows.append({"voice": voice["name"], "engine": voice.get("engine"), "cold": True, **cold})
        log(f"live bench: {voice['name']} voice, first turn of the new persona: " + _brief(cold))
        for rep in range(options.reps):
            for name, audio in questions.items():
                turn = await _turn(base_url, pid, meter, name, audio, persona=persona)
                rows.append({"voice": voice["name"], "engine": voice.get("engine"), **turn})
                log(f"live bench: {voice['name']} voice, {name} question, rep {rep + 1}: " + _brief(turn))
    return rows


async def _turn(
    base_url: str, pid: int, meter: MouthMeter, name: str, audio: AudioArray, persona: str | None = None
) -> dict[str, Any]:
    async with LiveClient(base_url, persona=persona) as client:
        await asyncio.sleep(1.5)  # sender reports have arrived; the face idles
        client.recording = True
        said = client.mic.say(audio)
        await said.done.wait()
        ended, cpu_before = said.ended_at, cpu_seconds(pid)
        done, timings = await client.wait_event("timings", since=ended, timeout=180)
        cpu = cpu_seconds(pid) - cpu_before
        reply = measure_reply(client, meter, ended, done)
        texts = [e.get("text", "") for e in client.after(ended, "reply")]
        heard = [e.get("text", "") for e in client.after(ended, "transcript") if e.get("final")]
        # A turn taken before the question's end: its final transcript came, or its voice was heard, first.
        early = [e for at, e in client.events if said.spoke_at <= at < ended and _final(e)]
        answers = len(client.after(said.spoke_at, "speaking"))
        end = client.after(said.spoke_at, "end_of_turn")
    span = done - ended
    return {
        "question": name,
        "first_voice_s": _round(reply.first_voice - ended if reply.first_voice else None),
        "moving_mouth_s": _round(reply.moving_mouth - ended if reply.moving_mouth else None),
        "sync_lag_ms": _round(reply.sync.lag_ms if reply.sync else None, 1),
        "sync_peak_correlation": _round(reply.sync.peak_correlation if reply.sync else None),
        "fps": round(reply.fps, 2),
        "jitter_ms": round(reply.jitter_ms, 1),
        "reply_seconds": timings["reply_seconds"],
        "underruns": timings["underruns"],
        "server": timings["timings"],
        "transcript": heard[-1] if heard else None,
        "premature_turns": len(early),
        "answers": answers,  # replies that began to play (1: answered once)
        "end_of_turn": end[-1] if end else None,
        "reply": texts[-1] if texts else None,  # as shown to the user (explains an odd timing)
        "speaking_cpu_pct": round(100 * cpu / span, 1) if span > 0 else None,
    }


def _final(event: dict[str, Any]) -> bool:
    return event.get("event") == "transcript" and bool(event.get("final"))


async def _sound_over_reply(base_url: str, question: AudioArray, sound: AudioArray) -> dict[str, Any]:
    """Ask ``question``; once its reply has been heard for a second, play ``sound`` (a backchannel or a
    noise): did it pause the reply, stop it, and how soon after the sound did the voice come back?"""
    async with LiveClient(base_url) as client:
        if await _reply_heard_for(client, question, SOUND_AFTER_S) is None:
            return {"error": "no reply voice"}
        played = client.mic.say(sound)
        await played.done.wait()
        await asyncio.sleep(SOUND_WATCH_S)
        since = played.started or played.spoke_at
        paused = [e for e in client.after(since, "user_speech_started") if e.get("paused")]
        stopped = client.after(since, "interrupted")
        resumed = [(at, e) for at, e in client.events if at >= since and e.get("event") == "resumed"]
        after = client.first_voice(played.ended_at)
        fps = client.received_rate(since - SOUND_AFTER_S, time.perf_counter())
    return {
        "paused": bool(paused),
        "stopped": bool(stopped),
        "resumed": bool(resumed),
        "heard_as": resumed[0][1].get("heard") if resumed else None,
        # the server's own count, from the end of the sound as it heard it
        "resume_after_sound_s": _round(resumed[0][1].get("after_sound_s")) if resumed else None,
        # at the client: the end of the sound → the reply's voice again
        "voice_again_s": _round(after.arrived - played.ended_at) if after is not None and paused else None,
        # received frames a second from the reply's voice through the sound and what followed it
        "fps": round(fps, 2),
    }


async def _reply_heard_for(client: LiveClient, question: AudioArray, seconds: float) -> Heard | None:
    """Ask ``question`` and wait until its reply's voice has been heard for ``seconds``; that voice's
    first packet (None: no reply voice within 120 s)."""
    said = client.mic.say(question)
    await said.done.wait()
    deadline = time.perf_counter() + 120
    while (voice := client.first_voice(said.ended_at)) is None:
        if time.perf_counter() > deadline:
            return None
        await asyncio.sleep(0.02)
    await asyncio.sleep(max(0.0, voice.arrived + seconds - time.perf_counter()))
    return voice


async def _barge_in(base_url: str, question: AudioArray, interruption: AudioArray) -> dict[str, Any]:
    async with LiveClient(base_url) as client:
        if (voice := await _reply_heard_for(client, question, INTERRUPT_AFTER_S)) is None:
            return {"error": "no reply voice"}
        cut = client.mic.say(interruption)
        try:
            await client.wait_event("interrupted", since=voice.arrived, timeout=30)
        except TimeoutError:
            return {"error": "not interrupted (the reply may have ended first)"}
        await cut.done.wait()
        # No answer to the interruption can begin before it ends (and the turn-end silence after it).
        until = cut.ended_at + 0.3
        await asyncio.sleep(max(0.0, until + 0.2 - time.perf_counter()))
        silent = client.fell_silent(cut.spoke_at, until)
        # received frames a second from the reply's voice through the interruption, its pause and the
        # answer to it, to that answer's end (or 10 s)
        with contextlib.suppress(TimeoutError):
            await client.wait_event("timings", since=cut.ended_at, timeout=10)
        fps = client.received_rate(voice.arrived, time.perf_counter())
    return {"stop_s": _round(silent - cut.spoke_at if silent is not None else None), "fps": round(fps, 2)}


async def _levels(
    base_url: str, pid: int, options: LiveBenchOptions, question: AudioArray, log: Log
) -> list[dict[str, Any]]:
    """CPU, memory and received frame rate with more and more idle sessions; then one of them speaks."""
    baseline = await _window(pid, [], options.window_s)
    levels = [{"sessions": 0, **baseline}]
    clients: list[LiveClient] = []
    try:
        for count in options.levels:
            while len(clients) < count:
                client = LiveClient(base_url)
                await client.connect()
                clients.append(client)
            await asyncio.sleep(2.0)
            idle = await _window(pid, clients, options.window_s)
            speaker = clients[0]
            said = speaker.mic.say(question)
            await said.done.wait()
            done, _ = await speaker.wait_event("timings", since=said.ended_at, timeout=180)
            voice = speaker.first_voice(said.ended_at)
            during = [c.frame_rate(said.ended_at, done) for c in clients]
            level = {
                "sessions": count,
                **idle,
                "answer_first_voice_s": _round(voice.arrived - said.ended_at if voice else None),
                "min_fps_while_answering": round(min(f for f, _ in during), 2),
                "max_jitter_ms_while_answering": round(1000 * max(j for _, j in during), 1),
            }
            levels.append(level)
            log(f"live bench: {count} session(s): {level}")
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return levels


async def _window(pid: int, clients: list[LiveClient], seconds: float) -> dict[str, Any]:
    start, cpu, own = time.perf_counter(), cpu_seconds(pid), time.process_time()
    await asyncio.sleep(seconds)
    end = time.perf_counter()
    wall = end - start
    rates = [c.frame_rate(start, end) for c in clients]
    return {
        "server_cpu_pct": round(100 * (cpu_seconds(pid) - cpu) / wall, 1),
        "client_cpu_pct": round(100 * (time.process_time() - own) / wall, 1),
        "server_rss_mb": _rss_mb(pid),
        "min_fps": round(min((f for f, _ in rates), default=0.0), 2),
        "max_jitter_ms": round(1000 * max((j for _, j in rates), default=0.0), 1),
    }


def _rss_mb(pid: int) -> float | None:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """p50/p95 of every figure over the turns, the barge-ins and the levels."""
    turns = [t for t in result.get("turns", []) if t.get("first_voice_s") is not None]
    hesitant = result.get("hesitant", [])
    sounds = [s for s in result.get("sounds", []) if "error" not in s]
    everything = [*result.get("turns", []), *hesitant]
    model_ms = [
        {"ms": t["end_of_turn"]["model_ms"]}
        for t in everything
        if t.get("end_of_turn") and t["end_of_turn"].get("model_ms") is not None
    ]

    def of(key: str, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        found = spread([r[key] for r in rows if r.get(key) is not None])
        return found.as_dict() if found else None

    levels = [lv for lv in result.get("levels", []) if lv["sessions"] > 0]
    base = next((lv for lv in result.get("levels", []) if lv["sessions"] == 0), None)
    per_idle = None
    per_mb = None
    if base is not None and levels:
        top = levels[-1]
        per_idle = round((top["server_cpu_pct"] - base["server_cpu_pct"]) / top["sessions"], 2)
        if top.get("server_rss_mb") and base.get("server_rss_mb"):
            per_mb = round((top["server_rss_mb"] - base["server_rss_mb"]) / top["sessions"], 1)
    holding = [lv["sessions"] for lv in levels if lv["min_fps"] >= 24 and lv["min_fps_while_answering"] >= 24]
    by_voice: dict[str, Any] = {}
    cold: dict[str, float | None] = {}
    for row in result.get("voices", []):
        if row.get("cold"):
            cold[row["voice"]] = row.get("first_voice_s")
        else:
            by_voice.setdefault(row["voice"], []).append(row)
    return {
        "voices": {
            voice: {
                "engine": rows[0].get("engine"),
                "first_voice_s": of("first_voice_s", rows),
                "new_persona_first_turn_s": cold.get(voice),
                "abs_sync_lag_ms": of(
                    "abs", [{"abs": abs(r["sync_lag_ms"])} for r in rows if r.get("sync_lag_ms") is not None]
                ),
            }
            for voice, rows in by_voice.items()
        },
        "first_voice_s": of("first_voice_s", turns),
        "moving_mouth_s": of("moving_mouth_s", turns),
        "sync_lag_ms": of("sync_lag_ms", turns),
        "abs_sync_lag_ms": of(
            "abs", [{"abs": abs(t["sync_lag_ms"])} for t in turns if t.get("sync_lag_ms") is not None]
        ),
        "sync_peak_correlation": of("sync_peak_correlation", turns),
        "fps": of("fps", turns),
        "jitter_ms": of("jitter_ms", turns),
        "speaking_cpu_pct": of("speaking_cpu_pct", turns),
        "barge_in_s": of("stop_s", result.get("barge_ins", [])),
        "interrupted_fps": of("fps", [*result.get("barge_ins", []), *sounds]),
        "complete_premature_turns": sum(t.get("premature_turns", 0) for t in result.get("turns", [])),
        "hesitant_first_voice_s": of("first_voice_s", [t for t in hesitant if t.get("first_voice_s") is not None]),
        "hesitant_premature_turns": sum(t.get("premature_turns", 0) for t in hesitant),
        "hesitant_answered_once": sum(1 for t in hesitant if t.get("answers") == 1),
        "hesitant_asked": len(hesitant),
        "sounds_played": len(sounds),
        "sounds_pausing": sum(1 for s in sounds if s["paused"]),
        "sounds_stopping": sum(1 for s in sounds if s["stopped"]),
        "resume_after_sound_s": of("resume_after_sound_s", sounds),
        "voice_again_s": of("voice_again_s", sounds),
        "turn_model_ms": of("ms", model_ms),
        "idle_cpu_pct_per_session": per_idle,
        "rss_mb_per_session": per_mb,
        "sessions_held_at_25_fps": max(holding) if holding else 0,
        "most_sessions_tried": max((lv["sessions"] for lv in levels), default=0),
    }


def live_checks(summary: dict[str, Any], limits: dict[str, float]) -> list[Check]:
    def p(key: str, which: str = "p50") -> float | None:
        value = summary.get(key)
        return None if value is None else float(value[which])

    voices = [
        Check(
            f"live_first_voice_{voice}_s",
            f"live: first reply voice with the voice {voice} (p50)",
            None if row.get("first_voice_s") is None else float(row["first_voice_s"]["p50"]),
            limits.get("live_first_voice_each_voice_s", 1.0),
            "s",
        )
        for voice, row in summary.get("voices", {}).items()
    ]
    return [
        Check("live_first_voice_s", "live: end of speech → first reply voice at the client (p50)",
              p("first_voice_s"), limits.get("live_first_voice_s", 1.0), "s"),
        *voices,
        Check("live_sync_ms", "live: |voice/mouth lag| of the received streams (p95)",
              p("abs_sync_lag_ms", "p95"), limits.get("live_sync_ms", 40.0), "ms"),
        Check("live_barge_in_s", "live: user starts speaking → the face's voice stops (p50)",
              p("barge_in_s"), limits.get("live_barge_in_s", 0.3), "s"),
        Check("live_hesitant_premature", "live: hesitant questions: turns taken before their end",
              summary.get("hesitant_premature_turns") if summary.get("hesitant_asked") else None,
              limits.get("live_hesitant_premature", 0), ""),
        Check("live_sounds_stopping_pct", "live: backchannels and noises over a reply that stop it (%)",
              _pct(summary.get("sounds_stopping"), summary.get("sounds_played")),
              limits.get("live_sounds_stopping_pct", 10.0), "%"),
        Check("live_resume_s", "live: a paused reply goes on after the sound's end (p95)",
              p("resume_after_sound_s", "p95"), limits.get("live_resume_s", 0.5), "s"),
        Check("live_interrupted_fps", "live: frames a second at the client through interruptions and sounds (min)",
              p("interrupted_fps", "min"), limits.get("live_interrupted_fps", 24.0), "fps", higher_is_better=True),
        Check("live_idle_cpu_pct", "live: CPU per idle session (% of one core)",
              summary.get("idle_cpu_pct_per_session"), limits.get("live_idle_cpu_pct", 15.0), "%"),
    ]  # fmt: skip


def _pct(part: int | None, whole: int | None) -> float | None:
    return None if not whole else round(100 * (part or 0) / whole, 1)
