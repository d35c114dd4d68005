"""A paused or late reply's face, still sent at the full frame rate.

A reply is queued encoded, as a chain of VP8 frames each of which changes the picture the one before
left; and it is made ahead of playback, so its encoder is seconds past the frame on screen when the
user's voice pauses the reply. Sending nothing while paused (the frame held) starves the client: an
interrupted session arrived at 17-23 frames a second, and a browser counts that as a freeze. Nor can a
frame simply be sent again: a VP8 frame decoded twice applies its change twice.

So the reply's frames are decoded here as they are played (``Decoded``: 0.35 ms a 512-pixel frame), and
when it is held, the picture on screen is encoded as a keyframe (``Hold.key``); that keyframe's own
picture, encoded again after it, gives a frame with nothing to change (``Hold.still``), which decodes
to the same picture however often it is sent (to within a grey level: VP8's loop filter smooths the
block edges again each time, converging in a few frames). When the reply goes on, the client's decoder
holds the held picture, not the reply's chain: each of the reply's frames up to its next keyframe (one
every ``REJOIN_EVERY_S``) is decoded and encoded again after the still frame (``Hold.carry``, 3 ms a
frame as it plays), and the reply's own frames take over at that keyframe.
"""

from __future__ import annotations

import av
from av.video.codeccontext import VideoCodecContext

from avatar.server.live.codecs import VideoEncoder

REJOIN_EVERY_S = 4.0  # a reply's frames carry a keyframe this often, where a held reply rejoins them
# (a 512-pixel keyframe is ~20 P-frames of bytes: one a second would take a third of the bit rate)


class Decoded:
    """A reply's frames decoded as they play: the picture the client shows (or, after a hold, the one
    it would)."""

    def __init__(self) -> None:
        self._decoder = _decoder()
        self.picture: av.VideoFrame | None = None

    def add(self, data: bytes) -> av.VideoFrame:
        pictures = self._decoder.decode(av.Packet(data))
        if not pictures:
            raise ValueError("a reply frame decoded to no picture")
        self.picture = pictures[-1]
        return self.picture


class Hold:
    """Frames that show ``picture`` again, then the reply's next pictures encoded to follow them."""

    def __init__(self, picture: av.VideoFrame, *, fps: int, kbps: int) -> None:
        self._encoder = VideoEncoder(picture.width, fps, kbps)
        self.key = _encode(self._encoder, picture, keyframe=True)
        shown = _decoder().decode(av.Packet(self.key))
        if not shown:
            raise ValueError("a held keyframe decoded to no picture")
        self.still = _encode(self._encoder, shown[-1])
        self.stills = 0  # still frames sent
        self.carried = 0  # reply frames encoded again since

    def carry(self, picture: av.VideoFrame) -> bytes:
        """The reply's next picture (after the held frames or the last one carried), encoded again."""
        self.carried += 1
        return _encode(self._encoder, picture)


def _decoder() -> VideoCodecContext:
    decoder = av.CodecContext.create("vp8", "r")
    assert isinstance(decoder, VideoCodecContext)
    return decoder


def _encode(encoder: VideoEncoder, picture: av.VideoFrame, *, keyframe: bool = False) -> bytes:
    frame = av.VideoFrame.from_ndarray(picture.to_ndarray(format="yuv420p"), format="yuv420p")
    return encoder.encode_yuv(frame, keyframe=keyframe).data
