"""The end of a turn judged on real speech: the committed questions, complete and hesitant, through the
real turn detector (Silero) and the real turn-end model (Smart Turn), with the words at each pause
scripted from what the question says up to there. A hesitant question is one turn, ended after its
last word; so is a complete one, ended a short silence after it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from avatar.backends.smart_turn import SmartTurn
from avatar.backends.whisper import WhisperOptions, WhisperRecognizer
from avatar.bench.fixtures import HESITANT, TURNS, HesitantQuestion, hesitant_audio, question_audio
from avatar.config import PROJECT_ROOT
from avatar.server.live.finishing import FinishOptions, heard_words, judge, unfinished_cue
from avatar.server.live.listener import ListenOptions, TurnDetector
from avatar.types import ASR_SAMPLE_RATE, AudioArray

pytestmark = pytest.mark.models
OPTIONS = FinishOptions()
VERDICT_WINDOWS = 4  # the verdict comes this many 32 ms windows after the pause (the model and the words)
CHUNK = 320  # 20 ms, as the microphone's packets come


@pytest.fixture(scope="module")
def model() -> SmartTurn:
    folder = PROJECT_ROOT / "models_cache" / "smart-turn"
    if not folder.is_dir():
        pytest.fail("the turn-end model is not prepared: run `make models` (avatar models prepare)")
    return SmartTurn(folder)


Words = dict[float, str] | str | Callable[[AudioArray], tuple[str, str]]


def _listen(model: SmartTurn, audio: AudioArray, words_at: Words) -> list[float]:
    """Where turns end (the end of their speech, in seconds of ``audio``), each pause judged as the
    session judges it: P(complete) of the utterance so far and the words said before the pause (or
    recognised in it: a callable gives the transcript and the words it is sure of)."""
    lead = np.zeros(ASR_SAMPLE_RATE // 2, np.float32)
    stream = np.concatenate([lead, audio, np.zeros(2 * ASR_SAMPLE_RATE, np.float32)])
    detector = TurnDetector(ListenOptions(end_silence_ms=OPTIONS.unfinished_ms, partial_seconds=0))
    pending: list[tuple[int, int, int]] = []  # (window it is known at, version, wait)
    ends = []
    for start in range(0, stream.size, CHUNK):
        for heard in detector.feed(stream[start : start + CHUNK]):
            if heard.kind == "paused":
                assert heard.audio is not None
                at = heard.speech_end - lead.size / ASR_SAMPLE_RATE
                sure = None
                if callable(words_at):
                    text, sure = words_at(heard.audio)
                else:
                    text = words_at if isinstance(words_at, str) else _said_by(words_at, at)
                verdict = judge(model.probability(heard.audio), text, OPTIONS, sure)
                pending.append((detector.windows + VERDICT_WINDOWS, heard.version, verdict.wait_ms))
            elif heard.kind == "turn_ended":
                ends.append(round(heard.speech_end - lead.size / ASR_SAMPLE_RATE, 2))
        for known in [p for p in pending if p[0] <= detector.windows]:
            pending.remove(known)
            detector.end_after(known[1], known[2])
    return ends


def _said_by(words_at: dict[float, str], at: float) -> str:
    """The words said by ``at`` seconds, written as in the question (Whisper tiny wrote the same words
    at these pauses, with a question mark or none for the comma after "like" and "about")."""
    return " ".join(text for end, text in words_at.items() if end <= at + 0.05)


def _phrase_ends(question: HesitantQuestion, audio: AudioArray) -> dict[float, str]:
    """Each phrase's text by the time its speech ends: the inserted pauses are digital silence."""
    silent = np.flatnonzero(np.abs(audio) > 0)
    gaps = np.flatnonzero(np.diff(silent) > 0.5 * ASR_SAMPLE_RATE)
    ends = [float(silent[g]) / ASR_SAMPLE_RATE for g in gaps] + [float(silent[-1]) / ASR_SAMPLE_RATE]
    texts = [p for p in question.parts if isinstance(p, str)]
    assert len(ends) == len(texts), f"{question.name}: {len(ends)} phrases heard, {len(texts)} written"
    return dict(zip(ends, texts, strict=True))


@pytest.mark.parametrize("question", HESITANT, ids=lambda q: q.name)
def test_a_hesitant_question_is_one_turn_ended_after_its_last_word(
    model: SmartTurn, question: HesitantQuestion
) -> None:
    audio = hesitant_audio(question)
    phrases = _phrase_ends(question, audio)
    assert all(0.6 <= p <= 1.2 for p in question.pauses)  # the scenario: long pauses inside
    ends = _listen(model, audio, phrases)
    assert len(ends) == 1, f"{question.name}: turns ended at {ends} s (phrases end at {list(phrases)})"
    assert ends[0] > max(phrases) - 0.4  # the last phrase (the speech detector hears its decay as silence)


@pytest.fixture(scope="module")
def recognised() -> Callable[[AudioArray], tuple[str, str]]:
    """What the session's recogniser (Whisper tiny, short window) writes at a pause, and the words of
    it it is sure of."""
    folder = PROJECT_ROOT / "models_cache" / "whisper-tiny.en"
    if not folder.is_dir():
        pytest.fail("the speech recogniser is not prepared: run `make models` (avatar models prepare)")
    asr = WhisperRecognizer(folder, WhisperOptions(device="cpu"))

    def words(audio: AudioArray) -> tuple[str, str]:
        transcript = asr.transcribe(audio, language="en", word_probabilities=True)
        return transcript.text, heard_words(transcript)

    return words


@pytest.mark.parametrize("question", [*HESITANT, *TURNS], ids=lambda q: q.name)
def test_with_the_recognisers_own_words_each_question_is_one_turn(
    model: SmartTurn, recognised: Callable[[AudioArray], tuple[str, str]], question: object
) -> None:
    """As above, with what Whisper tiny writes at each pause instead of what was said: at the first
    pause of what-did-you it writes "What did you mean?" (its last word a guess, probability 0.43),
    which would look finished; left out, "What did you" is not."""
    hesitant = isinstance(question, HesitantQuestion)
    audio = hesitant_audio(question) if hesitant else question_audio(question)  # type: ignore[arg-type]
    ends = _listen(model, audio, recognised)
    assert len(ends) == 1, f"{question.name}: turns ended at {ends} s"  # type: ignore[attr-defined]
    assert ends[0] >= audio.size / ASR_SAMPLE_RATE - 1.0


@pytest.mark.parametrize("turn", TURNS, ids=lambda t: t.name)
def test_a_complete_question_is_one_turn_ended_soon_after_it(model: SmartTurn, turn: object) -> None:
    audio = question_audio(turn)  # type: ignore[arg-type]
    ends = _listen(model, audio, turn.question)  # type: ignore[attr-defined]
    assert len(ends) == 1
    assert ends[0] >= audio.size / ASR_SAMPLE_RATE - 1.0


def test_the_silence_rule_takes_the_hesitant_pauses_for_ends(model: SmartTurn) -> None:
    """The precondition of the tests above: without judging, these pauses end turns."""
    question = HESITANT[0]
    audio = hesitant_audio(question)
    stream = np.concatenate([audio, np.zeros(ASR_SAMPLE_RATE, np.float32)])
    detector = TurnDetector(ListenOptions(end_silence_ms=400, partial_seconds=0))
    ended = [
        h for s in range(0, stream.size, CHUNK) for h in detector.feed(stream[s : s + CHUNK]) if h.kind == "turn_ended"
    ]
    assert len(ended) == len(question.pauses) + 1


def test_the_model_reads_the_end_of_the_audio_and_knows_a_cut_off_question(model: SmartTurn) -> None:
    audio = question_audio(TURNS[2])  # the long question, 8.8 s: the model reads its last 8 s
    assert model.features(audio).shape == (1, 80, 800)
    assert model.probability(audio) > 0.9
    assert model.probability(audio[: audio.size // 2]) < 0.1  # cut mid-word


def test_a_missing_model_file_is_named_with_the_fix(tmp_path: Path) -> None:
    from avatar.errors import ModelError

    with pytest.raises(ModelError, match=r"smart-turn-v3.2-cpu.onnx.*avatar models prepare"):
        SmartTurn(tmp_path)


def test_at_the_first_pause_of_what_did_you_the_recognisers_guess_is_left_out(
    recognised: Callable[[AudioArray], tuple[str, str]],
) -> None:
    """Whisper tiny finishes the cut-off "What did you" with a word that was not said; the words it
    is sure of are the ones that were, and they say the question goes on."""
    (question,) = [q for q in HESITANT if q.name == "what-did-you"]
    stream = np.concatenate([np.zeros(ASR_SAMPLE_RATE // 2, np.float32), hesitant_audio(question)])
    detector = TurnDetector(ListenOptions(end_silence_ms=OPTIONS.unfinished_ms, partial_seconds=0))
    first = next(
        h for s in range(0, stream.size, CHUNK) for h in detector.feed(stream[s : s + CHUNK]) if h.kind == "paused"
    )
    assert first.audio is not None
    text, sure = recognised(first.audio)
    print(f"recognised {text!r}, sure of {sure!r}")
    assert unfinished_cue(text) is None  # the guess makes it look whole
    assert sure.lower().startswith("what did you") and unfinished_cue(sure) == "did you"
