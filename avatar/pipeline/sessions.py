"""Conversation history per session: bounded in turns, in sessions, and in time."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from avatar.backends.base import ChatMessage

SESSION_ID_LENGTH = 32


@dataclass
class Session:
    id: str
    persona: str
    history: list[ChatMessage] = field(default_factory=list)
    last_used: float = field(default_factory=time.monotonic)


class SessionStore:
    """Sessions by id. An unknown, expired or other-persona id starts a new session."""

    def __init__(self, *, ttl_seconds: float = 1800, max_turns: int = 6, max_sessions: int = 1000) -> None:
        self.ttl = ttl_seconds
        self.max_turns = max_turns
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def get(self, session_id: str | None, persona: str) -> Session:
        self._expire()
        session = self._sessions.get(session_id) if session_id else None
        if session is None or session.persona != persona:
            session = Session(id=secrets.token_hex(SESSION_ID_LENGTH // 2), persona=persona)
        return session

    def record(self, session: Session, user_text: str, reply: str) -> None:
        """Append a finished turn (only finished turns enter the history)."""
        session.history += [ChatMessage("user", user_text), ChatMessage("assistant", reply)]
        del session.history[: max(0, len(session.history) - 2 * self.max_turns)]
        session.last_used = time.monotonic()
        self._sessions[session.id] = session
        self._sessions.move_to_end(session.id)
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)

    def _expire(self) -> None:
        now = time.monotonic()
        for sid in [sid for sid, s in self._sessions.items() if now - s.last_used > self.ttl]:
            del self._sessions[sid]

    def __len__(self) -> int:
        return len(self._sessions)
