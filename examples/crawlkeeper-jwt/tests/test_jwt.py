"""Tests for the ``jwt`` verifier with tokens minted here (RSA and EC keys made per test run), through
crawlkeeper's own fixtures: the plugin's settings come from a real config file, and tokens are checked
through the same verifier the HTTP transport uses."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from crawlkeeper_jwt import JWTPlugin
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from crawlkeeper import ConfigError, Principal
from crawlkeeper.config import load_config

ISSUER = "https://login.example.com/"
AUDIENCE = "https://crawl.example.com/mcp"


class Keys:
    """An RSA and an EC signing key with their public JWKS."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa.public_key()))
        ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec.public_key()))
        self.jwks = {"keys": [{**rsa_jwk, "kid": "rsa-1", "use": "sig", "alg": "RS256"},
                              {**ec_jwk, "kid": "ec-1", "use": "sig", "alg": "ES256"}]}

    def mint(self, alg: str = "RS256", *, kid: str | None = None, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-42", "iat": now, "exp": now + 300,
                   "email": "alice@example.com", **claims}
        payload = {k: v for k, v in payload.items() if v is not None}
        key = self.rsa if alg == "RS256" else self.ec
        return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid or ("rsa-1" if alg == "RS256" else "ec-1")})


def b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.fixture
def crawlkeeper_config_toml(tmp_path: Path, keys: Keys) -> str:
    """The config of ``crawlkeeper_app`` in this module: the plugin's settings, keys in a JWKS file."""
    jwks = tmp_path / "idp-jwks.json"
    jwks.write_text(json.dumps(keys.jwks), encoding="utf-8")
    return f'[plugins.jwt]\njwks_file = "{jwks}"\nissuer = "{ISSUER}"\naudience = "{AUDIENCE}"\n'


def plugin_for(tmp_path: Path, keys: Keys, extra: str = "", source: str | None = None) -> JWTPlugin:
    (tmp_path / "jwks.json").write_text(json.dumps(keys.jwks), encoding="utf-8")
    source = source or 'jwks_file = "jwks.json"'
    config = tmp_path / "crawlkeeper.toml"
    config.write_text(f'[plugins.jwt]\n{source}\nissuer = "{ISSUER}"\naudience = "{AUDIENCE}"\n{extra}',
                      encoding="utf-8")
    plugin = JWTPlugin()
    plugin.crawlkeeper_configure(load_config(config))
    return plugin


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_a_valid_token_becomes_its_subject(tmp_path: Path, keys: Keys, alg: str) -> None:
    principal = plugin_for(tmp_path, keys).crawlkeeper_verify_token(keys.mint(alg, scope="crawl read"))
    assert principal == Principal(id="user-42", name="alice@example.com", admin=False, scopes=("crawl", "read"))


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({"iss": "https://evil.example.com/"}, "another issuer"),
        ({"aud": "https://other.example.com/mcp"}, "another audience"),
        ({"exp": int(time.time()) - 3600}, "expired an hour ago"),
        ({"exp": None}, "no expiry at all"),
        ({"sub": None}, "no subject"),
        ({"nbf": int(time.time()) + 3600}, "not valid yet"),
    ],
)
def test_tokens_failing_a_check_are_refused(tmp_path: Path, keys: Keys, claims: dict[str, Any], why: str) -> None:
    assert plugin_for(tmp_path, keys).crawlkeeper_verify_token(keys.mint(**claims)) is None, why


def test_forged_and_confused_tokens_are_refused(tmp_path: Path, keys: Keys) -> None:
    plugin = plugin_for(tmp_path, keys)
    stranger = Keys()  # a key the JWKS does not hold, claiming a kid it does hold
    assert plugin.crawlkeeper_verify_token(stranger.mint()) is None
    assert plugin.crawlkeeper_verify_token(keys.mint(kid="unknown")) is None
    # HS256 signed with the RSA public key as the "secret": the classic algorithm confusion
    public_pem = keys.rsa.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    # (PyJWT refuses to make one, so it is put together by hand)
    signing_input = b".".join(b64(json.dumps(part).encode()) for part in (
        {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"},
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "root", "exp": int(time.time()) + 60},
    ))
    confused = (signing_input + b"." + b64(hmac.new(public_pem, signing_input, hashlib.sha256).digest())).decode()
    assert plugin.crawlkeeper_verify_token(confused) is None
    unsigned = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "root", "exp": int(time.time()) + 60},
                          None, algorithm="none")
    assert plugin.crawlkeeper_verify_token(unsigned) is None
    token = keys.mint()
    header, payload, signature = token.split(".")
    assert plugin.crawlkeeper_verify_token(f"{header}.{payload}.{signature[:-4]}AAAA") is None
    assert plugin.crawlkeeper_verify_token("ck_not-a-jwt") is None  # another verifier's token: not ours


def test_the_admin_claim(tmp_path: Path, keys: Keys) -> None:
    plugin = plugin_for(tmp_path, keys, 'admin_claim = "groups"\nadmin_value = "crawl-admins"')
    assert plugin.crawlkeeper_verify_token(keys.mint(groups=["staff", "crawl-admins"])).admin  # type: ignore[union-attr]
    assert not plugin.crawlkeeper_verify_token(keys.mint(groups=["staff"])).admin  # type: ignore[union-attr]
    boolean = plugin_for(tmp_path, keys, 'admin_claim = "crawlkeeper_admin"')
    assert boolean.crawlkeeper_verify_token(keys.mint(crawlkeeper_admin=True)).admin  # type: ignore[union-attr]
    assert not boolean.crawlkeeper_verify_token(keys.mint(crawlkeeper_admin="yes")).admin  # type: ignore[union-attr]


def test_rotated_keys_in_the_file_are_picked_up(tmp_path: Path, keys: Keys) -> None:
    plugin = plugin_for(tmp_path, keys)
    newer = Keys()
    assert plugin.crawlkeeper_verify_token(newer.mint(kid="rsa-2")) is None
    jwks = {"keys": [{**k, "kid": "rsa-2"} for k in newer.jwks["keys"] if k["kid"] == "rsa-1"]}
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks), encoding="utf-8")
    bump = time.time() + 5
    os.utime(path, (bump, bump))
    assert plugin.crawlkeeper_verify_token(newer.mint(kid="rsa-2")) is not None


@pytest.fixture
def jwks_server(keys: Keys) -> Iterator[str]:
    body = json.dumps(keys.jwks).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


def test_keys_from_a_jwks_url(tmp_path: Path, keys: Keys, jwks_server: str) -> None:
    plugin = plugin_for(tmp_path, keys, source=f'jwks_url = "{jwks_server}"')
    assert plugin.crawlkeeper_verify_token(keys.mint("ES256")).id == "user-42"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("", "exactly one of jwks_file or jwks_url"),
        ('jwks_file = "jwks.json"\njwks_url = "https://x.example/jwks"', "exactly one of"),
        ('jwks_file = "missing.json"', "does not exist"),
    ],
)
def test_bad_settings_are_startup_errors_naming_the_plugin(tmp_path: Path, keys: Keys, source: str,
                                                           message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        plugin_for(tmp_path, keys, source=source or "# none")
    assert "jwt" in str(info.value)


@pytest.mark.anyio
async def test_the_http_transport_accepts_its_tokens(crawlkeeper_app: Any, crawlkeeper_register: Any,
                                                     tmp_path: Path, keys: Keys) -> None:
    """Through the verifier the HTTP transport uses: the hook is found and its principal reaches the SDK."""
    from crawlkeeper.http import HookTokenVerifier

    crawlkeeper_register(JWTPlugin(), name="jwt")  # configured from crawlkeeper_config_toml above
    verifier = HookTokenVerifier(crawlkeeper_app)
    found = await verifier.verify_token(keys.mint())
    assert found is not None and found.client_id == "user-42"
    assert await verifier.verify_token(keys.mint(aud="elsewhere")) is None
