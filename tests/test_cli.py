"""The `avatar` command as a user runs it: real subprocesses, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avatar import embedded, media
from avatar.config import Settings


def avatar(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "avatar", *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def assert_user_error(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "avatar: error:" in proc.stderr and fragment in proc.stderr, proc.stderr


@pytest.fixture()
def bad_inputs(tmp_path: Path, spoken_wav) -> dict[str, Path]:
    wav = spoken_wav("A question that will be cut short.")
    files = {
        "empty": b"",
        "not audio": b"GIF89a this is not audio" * 40,
        "truncated": wav[: len(wav) // 3],
    }
    paths = {}
    for key, data in files.items():
        path = tmp_path / f"{key.replace(' ', '_')}.wav"
        path.write_bytes(data)
        paths[key] = path
    return paths


@pytest.mark.parametrize("kind", ["empty", "not audio", "truncated"])
def test_converse_rejects_bad_audio_and_writes_nothing(bad_inputs: dict[str, Path], tmp_path: Path, kind: str) -> None:
    out = tmp_path / "out"
    proc = avatar("converse", str(bad_inputs[kind]), "--out", str(out))
    assert_user_error(proc, kind)
    assert not out.exists() or list(out.iterdir()) == []


def test_missing_file_and_unknown_persona(tmp_path: Path, spoken_wav) -> None:
    assert_user_error(avatar("transcribe", str(tmp_path / "nope.wav")), "does not exist")
    wav = tmp_path / "q.wav"
    wav.write_bytes(spoken_wav("Hello there."))
    assert_user_error(
        avatar("converse", str(wav), "--persona", "nobody", "--out", str(tmp_path / "o")), "Unknown persona 'nobody'"
    )


def test_transcribe_prints_the_words(tmp_path: Path, spoken_wav, prepared_models: Path) -> None:
    wav = tmp_path / "q.wav"
    wav.write_bytes(spoken_wav("The weather is lovely today."))
    proc = avatar("transcribe", str(wav))
    assert proc.returncode == 0, proc.stderr
    assert "weather is lovely today" in proc.stdout.lower()


def test_transcribe_silence_is_no_speech(tmp_path: Path, prepared_models: Path) -> None:
    wav = tmp_path / "silence.wav"
    wav.write_bytes(media.wav_bytes(np.zeros(16_000 * 2, np.float32), 16_000))
    assert_user_error(avatar("transcribe", str(wav)), "silent")


def test_animate_photo_without_a_face(tmp_path: Path, spoken_wav, prepared_models: Path) -> None:
    wav = tmp_path / "a.wav"
    wav.write_bytes(spoken_wav("Hello."))
    gradient = np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1))
    photo = tmp_path / "wall.png"
    Image.fromarray(np.stack([gradient] * 3, axis=-1)).save(photo)
    out = tmp_path / "head.mp4"
    assert_user_error(avatar("animate", str(wav), "--image", str(photo), "--out", str(out)), "No face")
    assert not out.exists() and list(tmp_path.glob(".head*")) == []
    not_image = tmp_path / "notes.png"
    not_image.write_text("not a picture")
    assert_user_error(avatar("animate", str(wav), "--image", str(not_image), "--out", str(out)), "photo")


def test_converse_prints_json_summary(tmp_path: Path, spoken_wav, prepared_models: Path) -> None:
    wav = tmp_path / "q.wav"
    wav.write_bytes(spoken_wav("What is your favourite planet?"))
    out = tmp_path / "out"
    proc = avatar("converse", str(wav), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert "planet" in summary["transcript"].lower() and summary["reply"]
    assert json.loads((out / "turn.json").read_text())["reply"] == summary["reply"]
    assert media.probe_mp4(out / "reply.mp4")["audio_codec"] == "aac"


def test_models_list_and_prepare_are_idempotent(prepared_models: Path, settings: Settings) -> None:
    proc = avatar("models", "prepare")
    prepared = len(embedded.needed(settings.llm_model))  # Whisper, the chat model, the face, the turn end
    assert proc.returncode == 0 and proc.stdout.count("already prepared") == prepared, proc.stdout + proc.stderr


def test_models_list_on_a_fresh_machine_says_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVATAR_MODELS_DIR", str(tmp_path / "empty"))
    proc = avatar("models", "list")
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout.split("\n\n")[0].splitlines()[1:]  # the hints for what is missing follow it
    rows = {line.split()[0]: line.split() for line in table}
    chat = rows["qwen2.5-coder-0.5b-instruct"]
    assert chat[4] == "no" and chat[5] == "-"  # not prepared, and no guessed size ("~0 B")
    assert rows["xtts-v2"][4] == "no" and rows["xtts-v2"][5].startswith("~")  # a download's estimate
    assert "~0 B" not in proc.stdout
