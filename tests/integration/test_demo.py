"""The README's main command, `crawlkeeper demo`, end to end: a real stdio server, a login through the form, a
crawl as the logged-in user and one without the session."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_the_readme_demo_logs_in_and_crawls_as_the_user() -> None:
    env = {**os.environ, "CRAWLKEEPER_LOG_LEVEL": "INFO"}
    done = subprocess.run([sys.executable, "-m", "crawlkeeper", "demo"], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "demo succeeded" in done.stdout
    assert "Welcome, alice!" in done.stdout
    assert "ended on http://127.0.0.1:" in done.stdout and "/private (status 200)" in done.stdout
    # The password is typed by js_code and the session cookie set by the site: neither may be shown or logged.
    for secret in ("wonderland",):
        assert secret not in done.stdout and secret not in done.stderr
    assert '"value"' not in done.stdout
