"""Real remote browsers on loopback for the fleet tests: ``playwright launch-server`` processes (Playwright's
protocol, Debian's Chromium via ``executablePath``) and a Chromium with remote debugging (CDP)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from crawlkeeper.launch import launch_args
from crawlkeeper.local import find_browser

PLAYWRIGHT = Path(sys.executable).with_name("playwright")


@dataclass
class BrowserServer:
    """One remote browser process group; ``url`` is what goes in ``[browser] endpoints``."""

    url: str
    proc: subprocess.Popen[str]
    folder: Path
    argv: list[str] = field(default_factory=list)

    def kill(self) -> None:
        """SIGKILL the whole group (the server and its Chromium), as a crashed machine would."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


def launch_server(port: int = 0, *, cpu: int | None = None) -> BrowserServer:
    """``playwright launch-server`` with crawlkeeper's own launch flags; its ws:// URL read from stdout.
    With ``cpu``, the server and its browser are pinned to that CPU (``taskset``)."""
    folder = Path(tempfile.mkdtemp(prefix="ck-pw-"))
    binary = find_browser().path
    assert binary, "no Chromium found"
    config = {"executablePath": binary, "headless": True, "args": launch_args([]), "port": port, "wsPath": "/pw"}
    (folder / "launch.json").write_text(json.dumps(config), encoding="utf-8")
    argv = [str(PLAYWRIGHT), "launch-server", "--browser", "chromium", "--config", str(folder / "launch.json")]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True, cwd=folder)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()  # blocks until the server prints its URL (or exits)
    if not line.startswith("ws://"):
        proc.kill()
        raise RuntimeError(f"playwright launch-server did not start (printed {line!r})")
    return BrowserServer(line, proc, folder, argv)


def cdp_browser(*, cpu: int | None = None) -> BrowserServer:
    """A headless Chromium with ``--remote-debugging-port=0``; ``cdp+http://127.0.0.1:PORT``."""
    folder = Path(tempfile.mkdtemp(prefix="ck-cdp-"))
    binary = find_browser().path
    assert binary, "no Chromium found"
    argv = [binary, "--headless=new", "--remote-debugging-port=0", f"--user-data-dir={folder}", *launch_args([]),
            "about:blank"]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    port_file = folder / "DevToolsActivePort"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            port = port_file.read_text().split()[0]
            return BrowserServer(f"cdp+http://127.0.0.1:{port}", proc, folder, argv)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("Chromium with remote debugging did not start")


def restart(server: BrowserServer) -> BrowserServer:
    """Start a killed ``launch-server`` again on the same port (an endpoint coming back)."""
    port = int(server.url.rsplit(":", 1)[1].split("/", 1)[0])
    deadline = time.monotonic() + 10
    while True:
        try:
            return launch_server(port)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # the port may still be in TIME_WAIT
