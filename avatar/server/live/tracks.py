"""The two tracks a live session sends: each hands aiortc the next encoded frame of the shared
timeline when it comes due (``Playout``), so sending costs only the packetising."""

from __future__ import annotations

import asyncio
import fractions

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.packet import Packet

from avatar.server.live.codecs import AUDIO_CLOCK, PACKET_S, VIDEO_CLOCK
from avatar.server.live.playout import Playout

VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_CLOCK)


def _packet(data: bytes, pts: int, time_base: fractions.Fraction) -> Packet:
    packet = Packet(data)
    packet.pts = pts
    packet.time_base = time_base
    return packet


class FaceVideoTrack(MediaStreamTrack):
    """The face: a VP8 frame per slot (a slot that holds the frame before sends nothing)."""

    kind = "video"

    def __init__(self, playout: Playout) -> None:
        super().__init__()
        self.playout = playout
        self.next = 0
        self.sent = 0

    async def recv(self) -> Packet:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            n = self.next
            self.next += 1
            await _until(self.playout.due(n), self.playout)
            slot = self.playout.slot(n)
            if slot.video is not None:
                self.sent += 1
                return _packet(slot.video, n * VIDEO_CLOCK // self.playout.fps, VIDEO_TIME_BASE)


class VoiceAudioTrack(MediaStreamTrack):
    """The voice: two 20 ms Opus packets per slot, silence when the face is not speaking."""

    kind = "audio"

    def __init__(self, playout: Playout) -> None:
        super().__init__()
        self.playout = playout
        self.next = 0
        self.per_slot = len(playout.silence_slot)

    async def recv(self) -> Packet:
        if self.readyState != "live":
            raise MediaStreamError
        m = self.next
        self.next += 1
        await _until(self.playout.at(m * PACKET_S), self.playout)
        slot = self.playout.slot(m // self.per_slot)
        return _packet(slot.audio[m % self.per_slot], m * round(AUDIO_CLOCK * PACKET_S), AUDIO_TIME_BASE)


async def _until(when: float, playout: Playout) -> None:
    delay = when - playout.clock()
    if delay > 0:
        await asyncio.sleep(delay)
