"""The Ditto adapter against a stand-in for the SDK's documented interface, and the real SDK when set up.

The stand-in (ditto_standin/stream_pipeline_online.py) is the only test double of these tests: Ditto's
SDK is not on any registry and needs CUDA and TensorRT.
"""

from __future__ import annotations

import pickle
import shutil
import sys
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from avatar.backends.ditto import ENGINES, DittoAnimator, DittoFace
from avatar.config import PROJECT_ROOT, Settings, load_settings
from avatar.errors import ConfigError, ModelError, NoFaceError
from avatar.types import frame_count

PORTRAIT = PROJECT_ROOT / "assets" / "personas" / "eileen" / "portrait.png"
STANDIN = Path(__file__).parent / "ditto_standin" / "stream_pipeline_online.py"


def make_checkpoints(root: Path, engine: str = "tensorrt") -> Path:
    """A checkpoints folder laid out as Ditto's README shows (the files are empty for the stand-in)."""
    layout = ENGINES[engine]
    for name in layout.files:
        path = root / layout.data_root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    cfg = root / layout.cfg_pkl
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_bytes(pickle.dumps({"default_kwargs": {"online_mode": True, "crop_scale": 2.3}}))
    return root


@pytest.fixture(scope="module")
def standin_sdk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder shaped like a clone of the SDK: the stand-in module and its example photo."""
    sdk = tmp_path_factory.mktemp("ditto-sdk")
    shutil.copy(STANDIN, sdk / STANDIN.name)
    (sdk / "example").mkdir()
    shutil.copy(PORTRAIT, sdk / "example" / "image.png")
    yield sdk
    sys.modules.pop("stream_pipeline_online", None)  # the real SDK test may import its own
    if str(sdk) in sys.path:
        sys.path.remove(str(sdk))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoints(tmp_path_factory.mktemp("ditto-checkpoints"))


@pytest.fixture(scope="module")
def ditto(standin_sdk: Path, checkpoints: Path) -> DittoAnimator:
    return DittoAnimator(standin_sdk, checkpoints, max_size=256)


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return np.asarray(Image.open(PORTRAIT).convert("RGB"))


def tone(seconds: float, rate: int, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate), dtype=np.float32) / rate
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_loads_and_warms_through_the_registry(
    production_settings: Settings, standin_sdk: Path, checkpoints: Path, registry_for: Any
):
    settings = production_settings.replace(
        face_backend="ditto", ditto_sdk=str(standin_sdk), ditto_checkpoints=str(checkpoints), video_size=128
    )
    registry = registry_for(settings, "face")
    assert registry.ready, registry.states()
    face = registry.get("face")
    assert isinstance(face, DittoAnimator) and face.fps == 25
    assert face.registrations == 1  # warm-up registered the SDK's example photo


def test_a_photo_is_registered_once(ditto: DittoAnimator, portrait: np.ndarray):
    before = ditto.registrations
    first = ditto.prepare(portrait)
    again = ditto.prepare(portrait.copy())
    assert isinstance(first, DittoFace) and first == again
    ditto.render(first, tone(0.5, 16_000), 16_000)
    assert ditto.registrations == before + 1  # rendering reuses the registration
    ditto.prepare(portrait[::2, ::2])
    assert ditto.registrations == before + 2


def test_no_face_is_a_no_face_error(ditto: DittoAnimator):
    with pytest.raises(NoFaceError):
        ditto.prepare(np.full((64, 64, 3), 128, np.uint8))


@pytest.mark.parametrize("rate", [16_000, 24_000])
def test_render_gives_one_frame_per_40ms_of_audio(ditto: DittoAnimator, portrait: np.ndarray, rate: int):
    face = ditto.prepare(portrait)
    audio = np.concatenate([np.zeros(rate, np.float32), tone(1.0, rate)])  # 1 s silent, then 1 s loud
    frames = ditto.render(face, audio, rate)
    assert frames.shape == (frame_count(2.0, 25), 256, 256, 3) and frames.dtype == np.uint8
    levels = frames[:, 0, 0, 0].astype(int)
    assert levels[:20].max() < 10 < levels[30:].min()  # the audio reached the frames, in order


def test_render_chunks_concatenate_to_render(ditto: DittoAnimator, portrait: np.ndarray):
    face = ditto.prepare(portrait)
    audio = np.concatenate([np.zeros(12_000, np.float32), tone(1.5, 24_000)])
    chunks = list(ditto.render_chunks(face, audio, 24_000, chunk_frames=10, start_frame=40))
    assert [len(c) for c in chunks[:-1]] == [10] * (len(chunks) - 1)
    np.testing.assert_array_equal(np.concatenate(chunks), ditto.render(face, audio, 24_000))


def test_stream_frames_as_audio_arrives(ditto: DittoAnimator, portrait: np.ndarray):
    face = ditto.prepare(portrait)
    rate = 24_000
    audio = tone(3.0, rate)
    fed = 0

    def chunks() -> Iterator[np.ndarray]:
        nonlocal fed
        for start in range(0, audio.size, rate // 10):  # 100 ms at a time, as TTS would stream it
            fed += min(rate // 10, audio.size - start)
            yield audio[start : start + rate // 10]
            time.sleep(0.02)  # lets the SDK's worker threads run, as real TTS pacing would

    first_at = None
    count = 0
    for _frame in ditto.stream_frames(face, chunks(), rate):
        count += 1
        assert count <= frame_count(fed / rate, 25)  # never ahead of the audio received
        first_at = fed if first_at is None else first_at
    assert count == frame_count(3.0, 25)
    assert first_at is not None and first_at < audio.size / 2  # frames came while audio was still arriving


def test_closing_the_stream_early_ends_the_session(ditto: DittoAnimator, portrait: np.ndarray):
    face = ditto.prepare(portrait)
    stream = ditto.stream_frames(face, (tone(0.2, 16_000) for _ in range(50)), 16_000)
    next(stream)
    assert isinstance(stream, Generator)  # what a stream is: closing it stops the model
    stream.close()
    assert len(ditto.render(face, tone(0.4, 16_000), 16_000)) == 10  # the SDK is free for the next render


def test_an_sdk_worker_error_is_a_model_error(ditto: DittoAnimator, portrait: np.ndarray):
    face = ditto.prepare(portrait)
    audio = tone(0.5, 16_000)
    audio[100] = np.nan
    with pytest.raises(ModelError, match="Ditto failed while rendering"):
        ditto.render(face, audio, 16_000)


def test_settings_must_locate_the_sdk(production_settings: Settings):
    with pytest.raises(ConfigError, match="AVATAR_DITTO_SDK"):
        DittoAnimator.from_settings(production_settings.replace(face_backend="ditto", ditto_sdk=""))


def test_a_folder_without_the_sdk_names_the_missing_module(tmp_path: Path, checkpoints: Path):
    with pytest.raises(ModelError, match=r"stream_pipeline_online\.py.*git clone|clone.*stream_pipeline_online"):
        DittoAnimator(tmp_path, checkpoints)


def test_missing_checkpoints_name_the_file(standin_sdk: Path, tmp_path: Path):
    root = make_checkpoints(tmp_path / "ckpt")
    (root / "ditto_trt_Ampere_Plus" / "decoder_fp16.engine").unlink()
    with pytest.raises(ModelError, match=r"decoder_fp16\.engine.*avatar models pull ditto-talkinghead"):
        DittoAnimator(standin_sdk, root)
    with pytest.raises(ModelError, match=r"v0\.4_hubert_cfg_pytorch\.pkl"):
        DittoAnimator(standin_sdk, root, engine="pytorch")


def test_an_unknown_engine_is_a_config_error(standin_sdk: Path, checkpoints: Path):
    with pytest.raises(ConfigError, match="tensorrt, pytorch"):
        DittoAnimator(standin_sdk, checkpoints, engine="onnx")


@pytest.mark.gpu
def test_the_real_sdk(portrait: np.ndarray):
    """Runs when AVATAR_DITTO_SDK names a clone of antgroup/ditto-talkinghead with its checkpoints."""
    settings = load_settings()
    if not settings.ditto_sdk or not (Path(settings.ditto_sdk) / "stream_pipeline_online.py").is_file():
        pytest.skip("the Ditto SDK is not set up: clone antgroup/ditto-talkinghead and set AVATAR_DITTO_SDK")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("Ditto needs a CUDA GPU")
    sys.modules.pop("stream_pipeline_online", None)  # not the stand-in
    ditto = DittoAnimator.from_settings(settings)
    face = ditto.prepare(portrait)
    frames = ditto.render(face, tone(1.0, 16_000), 16_000)
    assert frames.shape[0] == 25 and frames.dtype == np.uint8
    streamed = list(ditto.stream_frames(face, (tone(0.1, 24_000) for _ in range(10)), 24_000))
    assert len(streamed) == 25
    ditto.close()
