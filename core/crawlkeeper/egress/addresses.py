"""Address classification: which class (loopback, private, metadata, ...) an IP address belongs to,
including IPv6 forms that carry an IPv4 destination."""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


# Instance-metadata endpoints: refused even when a range in allow_private covers them; only an allow_private
# entry naming the exact address allows one. (AWS/GCP/Azure/OpenStack, AWS IPv6, ECS task and EKS pod
# identity, Azure WireServer, Alibaba, Oracle legacy.)
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "169.254.170.23",
        "168.63.129.16",
        "100.100.100.200",
        "192.0.0.192",
        "fd00:ec2::254",
        "fd00:ec2::23",
    )
)

_V4_CLASSES: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(n), c)
    for n, c in (
        ("0.0.0.0/8", "unspecified"),
        ("127.0.0.0/8", "loopback"),
        ("10.0.0.0/8", "private"),
        ("172.16.0.0/12", "private"),
        ("192.168.0.0/16", "private"),
        ("100.64.0.0/10", "cgnat"),
        ("169.254.0.0/16", "link-local"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),  # includes 255.255.255.255
        ("192.0.0.0/24", "reserved"),  # IETF protocol assignments
        ("192.0.2.0/24", "reserved"),  # TEST-NET-1
        ("198.18.0.0/15", "reserved"),  # benchmarking
        ("198.51.100.0/24", "reserved"),  # TEST-NET-2
        ("203.0.113.0/24", "reserved"),  # TEST-NET-3
        ("192.88.99.0/24", "reserved"),  # deprecated 6to4 relay anycast
    )
)

_V6_CLASSES: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.IPv6Network(n), c)
    for n, c in (
        ("fe80::/10", "link-local"),
        ("fec0::/10", "private"),  # deprecated site-local
        ("fc00::/7", "unique-local"),
        ("ff00::/8", "multicast"),
        ("2001:db8::/32", "reserved"),  # documentation
        ("100::/64", "reserved"),  # discard-only
    )
)

# IPv6 forms that carry an IPv4 destination: each is classified by the IPv4 address it embeds.
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # IPv4-translated (RFC 2765 / SIIT, RFC 6145)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # well-known NAT64 prefix (RFC 6052)
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # local-use NAT64 (RFC 8215): /48 to /96 prefixes
_SIXTOFOUR = ipaddress.IPv6Network("2002::/16")  # 6to4 (RFC 3056)
_TEREDO = ipaddress.IPv6Network("2001::/32")  # Teredo (RFC 4380): server and obfuscated client address
_V6_UNSPECIFIED = ipaddress.IPv6Address("::")
_V6_LOOPBACK = ipaddress.IPv6Address("::1")
_LOOPBACK_NETS = (ipaddress.IPv4Network("127.0.0.0/8"), ipaddress.IPv6Network("::1/128"))

_CLASS_LABELS = {
    "loopback": "a loopback",
    "private": "a private",
    "link-local": "a link-local",
    "metadata": "a cloud metadata",
    "multicast": "a multicast",
    "unspecified": "an unspecified",
    "reserved": "a reserved (special-purpose)",
    "cgnat": "a CGNAT (shared address space)",
    "unique-local": "a unique-local (IPv6 ULA)",
}


def _unwrap(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv4-mapped (``::ffff:a.b.c.d``) or -compatible (``::a.b.c.d``) address means."""
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        if mapped is not None:
            return mapped
        value = int(ip)
        if value >> 32 == 0 and value > 1:  # deprecated IPv4-compatible form; ::/::1 stay IPv6
            return ipaddress.IPv4Address(value)
    return ip


def _classify_v4(ip: ipaddress.IPv4Address) -> str | None:
    if ip in METADATA_ADDRESSES:
        return "metadata"
    for net, cls in _V4_CLASSES:
        if ip in net:
            return cls
    if not ip.is_global:
        return "reserved"
    return None


def _rfc6052(ip: ipaddress.IPv6Address, prefix_len: int) -> ipaddress.IPv4Address:
    """The IPv4 address embedded after a NAT64 prefix of ``prefix_len`` bits (RFC 6052 section 2.2: bits
    64-71, the "u" octet, are skipped)."""
    bits = int(ip)
    if prefix_len == 96:
        return ipaddress.IPv4Address(bits & 0xFFFFFFFF)
    high = 64 - prefix_len  # IPv4 bits before the u octet
    before = (bits >> 64) & ((1 << high) - 1)
    after = (bits >> (56 - (32 - high))) & ((1 << (32 - high)) - 1)
    return ipaddress.IPv4Address((before << (32 - high)) | after)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """Every IPv4 address an IPv6 address may deliver to: IPv4-mapped, -compatible and -translated, 6to4,
    Teredo (server and client) and NAT64 (well-known and every prefix length of the local-use range). Empty
    for an IPv6 address that embeds none."""
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    value = int(ip)
    if value >> 32 == 0:
        return (ipaddress.IPv4Address(value),) if value > 1 else ()  # IPv4-compatible; ::/::1 stay IPv6
    if ip in _TRANSLATED or ip in _NAT64:
        return (ipaddress.IPv4Address(value & 0xFFFFFFFF),)
    if ip in _NAT64_LOCAL:  # the operator picks the prefix length: every layout is a possible destination
        return tuple(dict.fromkeys(_rfc6052(ip, n) for n in (48, 56, 64, 96)))
    if ip in _SIXTOFOUR and ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip in _TEREDO and ip.teredo is not None:
        return ip.teredo
    return ()


_SEVERITY = ("metadata", "loopback", "link-local", "private", "cgnat", "unspecified", "multicast", "reserved")


def classify_address(ip: IPAddress | str) -> str | None:
    """The refused class of an address (e.g. ``'private'``), or ``None`` for a public address.

    An IPv6 address that embeds an IPv4 destination (see :func:`embedded_ipv4`) has the class of the
    embedded address (the most sensitive one when a form embeds several), whatever the IPv6 range says.
    """
    if isinstance(ip, str):
        ip = ipaddress.ip_address(ip)
    ip = _unwrap(ip)
    if isinstance(ip, ipaddress.IPv4Address):
        return _classify_v4(ip)
    if ip in METADATA_ADDRESSES:
        return "metadata"
    if ip == _V6_UNSPECIFIED:
        return "unspecified"
    if ip == _V6_LOOPBACK:
        return "loopback"
    embedded = embedded_ipv4(ip)
    if embedded:
        found = {c for c in map(_classify_v4, embedded) if c is not None}
        return min(found, key=lambda c: _SEVERITY.index(c) if c in _SEVERITY else len(_SEVERITY), default=None)
    for net6, cls in _V6_CLASSES:
        if ip in net6:
            return cls
    if not ip.is_global:
        return "reserved"
    return None
