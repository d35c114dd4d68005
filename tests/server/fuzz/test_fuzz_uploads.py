"""Bad input, systematically: every upload route gets mutated real media and hostile text.

The corpus is made here from real speech (the embedded TTS) with PyAV: WAV, MP3, Ogg/Opus, FLAC, M4A/AAC,
WebM, 8-bit and float WAV, odd sample rates, 5.1 channels, a Matroska file with two audio streams, an MP4
with video and one with video only; and the persona photo as JPEG, PNG and WebP. Hypothesis picks a
file and a mutation (bit flips, truncation, splices of two files, header corruption, size fields set to
0 or 2^32-1, repeated chunks) with a fixed seed, so a failure reproduces and shrinks. Every answer must
be a 2xx or a 4xx with the JSON error shape, never a 500 or a traceback, and the server must stay ready
with nothing left in staging.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from live_server import ServerProcess, error_code
from PIL import Image

from avatar import media
from avatar.types import AudioArray

pytestmark = pytest.mark.slow  # the real server with the embedded models

SPEECH_RATE = 24_000
Media = tuple[str, str, bytes]  # (name, content type, bytes)


def _resampled(audio: AudioArray, rate: int) -> AudioArray:
    positions = np.linspace(0, audio.size - 1, int(audio.size * rate / SPEECH_RATE))
    return np.interp(positions, np.arange(audio.size), audio).astype(np.float32)


def _encode(
    audio: AudioArray,
    fmt: str,
    codec: str,
    rate: int,
    layout: str = "mono",
    *,
    video: bool = False,
    sound: bool = True,
    second: tuple[str, int, str] | None = None,
) -> bytes:
    """``audio`` (24 kHz) encoded with ``codec`` at ``rate`` in ``layout``, in container ``fmt``; with a
    small H.264 video stream, without sound, or with a second audio stream, as asked."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        picture = out.add_stream("libx264", rate=Fraction(10)) if video else None
        sounds = [(codec, rate, layout)] if sound else []
        if second is not None:
            sounds.append(second)
        streams = [(out.add_stream(c, rate=r, layout=lay), r, lay) for c, r, lay in sounds]
        if picture is not None:  # every stream is added before the first packet is written
            picture.width, picture.height, picture.pix_fmt = 64, 64, "yuv420p"
            for i in range(int(10 * audio.size / SPEECH_RATE)):
                frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 7 % 255, np.uint8), format="rgb24")
                out.mux(picture.encode(frame))
            out.mux(picture.encode(None))
        for stream, stream_rate, stream_layout in streams:
            assert isinstance(stream, av.AudioStream) and stream.codec_context.format is not None
            samples = _resampled(audio, stream_rate)
            planes = np.tile(samples, (len(av.AudioLayout(stream_layout).channels), 1))
            native = av.AudioResampler(format=stream.codec_context.format.name, layout=stream_layout, rate=stream_rate)
            step = stream.codec_context.frame_size or 1024
            for start in range(0, samples.size, step):
                chunk = np.ascontiguousarray(planes[:, start : start + step])
                piece = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=stream_layout)
                piece.sample_rate = stream_rate
                piece.pts = start
                for converted in native.resample(piece):
                    for packet in stream.encode(converted):
                        out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
    return buf.getvalue()


def _wav(audio: AudioArray, rate: int, codec: str, layout: str = "mono") -> bytes:
    return _encode(audio, "wav", codec, rate, layout)


@pytest.fixture(scope="module")
def audio_corpus(speech: Callable[[str], AudioArray]) -> list[Media]:
    voice = speech("Hello there, how are you?")
    made = [
        ("speech.wav", "audio/wav", media.wav_bytes(voice, SPEECH_RATE)),
        ("speech.mp3", "audio/mpeg", _encode(voice, "mp3", "libmp3lame", 44_100, "stereo")),
        ("speech.ogg", "audio/ogg", _encode(voice, "ogg", "libopus", 48_000)),
        ("speech.flac", "audio/flac", _encode(voice, "flac", "flac", 8_000)),
        ("speech.m4a", "audio/mp4", _encode(voice, "mp4", "aac", 22_050, "stereo")),
        ("speech.webm", "audio/webm", _encode(voice, "webm", "libopus", 48_000, "stereo")),
        ("u8-11k.wav", "audio/wav", _wav(voice, 11_025, "pcm_u8")),
        ("float-96k.wav", "audio/wav", _wav(voice, 96_000, "pcm_f32le")),
        ("odd-7350.wav", "audio/wav", _wav(voice, 7_350, "pcm_s16le")),
        ("surround.wav", "audio/wav", _wav(voice, 48_000, "pcm_s16le", "5.1")),
        (
            "two-streams.mkv",
            "video/x-matroska",
            _encode(voice, "matroska", "flac", 16_000, second=("mp3", 44_100, "stereo")),
        ),
        ("with-video.mp4", "video/mp4", _encode(voice, "mp4", "aac", 44_100, video=True)),
        ("video-only.mp4", "video/mp4", _encode(voice, "mp4", "aac", 44_100, video=True, sound=False)),
    ]
    return made


@pytest.fixture(scope="module")
def image_corpus(portrait: Path, faceless_png: bytes) -> list[Media]:
    photo = Image.open(portrait).convert("RGB")
    photo.thumbnail((320, 320))

    def saved(fmt: str, **options: Any) -> bytes:
        buf = io.BytesIO()
        photo.save(buf, format=fmt, **options)
        return buf.getvalue()

    exif = Image.Exif()
    exif[0x0112] = 8  # rotated: the loader must turn it upright
    return [
        ("face.jpg", "image/jpeg", saved("JPEG", quality=85)),
        ("face.png", "image/png", saved("PNG")),
        ("face.webp", "image/webp", saved("WEBP")),
        ("rotated.jpg", "image/jpeg", saved("JPEG", exif=exif)),
        ("face.gif", "image/gif", saved("GIF")),
        ("sky.png", "image/png", faceless_png),
    ]


@st.composite
def mutated(draw: st.DrawFn, corpus: list[Media]) -> tuple[str, str, bytes, str]:
    """(name, content type, bytes, what was done) — a corpus file, mutated."""
    name, content_type, data = draw(st.sampled_from(corpus))
    kind = draw(st.sampled_from(["intact", "bitflip", "truncate", "splice", "header", "sizefield", "repeat", "tiny"]))
    out = bytearray(data)
    if kind == "bitflip":
        for _ in range(draw(st.integers(1, 64))):
            at = draw(st.integers(0, len(out) - 1))
            out[at] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncate":
        out = out[: draw(st.integers(0, len(out) - 1))]
    elif kind == "splice":
        _, _, other = draw(st.sampled_from(corpus))
        out = out[: draw(st.integers(0, len(out)))] + other[draw(st.integers(0, len(other))) :]
    elif kind == "header":
        start = draw(st.integers(0, min(64, len(out) - 1)))
        noise = draw(st.binary(min_size=1, max_size=16))
        out[start : start + len(noise)] = noise
    elif kind == "sizefield":
        at = draw(st.integers(0, min(60, len(out) - 4)))
        out[at : at + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff"]))
    elif kind == "repeat":
        start = draw(st.integers(0, len(out) - 1))
        chunk = out[start : start + draw(st.integers(1, 4096))]
        out = out[:start] + chunk * draw(st.integers(2, 8)) + out[start:]
    elif kind == "tiny":
        out = out[: draw(st.integers(0, 3))]
    return name, content_type, bytes(out), f"{kind} {name}"


def cases(count: int) -> settings:
    """``count`` cases, the same on every run (a failure reproduces), no time limit per case."""
    return settings(
        max_examples=count, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )


def assert_clean(response: httpx.Response, what: str) -> None:
    """A success, or a 4xx with exactly our JSON error shape; never a 5xx or a traceback."""
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    assert b"Traceback" not in response.content, what
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json"), what
        error_code(response)


def assert_still_well(server: ServerProcess) -> None:
    assert httpx.get(f"{server.base_url}/readyz", timeout=10).status_code == 200
    assert server.staging_folders() == []
    assert not [line for line in server.log_lines() if line.get("event") == "unhandled error"]


@pytest.mark.parametrize(
    ("route", "examples"),
    [("/api/v1/transcribe", 60), ("/api/v1/conversation", 12), ("/api/v1/animate", 12)],
)
def test_mutated_audio(
    server: ServerProcess, audio_corpus: list[Media], cases_tried: Counter[str], route: str, examples: int
) -> None:
    with httpx.Client(base_url=server.base_url, timeout=180) as http:

        @cases(examples)
        @given(upload=mutated(audio_corpus))
        def send(upload: tuple[str, str, bytes, str]) -> None:
            name, content_type, data, what = upload
            response = http.post(route, files={"audio": (name, data, content_type)})
            cases_tried[f"mutated audio      POST {route}"] += 1
            assert_clean(response, what)

        send()
    assert_still_well(server)


def test_mutated_photos(
    server: ServerProcess, image_corpus: list[Media], spoken_wav: Callable[[str], bytes], cases_tried: Counter[str]
) -> None:
    audio = spoken_wav("Hi.")
    with httpx.Client(base_url=server.base_url, timeout=180) as http:

        @cases(25)
        @given(upload=mutated(image_corpus))
        def send(upload: tuple[str, str, bytes, str]) -> None:
            name, content_type, data, what = upload
            files = {"audio": ("hi.wav", audio, "audio/wav"), "image": (name, data, content_type)}
            response = http.post("/api/v1/animate", files=files)
            cases_tried["mutated photo      POST /api/v1/animate"] += 1
            assert_clean(response, what)

        send()
    assert_still_well(server)


def test_mutated_multipart_bodies(
    server: ServerProcess, spoken_wav: Callable[[str], bytes], cases_tried: Counter[str]
) -> None:
    """The form itself damaged: boundaries, headers, names in other scripts, parts cut short."""
    request = httpx.Request(
        "POST",
        f"{server.base_url}/api/v1/transcribe",
        files={"audio": ("запись.wav", spoken_wav("Hi."), "audio/wav")},
        data={"language": "en"},
    )
    body = request.read()
    content_type = request.headers["content-type"]
    corpus = [("form", content_type, body)]
    with httpx.Client(base_url=server.base_url, timeout=180) as http:

        @cases(30)
        @given(upload=mutated(corpus))
        def send(upload: tuple[str, str, bytes, str]) -> None:
            _, _, data, what = upload
            response = http.post("/api/v1/transcribe", content=data, headers={"Content-Type": content_type})
            cases_tried["mutated multipart  POST /api/v1/transcribe"] += 1
            assert_clean(response, what)

        send()
    assert_still_well(server)


# Text: any code point (lone surrogates and NUL included, which only JSON can carry), field names in
# any script, fields repeated.
field_names = st.sampled_from(["text", "persona", "session_id", "language", "テキスト", "text\u0000", ""])
texts = st.text(st.characters(codec=None), max_size=40) | st.sampled_from(["😀😀", "...", "你好", "\ud800", "a\x00b"])


@pytest.mark.parametrize(("route", "examples"), [("/api/v1/chat", 15), ("/api/v1/speak", 20)])
def test_hostile_text(server: ServerProcess, cases_tried: Counter[str], route: str, examples: int) -> None:
    with httpx.Client(base_url=server.base_url, timeout=180) as http:

        @cases(examples)
        @given(
            text=texts,
            extra=st.lists(st.tuples(field_names, texts), max_size=3),
            encoding=st.sampled_from(["json", "multipart", "urlencoded"]),
        )
        def send(text: str, extra: list[tuple[str, str]], encoding: str) -> None:
            pairs = [("text", text), *extra]
            if encoding == "json":
                body = "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs) + "}"
                response = http.post(route, content=body.encode(), headers={"Content-Type": "application/json"})
            else:
                # Form encodings carry UTF-8: what cannot be encoded is replaced, as a browser would.
                form: dict[str, list[str]] = {}
                for key, value in pairs:
                    form.setdefault(_utf8(key), []).append(_utf8(value))
                files = {"unused": ("x", b"", "text/plain")} if encoding == "multipart" else None
                response = http.post(route, data=form, files=files)
            cases_tried[f"hostile text       POST {route}"] += 1
            assert_clean(response, f"{encoding} {pairs!r}")

        send()
    assert_still_well(server)


def _utf8(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")
