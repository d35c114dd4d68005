"""The server hears the microphone one packet (20 ms) after it arrives, not aiortc's four."""

from __future__ import annotations

import asyncio

from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from avatar.server.live.receiving import PREFETCH, prompt_audio


def test_the_audio_jitter_buffer_hands_over_each_packet_when_the_next_arrives() -> None:
    async def scenario() -> None:
        pc = RTCPeerConnection()
        receiver = pc.addTransceiver("audio", direction="recvonly").receiver
        assert prompt_audio(receiver)  # this aiortc still keeps its buffer where we look
        buffer = receiver._RTCRtpReceiver__jitter_buffer  # type: ignore[attr-defined]
        assert isinstance(buffer, JitterBuffer) and buffer._prefetch == PREFETCH == 1
        released = []
        for n in range(4):
            packet = RtpPacket(payload_type=111, sequence_number=n, timestamp=960 * n)
            packet._data = b"x"  # type: ignore[attr-defined]
            released.append(buffer.add(packet)[1])
        assert released[0] is None and [f.timestamp for f in released[1:] if f is not None] == [0, 960, 1920]
        await pc.close()

    asyncio.run(scenario())
