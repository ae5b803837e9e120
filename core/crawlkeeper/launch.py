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
    # Chromium keeps one warm "spare" renderer for the browser context that navigated last, and replaces it
    # (kills it, starts another) whenever a *different* context navigates. crawlkeeper's contexts (one per
    # session, one per concurrent session-less crawl) take turns, so every navigation, the parking on
    # about:blank included, started and threw away a renderer: measured ~2 renderer starts per page of
    # crawl_many, ~10-15 % of the browser's CPU per page. A renderer limit stops spares. Isolation is
    # unchanged: a limit is exceeded whenever site isolation or another context needs a process of its own;
    # it only lets pages of one site in one context share one.
    "--renderer-process-limit=1",
)


#: Playwright's own ``--disable-features`` list (its ``chromiumSwitches``; ``tests/unit/test_launch_features.py``
#: checks it against the installed Playwright). Chromium honours only the *last* ``--disable-features`` switch, and
#: crawl4ai passes one of its own, so every launch lost Playwright's list: http:// navigations upgraded to HTTPS,
#: requests to Google at start-up (optimization hints, AI-mode eligibility, network time, search preconnects),
#: third-party storage partitioning, and the CORS redirect behaviour request interception (headers.py) relies on.
PLAYWRIGHT_DISABLED_FEATURES = (
    "AvoidUnnecessaryBeforeUnloadCheckSync", "DestroyProfileOnBrowserClose", "HttpsUpgrades",
    "HttpsFirstBalancedModeAutoEnable", "LensOverlay", "MediaRouter", "PaintHolding", "ThirdPartyStoragePartitioning",
    "AvoidCorsURLLoaderRestartOnRedirect", "TcpPortRandomizationWin", "OptimizationHints", "NetworkTimeServiceQuerying",
    "AimEnabled", "PreconnectToSearch", "msForceBrowserSignIn", "msEdgeUpdateLaunchServicesPreferredVersion",
)
#: Playwright's ``--enable-features`` list, kept whole when another ``--enable-features`` switch is given.
PLAYWRIGHT_ENABLED_FEATURES = ("CDPScreenshotNewSurface", "SkipListAccountsWithoutGaiaCookies")
#: Chromium 156 (new headless runs the full browser UI) gives every browser context two hidden address-bar popup
#: pages (chrome://omnibox-popup.top-chrome/), each in a renderer of its own that keeps using CPU while idle:
#: 4 contexts held 14 Chromium processes, 360 MB USS and 32 ms of CPU a second with nothing loaded; without the
#: popups 10 processes, 206 MB and 2 ms/s.
CRAWLKEEPER_DISABLED_FEATURES = ("WebUIOmniboxPopup", "WebUIOmniboxAimPopup")

_DISABLE, _ENABLE = "--disable-features=", "--enable-features="


def merge_feature_switches(args: list[str]) -> list[str]:
    """``args`` with every ``--disable-features`` (and ``--enable-features``) merged into one switch, last, that
    also holds Playwright's own list and crawlkeeper's: Chromium would honour only the last of each."""
    disabled = [*PLAYWRIGHT_DISABLED_FEATURES, *CRAWLKEEPER_DISABLED_FEATURES]
    enabled: list[str] = []
    rest = []
    for arg in args:
        if arg.startswith(_DISABLE):
            disabled += [f for f in arg[len(_DISABLE):].split(",") if f]
        elif arg.startswith(_ENABLE):
            enabled += [f for f in arg[len(_ENABLE):].split(",") if f]
        else:
            rest.append(arg)
    rest.append(_DISABLE + ",".join(dict.fromkeys(disabled)))
    if enabled:  # only when someone passes one: Playwright's own switch stands otherwise
        rest.append(_ENABLE + ",".join(dict.fromkeys([*PLAYWRIGHT_ENABLED_FEATURES, *enabled])))
    return rest


def launch_args(extra: list[str]) -> list[str]:
    """crawlkeeper's Chromium flags with ``extra`` (``[browser] extra_args``); also what browser endpoints'
    operators are told to launch with (docs/deploy.md)."""
    args = list(BASE_ARGS)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    args.extend(extra)
    return merge_feature_switches(list(dict.fromkeys(args)))


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


def check_browser_args(args: Iterable[str], *, allow: Iterable[str] = ()) -> None:
    """Raise ValueError naming the first launch flag that would switch the egress policy (or isolation) off.
    ``allow`` names forbidden flags a caller adds itself, for a reason it documents (see :func:`login_debug_args`)."""
    allowed = {a.lower() for a in allow}
    for arg in args:
        flag = arg.strip().split("=", 1)[0].lower()
        flag = "--" + flag.lstrip("-")
        if flag in allowed:
            continue
        for forbidden in FORBIDDEN_BROWSER_FLAGS:
            name = forbidden.split("=", 1)[0]
            if flag == name and (forbidden == name or arg.strip().lower().startswith(forbidden.lower())):
                raise ValueError(
                    f"browser flag {arg.split('=', 1)[0]!r} is not allowed: it would bypass crawlkeeper's egress "
                    "policy or weaken the browser's isolation (use [security] allow_private to reach private hosts)"
                )


#: The only forbidden flag crawlkeeper adds itself, and only in ``crawlkeeper login`` (see below).
LOGIN_DEBUG_FLAG = "--remote-debugging-port"


def login_debug_args(extra: list[str], port: str) -> list[str]:
    """``extra`` plus the DevTools port that ``CRAWLKEEPER_LOGIN_DEBUG_PORT`` asks of ``crawlkeeper login``, checked.

    Tests play the person at the login window through this port. Why this one forbidden flag is acceptable
    there: ``login`` is an interactive command a person runs on their own desktop (``serve``, which pages and
    agents reach, never reads the variable); Chromium binds the port to 127.0.0.1 only; the value must be a
    plain port number, so nothing else can ride in on it; and the result still goes through
    :func:`check_browser_args`, exempting only this flag. What remains (any local process may drive that login
    window while it is open) is said in a warning every time. Raises ValueError for a bad value.
    """
    value = port.strip()
    if not value.isdigit() or not 1024 <= int(value) <= 65535:
        raise ValueError(f"CRAWLKEEPER_LOGIN_DEBUG_PORT must be a port number from 1024 to 65535, not {port!r}; "
                         "unset it (it is for tests only)")
    args = [*extra, f"{LOGIN_DEBUG_FLAG}={int(value)}"]
    check_browser_args(args, allow=(LOGIN_DEBUG_FLAG,))
    return args
