"""SDP offers checked before a peer connection is made (``avatar.server.live.offers``): a real offer from
aiortc (the microphone, a video section to receive, the events channel, with its gathered candidates)
passes; each defect a probe sent, written into that offer, is named."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiortc import RTCPeerConnection

from avatar.bench.live_client import Microphone
from avatar.server.live.offers import MAX_CANDIDATES, offer_problem


async def _offer() -> str:
    pc = RTCPeerConnection()
    pc.addTransceiver(Microphone(), direction="sendrecv")
    pc.addTransceiver("video", direction="recvonly")
    pc.createDataChannel("events")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp


@pytest.fixture(scope="module")
def offer() -> str:
    sdp = asyncio.run(_offer())
    assert "a=fingerprint:sha-256" in sdp and "a=candidate:" in sdp and "a=rtpmap:" in sdp  # what is altered
    return sdp


def _candidate(sdp: str) -> str:
    return next(line for line in sdp.splitlines() if line.startswith("a=candidate:"))


def _with_candidate_field(sdp: str, field: int, value: str) -> str:
    line = _candidate(sdp)
    bits = line.split(" ")
    bits[field] = value
    return sdp.replace(line, " ".join(bits), 1)


def test_a_real_offer_passes(offer: str) -> None:
    assert offer_problem(offer) is None


@pytest.mark.parametrize(
    ("alter", "says"),
    [
        (lambda sdp: re.sub(r"a=fingerprint:[^\r\n]*\r\n", "", sdp), "no a=fingerprint"),
        (lambda sdp: re.sub(r"(a=fingerprint:sha-256 )\S+", r"\1AB:CD", sdp), "not 32 hex bytes"),
        (lambda sdp: re.sub(r"a=fingerprint:sha-\d+", "a=fingerprint:md5", sdp), "uses none of"),
        (lambda sdp: _with_candidate_field(sdp, 5, "99999"), "port 99999"),
        (lambda sdp: _with_candidate_field(sdp, 4, "999.0.0.1"), "'999.0.0.1'"),
        (lambda sdp: _with_candidate_field(sdp, 1, "7"), "component 7"),
        (lambda sdp: _with_candidate_field(sdp, 3, str(2**40)), "priority"),
        (lambda sdp: re.sub(r"a=rtpmap:(\d+) opus", "a=rtpmap:99999999999 opus", sdp, count=1), "payload type"),
        (lambda sdp: re.sub(r"(m=audio \d+ \S+ )(\d+)", r"\g<1>200 \2", sdp, count=1), "payload type 200"),
        (
            lambda sdp: sdp.replace(_candidate(sdp), "\r\n".join([_candidate(sdp)] * 3000), 1),
            f"ICE candidates; at most {MAX_CANDIDATES}",
        ),
        (lambda sdp: sdp.replace("m=audio", "m=audio 70000 X\r\nm=audio", 1), "could not be read"),
    ],
)
def test_each_defect_is_named(offer: str, alter: object, says: str) -> None:
    altered = alter(offer)  # type: ignore[operator]
    assert altered != offer
    problem = offer_problem(altered)
    assert problem is not None and says in problem, problem


def test_the_candidate_limit_is_documented() -> None:
    assert MAX_CANDIDATES == 64  # docs/api.md says so
