"""One merged --disable-features switch (Chromium honours only the last), holding Playwright's own list."""

from __future__ import annotations

import re
from pathlib import Path

import playwright

from crawlkeeper.launch import (
    CRAWLKEEPER_DISABLED_FEATURES,
    PLAYWRIGHT_DISABLED_FEATURES,
    PLAYWRIGHT_ENABLED_FEATURES,
    launch_args,
    merge_feature_switches,
)


def _switch(args: list[str], name: str) -> list[str]:
    return [a for a in args if a.startswith(f"--{name}-features=")]


def test_launch_args_carry_one_disable_switch_with_playwrights_list_and_ours() -> None:
    args = launch_args(["--disable-features=Foo", "--lang=en"])
    (switch,) = _switch(args, "disable")
    assert switch == args[-1]
    features = switch.split("=", 1)[1].split(",")
    assert set(PLAYWRIGHT_DISABLED_FEATURES) | set(CRAWLKEEPER_DISABLED_FEATURES) | {"Foo"} == set(features)
    assert len(features) == len(set(features)) and "--lang=en" in args
    assert not _switch(args, "enable")  # none given: Playwright's own --enable-features stands


def test_crawl4ais_and_a_users_switches_are_merged_not_replaced() -> None:
    args = merge_feature_switches(["--disable-features=MediaRouter,DialMediaRouteProvider", "--mute-audio",
                                   "--enable-features=Bar", *launch_args([])])
    (disabled,) = _switch(args, "disable")
    assert "DialMediaRouteProvider" in disabled and "HttpsUpgrades" in disabled
    (enabled,) = _switch(args, "enable")
    assert enabled == "--enable-features=" + ",".join([*PLAYWRIGHT_ENABLED_FEATURES, "Bar"])
    assert merge_feature_switches(args) == args  # idempotent


def test_the_copied_lists_match_the_installed_playwright() -> None:
    """Playwright's lists live in its JavaScript bundle; an upgrade that changes them must update launch.py."""
    bundle = Path(playwright.__file__).parent / "driver" / "package" / "lib" / "coreBundle.js"
    text = bundle.read_text(encoding="utf-8")
    for name, ours in (("disabledFeatures", PLAYWRIGHT_DISABLED_FEATURES),
                       ("enabledFeatures", PLAYWRIGHT_ENABLED_FEATURES)):
        start = text.index(f"{name} = ")
        body = text[start: text.index("].filter(Boolean)", start)]
        body = re.sub(r"//[^\n]*", "", body)  # comments quote feature-like words
        theirs = re.findall(r'"([A-Za-z0-9]+)"', body)
        assert theirs and set(theirs) == set(ours), (name, sorted(set(theirs) ^ set(ours)))
