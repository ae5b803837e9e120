"""A throwaway ``redis-server`` on loopback, for this package's tests and for anyone testing a deployment of it
(crawlkeeper's own replica tests start theirs with it).

No persistence (``--save ""``, no AOF), a free port, its working files in ``folder``; stopped on exit.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path


class RedisServerMissing(RuntimeError):
    """``redis-server`` is not installed (or did not start)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server(folder: Path, *, binary: str | None = None, timeout_s: float = 10) -> Iterator[str]:
    """Start ``redis-server`` on a free 127.0.0.1 port; yield its ``redis://127.0.0.1:PORT/0`` URL.

    :raises RedisServerMissing: no ``redis-server`` on PATH (Debian/Ubuntu: ``apt-get install redis-server``),
        or it did not accept connections within ``timeout_s``.
    """
    binary = binary or shutil.which("redis-server")
    if binary is None:
        raise RedisServerMissing("redis-server is not installed (Debian/Ubuntu: apt-get install redis-server)")
    port = _free_port()
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RedisServerMissing(f"redis-server did not start on 127.0.0.1:{port}") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
