"""Every MP4 says it is AI-generated: the C2PA manifest ``avatar.provenance`` embeds, read back and
verified with ``c2pa-python`` (signer trust aside: the test certificate is untrusted by design), and
the optional visible label."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import av
import c2pa
import numpy as np
import pytest

from avatar.config import load_settings
from avatar.errors import ConfigError
from avatar.fmp4 import write_mp4
from avatar.images import labelled
from avatar.provenance import AI_GENERATED, Provenance, self_signed_credentials

FPS, RATE = 25, 24_000


def _video(path: Path, seconds: float = 1.0) -> Path:
    frames = np.stack([np.full((64, 64, 3), 40 + 8 * i, np.uint8) for i in range(int(FPS * seconds))])
    audio = (0.1 * np.sin(np.arange(int(RATE * seconds)) * 2 * np.pi * 220 / RATE)).astype(np.float32)
    return write_mp4(path, frames, audio, RATE, FPS)


def read_manifest(data: bytes) -> dict[str, Any]:
    with c2pa.Reader("video/mp4", io.BytesIO(data)) as reader:
        return dict(json.loads(reader.json()))


def test_a_signed_mp4_carries_a_manifest_saying_it_is_ai_generated_and_still_plays(tmp_path: Path) -> None:
    path = _video(tmp_path / "reply.mp4")
    with pytest.raises(c2pa.C2paError):  # the scenario: an MP4 as written carries no manifest
        read_manifest(path.read_bytes())
    Provenance(self_signed_credentials()).sign_mp4(path)
    report = read_manifest(path.read_bytes())
    active = report["manifests"][report["active_manifest"]]
    actions = next(a["data"]["actions"] for a in active["assertions"] if a["label"].startswith("c2pa.actions"))
    assert actions[0]["action"] == "c2pa.created" and actions[0]["digitalSourceType"] == AI_GENERATED
    assert active["claim_generator_info"][0]["name"] == "avatar"
    # Verified: the signature and the hash of the file hold; only the signer is not a trusted one.
    failures = {status["code"] for status in report.get("validation_status", [])}
    assert failures == {"signingCredential.untrusted"}, report.get("validation_status")
    success = {s["code"] for s in report["validation_results"]["activeManifest"]["success"]}
    assert {"claimSignature.validated", "assertion.bmffHash.match"} <= success
    with av.open(str(path)) as played:
        assert sum(1 for _ in played.decode(video=0)) == FPS
    assert [p.name for p in tmp_path.iterdir()] == ["reply.mp4"]  # nothing left beside it


def test_a_changed_video_no_longer_verifies(tmp_path: Path) -> None:
    path = _video(tmp_path / "reply.mp4")
    Provenance(self_signed_credentials()).sign_mp4(path)
    data = bytearray(path.read_bytes())
    mdat = data.find(b"mdat")
    data[mdat + 64] ^= 0xFF  # one byte of the picture changed
    failures = {status["code"] for status in read_manifest(bytes(data)).get("validation_status", [])}
    assert "assertion.bmffHash.mismatch" in failures


def test_a_deployment_certificate_is_read_from_files_and_a_half_setting_refused(tmp_path: Path) -> None:
    made = self_signed_credentials()
    (tmp_path / "chain.pem").write_bytes(made.chain)
    (tmp_path / "key.pem").write_bytes(made.key)
    provenance = Provenance.from_files(str(tmp_path / "chain.pem"), str(tmp_path / "key.pem"))
    assert not provenance.credentials.test
    path = _video(tmp_path / "reply.mp4")
    provenance.sign_mp4(path)
    assert read_manifest(path.read_bytes())["active_manifest"]
    assert Provenance.from_files("", "").credentials.test  # none given: the test certificate
    with pytest.raises(ConfigError, match="both"):
        Provenance.from_files(str(tmp_path / "chain.pem"), "")
    settings = load_settings({"AVATAR_C2PA_CERT_FILE": "/x.pem", "AVATAR_VISIBLE_LABEL": "AI-generated"})
    assert settings.c2pa_cert_file == "/x.pem" and settings.visible_label == "AI-generated"


def test_the_visible_label_is_drawn_along_the_bottom() -> None:
    frames = np.full((2, 128, 128, 3), 200, np.uint8)
    marked = labelled(frames, "AI-generated")
    assert marked.shape == frames.shape and np.array_equal(frames, np.full_like(frames, 200))  # a copy
    band = marked[:, -9:, :, :]
    assert (band < 60).mean() > 0.5 and (band > 200).any()  # a dark band with light writing
    assert np.array_equal(marked[:, :100], frames[:, :100])  # the face above it is untouched
