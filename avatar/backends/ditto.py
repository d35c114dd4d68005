"""The Ditto talking head (antgroup/ditto-talkinghead, Apache-2.0) through its own Python SDK.

The SDK is not on any registry: users clone it and download its checkpoints (``avatar models pull
ditto-talkinghead``); settings locate both. This adapter drives the SDK's documented online interface
(``stream_pipeline_online.StreamSDK``):

- ``StreamSDK(cfg_pkl, data_root)`` loads the models (TensorRT engines, or PyTorch weights);
- ``setup(source_path, output_path, online_mode=True, max_size=...)`` registers the photo and starts the
  SDK's worker threads; ``setup_Nd(N_d=...)`` tells it the clip length when that is known;
- ``run_chunk(audio_chunk, chunksize)`` feeds 16 kHz audio windows of ``sum(chunksize) * 640 + 80``
  samples every ``chunksize[1] * 640`` samples, after ``chunksize[0] * 640`` samples of leading silence;
- the SDK hands each finished RGB frame to ``writer(frame, fmt="rgb")``; ``close()`` flushes, joins its
  threads and re-raises a worker's error.

Frames are collected from the writer instead of an MP4 file, so they can be streamed, and the photo's
registration (face detection, appearance and motion features) is cached per photo, so each persona's
photo is prepared once.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avatar.catalog import check_files, ditto_checkpoints_dir
from avatar.errors import ConfigError, ModelError, NoFaceError
from avatar.types import AudioArray, FrameArray, Phone, frame_count

log = logging.getLogger(__name__)

DITTO_FPS = 25  # HuBERT features at 50 Hz, two per video frame
SDK_SAMPLE_RATE = 16_000
CHUNKSIZE = (3, 5, 2)  # feature frames of left context, new frames, right context (the SDK's default)
HOP_SAMPLES = CHUNKSIZE[1] * 640
WINDOW_SAMPLES = sum(CHUNKSIZE) * 640 + 80
LEAD_SAMPLES = CHUNKSIZE[0] * 640
SDK_MODULE = "stream_pipeline_online"


@dataclass(frozen=True)
class EngineLayout:
    """Where one engine's files live in the checkpoints folder (as the Ditto README lays them out)."""

    data_root: str
    cfg_pkl: str
    files: tuple[str, ...]


_TRT = (
    "appearance_extractor_fp16",
    "blaze_face_fp16",
    "decoder_fp16",
    "face_mesh_fp16",
    "hubert_fp32",
    "insightface_det_fp16",
    "landmark106_fp16",
    "landmark203_fp16",
    "lmdm_v0.4_hubert_fp32",
    "motion_extractor_fp32",
    "stitch_network_fp16",
    "warp_network_fp16",
)
_TORCH = (
    "models/appearance_extractor.pth",
    "models/decoder.pth",
    "models/lmdm_v0.4_hubert.pth",
    "models/motion_extractor.pth",
    "models/stitch_network.pth",
    "models/warp_network.pth",
    "aux_models/2d106det.onnx",
    "aux_models/det_10g.onnx",
    "aux_models/face_landmarker.task",
    "aux_models/hubert_streaming_fix_kv.onnx",
    "aux_models/landmark203.onnx",
)
ENGINES = {
    "tensorrt": EngineLayout(
        "ditto_trt_Ampere_Plus", "ditto_cfg/v0.4_hubert_cfg_trt_online.pkl", tuple(f"{n}.engine" for n in _TRT)
    ),
    "pytorch": EngineLayout("ditto_pytorch", "ditto_cfg/v0.4_hubert_cfg_pytorch.pkl", _TORCH),
}


@dataclass(frozen=True)
class DittoFace:
    """A registered photo: the file the SDK reads and the key of its cached registration."""

    source_path: str
    height: int
    width: int


class _CachedRegistrar:
    """Wraps the SDK's ``avatar_registrar`` so a photo is registered once; ``setup`` then reuses it."""

    def __init__(self, register: Callable[..., dict[str, Any]]) -> None:
        self._register = register
        self._cache: dict[str, dict[str, Any]] = {}
        self.runs = 0

    def __call__(self, source_path: str, **kwargs: Any) -> dict[str, Any]:
        if source_path not in self._cache:
            self._cache[source_path] = self._register(source_path, **kwargs)
            self.runs += 1
        return dict(self._cache[source_path])  # setup may replace keys; keep the cached entry intact

    def __contains__(self, source_path: str) -> bool:
        return source_path in self._cache


class _FrameSink:
    """Stands in for the SDK's video writer: finished frames go to a queue instead of an MP4."""

    def __init__(self) -> None:
        self.frames: queue.Queue[FrameArray] = queue.Queue()

    def __call__(self, img: Any, fmt: str = "bgr") -> None:
        frame = np.asarray(img)
        self.frames.put(np.ascontiguousarray(frame if fmt == "rgb" else frame[..., ::-1], dtype=np.uint8))

    def close(self) -> None:
        pass

    def drain(self) -> list[FrameArray]:
        out = []
        while True:
            try:
                out.append(self.frames.get_nowait())
            except queue.Empty:
                return out


class DittoAnimator:
    """Ditto's online pipeline loaded once; one render at a time (the SDK holds one session's state)."""

    fps = DITTO_FPS

    def __init__(
        self,
        sdk_dir: Path,
        checkpoints: Path,
        *,
        engine: str = "tensorrt",
        data_root: str = "",
        cfg_pkl: str = "",
        max_size: int = 512,
        sdk_factory: Callable[[str, str], Any] | None = None,
    ) -> None:
        if engine not in ENGINES:
            raise ConfigError(f"AVATAR_DITTO_ENGINE={engine!r}; choose one of {', '.join(ENGINES)}.")
        layout = ENGINES[engine]
        self.sdk_dir = sdk_dir
        self.max_size = max_size
        self.name = f"ditto:{engine}"
        root = checkpoints / (data_root or layout.data_root)
        cfg = checkpoints / (cfg_pkl or layout.cfg_pkl)
        if sdk_factory is None:
            check_files(sdk_dir, (f"{SDK_MODULE}.py",), "Ditto SDK", _CLONE_HINT)
        check_files(checkpoints, (str(cfg.relative_to(checkpoints)),), "Ditto checkpoints (config)", _PULL_HINT)
        # A custom data root (engines built with the SDK's cvt_onnx_to_trt.py) may name files its own way.
        check_files(root, layout.files if not data_root else (), f"Ditto {engine} models", _PULL_HINT)
        if not root.is_dir():
            raise ModelError(f"Ditto {engine} models: missing folder {root}. {_PULL_HINT}")
        factory = sdk_factory or _import_sdk(sdk_dir)
        try:
            self._sdk = factory(str(cfg), str(root))
        except FileNotFoundError as exc:
            raise ModelError(f"Ditto could not load its models: missing {exc.filename}. {_PULL_HINT}") from exc
        except ImportError as exc:  # TensorRT (and cuda-python) are imported by the SDK only now, lazily
            raise ModelError(
                f"Ditto's {engine} engine could not import {exc.name or exc}: install the gpu extra "
                "(pip install 'avatar[gpu]') and the SDK's requirements, or set AVATAR_DITTO_ENGINE=pytorch."
            ) from exc
        except Exception as exc:
            raise ModelError(f"Ditto could not load its models from {root}: {type(exc).__name__}: {exc}") from exc
        self._registrar = _CachedRegistrar(self._sdk.avatar_registrar)
        self._sdk.avatar_registrar = self._registrar
        self._lock = threading.Lock()
        self._workdir = tempfile.TemporaryDirectory(prefix="avatar-ditto-")

    @classmethod
    def from_settings(cls, settings: Any) -> DittoAnimator:
        """Built from AVATAR_DITTO_SDK (the cloned repository), AVATAR_DITTO_CHECKPOINTS (default
        models_cache/ditto-talkinghead), AVATAR_DITTO_ENGINE (tensorrt | pytorch) and AVATAR_VIDEO_SIZE."""
        sdk = settings.ditto_sdk
        if not sdk:
            raise ConfigError(
                "AVATAR_FACE_BACKEND=ditto needs AVATAR_DITTO_SDK: the folder of a clone of "
                "https://github.com/antgroup/ditto-talkinghead (its Python SDK is not on any registry)."
            )
        return cls(
            Path(sdk).expanduser(),
            ditto_checkpoints_dir(settings),
            engine=settings.ditto_engine,
            data_root=settings.ditto_data_root,
            cfg_pkl=settings.ditto_cfg,
            max_size=int(settings.video_size),
        )

    @property
    def registrations(self) -> int:
        """How many photos the SDK has registered (each persona's photo once)."""
        return self._registrar.runs

    # ---------------------------------------------------------------------------------- photo

    def prepare(self, image: FrameArray) -> DittoFace:
        """Register an RGB photo with the SDK (face detection, appearance and motion features), once per
        distinct photo. Raises NoFaceError when Ditto finds no face."""
        from PIL import Image

        image = np.ascontiguousarray(image, dtype=np.uint8)
        digest = hashlib.sha256(image.tobytes() + str(image.shape).encode()).hexdigest()[:24]
        path = Path(self._workdir.name) / f"{digest}.png"
        if not path.exists():
            Image.fromarray(image).save(path)
        with self._lock:
            if str(path) not in self._registrar:
                self._register(str(path))
        return DittoFace(str(path), int(image.shape[0]), int(image.shape[1]))

    def _register(self, source_path: str) -> None:
        kwargs = {**getattr(self._sdk, "default_kwargs", {}), "max_size": self.max_size}
        crop = {
            k: kwargs[k] for k in ("crop_scale", "crop_vx_ratio", "crop_vy_ratio", "crop_flag_do_rot") if k in kwargs
        }
        template = int(kwargs.get("template_n_frames", -1))
        try:
            self._registrar(source_path, max_dim=self.max_size, n_frames=template if template > 0 else -1, **crop)
        except TypeError as exc:  # the SDK's cropper unpacks None when its detector finds no face
            raise NoFaceError("No face was found in the photo: use a clear, front-facing portrait.") from exc
        except Exception as exc:
            raise ModelError(f"Ditto could not prepare the photo: {type(exc).__name__}: {exc}") from exc

    # --------------------------------------------------------------------------------- render

    def render(
        self,
        face: DittoFace,
        audio: AudioArray,
        sample_rate: int,
        *,
        start_frame: int = 0,
        phones: Sequence[Phone] | None = None,
    ) -> FrameArray:
        """Frames of the face speaking ``audio``: exactly ``frame_count(len(audio)/sample_rate, fps)``.

        ``start_frame`` and ``phones`` are accepted for the FaceAnimator contract; Ditto's motion comes
        from the audio and its own state (its network hears the sounds itself)."""
        return np.stack(list(self.stream_frames(face, [audio], sample_rate, total_samples=len(audio))))

    def render_chunks(
        self,
        face: DittoFace,
        audio: AudioArray,
        sample_rate: int,
        chunk_frames: int = 25,
        *,
        start_frame: int = 0,
        phones: Sequence[Phone] | None = None,
    ) -> Iterator[FrameArray]:
        """The frames of ``render`` in chunks of up to ``chunk_frames``, each as soon as it is drawn."""
        batch: list[FrameArray] = []
        for frame in self.stream_frames(face, [audio], sample_rate, total_samples=len(audio)):
            batch.append(frame)
            if len(batch) == chunk_frames:
                yield np.stack(batch)
                batch = []
        if batch:
            yield np.stack(batch)

    def stream_frames(
        self,
        face: DittoFace,
        chunks: Iterable[AudioArray],
        sample_rate: int,
        *,
        total_samples: int | None = None,
    ) -> Iterator[FrameArray]:
        """Frames as audio chunks arrive (Ditto's online mode): each yielded frame is final, and never
        more frames than the audio received so far covers. Overall, exactly the frames that cover the
        whole audio. ``total_samples``, when known, lets the SDK close the clip naturally (eyes, fade)."""
        with self._lock:
            yield from self._session(face, chunks, sample_rate, total_samples)

    def _session(
        self, face: DittoFace, chunks: Iterable[AudioArray], sample_rate: int, total_samples: int | None
    ) -> Iterator[FrameArray]:
        sdk = self._sdk
        sink = _FrameSink()
        output = Path(self._workdir.name) / "session.mp4"
        sdk.setup(face.source_path, str(output), online_mode=True, max_size=self.max_size)
        original_writer, sdk.writer = sdk.writer, sink  # before any audio: no frame reaches the file
        _close_quietly(original_writer)
        if total_samples is not None:
            sdk.setup_Nd(N_d=frame_count(total_samples / sample_rate, self.fps))
        feeder = _AudioFeeder(sample_rate)
        emitted = 0
        last: FrameArray | None = None
        pending: list[FrameArray] = []
        closed = False
        try:
            for chunk in chunks:
                for window in feeder.push(chunk):
                    sdk.run_chunk(window, CHUNKSIZE)
                pending.extend(sink.drain())
                allowed = frame_count(feeder.seconds, self.fps) if feeder.seconds > 0 else 0
                while pending and emitted < allowed:
                    last = pending.pop(0)
                    emitted += 1
                    yield last
            for window in feeder.finish():
                sdk.run_chunk(window, CHUNKSIZE)
            closed = True
            sdk.close()  # flushes the pipeline; re-raises a worker thread's error
        except (ModelError, NoFaceError):
            raise
        except Exception as exc:
            raise ModelError(f"Ditto failed while rendering: {type(exc).__name__}: {exc}") from exc
        finally:
            if not closed:
                _close_quietly(sdk)
            for leftover in (output, Path(str(output) + ".tmp.mp4")):
                leftover.unlink(missing_ok=True)
        pending.extend(sink.drain())
        want = frame_count(feeder.seconds, self.fps)
        while emitted < want:
            if pending:
                last = pending.pop(0)
            elif last is None:
                raise ModelError("Ditto produced no frames for the audio.")
            emitted += 1
            yield last  # the SDK's last frame repeats when it made fewer frames than the audio needs

    def warmup(self) -> None:
        # One short render on the SDK's own example photo builds TensorRT contexts and CUDA kernels.
        example = self.sdk_dir / "example" / "image.png"
        if not example.is_file():
            log.warning("Ditto warm-up skipped: %s is missing", example)
            return
        from PIL import Image

        face = self.prepare(np.asarray(Image.open(example).convert("RGB")))
        self.render(face, np.zeros(SDK_SAMPLE_RATE // 2, np.float32), SDK_SAMPLE_RATE)

    def close(self) -> None:
        self._sdk = None
        self._workdir.cleanup()


class _AudioFeeder:
    """Turns audio chunks at any rate into the SDK's overlapping 16 kHz windows, as they become complete."""

    def __init__(self, sample_rate: int) -> None:
        import av

        self._av = av
        self.sample_rate = sample_rate
        self._resampler = None if sample_rate == SDK_SAMPLE_RATE else av.AudioResampler("flt", "mono", SDK_SAMPLE_RATE)
        self._buffer = np.zeros(LEAD_SAMPLES, np.float32)  # leading silence, as the SDK expects
        self._received = 0  # input samples

    @property
    def seconds(self) -> float:
        return self._received / self.sample_rate

    def push(self, chunk: AudioArray) -> list[AudioArray]:
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        self._received += chunk.size
        self._append(self._resample(chunk))
        return self._take(final=False)

    def finish(self) -> list[AudioArray]:
        if self._resampler is not None:
            self._append(self._resample(None))
        return self._take(final=True)

    def _resample(self, chunk: AudioArray | None) -> AudioArray:
        if self._resampler is None:
            return chunk if chunk is not None else np.zeros(0, np.float32)
        frame = None
        if chunk is not None:
            if chunk.size == 0:
                return np.zeros(0, np.float32)
            frame = self._av.AudioFrame.from_ndarray(chunk[None, :], format="flt", layout="mono")
            frame.sample_rate = self.sample_rate
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)

    def _append(self, samples: AudioArray) -> None:
        if samples.size:
            self._buffer = np.concatenate([self._buffer, samples])

    def _take(self, *, final: bool) -> list[AudioArray]:
        windows = []
        while self._buffer.size >= WINDOW_SAMPLES:
            windows.append(self._buffer[:WINDOW_SAMPLES].copy())
            self._buffer = self._buffer[HOP_SAMPLES:]
        if final:
            # The SDK's own loop starts a window at every hop that still holds input, zero-padded.
            while self._buffer.size > 0:
                window = np.zeros(WINDOW_SAMPLES, np.float32)
                window[: self._buffer.size] = self._buffer[:WINDOW_SAMPLES]
                windows.append(window)
                self._buffer = self._buffer[HOP_SAMPLES:]
        return windows


_CLONE_HINT = (
    "Ditto's SDK is not on any registry: git clone https://github.com/antgroup/ditto-talkinghead and set "
    "AVATAR_DITTO_SDK to the clone."
)
_PULL_HINT = (
    "Get the checkpoints with `avatar models pull ditto-talkinghead` (TensorRT, Ampere or newer) or "
    "`avatar models pull ditto-talkinghead-pytorch`, or set AVATAR_DITTO_CHECKPOINTS to the folder that "
    "holds ditto_cfg/."
)


def _import_sdk(sdk_dir: Path) -> Callable[[str, str], Any]:
    """The SDK's ``StreamSDK`` class, imported from the clone (its modules import as top-level ``core``)."""
    if str(sdk_dir) not in sys.path:
        sys.path.insert(0, str(sdk_dir))
    try:
        module = __import__(SDK_MODULE)
    except ImportError as exc:
        raise ModelError(
            f"The Ditto SDK in {sdk_dir} could not be imported ({exc}). Install its Python requirements "
            "(see its README: librosa, filetype, imageio, opencv, cuda-python, polygraphy, tensorrt)."
        ) from exc
    factory: Callable[[str, str], Any] = module.StreamSDK
    return factory


def _close_quietly(thing: Any) -> None:
    try:
        thing.close()
    except Exception:
        log.debug("close failed", exc_info=True)
