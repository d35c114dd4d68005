"""A paused or late reply's face, still sent at the full frame rate.

A reply is queued encoded, as a chain of VP8 frames each of which changes the picture the one before
left; and it is made ahead of playback, so its encoder is seconds past the frame on screen when the
user's voice pauses the reply. Sending nothing while paused (the frame held) starves the client: an
interrupted session arrived at 18-22 frames a second, and a browser counts that as a freeze. Nor can a
frame simply be sent again: a VP8 frame decoded twice applies its change twice.

So the held frame is made anew (``hold``): the frames sent since the last keyframe are decoded here,
as the client decoded them, and the picture on screen is encoded as a keyframe (``key``); that
keyframe's own picture, encoded again after it, gives a frame with nothing to change (``still``),
which decodes to the same picture however often it is sent (to within a grey level: VP8's loop filter
smooths the block edges again each time, converging in a few frames). When the reply goes on, the
client's decoder holds the held picture, not the reply's chain: the reply's own frames up to its next
keyframe (a reply has one every ``REJOIN_EVERY_S``) are decoded and encoded again after the still
frame (``Bridge``), and the reply's own frames take over at that keyframe.

``hold`` runs in a worker thread when the reply pauses: about 2-3 ms a frame, for tens of frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
from av.video.codeccontext import VideoCodecContext

from avatar.server.live.codecs import VideoEncoder

REJOIN_EVERY_S = 1.0  # a reply's frames carry a keyframe this often (where a resumed reply rejoins them)


class Bridge:
    """The reply's own frames, decoded, encoded again to follow the held picture."""

    def __init__(self, decoder: VideoCodecContext, encoder: VideoEncoder) -> None:
        self._decoder = decoder
        self._encoder = encoder

    def carry(self, data: bytes) -> bytes:
        """The reply frame after the last one carried (or decoded into the bridge), encoded again."""
        pictures = self._decoder.decode(av.Packet(data))
        if not pictures:
            raise ValueError("a reply frame decoded to no picture")
        return _encode(self._encoder, pictures[-1])


@dataclass(frozen=True)
class Held:
    """The frames that hold a paused reply's picture, and those that bring it back to the reply."""

    key: bytes  # a keyframe of the picture on screen
    still: bytes  # after it, any number of times: the same picture
    bridged: list[bytes]  # after them: the reply's queued frames (``upcoming``), encoded again
    bridge: Bridge  # for the reply's frames after those, up to its next keyframe


def hold(sent: list[bytes], played: list[bytes], upcoming: list[bytes], *, fps: int, kbps: int) -> Held:
    """``sent``: the frames the client has decoded since its last keyframe (the first one is that
    keyframe); ``played``: the reply's own frames from its last keyframe to the last one played (the
    same as ``sent`` unless an earlier hold bridged some); ``upcoming``: its own queued frames up to
    (not including) its next keyframe."""
    if not sent or not played:
        raise ValueError("a held picture needs the frames played since a keyframe")
    shown = _last_picture(_decoder(), sent)
    reply = _decoder()
    _last_picture(reply, played)
    encoder = VideoEncoder(shown.width, fps, kbps)
    key = _encode(encoder, shown, keyframe=True)
    still = _encode(encoder, _last_picture(_decoder(), [key]))
    bridge = Bridge(reply, encoder)
    return Held(key, still, [bridge.carry(data) for data in upcoming], bridge)


def _last_picture(decoder: VideoCodecContext, frames: list[bytes]) -> av.VideoFrame:
    picture = None
    for data in frames:
        for frame in decoder.decode(av.Packet(data)):
            picture = frame
    if picture is None:
        raise ValueError("the frames decoded to no picture")
    return picture


def _encode(encoder: VideoEncoder, picture: av.VideoFrame, *, keyframe: bool = False) -> bytes:
    frame = av.VideoFrame.from_ndarray(picture.to_ndarray(format="yuv420p"), format="yuv420p")
    return encoder.encode_yuv(frame, keyframe=keyframe).data


def _decoder() -> VideoCodecContext:
    decoder = av.CodecContext.create("vp8", "r")
    assert isinstance(decoder, VideoCodecContext)
    return decoder
