"""The core's view of profiles: every source's profiles by name, refreshed on lookup.

Sources are plugins implementing ``crawlkeeper_load_profiles`` (the built-in reads TOML files). The store
asks them again at most once per ``refresh_s`` so edited files take effect without a restart; the plugin
decides what changed. A name offered by two sources is unusable, with an error naming both.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from .errors import ConfigError
from .models import Profile

if TYPE_CHECKING:
    from .config import Config
    from .plugins import Hooks

log = logging.getLogger("crawlkeeper.profiles")


class ProfileStore:
    def __init__(self, hooks: Hooks, config: Config, *, refresh_s: float = 1.0) -> None:
        self.hooks = hooks
        self.config = config
        self.refresh_s = refresh_s
        self._profiles: dict[str, Profile] = {}
        self._loaded_at = float("-inf")

    def refresh(self, *, force: bool = False) -> dict[str, Profile]:
        now = time.monotonic()
        if not force and now - self._loaded_at < self.refresh_s:
            return self._profiles
        self._loaded_at = now
        found: dict[str, Profile] = {}
        owners: dict[str, str] = {}
        for plugin, profile in self.hooks.collect("crawlkeeper_load_profiles", config=self.config):
            if not isinstance(profile, Profile):
                log.error("plugin %r returned %r from crawlkeeper_load_profiles, not a Profile", plugin, profile)
                continue
            source = f"{profile.source or '?'} from plugin '{plugin}'"
            if profile.name in found:
                first = found[profile.name]
                found[profile.name] = Profile(
                    name=profile.name,
                    source=first.source,
                    description=first.description,
                    error=f"profile '{profile.name}' is offered by two sources: {owners[profile.name]} and "
                    f"{source}; rename or remove one of them",
                )
                continue
            found[profile.name] = profile
            owners[profile.name] = source
        self._profiles = found
        return found

    def names(self) -> list[str]:
        return sorted(self.refresh())

    def all(self) -> list[Profile]:
        return [p for _, p in sorted(self.refresh().items())]

    def get(self, name: str) -> Profile:
        """The profile, or a :class:`ConfigError` that names its file or lists the available names."""
        profiles = self.refresh()
        profile = profiles.get(name)
        if profile is None:  # maybe written a moment ago: look again now rather than after refresh_s
            profiles = self.refresh(force=True)
            profile = profiles.get(name)
        if profile is None:
            available = ", ".join(sorted(profiles)) or f"none (add TOML files to {self.config.profiles_dir})"
            raise ConfigError(f"unknown profile '{name}'; available profiles: {available}")
        if profile.error:
            label = f"profile '{profile.name}'" if profile.error.startswith(profile.source or "\0") else profile.label
            raise ConfigError(f"{label} cannot be used: {profile.error}")
        return profile
