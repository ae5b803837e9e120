"""How the browser is launched: the flags crawlkeeper always passes, and the flags a config may not add.

A launch flag can switch the egress policy off (its own proxy or resolver rules), weaken TLS or isolation, or
run another program: :func:`check_browser_args` refuses those in ``[browser] extra_args`` at start-up.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

#: Flags Chromium needs in a closed network and as root; harmless elsewhere.
BASE_ARGS = (
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
    "--no-default-browser-check",
    "--password-store=basic",
    "--use-mock-keychain",
    # WebRTC's STUN/UDP would go around the egress proxy (to private addresses too): no UDP unless proxied.
    "--webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--force-webrtc-ip-handling-policy",
)


def launch_args(extra: list[str]) -> list[str]:
    args = list(BASE_ARGS)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    args.extend(extra)
    return list(dict.fromkeys(args))


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
