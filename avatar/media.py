"""Audio decoding, loudness, WAV writing and MP4 muxing, on PyAV's bundled FFmpeg.

Every function here is blocking; callers in the event loop run them in a worker thread.
"""

from __future__ import annotations

import io
import os
import tempfile
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypedDict

import av
import av.error
import numpy as np

from avatar.errors import InvalidAudioError
from avatar.types import AudioArray

AudioSource = bytes | str | os.PathLike[str]


def decode_audio(source: AudioSource, sample_rate: int, *, max_seconds: float | None = None) -> AudioArray:
    """Decode any audio container/codec FFmpeg knows to mono float32 at ``sample_rate``.

    Raises InvalidAudioError for empty, undecodable, truncated or over-long input: whatever the bytes
    are, a failure of the decoder is the input's fault and is reported as such, never raised raw.
    """
    if isinstance(source, bytes) and not source:
        raise InvalidAudioError("The audio file is empty.")
    if not isinstance(source, bytes) and os.path.getsize(source) == 0:
        raise InvalidAudioError("The audio file is empty.")
    head = source[:4096] if isinstance(source, bytes) else _read_head(source)
    total_size = len(source) if isinstance(source, bytes) else os.path.getsize(source)
    if _wav_is_truncated(head, total_size):
        raise InvalidAudioError("The WAV file is truncated: its header promises more audio than the file holds.")
    try:
        container = av.open(io.BytesIO(source) if isinstance(source, bytes) else os.fspath(source), mode="r")
    except Exception:  # noqa: BLE001 - FFmpeg refusing the bytes, in whichever exception PyAV chose
        raise InvalidAudioError(
            "The file is not audio this server can decode (try WAV, MP3, OGG, FLAC, M4A or WebM)."
        ) from None
    with container:
        stream = _audio_stream(container)
        declared = _declared_seconds(container, stream)
        if max_seconds is not None and declared is not None and declared > max_seconds + 0.5:
            _too_long(declared, max_seconds)
        try:
            audio = _decode_mono(container, stream, sample_rate, max_seconds)
        except InvalidAudioError:
            raise
        except Exception:  # noqa: BLE001 - a corrupt stream breaks the decoder in many ways (FFmpeg, PyAV)
            raise InvalidAudioError("The audio is corrupt or truncated: decoding failed part-way.") from None
    if audio.size == 0:
        raise InvalidAudioError("The file holds no audio samples.")
    seconds = audio.size / sample_rate
    if declared is not None and declared - seconds > max(0.25, 0.05 * declared):
        raise InvalidAudioError(
            f"The audio file is truncated: its header promises {declared:.1f} s but only {seconds:.1f} s is there."
        )
    if not np.all(np.isfinite(audio)):
        raise InvalidAudioError("The audio holds invalid (non-finite) samples.")
    return np.clip(audio, -1.0, 1.0)


def _audio_stream(container: av.container.InputContainer) -> av.audio.stream.AudioStream:
    """The first audio stream FFmpeg has a decoder for (a container may carry several, or none)."""
    streams = container.streams.audio
    if not streams:
        raise InvalidAudioError("The file holds no audio stream: it is not audio (an image or a silent video?).")
    for stream in streams:
        if stream.codec_context is not None and stream.codec_context.name:
            return stream
    raise InvalidAudioError("The file's audio is in a codec this server cannot decode.")


def _decode_mono(
    container: av.container.InputContainer,
    stream: av.audio.stream.AudioStream,
    sample_rate: int,
    max_seconds: float | None,
) -> AudioArray:
    """Every frame of ``stream`` as mono float32 at ``sample_rate``. A stream may change its sample rate,
    layout or sample format part-way (spliced or corrupt files do); a resampler is fixed to its first
    input, so a change flushes it and starts a new one."""
    limit = None if max_seconds is None else (max_seconds + 0.5) * sample_rate
    chunks: list[np.ndarray] = []
    total = 0
    resampler: av.AudioResampler | None = None
    shape: tuple[object, ...] | None = None

    def take(frames: list[av.AudioFrame]) -> None:
        nonlocal total
        for out in frames:
            chunk = out.to_ndarray().reshape(-1)
            chunks.append(chunk)
            total += len(chunk)
        if limit is not None and total > limit:
            _too_long(total / sample_rate, max_seconds or 0.0)

    for frame in container.decode(stream):
        if frame.samples == 0 or not frame.sample_rate:
            continue
        frame_shape = (frame.format.name, frame.layout.name, len(frame.layout.channels), frame.sample_rate)
        if frame_shape != shape:
            if resampler is not None:
                take(resampler.resample(None))
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            shape = frame_shape
        frame.pts = None  # timestamps of a spliced stream jump about; only the samples count here
        assert resampler is not None
        take(resampler.resample(frame))
    if resampler is not None:
        take(resampler.resample(None))
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def _read_head(path: str | os.PathLike[str]) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(4096)


def _wav_is_truncated(head: bytes, total_size: int) -> bool:
    """FFmpeg decodes a cut-off WAV without complaint; its RIFF header tells how much should be there."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return False
    pos = 12
    while pos + 8 <= len(head):
        size = int.from_bytes(head[pos + 4 : pos + 8], "little")
        if head[pos : pos + 4] == b"data":
            # 0 and 0xFFFFFFFF mean "unknown" (streamed WAV); accept those.
            return size not in (0, 0xFFFFFFFF) and pos + 8 + size > total_size
        pos += 8 + size + (size & 1)
    return False


def _declared_seconds(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _too_long(seconds: float, limit: float) -> None:
    raise InvalidAudioError(f"The audio is {seconds:.0f} s long; the limit is {limit:.0f} s.")


def rms_dbfs(audio: AudioArray) -> float:
    """Root-mean-square level in dBFS (-inf for digital silence)."""
    if audio.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    return 20 * np.log10(rms) if rms > 0 else float("-inf")


def normalize_loudness(audio: AudioArray, target_dbfs: float = -20.0, peak: float = 0.95) -> AudioArray:
    """Scale speech to ``target_dbfs`` RMS over its voiced part, limiting peaks softly."""
    if audio.size == 0:
        return audio
    frame = 480
    usable = audio[: audio.size // frame * frame].reshape(-1, frame) if audio.size >= frame else audio[None, :]
    frame_rms = np.sqrt(np.mean(np.square(usable, dtype=np.float64), axis=1))
    loud = frame_rms[frame_rms > frame_rms.max() * 0.1] if frame_rms.max() > 0 else frame_rms
    level = float(np.sqrt(np.mean(np.square(loud)))) if loud.size else 0.0
    if level < 1e-5:
        return audio
    out = audio * (10 ** (target_dbfs / 20) / level)
    # Soft-knee limiter: tanh above the knee keeps peaks under `peak` without hard clipping.
    knee = 0.8 * peak
    over = np.abs(out) > knee
    out[over] = np.sign(out[over]) * (knee + (peak - knee) * np.tanh((np.abs(out[over]) - knee) / (peak - knee)))
    return out.astype(np.float32)


def _temporary_beside(target: Path) -> Path:
    """An empty file next to ``target`` (same file system, so the final rename is atomic), with the
    permissions a plainly created file would get (mkstemp's are owner-only)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=target.suffix, dir=target.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    os.close(fd)
    return Path(tmp)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A temporary path beside ``target`` that becomes ``target`` only if the block succeeds."""
    tmp_path = _temporary_beside(target)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def wav_bytes(audio: AudioArray, sample_rate: int) -> bytes:
    """16-bit PCM mono WAV."""
    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm.tobytes())
    return buf.getvalue()


def write_wav(path: Path, audio: AudioArray, sample_rate: int) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(wav_bytes(audio, sample_rate))
    return path


def fit_audio_to_frames(audio: AudioArray, sample_rate: int, frames: int, fps: int) -> AudioArray:
    """Pad (with silence) or trim audio to exactly ``frames / fps`` seconds, so both streams end together."""
    want = round(frames * sample_rate / fps)
    if audio.size >= want:
        return audio[:want]
    return np.concatenate([audio, np.zeros(want - audio.size, np.float32)])


class Mp4Info(TypedDict):
    video_codec: str
    audio_codec: str
    width: int
    height: int
    frames: int
    fps: float
    video_seconds: float
    audio_seconds: float
    sample_rate: int


def probe_mp4(path: Path) -> Mp4Info:
    """Codec names, frame count and stream durations of an MP4 (for tests, eval and the CLI)."""
    with av.open(os.fspath(path)) as container:
        v = container.streams.video[0]
        a = container.streams.audio[0]
        frames = sum(1 for _ in container.decode(v))
        return {
            "video_codec": v.codec_context.name,
            "audio_codec": a.codec_context.name,
            "width": v.codec_context.width,
            "height": v.codec_context.height,
            "frames": frames,
            "fps": float(v.average_rate or 0),
            "video_seconds": _seconds(v) if v.duration else frames / float(v.average_rate or 1),
            "audio_seconds": _seconds(a),
            "sample_rate": a.codec_context.sample_rate,
        }


def _seconds(stream: av.stream.Stream) -> float:
    if stream.duration is None or stream.time_base is None:
        return 0.0
    return float(stream.duration * stream.time_base)


class WavWriter:
    """A 16-bit mono WAV written piece by piece; it appears at ``path`` only when ``close()`` succeeds."""

    def __init__(self, path: Path, sample_rate: int) -> None:
        self.path = path
        self.sample_rate = sample_rate
        self.samples = 0
        self._tmp = _temporary_beside(path)
        self._wav = wave.open(os.fspath(self._tmp), "wb")
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(sample_rate)

    def write(self, audio: AudioArray) -> None:
        self._wav.writeframes((np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes())
        self.samples += audio.size

    def close(self) -> Path:
        self._wav.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self._wav.close()
        finally:
            self._tmp.unlink(missing_ok=True)
