"""crawlkeeper-jwt: let clients of crawlkeeper's HTTP transport present JWTs from your identity provider.

Implements ``crawlkeeper_verify_token``: a bearer token that is a JWT signed with RS256 or ES256 by a key in
your JWKS (``[plugins.jwt] jwks_file`` or ``jwks_url``), issued by ``issuer`` for ``audience`` and not expired,
becomes a :class:`crawlkeeper.Principal` whose ``id`` is the token's ``sub`` (so a user keeps their sessions
across tokens). Anything else is "not mine" (None): other verifiers (e.g. the built-in ``tokens``) may still
accept it, and if none does the client gets 401. Verification is PyJWT's; nothing here does cryptography.

Settings::

    [plugins.jwt]
    jwks_url = "https://login.example.com/.well-known/jwks.json"   # or jwks_file = "jwks.json"
    issuer = "https://login.example.com/"
    audience = "https://crawl.example.com/mcp"
    admin_claim = "crawlkeeper_admin"   # optional: true (or a list containing admin_value) makes an admin
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any, Literal

import jwt
from jwt import PyJWK, PyJWKClient, PyJWKSet
from pydantic import BaseModel, ConfigDict, Field, model_validator

from crawlkeeper import ConfigError, Principal, hookimpl

log = logging.getLogger("crawlkeeper_jwt")

__version__ = "0.1.0"

Algorithm = Literal["RS256", "ES256"]


class JWTSettings(BaseModel):
    """``[plugins.jwt]``."""

    model_config = ConfigDict(extra="forbid")
    jwks_file: Path | None = Field(None, description="A JWKS JSON file (relative to the config file).")
    jwks_url: str | None = Field(None, description="Where the identity provider publishes its JWKS (https).")
    issuer: str = Field(min_length=1, description="The exact `iss` tokens must carry.")
    audience: str | list[str] = Field(description="`aud` tokens must be issued for (one of these).")
    admin_claim: str | None = Field(None, description="Claim that makes the principal an admin.")
    admin_value: str = Field("admin", description="With a list/string admin_claim: the value that means admin.")
    algorithms: list[Algorithm] = Field(default_factory=lambda: ["RS256", "ES256"], min_length=1)
    leeway_s: float = Field(30.0, ge=0, le=300, description="Clock skew allowed on exp/nbf/iat.")
    jwks_cache_s: float = Field(300.0, gt=0, description="How long fetched keys are reused.")

    @model_validator(mode="after")
    def _one_source(self) -> JWTSettings:
        if (self.jwks_file is None) == (self.jwks_url is None):
            raise ValueError("give exactly one of jwks_file or jwks_url")
        if self.jwks_url is not None and not self.jwks_url.startswith(("https://", "http://")):
            raise ValueError("jwks_url must be an https:// URL")
        return self


class _FileKeys:
    """Keys from a JWKS file, re-read when the file changes (key rotation without a restart)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: int | None = None
        self._keys: dict[str | None, PyJWK] = {}
        self._lock = threading.Lock()

    def get(self, kid: str | None) -> PyJWK | None:
        with self._lock:
            mtime = self.path.stat().st_mtime_ns
            if mtime != self._mtime:
                jwks = PyJWKSet.from_dict(json.loads(self.path.read_text(encoding="utf-8")))
                self._keys = {k.key_id: k for k in jwks.keys}
                self._mtime = mtime
            if kid is None and len(self._keys) == 1:
                return next(iter(self._keys.values()))
            return self._keys.get(kid)


class _UrlKeys:
    """Keys from the identity provider's JWKS URL, cached (PyJWKClient refetches on an unknown ``kid``)."""

    def __init__(self, url: str, cache_s: float) -> None:
        self.client = PyJWKClient(url, cache_jwk_set=True, lifespan=int(cache_s), timeout=10)

    def get(self, kid: str | None) -> PyJWK | None:
        if kid is None:
            keys = self.client.get_signing_keys()
            return keys[0] if len(keys) == 1 else None
        return self.client.get_signing_key(kid)


class JWTPlugin:
    """The ``jwt`` plugin (a class entry point: one instance per plugin manager)."""

    def __init__(self) -> None:
        self.settings: JWTSettings | None = None
        self._keys: _FileKeys | _UrlKeys | None = None

    @hookimpl
    def crawlkeeper_configure(self, config: Any) -> None:
        settings = config.plugin_settings("jwt", JWTSettings)
        if settings.jwks_file is not None:
            path = settings.jwks_file.expanduser()
            path = path if path.is_absolute() else config.base_dir / path
            if not path.is_file():
                raise ConfigError(f"{config.origin}: [plugins.jwt] jwks_file: {path} does not exist")
            self._keys = _FileKeys(path)
        else:
            assert settings.jwks_url is not None
            self._keys = _UrlKeys(settings.jwks_url, settings.jwks_cache_s)
        self.settings = settings

    @hookimpl
    def crawlkeeper_verify_token(self, token: str) -> Principal | None:
        settings, keys = self.settings, self._keys
        if settings is None or keys is None or token.count(".") != 2:
            return None  # not configured, or not a JWT at all: maybe another verifier's token
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") not in settings.algorithms:
                log.info("refused a JWT signed with %r (allowed: %s)", header.get("alg"), settings.algorithms)
                return None
            key = keys.get(header.get("kid"))
            if key is None:
                log.info("refused a JWT: no key with kid %r in the JWKS", header.get("kid"))
                return None
            claims = jwt.decode(
                token, key=key, algorithms=list(settings.algorithms), audience=settings.audience,
                issuer=settings.issuer, leeway=settings.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWKClientError as exc:
            log.warning("could not fetch the JWKS: %s", exc)
            return None
        except jwt.InvalidTokenError as exc:
            log.info("refused a JWT: %s", type(exc).__name__)  # never the token or its claims
            return None
        return self._principal(claims)

    def _principal(self, claims: dict[str, Any]) -> Principal:
        assert self.settings is not None
        admin = False
        if self.settings.admin_claim:
            value = claims.get(self.settings.admin_claim)
            if isinstance(value, list):
                admin = self.settings.admin_value in value
            elif isinstance(value, str):
                admin = value == self.settings.admin_value or self.settings.admin_value in value.split()
            else:
                admin = value is True
        scope = claims.get("scope", claims.get("scp", ""))
        scopes = tuple(scope.split() if isinstance(scope, str) else scope or ())
        name = claims.get("name") or claims.get("email") or claims.get("preferred_username") or claims["sub"]
        return Principal(id=str(claims["sub"]), name=str(name), admin=admin, scopes=scopes)


__all__ = ["JWTPlugin", "JWTSettings"]
