"""Built-in ``statefile`` plugin: saved sessions as files, one per session, in the user's data directory.

The folder is 0700 and every file 0600; a save writes a temporary file, fsyncs it and renames it over the
old one, so a crash or a full disk never leaves half a state behind. Blobs arrive sealed by the core
(AES-256-GCM), so nothing readable ever reaches the disk. A lease is an OS file lock (``filelock``) on
``<name>.lock``: the kernel drops it when its process dies, so a crashed server's sessions are taken over.

Settings: ``[plugins.statefile] dir`` (default: ``~/.local/share/crawlkeeper/sessions`` on Linux; relative
paths are relative to the config file). Disable the plugin to keep sessions in memory only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from pydantic import BaseModel, ConfigDict, Field

from crawlkeeper import hookimpl
from crawlkeeper.store import LeaseHeld, filename_key, key_filename

SUFFIX = ".state"


class StateFileSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dir: Path | None = Field(None, description="Folder for saved sessions (default: the user data dir).")


def default_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("crawlkeeper", appauthor=False)) / "sessions"


class StateFileStore:
    """A ``StateStore`` on a local folder."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.description = f"encrypted files in {self.dir}"
        self._locks: dict[str, FileLock] = {}

    def _path(self, key: str, suffix: str = SUFFIX) -> Path:
        return self.dir / (key_filename(key) + suffix)

    def _ensure_dir(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.dir.stat().st_mode & 0o077:
            os.chmod(self.dir, 0o700)  # made by someone else, or by an umask that ignored our mode

    # -- blobs ------------------------------------------------------------------------------------------

    async def load(self, key: str) -> bytes | None:
        return await asyncio.to_thread(self._read, key)

    def _read(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    async def save(self, key: str, blob: bytes) -> None:
        await asyncio.to_thread(self._write, key, blob)

    def _write(self, key: str, blob: bytes) -> None:
        self._ensure_dir()
        final = self._path(key)
        tmp = self.dir / f".{final.name}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)  # atomic: readers see the old file or the new one
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete, key)

    def _delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def exists(self, key: str) -> bool:
        # One stat of a local file: cheaper than the thread hop to_thread would add (every resume asks this).
        return self._path(key).is_file()

    async def list(self) -> list[str]:
        return await asyncio.to_thread(self._list)

    def _list(self) -> list[str]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        keys = []
        for name in names:
            if name.endswith(SUFFIX) and not name.startswith("."):
                key = filename_key(name[: -len(SUFFIX)])
                if key is not None:
                    keys.append(key)
        return sorted(keys)

    # -- leases -----------------------------------------------------------------------------------------

    async def acquire(self, key: str) -> None:
        lock = self._locks.get(key)
        if lock is not None and lock.is_locked:
            return
        self._ensure_dir()
        lock = FileLock(str(self._path(key, ".lock")), timeout=0, mode=0o600, thread_local=False)
        try:
            lock.acquire()  # non-blocking (timeout 0): an flock, held until released or the process dies
        except Timeout:
            raise LeaseHeld(key) from None
        self._locks[key] = lock

    async def release(self, key: str) -> None:
        lock = self._locks.pop(key, None)
        if lock is not None:
            lock.release(force=True)

    def close(self) -> None:
        for key in list(self._locks):
            self._locks.pop(key).release(force=True)


class StateFilePlugin:
    """Provides the :class:`StateFileStore` through ``crawlkeeper_state_store``."""

    def __init__(self) -> None:
        self.settings = StateFileSettings()

    @hookimpl
    def crawlkeeper_configure(self, config: Any) -> None:
        self.settings = config.plugin_settings("statefile", StateFileSettings)

    @hookimpl
    def crawlkeeper_state_store(self, config: Any) -> StateFileStore:
        folder = self.settings.dir
        if folder is None:
            folder = default_dir()
        else:
            folder = Path(os.path.expanduser(folder))
            if not folder.is_absolute():
                folder = config.base_dir / folder
        return StateFileStore(folder)
