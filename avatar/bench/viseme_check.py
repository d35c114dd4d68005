"""The viseme check: do the lips follow the sounds, measured on the rendered frames?

Each portrait speaks sentences dense in m/b/p and sentences without any, with the voice's own phoneme
timings; the FaceLandmarker measures every output frame (inner-lip gap and mouth width over face
height). Counted: full lip closures per second of speech in each set, the share of bilabial phonemes
with a closed frame within ±40 ms, the mouth's width on rounded (oo, oh, w) against spread (ee)
vowels, and the share of f and v phonemes whose frame shows the lower lip up at the upper teeth. A
zoomed strip of mouth frames per portrait goes to ``docs/mouth-strips/`` for a person to look at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from avatar.quality import lipsync
from avatar.types import FaceAnimator, FloatArray, FrameArray, Phone, SpeechSynthesizer, VoiceSpec, speak_timed

ROOT = Path(__file__).resolve().parents[2]
PORTRAITS: dict[str, tuple[str, Path]] = {
    "smile with teeth": ("eileen", ROOT / "assets" / "personas" / "eileen" / "portrait.png"),
    "closed mouth": ("hopper", ROOT / "assets" / "portraits" / "grace_hopper.jpg"),
    "beard (painted on)": ("hopper-bearded", ROOT / "assets" / "portraits" / "grace_hopper.jpg"),
}
"""No bearded photo with a clear public-domain or permissive licence was found in a package registry;
the bearded portrait is the closed-mouth one with a full beard and moustache painted over its lower face
(``bearded``), which still puts hair right up to the lips, where the mouth has to open through it."""
BILABIAL_SENTENCES = (
    "Mom made me a maple pie, and Bob bought my baby a bib.",
    "My mum bumped the map, but Pam kept combing my puppy.",
)
PLAIN_SENTENCES = (
    "Sally is at the zoo with her little cat and a red tractor.",
    "Her sister told us she would go to the lake tonight.",
)
ROUND_SPREAD_SENTENCES = ("Who knew you would go home so soon?", "We see three green keys, Lee, and he agrees.")
LABIODENTAL_SENTENCES = ("Five fine vans of fresh fish flew far.", "Vivian found a fluffy violet fox for Fred.")
STRIP_FRAMES = 12


class NoPhonesError(RuntimeError):
    """The voice does not say which sounds it speaks when (XTTS): there are no visemes to check."""


@dataclass(frozen=True)
class Spoken:
    """One sentence rendered on one portrait and measured."""

    phones: tuple[Phone, ...]
    shapes: lipsync.MouthShapes
    frames: FrameArray
    fps: int

    @property
    def span(self) -> tuple[int, int]:
        """Frames from the start of the first sound to the start of the last (the mouth coming to rest
        after the last sound is no articulation, and every sentence has one)."""
        return int(self.phones[0].start * self.fps), int(np.ceil(self.phones[-1].start * self.fps))

    def speech_seconds(self) -> float:
        return self.phones[-1].start - self.phones[0].start

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
        raise NoPhonesError(f"{getattr(tts, 'name', 'the voice')} gives no phoneme timings (for {text!r})")
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


def bearded(image: FrameArray, landmarks: FloatArray, seed: int = 0) -> FrameArray:
    """``image`` with a short dark beard and moustache painted on: strands of hair over the jaw, chin
    and upper lip (from the face's landmarks), leaving the lips themselves bare."""
    import cv2

    from avatar.backends.puppet.landmarks import FACE_OVAL, LOWER_LIP_OUTER, MOUTH_CORNERS_OUTER, UPPER_LIP_OUTER

    pts = landmarks[:, :2].astype(np.float32)
    height = float(np.linalg.norm(pts[152] - pts[10]))
    nose_y = float(pts[2, 1])
    oval = pts[list(FACE_OVAL)]
    lower = oval[oval[:, 1] > nose_y + 0.02 * height]
    lower = lower[np.argsort(np.arctan2(lower[:, 1] - pts[2, 1], lower[:, 0] - pts[2, 0]))]
    region = np.zeros(image.shape[:2], np.uint8)
    # Jaw and chin below the mouth corners' line, and the moustache between the nose and the lip.
    cv2.fillPoly(region, [np.round(np.vstack([lower, pts[[2]]])).astype(np.int32)], 255)
    lips = pts[[MOUTH_CORNERS_OUTER[0], *UPPER_LIP_OUTER, MOUTH_CORNERS_OUTER[1], *LOWER_LIP_OUTER[::-1]]]
    cv2.fillPoly(region, [np.round(lips).astype(np.int32)], 0)
    hair = image.astype(np.float32).copy()
    rng = np.random.default_rng(seed)
    ys, xs = np.nonzero(region)
    strand = max(2, int(0.025 * height))
    layer = np.zeros(image.shape[:2], np.float32)
    for k in rng.choice(len(xs), size=min(len(xs), 40 * strand * strand), replace=False):
        x, y = int(xs[k]), int(ys[k])
        angle = np.pi / 2 + rng.normal(0, 0.35) + 0.6 * np.sign(x - pts[2, 0]) * min(abs(x - pts[2, 0]) / height, 0.5)
        end = (int(x + strand * np.cos(angle)), int(y + strand * np.sin(angle)))
        cv2.line(layer, (x, y), end, float(rng.uniform(0.6, 1.0)), 1, cv2.LINE_AA)
    base = np.array([52, 36, 26], np.float32)
    shade = np.clip(layer, 0, 1)[..., None]
    hair = hair * 0.25 + base * 0.75
    hair = hair * (1 - 0.5 * shade) + np.array([120, 92, 70], np.float32) * (0.5 * shade)
    alpha = cv2.GaussianBlur(region.astype(np.float32) / 255, (0, 0), max(1.0, 0.006 * height))[..., None]
    out = image.astype(np.float32) * (1 - alpha) + hair * alpha
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


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
    checks: Any,  # eval's _Checks (not imported: eval imports this module)
    portraits: dict[str, tuple[str, Path]] | None = None,
    strips: Path | None = ROOT / "docs" / "mouth-strips",
) -> dict[str, Any]:
    """The viseme check on every portrait; strips of mouth frames written to ``strips``."""
    meter = lipsync.MouthMeter(landmarker)
    try:
        rows, worst_ratio, worst_share, width_ok, worst_teeth = _measure(
            tts, animator, meter, portraits or PORTRAITS, strips
        )
        note = ""
    except NoPhonesError as exc:
        rows, worst_ratio, worst_share, width_ok, worst_teeth, note = [], None, None, None, None, str(exc)
    finally:
        meter.close()
    checks.add(
        "viseme_closure_ratio",
        "full lip closures per second, m/b/p sentences over sentences without (worst portrait)",
        None if worst_ratio is None else min(worst_ratio, 1e3),
        "viseme_closure_ratio_min",
        "x",
        higher=True,
        note=note,
    )
    checks.add(
        "viseme_bilabials_closed",
        "share of bilabial phonemes with a full closure within ±40 ms (worst portrait)",
        worst_share,
        "viseme_bilabials_closed_min",
        higher=True,
        note=note,
    )
    checks.add(
        "viseme_rounded_narrower",
        "mouth narrower on rounded than on spread vowels, every portrait",
        None if width_ok is None else float(width_ok),
        "viseme_rounded_narrower_min",
        higher=True,
        note=note,
    )
    checks.add(
        "viseme_labiodentals_at_teeth",
        "share of f/v phonemes with the lower lip up at the upper teeth (worst portrait)",
        worst_teeth,
        "viseme_labiodentals_at_teeth_min",
        higher=True,
        note=note,
    )
    text = (
        "Sentences dense in m/b/p and sentences without, spoken with the voice's phoneme timings and "
        "measured on the rendered frames (FaceLandmarker), from each sentence's first sound to its last: "
        "a full closure is an inner-lip gap under "
        f"{lipsync.CLOSED_GAP} face heights; widths are the outer mouth corners over face height at "
        "the centre of rounded (oo, oh, w) and spread (ee, ay, ih) vowels; an f or v is at the teeth when its "
        f"centre frame has the lips no more than {lipsync.TEETH_GAP} face heights apart with teeth between them "
        f"(at least {lipsync.TEETH_SHOWN:.0%} of the opening bright and colourless), in sentences dense in f/v."
    ) + (f" Not measured: {note}." if note else "")
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
            "f/v lip at teeth",
        ],
        "rows": rows,
    }


def _measure(
    tts: SpeechSynthesizer,
    animator: FaceAnimator,
    meter: lipsync.MouthMeter,
    portraits: dict[str, tuple[str, Path]],
    strips: Path | None,
) -> tuple[list[list[object]], float, float, bool, float]:
    """The table's rows, the worst closure ratio and bilabial share, whether every portrait's mouth
    was narrower on rounded vowels, and the worst share of f/v at the teeth; strips written to ``strips``."""
    rows: list[list[object]] = []
    width_ok = True
    worst_share = worst_teeth = 1.0
    worst_ratio = float("inf")
    for kind, (name, path) in portraits.items():
        image = np.asarray(Image.open(path).convert("RGB"))
        if name.endswith("-bearded"):
            found = meter.faces(image)
            if not found:
                raise RuntimeError(f"no face found in {path} to paint a beard on")
            image = bearded(image, found[0])
        face = animator.prepare(image)

        def said(texts: Sequence[str], face: Any = face) -> list[Spoken]:
            return [speak_and_measure(tts, animator, meter, face, text) for text in texts]

        dense, plain, shaped = said(BILABIAL_SENTENCES), said(PLAIN_SENTENCES), said(ROUND_SPREAD_SENTENCES)
        at_teeth = n_fv = 0
        for s in said(LABIODENTAL_SENTENCES):
            h, n = lipsync.labiodentals_at_teeth(meter, s.frames, s.shapes.gap, s.triples(), s.fps)
            at_teeth, n_fv = at_teeth + h, n_fv + n
        teeth = at_teeth / max(n_fv, 1)
        worst_teeth = min(worst_teeth, teeth)
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
                f"{at_teeth}/{n_fv} ({100 * teeth:.0f} %)",
            ]
        )
        if strips is not None:
            strips.mkdir(parents=True, exist_ok=True)
            mouth_strip(dense[0], _mouth_box(face)).save(strips / f"mouth-strip-{name}.png")
    return rows, worst_ratio, worst_share, width_ok, worst_teeth
