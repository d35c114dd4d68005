"""A stand-in for Ditto's SDK module ``stream_pipeline_online`` (antgroup/ditto-talkinghead).

The real SDK cannot be installed here (no registry carries it; it needs CUDA and TensorRT), so the
adapter is tested against this double of its documented interface, and the same tests run against the
real SDK when one is configured. Like the real ``StreamSDK`` it reads its config pickle, registers the
photo through ``avatar_registrar`` in ``setup`` (which also starts a worker thread and opens a writer),
takes 16 kHz windows of ``sum(chunksize) * 640 + 80`` samples in ``run_chunk``, hands each finished RGB
frame to ``writer(frame, fmt="rgb")`` from its worker thread, and re-raises a worker's error in
``close``. Each frame carries the loudness of its 40 ms of audio in its top rows (white = loud), so a
test can see that the audio reached the frames in order.
"""

from __future__ import annotations

import pickle
import queue
import threading
from typing import Any

import numpy as np
from PIL import Image


class _FileWriter:
    """Where the real SDK's frames go (an MP4 via imageio): here, a file that records the frame count."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.count = 0

    def __call__(self, img: Any, fmt: str = "bgr") -> None:
        self.count += 1
        with open(self.path, "a") as fh:
            fh.write("frame\n")

    def close(self) -> None:
        pass


class StreamSDK:
    def __init__(self, cfg_pkl: str, data_root: str, **kwargs: Any) -> None:
        with open(cfg_pkl, "rb") as fh:
            cfg = pickle.load(fh)
        self.default_kwargs: dict[str, Any] = dict(cfg["default_kwargs"])
        self.data_root = data_root
        self.avatar_registrar = self._register
        self.online_mode = False
        self.worker_exception: BaseException | None = None

    def _register(self, source_path: str, max_dim: int = 1920, n_frames: int = -1, **crop: Any) -> dict[str, Any]:
        img = np.asarray(Image.open(source_path).convert("RGB"))
        h, w = img.shape[:2]
        if max_dim > 0 and max(h, w) > max_dim:
            scale = max_dim / max(h, w)
            h, w = round(h * scale), round(w * scale)
        h, w = h - h % 2, w - w % 2
        img = np.asarray(Image.fromarray(img).resize((w, h)))
        if img.std() < 1.0:  # the real cropper unpacks the detector's None when it finds no face
            crop_result = None
            _img_crop, _m_c2o = crop_result  # type: ignore[misc]
        return {"img_rgb_lst": [img], "x_s_info_lst": [{"kp": np.zeros(63)}], "is_image_flag": True}

    def setup(self, source_path: str, output_path: str, **kwargs: Any) -> None:
        kwargs = {**self.default_kwargs, **kwargs}
        self.online_mode = bool(kwargs.get("online_mode", False))
        self.source_info = self.avatar_registrar(
            source_path, max_dim=kwargs.get("max_size", 1920), n_frames=-1, crop_scale=kwargs.get("crop_scale", 2.3)
        )
        self.N_d = int(kwargs.get("N_d", -1))
        self.tmp_output_path = output_path + ".tmp.mp4"
        self.writer = _FileWriter(self.tmp_output_path)
        self.worker_exception = None
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=100)
        self._thread = threading.Thread(target=self._worker)
        self._thread.start()

    def setup_Nd(self, N_d: int, fade_in: int = -1, fade_out: int = -1, ctrl_info: Any = None) -> None:
        self.N_d = N_d

    def run_chunk(self, audio_chunk: np.ndarray, chunksize: tuple[int, int, int] = (3, 5, 2)) -> None:
        if not self.online_mode:
            raise RuntimeError("run_chunk is for online mode only")
        if len(audio_chunk) != int(sum(chunksize) * 0.04 * 16000) + 80:
            raise ValueError(f"audio_chunk has {len(audio_chunk)} samples")
        self._queue.put((np.asarray(audio_chunk, np.float32), chunksize))

    def _worker(self) -> None:
        try:
            base = self.source_info["img_rgb_lst"][0]
            while True:
                item = self._queue.get()
                if item is None:
                    break
                chunk, chunksize = item
                if not np.isfinite(chunk).all():
                    raise ValueError("non-finite audio")
                start = chunksize[0] * 640
                for i in range(chunksize[1]):  # one frame per 40 ms of new audio
                    part = chunk[start + i * 640 : start + (i + 1) * 640]
                    level = int(min(255.0, float(np.sqrt(np.mean(np.square(part)))) * 2550))
                    frame = base.copy()
                    frame[:4] = level
                    self.writer(frame, fmt="rgb")
        except Exception as exc:  # noqa: BLE001 - the real SDK keeps a worker's error for close()
            self.worker_exception = exc

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self.writer.close()
        if self.worker_exception is not None:
            raise self.worker_exception
