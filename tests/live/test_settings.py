"""Live mode's settings: wrong values stop start-up with a message naming the setting and the fix."""

from __future__ import annotations

import pytest

from avatar.config import load_settings
from avatar.errors import ConfigError
from avatar.server.live.ice import client_ice_servers, configuration


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({"AVATAR_LIVE_ICE_SERVERS": "http://stun.example.org"}, "AVATAR_LIVE_ICE_SERVERS"),
        ({"AVATAR_LIVE_ICE_SERVERS": "turn:turn.example.org:3478"}, "AVATAR_LIVE_ICE_USERNAME"),
        ({"AVATAR_LIVE_HOST_ADDRESSES": "127.0.0.1,localhost"}, "AVATAR_LIVE_HOST_ADDRESSES"),
        ({"AVATAR_LIVE_BARGE_IN_THRESHOLD": "0.3"}, "AVATAR_LIVE_BARGE_IN_THRESHOLD"),
        ({"AVATAR_LIVE_END_SILENCE_MS": "20"}, "AVATAR_LIVE_END_SILENCE_MS"),
        ({"AVATAR_LIVE_TURN_DETECTOR": "vad"}, "AVATAR_LIVE_TURN_DETECTOR"),
        ({"AVATAR_LIVE_UNSURE_SILENCE_MS": "100"}, "AVATAR_LIVE_UNSURE_SILENCE_MS"),  # under the finished wait
        ({"AVATAR_LIVE_UNFINISHED_SILENCE_MS": "500"}, "AVATAR_LIVE_UNSURE_SILENCE_MS"),  # under the unsure one
        ({"AVATAR_MAX_LIVE_SESSIONS": "-1"}, "AVATAR_MAX_LIVE_SESSIONS"),
        ({"AVATAR_LIVE_MAX_UTTERANCE_SECONDS": "90"}, "AVATAR_LIVE_MAX_UTTERANCE_SECONDS"),
    ],
)
def test_a_wrong_live_setting_is_named(environ: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(environ)
    assert names in error.value.message


def test_ice_servers_for_the_server_and_for_the_page() -> None:
    settings = load_settings(
        {
            "AVATAR_LIVE_ICE_SERVERS": "stun:stun.example.org:3478, turn:turn.example.org:3478?transport=udp",
            "AVATAR_LIVE_ICE_USERNAME": "avatar",
            "AVATAR_LIVE_ICE_CREDENTIAL": "secret",
        }
    )
    servers = configuration(settings).iceServers or []
    assert [s.urls for s in servers] == ["stun:stun.example.org:3478", "turn:turn.example.org:3478?transport=udp"]
    assert servers[1].username == "avatar" and servers[1].credential == "secret"
    assert client_ice_servers(settings) == [
        {"urls": "stun:stun.example.org:3478"},
        {"urls": "turn:turn.example.org:3478?transport=udp", "username": "avatar", "credential": "secret"},
    ]
