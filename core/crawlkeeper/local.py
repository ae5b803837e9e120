"""Finding a local Chromium, and cleaning up after a run that was killed (the launched-browser case)."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("crawlkeeper.browser")

SYSTEM_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
#: Debian's /usr/bin/chromium is a shell wrapper that prints to stderr; the real binary lives here.
WRAPPER_TARGETS = {"/usr/bin/chromium": "/usr/lib/chromium/chromium"}


@dataclass
class BrowserCandidate:
    path: str | None
    source: str  # "config", "playwright", "PATH (chromium)" ...
    problem: str | None = None



def _playwright_chromium() -> str | None:
    """Playwright's own downloaded Chromium, if ``playwright install chromium`` was run."""
    roots = [os.environ.get("PLAYWRIGHT_BROWSERS_PATH"), str(Path.home() / ".cache" / "ms-playwright")]
    if sys.platform == "darwin":
        roots.append(str(Path.home() / "Library" / "Caches" / "ms-playwright"))
    for root in filter(None, roots):
        base = Path(root)
        if not base.is_dir():
            continue
        for pattern in ("chromium-*/chrome-linux*/chrome", "chromium-*/chrome-mac*/Chromium.app/Contents/MacOS/*",
                        "chromium_headless_shell-*/chrome-*/headless_shell"):
            for hit in sorted(base.glob(pattern), reverse=True):
                if os.access(hit, os.X_OK):
                    return str(hit)
    return None


def find_browser(configured: Path | str | None = None) -> BrowserCandidate:
    """Where the browser comes from: the config, then Playwright's own Chromium, then PATH."""
    if configured:
        path = Path(configured).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            return BrowserCandidate(
                str(path), "config", f"[browser] executable_path = {path} is not an executable file"
            )
        return BrowserCandidate(WRAPPER_TARGETS.get(str(path), str(path)), "config")
    found = _playwright_chromium()
    if found:
        return BrowserCandidate(found, "playwright")
    for name in SYSTEM_BROWSERS:
        hit = shutil.which(name)
        if hit:
            real = os.path.realpath(hit)
            real = WRAPPER_TARGETS.get(hit, WRAPPER_TARGETS.get(real, real))
            if os.access(real, os.X_OK):
                return BrowserCandidate(real, f"PATH ({name})")
    return BrowserCandidate(
        None,
        "none",
        "no Chromium or Chrome found. Install one: `sudo apt-get install chromium` (Debian/Ubuntu), "
        "`python -m playwright install chromium`, or set [browser] executable_path in the config",
    )


PROFILE_DIR_PREFIXES = ("playwright_chromiumdev_profile-", "playwright-artifacts-")


def cleanup_stale(tmp_dir: str | None = None) -> tuple[int, int]:
    """Remove what a previous run killed with SIGKILL left behind: orphaned Chromium processes (Linux) and
    Playwright's temporary profile folders whose browser is gone. Returns (processes killed, folders removed)."""
    import signal
    import tempfile
    import time

    tmp = Path(tmp_dir or tempfile.gettempdir())
    killed = 0
    proc = Path("/proc")
    if proc.is_dir():
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            marker = f"--user-data-dir={tmp}/{PROFILE_DIR_PREFIXES[0]}".encode()
            if ppid == 1 and any(arg.startswith(marker) for arg in cmdline):
                try:
                    os.kill(int(entry.name), signal.SIGKILL)
                    killed += 1
                except OSError:
                    pass
    removed = 0
    for folder in tmp.glob("playwright*"):
        if not folder.name.startswith(PROFILE_DIR_PREFIXES) or not folder.is_dir():
            continue
        lock = folder / "SingletonLock"
        try:
            owner = os.readlink(lock).rsplit("-", 1)[-1]
            alive = owner.isdigit() and Path(f"/proc/{owner}").exists()
        except OSError:
            alive = time.time() - folder.stat().st_mtime < 600  # no lock yet: maybe starting right now
        if not alive:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    if killed or removed:
        log.info("cleaned up after a previous run: %d orphaned browser processes, %d temporary profiles",
                 killed, removed)
    return killed, removed
