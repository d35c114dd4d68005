"""The replies section's plumbing: every question asked through the Respond stage, each conversation with
its own history, rules applied and rates counted. The model is a scripted ChatModel (our own protocol):
what is tested is the section, not a model."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from avatar.bench.eval import _Checks
from avatar.bench.replies import CONVERSATIONS, replies_section
from avatar.bench.targets import load_thresholds
from avatar.config import PROJECT_ROOT
from avatar.personas import PersonaStore
from avatar.pipeline.stages import canned_reply
from avatar.prompt import static_system
from avatar.types import ChatMessage

EILEEN = PersonaStore(PROJECT_ROOT / "assets" / "personas").get("eileen")


class Answers:
    """Replies by rule of thumb: sums right, the visitor's name remembered from the history, one reply off
    the rails (spoken as the fallback), everything else a first-person sentence."""

    name = "answers"

    def __init__(self) -> None:
        self.tokens_generated = 0
        self.histories: list[list[ChatMessage]] = []

    def stream(self, messages: Sequence[ChatMessage], *, max_new_tokens: int) -> Iterator[str]:
        self.histories.append(list(messages))
        question = messages[-1].content
        sums = {"7 times 8": "56", "12 plus 30": "42", "100 minus 37": "63", "9 times 9": "81", "apples": "7"}
        answer = next((f"It is {v}." for k, v in sums.items() if k in question), "I loved every minute of it.")
        if "remember my name" in question:
            said_before = " ".join(m.content for m in messages[:-1])
            answer = "Of course, you are Sam." if "Sam" in said_before else "I forgot."
        if "stupid robot" in question:
            answer = "As an AI language model, I cannot reply."
        for word in answer.split(" "):
            self.tokens_generated += 1
            yield word + " "

    def reply(self, messages: Sequence[ChatMessage], *, max_new_tokens: int) -> str:
        return "".join(self.stream(messages, max_new_tokens=max_new_tokens))

    def prefill(self, messages: Sequence[ChatMessage], *, max_new_tokens: int) -> None: ...

    def share_cores(self) -> None: ...

    def warmup(self) -> None: ...

    def close(self) -> None: ...


def test_every_question_is_asked_with_its_conversation_and_checked() -> None:
    model = Answers()
    checks = _Checks(load_thresholds()["eval"])
    section = replies_section(model, EILEEN, 60, checks)
    total = sum(len(c) for c in CONVERSATIONS)
    # The persona's own lines answer what no model should (here the visitor only saying who they are).
    own_lines = [case.question for c in CONVERSATIONS for case in c if canned_reply(EILEEN, case.question)]
    assert own_lines == ["Hi! My name is Sam and I am ten years old."]
    assert len(section["rows"]) == total == len(model.histories) + len(own_lines) >= 30
    assert all(h[0].role == "system" and h[0].content == static_system(EILEEN) for h in model.histories)
    # A follow-up carries the conversation so far (and what the visitor said about themself); a new
    # conversation starts empty.
    remember = next(h for h in model.histories if "remember my name" in h[-1].content)
    assert [m.role for m in remember] == ["system", "user", "assistant", "system", "user"]
    assert '"Your name is Sam."' in remember[-2].content
    rates = section["pass_rates"]
    assert rates["arithmetic"] == 1.0 and rates["remembers"] == 1.0
    assert rates["answered"] == (total - 1) / total  # the off-the-rails reply became the fallback line
    rude = next(row for row in section["rows"] if "stupid robot" in row[2])
    assert "(fallback)" in rude[3]
    assert rates["language"] is not None and rates["language"] < 1.0  # English replies to French questions
    names = {row["name"] for row in checks.rows}
    assert {"replies_all", "replies_first_person", "replies_arithmetic"} <= names
