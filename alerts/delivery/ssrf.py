"""Server-side request forgery guard for outbound webhooks (OWASP SSRF cheat sheet).

`SsrfPolicy.check(url)` resolves the host name NOW and refuses the target when any resolved
address is loopback, link-local, a cloud metadata address, private (RFC 1918 / ULA / CGNAT),
unspecified, multicast or reserved, unless the policy explicitly allows that class. It returns the
checked address so that the caller connects to exactly that address (no second DNS lookup a
rebinding attacker could answer differently). The webhook sender calls it on every request and never
follows redirects.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from parkmon.errors import ParkmonError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",   # AWS, GCP, Azure, OpenStack, DigitalOcean
    "169.254.170.2",     # AWS ECS task metadata
    "fd00:ec2::254",     # AWS IMDS over IPv6
    "100.100.100.200",   # Alibaba Cloud
    "192.0.0.192",       # Oracle Cloud
))
METADATA_HOSTNAMES = frozenset({"metadata.google.internal", "metadata", "instance-data",
                                "metadata.azure.com"})
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class SsrfRefused(ParkmonError):
    """The webhook target is not allowed. `reason`: scheme|host|loopback|link_local|metadata|
    private|unspecified|multicast|reserved|unresolvable."""

    def __init__(self, reason: str, url: str, detail: str) -> None:
        self.reason = reason
        self.url = url
        super().__init__(f"webhook target {url!r} refused ({reason}): {detail}")


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def classify(addr: IPAddress) -> str | None:
    """The forbidden class of an address, None for an ordinary public address."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return classify(addr.ipv4_mapped)
    if addr in METADATA_ADDRESSES:
        return "metadata"
    if addr.is_unspecified:
        return "unspecified"
    if addr.is_loopback:
        return "loopback"
    if addr.is_link_local:
        return "link_local"
    if addr.is_multicast:
        return "multicast"
    if isinstance(addr, ipaddress.IPv4Address) and addr in _CGNAT:
        return "private"
    if addr.is_private:
        return "private"
    if addr.is_reserved:
        return "reserved"
    return None


@dataclass(frozen=True, slots=True)
class CheckedTarget:
    url: str
    scheme: str
    host: str
    port: int
    address: str


@dataclass(frozen=True)
class SsrfPolicy:
    allow_loopback: bool = False
    allow_private: bool = False
    allow_link_local: bool = False
    allow_metadata: bool = False
    allowed_schemes: frozenset[str] = frozenset({"https", "http"})
    resolver: Resolver = system_resolver

    def _allowed(self, cls: str) -> bool:
        return {"loopback": self.allow_loopback, "private": self.allow_private,
                "link_local": self.allow_link_local, "metadata": self.allow_metadata}.get(cls, False)

    def check(self, url: str) -> CheckedTarget:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in self.allowed_schemes:
            raise SsrfRefused("scheme", url, f"scheme {scheme or '(none)'!r} not in "
                              f"{sorted(self.allowed_schemes)}")
        host = (parts.hostname or "").rstrip(".").lower()
        if not host:
            raise SsrfRefused("host", url, "no host name")
        if parts.username or parts.password:
            raise SsrfRefused("host", url, "credentials in the URL are not accepted")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError as exc:
            raise SsrfRefused("host", url, str(exc)) from exc
        if host in METADATA_HOSTNAMES and not self.allow_metadata:
            raise SsrfRefused("metadata", url, f"{host} is a cloud metadata host name")
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                addresses = self.resolver(host, port)
            except OSError as exc:
                raise SsrfRefused("unresolvable", url, f"cannot resolve {host}: {exc}") from exc
            if not addresses:
                raise SsrfRefused("unresolvable", url, f"{host} resolves to no address")
        for a in addresses:
            ip = ipaddress.ip_address(a.split("%", 1)[0])
            cls = classify(ip)
            if cls is not None and not self._allowed(cls):
                raise SsrfRefused(cls, url, f"{host} resolves to {ip} ({cls}); allow it explicitly "
                                  f"if this endpoint is intended")
        return CheckedTarget(url=url, scheme=scheme, host=host, port=port, address=addresses[0])
