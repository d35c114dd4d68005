"""Incoming audio without aiortc's 80 ms wait.

aiortc's receiver holds four packets (80 ms) of audio in its jitter buffer before it decodes the first,
and keeps that delay for the whole call. On a LAN or loopback one packet is plenty, and every 20 ms
held is 20 ms later to hear that the user stopped (the reply's start) or started (a barge-in). A late
or lost packet is then simply missing, which voice-activity detection and recognition shrug off.
aiortc has no setting for this, so the receiver's buffer is replaced (a private attribute, checked
here so that an aiortc that renames it leaves the default in place instead of failing).
"""

from __future__ import annotations

from aiortc import RTCRtpReceiver
from aiortc.jitterbuffer import JitterBuffer

CAPACITY = 16  # packets (aiortc's own for audio)
PREFETCH = 1

_ATTRIBUTE = "_RTCRtpReceiver__jitter_buffer"


def prompt_audio(receiver: RTCRtpReceiver) -> bool:
    """Decode the receiver's audio one packet after it arrives; False if this aiortc does not allow it."""
    if not isinstance(getattr(receiver, _ATTRIBUTE, None), JitterBuffer):
        return False
    setattr(receiver, _ATTRIBUTE, JitterBuffer(capacity=CAPACITY, prefetch=PREFETCH))
    return True
