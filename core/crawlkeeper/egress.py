"""SSRF egress policy, enforced where connections are made.

Chromium is launched with ``--proxy-server=http://127.0.0.1:PORT --proxy-bypass-list=<-loopback>`` pointing
at an :class:`EgressProxy`. The proxy resolves every target host once, checks every resolved address against
the :class:`EgressPolicy` and connects to exactly an address it checked (resolve-and-pin), so DNS rebinding,
redirect hops, subresources, iframes, fetch/XHR, WebSockets and service workers are all held to the same
rules. :meth:`EgressPolicy.check_url` is the cheap synchronous pre-check of a top-level URL (scheme, host
syntax, allowed domains, IP literals in every spelling Chromium accepts); it never resolves DNS names.

This module deliberately imports nothing from the rest of crawlkeeper.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import ipaddress
import logging
import re
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import unquote_to_bytes

try:  # `idna` (UTS #46, IDNA 2008) ships with httpx; the stdlib codec (IDNA 2003) is the fallback.
    import idna as _idna
except ImportError:  # pragma: no cover - depends on the environment
    _idna = None

__all__ = [
    "EgressPolicy",
    "EgressProxy",
    "EgressRefused",
    "ProxyCredentials",
    "Resolver",
    "classify_address",
    "display_url",
]

logger = logging.getLogger("crawlkeeper.egress")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_T = TypeVar("_T")
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""An async callable ``(host, port) -> list of IP address strings``."""


class EgressRefused(ValueError):
    """A URL or host refused by the egress policy.

    ``str(exc)`` is a user-facing message naming the refused address class and how to allow it; it never
    contains an address that DNS resolution produced. ``reason`` is a short code: an address class
    (``loopback``, ``private``, ``link-local``, ``metadata``, ``multicast``, ``unspecified``, ``reserved``,
    ``cgnat``, ``unique-local``) or ``scheme``, ``domain``, ``host`` (malformed host or port) or ``resolve``
    (the resolver returned something that is not an IP address).
    """

    def __init__(self, message: str, reason: str, host: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.host = host


# ----------------------------------------------------------------------------------------------------
# Address classification
# ----------------------------------------------------------------------------------------------------

_net = ipaddress.ip_network

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


# ----------------------------------------------------------------------------------------------------
# Host parsing (the WHATWG URL rules Chromium follows)
# ----------------------------------------------------------------------------------------------------

# Forbidden domain code points (WHATWG), checked after percent-decoding and IDNA mapping.
_FORBIDDEN_HOST_CHARS = frozenset(" #%/:<>?@[\\]^|\x7f") | frozenset(chr(c) for c in range(0x20))
_HEX_RE = re.compile(r"[0-9a-f]*")
_OCT_RE = re.compile(r"[0-7]*")
_DEC_RE = re.compile(r"[0-9]+")
_SCHEME_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]*")
_LABEL_RE = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET_RE = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces or controls
_STRIP_CHARS = "".join(chr(c) for c in range(0x21))
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_SUPPORTED_SCHEMES = frozenset(_DEFAULT_PORTS)


def _bad_host(detail: str) -> EgressRefused:
    return EgressRefused(f"Refused: {detail}.", "host")


def _ipv4_number(part: str) -> int | None:
    """One dotted component as Chromium reads it: ``0x`` hex, leading-zero octal or decimal."""
    if part[:2] == "0x":
        digits, radix, pattern = part[2:], 16, _HEX_RE
    elif len(part) > 1 and part[0] == "0":
        digits, radix, pattern = part[1:], 8, _OCT_RE
    else:
        digits, radix, pattern = part, 10, _DEC_RE
    if not pattern.fullmatch(digits):
        return None
    return int(digits, radix) if digits else 0


def _parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """Parse a lowercase host as an IPv4 address in any spelling Chromium accepts (``2130706433``,
    ``0x7f000001``, ``0177.0.0.1``, ``127.1`` ...). ``None`` when the host is a domain name; a host that ends
    in a number but is not a valid address is refused, as Chromium refuses the URL."""
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    last = parts[-1]
    if not last or (not _DEC_RE.fullmatch(last) and _ipv4_number(last) is None):
        return None
    numbers = [_ipv4_number(p) if p else None for p in parts]
    if len(parts) > 4 or None in numbers:
        raise _bad_host(f"{host!r} is not a valid IPv4 address")
    nums: list[int] = [n for n in numbers if n is not None]
    if any(n > 255 for n in nums[:-1]) or nums[-1] >= 256 ** (5 - len(nums)):
        raise _bad_host(f"{host!r} is not a valid IPv4 address")
    value = nums[-1]
    for i, n in enumerate(nums[:-1]):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _to_ascii(host: str) -> str:
    if _idna is not None:
        try:
            return _idna.encode(host, uts46=True, transitional=False).decode("ascii")
        except (_idna.IDNAError, UnicodeError, ValueError):
            pass
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise _bad_host(f"{host!r} is not a valid international domain name") from None


def _parse_host(raw: str) -> tuple[str, IPAddress | None]:
    """Normalise a host as typed or sent: ``(host, ip)``. ``ip`` is set for IP literals in any spelling, and
    ``host`` is then its canonical text (the IPv4 address for an IPv4-mapped IPv6 literal). Names are
    percent-decoded, IDNA-mapped, lowercased and stripped of trailing dots."""
    if raw.startswith("[") or ":" in raw:
        inner = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
        if "%" in inner or "[" in inner or "]" in inner:
            raise _bad_host(f"{raw!r} is not a valid IPv6 address")
        try:
            ip6 = ipaddress.IPv6Address(inner)
        except ValueError:
            raise _bad_host(f"{raw!r} is not a valid IPv6 address") from None
        ip = _unwrap(ip6) if ip6.ipv4_mapped is not None else ip6
        return str(ip), ip
    host = raw
    if "%" in host:
        try:
            host = unquote_to_bytes(host).decode("utf-8")
        except UnicodeDecodeError:
            raise _bad_host("the host is not valid UTF-8") from None
    if not host.isascii():
        host = _to_ascii(host)
    host = host.lower().rstrip(".")
    if not host or not _FORBIDDEN_HOST_CHARS.isdisjoint(host):
        raise _bad_host("the URL has no valid host" if not host else f"{host!r} is not a valid host name")
    ip4 = _parse_ipv4(host)
    if ip4 is not None:
        return str(ip4), ip4
    return host, None


def _is_loopback_name(host: str) -> bool:
    return host == "localhost" or host.endswith(".localhost")


def _split_authority(authority: str) -> tuple[str, str | None]:
    """``[userinfo@]host[:port]`` -> ``(host, port text or None)``."""
    hostport = authority.rpartition("@")[2]
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise _bad_host("the URL has an unterminated IPv6 address")
        host, rest = hostport[: end + 1], hostport[end + 1 :]
        if rest and not rest.startswith(":"):
            raise _bad_host("the URL has an invalid host")
        return host, rest[1:] if rest else None
    host, sep, port = hostport.partition(":")
    return host, port if sep else None


def _parse_port(text: str | None, default: int) -> int:
    if text is None or text == "":
        return default
    if not _DEC_RE.fullmatch(text) or int(text) > 65535:
        raise EgressRefused(f"Refused: {text[:20]!r} is not a valid port.", "host")
    return int(text)


def _split_url(url: str) -> tuple[str, str]:
    """``(scheme, rest after 'scheme:')`` with the whitespace/control clean-up browsers apply."""
    url = url.strip(_STRIP_CHARS).replace("\t", "").replace("\n", "").replace("\r", "")
    scheme, sep, rest = url.partition(":")
    if not sep or not _SCHEME_RE.fullmatch(scheme):
        raise EgressRefused(
            "Refused: the URL has no scheme; use an http:// or https:// URL "
            "(schemes are governed by [security] allowed_schemes in the server config).",
            "scheme",
        )
    return scheme.lower(), rest


def _authority_of(rest: str) -> tuple[str, str]:
    """For special schemes: any run of leading slashes or backslashes is skipped and the authority ends at the
    first ``/``, ``\\``, ``?`` or ``#``. Returns ``(authority, rest unchanged)``."""
    rest = rest.lstrip("/\\")
    end = len(rest)
    for ch in "/\\?#":
        i = rest.find(ch, 0, end)
        if i >= 0:
            end = i
    return rest[:end], rest[end:]


def display_url(url: str) -> str | None:
    """``url`` as the browser and the egress proxy read it, fit for messages: ``scheme://host[:port]/path`` with
    the host as they parse it (``http://127.0.0.3:8000\\@127.0.0.2/`` is a URL of 127.0.0.3, whatever
    ``urllib.parse`` thinks), without user info, query string or fragment. ``None`` for a URL without a network
    scheme or with an invalid host."""
    try:
        scheme, rest = _split_url(url)
        if scheme not in _DEFAULT_PORTS:
            return None
        authority, tail = _authority_of(rest)
        raw_host, port_text = _split_authority(authority)
        if not raw_host:
            return None
        host, ip = _parse_host(raw_host)
        port = _parse_port(port_text, _DEFAULT_PORTS[scheme])
    except EgressRefused:
        return None
    shown = f"[{host}]" if isinstance(ip, ipaddress.IPv6Address) else host
    path = _PATH_END_RE.split(tail, 1)[0].replace("\\", "/")
    if not path.startswith("/"):
        path = "/" + path
    return f"{scheme}://{shown}{'' if port == _DEFAULT_PORTS[scheme] else f':{port}'}{path}"


_PATH_END_RE = re.compile(r"[?#]")


# ----------------------------------------------------------------------------------------------------
# Policy
# ----------------------------------------------------------------------------------------------------


def _parse_ip_entry(entry: str) -> IPAddress | IPNetwork | None:
    """An IP or CIDR list entry (IPv4-mapped forms unwrapped; single-address CIDRs become addresses)."""
    text = entry[1:-1] if entry.startswith("[") and entry.endswith("]") else entry
    if "/" in text:
        net = ipaddress.ip_network(text, strict=False)  # ValueError propagates
        if net.num_addresses == 1:
            return _unwrap(net.network_address)
        return net
    try:
        return _unwrap(ipaddress.ip_address(text))
    except ValueError:
        pass
    if ":" in text:
        raise ValueError("not a valid IPv6 address")
    try:
        ip4 = _parse_ipv4(text.lower().rstrip("."))
    except EgressRefused:
        raise ValueError("not a valid IPv4 address") from None
    return ip4


def _parse_name_entry(entry: str) -> str:
    name = entry
    if not name.isascii():
        name = _to_ascii(name)
    name = name.lower().rstrip(".")
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise ValueError("not a valid host name, IP address or CIDR range")
    return name


def _normalise_entries(kind: str, entries: Iterable[str], allow_cidr: bool) -> list[str]:
    out: list[str] = []
    for raw in entries:
        if not isinstance(raw, str):
            raise ValueError(f"{kind} entry {raw!r} must be a string")
        entry = raw.strip()
        try:
            if not entry:
                raise ValueError("empty entry")
            parsed = _parse_ip_entry(entry)
            if isinstance(parsed, (ipaddress.IPv4Network, ipaddress.IPv6Network)) and not allow_cidr:
                raise ValueError("CIDR ranges are not allowed here")
            text = str(parsed) if parsed is not None else _parse_name_entry(entry)
        except (ValueError, EgressRefused) as exc:
            raise ValueError(f"invalid {kind} entry {raw!r}: {exc}") from None
        if text not in out:
            out.append(text)
    return out


def _in_domains(host: str, domains: Iterable[str]) -> bool:
    return any(host == d or host.endswith("." + d) for d in domains)


@dataclass(frozen=True)
class EgressPolicy:
    """What the browser may connect to.

    ``allow_private``: host names, IPs or CIDRs that may be reached although their address is loopback,
    private, link-local, ... (a host name is allowed whatever it resolves to). Cloud metadata addresses are
    allowed only by an entry naming the exact address. ``allowed_domains``: ``None`` for any public host, else
    the host must equal or be a subdomain of an entry (IP literal entries match that address).
    ``enabled=False`` makes every check pass (benchmarks). Entries are validated and normalised on
    construction (a bad entry raises ValueError naming it).
    """

    allow_private: tuple[str, ...] = ()
    allowed_schemes: tuple[str, ...] = ("http", "https")
    allowed_domains: tuple[str, ...] | None = None
    enabled: bool = True

    _names: frozenset[str] = field(init=False, repr=False, compare=False, default=frozenset())
    _ips: frozenset[IPAddress] = field(init=False, repr=False, compare=False, default=frozenset())
    _nets: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False, default=())
    _domain_names: tuple[str, ...] = field(init=False, repr=False, compare=False, default=())
    _domain_ips: frozenset[IPAddress] = field(init=False, repr=False, compare=False, default=frozenset())
    _loopback_allowed: bool = field(init=False, repr=False, compare=False, default=False)

    def __post_init__(self) -> None:
        if isinstance(self.allow_private, str) or isinstance(self.allowed_schemes, str):
            raise ValueError("allow_private and allowed_schemes must be lists, not strings")
        if isinstance(self.allowed_domains, str):
            raise ValueError("allowed_domains must be a list, not a string")
        allow = tuple(_normalise_entries("allow_private", self.allow_private, allow_cidr=True))
        schemes: list[str] = []
        for s in self.allowed_schemes:
            scheme = str(s).strip().lower().rstrip(":")
            if scheme not in _SUPPORTED_SCHEMES:
                raise ValueError(
                    f"invalid allowed_schemes entry {s!r}: "
                    f"only {', '.join(sorted(_SUPPORTED_SCHEMES))} can be allowed"
                )
            if scheme not in schemes:
                schemes.append(scheme)
        domains = None
        if self.allowed_domains is not None:
            domains = tuple(_normalise_entries("allowed_domains", self.allowed_domains, allow_cidr=False))
        names: set[str] = set()
        ips: set[IPAddress] = set()
        nets: list[IPNetwork] = []
        for entry in allow:
            parsed = _parse_ip_entry(entry)
            if parsed is None:
                names.add(entry)
            elif isinstance(parsed, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
                nets.append(parsed)
            else:
                ips.add(parsed)
        domain_ips = frozenset(
            ipaddress.ip_address(d) for d in domains or () if _parse_ip_entry(d) is not None
        )
        loopback_allowed = any(ip.is_loopback for ip in ips) or any(
            n.overlaps(lo) for n in nets for lo in _LOOPBACK_NETS if n.version == lo.version
        )
        for name, value in (
            ("allow_private", allow),
            ("allowed_schemes", tuple(schemes)),
            ("allowed_domains", domains),
            ("enabled", bool(self.enabled)),
            ("_names", frozenset(names)),
            ("_ips", frozenset(ips)),
            ("_nets", tuple(nets)),
            ("_domain_names", tuple(d for d in domains or () if _parse_ip_entry(d) is None)),
            ("_domain_ips", domain_ips),
            ("_loopback_allowed", loopback_allowed),
        ):
            object.__setattr__(self, name, value)

    @classmethod
    def from_lists(
        cls,
        allow_private: Iterable[str] = (),
        allowed_schemes: Iterable[str] = ("http", "https"),
        allowed_domains: Iterable[str] | None = None,
    ) -> EgressPolicy:
        """Build a policy from config lists; a bad entry raises ValueError naming it."""
        for value, what in ((allow_private, "allow_private"), (allowed_schemes, "allowed_schemes")):
            if isinstance(value, str):
                raise ValueError(f"{what} must be a list, not a string")
        if isinstance(allowed_domains, str):
            raise ValueError("allowed_domains must be a list, not a string")
        return cls(
            allow_private=tuple(allow_private),
            allowed_schemes=tuple(allowed_schemes),
            allowed_domains=None if allowed_domains is None else tuple(allowed_domains),
        )

    # -- narrowing -------------------------------------------------------------------------------------------

    def _permits_entry(self, entry: str) -> bool:
        parsed = _parse_ip_entry(entry)
        if parsed is None:
            return entry in self._names
        if isinstance(parsed, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            return any(
                parsed.version == net.version and parsed.subnet_of(net)  # type: ignore[arg-type]
                for net in self._nets
            )
        if parsed in self._ips:
            return True
        if parsed in METADATA_ADDRESSES:
            return False
        return any(parsed in net for net in self._nets)

    def narrowed(
        self, allow_private: list[str] | None = None, allowed_domains: list[str] | None = None
    ) -> EgressPolicy:
        """The policy for a profile, which may only narrow this (the server's) policy.

        ``allow_private``: ``None`` keeps the server's list; otherwise the profile's list, each entry of
        which must be permitted by the server's list (ValueError naming it if not). ``allowed_domains`` is
        intersected with the server's (``None`` means no restriction).
        """
        new_allow = self.allow_private
        if allow_private is not None:
            if isinstance(allow_private, str):
                raise ValueError("profile allow_private must be a list, not a string")
            entries = _normalise_entries("profile allow_private", allow_private, allow_cidr=True)
            for entry in entries:
                if not self._permits_entry(entry):
                    raise ValueError(
                        f"profile allow_private entry {entry} is not allowed by the server's "
                        "[security] allow_private"
                    )
            new_allow = tuple(entries)
        new_domains = self.allowed_domains
        if allowed_domains is not None:
            if isinstance(allowed_domains, str):
                raise ValueError("profile allowed_domains must be a list, not a string")
            mine = _normalise_entries("profile allowed_domains", allowed_domains, allow_cidr=False)
            if self.allowed_domains is None:
                new_domains = tuple(mine)
            else:
                # Intersection of "these domains and their subdomains" sets; IP entries must match exactly.
                mine_names = [m for m in mine if _parse_ip_entry(m) is None]
                both = [
                    d
                    for d in mine
                    if d in self.allowed_domains or (d in mine_names and _in_domains(d, self._domain_names))
                ]
                both += [d for d in self._domain_names if d not in both and _in_domains(d, mine_names)]
                new_domains = tuple(both)
        return EgressPolicy(
            allow_private=new_allow,
            allowed_schemes=self.allowed_schemes,
            allowed_domains=new_domains,
            enabled=self.enabled,
        )

    # -- checks ----------------------------------------------------------------------------------------------

    def _ip_listed(self, ip: IPAddress) -> bool:
        if ip in self._ips:
            return True
        return any(ip in net for net in self._nets if net.version == ip.version)

    def _check_domain(self, host: str, ip: IPAddress | None) -> None:
        if self.allowed_domains is None:
            return
        if ip is not None:
            if ip in self._domain_ips:
                return
        elif _in_domains(host, self._domain_names):
            return
        raise EgressRefused(
            f"Refused {host!r}: the host is not in the allowed domains. To allow it, add the domain to the "
            "profile's allowed_domains (a profile can only narrow what the server allows).",
            "domain",
            host,
        )

    def _check(self, host: str, ip: IPAddress, literal: bool) -> None:
        """Refuse ``ip`` (resolved for ``host``) unless the policy allows it."""
        eff = _unwrap(ip)
        cls = classify_address(eff)
        if cls == "metadata":
            if eff in self._ips or ip in self._ips:
                return
        elif cls is None:
            if literal or not _is_loopback_name(host) or host in self._names or self._ip_listed(eff):
                return
            cls = "loopback"  # a loopback name may only reach public addresses that are listed
        elif (not literal and host in self._names) or self._ip_listed(eff):
            return
        raise EgressRefused(self._message(host, cls, literal), cls, host)

    @staticmethod
    def _message(host: str, cls: str, literal: bool) -> str:
        label = _CLASS_LABELS.get(cls, "a " + cls)
        if literal:
            what = f"Refused {host}: it is {label} address."
        elif cls == "loopback" and _is_loopback_name(host):
            what = f"Refused {host!r}: it is a loopback name."
        else:
            what = f"Refused {host!r}: it resolves to {label} address."
        if cls == "metadata":
            how = (
                " Cloud metadata addresses are refused even when a range in allow_private covers them; "
                "to allow one, add its exact IP address to [security] allow_private in the server config."
            )
        else:
            how = (
                " To allow it, add the host to [security] allow_private in the server config "
                "(and to the profile's allow_private if the profile sets one)."
            )
        return what + how

    def check_address(self, host: str, ip: IPAddress | str) -> None:
        """Refuse (EgressRefused) unless ``ip``, an address ``host`` resolved to, may be reached. ``host`` is
        the name that was asked for: an allow_private host-name entry allows it whatever it resolves to."""
        if not self.enabled:
            return
        if isinstance(ip, str):
            ip = ipaddress.ip_address(ip)
        try:
            name, host_ip = _parse_host(host)
        except EgressRefused:
            name, host_ip = host.lower().rstrip("."), None
        self._check(name, ip, literal=host_ip is not None)

    def check_url(self, url: str) -> tuple[str, int]:
        """Synchronous pre-navigation check of a top-level URL; returns ``(host, port)``.

        Checks the scheme, the host syntax, allowed_domains and, for IP literals in any spelling Chromium
        accepts, the address. ``host`` is normalised (lowercase, IDNA, no trailing dot; an IP literal in its
        canonical form without brackets). DNS names are not resolved here: the proxy does that.
        """
        scheme, rest = _split_url(url)
        if self.enabled and scheme not in self.allowed_schemes:
            allowed = ", ".join(self.allowed_schemes) or "none"
            raise EgressRefused(
                f"Refused: the URL scheme {scheme[:32]!r} is not allowed (allowed: {allowed}). Only network "
                "schemes (http, https, ws, wss) can be enabled, in [security] allowed_schemes in the server "
                "config.",
                "scheme",
            )
        if scheme not in _DEFAULT_PORTS:
            raise EgressRefused(f"Refused: the URL scheme {scheme!r} has no network host.", "scheme")
        authority, _ = _authority_of(rest)
        raw_host, port_text = _split_authority(authority)
        if not raw_host:
            raise _bad_host("the URL has no host")
        host, ip = _parse_host(raw_host)
        port = _parse_port(port_text, _DEFAULT_PORTS[scheme])
        if not self.enabled:
            return host, port
        self._check_domain(host, ip)
        if ip is not None:
            self._check(host, ip, literal=True)
        elif _is_loopback_name(host) and host not in self._names and not self._loopback_allowed:
            raise EgressRefused(self._message(host, "loopback", literal=False), "loopback", host)
        return host, port

    async def resolve_and_check(self, host: str, port: int, resolver: Resolver | None = None) -> list[str]:
        """Resolve ``host`` once and check every address; return the checked addresses, in order.

        IP literals (any spelling) are parsed, not resolved. Any refused address refuses the whole answer.
        allowed_domains is enforced too. A resolution failure raises OSError (``socket.gaierror`` from the
        default resolver, which uses ``loop.getaddrinfo``).
        """
        name, ip = _parse_host(host)
        if ip is not None:
            if self.enabled:
                self._check_domain(name, ip)
                self._check(name, ip, literal=True)
            return [name]
        if self.enabled:
            self._check_domain(name, None)
        answer = await (resolver or _default_resolver)(name, port)
        addresses: list[str] = []
        seen: set[IPAddress] = set()
        for text in answer:
            try:
                addr = ipaddress.ip_address(text)
            except ValueError:
                raise EgressRefused(
                    f"Refused {name!r}: the resolver returned an answer that is not an IP address.",
                    "resolve",
                    name,
                ) from None
            if self.enabled:
                self._check(name, addr, literal=False)
            addr = _unwrap(addr) if getattr(addr, "ipv4_mapped", None) is not None else addr
            if addr not in seen:
                seen.add(addr)
                addresses.append(str(addr))
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, f"{name} has no addresses")
        return addresses


async def _default_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]


# ----------------------------------------------------------------------------------------------------
# Proxy
# ----------------------------------------------------------------------------------------------------

_READ_SIZE = 64 * 1024
_MAX_HEAD = 64 * 1024
_LINGER_S = 5.0
_HOP_BY_HOP = frozenset({"proxy-connection", "proxy-authorization", "keep-alive", "connection"})


_timeout = getattr(asyncio, "timeout", None)  # Python >= 3.11: no extra task per timed await


async def _within(awaitable: Awaitable[_T], seconds: float) -> _T:
    """``await`` with a deadline (raises asyncio.TimeoutError), as cheaply as the Python version allows."""
    if _timeout is None:  # pragma: no cover - Python 3.10
        return await asyncio.wait_for(awaitable, seconds)
    async with _timeout(seconds):
        return await awaitable


class _BadRequest(Exception):
    pass


class _Reply(Exception):
    """An error response to send the client before closing the connection."""

    def __init__(self, status: str, message: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(status)
        self.data = _response(status, message + "\n", headers)


_CONTROLS_RE = re.compile(r"[\x00-\x1f\x7f]")


def _refusal(message: str, reason: str) -> _Reply:
    """A 403 that tells the browser side why: the reason code and the message, each as a header (the body of a
    refused navigation is not readable from the page's response events)."""
    safe = _CONTROLS_RE.sub(" ", message.encode("ascii", "backslashreplace").decode("ascii"))
    return _Reply("403 Forbidden", message,
                  [("X-Crawlkeeper-Refused", reason), ("X-Crawlkeeper-Refused-Message", safe[:1000])])


def _response(status: str, body: str, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    data = body.encode("utf-8", "replace")
    head = [f"HTTP/1.1 {status}", "Content-Type: text/plain", f"Content-Length: {len(data)}"]
    head += [f"{k}: {v}" for k, v in headers]
    head += ["Connection: close", "Proxy-Connection: close", "", ""]
    return "\r\n".join(head).encode("latin-1") + data


def _parse_request_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    lines = head[:-4].decode("latin-1").split("\r\n")
    while lines and not lines[0]:
        lines.pop(0)
    if not lines:
        raise _BadRequest("empty request")
    parts = lines[0].split(" ")
    if (
        len(parts) != 3
        or not _TOKEN_RE.fullmatch(parts[0])
        or parts[2] not in ("HTTP/1.1", "HTTP/1.0")
        or not _TARGET_RE.fullmatch(parts[1])
    ):
        raise _BadRequest("malformed request line")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN_RE.fullmatch(name) or "\r" in line or "\n" in line or "\0" in line:
            raise _BadRequest("malformed header line")
        headers.append((name, value.strip(" \t")))
    return parts[0], parts[1], parts[2], headers


def _rewrite_response_head(head: bytes) -> bytes:
    """Tell the client the connection closes after this response (one request per proxy connection)."""
    lines = head[:-4].split(b"\r\n")
    kept = [lines[0]] + [
        ln
        for ln in lines[1:]
        if ln.partition(b":")[0].strip().lower() not in (b"connection", b"proxy-connection", b"keep-alive")
    ]
    kept += [b"Connection: close", b"Proxy-Connection: close", b"", b""]
    return b"\r\n".join(kept)


def _status_of(head: bytes) -> int:
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise _BadRequest("malformed upstream response")
    return int(parts[1])


async def _lingering_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """After an error response: half-close and discard what the client still sends (bounded), so closing
    with unread input does not reset the connection before the client has read the response."""
    with contextlib.suppress(OSError, RuntimeError):
        if writer.can_write_eof():
            writer.write_eof()
    deadline = asyncio.get_running_loop().time() + 1.0
    budget = 1 << 20
    with contextlib.suppress(OSError, asyncio.TimeoutError, asyncio.LimitOverrunError):
        while budget > 0:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            data = await asyncio.wait_for(reader.read(_READ_SIZE), remaining)
            if not data:
                break
            budget -= len(data)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, eof: bool) -> None:
    """Copy until EOF or error; optionally half-close the destination afterwards."""
    try:
        while True:
            data = await reader.read(_READ_SIZE)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError, RuntimeError):
        return
    if eof and not writer.is_closing() and writer.can_write_eof():
        with contextlib.suppress(OSError, RuntimeError):
            writer.write_eof()


@dataclass(frozen=True)
class ProxyCredentials:
    """The random user name and password one :class:`EgressProxy` requires (``repr`` never shows them)."""

    username: str
    password: str

    @classmethod
    def random(cls) -> ProxyCredentials:
        return cls("ck-" + secrets.token_hex(6), secrets.token_urlsafe(24))

    @property
    def header(self) -> str:
        """The ``Proxy-Authorization`` value that carries them (Basic)."""
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")

    def __repr__(self) -> str:
        return "ProxyCredentials(***)"


class EgressProxy:
    """Asyncio HTTP forward proxy on 127.0.0.1 enforcing one :class:`EgressPolicy` (resolve-and-pin).

    Handles ``CONNECT host:port`` (HTTPS, wss) as a byte tunnel and absolute-URI ``http://`` requests
    (including WebSocket upgrades), one request per client connection. Refusals are ``403`` with
    ``X-Crawlkeeper-Refused: <reason>``, ``X-Crawlkeeper-Refused-Message`` (the message, ASCII) and the refusal
    message as a text body.

    Any local process can connect to 127.0.0.1, so every request must carry this proxy's own random
    credentials (``Proxy-Authorization: Basic``, see :attr:`credentials`); without them the answer is ``407``
    and nothing is resolved or contacted. ``require_auth=False`` switches that off (tests only).
    """

    def __init__(
        self,
        policy: EgressPolicy,
        resolver: Resolver | None = None,
        *,
        connect_timeout: float = 10.0,
        header_timeout: float = 30.0,
        port: int = 0,
        require_auth: bool = True,
        credentials: ProxyCredentials | None = None,
    ) -> None:
        self.policy = policy
        self._resolver = resolver
        self._connect_timeout = connect_timeout
        self._header_timeout = header_timeout
        self._port = port
        self.credentials: ProxyCredentials | None = (
            (credentials or ProxyCredentials.random()) if require_auth else None
        )
        self._expected = self.credentials.header.encode("latin-1") if self.credentials else None
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._transports: set[asyncio.BaseTransport] = set()
        self.stats: dict[str, int] = {"allowed": 0, "refused": 0, "errors": 0, "unauthorized": 0}

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (without the credentials)."""
        if self._server is None:
            raise RuntimeError("EgressProxy is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def url_with_credentials(self) -> str:
        """``http://USER:PASSWORD@127.0.0.1:PORT``: what a client needs to use this proxy. Never log it."""
        url = self.url
        if self.credentials is None:
            return url
        return url.replace("://", f"://{self.credentials.username}:{self.credentials.password}@", 1)

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> int:
        """Start listening (idempotent); returns the port."""
        if self._server is None:
            server = await asyncio.start_server(
                self._handle, "127.0.0.1", self._port, limit=_MAX_HEAD, backlog=1024
            )
            if self._server is not None:  # a concurrent start() won the race
                server.close()
            else:
                self._server = server
                self._port = server.sockets[0].getsockname()[1]
        return self._port

    async def close(self) -> None:
        """Stop listening and drop every open connection and tunnel."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for transport in list(self._transports):
            transport.abort()
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        if server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    async def __aenter__(self) -> EgressProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- connection handling ---------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)  # type: ignore[arg-type]
        self._transports.add(writer.transport)
        upstream: list[asyncio.StreamWriter] = []
        try:
            try:
                await self._serve(reader, writer, upstream)
            except _Reply as reply:
                writer.write(reply.data)
                await _lingering_close(reader, writer)
        except asyncio.CancelledError:
            pass  # close(): asyncio's done-callback on this task must not see a cancelled task
        except Exception:  # one bad connection must never take the proxy down
            self.stats["errors"] += 1
            logger.debug("egress proxy connection failed", exc_info=True)
        finally:
            for w in (*upstream, writer):
                self._transports.discard(w.transport)
                w.close()
            if task is not None:
                self._tasks.discard(task)  # type: ignore[arg-type]

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: list[asyncio.StreamWriter]
    ) -> None:
        try:
            head = await _within(reader.readuntil(b"\r\n\r\n"), self._header_timeout)
        except asyncio.IncompleteReadError:
            return
        except asyncio.LimitOverrunError:
            raise _Reply("431 Request Header Fields Too Large", "Request header block too large.") from None
        except asyncio.TimeoutError:
            raise _Reply("408 Request Timeout", "Timed out reading the request headers.") from None
        try:
            method, target, version, headers = _parse_request_head(head)
        except _BadRequest as exc:
            raise _Reply("400 Bad Request", f"Bad request: {exc}.") from None
        if self._expected is not None and not self._authorized(headers):
            self.stats["unauthorized"] += 1
            logger.debug("egress proxy: a request without this proxy's credentials was refused")
            raise _Reply(
                "407 Proxy Authentication Required",
                "Proxy authentication required: this proxy serves crawlkeeper's browser only.",
                [("Proxy-Authenticate", 'Basic realm="crawlkeeper"')],
            )
        if method == "CONNECT":
            await self._connect(target, reader, writer, upstream)
        elif "://" in target[:16]:
            await self._forward(method, target, version, headers, reader, writer, upstream)
        else:
            raise _Reply(
                "400 Bad Request", "Bad request: this is a forward proxy; absolute URI or CONNECT needed."
            )

    def _authorized(self, headers: list[tuple[str, str]]) -> bool:
        expected = self._expected
        if expected is None:
            return True
        given = [v for k, v in headers if k.lower() == "proxy-authorization"]
        # compare_digest: how much of the credential matched must not show in the response time.
        return len(given) == 1 and hmac.compare_digest(given[0].encode("latin-1"), expected)

    async def _open(
        self, host: str, port: int, upstream: list[asyncio.StreamWriter]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Resolve-and-check, then connect to a checked address (raises _Reply on failure)."""
        try:
            addresses = await self.policy.resolve_and_check(host, port, self._resolver)
        except EgressRefused as exc:
            self.stats["refused"] += 1
            logger.debug("egress refused %s:%d (%s)", exc.host or "?", port, exc.reason)
            raise _refusal(str(exc), exc.reason) from None
        except OSError:
            self.stats["errors"] += 1
            logger.debug("egress could not resolve %s", host)
            raise _Reply("502 Bad Gateway", "Bad gateway: could not resolve the host.") from None
        # Only checked addresses are ever contacted; the name is never resolved again.
        for address in addresses:
            try:
                ureader, uwriter = await _within(
                    asyncio.open_connection(address, port, limit=_MAX_HEAD), self._connect_timeout
                )
            except (OSError, asyncio.TimeoutError):
                continue
            upstream.append(uwriter)
            self._transports.add(uwriter.transport)
            self.stats["allowed"] += 1
            logger.debug("egress allowed %s:%d", host, port)
            return ureader, uwriter
        self.stats["errors"] += 1
        logger.debug("egress could not connect to %s:%d", host, port)
        raise _Reply("502 Bad Gateway", f"Bad gateway: could not connect to port {port} of the host.")

    async def _connect(
        self,
        target: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: list[asyncio.StreamWriter],
    ) -> None:
        try:
            raw_host, port_text = _split_authority(target)
            if not raw_host or not port_text:
                raise _bad_host("CONNECT needs host:port")
            port = _parse_port(port_text, 0)
            if port == 0:
                raise _bad_host("port 0 is not valid")
        except EgressRefused as exc:
            raise _Reply("400 Bad Request", f"Bad request: {exc}") from None
        ureader, uwriter = await self._open(raw_host, port, upstream)
        writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        await self._tunnel(reader, writer, ureader, uwriter)

    async def _forward(
        self,
        method: str,
        target: str,
        version: str,
        headers: list[tuple[str, str]],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: list[asyncio.StreamWriter],
    ) -> None:
        scheme, _, rest = target.partition("://")
        scheme = scheme.lower()
        lower = {k.lower(): v for k, v in headers}
        connection = {
            t.strip().lower()
            for k, v in headers
            if k.lower() == "connection"
            for t in v.split(",")
            if t.strip()
        }
        upgrade = "upgrade" in lower and "upgrade" in connection
        schemes = self.policy.allowed_schemes
        scheme_ok = "http" in schemes or (upgrade and "ws" in schemes) or not self.policy.enabled
        if scheme != "http" or not scheme_ok:
            self.stats["refused"] += 1
            msg = (
                f"Refused: the URL scheme {scheme[:32]!r} is not allowed through the proxy "
                "(see [security] allowed_schemes in the server config)."
            )
            raise _refusal(msg, "scheme")
        authority, path = _authority_of(rest)
        path = path.partition("#")[0]
        if not path.startswith("/"):
            path = "/" + path
        try:
            raw_host, port_text = _split_authority(authority)
            if not raw_host:
                raise _bad_host("the URL has no host")
            port = _parse_port(port_text, 80)
        except EgressRefused as exc:
            raise _Reply("400 Bad Request", f"Bad request: {exc}") from None
        ureader, uwriter = await self._open(raw_host, port, upstream)

        drop = set(_HOP_BY_HOP)
        if upgrade:
            drop -= {"connection"}
        else:
            drop |= connection - {"host"}
        out = [f"{method} {path} {version}"]
        if "host" not in lower:
            out.append(f"Host: {authority.rpartition('@')[2]}")
        out += [f"{k}: {v}" for k, v in headers if k.lower() not in drop]
        if not upgrade:
            out.append("Connection: close")
        out += ["", ""]
        uwriter.write("\r\n".join(out).encode("latin-1"))

        # Bodyless requests (nearly all a browser sends) need no client->upstream pipe.
        has_body = (
            upgrade or "transfer-encoding" in lower or lower.get("content-length", "").strip("0 ") != ""
        )
        c2u = asyncio.create_task(_pipe(reader, uwriter, eof=False)) if has_body else None
        try:
            while True:
                try:
                    rhead = await ureader.readuntil(b"\r\n\r\n")
                    status = _status_of(rhead)
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, _BadRequest, OSError):
                    raise _Reply("502 Bad Gateway", "Bad gateway: invalid response from upstream.") from None
                if status == 101:
                    writer.write(rhead)
                    await self._tunnel(reader, writer, ureader, uwriter, c2u)
                    return
                if 100 <= status < 200:
                    writer.write(rhead)
                    continue
                writer.write(_rewrite_response_head(rhead))
                break
            await _pipe(ureader, writer, eof=False)
        finally:
            if c2u is not None:
                c2u.cancel()

    async def _tunnel(
        self,
        creader: asyncio.StreamReader,
        cwriter: asyncio.StreamWriter,
        ureader: asyncio.StreamReader,
        uwriter: asyncio.StreamWriter,
        c2u: asyncio.Task[None] | None = None,
    ) -> None:
        """Pipe both ways; when one side finishes, half-close the other and let it finish (bounded)."""
        if c2u is None:
            c2u = asyncio.create_task(_pipe(creader, uwriter, eof=True))
        u2c = asyncio.create_task(_pipe(ureader, cwriter, eof=True))
        try:
            _, pending = await asyncio.wait({c2u, u2c}, return_when=asyncio.FIRST_COMPLETED)
            if c2u.done() and not u2c.done() and uwriter.can_write_eof() and not uwriter.is_closing():
                with contextlib.suppress(OSError, RuntimeError):
                    uwriter.write_eof()
            if pending:
                await asyncio.wait(pending, timeout=_LINGER_S)
        finally:
            c2u.cancel()
            u2c.cancel()


# Browser launch flags that would route around the egress proxy, weaken TLS or isolation, or run a program.
FORBIDDEN_BROWSER_FLAGS = (
    "--proxy-server",
    "--proxy-bypass-list",
    "--proxy-pac-url",
    "--no-proxy-server",
    "--proxy-auto-detect",
    "--host-resolver-rules",
    "--host-rules",
    "--dns-over-https-templates",
    "--ignore-certificate-errors",
    "--ignore-certificate-errors-spki-list",
    "--ignore-urlfetcher-cert-requests",
    "--allow-insecure-localhost",
    "--disable-web-security",
    "--allow-file-access-from-files",
    "--allow-file-access",
    "--remote-debugging-port",
    "--remote-debugging-pipe",
    "--remote-debugging-address",
    "--remote-allow-origins",
    "--user-data-dir",
    "--load-extension",
    "--disable-extensions-except",
    "--renderer-cmd-prefix",
    "--gpu-launcher",
    "--utility-cmd-prefix",
    "--browser-subprocess-path",
    "--enable-features=NetworkServiceInProcess",
    "--unsafely-treat-insecure-origin-as-secure",
    "--disable-site-isolation-trials",
    "--webrtc-ip-handling-policy",
    "--force-webrtc-ip-handling-policy",
    "--enable-webrtc-hide-local-ips-with-mdns",
)


def check_browser_args(args: Iterable[str]) -> None:
    """Raise ValueError naming the first launch flag that would switch the egress policy (or isolation) off."""
    for arg in args:
        flag = arg.strip().split("=", 1)[0].lower()
        flag = "--" + flag.lstrip("-")
        for forbidden in FORBIDDEN_BROWSER_FLAGS:
            name = forbidden.split("=", 1)[0]
            if flag == name and (forbidden == name or arg.strip().lower().startswith(forbidden.lower())):
                raise ValueError(
                    f"browser flag {arg.split('=', 1)[0]!r} is not allowed: it would bypass crawlkeeper's egress "
                    "policy or weaken the browser's isolation (use [security] allow_private to reach private hosts)"
                )
