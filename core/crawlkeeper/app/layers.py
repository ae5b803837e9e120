"""Option layers: the one pipeline that merges crawl and browser-context options for every call (core defaults <
config file < profile layer < plugin layers by priority < the call's arguments)."""

from __future__ import annotations

from typing import Any

from ..config import Config
from ..models import ConfigLayer, CrawlRequest, Profile
from ..options import ContextOptions, CrawlOptions, Layer, merge
from ..plugins import Hooks
from ..principal import LOCAL, Principal
from ..profiles import ProfileStore
from ..sessions import SessionRegistry


class OptionLayers:
    """Merges a call's options from the config file, its profile, plugin layers and its arguments."""

    def __init__(self, config: Config, hooks: Hooks, profiles: ProfileStore, sessions: SessionRegistry) -> None:
        self.config = config
        self.hooks = hooks
        self.profiles = profiles
        self.sessions = sessions

    def layers(self, request: CrawlRequest) -> list[ConfigLayer]:
        layers = [layer for _, layer in self.hooks.collect("crawlkeeper_config_layers", request=request)]
        return sorted(layers, key=lambda layer: layer.priority)  # stable: equal priorities keep plugin order

    def crawl_options(self, request: CrawlRequest, layers: list[ConfigLayer] | None = None) -> CrawlOptions:
        layers = self.layers(request) if layers is None else layers
        return merge(
            CrawlOptions,
            [
                Layer(f"the config file ({self.config.origin}) [crawl]", self.config.raw.get("crawl", {})
                      | self.config.settings.crawl.model_dump(exclude_unset=True)),
                *(Layer(layer.source, layer.crawl) for layer in layers),
                Layer("the call's arguments", request.arguments),
            ],
            what="crawl",
        )

    def context_options(self, request: CrawlRequest, layers: list[ConfigLayer] | None = None) -> ContextOptions:
        layers = self.layers(request) if layers is None else layers
        return merge(
            ContextOptions,
            [
                Layer(f"the config file ({self.config.origin}) [browser]",
                      self.config.settings.browser.context_options()),
                *(Layer(layer.source, layer.browser) for layer in layers),
            ],
            what="browser",
        )

    def profile(self, name: str | None) -> Profile | None:
        return None if name is None else self.profiles.get(name)

    def profile_of(self, session_id: str | None, profile: str | None,
                   principal: Principal | None = None) -> Profile | None:
        """The profile a call uses: its session's (``principal``'s own), or the one it names."""
        owner = (principal or LOCAL).id
        return self.profile(self.sessions.get(session_id, owner).profile if session_id is not None else profile)

    def crawl_options_for(self, session_id: str | None, profile: str | None, arguments: dict[str, Any],
                          principal: Principal | None = None) -> CrawlOptions:
        """The merged crawl options of a call (for tools that need them before loading a page)."""
        session = self.sessions.get(session_id, (principal or LOCAL).id) if session_id is not None else None
        request = CrawlRequest(url=None, profile=self.profile_of(session_id, profile, principal), session=session,
                               arguments=arguments)
        return self.crawl_options(request)
