"""Checking an SDP offer before any peer connection is made for it.

aiortc reads an offer leniently and trusts what it read: an offer without ``a=fingerprint`` reaches an
``assert`` in its DTLS transport, a candidate on port 99999 or at address 999.0.0.1 an ``OverflowError``
in ``sendto``, and a payload type past 127 is taken as it is; each is found only once the session runs,
as an exception in the log and a session left to time out. So the offer is parsed here with aiortc's own
parser (``SessionDescription.parse``) and the values it took on trust are checked: the DTLS fingerprints,
every ICE candidate's address, port, component and priority, the payload types, the media ports, and
the number of candidates (``MAX_CANDIDATES``). A bad offer is 400 ``invalid_sdp`` naming what is wrong,
before anything is started. The checks are ours (aiortc has none to call); they follow RFC 8866
(SDP), RFC 8839 (ICE candidates), RFC 8122 (fingerprints) and RFC 3550 (payload types).
"""

from __future__ import annotations

import ipaddress
import re

from aiortc.rtcdtlstransport import X509_DIGEST_ALGORITHMS
from aiortc.rtcicetransport import RTCIceCandidate
from aiortc.sdp import MediaDescription, SessionDescription

MAX_CANDIDATES = 64  # a browser offers a handful per network interface; thousands are a flood
DIGEST_BYTES = {"sha-256": 32, "sha-384": 48, "sha-512": 64}
MAX_PRIORITY = 2**32 - 1
MDNS_NAME = re.compile(r"^[0-9A-Za-z-]{1,63}\.local$")  # a browser hides its address behind one (RFC 8829)


def offer_problem(sdp: str) -> str | None:
    """What makes ``sdp`` unusable as an offer, as a sentence for the client; None when it is fine."""
    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:  # noqa: BLE001 - aiortc's parser raises many kinds (assert, ValueError, ...)
        return f"The SDP offer could not be read ({type(exc).__name__}{': ' + str(exc)[:120] if str(exc) else ''})."
    candidates = sum(len(media.ice_candidates) for media in description.media)
    if candidates > MAX_CANDIDATES:
        return f"The offer has {candidates} ICE candidates; at most {MAX_CANDIDATES} are taken."
    for index, media in enumerate(description.media):
        problem = _media_problem(media) or _fingerprint_problem(media)
        problem = problem or next(filter(None, map(_candidate_problem, media.ice_candidates)), None)
        if problem is not None:
            return f"Media section {index + 1} ({media.kind}) of the offer: {problem}."
    return None


def _media_problem(media: MediaDescription) -> str | None:
    for name, port in (("port", media.port), ("RTCP port", media.rtcp_port)):
        if port is not None and not 0 <= port <= 65535:
            return f"its {name} {port} is not a port (0-65535)"
    if media.host is not None and not _address(media.host):
        return f"its connection address {media.host[:60]!r} is not an IP address"
    if media.kind in ("audio", "video"):
        types = [*media.fmt, *(c.payloadType for c in media.rtp.codecs)]
        bad = next((t for t in types if not (isinstance(t, int) and 0 <= t <= 127)), None)
        if bad is not None:
            return f"its payload type {bad} is not one (0-127)"
    return None


def _fingerprint_problem(media: MediaDescription) -> str | None:
    fingerprints = media.dtls.fingerprints if media.dtls is not None else []
    if not fingerprints:
        return "it has no a=fingerprint (the DTLS certificate's fingerprint, which WebRTC requires)"
    usable = [f for f in fingerprints if f.algorithm.lower() in X509_DIGEST_ALGORITHMS]
    if not usable:
        return f"its a=fingerprint uses none of {', '.join(DIGEST_BYTES)}"
    for fingerprint in usable:
        size = DIGEST_BYTES[fingerprint.algorithm.lower()]
        if not re.fullmatch(rf"[0-9A-Fa-f]{{2}}(?::[0-9A-Fa-f]{{2}}){{{size - 1}}}", fingerprint.value):
            return f"its {fingerprint.algorithm} fingerprint is not {size} hex bytes separated by colons"
    return None


def _candidate_problem(candidate: RTCIceCandidate) -> str | None:
    shown = f"the ICE candidate {candidate.foundation[:32]!r}"
    if candidate.protocol.lower() not in ("udp", "tcp"):
        return f"{shown} has the transport {candidate.protocol[:20]!r} (udp or tcp)"
    if candidate.component not in (1, 2):
        return f"{shown} has the component {candidate.component} (1 or 2)"
    if not 0 <= candidate.priority <= MAX_PRIORITY:
        return f"{shown} has the priority {candidate.priority} (0 to {MAX_PRIORITY})"
    if not _address(candidate.ip) and not MDNS_NAME.match(candidate.ip):
        return f"{shown} has the address {candidate.ip[:60]!r}, which is not an IP address (or a .local name)"
    if not 1 <= candidate.port <= 65535 and not (candidate.protocol.lower() == "tcp" and candidate.port in (0, 9)):
        return f"{shown} has the port {candidate.port} (1-65535)"
    related = candidate.relatedPort
    if related is not None and not 0 <= related <= 65535:
        return f"{shown} has the related port {related} (0-65535)"
    if candidate.relatedAddress is not None and not _address(candidate.relatedAddress):
        return f"{shown} has the related address {candidate.relatedAddress[:60]!r}, which is not an IP address"
    return None


def _address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
