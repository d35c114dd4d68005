"""Kokoro-82M speaking English from hibari's phonemes: heard back by the embedded Whisper, and its phone
times (the model's own durations) lying where the sounds are."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from avatar import media
from avatar.backends.kokoro_tts import EDGE_SILENCE_SECONDS, KokoroSynthesizer, _phone_spans
from avatar.backends.whisper import WhisperOptions, WhisperRecognizer
from avatar.bench.eval import ROUNDTRIP_SENTENCES
from avatar.bench.wer import WordErrors, word_errors
from avatar.config import PROJECT_ROOT, Settings
from avatar.embedded import KOKORO, WHISPER
from avatar.errors import ConfigError
from avatar.personas import PersonaStore
from avatar.pipeline.stages import SpeakStage
from avatar.types import ASR_SAMPLE_RATE, Speech, VoiceSpec
from avatar.voices import KOKORO_VOICES

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def kokoro(settings: Settings, prepared_models: Path) -> KokoroSynthesizer:
    return KokoroSynthesizer(settings.model_path(KOKORO.folder), voices=KOKORO_VOICES)


@pytest.fixture(scope="module")
def asr(settings: Settings, prepared_models: Path) -> WhisperRecognizer:
    return WhisperRecognizer(settings.model_path(WHISPER.folder), WhisperOptions(threads=1))


def _heard(asr: WhisperRecognizer, speech: Speech, rate: int) -> str:
    audio = media.decode_audio(media.wav_bytes(speech.audio, rate), ASR_SAMPLE_RATE)
    return asr.transcribe(audio, language="en").text


@pytest.mark.parametrize("voice", KOKORO_VOICES)
def test_each_voice_is_heard_back_by_the_asr(kokoro: KokoroSynthesizer, asr: WhisperRecognizer, voice: str) -> None:
    total = WordErrors()
    for sentence in ROUNDTRIP_SENTENCES:  # make eval's: numbers, ordinals and a year among them
        speech = kokoro.synthesize_timed(sentence, VoiceSpec("test", voice=voice))
        assert speech.audio.size > kokoro.sample_rate  # a sentence lasts more than a second
        total = total + word_errors(sentence, _heard(asr, speech, kokoro.sample_rate))
    assert total.reference_words > 100
    assert total.rate <= 0.05, f"{voice}: {total}"


def test_phones_are_the_sounds_in_order_and_lie_where_the_sound_is(kokoro: KokoroSynthesizer) -> None:
    text = "Mom made me a maple pie, and Bob bought my baby a bib. See you soon!"
    speech = kokoro.synthesize_timed(text, VoiceSpec("test", voice="jm_kumo"))
    assert speech.phones is not None and len(speech.phones) > 40
    rate, seconds = kokoro.sample_rate, speech.audio.size / kokoro.sample_rate
    starts = [p.start for p in speech.phones]
    assert starts == sorted(starts)
    assert all(p.start < p.end for p in speech.phones)
    assert all(a.end <= b.start + 1e-9 for a, b in zip(speech.phones, speech.phones[1:], strict=False))
    assert speech.phones[0].start >= EDGE_SILENCE_SECONDS  # the edge silence comes first
    assert speech.phones[-1].end <= seconds - EDGE_SILENCE_SECONDS + 1e-6
    # The sounds the phonemizer wrote, in its order (stress marks, spaces and punctuation are no sounds).
    written = "".join(kokoro._phonemizer.phonemize(text))
    sounds = [c for c in written if c not in "ˈˌː ,.!?"]
    assert [p.symbol for p in speech.phones] == sounds
    # Covering the speech: the phones span the loud part of the audio, and it is loud where they are.
    frame = rate // 100
    loud = np.sqrt(np.mean(speech.audio[: speech.audio.size // frame * frame].reshape(-1, frame) ** 2, axis=1))
    speaking = np.zeros(loud.size, bool)
    for p in speech.phones:
        speaking[int(p.start * 100) : int(np.ceil(p.end * 100))] = True
    voiced = loud > loud.max() * 0.05  # (a stop's closure is silence inside its phone: "b", "p")
    assert voiced[speaking].mean() > 0.6
    assert (voiced & ~speaking).sum() < 0.15 * voiced.sum()  # little sound outside the phones
    assert 20 * np.log10(loud[speaking].mean() / loud[~speaking].mean()) > 10
    # The longest pause is the one between the sentences, after "bib" and before "See".
    bib, see = max(zip(speech.phones, speech.phones[1:], strict=False), key=lambda pair: pair[1].start - pair[0].end)
    assert (bib.symbol, see.symbol) == ("b", "s") and see.start - bib.end > 0.3


def test_synthesize_is_the_timed_audio(kokoro: KokoroSynthesizer) -> None:
    voice = VoiceSpec("test", voice="jf_gongitsune")
    plain = kokoro.synthesize("Hello there.", voice)
    timed = kokoro.synthesize_timed("Hello there.", voice)
    assert plain.size == timed.audio.size and np.allclose(plain, timed.audio, atol=1e-4)


def test_text_with_nothing_to_say_is_no_audio(kokoro: KokoroSynthesizer) -> None:
    speech = kokoro.synthesize_timed("...", VoiceSpec("test", voice="jm_kumo"))
    assert speech.audio.size == 0 and speech.phones == ()


def test_a_voice_not_loaded_is_a_config_error(kokoro: KokoroSynthesizer) -> None:
    with pytest.raises(ConfigError, match="jf_alpha"):
        kokoro.prepare_voice(VoiceSpec("test", voice="jf_alpha"))


def test_stress_length_marks_and_spaces_join_the_phones_they_belong_to() -> None:
    #           h  ə  l  ˈ  O  ː  ␠  b  .
    starts = [0, 2, 3, 5, 6, 9, 10, 11, 13]
    ends = [*starts[1:], 20]
    spans = _phone_spans(list("həlˈOː b."), starts, ends)
    assert spans == [("h", 0, 2), ("ə", 2, 3), ("l", 3, 5), ("O", 5, 11), ("b", 11, 13)]


def test_each_persona_voice_goes_to_its_engine_and_an_unknown_one_stops_start_up(
    settings: Settings, prepared_models: Path
) -> None:
    from avatar.backends.embedded_voices import EmbeddedVoices

    voices = EmbeddedVoices(settings.model_path(KOKORO.folder))
    heart = voices.synthesize_timed("Hello there.", VoiceSpec("eileen", voice="heart"))
    kumo = voices.synthesize_timed("Hello there.", VoiceSpec("sam", voice="jm_kumo"))
    assert heart.audio.size and kumo.audio.size
    assert kumo.phones is not None and [p.symbol for p in kumo.phones][:3] == ["h", "ə", "l"]
    assert voices.synthesize("Hello there.", VoiceSpec("eileen")).size == heart.audio.size  # heart: the default
    # Kokoro is slow to start: the reply's first piece is cut shorter for its voices, not for hibari's.
    assert voices.quick_start(VoiceSpec("sam", voice="jm_kumo")) and voices.quick_start(
        VoiceSpec("x", voice="jf_gongitsune")
    )
    assert not voices.quick_start(VoiceSpec("eileen", voice="heart")) and not voices.quick_start(VoiceSpec("eileen"))
    # The Speak stage asks it for the persona's voice (the Reply passes the answer to the splitter).
    eileen = PersonaStore(PROJECT_ROOT / "assets" / "personas").get("eileen")
    speak = SpeakStage(voices)
    assert speak.quick_start(replace(eileen, voice="jm_kumo")) and not speak.quick_start(replace(eileen, voice="heart"))
    assert not SpeakStage(voices.hibari).quick_start(eileen)  # an engine that says nothing is not slow
    # A voice it cannot find is not asked about here: the Speak stage meets that failure (a degraded turn).
    assert not speak.quick_start(replace(eileen, voice="nobody"))
    with pytest.raises(ConfigError, match="heart, jm_kumo, jf_gongitsune"):
        voices.prepare_voice(VoiceSpec("bob", voice="nobody"))
