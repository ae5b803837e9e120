"""The example plugin as a user sees it after `pip install ./examples/crawlkeeper-form-login`.

A throwaway venv sees the main venv's packages (crawlkeeper, crawl4ai, mcp...) through a ``.pth`` file and
gets the example plugin pip-installed into it (not editable, from a copy of its folder). The plugin is
therefore found ONLY through its installed entry-point metadata: it is not importable from the main venv,
and the servers run with the venv's interpreter and no PYTHONPATH (pytest puts the plugin's ``src`` folder on
sys.path for this process only). A second, hand-made distribution ``ck-boom`` adds a plugin that raises in
``crawlkeeper_session_created`` for one session id.

Every server is a real `crawlkeeper serve` over stdio with real Chromium, logging at DEBUG to a file.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from helpers import Server, dump, find_server, server_env, write_config

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "crawlkeeper-form-login"

PASSWORD_ENV = "CK_TEST_PASSWORD"
PASSWORD = "wonderland"  # alice's password on the test site
WRONG_ENV = "CK_TEST_WRONG_PASSWORD"
WRONG = "not-wonderland-42"
#: Variables of this process that must not reach the plugin venv's processes.
SCRUBBED = ("PYTHONPATH", "PYTHONHOME", "CRAWLKEEPER_CONFIG", "CRAWLKEEPER_DISABLE_PLUGINS",
            "CRAWLKEEPER_LOAD_PLUGINS")

BOOM_MODULE = '''"""A broken third-party plugin: fails session creation for the session id "boom" only."""

from crawlkeeper import hookimpl


@hookimpl
def crawlkeeper_session_created(session, request):
    if request.session_id == "boom":
        raise RuntimeError("ck_boom refuses this session")
'''


@dataclass
class PluginVenv:
    python: Path
    site_packages: Path


def clean_env(extra: dict[str, str] | None = None, log_level: str | None = None) -> dict[str, str]:
    env = server_env(None, log_level)
    for name in SCRUBBED:
        env.pop(name, None)
    env.update(extra or {})
    return env


def run(argv: list[str], *, env: dict[str, str] | None = None, cwd: Path, timeout: float = 120,
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env=clean_env(env), cwd=cwd, timeout=timeout)


@pytest.fixture(scope="module")
def plugin_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PluginVenv]:
    started = time.monotonic()
    base = tmp_path_factory.mktemp("plugin-venv")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    site_packages = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True, env=clean_env(), cwd=base,
    ).stdout.strip())
    # A plain path line would put the main site-packages on sys.path without processing ITS .pth files, and
    # the editable crawlkeeper install is one (an import hook): addsitedir processes them.
    main_site = sysconfig.get_path("purelib")
    (site_packages / "zz_crawlkeeper_main_venv.pth").write_text(
        f"import site; site.addsitedir({main_site!r})\n", encoding="utf-8"
    )
    # Install from a copy: an in-tree build would leave build/ and src/*.egg-info in the example folder, and
    # that egg-info, on pytest's sys.path, would make the plugin discoverable in this very process.
    source = base / "crawlkeeper-form-login"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns(
        "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache"))
    pip = [str(python), "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "--no-input"]
    # Offline first, with the main venv's setuptools; the package's `license = "MIT"` (PEP 639) needs
    # setuptools >= 77, so with an older one fall back to an isolated build (setuptools from the index).
    attempts = [[*pip, "--no-build-isolation", "--no-index", str(source)], [*pip, str(source)]]
    outputs = []
    for argv in attempts:
        out = run(argv, cwd=base, timeout=180)
        outputs.append(f"$ {' '.join(argv)}\n{out.stdout[-1500:]}{out.stderr[-3000:]}")
        if out.returncode == 0:
            break
    else:
        pytest.fail("could not pip install the example plugin:\n" + "\n".join(outputs))
    (site_packages / "ck_boom.py").write_text(BOOM_MODULE, encoding="utf-8")
    dist_info = site_packages / "ck_boom-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: ck-boom\nVersion: 0.1\n", encoding="utf-8")
    (dist_info / "entry_points.txt").write_text("[crawlkeeper]\nboom = ck_boom\n", encoding="utf-8")
    (dist_info / "RECORD").write_text("", encoding="utf-8")
    elapsed = time.monotonic() - started
    assert elapsed < 60, f"building the plugin venv took {elapsed:.1f} s"
    yield PluginVenv(python, site_packages)


@pytest.fixture
def config(tmp_path: Path, test_site) -> Path:
    def profile(description: str, env: str) -> str:
        return (
            f'description = "{description}"\n\n[auth]\nmethod = "form"\n'
            f'login_url = "{test_site.url("/login")}"\nusername = "alice"\npassword_env = "{env}"\n'
            'success_url = "*/private*"\n'
        )

    return write_config(tmp_path, profiles={
        "alice": profile("alice on the test site", PASSWORD_ENV),
        "mallory": profile("alice with the wrong password", WRONG_ENV),
    })


@contextlib.asynccontextmanager
async def venv_server(
    venv: PluginVenv, config: Path, *, env: dict[str, str] | None = None, log_name: str = "server.log"
) -> AsyncIterator[Server]:
    """Like ``helpers.mcp_server``, but `crawlkeeper serve` runs on the plugin venv's interpreter."""
    params = StdioServerParameters(
        command=str(venv.python), args=["-m", "crawlkeeper", "serve", "--config", str(config)],
        env=clean_env({PASSWORD_ENV: PASSWORD, WRONG_ENV: WRONG, **(env or {})}, log_level="DEBUG"),
        cwd=str(config.parent),
    )
    log_path = config.parent / log_name
    with open(log_path, "w", encoding="utf-8") as errlog:  # noqa: ASYNC230 - stdio_client needs a real file
        started = time.monotonic()
        async with stdio_client(params, errlog=errlog) as (r, w), ClientSession(r, w) as session:
            with anyio.fail_after(30):
                await session.initialize()
            yield Server(session, find_server(config), log_path, time.monotonic() - started)


def plugins_json(venv: PluginVenv, config: Path, env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    out = run([str(venv.python), "-m", "crawlkeeper", "plugins", "--json", "--config", str(config)],
              env=env, cwd=config.parent)
    assert out.returncode == 0, out.stderr
    return {row["name"]: row for row in json.loads(out.stdout)["plugins"]}


# -- the tests ------------------------------------------------------------------------------------------


def test_plugin_is_found_only_through_its_installed_entry_point(plugin_venv: PluginVenv, config: Path) -> None:
    probe = "import importlib.util as u; s = u.find_spec('crawlkeeper_form_login'); print(s and s.origin)"
    main = run([sys.executable, "-c", probe], cwd=config.parent)
    assert main.stdout.strip() == "None", f"the plugin is importable from the main venv: {main.stdout}"
    venv = run([str(plugin_venv.python), "-c", probe], cwd=config.parent)
    assert venv.stdout.strip().startswith(str(plugin_venv.site_packages)), venv.stdout + venv.stderr

    rows = plugins_json(plugin_venv, config)
    form = rows["form"]
    assert form["builtin"] is False and form["disabled"] is False, form
    assert form["distribution"] == "crawlkeeper-form-login" and form["version"] == "0.1.0", form
    assert form["auth_methods"] == ["form"] and "crawlkeeper_auth_methods" in form["hooks"], form
    assert rows["boom"]["distribution"] == "ck-boom" and rows["boom"]["hooks"] == ["crawlkeeper_session_created"]
    assert {"cookies", "profiles", "ttl"} <= {name for name, row in rows.items() if row["builtin"]}

    plain = run([str(plugin_venv.python), "-m", "crawlkeeper", "plugins", "--config", str(config)],
                cwd=config.parent)
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    form_line = next((line for line in lines if line.split()[:1] == ["form"]), None)
    assert form_line is not None, plain.stdout
    assert "enabled" in form_line and "third-party" in form_line and "crawlkeeper-form-login 0.1.0" in form_line
    assert "auth methods: form" in plain.stdout

    disabled = plugins_json(plugin_venv, config, env={"CRAWLKEEPER_DISABLE_PLUGINS": "form"})["form"]
    assert disabled["disabled"] is True and disabled["auth_methods"] == [], disabled
    assert disabled["distribution"] == "crawlkeeper-form-login", disabled


@pytest.mark.anyio
async def test_form_login_over_mcp_keeps_the_password_secret(plugin_venv: PluginVenv, config: Path,
                                                             test_site) -> None:
    seen: list[str] = []  # everything the client was shown

    async with venv_server(plugin_venv, config) as server:
        async def call(name: str, arguments: dict[str, Any]) -> Any:
            result = await server.call(name, arguments)
            seen.append(dump(result))
            return result

        created = await call("create_session", {"profile": "alice"})
        assert not created.is_error, dump(created)
        info = created.structured_content
        assert info["auth"] == "form" and info["profile"] == "alice", info
        assert info["url"].endswith("/private"), info
        sid = info["session_id"]
        page = await call("crawl_url", {"url": test_site.url("/private"), "session_id": sid})
        assert not page.is_error, dump(page)
        assert "Welcome, alice!" in page.structured_content["content"]
        assert page.structured_content["final_url"].endswith("/private")

        # A wrong password: a clear error, no session left behind, and the server goes on serving.
        failed = await call("create_session", {"profile": "mallory", "session_id": "mallory"})
        assert failed.is_error, dump(failed)
        message = dump(failed)
        assert "form login to" in message and "failed" in message, message
        assert "Invalid username or password" in message and WRONG_ENV in message, message
        assert "No session was created" in message, message
        listed = await call("list_sessions", {})
        assert [s["session_id"] for s in listed.structured_content["sessions"]] == [sid]
        again = await call("crawl_url", {"url": test_site.url("/private"), "session_id": sid})
        assert not again.is_error and "Welcome, alice!" in again.structured_content["content"]
        public = await call("crawl_url", {"url": test_site.url("/")})
        assert not public.is_error and public.structured_content["status"] == 200
        log = server.log()

    assert "form login to" in log and "succeeded" in log, "the plugin's INFO line is missing from the log"
    for secret in (PASSWORD, WRONG):
        assert not [s for s in seen if secret in s], f"{secret!r} reached a tool result"
        assert secret not in log, f"{secret!r} is in the server's log"


@pytest.mark.anyio
async def test_disabled_plugin_leaves_a_clear_error(plugin_venv: PluginVenv, config: Path, test_site) -> None:
    async with venv_server(plugin_venv, config, env={"CRAWLKEEPER_DISABLE_PLUGINS": "form"}) as server:
        message = await server.error("create_session", {"profile": "alice"})
        assert "unknown auth method 'form'" in message and "cookies" in message, message
        assert (await server.ok("crawl_url", {"url": test_site.url("/")}))["status"] == 200


@pytest.mark.anyio
async def test_plugin_failing_one_session_spares_the_others(plugin_venv: PluginVenv, config: Path,
                                                            test_site) -> None:
    async with venv_server(plugin_venv, config) as server:
        first = (await server.ok("create_session", {"session_id": "ok1", "url": test_site.url("/")}))["session_id"]
        message = await server.error("create_session", {"session_id": "boom", "url": test_site.url("/")})
        assert "plugin 'boom'" in message and "RuntimeError" in message and "session_created" in message, message
        listed = [s["session_id"] for s in (await server.ok("list_sessions"))["sessions"]]
        assert "boom" not in listed and first in listed, listed
        assert (await server.ok("crawl_url", {"url": test_site.url("/links"), "session_id": first}))["status"] == 200
        await server.ok("create_session", {"session_id": "ok2", "profile": "alice"})
        page = await server.ok("crawl_url", {"url": test_site.url("/private"), "session_id": "ok2"})
        assert "Welcome, alice!" in page["content"]
        assert "ck_boom refuses this session" in server.log()  # logged with its traceback, for the operator
