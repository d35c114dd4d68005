"""How the server's end of a live connection is reached: its ICE configuration.

The server offers a host candidate on every network interface and on loopback (aiortc alone leaves
loopback out, but a browser on the same machine may use it), plus a server-reflexive one per STUN
server and a relayed one per TURN server, all gathered before the answer is sent (aiortc does not
trickle candidates). A deployment behind NAT needs UDP open to it, or a TURN server both ends can reach
(``AVATAR_LIVE_ICE_SERVERS``). ``AVATAR_LIVE_HOST_ADDRESSES`` limits the host candidates to the
addresses given (127.0.0.1 for a machine that must not use its network; a LAN address for a kiosk).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

from avatar.config import Settings

_default_host_addresses = aioice.ice.get_host_addresses


def configuration(settings: Settings) -> RTCConfiguration:
    servers = []
    for url in settings.ice_server_urls:
        if url.startswith(("turn:", "turns:")):
            servers.append(
                RTCIceServer(url, settings.live_ice_username, settings.live_ice_credential.get_secret_value())
            )
        else:
            servers.append(RTCIceServer(url))
    return RTCConfiguration(iceServers=servers)


def client_ice_servers(settings: Settings) -> list[dict[str, object]]:
    """The same servers in the browser's ``RTCConfiguration.iceServers`` shape."""
    out: list[dict[str, object]] = []
    for url in settings.ice_server_urls:
        server: dict[str, object] = {"urls": url}
        if url.startswith(("turn:", "turns:")):
            server |= {
                "username": settings.live_ice_username,
                "credential": settings.live_ice_credential.get_secret_value(),
            }
        out.append(server)
    return out


def use_host_addresses(addresses: Sequence[str]) -> None:
    """Offer host candidates on ``addresses`` only (empty: every interface, and loopback).

    aiortc has no option for this, so aioice's address lookup is replaced for the whole process; the
    service is the only user of aiortc in its process."""

    def chosen(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        if not addresses:
            found = _default_host_addresses(use_ipv4, use_ipv6)
            return found + (["127.0.0.1"] if use_ipv4 and "127.0.0.1" not in found else [])
        versions = {4} if use_ipv4 and not use_ipv6 else {6} if use_ipv6 and not use_ipv4 else {4, 6}
        return [a for a in addresses if ipaddress.ip_address(a).version in versions]

    aioice.ice.get_host_addresses = chosen
