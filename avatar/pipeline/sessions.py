"""Conversation history per session: bounded in turns, in sessions, and in time.

Turns read and write history through the ``SessionStore`` protocol, so where it lives is a
configuration choice: in this process's memory (one machine, the default) or in a store every replica
shares. Its methods are coroutines because a shared store answers over the network.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

from avatar.errors import InvalidRequestError
from avatar.pipeline.text import invalid_characters, plain_text
from avatar.types import ChatMessage
from avatar.visitor import remember

SESSION_ID_LENGTH = 32
SESSION_ID = re.compile(rf"^[0-9a-f]{{{SESSION_ID_LENGTH}}}$")


def new_session_id() -> str:
    return secrets.token_hex(SESSION_ID_LENGTH // 2)


def fresh_session(session_id: str | None, persona: str, owner: str | None = None) -> Session:
    """An empty session. It keeps a well-formed id it was asked for (ids are 128 random bits handed
    out by the server): a turn that follows another before that one has recorded anything — a
    barge-in — continues the same conversation. A malformed id, or none, gets a new one."""
    keep = session_id is not None and SESSION_ID.match(session_id) is not None
    return Session(id=session_id if keep and session_id else new_session_id(), persona=persona, owner=owner)


def kept_turn(user_text: str, reply: str) -> tuple[str, str]:
    """The turn a store keeps: a history holds only text that passed the entry points' checks, so one
    bad turn cannot break every later prompt of its session. What the user said must already be valid
    (InvalidRequestError otherwise: the turn is refused, not stored); what the model wrote is kept
    without the characters no text may hold."""
    problem = invalid_characters(user_text)
    if problem is not None:
        raise InvalidRequestError(f"The text {problem}; it is not kept in the conversation.")
    return user_text, plain_text(reply)


@dataclass
class Session:
    id: str
    persona: str
    history: list[ChatMessage] = field(default_factory=list)
    last_used: float = field(default_factory=time.monotonic)
    visitor: list[str] = field(default_factory=list)
    """What the visitor has said about themself (``avatar.visitor``): kept for the whole
    session, also once the turns that said it have left the history."""
    owner: str | None = None
    """The id of the API key whose conversation this is (None with keys off): another key's turn with
    this session's id starts a new session, so no key reads another's conversation."""


class SessionStore(Protocol):
    """Where sessions live. An unknown or expired id starts an empty session under that id
    (``fresh_session``); an id of another persona's session, or of another owner's, starts one under a
    new id."""

    max_turns: int

    async def get(self, session_id: str | None, persona: str, owner: str | None = None) -> Session:
        """The session with this id for this persona and owner, or a new one (not stored until a turn is
        recorded)."""
        ...

    async def record(self, session: Session, user_text: str, reply: str) -> None:
        """Append a finished (or interrupted) turn, keeping the newest ``max_turns`` turns, and note what
        the visitor said about themself in it."""
        ...

    async def amend_last(self, session: Session, user_text: str, reply: str, heard: str) -> bool:
        """When the session's newest turn is still ``user_text`` answered by ``reply``, keep only
        ``heard`` of that reply (drop the turn when nothing was heard); whether it was still there."""
        ...

    async def ping(self) -> None:
        """Return once the store answers; SessionStoreUnavailableError naming it otherwise. A turn asks
        before its work, so that an outage costs no rendering that would then be thrown away."""
        ...

    async def close(self) -> None: ...


class MemorySessionStore:
    """Sessions in this process's memory, oldest dropped past ``max_sessions``."""

    def __init__(self, *, ttl_seconds: float = 1800, max_turns: int = 6, max_sessions: int = 1000) -> None:
        self.ttl = ttl_seconds
        self.max_turns = max_turns
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    async def get(self, session_id: str | None, persona: str, owner: str | None = None) -> Session:
        self._expire()
        session = self._sessions.get(session_id) if session_id else None
        if session is None:
            return fresh_session(session_id, persona, owner)
        if session.persona != persona or session.owner != owner:
            return Session(id=new_session_id(), persona=persona, owner=owner)
        # A copy: a turn works on its own snapshot, and only record() changes what is stored.
        return Session(
            session.id, session.persona, list(session.history), session.last_used, list(session.visitor), owner
        )

    async def record(self, session: Session, user_text: str, reply: str) -> None:
        user_text, reply = kept_turn(user_text, reply)
        stored = self._sessions.get(session.id)
        history = list(stored.history) if stored is not None else []
        history += [ChatMessage("user", user_text), ChatMessage("assistant", reply)]
        del history[: max(0, len(history) - 2 * self.max_turns)]
        visitor = remember(stored.visitor if stored is not None else [], user_text)
        self._sessions[session.id] = Session(
            session.id, session.persona, history, time.monotonic(), visitor, session.owner
        )
        self._sessions.move_to_end(session.id)
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)

    async def amend_last(self, session: Session, user_text: str, reply: str, heard: str) -> bool:
        user_text, reply = kept_turn(user_text, reply)
        heard = plain_text(heard)
        stored = self._sessions.get(session.id)
        turn = [ChatMessage("user", user_text), ChatMessage("assistant", reply)]
        if stored is None or stored.persona != session.persona or stored.history[-2:] != turn:
            return False
        if stored.owner != session.owner:
            return False
        kept = [turn[0], ChatMessage("assistant", heard)] if heard else []
        self._sessions[session.id] = Session(
            session.id, session.persona, stored.history[:-2] + kept, stored.last_used, stored.visitor, stored.owner
        )
        return True

    async def ping(self) -> None:
        return None  # this process's memory always answers

    async def close(self) -> None:
        self._sessions.clear()

    def _expire(self) -> None:
        now = time.monotonic()
        for sid in [sid for sid, s in self._sessions.items() if now - s.last_used > self.ttl]:
            del self._sessions[sid]

    def __len__(self) -> int:
        return len(self._sessions)
