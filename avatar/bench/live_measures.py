"""Figures taken from what a live client received: when the voice and the moving mouth arrived, how
well voice and mouth are in step, the frame rate; and how much CPU a process used."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from avatar.bench.live_client import RATE, LiveClient
from avatar.quality.lipsync import LipSyncScore, MouthMeter, loudness_envelope, score, without_brief_closures
from avatar.types import FrameArray

FPS = 25
MOUTH_MARGIN = 0.02  # an opening this much wider than any at rest is the mouth moving (share of face height)
SYNC_MIN_SPEECH_S = 3.0
"""A reply with less speech than this gets no voice/mouth lag. Lips drawn from the phones do not follow
loudness frame by frame, so a short reply's correlation has no single peak: the same "My name is Eileen
Collins." (1.5 s) measured -195, +267 and +272 ms in one run, whereas every reply of 5 s or more of that
run lay within ±30 ms. A stream out of step is still caught on the longer replies."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ReceivedReply:
    """One reply as the client got it (times are ``perf_counter`` on the client)."""

    first_voice: float | None  # arrival of its first 20 ms of voice
    moving_mouth: float | None  # arrival of the first frame whose mouth is open wider than at rest
    sync: LipSyncScore | None  # mouth against voice, on the sender's clock (RTCP sender reports);
    # None when the reply is too short to tell (``SYNC_MIN_SPEECH_S``)
    fps: float
    jitter_ms: float


def measure_reply(client: LiveClient, meter: MouthMeter, ended: float, done: float) -> ReceivedReply:
    """The reply to speech that ended at ``ended`` and whose playback was over by ``done``."""
    voice = client.first_voice(ended)
    at_rest = [s.image for s in client.seen if s.image is not None and s.arrived < ended - 0.2][-50:]
    rest = meter.openings(at_rest)
    rest_max = float(np.nanmax(rest)) if np.isfinite(rest).any() else 0.0
    after = [s for s in client.seen if s.image is not None and s.arrived >= ended]
    moving = None
    if after:
        openings = meter.openings([s.image for s in after])  # type: ignore[misc]
        wide = np.flatnonzero(np.nan_to_num(openings, nan=0.0) > rest_max + MOUTH_MARGIN)
        moving = after[int(wide[0])].arrived if wide.size else None
    start = voice.arrived if voice is not None else ended
    fps, jitter = client.frame_rate(start, done)
    return ReceivedReply(
        first_voice=voice.arrived if voice else None,
        moving_mouth=moving,
        sync=sync_score(client, meter, start, done),
        fps=fps,
        jitter_ms=1000 * jitter,
    )


def sync_score(client: LiveClient, meter: MouthMeter, start: float, end: float) -> LipSyncScore | None:
    """Cross-correlate mouth opening and loudness on the sender's clock, as the browser lines the two
    tracks up (from the RTCP sender reports), over the frames that arrived between ``start`` and ``end``."""
    frames = [s for s in client.seen if s.image is not None and s.sent is not None and start <= s.arrived <= end]
    voice = [h for h in client.heard if h.sent is not None and start - 0.5 <= h.arrived <= end + 0.5]
    if len(frames) < 2 * FPS or not voice:
        return None
    t0 = frames[0].sent
    assert t0 is not None
    n = round((frames[-1].sent - t0) * FPS) + 1  # type: ignore[operator]
    grid: list[FrameArray | None] = [None] * n
    for s in frames:
        k = round((s.sent - t0) * FPS)  # type: ignore[operator]
        if 0 <= k < n:
            grid[k] = s.image
    held: list[FrameArray | None] = []
    last = frames[0].image
    for image in grid:  # a slot that carried no frame shows the one before (as a player does)
        last = image if image is not None else last
        held.append(last)
    audio = np.zeros(int((n / FPS + 0.1) * RATE), np.float32)
    for h in voice:
        at = round((h.sent - t0) * RATE)  # type: ignore[operator]
        if 0 <= at < audio.size - h.pcm.size:
            audio[at : at + h.pcm.size] = h.pcm
    envelope = loudness_envelope(audio, RATE, FPS, n)
    if np.count_nonzero(envelope > 0.1 * envelope.max(initial=0.0)) < SYNC_MIN_SPEECH_S * FPS:
        return None
    openings = without_brief_closures(meter.openings(held), FPS)  # type: ignore[arg-type]
    return score(openings, envelope, FPS)
