"""SSRF egress policy, enforced where connections are made.

Chromium is launched with ``--proxy-server=http://127.0.0.1:PORT --proxy-bypass-list=<-loopback>`` pointing
at an :class:`EgressProxy`. The proxy resolves every target host once, checks every resolved address against
the :class:`EgressPolicy` and connects to exactly an address it checked (resolve-and-pin), so DNS rebinding,
redirect hops, subresources, iframes, fetch/XHR, WebSockets and service workers are all held to the same
rules. :meth:`EgressPolicy.check_url` is the cheap synchronous pre-check of a top-level URL (scheme, host
syntax, allowed domains, IP literals in every spelling Chromium accepts); it never resolves DNS names.

This package deliberately imports nothing from the rest of crawlkeeper. Modules: ``addresses`` (IP address
classes), ``hosts`` (host and URL parsing), ``policy`` (:class:`EgressPolicy`), ``wire`` (HTTP/1.1 on the
wire) and ``proxy`` (:class:`EgressProxy`).
"""

from __future__ import annotations

from .addresses import classify_address, embedded_ipv4
from .hosts import EgressRefused, display_url
from .policy import EgressPolicy, Resolver
from .proxy import EgressProxy, ProxyCredentials

__all__ = [
    "EgressPolicy",
    "EgressProxy",
    "EgressRefused",
    "ProxyCredentials",
    "Resolver",
    "classify_address",
    "display_url",
    "embedded_ipv4",
]
