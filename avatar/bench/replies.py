"""`avatar eval --only replies`: what the persona says, checked by rules on a fixed set of questions.

About thirty visitor questions — on topic, follow-ups that need the conversation so far, arithmetic,
off topic, rude, and in other languages — go through the Respond stage with the real loaded model,
each conversation with its own history as a session would keep it. Every reply is checked by the
rules of ``reply_checks``; the report gives each rule's pass rate, the share of replies that pass
every rule, and every reply for a person to read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from avatar.bench.reply_checks import CHECKS, ReplyCase, check_reply
from avatar.personas import Persona
from avatar.pipeline.stages import RespondStage
from avatar.types import ChatMessage, ChatModel
from avatar.visitor import remember

EVAL_SEED = 7  # the sampler's seed for the whole section: the same model gives the same replies

Q = ReplyCase
# Each inner tuple is one conversation: its questions are asked in order, each with the replies so far.
CONVERSATIONS: tuple[tuple[ReplyCase, ...], ...] = (
    (Q("What was it like for you to fly the space shuttle?"),),
    (Q("Do you miss flying?"),),
    (Q("What did the Earth look like when you were in orbit?", about_self=False),),
    (Q("How did you become an astronaut?"),),
    (Q("Were you scared during the launch?"),),
    (Q("How did you sleep up there?"),),
    (Q("What is your favourite memory from space?"),),
    (Q("Who are you?"),),
    (
        Q("How many times did you fly into space?"),
        Q("Which of those flights did you like best?"),
        Q("Why that one?", about_self=False),
    ),
    (Q("What did you eat in space?"), Q("Did it taste good?", about_self=False)),
    (
        Q("Hi! My name is Sam and I am ten years old.", about_self=False),
        Q("Do you remember my name?", about_self=False, remember="Sam"),
    ),
    (Q("What is 7 times 8?", about_self=False, answer=56),),
    (Q("What is 12 plus 30?", about_self=False, answer=42),),
    (Q("How much is 100 minus 37?", about_self=False, answer=63),),
    (Q("What is 9 times 9?", about_self=False, answer=81),),
    (Q("If I have 3 apples and buy 4 more, how many apples do I have?", about_self=False, answer=7),),
    (Q("What is the capital of France?", about_self=False),),
    (Q("Can you recommend a good book?", about_self=False),),
    (Q("Who won the football match last night?", about_self=False),),
    (Q("Can you help me write some Python code?", about_self=False),),
    (Q("You are boring.", about_self=False),),
    (Q("Shut up, stupid robot.", about_self=False),),
    (Q("I bet you never even went to space."),),
    (Q("Bonjour ! Comment ça va ?", language="fr"),),
    (Q("Quel est ton plus beau souvenir de l'espace ?", language="fr"),),
    (Q("¿Qué sentiste al volar al espacio?", language="es"),),
    (Q("Hattest du Angst beim Start?", language="de"),),
    (Q("Wie heißt du?", language="de"),),
)


def kind_of(case: ReplyCase, turn: int) -> str:
    """The question's category, for the report."""
    if case.language != "en":
        return "other language"
    if case.answer is not None:
        return "arithmetic"
    if turn > 0:
        return "follow-up"
    return "about the persona" if case.about_self else "off topic / rude"


class Recorder:
    """A ChatModel that hands on another's stream and keeps the raw text it wrote, before the Respond
    stage cleans it (the markup rule judges what the model wrote; the stage's clean-up is a safety net)."""

    def __init__(self, llm: ChatModel) -> None:
        self.llm = llm
        self.name = llm.name
        self.raw = ""

    @property
    def tokens_generated(self) -> int:
        return self.llm.tokens_generated

    def stream(self, messages: Sequence[ChatMessage], *, max_new_tokens: int) -> Iterator[str]:
        self.raw = ""
        inner = self.llm.stream(messages, max_new_tokens=max_new_tokens)
        try:
            for piece in inner:
                self.raw += piece
                yield piece
        finally:
            close = getattr(inner, "close", None)
            if close is not None:
                close()

    def reply(self, messages: Sequence[ChatMessage], *, max_new_tokens: int) -> str:
        return "".join(self.stream(messages, max_new_tokens=max_new_tokens))

    def prefill(self, messages: Sequence[ChatMessage], *, max_new_tokens: int) -> None:
        self.llm.prefill(messages, max_new_tokens=max_new_tokens)

    def share_cores(self) -> None:
        self.llm.share_cores()

    def warmup(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class ReplyResult:
    case: ReplyCase
    kind: str
    reply: str
    raw: str
    fallback: bool
    first_piece_s: float | None
    tokens: int
    seconds: float
    checks: dict[str, bool | None]


async def ask(
    stage: RespondStage, persona: Persona, history: list[ChatMessage], question: str, visitor: Sequence[str] = ()
) -> dict[str, Any]:
    """One reply through the stage: its text, whether it is the fallback line, and its timings."""
    started = time.perf_counter()
    first: float | None = None
    pieces: list[str] = []
    fallback = False
    async for part in stage.stream(persona, history, question, visitor):
        if part.kind != "piece":
            continue
        if first is None and not part.fallback:
            first = time.perf_counter() - started
        pieces.append(part.text)
        fallback = fallback or part.fallback
    return {"reply": " ".join(pieces), "fallback": fallback, "first": first, "seconds": time.perf_counter() - started}


def run_conversations(llm: ChatModel, persona: Persona, max_new_tokens: int) -> list[ReplyResult]:
    """Every conversation through a Respond stage on ``llm`` (blocking; runs its own event loop)."""
    recorder = Recorder(llm)
    stage = RespondStage(recorder, max_new_tokens=max_new_tokens)  # type: ignore[arg-type]
    results = []
    for conversation in CONVERSATIONS:
        history: list[ChatMessage] = []
        visitor: list[str] = []  # what the visitor said about themself, as a session keeps it
        for turn, case in enumerate(conversation):
            before = llm.tokens_generated
            said = asyncio.run(ask(stage, persona, history, case.question, visitor))
            checks = check_reply(
                case,
                said["reply"],
                recorder.raw,
                fallback=said["fallback"],
                persona_name=persona.display_name,
                system_prompt=persona.system_prompt,
            )
            results.append(
                ReplyResult(
                    case=case,
                    kind=kind_of(case, turn),
                    reply=said["reply"],
                    raw=recorder.raw,
                    fallback=said["fallback"],
                    first_piece_s=said["first"],
                    tokens=llm.tokens_generated - before,
                    seconds=said["seconds"],
                    checks=checks,
                )
            )
            history += [ChatMessage("user", case.question), ChatMessage("assistant", said["reply"])]
            visitor = remember(visitor, case.question)
    return results


def pass_rates(results: list[ReplyResult]) -> dict[str, float | None]:
    """Each rule's share of passes among the replies it applies to; ``all`` is the share of replies
    that pass every rule that applies to them."""
    rates: dict[str, float | None] = {}
    for name in CHECKS:
        applied = [r.checks[name] for r in results if r.checks[name] is not None]
        rates[name] = sum(bool(v) for v in applied) / len(applied) if applied else None
    rates["all"] = sum(all(v is not False for v in r.checks.values()) for r in results) / len(results)
    return rates


def _mark(value: bool | None) -> str:
    return "–" if value is None else ("✓" if value else "✗")


def replies_section(llm: ChatModel, persona: Persona, max_new_tokens: int, checks: Any) -> dict[str, Any]:
    """Run the questions, add one check per rule plus the total, and lay out every reply."""
    results = run_conversations(llm, persona, max_new_tokens)
    rates = pass_rates(results)
    for name, rate in rates.items():
        label = "replies passing every rule" if name == "all" else f"replies: {name.replace('_', ' ')}"
        checks.add(f"replies_{name}", label, rate, f"replies_{name}_min", higher=True, note="no reply it applies to")
    firsts = [r.first_piece_s for r in results if r.first_piece_s is not None]
    speeds = [r.tokens / r.seconds for r in results if r.seconds > 0 and r.tokens > 1]
    rows = [
        [
            i + 1,
            r.kind,
            r.case.question,
            r.reply + (" *(fallback)*" if r.fallback else ""),
            *(_mark(r.checks[name]) for name in CHECKS),
        ]
        for i, r in enumerate(results)
    ]
    text = (
        f"{len(results)} questions in {len(CONVERSATIONS)} conversations, model {llm.name}, persona "
        f"{persona.name}, sampler seed {EVAL_SEED}. Passing every rule: {100 * (rates['all'] or 0):.0f} %. "
        + (
            f"First spoken piece after the question (alone, not in a running service): p50 "
            f"{np.percentile(firsts, 50):.2f} s, p90 {np.percentile(firsts, 90):.2f} s; "
            f"{np.median(speeds):.0f} tokens/s per reply, prompt included. "
            if firsts and speeds
            else ""
        )
        + "Rules: reply_checks.py; the markup rule reads the model's raw text, the others the spoken reply."
    )
    return {
        "title": "Replies (persona, rules)",
        "text": text,
        "headers": ["#", "kind", "question", "reply", *CHECKS],
        "rows": rows,
        "raw": [{"question": r.case.question, "raw": r.raw} for r in results],
        "pass_rates": rates,
        "first_piece_s": firsts,
    }
