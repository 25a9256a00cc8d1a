"""The SSRF guard: resolve the upstream host, refuse internal addresses, connect to the address checked.

The check lives in the connection layer (an httpcore network backend), so it runs for every new TCP
connection whatever the URL, and the socket is opened to the very IP address that was checked: a DNS
answer cannot change between the check and the connect (no rebinding window). TLS still uses the URL's
host name for SNI and certificate verification, and the Host header is the URL's.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio
import httpcore

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class BlockedAddress(Exception):
    """The upstream host resolved to an address the pack may not reach. Raised before connecting."""


def is_internal(address: str | IPAddress) -> bool:
    """True for any address that is not plainly public: private, loopback, link-local (cloud metadata),
    multicast, reserved, unspecified, shared (CGNAT), and IPv6 forms embedding such an IPv4 address
    (IPv4-mapped, 6to4, Teredo, NAT64)."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return True
        if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d is a.b.c.d
            return is_internal(ip.ipv4_mapped)
        embedded = [ip.sixtofour, ip.teredo[1] if ip.teredo else None]
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if any(v4 is not None and is_internal(v4) for v4 in embedded):
            return True
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for `host` (an IP literal resolves to itself)."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in seen:
            seen.append(address)
    return seen


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that resolves, checks and pins every TCP connection.

    `allow_private` turns the refusal off (for an API on the operator's own network); resolution and
    pinning still apply. `resolver` is replaceable for tests.
    """

    def __init__(self, *, allow_private: bool, resolver: Resolver | None = None) -> None:
        self.allow_private = allow_private
        self.resolver = resolver or system_resolver
        self._inner = httpcore.AnyIOBackend()

    async def addresses(self, host: str, port: int, limit: float | None) -> list[str]:
        """The checked addresses for `host`, or BlockedAddress if ANY of them is internal."""
        try:
            with anyio.fail_after(limit):
                addresses = await self.resolver(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout("name resolution timed out") from None
        except OSError:
            raise httpcore.ConnectError("name resolution failed") from None
        if not addresses:
            raise httpcore.ConnectError("name resolution returned no address")
        checked = []
        for address in addresses:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                raise BlockedAddress("resolver returned something that is not an IP address") from None
            if not self.allow_private and is_internal(ip):
                raise BlockedAddress("an address of the upstream host is internal")
            checked.append(str(ip))
        return checked

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        last: Exception | None = None
        for address in await self.addresses(host, port, timeout):
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise BlockedAddress("unix sockets are not reachable from a pack")

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)
