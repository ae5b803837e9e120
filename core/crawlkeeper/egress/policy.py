"""The egress policy: what the browser may connect to, checked on URLs and on resolved addresses."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from .addresses import (
    _CLASS_LABELS,
    _LOOPBACK_NETS,
    METADATA_ADDRESSES,
    IPAddress,
    IPNetwork,
    _unwrap,
    classify_address,
)
from .hosts import (
    _DEFAULT_PORTS,
    _SUPPORTED_SCHEMES,
    EgressRefused,
    _authority_of,
    _bad_host,
    _is_loopback_name,
    _parse_host,
    _parse_ipv4,
    _parse_port,
    _split_authority,
    _split_url,
    _to_ascii,
)

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""An async callable ``(host, port) -> list of IP address strings``."""

_LABEL_RE = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")



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
