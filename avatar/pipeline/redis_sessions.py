"""Conversation sessions in Redis, so that every replica of the service sees the same history.

A session is one Redis list, ``avatar:session:<id>``: one JSON entry per turn (persona, what the user
said, what the persona answered), the newest last; what the visitor said about themself is one JSON
string beside it, ``avatar:visitor:<id>``. Recording a turn appends, trims to the newest
``max_turns``, writes the visitor's notes and renews both times to live in one MULTI/EXEC
transaction, so two replicas recording turns of the same session at once both land and the bound
still holds (the notes are those of the later one). Reading is one LRANGE and one GET. An id
that is not of the shape this store hands out never reaches Redis; an unknown or expired id starts an
empty session under that id, another persona's a new one, as in ``MemorySessionStore``.

Redis not answering is ``SessionStoreUnavailableError`` (503, ``Retry-After``) naming where Redis was
expected, never a stack trace. Redis holds the sessions in its memory: bound it with ``maxmemory`` and
a ``volatile-ttl`` policy (every key here expires), see docs/deploy.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis.asyncio as redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from avatar.errors import SessionStoreUnavailableError
from avatar.pipeline.sessions import SESSION_ID, Session, fresh_session, kept_turn, new_session_id
from avatar.pipeline.text import plain_text
from avatar.types import ChatMessage
from avatar.visitor import MAX_NOTES, remember

KEY_PREFIX = "avatar:session:"
VISITOR_PREFIX = "avatar:visitor:"
# A Redis that is down answers "connection refused" at once; one that is unreachable must not hold a
# turn for long. A blip (a restart, a failover) is retried twice, quickly.
TIMEOUT_S = 2.0
RETRIES = 2


class RedisSessionStore:
    """Sessions in Redis (``url``: ``redis://[user:password@]host:port/db``, ``rediss://…``, ``unix://…``)."""

    def __init__(
        self,
        url: str,
        *,
        ttl_seconds: float = 1800,
        max_turns: int = 6,
        key_prefix: str = KEY_PREFIX,
        visitor_prefix: str = VISITOR_PREFIX,
    ) -> None:
        self.ttl = ttl_seconds
        self.max_turns = max_turns
        self.key_prefix = key_prefix
        self.visitor_prefix = visitor_prefix
        self.client: redis.Redis = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=TIMEOUT_S,
            socket_timeout=TIMEOUT_S,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), RETRIES),
        )
        self.where = _describe(self.client.connection_pool.connection_kwargs)

    def key(self, session_id: str) -> str:
        return self.key_prefix + session_id

    @property
    def _kept(self) -> int:
        # At least one turn stays stored even when no history is used (max_turns 0): it holds the
        # session's persona, so the id keeps working, as it does in memory.
        return max(1, self.max_turns)

    async def get(self, session_id: str | None, persona: str, owner: str | None = None) -> Session:
        if not session_id or not SESSION_ID.match(session_id):
            # Nothing to read, but the turn will be recorded here: if Redis is gone, say so now rather
            # than after the models have done the turn's work.
            await self.ping()
            return Session(id=new_session_id(), persona=persona, owner=owner)
        with self._answering():
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.lrange(self.key(session_id), -self._kept, -1)
                pipe.get(self.visitor_prefix + session_id)
                raw, notes = await pipe.execute()
        turns = [turn for turn in map(_decode, raw) if turn is not None]
        if not turns:
            return fresh_session(session_id, persona, owner)
        if turns[-1]["persona"] != persona or turns[-1].get("owner") != owner:
            return Session(id=new_session_id(), persona=persona, owner=owner)
        history: list[ChatMessage] = []
        for turn in turns[-self.max_turns :] if self.max_turns else []:
            if turn["persona"] == persona:
                history += [ChatMessage("user", turn["user"]), ChatMessage("assistant", turn["assistant"])]
        return Session(id=session_id, persona=persona, history=history, visitor=_decode_notes(notes), owner=owner)

    async def record(self, session: Session, user_text: str, reply: str) -> None:
        user_text, reply = kept_turn(user_text, reply)
        entry = _entry(session, user_text, reply)
        key = self.key(session.id)
        notes = remember(session.visitor, user_text)
        ttl_ms = max(1, round(self.ttl * 1000))
        with self._answering():
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.rpush(key, entry)
                pipe.ltrim(key, -self._kept, -1)
                pipe.pexpire(key, ttl_ms)
                if notes:
                    pipe.set(self.visitor_prefix + session.id, json.dumps(notes), px=ttl_ms)
                else:
                    pipe.pexpire(self.visitor_prefix + session.id, ttl_ms)
                await pipe.execute()

    async def amend_last(self, session: Session, user_text: str, reply: str, heard: str) -> bool:
        if not SESSION_ID.match(session.id):
            return False
        user_text, reply = kept_turn(user_text, reply)
        heard = plain_text(heard)
        replacement = _entry(session, user_text, heard) if heard else ""
        with self._answering():
            done = await self.client.eval(
                _AMEND_LAST, 1, self.key(session.id), _entry(session, user_text, reply), replacement
            )
        return bool(done)

    async def ping(self) -> None:
        """Return once Redis answers; SessionStoreUnavailableError naming it otherwise."""
        with self._answering():
            await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()

    @contextmanager
    def _answering(self) -> Iterator[None]:
        try:
            yield
        except (RedisError, OSError) as exc:
            raise SessionStoreUnavailableError(
                f"Conversation history is unavailable: Redis at {self.where} (AVATAR_REDIS_URL) does not answer "
                f"({type(exc).__name__}: {exc}). Retry shortly."
            ) from exc


# The newest entry replaced (or removed, for an empty replacement) only if it is still the one given,
# in one step: a turn recorded meanwhile by another replica is never overwritten.
_AMEND_LAST = """
if redis.call('LINDEX', KEYS[1], -1) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('RPOP', KEYS[1]) else redis.call('LSET', KEYS[1], -1, ARGV[2]) end
return 1
"""


def _entry(session: Session, user_text: str, reply: str) -> str:
    entry = {"persona": session.persona, "user": user_text, "assistant": reply}
    if session.owner is not None:  # with keys off, entries stay as they were written before owners
        entry["owner"] = session.owner
    return json.dumps(entry)


def _decode(raw: str | bytes) -> dict[str, str] | None:
    """A stored turn, or None for an entry this store did not write (it is then ignored)."""
    try:
        turn = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(turn, dict) or not all(isinstance(turn.get(k), str) for k in ("persona", "user", "assistant")):
        return None
    return turn


def _decode_notes(raw: str | bytes | None) -> list[str]:
    """The visitor's stored notes ([] for none, or for a value this store did not write)."""
    if raw is None:
        return []
    try:
        notes = json.loads(raw)
    except ValueError:
        return []
    if not isinstance(notes, list):
        return []
    return [n for n in notes if isinstance(n, str)][-MAX_NOTES:]


def _describe(kwargs: dict[str, Any]) -> str:
    """Where Redis is, for messages: host, port and database, never the password."""
    if kwargs.get("path"):
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
