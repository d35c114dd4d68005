"""`avatar eval`: quality, measured — the persona's replies, speech recognition, speech synthesis, lip
sync, face robustness.

Each section returns its checks (figures against ``bench/thresholds.toml``) and a table for the report.
Everything runs on the embedded models in this process; nothing is timed here (that is bench's job).
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avatar import fmp4, media
from avatar.bench import machine
from avatar.bench.faces import check_variant, make_variants
from avatar.bench.fixtures import read_clips
from avatar.bench.grounded import grounded_section
from avatar.bench.replies import EVAL_SEED, replies_section
from avatar.bench.viseme_check import visemes_section
from avatar.bench.voice_eval import voices_section
from avatar.bench.wer import WordErrors, word_errors
from avatar.config import Settings
from avatar.pipeline.stages import AnimateStage
from avatar.quality import lipsync
from avatar.runtime import Runtime, running
from avatar.types import ASR_SAMPLE_RATE, AudioArray, FrameArray, Phone, speak_timed

# Spoken by the TTS and heard back by the ASR; numbers, ordinals and a year on purpose.
ROUNDTRIP_SENTENCES: tuple[str, ...] = (
    "Good morning, my name is Eileen and I used to fly the Space Shuttle.",
    "The shuttle carried seven astronauts into orbit.",
    "I first flew in space in 1995.",
    "The launch was delayed until the 23rd of July.",
    "Our mission lasted 12 days.",
    "Please turn to page 42 of your notebook.",
    "Would you like a cup of tea or a glass of water?",
    "The children planted three apple trees behind the school.",
    "She finished the race in second place.",
    "We watched the sunrise sixteen times every day.",
    "The museum is closed on Mondays and open late on Fridays.",
    "It takes about eight minutes to reach orbit.",
)
LIPSYNC_TEXT = "Hello, it is lovely to meet you. Ask me anything you like about flying in space."
FACE_TEXT = "Hello there, how are you today?"
SHIFT_MS = 200


@dataclass(frozen=True)
class EvalOptions:
    quick: bool = False


class _Checks:
    """Collects (name, label, value, limit, unit, higher_is_better) rows; turned into Check objects later."""

    def __init__(self, limits: dict[str, float]) -> None:
        self.limits = limits
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        name: str,
        label: str,
        value: float | None,
        limit_key: str,
        unit: str = "",
        higher: bool = False,
        note: str = "",
    ) -> None:
        self.rows.append(
            {
                "name": name,
                "label": label,
                "value": value,
                "limit": self.limits[limit_key],
                "unit": unit,
                "higher_is_better": higher,
                "note": note,
            }
        )


def _pct(errors: WordErrors) -> str:
    return f"{100 * errors.rate:.1f} %"


def asr_section(runtime: Runtime, checks: _Checks) -> dict[str, Any]:
    """Word error rate of the ASR on the committed clips, synthetic and human, separately."""
    asr = runtime.registry.get("asr")
    rows, totals = [], {"tts": WordErrors(), "human": WordErrors()}
    for clip in read_clips():
        audio = media.decode_audio(clip.path, ASR_SAMPLE_RATE)
        heard = asr.transcribe(audio).text
        errors = word_errors(clip.reference, heard)
        totals[clip.kind] = totals[clip.kind] + errors
        rows.append(
            [
                clip.path.name,
                clip.kind,
                f"{audio.size / ASR_SAMPLE_RATE:.1f}",
                clip.reference,
                heard,
                errors.errors,
                _pct(errors),
            ]
        )
    for kind, label in (("tts", "synthetic (TTS-made) clips"), ("human", "human recordings")):
        total = totals[kind]
        value = 100 * total.rate if total.reference_words else None
        checks.add(
            f"asr_wer_{kind}", f"ASR word error rate, {label}", value, f"asr_wer_{kind}_max_pct", "%", note="no clips"
        )
    text = (
        f"Synthetic clips: {_pct(totals['tts'])} over {totals['tts'].reference_words} words; human recordings: "
        f"{_pct(totals['human'])} over {totals['human'].reference_words} words "
        "(sources and licences: bench/fixtures/SOURCES.md). Both sides normalised (case, punctuation, numbers)."
    )
    return {
        "title": "Speech recognition",
        "text": text,
        "headers": ["clip", "kind", "s", "reference", "heard", "errors", "WER"],
        "rows": rows,
    }


def tts_section(runtime: Runtime, checks: _Checks, sentences: tuple[str, ...]) -> dict[str, Any]:
    """Intelligibility: the TTS speaks each sentence, the ASR writes down what it hears."""
    tts, asr = runtime.registry.get("tts"), runtime.registry.get("asr")
    persona = runtime.personas.get(runtime.settings.default_persona)
    rows, total = [], WordErrors()
    for sentence in sentences:
        speech = tts.synthesize(sentence, persona.voice_spec)
        heard = asr.transcribe(_to_asr(speech, tts.sample_rate)).text
        errors = word_errors(sentence, heard)
        total = total + errors
        rows.append([sentence, heard, errors.errors, _pct(errors)])
    checks.add(
        "tts_roundtrip_wer",
        "TTS intelligibility: ASR round-trip word error rate",
        100 * total.rate,
        "tts_roundtrip_wer_max_pct",
        "%",
    )
    text = f"{len(sentences)} sentences, {total.reference_words} words: {_pct(total)} word error rate."
    return {
        "title": "Speech synthesis (ASR round trip)",
        "text": text,
        "headers": ["sentence", "heard", "errors", "WER"],
        "rows": rows,
    }


def _to_asr(audio: AudioArray, sample_rate: int) -> AudioArray:
    return media.decode_audio(media.wav_bytes(audio, sample_rate), ASR_SAMPLE_RATE)


def shifted(frames: FrameArray, fps: int, shift_ms: float) -> FrameArray:
    """The frames delayed by ``shift_ms`` (the first frame held), same length: a mouth out of step."""
    k = round(shift_ms * fps / 1000)
    return np.concatenate([np.repeat(frames[:1], k, axis=0), frames[:-k]]) if k > 0 else frames


def static(frames: FrameArray) -> FrameArray:
    """The first frame held for the whole length: a mouth that never moves."""
    return np.repeat(frames[:1], len(frames), axis=0)


def _score_mp4(
    path: Path,
    frames: FrameArray,
    speech: AudioArray,
    rate: int,
    fps: int,
    landmarker: Path,
    phones: tuple[Phone, ...] | None = None,
) -> lipsync.LipSyncScore:
    fmp4.write_mp4(path, frames, media.fit_audio_to_frames(speech, rate, len(frames), fps), rate, fps)
    closed = [(p.symbol, p.start, p.end) for p in phones or ()]
    return lipsync.measure_video(path, landmarker, closed_on_purpose=closed)


def lipsync_section(runtime: Runtime, checks: _Checks) -> dict[str, Any]:
    """Every persona's video scored from the file alone, plus two controls that must score badly."""
    settings = runtime.settings
    landmarker = settings.model_path(settings.face_model)
    tts = runtime.registry.get("tts")
    animate = AnimateStage(runtime.registry.get("face"))
    rows = []
    max_lag, min_corr = checks.limits["lipsync_lag_ms_max"], checks.limits["lipsync_peak_corr_min"]
    with tempfile.TemporaryDirectory(prefix="avatar-eval-") as tmp:
        for i, persona in enumerate(runtime.personas):
            spoken = speak_timed(tts, LIPSYNC_TEXT, persona.voice_spec)
            speech = spoken.audio
            frames = animate.animator.render(
                animate.prepare_path(persona.image_path), speech, tts.sample_rate, phones=spoken.phones
            )
            found = _score_mp4(
                Path(tmp) / f"{persona.name}.mp4",
                frames,
                speech,
                tts.sample_rate,
                animate.fps,
                landmarker,
                spoken.phones,
            )
            rows.append(_lipsync_row(persona.name, found, max_lag, min_corr))
            checks.add(
                f"lipsync_lag_{persona.name}",
                f"lip-sync lag at the peak, {persona.name}",
                abs(found.lag_ms),
                "lipsync_lag_ms_max",
                "ms",
            )
            checks.add(
                f"lipsync_corr_{persona.name}",
                f"lip-sync peak correlation, {persona.name}",
                found.peak_correlation,
                "lipsync_peak_corr_min",
                higher=True,
            )
            if i == 0:  # the controls: the metric must tell these apart from the real thing
                still = _score_mp4(
                    Path(tmp) / "static.mp4", static(frames), speech, tts.sample_rate, animate.fps, landmarker
                )
                late = _score_mp4(
                    Path(tmp) / "shifted.mp4",
                    shifted(frames, animate.fps, SHIFT_MS),
                    speech,
                    tts.sample_rate,
                    animate.fps,
                    landmarker,
                )
                rows.append(_lipsync_row(f"control: {persona.name} static frame", still, max_lag, min_corr))
                rows.append(_lipsync_row(f"control: {persona.name} shifted +{SHIFT_MS} ms", late, max_lag, min_corr))
                rejected = not still.passes(max_lag, min_corr) and not late.passes(max_lag, min_corr)
                checks.add(
                    "lipsync_controls",
                    "lip-sync metric rejects a static and a 200 ms shifted video",
                    float(rejected),
                    "lipsync_controls_rejected_min",
                    higher=True,
                )
    text = (
        "Mouth opening per frame (FaceLandmarker on the decoded MP4) cross-correlated with the audio's "
        "loudness envelope; lag > 0 means the mouth moves after the sound. Where the voice gives its "
        "phonemes the lips close on m, b and p while it still sounds; those frames (±40 ms) are left out "
        "here and judged by the viseme check. The controls must fail "
        f"(|lag| > {max_lag:.0f} ms or peak correlation ≤ {min_corr})."
    )
    return {
        "title": "Lip sync",
        "text": text,
        "headers": ["video", "lag ms", "peak corr", "corr at 0", "faces found", "in step"],
        "rows": rows,
    }


def _lipsync_row(name: str, s: lipsync.LipSyncScore, max_lag: float, min_corr: float) -> list[object]:
    return [
        name,
        f"{s.lag_ms:+.0f}",
        f"{s.peak_correlation:.3f}",
        f"{s.zero_lag_correlation:.3f}",
        f"{s.faces_found}/{s.frames}",
        "yes" if s.passes(max_lag, min_corr) else "no",
    ]


def faces_section(runtime: Runtime, checks: _Checks, quick: bool) -> dict[str, Any]:
    """The talking head on varied portraits: a good video or a clear error for each."""
    settings = runtime.settings
    landmarker = settings.model_path(settings.face_model)
    persona = runtime.personas.get(settings.default_persona)
    tts = runtime.registry.get("tts")
    animator = runtime.registry.get("face")
    speech = tts.synthesize(FACE_TEXT, persona.voice_spec)
    outcomes = [
        check_variant(v, animator, speech, tts.sample_rate, landmarker)
        for v in make_variants(persona.image_path, landmarker, quick=quick)
    ]
    passed = sum(o.passed for o in outcomes)
    checks.add(
        "face_robustness",
        "portrait variants with a good video or a clear error",
        passed / len(outcomes),
        "face_robustness_min",
        higher=True,
    )
    rows = [
        [
            o.variant,
            o.description,
            o.expect,
            o.outcome if o.outcome == "rendered" else f"error: {o.error_code}",
            "–" if o.found_share is None else f"{o.found_share:.2f}",
            "–" if o.mouth_range is None else f"{o.mouth_range:.3f}",
            "–" if o.peak_correlation is None else f"{o.peak_correlation:.2f}",
            "pass" if o.passed else "FAIL",
            o.detail,
        ]
        for o in outcomes
    ]
    text = (
        f"{passed}/{len(outcomes)} variants behave. A good video: the face is found in ≥ 90 % of the output "
        "frames and the mouth opening spans ≥ 0.02 face heights (5th to 95th percentile)."
    )
    return {
        "title": "Face robustness",
        "text": text,
        "rows": rows,
        "headers": [
            "variant",
            "what",
            "expected",
            "outcome",
            "face found",
            "mouth range",
            "sync corr",
            "verdict",
            "detail",
        ],
    }


# Each section and the models it needs (a partial run loads only those). With both TTS and face loaded,
# Starting a runtime builds the whole pipeline, which needs all four.
SECTIONS: dict[str, tuple[str, ...]] = {
    "replies": ("llm",),
    "asr": ("asr",),
    "tts": ("asr", "tts"),
    "voices": ("asr", "tts"),
    "lipsync": ("asr", "llm", "tts", "face"),
    "faces": ("asr", "llm", "tts", "face"),
    "visemes": ("asr", "llm", "tts", "face"),
}


def seed_torch(seed: int) -> None:
    """Seed torch's generator when torch is loaded (it is only imported by a backend that uses it)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


def run_eval(
    settings: Settings, options: EvalOptions, limits: dict[str, float], log: Any = print, only: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The chosen sections (default all) on one started runtime; returns the JSON document of the report."""
    chosen = [name for name in SECTIONS if not only or name in only]
    kinds = tuple(k for k in ("asr", "llm", "tts", "face") if any(k in SECTIONS[name] for name in chosen))
    description = machine.describe()
    started = time.perf_counter()
    checks = _Checks(limits)
    sections = []
    if "replies" in chosen and settings.llm_seed < 0:
        settings = settings.replace(llm_seed=EVAL_SEED)  # llama.cpp: the same model gives the same replies
    log(f"eval: loading models ({', '.join(kinds)}) …")
    with running(settings, kinds=kinds) as runtime:
        for name in chosen:
            log(f"eval: {name} …")
            if name == "replies":
                seed_torch(EVAL_SEED)  # the transformers backend samples with torch's generator
                persona = runtime.personas.get(settings.default_persona)
                llm = runtime.registry.get("llm")
                sections.append(replies_section(llm, persona, settings.llm_max_new_tokens, checks))
                log("eval: replies grounded in knowledge …")
                grounded = grounded_section(
                    llm, persona.image_path, settings.llm_max_new_tokens, settings.llm_history_turns, checks
                )
                sections.append(grounded)
            elif name == "asr":
                sections.append(asr_section(runtime, checks))
            elif name == "tts":
                sentences = ROUNDTRIP_SENTENCES[:4] if options.quick else ROUNDTRIP_SENTENCES
                sections.append(tts_section(runtime, checks, sentences))
            elif name == "voices":
                sentences = ROUNDTRIP_SENTENCES[:4] if options.quick else ROUNDTRIP_SENTENCES
                tts, asr = runtime.registry.get("tts"), runtime.registry.get("asr")
                sections.append(voices_section(tts, asr, settings.tts_backend, checks, sentences))
            elif name == "lipsync":
                sections.append(lipsync_section(runtime, checks))
            elif name == "visemes":
                settings_ = runtime.settings
                sections.append(
                    visemes_section(
                        runtime.registry.get("tts"),
                        runtime.registry.get("face"),
                        settings_.model_path(settings_.face_model),
                        checks,
                    )
                )
            else:
                sections.append(faces_section(runtime, checks, options.quick))
    description["load_average_end"] = machine.load_average()
    description["elapsed_s"] = round(time.perf_counter() - started, 1)
    return {
        "kind": "eval",
        "machine": description,
        "options": {"quick": options.quick, "sections": chosen},
        "checks": checks.rows,
        "sections": sections,
    }
