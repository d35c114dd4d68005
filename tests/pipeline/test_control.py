"""What the user heard of a reply that was stopped: whole pieces, then the cut one up to its word under way."""

from __future__ import annotations

from avatar.pipeline.control import SpokenPiece, SpokenReply

REPLY = SpokenReply(
    [
        SpokenPiece("I flew the Shuttle twice,", 0.0, 2.0),
        SpokenPiece("and I would go again tomorrow.", 2.0, 4.4),
    ]
)


def test_a_stop_keeps_the_pieces_played_and_the_words_under_way() -> None:
    assert REPLY.heard(0.0) == ""
    assert REPLY.heard(0.1) == "I…"  # the first word had begun
    assert REPLY.heard(1.0) == "I flew the…"
    assert REPLY.heard(2.0) == "I flew the Shuttle twice,"
    assert REPLY.heard(2.5) == "I flew the Shuttle twice, and I…"
    assert REPLY.heard(9.0) == "I flew the Shuttle twice, and I would go again tomorrow."
