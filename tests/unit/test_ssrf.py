"""SSRF guard for webhook targets: resolve now, refuse dangerous address classes unless allowed."""

from __future__ import annotations

import pytest

from alerts.delivery.ssrf import SsrfPolicy, SsrfRefused

pytestmark = pytest.mark.unit


def resolver_for(table: dict[str, list[str]]):
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"NXDOMAIN {host}")
        return table[host]
    return resolve


PUBLIC = "93.184.216.34"


@pytest.mark.parametrize("url, reason", [
    ("http://127.0.0.1:8080/hook", "loopback"),
    ("http://[::1]/hook", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://[fd00:ec2::254]/", "metadata"),
    ("http://100.100.100.200/", "metadata"),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
    ("http://169.254.10.10/", "link_local"),
    ("http://[fe80::1]/", "link_local"),
    ("http://10.1.2.3/", "private"),
    ("http://192.168.1.10/", "private"),
    ("http://100.64.0.7/", "private"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://224.0.0.1/", "multicast"),
    ("ftp://hooks.example.com/", "scheme"),
    ("file:///etc/passwd", "scheme"),
    ("http://user:pw@hooks.example.com/", "host"),
])
def test_refused_by_default(url: str, reason: str) -> None:
    policy = SsrfPolicy(resolver=resolver_for({"hooks.example.com": [PUBLIC]}))
    with pytest.raises(SsrfRefused) as info:
        policy.check(url)
    assert info.value.reason == reason


def test_public_name_is_resolved_and_pinned() -> None:
    policy = SsrfPolicy(resolver=resolver_for({"hooks.example.com": [PUBLIC]}))
    t = policy.check("https://hooks.example.com/parkmon")
    assert (t.host, t.port, t.address, t.scheme) == ("hooks.example.com", 443, PUBLIC, "https")


def test_a_name_resolving_to_any_internal_address_is_refused() -> None:
    policy = SsrfPolicy(resolver=resolver_for({"evil.example": [PUBLIC, "169.254.169.254"]}))
    with pytest.raises(SsrfRefused) as info:
        policy.check("https://evil.example/")
    assert info.value.reason == "metadata"


def test_resolution_happens_on_every_check() -> None:
    answers = iter([[PUBLIC], ["127.0.0.1"]])  # DNS rebinding between two requests
    policy = SsrfPolicy(resolver=lambda host, port: next(answers))
    policy.check("https://rebind.example/")
    with pytest.raises(SsrfRefused):
        policy.check("https://rebind.example/")


def test_unresolvable_is_refused() -> None:
    with pytest.raises(SsrfRefused) as info:
        SsrfPolicy(resolver=resolver_for({})).check("https://nowhere.example/")
    assert info.value.reason == "unresolvable"


def test_explicit_allow_flags() -> None:
    assert SsrfPolicy(allow_loopback=True).check("http://127.0.0.1:9/").address == "127.0.0.1"
    assert SsrfPolicy(allow_private=True).check("http://10.0.0.5/").address == "10.0.0.5"
    # allowing loopback does not open the metadata service
    with pytest.raises(SsrfRefused):
        SsrfPolicy(allow_loopback=True, allow_private=True).check("http://169.254.169.254/")
    assert SsrfPolicy(allow_metadata=True).check("http://169.254.169.254/").address == "169.254.169.254"
