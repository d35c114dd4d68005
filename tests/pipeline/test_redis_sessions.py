"""Sessions in a real Redis (Debian's redis-server, started here): the same behaviour as in memory, shared
by several stores at once (as by several replicas), and clear errors when Redis is not there."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
from scripted import ScriptedChat

from avatar.bench.cluster import MissingProgramError, RedisServer, program
from avatar.bench.http_service import free_port
from avatar.config import PROJECT_ROOT, load_settings
from avatar.errors import InvalidRequestError, ModelError, SessionStoreUnavailableError
from avatar.fmp4 import video_format
from avatar.personas import PersonaStore
from avatar.pipeline import Pipeline
from avatar.pipeline.pipeline import TurnRequest
from avatar.pipeline.redis_sessions import KEY_PREFIX, RedisSessionStore
from avatar.pipeline.sessions import MemorySessionStore, Session, SessionStore
from avatar.pipeline.stages import AnimateStage, RespondStage, SpeakStage, TranscribeStage
from avatar.runtime import Runtime, session_store


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    try:
        program("redis-server")
    except MissingProgramError as exc:
        pytest.fail(str(exc))
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def flushed(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    client.flushdb()
    yield client
    client.close()


StoreFactory = Callable[..., SessionStore]


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[StoreFactory]:
    """Builds stores of one kind; the same tests run against both, so Redis behaves as memory does."""

    def make(*, ttl_seconds: float, max_turns: int) -> SessionStore:
        if request.param == "memory":
            return MemorySessionStore(ttl_seconds=ttl_seconds, max_turns=max_turns)
        return RedisSessionStore(redis_server.url, ttl_seconds=ttl_seconds, max_turns=max_turns)

    redis_server.client().flushdb()
    yield make


async def _use(store: SessionStore, body: Callable[[SessionStore], Awaitable[object]]) -> object:
    try:
        return await body(store)
    finally:
        await store.close()  # a redis.asyncio client belongs to the loop that used it


def test_history_kept_per_session_and_persona(make_store: StoreFactory) -> None:
    async def body(store: SessionStore) -> None:
        first = await store.get(None, "eileen")
        assert first.history == [] and len(first.id) == 32
        await store.record(first, "My name is Sam.", "Hello Sam.")
        again = await store.get(first.id, "eileen")
        assert again.id == first.id
        assert [(m.role, m.content) for m in again.history] == [
            ("user", "My name is Sam."),
            ("assistant", "Hello Sam."),
        ]
        other_persona = await store.get(first.id, "someone-else")
        assert other_persona.id != first.id and other_persona.history == []
        for malformed in ("not-an-id", "x" * 5000, "", "A" * 32):
            fresh = await store.get(malformed, "eileen")
            assert fresh.id not in (first.id, malformed) and len(fresh.id) == 32 and fresh.history == []
        # An unknown id of the right shape starts an empty conversation under that id (a barge-in's
        # turn arrives before the turn it interrupts has recorded anything).
        adopted = await store.get("0" * 32, "eileen")
        assert adopted.id == "0" * 32 and adopted.history == []

    asyncio.run(_use(make_store(ttl_seconds=60, max_turns=6), body))


def test_a_history_holds_only_text_that_passed_the_checks(make_store: StoreFactory) -> None:
    async def body(store: SessionStore) -> None:
        session = await store.get(None, "eileen")
        for bad in ("\ud800", "a\x00b", "bell\x07"):
            with pytest.raises(InvalidRequestError, match="not kept"):
                await store.record(session, bad, "An answer.")
        await store.record(session, "Hello.", "Hi\x00 there\ud800.")  # what a model wrote is cleaned
        kept = await store.get(session.id, "eileen")
        assert [m.content for m in kept.history] == ["Hello.", "Hi there."]
        assert await store.amend_last(kept, "Hello.", "Hi\x00 there\ud800.", "Hi\x07")
        amended = await store.get(session.id, "eileen")
        assert [m.content for m in amended.history] == ["Hello.", "Hi"]

    asyncio.run(_use(make_store(ttl_seconds=60, max_turns=6), body))


def test_a_session_is_its_owners(make_store: StoreFactory) -> None:
    """Session ids are bound to the key that made them: another key (or none) with the same id starts a
    session of its own under a new id and reads nothing of the first."""

    async def body(store: SessionStore) -> None:
        mine = await store.get(None, "eileen", "key-a")
        await store.record(mine, "My name is Sam.", "Hello Sam.")
        for other in ("key-b", None):
            theirs = await store.get(mine.id, "eileen", other)
            assert theirs.id != mine.id and theirs.history == [] and theirs.visitor == []
        again = await store.get(mine.id, "eileen", "key-a")
        assert again.id == mine.id and [m.content for m in again.history] == ["My name is Sam.", "Hello Sam."]
        assert await store.amend_last(again, "My name is Sam.", "Hello Sam.", "Hello")
        assert [m.content for m in (await store.get(mine.id, "eileen", "key-a")).history][-1] == "Hello"

    asyncio.run(_use(make_store(ttl_seconds=60, max_turns=6), body))


def test_history_bounded_to_max_turns(make_store: StoreFactory) -> None:
    async def body(store: SessionStore) -> None:
        session = await store.get(None, "eileen")
        for k in range(5):
            await store.record(session, f"question {k}", f"answer {k}")
        kept = await store.get(session.id, "eileen")
        assert [m.content for m in kept.history] == ["question 3", "answer 3", "question 4", "answer 4"]

    asyncio.run(_use(make_store(ttl_seconds=60, max_turns=2), body))


def test_a_reply_heard_in_part_is_amended_only_while_it_is_the_newest(make_store: StoreFactory) -> None:
    async def body(store: SessionStore) -> None:
        session = await store.get(None, "eileen")
        await store.record(session, "Hi", "Hello there.")
        await store.record(session, "Tell me a story.", "Once upon a time there was a shuttle. It flew.")
        # The user stopped the video after "Once upon a time…": the history keeps that much.
        assert await store.amend_last(
            session, "Tell me a story.", "Once upon a time there was a shuttle. It flew.", "Once upon a time…"
        )
        kept = await store.get(session.id, "eileen")
        assert [m.content for m in kept.history] == ["Hi", "Hello there.", "Tell me a story.", "Once upon a time…"]
        # Not the newest turn any more (or not this one): nothing changes.
        assert not await store.amend_last(
            session, "Tell me a story.", "Once upon a time there was a shuttle. It flew.", ""
        )
        await store.record(session, "And then?", "Then it landed.")
        assert not await store.amend_last(session, "Tell me a story.", "Once upon a time…", "Once…")
        assert not await store.amend_last(await store.get(None, "eileen"), "And then?", "Then it landed.", "")
        # Nothing heard at all: the turn is dropped, as an interrupted turn with nothing heard is never kept.
        assert await store.amend_last(session, "And then?", "Then it landed.", "")
        kept = await store.get(session.id, "eileen")
        assert [m.content for m in kept.history] == ["Hi", "Hello there.", "Tell me a story.", "Once upon a time…"]

    asyncio.run(_use(make_store(ttl_seconds=60, max_turns=6), body))


def test_no_history_still_keeps_the_session(make_store: StoreFactory) -> None:
    async def body(store: SessionStore) -> None:
        session = await store.get(None, "eileen")
        await store.record(session, "hi", "hello")
        again = await store.get(session.id, "eileen")
        assert again.id == session.id and again.history == []

    asyncio.run(_use(make_store(ttl_seconds=60, max_turns=0), body))


def test_sessions_expire(make_store: StoreFactory) -> None:
    async def body(store: SessionStore) -> None:
        session = await store.get(None, "eileen")
        await store.record(session, "hi", "hello")
        assert (await store.get(session.id, "eileen")).id == session.id
        await asyncio.sleep(0.5)
        expired = await store.get(session.id, "eileen")
        assert expired.history == []

    asyncio.run(_use(make_store(ttl_seconds=0.3, max_turns=6), body))


def test_stored_with_ttl_and_trimmed_in_redis(redis_server: RedisServer, flushed: redis.Redis) -> None:
    async def body(store: SessionStore) -> str:
        session = await store.get(None, "eileen")
        for k in range(4):
            await store.record(session, f"q{k}", f"a{k}")
        return session.id

    sid = str(asyncio.run(_use(RedisSessionStore(redis_server.url, ttl_seconds=90, max_turns=3), body)))
    key = KEY_PREFIX + sid
    assert flushed.llen(key) == 3
    assert 0 < flushed.pttl(key) <= 90_000
    assert flushed.keys("*") == [key]  # one key per session, nothing else


def test_two_replicas_recording_one_session_at_once_lose_nothing(
    redis_server: RedisServer, flushed: redis.Redis
) -> None:
    """Two stores (two replicas' clients) append to the same session concurrently: every turn lands,
    in a consistent list, and the bound holds for both."""

    async def body() -> tuple[str, list[str]]:
        a = RedisSessionStore(redis_server.url, ttl_seconds=60, max_turns=500)
        b = RedisSessionStore(redis_server.url, ttl_seconds=60, max_turns=500)
        try:
            session = await a.get(None, "eileen")

            async def replica(store: RedisSessionStore, name: str) -> None:
                for k in range(60):
                    await store.record(session, f"{name}-{k}", "ok")

            await asyncio.gather(replica(a, "a"), replica(b, "b"))
            seen = await b.get(session.id, "eileen")
            return session.id, [m.content for m in seen.history if m.role == "user"]
        finally:
            await a.close()
            await b.close()

    sid, users = asyncio.run(body())
    assert sorted(users) == sorted([f"a-{k}" for k in range(60)] + [f"b-{k}" for k in range(60)])
    assert [u for u in users if u.startswith("a-")] == [f"a-{k}" for k in range(60)]  # each replica's order kept

    async def bounded() -> int:
        stores = [RedisSessionStore(redis_server.url, ttl_seconds=60, max_turns=5) for _ in range(3)]
        try:
            session = await stores[0].get(sid, "eileen")
            await asyncio.gather(
                *(s.record(session, f"x{i}-{k}", "ok") for i, s in enumerate(stores) for k in range(20))
            )
            return len((await stores[1].get(sid, "eileen")).history)
        finally:
            for s in stores:
                await s.close()

    assert asyncio.run(bounded()) == 10
    assert flushed.llen(KEY_PREFIX + sid) == 5


def test_entries_not_written_by_the_store_are_ignored(redis_server: RedisServer, flushed: redis.Redis) -> None:
    sid = "ab" * 16
    flushed.rpush(KEY_PREFIX + sid, "not json", '{"persona": "eileen"}')

    async def body(store: SessionStore) -> object:
        return await store.get(sid, "eileen")

    session = asyncio.run(_use(RedisSessionStore(redis_server.url), body))
    assert session.history == []  # type: ignore[attr-defined]  # junk is no history (the id may go on)


def test_unreachable_redis_is_a_503_naming_it(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    store = RedisSessionStore(f"redis://:secret@127.0.0.1:{port}/2")

    async def body(store: SessionStore) -> None:
        started = time.monotonic()
        with pytest.raises(SessionStoreUnavailableError) as caught:
            await store.get("ab" * 16, "eileen")
        assert time.monotonic() - started < 10  # refused at once, retried briefly, not hung
        error = caught.value
        assert error.status == 503 and error.code == "session_store_unavailable"
        assert error.headers["Retry-After"].isdigit()
        assert f"127.0.0.1:{port}/2" in error.message and "AVATAR_REDIS_URL" in error.message
        assert "secret" not in error.message
        with pytest.raises(SessionStoreUnavailableError):  # a new session too: its turn could not be kept
            await store.get(None, "eileen")
        with pytest.raises(SessionStoreUnavailableError):
            await store.record(Session(id="cd" * 16, persona="eileen"), "hi", "hello")

    asyncio.run(_use(store, body))


def test_redis_restart_mid_flight_then_recovers(tmp_path: Path) -> None:
    """A store whose Redis goes away answers 503 while it is gone and works again once it is back,
    without being rebuilt (its pooled connections are replaced)."""
    server = RedisServer(tmp_path / "redis").start()
    store = RedisSessionStore(server.url)

    async def body(store: SessionStore) -> None:
        session = await store.get(None, "eileen")
        await store.record(session, "one", "1")
        server.stop()
        with pytest.raises(SessionStoreUnavailableError):
            await store.get(session.id, "eileen")
        await asyncio.to_thread(server.start)  # same port; persistence is off, so it comes back empty
        await store.record(session, "two", "2")
        assert [m.content for m in (await store.get(session.id, "eileen")).history] == ["two", "2"]

    try:
        asyncio.run(_use(store, body))
    finally:
        server.stop()


def test_runtime_chooses_the_store_from_settings(redis_server: RedisServer) -> None:
    assert isinstance(session_store(load_settings({})), MemorySessionStore)
    chosen = session_store(load_settings({"AVATAR_REDIS_URL": redis_server.url, "AVATAR_SESSION_TTL_SECONDS": "77"}))
    assert isinstance(chosen, RedisSessionStore) and chosen.ttl == 77
    asyncio.run(chosen.close())


def test_runtime_fails_start_up_naming_an_unreachable_redis(tmp_path: Path) -> None:
    port = free_port()
    settings = load_settings({"AVATAR_REDIS_URL": f"redis://127.0.0.1:{port}/0"}, output_dir=tmp_path)

    async def body() -> Runtime:
        async with Runtime(settings, kinds=()) as runtime:
            with pytest.raises(ModelError, match=rf"Redis at 127\.0\.0\.1:{port}/0 \(AVATAR_REDIS_URL\)"):
                await runtime.ready()
            return runtime

    runtime = asyncio.run(body())
    assert runtime.state == "failed" and runtime.error and "AVATAR_REDIS_URL" in runtime.error


def test_runtime_with_redis_ready_and_sharing(redis_server: RedisServer, flushed: redis.Redis, tmp_path: Path) -> None:
    settings = load_settings({"AVATAR_REDIS_URL": redis_server.url}, output_dir=tmp_path)

    async def body() -> str:
        async with Runtime(settings, kinds=()) as runtime:
            await runtime.ready()
            session = await runtime.sessions.get(None, "eileen")
            await runtime.sessions.record(session, "hello", "hi")
            return session.id

    sid = asyncio.run(body())
    assert flushed.llen(KEY_PREFIX + sid) == 1


@pytest.mark.parametrize(
    "url",
    ["http://localhost:6379", "localhost:6379", "redis://", "redis://host:99999/0", "redis://host:0"],
)
def test_bad_redis_url_is_a_config_error_that_hides_the_url(url: str) -> None:
    from avatar.errors import ConfigError

    with pytest.raises(ConfigError, match="AVATAR_REDIS_URL") as caught:
        load_settings({"AVATAR_REDIS_URL": url.replace("host", "user:pw@host")})
    assert "pw" not in caught.value.message


def test_what_the_visitor_said_about_themself_outlives_the_history(make_store: StoreFactory) -> None:
    async def body(store: SessionStore) -> None:
        session = await store.get(None, "eileen")
        await store.record(session, "Hello! My name is Tomasz and I'm a teacher from Kraków.", "Nice to meet you!")
        for k in range(3):  # the introduction leaves the history (two turns kept)
            session = await store.get(session.id, "eileen")
            await store.record(session, f"Question {k}?", f"Answer {k}.")
        kept = await store.get(session.id, "eileen")
        assert kept.history[0].content == "Question 1?"
        assert kept.visitor == ["Your name is Tomasz.", "You are a teacher from Kraków."]
        await store.record(kept, "Actually, call me Tom.", "All right, Tom.")
        assert (await store.get(session.id, "eileen")).visitor == [
            "You are a teacher from Kraków.",
            "Your name is Tom.",
        ]
        # Another persona's session, or another session, knows nothing of it.
        assert (await store.get(session.id, "someone-else")).visitor == []
        assert (await store.get(None, "eileen")).visitor == []

    asyncio.run(_use(make_store(ttl_seconds=60, max_turns=2), body))


def test_a_turn_checks_the_store_before_its_work(tmp_path: Path) -> None:
    """Redis gone when a turn's work is due: the turn is refused before a model is called (before, the
    reply was rendered and then thrown away when its history could not be kept)."""
    chat = ScriptedChat("An answer nobody will hear.")
    unused = SimpleNamespace(name="never called")  # the other models: the turn must not reach them
    store = RedisSessionStore(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    personas = PersonaStore(PROJECT_ROOT / "assets" / "personas")
    pipeline = Pipeline(
        transcribe=TranscribeStage(unused),
        respond=RespondStage(chat),
        speak=SpeakStage(unused),
        animate=AnimateStage(unused),
        personas=personas,
        sessions=store,
    )
    persona = personas.get(pipeline.default_persona)
    request = TurnRequest(persona, Session("ab" * 16, persona.name), None, "Hello?", video_format(None), 0.0)

    async def body(store: SessionStore) -> None:
        with pytest.raises(SessionStoreUnavailableError):
            await pipeline.run_request(request, tmp_path / "turn")

    asyncio.run(_use(store, body))
    assert chat.seen == [] and not (tmp_path / "turn").exists()
