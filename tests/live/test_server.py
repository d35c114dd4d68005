"""Live mode end to end: an aiortc client (microphone from recorded speech) against the real server
with the embedded models. A question asked aloud gets an answer in the face's voice with its mouth
moving; the next question continues the conversation; speaking during the reply stops it; a peer that
vanishes is cleaned up; the session limit refuses clearly; bad offers get clear errors."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import pytest
from live_server import ServerProcess, error_code, live_mode_server

from avatar.bench.live_client import LiveClient, LiveRefused
from avatar.quality.lipsync import MouthMeter
from avatar.types import AudioArray

pytestmark = pytest.mark.slow

T = TypeVar("T")
LIVE = "/api/v1/live"


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def thread_ids(server: ServerProcess) -> set[int]:
    """The ids of the server process's threads."""
    return {int(task.name) for task in Path(f"/proc/{server.process.pid}/task").iterdir()}


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


async def ask(client: LiveClient, audio: AudioArray) -> tuple[float, dict[str, Any], dict[str, Any]]:
    """Say ``audio``; wait for its final transcript and for the reply to be played to its end.
    Returns when the speech ended, the transcript event and the reply's timings event."""
    said = client.mic.say(audio)
    await said.done.wait()
    since = said.ended_at
    _, transcript = await client.wait_event("transcript", since=since, where=lambda e: e["final"], timeout=90)
    _, timings = await client.wait_event("timings", since=since, timeout=120)
    return since, transcript, timings


def test_a_spoken_question_gets_a_spoken_animated_answer_and_the_next_continues(
    live: ServerProcess, voice: Callable[[str], AudioArray], meter: MouthMeter
) -> None:
    async def conversation() -> None:
        async with LiveClient(live.base_url) as client:
            assert len(client.session_id or "") == 32
            await asyncio.sleep(1.0)
            idle_from = time.perf_counter()
            client.recording = True
            ended, transcript, timings = await ask(client, voice("What is your favourite planet?"))
            assert "planet" in transcript["text"].lower()
            replies = client.after(ended, "reply")
            assert replies and len(replies[-1]["text"]) > 5
            assert client.after(ended, "speaking")
            assert timings["turn"] == 1 and timings["history_turns"] == 0 and timings["reply_seconds"] > 0.5
            assert timings["reply"] and set(timings["reply"].split()) <= set(replies[-1]["text"].split())
            for stamp in ("first_transcript", "first_token", "first_audio", "first_sent", "played"):
                assert 0 < timings["timings"][stamp] <= timings["timings"]["total"], stamp
            # It was begun at the pause, before the turn was over, and let out when it was.
            assert live.wait_for_log(event="live early reply released", turn=1, timeout=5)

            # The voice arrived, as long as the reply, and the face kept coming at 25 frames a second.
            voice_at = client.first_voice(ended)
            assert voice_at is not None
            loud = [h for h in client.heard if h.arrived > ended and h.rms > 0.003]
            assert len(loud) * 0.02 > 0.4 * timings["reply_seconds"]
            # (from half a second on: the frames queued while the client was not yet recording come at once)
            fps, _ = client.frame_rate(idle_from + 0.5, time.perf_counter())
            listened = [line for line in live.log_lines() if line.get("event") == "live listening face"]
            print(f"{fps:.2f} frames a second; the listening face: {listened[-1:]}")
            assert 20 <= fps <= 27, fps

            # The mouth moves while the face speaks, and rests before.
            spoken_frames = [s.image for s in client.seen if s.image is not None and s.arrived >= voice_at.arrived]
            idle_frames = [s.image for s in client.seen if s.image is not None and s.arrived < ended - 0.5]
            speaking = meter.openings(spoken_frames[:100])
            resting = meter.openings(idle_frames[-25:])
            assert np.isfinite(speaking).mean() > 0.9 and np.isfinite(resting).mean() > 0.9
            assert np.nanmax(speaking) > np.nanmax(resting) + 0.02, (np.nanmax(speaking), np.nanmax(resting))
            assert np.nanstd(speaking) > 2 * np.nanstd(resting)
            client.recording = False

            # The next question is heard in the same conversation: the reply saw the first turn.
            _, transcript2, timings2 = await ask(client, voice("Why do you like it so much?"))
            assert "like" in transcript2["text"].lower()
            assert timings2["turn"] == 2 and timings2["history_turns"] == 1
            assert {e["session_id"] for e in client.after(0, "listening")} == {client.session_id}

    run(conversation())


def test_speaking_during_the_reply_interrupts_it(live: ServerProcess, voice: Callable[[str], AudioArray]) -> None:
    """Words over the reply: it falls silent at their onset, and stops for good (not resumed)."""

    async def barge_in() -> None:
        async with LiveClient(live.base_url) as client:
            said = client.mic.say(voice("Tell me the whole story of your life, from childhood to today, in detail."))
            await said.done.wait()
            speaking_at, _ = await client.wait_event("speaking", since=said.ended_at, timeout=120)
            await asyncio.sleep(1.2)
            interruption = client.mic.say(voice("Wait, what is your favourite planet?"))
            _, event = await client.wait_event("interrupted", since=speaking_at, timeout=30)
            assert 0.8 < event["heard_seconds"] < 10, event
            _, started = await client.wait_event("user_speech_started", since=speaking_at, timeout=30)
            # paused at once (it might have been a "mm-hm"), then stopped for good once it was words
            assert started["paused"] is True and started["interrupted"] is False
            assert client.after(speaking_at, "resumed") == []
            await interruption.done.wait()
            await asyncio.sleep(0.5)
            # The face fell silent soon after the user began (loopback: the time is the server's).
            assert interruption.spoke_at is not None
            silent = client.fell_silent(interruption.spoke_at, interruption.ended_at + 0.3)
            assert silent is not None and silent - interruption.spoke_at < 1.5, (silent, interruption.spoke_at)
            # ... and the interruption itself was heard and answered.
            _, transcript = await client.wait_event(
                "transcript", since=interruption.spoke_at, where=lambda e: e["final"], timeout=90
            )
            assert "planet" in transcript["text"].lower()
            _, timings = await client.wait_event(
                "timings", since=interruption.spoke_at, where=lambda e: e["turn"] == 2, timeout=120
            )
            assert timings["history_turns"] == 1  # the interrupted turn, as far as it was heard

    run(barge_in())
    cancelled = live.wait_for_log(event="turn cancelled", reason="the user spoke", timeout=30)
    assert cancelled["heard"]  # the history keeps what was played, cut where it stopped
    assert cancelled["heard_s"] > 0.8


def test_the_client_receives_25_frames_a_second_through_an_interruption(
    live: ServerProcess, voice: Callable[[str], AudioArray]
) -> None:
    """Words over the reply pause it (its frame held) for a second or more, then stop it, and the
    interruption is answered: the client receives the face at 25 frames a second all along, the held
    frame too (sent again, showing the same picture), not only while a reply or the idle face plays."""

    async def interrupted() -> tuple[float, float, list[Any], dict[str, Any]]:
        async with LiveClient(live.base_url) as client:
            client.recording = True
            said = client.mic.say(voice("Tell me the whole story of your life, from childhood to today, in detail."))
            await said.done.wait()
            speaking_at, _ = await client.wait_event("speaking", since=said.ended_at, timeout=120)
            await asyncio.sleep(1.0)
            cut = client.mic.say(voice("Wait, what is your favourite planet?"))
            paused_at, started = await client.wait_event("user_speech_started", since=speaking_at, timeout=30)
            stopped_at, _ = await client.wait_event("interrupted", since=speaking_at, timeout=30)
            await cut.done.wait()
            await client.wait_event("timings", since=cut.spoke_at, where=lambda e: e["turn"] == 2, timeout=120)
            fps = client.received_rate(speaking_at - 1.0, time.perf_counter())
            held = [s for s in client.seen if paused_at + 0.2 <= s.arrived <= stopped_at]
            return fps, stopped_at - paused_at - 0.2, held, started

    fps, held_for, held, started = run(interrupted())
    assert started["paused"] is True  # the reply was held, not stopped at once
    print(f"received {fps:.2f} frames a second; {len(held)} frames in the {held_for:.2f} s the reply was held")
    assert fps >= 24.0, fps
    assert len(held) >= 0.8 * 25 * held_for, (len(held), held_for)
    pictures = [s.image.astype(int) for s in held if s.image is not None]
    steps = [float(np.abs(b - a).mean()) for a, b in itertools.pairwise(pictures)]
    assert steps and max(steps) < 3, steps  # the same picture, again and again


def test_talking_on_before_the_reply_is_heard_makes_one_utterance(
    live: ServerProcess, voice: Callable[[str], AudioArray]
) -> None:
    async def talk_on() -> None:
        async with LiveClient(live.base_url) as client:
            first = client.mic.say(voice("Tell me about"))
            await first.done.wait()
            _, heard = await client.wait_event("transcript", since=first.ended_at, where=lambda e: e["final"])
            more = client.mic.say(voice("your favourite planet."))  # on at once: the reply has not begun
            await more.done.wait()
            _, final = await client.wait_event(
                "transcript", since=more.spoke_at, where=lambda e: e["final"] and e["text"], timeout=90
            )
            _, stopped = await client.wait_event("interrupted", since=first.ended_at, timeout=30)
            await client.wait_event("timings", since=more.spoke_at, where=lambda e: e["turn"] == 2, timeout=120)
            if stopped["heard_seconds"] == 0:  # the usual case: nothing of the first reply was played
                assert final["merged"] is True, final
                assert "about" in final["text"].lower() and "planet" in final["text"].lower(), final
            else:  # this machine answered faster than the microphone went on: an ordinary barge-in
                assert final["merged"] is False and "about" not in final["text"].lower(), final
            assert "about" in heard["text"].lower()

    run(talk_on())


def trimmed(audio: AudioArray, level: float = 0.01) -> AudioArray:
    """``audio`` without its silent start and end."""
    loud = np.flatnonzero(np.abs(audio) > level)
    return audio[loud[0] : loud[-1] + 1]


def test_a_short_pause_inside_a_question_is_not_answered(
    live: ServerProcess, voice: Callable[[str], AudioArray]
) -> None:
    """0.25 s of silence mid-question (under the 0.4 s that ends a turn): a reply may be begun at the pause,
    but nothing of it reaches the user; the whole question gets one answer."""
    gap = np.zeros(int(0.25 * 48_000), np.float32)
    pad = np.zeros(4_800, np.float32)
    question = np.concatenate(
        [pad, trimmed(voice("Tell me about")), gap, trimmed(voice("your favourite planet, please.")), pad]
    )
    dropped_before = len([line for line in live.log_lines() if line.get("event") == "live early reply dropped"])

    async def hesitate() -> list[tuple[float, str, dict[str, Any]]]:
        async with LiveClient(live.base_url) as client:
            said = client.mic.say(question)
            await said.done.wait()
            _, timings = await client.wait_event("timings", since=said.spoke_at, timeout=120)
            await asyncio.sleep(1.0)  # anything else that would come
            assert timings["turn"] == 1 and timings["history_turns"] == 0
            return [(at, str(e.get("event")), e) for at, e in client.events if at > said.spoke_at]

    events = run(hesitate())
    kinds = [kind for _, kind, _ in events]
    finals = [data for _, kind, data in events if kind == "transcript" and data["final"]]
    assert len(finals) == 1 and "about" in finals[0]["text"].lower() and "planet" in finals[0]["text"].lower()
    assert "interrupted" not in kinds and kinds.count("timings") == 1 and kinds.count("speaking") == 1
    first_final = next(i for i, (_, kind, data) in enumerate(events) if kind == "transcript" and data["final"])
    assert first_final < kinds.index("reply")  # no reply text before the question was whole
    assert all(data.get("turn", 1) == 1 for _, _, data in events)
    dropped = [line for line in live.log_lines() if line.get("event") == "live early reply dropped"]
    print(f"early replies dropped at the mid-question pause: {len(dropped) - dropped_before}")


def test_a_hesitant_question_is_answered_once_after_its_end_with_the_whole_question(
    live: ServerProcess, fixture_speech: Callable[[str, int], AudioArray]
) -> None:
    """A question with a 1.1 s pause after "Could you tell me more about" (bench/fixtures/hesitant): the
    turn-end model and the words judge the pause unfinished, so nothing is answered until the end."""
    detector = lambda: httpx.get(f"{live.base_url}/readyz").json()["live"]["turn_detector"]  # noqa: E731
    assert wait_until(lambda: detector()["state"] != "loading", 30)
    assert detector() == {"configured": "smart-turn", "using": "smart-turn", "state": "ready"}
    pad = np.zeros(4_800, np.float32)
    question = np.concatenate([pad, fixture_speech("hesitant/tell-about", 48_000), pad])

    async def hesitate() -> list[tuple[float, str, dict[str, Any]]]:
        async with LiveClient(live.base_url) as client:
            said = client.mic.say(question)
            await said.done.wait()
            _, timings = await client.wait_event("timings", since=said.spoke_at, timeout=120)
            await asyncio.sleep(1.0)  # anything else that would come
            assert timings["turn"] == 1
            return [(at, str(e.get("event")), e) for at, e in client.events if at > said.spoke_at]

    events = run(hesitate())
    kinds = [kind for _, kind, _ in events]
    finals = [data for _, kind, data in events if kind == "transcript" and data["final"]]
    assert len(finals) == 1 and "about" in finals[0]["text"].lower() and "station" in finals[0]["text"].lower()
    assert "interrupted" not in kinds and kinds.count("timings") == 1 and kinds.count("speaking") == 1
    (end,) = [data for _, kind, data in events if kind == "end_of_turn"]
    assert end["why"] in ("finished", "unsure") and end["probability"] is not None


def test_without_early_replies_the_turn_is_answered_after_it_ends(
    tmp_path: Path, prepared_models: Path, voice: Callable[[str], AudioArray]
) -> None:
    """AVATAR_LIVE_EARLY_REPLY=false: nothing is begun at a pause (the model only reads the prompt ahead);
    the reply starts once the turn has ended, and the question is answered all the same."""
    with live_mode_server(tmp_path, AVATAR_LIVE_EARLY_REPLY="false", AVATAR_LIVE_IDLE_LOOP_SECONDS="2") as server:

        async def question() -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
            async with LiveClient(server.base_url) as client:
                ended, transcript, timings = await ask(client, voice("What is your favourite planet?"))
                return transcript, timings, client.after(ended, "reply")

        transcript, timings, replies = run(question())
        assert "planet" in transcript["text"].lower()
        assert timings["turn"] == 1 and timings["reply_seconds"] > 0.5 and replies and len(replies[-1]["text"]) > 5
        early = [line for line in server.log_lines() if str(line.get("event", "")).startswith("live early reply")]
        assert early == []


PEER = """
import asyncio, sys
from avatar.bench.live_client import LiveClient
from avatar.server.live.ice import use_host_addresses

async def main():
    use_host_addresses(["127.0.0.1"])
    client = LiveClient(sys.argv[1])
    await client.connect()
    print(client.live_session, flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


def test_a_peer_that_vanishes_is_cleaned_up(live: ServerProcess) -> None:
    assert wait_until(lambda: httpx.get(live.base_url + LIVE).json()["sessions"] == 0, timeout=20)
    # Threads are told apart by id: others (an earlier request's worker threads) may end meanwhile.
    before = thread_ids(live)
    peer = subprocess.Popen(
        [sys.executable, "-c", PEER, live.base_url], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    started: set[int] = set()
    try:
        assert peer.stdout is not None
        session = peer.stdout.readline().decode().strip()
        assert len(session) == 32, session
        assert httpx.get(live.base_url + LIVE).json()["sessions"] == 1

        def some_started() -> bool:
            started.update(thread_ids(live) - before)
            return bool(started)

        assert wait_until(some_started), "no thread started"
        os.kill(peer.pid, signal.SIGKILL)  # no goodbye: the process is simply gone
        killed = time.monotonic()
    finally:
        peer.kill()
        peer.wait()
    closing = live.wait_for_log(event="live session closing", live_session=session, timeout=20)
    assert closing["reason"].startswith("no audio from the client")
    live.wait_for_log(event="live session closed", live_session=session, timeout=20)
    assert time.monotonic() - killed < 10
    assert httpx.get(live.base_url + LIVE).json()["sessions"] == 0
    # Every thread started since (aiortc's decoders; a worker thread ends after 10 s idle) has ended.
    assert wait_until(lambda: not started & thread_ids(live), timeout=20), started & thread_ids(live)


def test_past_the_session_limit_an_offer_is_refused_clearly(live: ServerProcess) -> None:
    async def two() -> None:
        async with LiveClient(live.base_url):
            async with httpx.AsyncClient(base_url=live.base_url) as http:
                metrics = (await http.get("/metrics")).text
            assert "\navatar_live_sessions 1.0\n" in metrics  # the gauge Prometheus scrapes
            second = LiveClient(live.base_url)
            with pytest.raises(LiveRefused) as refused:
                await second.connect()
            await second.close()
            assert refused.value.status == 503 and refused.value.body["error"]["code"] == "busy"
            assert "AVATAR_MAX_LIVE_SESSIONS" in refused.value.body["error"]["message"]
            assert refused.value.retry_after is not None and int(refused.value.retry_after) > 0
        # Once the first has hung up, there is room again.
        async with LiveClient(live.base_url) as third:
            assert third.live_session

    run(two())


def test_bad_offers_are_clear_errors(live: ServerProcess) -> None:
    with httpx.Client(base_url=live.base_url, timeout=30) as http:
        info = http.get(LIVE).json()
        assert info["max_sessions"] == 1 and info["ice_servers"] == [] and info["turn_detector"] == "smart-turn"
        assert error_code(http.post(LIVE, content="sdp", headers={"content-type": "text/plain"})) == (
            "unsupported_media_type"
        )
        response = http.post(LIVE, content="{not json", headers={"content-type": "application/json"})
        assert response.status_code == 400 and error_code(response) == "malformed_request"
        for body, words in (
            ({"type": "offer"}, "sdp"),
            ({"sdp": "v=0", "type": "answer"}, "type"),
            ({"sdp": "x", "type": "offer", "session_id": "../../etc"}, "session_id"),
        ):
            response = http.post(LIVE, json=body)
            assert response.status_code == 422 and words in response.json()["error"]["message"], body
        for garbage in ("hello", "v=0\r\nthis is not sdp\r\n", "v=0\r\nm=audio x RTP/AVP 0\r\n"):
            response = http.post(LIVE, json={"sdp": garbage, "type": "offer"})
            assert response.status_code == 400 and error_code(response) == "invalid_sdp", response.text
        audio_only = run(_offer_without_video())
        response = http.post(LIVE, json={"sdp": audio_only, "type": "offer", "persona": "nobody"})
        assert response.status_code == 404 and error_code(response) == "unknown_persona"
        response = http.post(LIVE, json={"sdp": audio_only, "type": "offer"})
        assert response.status_code == 422 and "video" in response.json()["error"]["message"], response.text
        assert http.get(LIVE).json()["sessions"] == 0  # nothing half-open was left


def test_offers_with_bad_values_are_400_before_anything_starts(live: ServerProcess) -> None:
    """The probe's offers: each is refused before a peer connection is made, leaving no session and no
    exception in the log (aiortc's DTLS assert and ``sendto`` overflow are never reached)."""
    offer = run(_full_offer())
    candidate = next(line for line in offer.splitlines() if line.startswith("a=candidate:"))
    bits = candidate.split(" ")
    bad = {
        "no fingerprint": re.sub(r"a=fingerprint:[^\r\n]*\r\n", "", offer),
        "port 99999": offer.replace(candidate, " ".join([*bits[:5], "99999", *bits[6:]])),
        "address 999.0.0.1": offer.replace(candidate, " ".join([*bits[:4], "999.0.0.1", *bits[5:]])),
        "payload type": re.sub(r"a=rtpmap:(\d+) opus", "a=rtpmap:99999999999 opus", offer, count=1),
        "1,000 candidates": offer.replace(candidate, "\r\n".join([candidate] * 1000), 1),
    }
    logged = len(live.log_lines())
    with httpx.Client(base_url=live.base_url, timeout=30) as http:
        for name, sdp in bad.items():
            response = http.post(LIVE, json={"sdp": sdp, "type": "offer"})
            assert response.status_code == 400 and error_code(response) == "invalid_sdp", (name, response.text)
        assert http.get(LIVE).json()["sessions"] == 0
    time.sleep(1.0)  # what a session started for one of them would log comes within this
    errors = [line for line in live.log_lines()[logged:] if line.get("level") in ("error", "critical")]
    assert errors == [], errors


async def _full_offer() -> str:
    from aiortc import RTCPeerConnection

    from avatar.bench.live_client import Microphone

    pc = RTCPeerConnection()
    pc.addTransceiver(Microphone(), direction="sendrecv")
    pc.addTransceiver("video", direction="recvonly")
    pc.createDataChannel("events")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp


async def _offer_without_video() -> str:
    from aiortc import RTCPeerConnection

    from avatar.bench.live_client import Microphone

    pc = RTCPeerConnection()
    pc.addTransceiver(Microphone(), direction="sendrecv")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return str(sdp)


def test_the_face_listens_while_the_user_speaks(
    live: ServerProcess, voice: Callable[[str], AudioArray], meter: MouthMeter
) -> None:
    """While a fake user asks a question with a pause in it, the frames the client decodes show the face
    listening: its head moves more than it idles (a nod after the pause, the head lowered), its mouth
    stays still, and the frames keep coming at 25 a second, into the reply."""
    gap = np.zeros(int(0.7 * 48_000), np.float32)
    pad = np.zeros(4_800, np.float32)
    opening = trimmed(voice("Tell me about"))
    question = np.concatenate([pad, opening, gap, trimmed(voice("your favourite planet, and the moons.")), pad])
    paused_s = (pad.size + opening.size) / 48_000  # where the pause begins, into the clip

    async def listened() -> tuple[list[Any], list[Any], list[Any], float]:
        async with LiveClient(live.base_url) as client:
            await asyncio.sleep(1.5)
            client.recording = True
            idle_from = time.perf_counter()
            await asyncio.sleep(3.0)
            said = client.mic.say(question)
            await said.done.wait()
            spoke_at, ended_at = said.spoke_at, said.ended_at
            await client.wait_event("speaking", since=spoke_at, timeout=90)
            await asyncio.sleep(1.0)
            fps = client.received_rate(idle_from, time.perf_counter())
            client.recording = False
            idle = [s.image for s in client.seen if s.image is not None and idle_from <= s.arrived < spoke_at]
            heard = [s.image for s in client.seen if s.image is not None and spoke_at + 0.5 <= s.arrived < ended_at]
            pause = said.started + paused_s  # type: ignore[operator]
            after_pause = [s.image for s in client.seen if s.image is not None and pause <= s.arrived < pause + 1.5]
            return idle, heard, after_pause, fps

    idle, heard, after_pause, fps = run(listened())
    idle_m = np.array([_head_and_mouth(meter, f) for f in idle[-len(heard) :]])
    heard_m = np.array([_head_and_mouth(meter, f) for f in heard])
    assert np.isfinite(heard_m).all(axis=1).mean() > 0.9
    nod_idle = _dip(idle_m[:, 0])
    nod_heard = _dip(np.array([_head_and_mouth(meter, f)[0] for f in after_pause]))
    gap_heard = np.nanmax(heard_m[:, 1]) - np.nanmin(heard_m[:, 1])
    print(
        f"received {fps:.2f} frames a second; head dip {nod_heard:.4f} face heights listening, "
        f"{nod_idle:.4f} idling; lip gap range {gap_heard:.4f} listening"
    )
    assert live.wait_for_log(event="live listening face", timeout=10)
    (logged,) = [line for line in live.log_lines() if line.get("event") == "live listening face"][-1:]
    print(logged)
    assert logged["nods"] >= 1 and logged["frames"] > 25, logged
    # The nod after the pause: 2.5 degrees (0.028 face heights; the idle loop's sharpest turn, where it
    # reverses, dips about 0.015).
    assert nod_heard > 0.02 and nod_heard > 2 * nod_idle, (nod_heard, nod_idle)
    assert gap_heard < 0.01, gap_heard  # the mouth did not move
    assert fps >= 24.0, fps


def _dip(nose: np.ndarray, half: int = 7) -> float:
    """The deepest quick dip of the head (a nod): how far the nose tip goes below the mean of where it
    was ``half`` frames before and after (the idle sway is too slow to make much of one)."""
    return float(np.nanmax(nose[half:-half] - (nose[: -2 * half] + nose[2 * half :]) / 2))


def _head_and_mouth(meter: MouthMeter, image: Any) -> tuple[float, float]:
    """The nose tip's height and the inner-lip gap, in face heights (NaN without a face)."""
    faces = meter.faces(image)
    if not faces:
        return float("nan"), float("nan")
    lm = faces[0][:, :2]
    height = float(np.linalg.norm(lm[152] - lm[10]))
    return float(lm[1, 1]) / height, float(np.linalg.norm(lm[14] - lm[13])) / height
