"""A bounded fuzz of the live data channel: arbitrary messages (JSON of any shape, text with any code
point, lone surrogates and control characters included, and what is not JSON at all) sent to a live
session, the way the schemathesis run sends arbitrary fields to the HTTP routes. Whatever arrives, the
session answers with a documented error code or a turn, never fails inside, and keeps only valid text in
its conversation. The session is the one of ``test_session.py`` (real pipeline, turn runner, playout;
doubles of our own model protocols)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_session import Scene

from avatar.errors import AvatarError
from avatar.pipeline.text import checked_text, invalid_characters

ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)  # every code point, surrogates too
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3),
    max_leaves=6,
)
MESSAGE = st.one_of(
    st.builds(lambda text: json.dumps({"type": "say", "text": text}), ANY_TEXT),
    st.builds(lambda extra: json.dumps({"type": "say", **extra}), st.dictionaries(ANY_TEXT, JSON_VALUE, max_size=2)),
    st.just(json.dumps({"type": "stop"})),
    st.builds(json.dumps, JSON_VALUE),
    ANY_TEXT,  # not JSON
    st.binary(max_size=40),  # a binary message
    st.just(json.dumps({"type": "say", "text": "x" * 5000})),  # past the message limit
)
ERROR_CODES = {"invalid_request", "invalid_message", "busy", "not_ready"}  # documented in docs/live.md


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(MESSAGE, min_size=1, max_size=6))
def test_any_data_channel_message_gets_a_documented_answer_and_keeps_the_history_valid(messages: list[Any]) -> None:
    async def scenario() -> tuple[Scene, list[str]]:
        async with Scene({}) as scene:
            for raw in messages:
                scene.session._on_message(raw)
                await asyncio.sleep(0.01)
            if scene.session._turn_task is not None:  # the last turn finishes (or fails) before the checks
                await asyncio.wait([scene.session._turn_task], timeout=30)
            session = await scene.pipeline.sessions.get(scene.session.session_id, scene.session.persona.name)
        return scene, [m.content for m in session.history]

    scene, history = asyncio.run(scenario())
    assert {e["code"] for e in scene.events("error")} <= ERROR_CODES, scene.events("error")
    assert [e["reason"] for e in scene.events("closed")] == ["the test is over"]  # never "an internal error"
    assert all(invalid_characters(text) is None for text in history)
    typed = [m["text"] for m in map(_said, messages) if m is not None]
    for text in history[::2]:  # every user turn kept is one that was sent and passed the checks
        assert any(checked_text(sent, 1000) == text for sent in typed if _passes(sent))


def _said(raw: Any) -> dict[str, Any] | None:
    try:
        message = json.loads(raw)
    except (TypeError, ValueError):
        return None
    ok = isinstance(message, dict) and message.get("type") == "say" and isinstance(message.get("text"), str)
    return message if ok else None


def _passes(text: str) -> bool:
    try:
        checked_text(text, 1000)
    except AvatarError:
        return False
    return True
