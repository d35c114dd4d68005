"""The live session's named turn-taking state: what still fits what the user has said since."""

from __future__ import annotations

import asyncio

import numpy as np

from avatar.server.live.taking import MERGE_GAP_S, Carried, EarlyReply, Speculation, with_carry
from avatar.types import ASR_SAMPLE_RATE


def test_a_carried_utterance_goes_first_with_a_short_gap() -> None:
    first, second = np.ones(100, np.float32), np.full(50, 2, np.float32)
    assert with_carry(second, None) is second
    merged = with_carry(second, Carried(first, shown=True))
    gap = int(MERGE_GAP_S * ASR_SAMPLE_RATE)
    assert merged.size == 100 + gap + 50
    assert (merged[:100] == 1).all() and (merged[100 : 100 + gap] == 0).all() and (merged[-50:] == 2).all()


def test_a_speculation_fits_only_its_own_utterance_after_the_same_carry() -> None:
    async def scenario() -> tuple[bool, bool, bool, bool]:
        carry = Carried(np.ones(10, np.float32), shown=False)
        task = asyncio.ensure_future(asyncio.sleep(0, result="words"))
        speculation = Speculation(3, carry, task)
        running = speculation.running
        await task
        same_audio_again = Carried(carry.audio, shown=False)  # equal, but another utterance carried
        return running, speculation.fits(3, carry), speculation.fits(4, carry), speculation.fits(3, same_audio_again)

    assert asyncio.run(scenario()) == (True, True, False, False)


def test_an_early_reply_holds_its_events_until_released_and_forgets_them_when_dropped() -> None:
    sent: list[tuple[str, dict[str, object]]] = []

    def send(event: str, **data: object) -> None:
        sent.append((event, data))

    kept = EarlyReply(1, np.zeros(10, np.float32), None, "Hi", ended=0.0)
    held = kept.sender(send)
    held("reply", text="Hello")
    assert sent == [] and kept.answers(1, None) and not kept.answers(2, None)
    kept.release(send)
    held("speaking", turn=1)
    assert sent == [("reply", {"text": "Hello"}), ("speaking", {"turn": 1})]

    dropped = EarlyReply(2, np.zeros(10, np.float32), Carried(np.zeros(5, np.float32), shown=True), "Hi", ended=0.0)
    assert dropped.shown
    late = dropped.sender(send)
    late("reply", text="gone")
    dropped.drop()
    late("speaking", turn=2)
    assert dropped.pending == [] and not dropped.answers(2, dropped.carry)
    assert len(sent) == 2
