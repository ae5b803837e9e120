"""Config merging: core defaults < config file < profile layer < plugin layers (by priority) < per-call arguments.

Every crawl option and context option is built by ``App.crawl_options`` / ``App.context_options``; a bad merged
value is an error naming the layer that set it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crawlkeeper import PROFILE_LAYER_PRIORITY, ConfigError, ConfigLayer, CrawlRequest, hookimpl
from crawlkeeper.options import CrawlOptions

FILE_TOML = """
[crawl]
timeout_s = 11
max_chars = 1111
css_selector = "#from-file"

[browser]
locale = "fr-FR"
user_agent = "file-agent"
"""

PROFILE_TOML = """
description = "merge test"

[crawl]
timeout_s = 22
css_selector = "#from-profile"
wait_for = "css:#profile"

[browser]
user_agent = "profile-agent"
"""


@pytest.fixture
def crawlkeeper_config_toml() -> str:
    return FILE_TOML


class LayerPlugin:
    def __init__(self, layer: ConfigLayer) -> None:
        self.layer = layer
        self.requests: list[CrawlRequest] = []

    @hookimpl
    def crawlkeeper_config_layers(self, request: CrawlRequest) -> list[ConfigLayer]:
        self.requests.append(request)
        return [self.layer]


def request(app: Any, profile: str | None = None, **arguments: Any) -> CrawlRequest:
    return CrawlRequest(url="https://example.com/", profile=app.profile(profile), session=None, arguments=arguments)


def test_core_defaults_then_config_file(crawlkeeper_app: Any) -> None:
    options = crawlkeeper_app.crawl_options(request(crawlkeeper_app))
    defaults = CrawlOptions()
    assert options.timeout_s == 11  # the file
    assert options.max_chars == 1111
    assert options.css_selector == "#from-file"
    assert options.output == defaults.output == "markdown"  # the core default
    assert options.wait_until == defaults.wait_until
    browser = crawlkeeper_app.context_options(request(crawlkeeper_app))
    assert (browser.locale, browser.user_agent) == ("fr-FR", "file-agent")
    assert browser.viewport_width == 1280


def test_profile_layer_beats_the_file(crawlkeeper_app: Any, write_profile: Callable[..., Path]) -> None:
    write_profile("work", PROFILE_TOML)
    options = crawlkeeper_app.crawl_options(request(crawlkeeper_app, "work"))
    assert options.timeout_s == 22
    assert options.css_selector == "#from-profile"
    assert options.wait_for == "css:#profile"
    assert options.max_chars == 1111  # not in the profile: the file's value
    browser = crawlkeeper_app.context_options(request(crawlkeeper_app, "work"))
    assert (browser.locale, browser.user_agent) == ("fr-FR", "profile-agent")


def test_full_precedence_chain(
    crawlkeeper_app: Any, crawlkeeper_register: Callable[..., Any], write_profile: Callable[..., Path]
) -> None:
    write_profile("work", PROFILE_TOML)
    # registered high first, low second: the order of registration must not matter, priority does
    high = crawlkeeper_register(
        LayerPlugin(ConfigLayer("plugin 'high'", crawl={"timeout_s": 44, "delay_s": 2}, priority=10)), "high"
    )
    crawlkeeper_register(
        LayerPlugin(ConfigLayer("plugin 'low'", crawl={"timeout_s": 33, "delay_s": 1, "max_chars": 3333},
                                browser={"user_agent": "low-agent"})),
        "low",
    )
    crawlkeeper_register(
        LayerPlugin(ConfigLayer("plugin 'under'", crawl={"css_selector": "#under", "wait_for": "css:#under"},
                                priority=PROFILE_LAYER_PRIORITY - 1)),
        "under",
    )
    options = crawlkeeper_app.crawl_options(request(crawlkeeper_app, "work"))
    assert options.timeout_s == 44  # highest priority plugin layer
    assert options.delay_s == 2
    assert options.max_chars == 3333  # the low plugin beats file and profile
    assert options.css_selector == "#from-profile"  # a layer below the profile's priority loses to it
    assert options.wait_for == "css:#profile"
    assert crawlkeeper_app.context_options(request(crawlkeeper_app, "work")).user_agent == "low-agent"

    with_args = crawlkeeper_app.crawl_options(request(crawlkeeper_app, "work", timeout_s=55, css_selector="#arg"))
    assert with_args.timeout_s == 55  # per-call arguments always win
    assert with_args.css_selector == "#arg"
    assert with_args.delay_s == 2

    seen = high.requests[-1]
    assert seen.url == "https://example.com/"
    assert seen.profile is not None and seen.profile.name == "work"
    assert seen.arguments == {"timeout_s": 55, "css_selector": "#arg"}


def test_none_arguments_do_not_override(crawlkeeper_app: Any) -> None:
    options = crawlkeeper_app.crawl_options(request(crawlkeeper_app, timeout_s=None))
    assert options.timeout_s == 11


def test_headers_merge_per_entry(crawlkeeper_app: Any, crawlkeeper_register: Callable[..., Any]) -> None:
    crawlkeeper_register(LayerPlugin(ConfigLayer("plugin 'a'", browser={"extra_headers": {"X-A": "1"}})), "a")
    crawlkeeper_register(
        LayerPlugin(ConfigLayer("plugin 'b'", browser={"extra_headers": {"X-B": "2"}}, priority=5)), "b"
    )
    assert crawlkeeper_app.context_options(request(crawlkeeper_app)).extra_headers == {"X-A": "1", "X-B": "2"}


# -- a bad merged value names the layer ---------------------------------------------------------------------


def test_bad_profile_value_names_value_profile_and_file(
    crawlkeeper_app: Any, write_profile: Callable[..., Path]
) -> None:
    write_profile("slow", "[crawl]\ntimeout_s = -1\n")
    with pytest.raises(ConfigError) as info:
        crawlkeeper_app.crawl_options(request(crawlkeeper_app, "slow"))
    message = str(info.value)
    assert "timeout_s = -1" in message
    assert "profile 'slow'" in message
    assert "slow.toml" in message


@pytest.mark.anyio
async def test_bad_profile_value_through_crawl_url(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_browser: Any, write_profile: Callable[..., Path]
) -> None:
    crawlkeeper_browser.add_page("https://example.com/")
    write_profile("slow", "[crawl]\ntimeout_s = -1\n")
    async with crawlkeeper_client() as client:
        result = await client.call_tool("crawl_url", {"url": "https://example.com/", "profile": "slow"})
        assert result.is_error
        text = result.content[0].text
        assert "timeout_s = -1" in text
        assert "profile 'slow'" in text
        assert "slow.toml" in text
        assert crawlkeeper_browser.navigations == []


def test_bad_plugin_layer_value_names_the_plugin_layer(
    crawlkeeper_app: Any, crawlkeeper_register: Callable[..., Any]
) -> None:
    crawlkeeper_register(LayerPlugin(ConfigLayer("plugin 'greedy'", crawl={"max_chars": 10})), "greedy")
    with pytest.raises(ConfigError) as info:
        crawlkeeper_app.crawl_options(request(crawlkeeper_app))
    assert "max_chars = 10" in str(info.value)
    assert "plugin 'greedy'" in str(info.value)


def test_bad_value_overridden_by_a_higher_layer_is_fine(
    crawlkeeper_app: Any, crawlkeeper_register: Callable[..., Any]
) -> None:
    crawlkeeper_register(LayerPlugin(ConfigLayer("plugin 'greedy'", crawl={"max_chars": 10})), "greedy")
    # validated once, after the merge: a per-call argument that replaces the bad value makes it valid
    assert crawlkeeper_app.crawl_options(request(crawlkeeper_app, max_chars=500)).max_chars == 500


def test_unknown_option_in_a_layer_is_named(crawlkeeper_app: Any, crawlkeeper_register: Callable[..., Any]) -> None:
    crawlkeeper_register(LayerPlugin(ConfigLayer("plugin 'typo'", crawl={"timeot_s": 3})), "typo")
    with pytest.raises(ConfigError, match=r"unknown crawl option 'timeot_s' set by plugin 'typo'"):
        crawlkeeper_app.crawl_options(request(crawlkeeper_app))


def test_bad_call_argument_names_the_call(crawlkeeper_app: Any) -> None:
    with pytest.raises(ConfigError, match=r"max_chars = 5 set by the call's arguments"):
        crawlkeeper_app.crawl_options(request(crawlkeeper_app, max_chars=5))


def test_secret_header_value_is_not_echoed(crawlkeeper_app: Any, crawlkeeper_register: Callable[..., Any]) -> None:
    crawlkeeper_register(
        LayerPlugin(ConfigLayer("plugin 'hdr'", browser={"extra_headers": {"Authorization": ["tok-SECRET-91"]}})),
        "hdr",
    )
    with pytest.raises(ConfigError) as info:
        crawlkeeper_app.context_options(request(crawlkeeper_app))
    assert "extra_headers" in str(info.value)
    assert "plugin 'hdr'" in str(info.value)
    assert "tok-SECRET-91" not in str(info.value)
