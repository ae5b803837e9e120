"""Egress policy and resolve-and-pin proxy.

Only loopback is ever contacted: every other name goes through a fake resolver, and upstream test servers
listen on 127.0.0.2 / 127.0.0.3 (all of 127/8 is local on Linux).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence

import pytest

from crawlkeeper.egress import (
    EgressPolicy,
    EgressProxy,
    EgressRefused,
    ProxyCredentials,
    classify_address,
    display_url,
)

ALLOW_LOOPBACK = EgressPolicy.from_lists(allow_private=["127.0.0.1"])


def run(coro: Awaitable[object]) -> object:
    return asyncio.run(asyncio.wait_for(coro, 5))  # type: ignore[arg-type]


class FakeResolver:
    """Answers from a table (a list per host, or a callable of the call number); records every call."""

    def __init__(self, table: dict[str, Sequence[str] | Callable[[int], Sequence[str]]]) -> None:
        self.table = table
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "unknown host")
        answer = self.table[host]
        return list(answer(len(self.calls)) if callable(answer) else answer)


# ----------------------------------------------------------------------------------------------------------
# check_url
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "chrome://settings",
        "view-source:http://example.com/",
        "javascript:alert(1)",
        "data:text/html,<h1>x</h1>",
        "about:blank",
        "ftp://example.com/",
        "  FILE:///etc/passwd",
    ],
)
def test_check_url_refuses_non_network_schemes(url: str) -> None:
    with pytest.raises(EgressRefused) as info:
        EgressPolicy().check_url(url)
    assert info.value.reason == "scheme"
    assert url.strip().split(":")[0].lower() in str(info.value)
    assert "[security] allowed_schemes" in str(info.value)


def test_check_url_without_scheme_is_refused() -> None:
    with pytest.raises(EgressRefused) as info:
        EgressPolicy().check_url("example.com/page")
    assert info.value.reason == "scheme"


LOOPBACK_SPELLINGS = [
    "http://127.0.0.1/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0X7F000001/",
    "http://0177.0.0.1/",
    "http://017700000001/",
    "http://127.1/",
    "http://0x7f.1/",
    "http://127.0.0.1./",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://%31%32%37.0.0.1/",
    "http://\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11/",  # full-width digits and dots
    "http://user:pw@127.0.0.1:8080/",
    "http://127.0.0.1\\@example.com/",  # backslash ends the authority, as in Chromium
    "http:127.0.0.1/",
    "\t http://127.0.0.1/ \n",
]


@pytest.mark.parametrize("url", LOOPBACK_SPELLINGS)
def test_loopback_ip_spellings_refused_by_default(url: str) -> None:
    with pytest.raises(EgressRefused) as info:
        EgressPolicy().check_url(url)
    assert info.value.reason == "loopback"
    assert "loopback" in str(info.value)
    assert "[security] allow_private" in str(info.value)


@pytest.mark.parametrize("url", LOOPBACK_SPELLINGS)
def test_loopback_ip_spellings_allowed_when_listed(url: str) -> None:
    host, port = ALLOW_LOOPBACK.check_url(url)
    assert host == "127.0.0.1"
    assert port == (8080 if ":8080" in url else 80)


@pytest.mark.parametrize("url", ["http://localhost/", "http://LOCALHOST./", "https://a.b.localhost:8443/"])
def test_localhost_names_are_loopback(url: str) -> None:
    with pytest.raises(EgressRefused) as info:
        EgressPolicy().check_url(url)
    assert info.value.reason == "loopback"
    host, _ = ALLOW_LOOPBACK.check_url(url)  # allowed by the IP it resolves to (the proxy checks that)
    assert host.endswith("localhost")
    assert EgressPolicy.from_lists(allow_private=[host]).check_url(url)[0] == host


def test_check_url_normalises_names() -> None:
    policy = EgressPolicy()
    assert policy.check_url("HTTPS://WWW.Example.COM./a?b#c") == ("www.example.com", 443)
    assert policy.check_url("https://bücher.example:8443/") == ("xn--bcher-kva.example", 8443)
    assert policy.check_url("http://[2606:4700::1111]/") == ("2606:4700::1111", 80)


@pytest.mark.parametrize(
    "url",
    ["http://", "http://1.2.3.4.5/", "http://256.0.0.1/", "http://a:99999/", "http://[::1/", "http://a b/"],
)
def test_check_url_refuses_malformed_hosts(url: str) -> None:
    with pytest.raises(EgressRefused) as info:
        EgressPolicy().check_url(url)
    assert info.value.reason == "host"


@pytest.mark.parametrize(
    ("url", "exact"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://[fd00:ec2::254]/", "fd00:ec2::254"),
        ("http://100.100.100.200/", "100.100.100.200"),
        ("http://[::ffff:169.254.169.254]/", "169.254.169.254"),
    ],
)
def test_metadata_needs_its_exact_address(url: str, exact: str) -> None:
    broad = EgressPolicy.from_lists(
        allow_private=["169.254.0.0/16", "fc00::/7", "100.64.0.0/10", "0.0.0.0/0"]
    )
    with pytest.raises(EgressRefused) as info:
        broad.check_url(url)
    assert info.value.reason == "metadata"
    assert "cloud metadata" in str(info.value)
    assert "exact IP address" in str(info.value)
    assert EgressPolicy.from_lists(allow_private=[exact]).check_url(url)[0] == exact
    assert broad.check_url("http://169.254.1.1/")[0] == "169.254.1.1"  # the rest of the range is allowed


def test_allowed_domains() -> None:
    policy = EgressPolicy.from_lists(allowed_domains=["Example.com.", "203.0.113.7"])
    assert policy.check_url("https://example.com/")[0] == "example.com"
    assert policy.check_url("https://a.b.EXAMPLE.com./x")[0] == "a.b.example.com"
    for url in ("https://notexample.com/", "https://example.com.evil.test/", "https://example.org/"):
        with pytest.raises(EgressRefused) as info:
            policy.check_url(url)
        assert info.value.reason == "domain"
        assert "allowed_domains" in str(info.value)
    with pytest.raises(EgressRefused) as info:  # in allowed_domains, but still subject to the address rules
        policy.check_url("http://203.0.113.7/")
    assert info.value.reason == "reserved"


def test_disabled_policy_passes_everything() -> None:
    policy = EgressPolicy(enabled=False, allowed_domains=("example.com",))
    assert policy.check_url("http://127.0.0.1:9/") == ("127.0.0.1", 9)
    assert policy.check_url("http://169.254.169.254/") == ("169.254.169.254", 80)
    policy.check_address("x", ipaddress.ip_address("10.0.0.1"))
    resolver = FakeResolver({"intranet.test": ["10.0.0.1"]})
    assert run(policy.resolve_and_check("intranet.test", 80, resolver)) == ["10.0.0.1"]


# ----------------------------------------------------------------------------------------------------------
# Classification and check_address
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.5.4", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "cgnat"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("fc00::1", "unique-local"),
        ("fd12:3456::1", "unique-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.1", "reserved"),
        ("198.18.0.1", "reserved"),
        ("198.51.100.1", "reserved"),
        ("2001:db8::1", "reserved"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::7f00:1", "loopback"),  # IPv4-compatible
        ("64:ff9b::a9fe:a9fe", "metadata"),  # NAT64 of 169.254.169.254
        ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
    ],
)
def test_classification_refused_by_default(ip: str, reason: str) -> None:
    assert classify_address(ip) == reason
    with pytest.raises(EgressRefused) as info:
        EgressPolicy().check_address("some.host.test", ipaddress.ip_address(ip))
    assert info.value.reason == reason
    assert ip not in str(info.value)
    assert "some.host.test" in str(info.value)


@pytest.mark.parametrize("ip", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(ip: str) -> None:
    assert classify_address(ip) is None
    EgressPolicy().check_address("public.test", ipaddress.ip_address(ip))


# Every IPv6 form that carries an IPv4 destination is classified by that IPv4 address (the bug: the
# IPv4-translated ::ffff:0:a.b.c.d form of a private address was classified public).
# 8.8.8.8 in every layout RFC 6052 allows inside the local-use /48 (prefixes /48, /56, /64 and /96).
LOCAL_NAT64_PUBLIC = "64:ff9b:1:808:8:808:808:808"
EMBEDDED_FORMS = [
    # (form, IPv6 address embedding a private/loopback/metadata address, its class, same form embedding 8.8.8.8)
    ("mapped", "::ffff:10.0.0.1", "private", "::ffff:8.8.8.8"),
    ("translated", "::ffff:0:10.0.0.1", "private", "::ffff:0:8.8.8.8"),
    ("translated", "::ffff:0:127.0.0.1", "loopback", "::ffff:0:8.8.4.4"),
    ("translated", "::ffff:0:169.254.169.254", "metadata", "::ffff:0:1.1.1.1"),
    ("compatible", "::10.0.0.1", "private", "::8.8.8.8"),
    ("6to4", "2002:a00:1::1", "private", "2002:808:808::1"),
    ("6to4", "2002:a9fe:a9fe::", "metadata", "2002:101:101::"),
    ("teredo client", "2001:0:4136:e378:8000:63bf:f5ff:fffe", "private", "2001:0:4136:e378:8000:63bf:f7f7:f7f7"),
    ("teredo server", "2001:0:7f00:1:8000:63bf:f7f7:f7f7", "loopback", "2001:0:4136:e378:8000:63bf:f7f7:f7f7"),
    ("teredo", "2001:0:4136:e378:8000:63bf:5601:5601", "metadata", "2001:0:4136:e378:8000:63bf:fefe:fefe"),
    ("nat64", "64:ff9b::10.0.0.1", "private", "64:ff9b::8.8.8.8"),
    ("nat64", "64:ff9b::a9fe:a9fe", "metadata", "64:ff9b::808:808"),
    ("nat64 local /96", "64:ff9b:1::10.0.0.1", "private", LOCAL_NAT64_PUBLIC),
    ("nat64 local /48", "64:ff9b:1:a00:0:100::", "private", LOCAL_NAT64_PUBLIC),
    ("nat64 local /56", "64:ff9b:1:a:0:1::", "private", LOCAL_NAT64_PUBLIC),
    ("nat64 local /64", "64:ff9b:1:0:a:1::", "private", LOCAL_NAT64_PUBLIC),
]


@pytest.mark.parametrize(("form", "ip", "reason", "public"), EMBEDDED_FORMS)
def test_ipv4_embedding_ipv6_forms_are_classified_by_the_embedded_address(
    form: str, ip: str, reason: str, public: str
) -> None:
    assert classify_address(ip) == reason, form
    with pytest.raises(EgressRefused) as info:
        EgressPolicy().check_address("embedded.test", ip)
    assert info.value.reason == reason
    with pytest.raises(EgressRefused) as literal:
        EgressPolicy().check_url(f"http://[{ip}]/")
    assert literal.value.reason == reason
    assert classify_address(public) is None, form
    EgressPolicy().check_address("embedded.test", public)


def test_listing_the_ipv4_address_does_not_allow_its_translated_forms() -> None:
    # Only the IPv4-mapped form means the same socket address; the others go through a translator or relay.
    policy = EgressPolicy.from_lists(allow_private=["10.0.0.1"])
    policy.check_address("x.test", "::ffff:10.0.0.1")
    for form in ("::ffff:0:10.0.0.1", "64:ff9b::10.0.0.1", "2002:a00:1::1"):
        with pytest.raises(EgressRefused):
            policy.check_address("x.test", form)


def test_allow_private_entries() -> None:
    policy = EgressPolicy.from_lists(allow_private=["10.0.0.0/8", "Intranet.Example.", "::1"])
    policy.check_address("anything.test", ipaddress.ip_address("10.9.8.7"))
    policy.check_address("intranet.example", ipaddress.ip_address("192.168.7.7"))  # the name, whatever it is
    policy.check_address("INTRANET.example.", ipaddress.ip_address("172.16.0.1"))
    policy.check_address("other.test", ipaddress.ip_address("::1"))
    with pytest.raises(EgressRefused):
        policy.check_address("other.test", ipaddress.ip_address("192.168.7.7"))
    with pytest.raises(EgressRefused) as info:  # a name entry never unlocks cloud metadata
        policy.check_address("intranet.example", ipaddress.ip_address("169.254.169.254"))
    assert info.value.reason == "metadata"


# ----------------------------------------------------------------------------------------------------------
# Construction and narrowing
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"allow_private": ["10.0.0.0/33"]}, "10.0.0.0/33"),
        ({"allow_private": ["not a host!"]}, "not a host!"),
        ({"allow_private": [""]}, "''"),
        ({"allow_private": ["http://intranet/"]}, "http://intranet/"),
        ({"allowed_schemes": ["http", "gopher"]}, "gopher"),
        ({"allowed_schemes": ["file"]}, "file"),
        ({"allowed_domains": ["10.0.0.0/8"]}, "10.0.0.0/8"),
        ({"allowed_domains": ["exa mple.com"]}, "exa mple.com"),
    ],
)
def test_from_lists_rejects_bad_entries(kwargs: dict[str, list[str]], bad: str) -> None:
    with pytest.raises(ValueError, match="entry") as info:
        EgressPolicy.from_lists(**kwargs)  # type: ignore[arg-type]
    assert bad in str(info.value)


def test_from_lists_normalises_entries() -> None:
    policy = EgressPolicy.from_lists(
        allow_private=[" 10.0.0.0/8 ", "Intranet.Example.", "[::1]", "192.168.1.0/32", "::ffff:127.0.0.1"],
        allowed_schemes=["HTTPS"],
        allowed_domains=["Example.COM."],
    )
    assert policy.allow_private == ("10.0.0.0/8", "intranet.example", "::1", "192.168.1.0", "127.0.0.1")
    assert policy.allowed_schemes == ("https",)
    assert policy.allowed_domains == ("example.com",)
    assert EgressPolicy(allow_private=("127.0.0.1",)) == EgressPolicy.from_lists(["127.0.0.1"])
    with pytest.raises(EgressRefused) as info:
        policy.check_url("http://example.com/")
    assert info.value.reason == "scheme"


def test_narrowed_allow_private() -> None:
    server = EgressPolicy.from_lists(allow_private=["10.0.0.0/8", "intranet.example", "169.254.0.0/16"])
    profile = server.narrowed(allow_private=["10.1.0.0/16", "10.2.3.4", "INTRANET.example"])
    assert profile.allow_private == ("10.1.0.0/16", "10.2.3.4", "intranet.example")
    profile.check_address("x.test", ipaddress.ip_address("10.1.2.3"))
    with pytest.raises(EgressRefused):
        profile.check_address("x.test", ipaddress.ip_address("10.3.0.1"))
    assert server.narrowed().allow_private == server.allow_private
    assert server.narrowed(allow_private=[]).allow_private == ()
    for entry in ("192.168.0.1", "10.0.0.0/7", "other.example", "169.254.169.254"):
        with pytest.raises(ValueError) as info:
            server.narrowed(allow_private=[entry])
        assert str(info.value) == (
            f"profile allow_private entry {entry} is not allowed by the server's [security] allow_private"
        )


def test_narrowed_allowed_domains_intersects() -> None:
    server = EgressPolicy.from_lists(allowed_domains=["example.com", "example.org"])
    assert server.narrowed().allowed_domains == ("example.com", "example.org")
    assert server.narrowed(allowed_domains=["a.example.com", "example.net"]).allowed_domains == (
        "a.example.com",
    )
    assert EgressPolicy().narrowed(allowed_domains=["example.net"]).allowed_domains == ("example.net",)
    sub = EgressPolicy.from_lists(allowed_domains=["a.example.com"]).narrowed(allowed_domains=["example.com"])
    assert sub.allowed_domains == ("a.example.com",)
    nothing = server.narrowed(allowed_domains=["example.net"])
    with pytest.raises(EgressRefused):
        nothing.check_url("https://example.com/")


# ----------------------------------------------------------------------------------------------------------
# resolve_and_check
# ----------------------------------------------------------------------------------------------------------


def test_resolve_public_answer_is_returned_in_order() -> None:
    resolver = FakeResolver({"www.example.test": ["93.184.216.34", "2606:2800:220:1::1", "93.184.216.34"]})
    result = run(EgressPolicy().resolve_and_check("WWW.Example.Test.", 443, resolver))
    assert result == ["93.184.216.34", "2606:2800:220:1::1"]
    assert resolver.calls == [("www.example.test", 443)]


def test_resolve_multi_record_answer_with_one_private_address_is_refused() -> None:
    resolver = FakeResolver({"mixed.test": ["93.184.216.34", "10.1.2.3", "8.8.8.8"]})
    with pytest.raises(EgressRefused) as info:
        run(EgressPolicy().resolve_and_check("mixed.test", 80, resolver))
    assert info.value.reason == "private"
    assert "10.1.2.3" not in str(info.value)
    assert "mixed.test" in str(info.value)
    assert "[security] allow_private" in str(info.value)
    assert len(resolver.calls) == 1


def test_resolve_messages_never_contain_resolved_addresses() -> None:
    resolver = FakeResolver(
        {"meta.test": ["169.254.169.254"], "v6.test": ["fd12::7"], "lo.test": ["127.0.0.5"]}
    )
    for host, secret in (("meta.test", "169.254"), ("v6.test", "fd12"), ("lo.test", "127.0.0.5")):
        with pytest.raises(EgressRefused) as info:
            run(EgressPolicy().resolve_and_check(host, 80, resolver))
        assert secret not in str(info.value)
        assert host in str(info.value)


def test_resolve_ip_literals_are_parsed_not_resolved() -> None:
    resolver = FakeResolver({})
    policy = EgressPolicy.from_lists(allow_private=["127.0.0.1"])
    assert run(policy.resolve_and_check("0x7f.1", 80, resolver)) == ["127.0.0.1"]
    assert run(policy.resolve_and_check("[::ffff:127.0.0.1]", 80, resolver)) == ["127.0.0.1"]
    with pytest.raises(EgressRefused):
        run(EgressPolicy().resolve_and_check("2130706433", 80, resolver))
    assert resolver.calls == []


def test_resolve_hostname_entry_and_loopback_names() -> None:
    resolver = FakeResolver({"intranet.test": ["10.0.0.5", "192.168.0.5"], "localhost": ["8.8.8.8"]})
    policy = EgressPolicy.from_lists(allow_private=["intranet.test"])
    assert run(policy.resolve_and_check("intranet.test", 80, resolver)) == ["10.0.0.5", "192.168.0.5"]
    # A loopback name answering a public address is still refused unless the name or address is listed.
    with pytest.raises(EgressRefused) as info:
        run(policy.resolve_and_check("localhost", 80, resolver))
    assert info.value.reason == "loopback"
    allowed = EgressPolicy.from_lists(allow_private=["8.8.8.8"])
    assert run(allowed.resolve_and_check("localhost", 80, resolver)) == ["8.8.8.8"]


def test_default_resolver_uses_loop_getaddrinfo_once() -> None:
    calls: list[tuple[object, ...]] = []

    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()

        async def fake_getaddrinfo(host: str, port: int, **kwargs: object) -> list[tuple[object, ...]]:
            calls.append((host, port))
            return [
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2606:4700::1111", port, 0, 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            ]

        loop.getaddrinfo = fake_getaddrinfo  # type: ignore[method-assign,assignment]
        return await EgressPolicy().resolve_and_check("dual.example.test", 443)

    assert run(scenario()) == ["2606:4700::1111", "93.184.216.34"]
    assert calls == [("dual.example.test", 443)]


def test_policy_is_a_value() -> None:
    policy = EgressPolicy.from_lists(allow_private=["10.0.0.0/8"], allowed_domains=["example.com"])
    assert hash(policy) == hash(EgressPolicy.from_lists(["10.0.0.0/8"], allowed_domains=["example.com"]))
    off = dataclasses.replace(policy, enabled=False)
    assert off.check_url("http://169.254.169.254/")[0] == "169.254.169.254"
    assert off.allow_private == ("10.0.0.0/8",)


def test_resolve_failures() -> None:
    with pytest.raises(OSError):
        run(EgressPolicy().resolve_and_check("nowhere.test", 80, FakeResolver({})))
    with pytest.raises(OSError):
        run(EgressPolicy().resolve_and_check("empty.test", 80, FakeResolver({"empty.test": []})))
    with pytest.raises(EgressRefused) as info:
        run(EgressPolicy().resolve_and_check("junk.test", 80, FakeResolver({"junk.test": ["not-an-ip"]})))
    assert info.value.reason == "resolve"


# ----------------------------------------------------------------------------------------------------------
# Proxy
# ----------------------------------------------------------------------------------------------------------


class Upstream:
    """A tiny server on one loopback address: HTTP (answers, closes), echo, or WebSocket-like (101, echo)."""

    def __init__(self, host: str, mode: str = "http") -> None:
        self.host = host
        self.mode = mode
        self.hits = 0
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.server: asyncio.AbstractServer | None = None

    async def start(self, port: int) -> None:
        self.server = await asyncio.start_server(self._handle, self.host, port)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.hits += 1
        try:
            if self.mode == "echo":
                await self._echo(reader, writer)
                return
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            if self.mode == "ws":
                writer.write(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                )
                await self._echo(reader, writer)
                return
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            self.bodies.append(await reader.readexactly(length))
            body = b"hello from " + self.host.encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                b"Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def start_pair(mode: str = "http") -> tuple[Upstream, Upstream, int]:
    """Servers on 127.0.0.2 and 127.0.0.3 sharing one free port number."""
    for _ in range(20):
        a, b = Upstream("127.0.0.2", mode), Upstream("127.0.0.3", mode)
        await a.start(0)
        assert a.server is not None
        port = a.server.sockets[0].getsockname()[1]
        try:
            await b.start(port)
        except OSError:
            await a.close()
            continue
        return a, b, port
    raise RuntimeError("no free port pair")


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def authed(proxy: EgressProxy, request: bytes) -> bytes:
    """``request`` with this proxy's ``Proxy-Authorization`` added after the request line."""
    assert proxy.credentials is not None
    line, sep, rest = request.partition(b"\r\n")
    if not sep:
        return request
    return line + b"\r\nProxy-Authorization: " + proxy.credentials.header.encode() + b"\r\n" + rest


async def exchange(proxy: EgressProxy, request: bytes, timeout: float = 2.0, *, auth: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(authed(proxy, request) if auth else request)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def head_of(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split(" ")[1]), headers, body


def rebinding_resolver() -> FakeResolver:
    """127.0.0.2 on the first call, 127.0.0.3 on every later one."""
    return FakeResolver({"rebind.test": lambda n: ["127.0.0.2"] if n == 1 else ["127.0.0.3"]})


PINNED = EgressPolicy.from_lists(allow_private=["127.0.0.2"])


def test_proxy_get_is_pinned_to_the_checked_address(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="crawlkeeper.egress")
    credentials: list[ProxyCredentials] = []

    async def scenario() -> None:
        good, sentinel, port = await start_pair()
        resolver = rebinding_resolver()
        proxy = EgressProxy(PINNED, resolver)
        assert proxy.credentials is not None
        credentials.append(proxy.credentials)
        await proxy.start()
        try:
            request = (
                f"GET http://rebind.test:{port}/path?q=1 HTTP/1.1\r\nHost: rebind.test:{port}\r\n"
                "Proxy-Connection: keep-alive\r\n"
                "Cookie: sid=TOPSECRETCOOKIE\r\nAuthorization: Bearer TOPSECRETTOKEN\r\n\r\n"
            ).encode()
            status, headers, body = head_of(await exchange(proxy, request))
            assert status == 200
            assert body == b"hello from 127.0.0.2"
            assert headers["connection"] == "close"
            assert "keep-alive" not in headers
            assert (good.hits, sentinel.hits) == (1, 0)
            assert len(resolver.calls) == 1
            sent = good.heads[0].decode()
            assert sent.startswith("GET /path?q=1 HTTP/1.1\r\n")
            assert f"Host: rebind.test:{port}\r\n" in sent
            assert "Connection: close\r\n" in sent
            assert "Cookie: sid=TOPSECRETCOOKIE" in sent
            assert "Proxy-" not in sent

            # The next resolution rebinds to 127.0.0.3: it is checked again and refused, never contacted.
            status, headers, body = head_of(await exchange(proxy, request))
            assert status == 403
            assert headers["x-crawlkeeper-refused"] == "loopback"
            assert b"127.0.0.3" not in body
            assert (good.hits, sentinel.hits) == (1, 0)
            assert len(resolver.calls) == 2
            assert proxy.stats["allowed"] == 1
            assert proxy.stats["refused"] == 1
        finally:
            await proxy.close()
            await good.close()
            await sentinel.close()

    run(scenario())
    assert "rebind.test" in caplog.text
    assert "TOPSECRET" not in caplog.text
    assert credentials and credentials[0].password not in caplog.text and credentials[0].header not in caplog.text


def test_proxy_connect_is_pinned_to_the_checked_address() -> None:
    async def scenario() -> None:
        good, sentinel, port = await start_pair("echo")
        resolver = rebinding_resolver()
        async with EgressProxy(PINNED, resolver) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            connect = f"CONNECT rebind.test:{port} HTTP/1.1\r\nHost: rebind.test:{port}\r\n\r\n".encode()
            writer.write(authed(proxy, connect))
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 200 Connection Established\r\n\r\n"
            hello = b"\x16\x03\x01 tls-ish bytes" * 1000
            writer.write(hello)
            assert await reader.readexactly(len(hello)) == hello
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 2) == b""
            writer.close()
            assert (good.hits, sentinel.hits) == (1, 0)
            assert resolver.calls == [("rebind.test", port)]

            status, headers, _ = head_of(
                await exchange(proxy, f"CONNECT rebind.test:{port} HTTP/1.1\r\n\r\n".encode())
            )
            assert status == 403
            assert headers["x-crawlkeeper-refused"] == "loopback"
            assert headers["content-type"].startswith("text/plain")
            assert sentinel.hits == 0
        await good.close()
        await sentinel.close()

    run(scenario())


def test_proxy_refuses_unlisted_ip_literal() -> None:
    async def scenario() -> None:
        good, sentinel, port = await start_pair()
        async with EgressProxy(PINNED, FakeResolver({})) as proxy:
            for target in (f"127.0.0.3:{port}", f"0x7f000003:{port}", f"[::ffff:127.0.0.3]:{port}"):
                response = await exchange(
                    proxy, f"GET http://{target}/ HTTP/1.1\r\nHost: {target}\r\n\r\n".encode()
                )
                status, headers, body = head_of(response)
                assert status == 403, target
                assert headers["x-crawlkeeper-refused"] == "loopback"
                assert headers["connection"] == "close"
                assert b"[security] allow_private" in body
            status, _, body = head_of(
                await exchange(proxy, f"GET http://127.0.0.2:{port}/ HTTP/1.1\r\n\r\n".encode())
            )
            assert (status, body) == (200, b"hello from 127.0.0.2")
            assert good.heads[0].startswith(b"GET / HTTP/1.1\r\nHost: 127.0.0.2:")  # Host added when missing
            assert sentinel.hits == 0
        await good.close()
        await sentinel.close()

    run(scenario())


def test_proxy_refuses_metadata_and_domains_and_schemes() -> None:
    async def scenario() -> None:
        resolver = FakeResolver({"meta.test": ["169.254.169.254"], "other.test": ["127.0.0.2"]})
        policy = EgressPolicy.from_lists(
            allow_private=["169.254.0.0/16", "127.0.0.2"], allowed_domains=["ok.test"]
        )
        async with EgressProxy(policy, resolver) as proxy:
            for request, reason in (
                (b"CONNECT meta.test:443 HTTP/1.1\r\n\r\n", "domain"),
                (b"GET http://other.test/ HTTP/1.1\r\n\r\n", "domain"),
                (b"GET ftp://ok.test/ HTTP/1.1\r\n\r\n", "scheme"),
            ):
                status, headers, _ = head_of(await exchange(proxy, request))
                assert (status, headers["x-crawlkeeper-refused"]) == (403, reason)
                # The message names the setting that refused it (the browser side reads it from this header).
                key = {"domain": "allowed_domains", "scheme": "allowed_schemes"}[reason]
                assert key in headers["x-crawlkeeper-refused-message"] and "allow_private" not in headers[
                    "x-crawlkeeper-refused-message"]
        broad = EgressPolicy.from_lists(allow_private=["169.254.0.0/16"])
        async with EgressProxy(broad, resolver) as proxy:
            status, headers, body = head_of(await exchange(proxy, b"CONNECT meta.test:80 HTTP/1.1\r\n\r\n"))
            assert (status, headers["x-crawlkeeper-refused"]) == (403, "metadata")
            assert b"169.254" not in body
        assert resolver.calls == [("meta.test", 80)]  # domain refusals happen before any resolution

    run(scenario())


def test_proxy_websocket_upgrade_passes_bytes_both_ways() -> None:
    async def scenario() -> None:
        ws, other, port = await start_pair("ws")
        resolver = FakeResolver({"ws.test": ["127.0.0.2"]})
        async with EgressProxy(PINNED, resolver) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(authed(proxy,
                f"GET http://ws.test:{port}/chat HTTP/1.1\r\nHost: ws.test:{port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\nProxy-Connection: keep-alive\r\n\r\n".encode()
            ))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
            assert head.startswith(b"HTTP/1.1 101 ")
            for message in (b"ping", b"\x81\x05hello", b"x" * 100_000):
                writer.write(message)
                assert await asyncio.wait_for(reader.readexactly(len(message)), 2) == message
            sent = ws.heads[0].decode()
            assert sent.startswith("GET /chat HTTP/1.1\r\n")
            assert "Upgrade: websocket\r\n" in sent and "Connection: Upgrade\r\n" in sent
            assert "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" in sent
            assert "Proxy-Connection" not in sent and "Connection: close" not in sent
            writer.close()
        await ws.close()
        await other.close()

    run(scenario())


def test_proxy_streams_request_bodies() -> None:
    async def scenario() -> None:
        up, other, port = await start_pair()
        async with EgressProxy(PINNED, FakeResolver({"post.test": ["127.0.0.2"]})) as proxy:
            body = b"a=1&b=" + b"z" * 200_000
            request = (
                f"POST http://post.test:{port}/form HTTP/1.1\r\nHost: post.test\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            status, _, answer = head_of(await exchange(proxy, request))
            assert (status, answer) == (200, b"hello from 127.0.0.2")
            assert up.bodies == [body]
        await up.close()
        await other.close()

    run(scenario())


def test_proxy_close_closes_open_tunnels_promptly() -> None:
    async def scenario() -> None:
        echo, other, port = await start_pair("echo")
        proxy = EgressProxy(PINNED, FakeResolver({"t.test": ["127.0.0.2"]}))
        await proxy.start()
        clients = []
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(authed(proxy, f"CONNECT t.test:{port} HTTP/1.1\r\n\r\n".encode()))
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"hi")
            assert await reader.readexactly(2) == b"hi"
            clients.append((reader, writer))
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", proxy.port)  # head never sent
        await asyncio.sleep(0.01)
        started = time.monotonic()
        await proxy.close()
        for reader, _ in [*clients, (idle_reader, idle_writer)]:
            with contextlib.suppress(ConnectionError):
                assert await asyncio.wait_for(reader.read(), 1) == b""
        assert time.monotonic() - started < 1.0
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", proxy.port)
        for _, writer in [*clients, (idle_reader, idle_writer)]:
            writer.close()
        await echo.close()
        await other.close()

    run(scenario())


def test_proxy_bad_requests() -> None:
    async def scenario() -> None:
        dead_port = free_port("127.0.0.2")
        resolver = FakeResolver({"dead.test": ["127.0.0.2"]})
        async with EgressProxy(PINNED, resolver, header_timeout=0.2) as proxy:
            assert proxy.url == f"http://127.0.0.1:{proxy.port}"
            assert await proxy.start() == proxy.port  # idempotent
            cases = [
                (b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n", 400),
                (b"NONSENSE\r\n\r\n", 400),
                (b"GET http://a/ HTTP/1.1\r\nbad header line\r\n\r\n", 400),
                (b"GET http://a/\nX: y HTTP/1.1\r\n\r\n", 400),
                (b"CONNECT nohost HTTP/1.1\r\n\r\n", 400),
                (b"GET http://a/ HTTP/1.1\r\nX: " + b"y" * 70_000 + b"\r\n\r\n", 431),
                (b"GET http://unknown.test/ HTTP/1.1\r\n\r\n", 502),
                (f"GET http://dead.test:{dead_port}/ HTTP/1.1\r\n\r\n".encode(), 502),
                (f"CONNECT dead.test:{dead_port} HTTP/1.1\r\n\r\n".encode(), 502),
                (b"GET http://a/ HTTP/1.1\r\n", 408),  # header block never finished
            ]
            for request, expected in cases:
                status, _, body = head_of(await exchange(proxy, request))
                assert status == expected, request[:60]
                assert b"127.0.0.2" not in body
            assert proxy.stats["refused"] == 0
        with pytest.raises(RuntimeError):
            _ = proxy.url

    run(scenario())


def test_proxy_refuses_requests_without_its_credentials(caplog: pytest.LogCaptureFixture) -> None:
    # Before: any local process could use the proxy on 127.0.0.1 (an open proxy with the server's allow_private).
    caplog.set_level(logging.DEBUG, logger="crawlkeeper.egress")

    async def scenario() -> None:
        good, other, port = await start_pair()
        resolver = FakeResolver({"ok.test": ["127.0.0.2"]})
        async with EgressProxy(PINNED, resolver) as proxy, EgressProxy(PINNED, resolver) as second:
            assert proxy.credentials is not None and second.credentials is not None
            assert proxy.credentials != second.credentials  # each proxy has its own
            assert proxy.credentials.password not in repr(proxy.credentials)
            creds = proxy.credentials
            assert proxy.url_with_credentials == f"http://{creds.username}:{creds.password}@127.0.0.1:{proxy.port}"
            wrong = ProxyCredentials(creds.username, creds.password[:-1] + ("x" if creds.password[-1] != "x" else "y"))
            requests = [
                f"GET http://ok.test:{port}/ HTTP/1.1\r\nHost: ok.test\r\n\r\n".encode(),
                f"CONNECT ok.test:{port} HTTP/1.1\r\n\r\n".encode(),
                f"GET http://127.0.0.2:{port}/ HTTP/1.1\r\n\r\n".encode(),
            ]
            for request in requests:
                bad_headers = [b"", b"Proxy-Authorization: " + wrong.header.encode() + b"\r\n",
                               b"Proxy-Authorization: " + second.credentials.header.encode() + b"\r\n",
                               b"Proxy-Authorization: Basic\r\n",
                               b"Proxy-Authorization: " + creds.header.encode() + b"\r\n"
                               b"Proxy-Authorization: " + creds.header.encode() + b"\r\n"]
                for extra in bad_headers:
                    line, _, rest = request.partition(b"\r\n")
                    status, headers, body = head_of(await exchange(proxy, line + b"\r\n" + extra + rest, auth=False))
                    assert status == 407, (request, extra)
                    assert headers["proxy-authenticate"] == 'Basic realm="crawlkeeper"'
                    assert b"127.0.0.2" not in body
            assert (good.hits, other.hits, resolver.calls) == (0, 0, [])  # nothing resolved, nothing contacted
            assert proxy.stats["unauthorized"] == len(requests) * 5
            status, _, body = head_of(await exchange(proxy, requests[0]))  # with the credentials: served
            assert (status, body) == (200, b"hello from 127.0.0.2")
            assert "Proxy-Authorization" not in good.heads[0].decode()  # never passed upstream
            unauthenticated = EgressProxy(PINNED, resolver, require_auth=False)
            assert unauthenticated.credentials is None
        await good.close()
        await other.close()

    run(scenario())
    assert "Basic " not in caplog.text


@pytest.fixture(autouse=True)
def _no_foreign_connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail loudly if anything tries to reach a non-loopback address."""
    real = asyncio.open_connection

    async def guarded(host: str | None = None, port: int | None = None, **kwargs: object) -> object:
        assert host is not None and ipaddress.ip_address(host).is_loopback, host
        return await real(host, port, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(asyncio, "open_connection", guarded)
    yield


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # urllib.parse reads user info up to the last "@" and so a URL of 127.0.0.2; the browser stops the
        # authority at the backslash.
        ("http://127.0.0.3:8000\\@127.0.0.2:8000/", "http://127.0.0.3:8000/@127.0.0.2:8000/"),
        ("http:\\\\127.0.0.3\\x?y", "http://127.0.0.3/x"),
        ("https://u:p@Host.Example.:443/a?token=x#y", "https://host.example/a"),
        ("http://0x7f000003:81/", "http://127.0.0.3:81/"),
        ("http://[::ffff:127.0.0.3]/", "http://127.0.0.3/"),
        ("ws://[::1]:9/s", "ws://[::1]:9/s"),
        ("  http://a.test/\t", "http://a.test/"),
        ("file:///etc/passwd", None),
        ("http://bad host/", None),
    ],
)
def test_display_url_reads_urls_as_the_proxy_does(url: str, shown: str | None) -> None:
    from crawlkeeper.logs import safe_url

    assert display_url(url) == shown
    if shown is not None:
        assert safe_url(url) == shown
    if shown is not None and shown.startswith("http"):
        assert EgressPolicy.from_lists(allow_private=["127.0.0.0/8", "::1"]).check_url(url)[0] in shown
