"""The viseme check: do the lips follow the sounds, measured on the rendered frames?

Each portrait speaks sentences dense in m/b/p and sentences without any, with the voice's own phoneme
timings; the FaceLandmarker measures every output frame (inner-lip gap and mouth width over face
height). Counted: full lip closures per second of speech in each set, the share of bilabial phonemes
with a closed frame within ±40 ms, and the mouth's width on rounded (oo, oh, w) against spread (ee)
vowels. A zoomed strip of mouth frames per portrait goes to ``docs/`` for a person to look at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from avatar.quality import lipsync
from avatar.types import FaceAnimator, FrameArray, Phone, SpeechSynthesizer, VoiceSpec, speak_timed

if TYPE_CHECKING:
    from avatar.bench.eval import _Checks

ROOT = Path(__file__).resolve().parents[2]
PORTRAITS: dict[str, tuple[str, Path]] = {
    "smile with teeth": ("eileen", ROOT / "assets" / "personas" / "eileen" / "portrait.png"),
    "closed mouth": ("hopper", ROOT / "assets" / "portraits" / "grace_hopper.jpg"),
}
BILABIAL_SENTENCES = (
    "Mom made me a maple pie, and Bob bought my baby a bib.",
    "My mum bumped the map, but Pam kept combing my puppy.",
)
PLAIN_SENTENCES = (
    "Sally is at the zoo with her little cat and a red tractor.",
    "Her sister told us she would go to the lake tonight.",
)
ROUND_SPREAD_SENTENCES = ("Who knew you would go home so soon?", "We see three green keys, Lee, and he agrees.")
STRIP_FRAMES = 12


@dataclass(frozen=True)
class Spoken:
    """One sentence rendered on one portrait and measured."""

    phones: tuple[Phone, ...]
    shapes: lipsync.MouthShapes
    frames: FrameArray
    fps: int

    @property
    def span(self) -> tuple[int, int]:
        """Frames from the first sound to the last."""
        return int(self.phones[0].start * self.fps), int(np.ceil(self.phones[-1].end * self.fps))

    def speech_seconds(self) -> float:
        return self.phones[-1].end - self.phones[0].start

    def closures(self) -> int:
        first, last = self.span
        return lipsync.closures(self.shapes.gap[first:last], rising_only=True)

    def triples(self) -> list[tuple[str, float, float]]:
        return [(p.symbol, p.start, p.end) for p in self.phones]

    def width_at(self, symbols: frozenset[str]) -> float:
        return lipsync.width_at(self.shapes.width, self.triples(), self.fps, symbols)


def speak_and_measure(
    tts: SpeechSynthesizer,
    animator: FaceAnimator,
    meter: lipsync.MouthMeter,
    face: Any,
    text: str,
) -> Spoken:
    speech = speak_timed(tts, text, VoiceSpec("eval"))
    if not speech.phones:
        raise RuntimeError(f"{getattr(tts, 'name', 'the voice')} gave no phoneme timings for {text!r}")
    frames = animator.render(face, speech.audio, tts.sample_rate, phones=speech.phones)
    return Spoken(speech.phones, lipsync.mouth_shapes(meter, frames), frames, animator.fps)


def mouth_strip(spoken: Spoken, face_box: tuple[int, int, int, int], count: int = STRIP_FRAMES) -> Image.Image:
    """``count`` frames around the first bilabials, cropped to the mouth and enlarged, side by side,
    each labelled with the sound being spoken."""
    from PIL import ImageDraw

    x0, y0, x1, y1 = face_box
    first = max(0, int(spoken.phones[0].start * spoken.fps) - 1)
    tiles = []
    for k in range(first, min(first + count, len(spoken.frames))):
        t = (k + 0.5) / spoken.fps
        sound = next((p.symbol for p in spoken.phones if p.start <= t < p.end), "·")
        tile = Image.fromarray(spoken.frames[k][y0:y1, x0:x1]).resize((192, 192 * (y1 - y0) // (x1 - x0)))
        ImageDraw.Draw(tile).text((6, 4), f"{k}: {sound}", fill=(255, 255, 0))
        tiles.append(tile)
    strip = Image.new("RGB", (sum(t.width for t in tiles), max(t.height for t in tiles)))
    at = 0
    for tile in tiles:
        strip.paste(tile, (at, 0))
        at += tile.width
    return strip


def _mouth_box(face: Any) -> tuple[int, int, int, int]:
    """A square round the mouth of a prepared puppet face (pixels of its frames)."""
    lm = face.landmarks[:, :2]
    centre = (lm[13] + lm[14]) / 2
    half = int(np.linalg.norm(lm[61] - lm[291]) * 0.9)
    cx, cy = int(centre[0]), int(centre[1])
    return max(cx - half, 0), max(cy - half, 0), cx + half, cy + half


def visemes_section(
    tts: SpeechSynthesizer,
    animator: FaceAnimator,
    landmarker: Path,
    checks: _Checks,
    portraits: dict[str, tuple[str, Path]] | None = None,
    strips: Path | None = ROOT / "docs",
) -> dict[str, Any]:
    """The viseme check on every portrait; strips of mouth frames written to ``strips``."""
    meter = lipsync.MouthMeter(landmarker)
    rows: list[list[object]] = []
    width_ok = True
    worst_share = 1.0
    worst_ratio = float("inf")
    try:
        for kind, (name, path) in (portraits or PORTRAITS).items():
            face = animator.prepare(np.asarray(Image.open(path).convert("RGB")))

            def said(texts: Sequence[str], face: Any = face) -> list[Spoken]:
                return [speak_and_measure(tts, animator, meter, face, text) for text in texts]

            dense, plain, shaped = said(BILABIAL_SENTENCES), said(PLAIN_SENTENCES), said(ROUND_SPREAD_SENTENCES)
            rate_dense = sum(s.closures() for s in dense) / sum(s.speech_seconds() for s in dense)
            rate_plain = sum(s.closures() for s in plain) / sum(s.speech_seconds() for s in plain)
            hits = total = 0
            for s in dense:
                h, n = lipsync.bilabials_closed(s.shapes.gap, s.triples(), s.fps)
                hits, total = hits + h, total + n
            share = hits / max(total, 1)
            rounded = float(np.nanmedian([s.width_at(lipsync.ROUNDED) for s in shaped]))
            spread = float(np.nanmedian([s.width_at(lipsync.SPREAD) for s in shaped]))
            ratio = rate_dense / rate_plain if rate_plain > 0 else float("inf")
            worst_ratio, worst_share = min(worst_ratio, ratio), min(worst_share, share)
            width_ok &= rounded < spread
            rows.append(
                [
                    f"{kind} ({name})",
                    round(rate_dense, 2),
                    round(rate_plain, 2),
                    "∞" if ratio == float("inf") else round(ratio, 1),
                    f"{hits}/{total} ({100 * share:.0f} %)",
                    round(rounded, 3),
                    round(spread, 3),
                ]
            )
            if strips is not None:
                strips.mkdir(parents=True, exist_ok=True)
                mouth_strip(dense[0], _mouth_box(face)).save(strips / f"mouth-strip-{name}.png")
    finally:
        meter.close()
    checks.add(
        "viseme_closure_ratio",
        "full lip closures per second, m/b/p sentences over sentences without (worst portrait)",
        min(worst_ratio, 1e3),
        "viseme_closure_ratio_min",
        "x",
        higher=True,
    )
    checks.add(
        "viseme_bilabials_closed",
        "share of bilabial phonemes with a full closure within ±40 ms (worst portrait)",
        worst_share,
        "viseme_bilabials_closed_min",
        higher=True,
    )
    checks.add(
        "viseme_rounded_narrower",
        "mouth narrower on rounded than on spread vowels, every portrait",
        float(width_ok),
        "viseme_rounded_narrower_min",
        higher=True,
    )
    text = (
        "Sentences dense in m/b/p and sentences without, spoken with the voice's phoneme timings and "
        "measured on the rendered frames (FaceLandmarker): a full closure is an inner-lip gap under "
        f"{lipsync.CLOSED_GAP} face heights; widths are the outer mouth corners over face height at "
        "the centre of rounded (oo, oh, w) and spread (ee, ay, ih) vowels."
    )
    return {
        "title": "Visemes",
        "text": text,
        "headers": [
            "portrait",
            "closures/s m-b-p",
            "closures/s none",
            "ratio",
            "bilabials closed ±40 ms",
            "width rounded",
            "width spread",
        ],
        "rows": rows,
    }
