"""Host and URL parsing, following the WHATWG URL rules Chromium follows, and :class:`EgressRefused`."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import unquote_to_bytes

from .addresses import IPAddress, _unwrap

try:  # `idna` (UTS #46, IDNA 2008) ships with httpx; the stdlib codec (IDNA 2003) is the fallback.
    import idna as _idna
except ImportError:  # pragma: no cover - depends on the environment
    _idna = None


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


# Forbidden domain code points (WHATWG), checked after percent-decoding and IDNA mapping.
_FORBIDDEN_HOST_CHARS = frozenset(" #%/:<>?@[\\]^|\x7f") | frozenset(chr(c) for c in range(0x20))
_HEX_RE = re.compile(r"[0-9a-f]*")
_OCT_RE = re.compile(r"[0-7]*")
_DEC_RE = re.compile(r"[0-9]+")
_SCHEME_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]*")
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
