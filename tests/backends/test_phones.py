"""Phoneme timings from hibari and the lips shaped by them: real voice, real portrait, real landmarks."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from avatar.types import FrameArray, Speech, VoiceSpec, frame_count, shift_phones

VOICE = VoiceSpec("test")
BILABIAL = "Bob made my baby a maple pie."
PLAIN = "Sally is at the zoo with her little cat."
RATE = 24_000


@pytest.fixture(scope="module")
def tts() -> Iterator[object]:
    from avatar.backends.hibari_tts import HibariSynthesizer

    synth = HibariSynthesizer()
    yield synth
    synth.close()


@pytest.fixture(scope="module")
def bilabial(tts) -> Speech:
    return tts.synthesize_timed(BILABIAL, VOICE)


def test_hibari_phones_are_the_models_timings_in_order_and_cover_the_audio(tts, bilabial: Speech) -> None:
    assert tts.timed
    phones = bilabial.phones
    assert phones is not None and len(phones) > 15
    starts = np.array([p.start for p in phones])
    ends = np.array([p.end for p in phones])
    assert np.all(np.diff(starts) > 0) and np.all(ends > starts) and np.all(ends[:-1] <= starts[1:] + 1e-9)
    duration = bilabial.audio.size / RATE
    assert 0.1 < starts[0] and ends[-1] <= duration
    # The sounds of the text, in its order: "Bob" is b, ɑ, b.
    symbols = "".join(p.symbol for p in phones)
    assert symbols.startswith("bɑb") and symbols.count("b") == 4 and "m" in symbols and "p" in symbols
    # Every loud part of the audio lies within the phones' span (the edge silences outside it).
    frame = RATE // 100
    env = np.sqrt(np.mean(bilabial.audio[: bilabial.audio.size // frame * frame].reshape(-1, frame) ** 2, axis=1))
    loud = np.flatnonzero(20 * np.log10(env + 1e-9) > -35) / 100
    assert starts[0] - 0.1 <= loud[0] and loud[-1] <= ends[-1] + 0.1
    # The plain audio is the timed audio: one path, bit for bit; and hibari's own calls still work.
    assert np.array_equal(tts.synthesize(BILABIAL, VOICE), bilabial.audio)
    assert tts._tts("Hello.", seed=0).size > 0


def test_sentence_gaps_and_edges_are_in_the_times(tts) -> None:
    one = tts.synthesize_timed("Bob.", VOICE)
    two = tts.synthesize_timed("Bob. Bob.", VOICE)
    assert one.phones is not None and two.phones is not None
    assert len(two.phones) == 2 * len(one.phones)
    # The second sentence starts after the first one's audio and the gap hibari_tts puts between them.
    from avatar.backends.hibari_tts import EDGE_SILENCE_SECONDS, SENTENCE_GAP_SECONDS

    first_audio = one.audio.size / RATE - 2 * EDGE_SILENCE_SECONDS
    second = two.phones[len(one.phones)]
    assert second.start == pytest.approx(one.phones[0].start + first_audio + SENTENCE_GAP_SECONDS, abs=0.002)


def test_without_the_duration_tensor_the_voice_speaks_with_no_phones(tts, bilabial: Speech) -> None:
    from avatar.backends.hibari_tts import HibariSynthesizer

    untimed = HibariSynthesizer(durations_tensor="/not/in/the/graph")
    assert not untimed.timed
    speech = untimed.synthesize_timed(BILABIAL, VOICE)
    assert speech.phones is None and np.array_equal(speech.audio, bilabial.audio)


def test_odd_text_never_fails_and_has_no_sounds_to_follow(tts) -> None:
    shrug = tts.synthesize_timed("¯\\_(ツ)_/¯", VOICE)
    assert not shrug.phones  # brackets only: no sounds (or no audio at all)
    assert tts.synthesize_timed("🙂", VOICE).audio.size == 0


def test_shifting_phones_follows_a_cut_clip(bilabial: Speech) -> None:
    assert bilabial.phones is not None
    moved = shift_phones(bilabial.phones, -0.3, 1.0)
    assert moved is not None and all(0.0 <= p.start < p.end <= 1.0 for p in moved)
    assert moved[0].start == pytest.approx(bilabial.phones[0].start - 0.3)
    assert shift_phones(None, 1.0, 2.0) is None


def test_viseme_curves_seal_the_lips_on_bilabials_only(tts, bilabial: Speech) -> None:
    from avatar.backends.puppet.visemes import viseme_track

    assert bilabial.phones is not None
    n = frame_count(bilabial.audio.size / RATE, 25)
    track = viseme_track(bilabial.phones, n, 25)
    assert track is not None
    for p in bilabial.phones:
        frames = range(int(p.start * 25), int(np.ceil(p.end * 25)))
        if p.symbol in "mbp":
            assert max(track.seal[k] for k in frames) > 0.9, p
    vowels = [p for p in bilabial.phones if p.symbol in "Aɑ" and p.end - p.start > 0.08]
    assert vowels and all(track.seal[int((p.start + p.end) / 2 * 25)] < 0.2 for p in vowels)
    plain = tts.synthesize_timed(PLAIN, VOICE)
    quiet = viseme_track(plain.phones, frame_count(plain.audio.size / RATE, 25), 25)
    assert quiet is not None and quiet.seal.max() < 0.1


def test_the_face_with_phones_closes_its_smiling_lips_on_bilabials(
    puppet, eileen_face, face_probe, bilabial: Speech
) -> None:
    from avatar.quality import lipsync

    assert bilabial.phones is not None
    frames = puppet.render(eileen_face, bilabial.audio, RATE, phones=bilabial.phones)
    assert len(frames) == frame_count(bilabial.audio.size / RATE, puppet.fps)
    chunks = list(puppet.render_chunks(eileen_face, bilabial.audio, RATE, 7, phones=bilabial.phones))
    assert np.array_equal(np.concatenate(chunks), frames)
    gaps = _gaps(face_probe, frames)
    rest = _gaps(face_probe, eileen_face.image[None])[0]
    assert rest > 2 * lipsync.CLOSED_GAP  # the portrait shows its teeth ...
    hits, total = lipsync.bilabials_closed(gaps, [(p.symbol, p.start, p.end) for p in bilabial.phones], puppet.fps)
    assert total == 9 and hits >= 8  # ... and the lips meet over them on m, b and p


def test_without_phones_the_motion_is_todays_audio_driven_one(puppet, eileen_face, bilabial: Speech) -> None:
    audio_only = puppet.render(eileen_face, bilabial.audio, RATE)
    assert np.array_equal(puppet.render(eileen_face, bilabial.audio, RATE, phones=None), audio_only)
    assert np.array_equal(puppet.render(eileen_face, bilabial.audio, RATE, phones=()), audio_only)
    shaped = puppet.render(eileen_face, bilabial.audio, RATE, phones=bilabial.phones)
    assert shaped.shape == audio_only.shape and not np.array_equal(shaped, audio_only)


def _gaps(probe, frames: FrameArray) -> np.ndarray:
    out = []
    for frame in frames:
        found = probe.detect(np.ascontiguousarray(frame))
        lm = found[0]
        height = float(np.hypot(*(lm[152, :2] - lm[10, :2])))
        out.append(float(np.hypot(*(lm[14, :2] - lm[13, :2]))) / height)
    return np.asarray(out)
