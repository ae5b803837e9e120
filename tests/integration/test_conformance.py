"""The official MCP conformance suite against `crawlkeeper serve --transport http`.

`@modelcontextprotocol/conformance@0.1.13` (the last release that runs on Node 20) is installed into
`.cache/npm` when missing (`./run test` does it first). Its server mode cannot send a bearer token, so a
`node --require` preload adds ours. Scenarios that assume the suite's reference "everything" server are in
`conformance/expected-failures.yml`, each with its reason; every other scenario must pass, and an entry that
starts passing fails the run too (the suite reports a stale baseline).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from http_helpers import HttpServer, add_token

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent / "conformance"
PACKAGE = "@modelcontextprotocol/conformance@0.1.13"
NPM_DIR = ROOT / ".cache" / "npm"
SUITE_DIR = NPM_DIR / "node_modules" / "@modelcontextprotocol" / "conformance"
APPLICABLE = ["server-initialize", "ping", "tools-list", "tools-call-simple-text", "tools-call-error",
              "server-sse-multiple-streams", "resources-list", "prompts-list", "dns-rebinding-protection"]


def ensure_suite() -> Path:
    """The suite's executable, installed from the npm registry into .cache/npm if it is not there yet."""
    binary = NPM_DIR / "node_modules" / ".bin" / "conformance"
    if not binary.exists():
        npm = shutil.which("npm")
        assert npm, "the conformance test needs Node.js 20+ and npm (apt-get install nodejs npm)"
        NPM_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "install", "--prefix", str(NPM_DIR), "--no-audit", "--no-fund", "--loglevel=error",
                        PACKAGE], check=True, timeout=600)
    return binary


def test_the_mcp_conformance_suite_passes(tmp_path: Path) -> None:
    binary = ensure_suite()
    srv = HttpServer(tmp_path)
    token = add_token(srv.config, "conformance")
    with srv:
        env = {
            **os.environ,
            "CK_CONFORMANCE_ORIGIN": srv.base,
            "CK_CONFORMANCE_TOKEN": token,
            "CK_CONFORMANCE_PACKAGE_DIR": str(SUITE_DIR),
            "NODE_OPTIONS": f"--require {HERE / 'bearer-preload.cjs'}",
        }
        run = subprocess.run(
            [str(binary), "server", "--url", srv.url, "--expected-failures", str(HERE / "expected-failures.yml"),
             "-o", str(tmp_path / "results")],
            capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=600,
        )
        output = run.stdout + run.stderr
        assert run.returncode == 0, output[-6000:]
        summary = output[output.index("=== SUMMARY ==="):]
        for scenario in APPLICABLE:
            assert f"✓ {scenario}:" in summary, f"{scenario} did not pass:\n{summary}"
        assert "Baseline check passed" in output
        log = srv.log()
    assert token not in log
    assert "client=conformance" in log
